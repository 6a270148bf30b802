//! Loading and validating bulkhead's TOML configuration.
//!
//! `file → span-preserving TOML tree → validate → Config`. The document is parsed with
//! `toml_edit`, whose keys and tables keep their byte ranges, and walked table by table
//! so that every problem — unknown key, wrong type, unknown environment, root
//! environment, duplicate host name, document root outside its chroot, ... — is reported
//! at once, each as `file:line: key.path: message`. Users and groups are resolved to
//! numeric ids here, before any process is jailed.
//!
//! `bulkhead check` (a systemd `ExecStartPre=`) is [`load`] plus printing the errors.

#![forbid(unsafe_code)]

pub mod apache;
mod apart;
mod cgi;
mod cgroup;
mod error;
mod fastcgi;
mod fsrules;
mod ids;
mod index;
mod limits;
pub mod model;
mod request;
mod status;
mod tls;
mod tree;
mod validate;
mod view;

use std::path::Path;

pub use cgroup::parse_size;
pub use error::{ConfigError, ConfigErrors, ConfigWarning};
pub use model::*;

use error::Report;

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        key: String::new(),
        message: format!("cannot read configuration file: {e}"),
    })?;
    parse_str(&text, path)
}

/// Validates configuration text; `path` is used only in messages and [`Config::path`].
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut report = Report::new(path, text);
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            // Keep one error per line: toml_edit's message may span several.
            let detail: Vec<&str> = e.message().lines().map(str::trim).collect();
            let message = format!("invalid TOML: {}", detail.join("; "));
            report.error(&e.span(), "", message);
            return Err(report.finish());
        }
    };
    let root = tree::Table::root(doc.as_table());
    match validate::config(&root, &mut report, path) {
        Some(mut config) if !report.has_errors() => {
            config.warnings = report.take_warnings();
            Ok(config)
        }
        _ => {
            if !report.has_errors() {
                // A value was refused without a message: a bug here, but never a panic.
                report.error(&None, "", "configuration rejected");
            }
            Err(report.finish())
        }
    }
}
