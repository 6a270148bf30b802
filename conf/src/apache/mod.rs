//! `bulkhead import-apache`: an Apache 2.2/2.4 configuration (Peruser, perchild,
//! mpm-itk, prefork/worker limits, virtual hosts) translated into bulkhead's TOML.
//!
//! `lexer` (httpd's lines and words) → `parse` (one file's sections) → `expand`
//! (includes, globs, `Define`, `${VAR}`, `<IfDefine>`, `<IfModule>`) → `translate`
//! (server, environments), `vhost` (virtual hosts as read) and `sites`
//! (`[[vhosts]]`) → `emit` (the TOML text). No crate parses httpd's syntax well, so
//! this is our own, fuzzed (`fuzz.rs`).
//! Every directive not translated becomes a [`Note`] with its `file:line`; only an
//! unreadable file or a syntax error httpd would refuse fails the import.

mod emit;
mod expand;
#[cfg(test)]
mod fuzz;
mod glob;
mod lexer;
mod parse;
mod sites;
mod source;
#[cfg(test)]
mod tests;
mod translate;
mod vhost;

use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use thiserror::Error;

pub use expand::Options;

/// A place in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: Rc<PathBuf>,
    pub line: usize,
}

impl At {
    pub fn new(file: Rc<PathBuf>, line: usize) -> At {
        At { file, line }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the file as a whole (the main file, a default).
        match self.line {
            0 => write!(f, "{}", self.file.display()),
            n => write!(f, "{}:{n}", self.file.display()),
        }
    }
}

/// A directive that was not translated (or not exactly), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub at: At,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A configuration's bytes never reach a terminal as control characters.
        let text = format!("{}: {}", self.at, self.message);
        f.write_str(&emit::comment(&text))
    }
}

/// A configuration httpd itself would refuse: every reason, each with `file:line`.
#[derive(Debug, Error)]
#[error("{}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ImportError {
    pub errors: Vec<String>,
}

/// The translation: the TOML text and what it left out.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<Note>,
}

/// Reads `main` (and what it includes) from the file system and translates it.
/// `${VAR}`s not `Define`d come from this process's environment, as in httpd.
pub fn import(main: &Path, opts: &Options) -> Result<Imported, ImportError> {
    let env = |name: &str| std::env::var(name).ok();
    // Absolute, so `Include` patterns and notes do not depend on the current directory.
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let opts = Options {
        server_root: opts.server_root.as_deref().map(absolute),
        ..opts.clone()
    };
    import_from(&source::Files, &absolute(main), &opts, &env)
}

fn import_from(
    src: &dyn source::Source,
    main: &Path,
    opts: &Options,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Imported, ImportError> {
    let expanded = expand::expand(src, main, opts, env);
    if !expanded.errors.is_empty() {
        return Err(ImportError {
            errors: expanded.errors.iter().map(|e| e.to_string()).collect(),
        });
    }
    let mut notes = expanded.notes;
    let toml = translate::translate(&expanded.directives, &expanded.server_root, main, &mut notes);
    Ok(Imported { toml, notes })
}
