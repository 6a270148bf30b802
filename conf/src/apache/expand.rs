//! What httpd does while it reads its files, before any directive means anything:
//! `Include`/`IncludeOptional` (globs, relative to `ServerRoot`), `ServerRoot`,
//! `Define`/`UnDefine` and `${VAR}` (a `Define`d variable, else the process
//! environment, as httpd 2.4; one pass, never re-expanded), `<IfDefine [!]NAME>`,
//! `<IfModule [!]NAME>` (modules from `LoadModule` so far, the built-in ones, and
//! `--module`), `<IfFile [!]PATH>`. The result is one tree of [`Directive`]s with their
//! words, each with the file and line it came from. Everything is bounded: files,
//! bytes, include depth and line length.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use thiserror::Error;

use super::lexer::{self, MAX_LINE};
use super::parse::{self, Node, SyntaxError};
use super::source::Source;
use super::{glob, At, Note};

/// Include depth (httpd's `AP_MAX_INCLUDE_DEPTH`).
pub const MAX_DEPTH: usize = 128;
/// Files read in all.
pub const MAX_FILES: usize = 4096;
/// Bytes of one file.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Bytes read in all.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

/// Modules compiled into Debian's httpd 2.4 (`apache2 -l`), true in `<IfModule>`.
const BUILT_IN: &[&str] = &[
    "core",
    "http_core",
    "so",
    "unixd",
    "log_config",
    "logio",
    "version",
    "watchdog",
];
/// The MPMs: with none loaded by `LoadModule` (httpd 2.2, where the MPM is compiled
/// in), Peruser is assumed; `--module` names another.
const MPMS: &[&str] = &["peruser", "perchild", "itk", "prefork", "worker", "event"];

/// A directive or section after expansion.
#[derive(Debug, Clone)]
pub struct Directive {
    /// As written (`ServerName`, `VirtualHost`); compare ignoring case.
    pub name: String,
    pub args: Vec<String>,
    pub at: At,
    /// `Some` for a section.
    pub children: Option<Vec<Directive>>,
}

impl Directive {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A reason to refuse the configuration, as httpd would refuse to start.
#[derive(Debug, Error)]
pub enum ExpandError {
    #[error("{file}:{}: {error}", error.line())]
    Syntax { file: String, error: SyntaxError },
    #[error("{at}: cannot read {path}: {message}")]
    Unreadable {
        at: String,
        path: String,
        message: String,
    },
    #[error("{at}: no file matches {pattern} (IncludeOptional allows none)")]
    NoMatch { at: String, pattern: String },
    #[error("{at}: {message}")]
    Limit { at: String, message: String },
}

/// What the command line adds: `-D NAME`, `-d SERVERROOT`, `--module NAME`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub defines: Vec<String>,
    pub server_root: Option<PathBuf>,
    pub modules: Vec<String>,
}

/// The expansion of one configuration.
pub struct Expanded {
    pub directives: Vec<Directive>,
    /// `ServerRoot` at the end (relative paths of later directives are below it).
    pub server_root: PathBuf,
    pub notes: Vec<Note>,
    pub errors: Vec<ExpandError>,
}

struct Expander<'a> {
    src: &'a dyn Source,
    /// Sections open around the directives being read, across includes.
    nest: usize,
    server_root: PathBuf,
    defines: HashSet<String>,
    vars: HashMap<String, String>,
    modules: HashSet<String>,
    mpm_loaded: bool,
    files: usize,
    bytes: usize,
    notes: Vec<Note>,
    errors: Vec<ExpandError>,
    /// The environment, for `${VAR}` not `Define`d (tests give none).
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// Reads `main` and everything it includes.
pub fn expand(
    src: &dyn Source,
    main: &Path,
    opts: &Options,
    env: &dyn Fn(&str) -> Option<String>,
) -> Expanded {
    let server_root = opts.server_root.clone().unwrap_or_else(|| {
        main.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let mut e = Expander {
        src,
        nest: 0,
        server_root,
        defines: HashSet::new(),
        vars: HashMap::new(),
        modules: opts.modules.iter().map(|m| canonical_module(m)).collect(),
        mpm_loaded: false,
        files: 0,
        bytes: 0,
        notes: Vec::new(),
        errors: Vec::new(),
        env,
    };
    e.mpm_loaded = e.modules.iter().any(|m| MPMS.contains(&m.as_str()));
    for d in &opts.defines {
        match d.split_once('=') {
            Some((name, value)) => {
                e.defines.insert(name.to_string());
                e.vars.insert(name.to_string(), value.to_string());
            }
            None => {
                e.defines.insert(d.clone());
            }
        }
    }
    let at = At::new(Rc::new(main.to_path_buf()), 0);
    let directives = e.file(main, &at, 0);
    Expanded {
        directives,
        server_root: e.server_root,
        notes: e.notes,
        errors: e.errors,
    }
}

/// `mod_ssl.c`, `ssl_module`, `mpm_itk_module`, `itk.c` → `ssl`, `itk`.
pub fn canonical_module(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    let n = n
        .strip_suffix(".c")
        .or_else(|| n.strip_suffix("_module"))
        .unwrap_or(&n);
    let n = n.strip_prefix("mod_").unwrap_or(n);
    n.strip_prefix("mpm_").unwrap_or(n).to_string()
}

impl Expander<'_> {
    fn file(&mut self, path: &Path, from: &At, depth: usize) -> Vec<Directive> {
        if self.files >= MAX_FILES {
            self.errors.push(ExpandError::Limit {
                at: from.to_string(),
                message: format!("more than {MAX_FILES} files included"),
            });
            return Vec::new();
        }
        self.files += 1;
        let limit = MAX_FILE_BYTES.min(MAX_TOTAL_BYTES.saturating_sub(self.bytes));
        let bytes = match self.src.read(path, limit) {
            Ok(b) => b,
            Err(err) => {
                self.errors.push(ExpandError::Unreadable {
                    at: from.to_string(),
                    path: path.display().to_string(),
                    message: err.to_string(),
                });
                return Vec::new();
            }
        };
        self.bytes += bytes.len();
        // Latin-1 and other bytes survive as U+FFFD: nothing here depends on them.
        let text = String::from_utf8_lossy(&bytes);
        let file = Rc::new(path.to_path_buf());
        match parse::parse(&text) {
            Ok(nodes) => self.nodes(&nodes, &file, depth),
            Err(error) => {
                self.errors.push(ExpandError::Syntax {
                    file: path.display().to_string(),
                    error,
                });
                Vec::new()
            }
        }
    }

    fn nodes(&mut self, nodes: &[Node], file: &Rc<PathBuf>, depth: usize) -> Vec<Directive> {
        let mut out = Vec::new();
        for node in nodes {
            let at = At::new(file.clone(), node.line);
            let Some(raw) = self.substitute(&node.raw_args, &at) else {
                continue;
            };
            let args = lexer::words(&raw);
            let name = node.name.to_ascii_lowercase();
            if let Some(children) = &node.children {
                if self.nest >= parse::MAX_DEPTH {
                    self.errors.push(ExpandError::Limit {
                        at: at.to_string(),
                        message: format!(
                            "sections nested more than {} deep (with the files they include)",
                            parse::MAX_DEPTH
                        ),
                    });
                    continue;
                }
                self.nest += 1;
                let test = match name.as_str() {
                    "ifdefine" => Some(self.test(&args, &at, |e, a| e.defines.contains(a))),
                    "ifmodule" => Some(self.test(&args, &at, |e, a| e.module_loaded(a))),
                    "iffile" => Some(self.test(&args, &at, |e, a| {
                        let p = e.resolve(a);
                        e.src.exists(&p)
                    })),
                    _ => None,
                };
                match test {
                    Some(true) => out.extend(self.nodes(children, file, depth)),
                    Some(false) => {}
                    None => {
                        let children = self.nodes(children, file, depth);
                        out.push(Directive {
                            name: node.name.clone(),
                            args,
                            at,
                            children: Some(children),
                        });
                    }
                }
                self.nest -= 1;
                continue;
            }
            match name.as_str() {
                "define" => match args.as_slice() {
                    [n] => {
                        self.defines.insert(n.clone());
                    }
                    [n, v] => {
                        self.defines.insert(n.clone());
                        self.vars.insert(n.clone(), v.clone());
                    }
                    _ => self.note(&at, "Define takes one or two arguments: ignored"),
                },
                "undefine" => {
                    for n in &args {
                        self.defines.remove(n);
                        self.vars.remove(n);
                    }
                }
                "serverroot" => match args.as_slice() {
                    // httpd wants it absolute; a relative one is taken below the last.
                    [root] => self.server_root = self.resolve(root),
                    _ => self.note(&at, "ServerRoot takes one argument: ignored"),
                },
                // Kept in the tree too: translation looks for mod_php.
                "loadmodule" => match args.first() {
                    Some(m) => {
                        let m = canonical_module(m);
                        self.mpm_loaded |= MPMS.contains(&m.as_str());
                        self.modules.insert(m);
                        out.push(Directive {
                            name: node.name.clone(),
                            args,
                            at,
                            children: None,
                        });
                    }
                    None => self.note(&at, "LoadModule without a module: ignored"),
                },
                "include" | "includeoptional" => {
                    let optional = name == "includeoptional";
                    for pattern in &args {
                        out.extend(self.include(pattern, optional, &at, depth));
                    }
                }
                _ => out.push(Directive {
                    name: node.name.clone(),
                    args,
                    at,
                    children: None,
                }),
            }
        }
        out
    }

    /// `<IfX [!]ARG>`: the test with its negation.
    fn test(&mut self, args: &[String], at: &At, f: impl Fn(&Self, &str) -> bool) -> bool {
        let [arg] = args else {
            self.note(
                at,
                "a conditional section takes one argument: its contents ignored",
            );
            return false;
        };
        match arg.strip_prefix('!') {
            Some(a) => !f(self, a),
            None => f(self, arg),
        }
    }

    fn module_loaded(&self, name: &str) -> bool {
        let m = canonical_module(name);
        self.modules.contains(&m) || BUILT_IN.contains(&m.as_str()) || (m == "peruser" && !self.mpm_loaded)
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.server_root.join(p)
        }
    }

    fn include(&mut self, pattern: &str, optional: bool, at: &At, depth: usize) -> Vec<Directive> {
        if depth + 1 >= MAX_DEPTH {
            self.errors.push(ExpandError::Limit {
                at: at.to_string(),
                message: format!("includes nested more than {MAX_DEPTH} deep (a loop?)"),
            });
            return Vec::new();
        }
        let path = self.resolve(pattern);
        let paths = if glob::has_wildcard(pattern) {
            let found = glob::expand(self.src, &path, MAX_FILES);
            if found.is_empty() && !optional {
                self.errors.push(ExpandError::NoMatch {
                    at: at.to_string(),
                    pattern: path.display().to_string(),
                });
            }
            found
        } else if optional && !self.src.exists(&path) {
            Vec::new()
        } else {
            vec![path]
        };
        let mut out = Vec::new();
        for p in paths {
            if self.src.is_dir(&p) {
                out.extend(self.directory(&p, at, depth + 1));
            } else {
                out.extend(self.file(&p, at, depth + 1));
            }
        }
        out
    }

    /// A directory included by name: every file in it, in order, and its
    /// subdirectories the same way (httpd's `ap_process_resource_config`).
    fn directory(&mut self, dir: &Path, at: &At, depth: usize) -> Vec<Directive> {
        if depth + 1 >= MAX_DEPTH {
            self.errors.push(ExpandError::Limit {
                at: at.to_string(),
                message: format!("directories nested more than {MAX_DEPTH} deep"),
            });
            return Vec::new();
        }
        let mut names = match self.src.list(dir) {
            Ok(n) => n,
            Err(err) => {
                self.errors.push(ExpandError::Unreadable {
                    at: at.to_string(),
                    path: dir.display().to_string(),
                    message: err.to_string(),
                });
                return Vec::new();
            }
        };
        names.sort();
        let mut out = Vec::new();
        for (name, is_dir) in names {
            if self.files >= MAX_FILES {
                break;
            }
            let p = dir.join(name);
            if is_dir {
                out.extend(self.directory(&p, at, depth + 1));
            } else {
                out.extend(self.file(&p, at, depth));
            }
        }
        out
    }

    /// `${VAR}` replaced once; an unknown one is kept as written with a note (httpd
    /// warns the same way). `None` (and an error) when the result is too long.
    fn substitute(&mut self, raw: &str, at: &At) -> Option<String> {
        if !raw.contains("${") {
            return Some(raw.to_string());
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            match self.vars.get(name).cloned().or_else(|| (self.env)(name)) {
                Some(v) => out.push_str(&v),
                None => {
                    self.note(
                        at,
                        &format!("variable ${{{name}}} is not defined: kept as written"),
                    );
                    out.push_str(&rest[start..start + 2 + end + 1]);
                }
            }
            rest = &after[end + 1..];
            if out.len() > MAX_LINE {
                break;
            }
        }
        out.push_str(rest);
        if out.len() > MAX_LINE {
            self.errors.push(ExpandError::Limit {
                at: at.to_string(),
                message: format!("longer than {MAX_LINE} bytes once variables are expanded"),
            });
            return None;
        }
        Some(out)
    }

    fn note(&mut self, at: &At, message: &str) {
        self.notes.push(Note {
            at: at.clone(),
            message: message.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::Memory;
    use super::*;

    fn run(files: &[(&str, &str)], opts: &Options) -> Expanded {
        expand(
            &Memory::with(files),
            Path::new("/etc/apache2/apache2.conf"),
            opts,
            &|v| (v == "FROM_ENV").then(|| "env-value".to_string()),
        )
    }

    fn flat(ds: &[Directive]) -> Vec<String> {
        ds.iter()
            .map(|d| format!("{} {}", d.name, d.args.join("|")))
            .collect()
    }

    #[test]
    fn includes_globs_and_server_root() {
        let x = run(
            &[
                (
                    "/etc/apache2/apache2.conf",
                    "A 1\nInclude sites/*.conf\nIncludeOptional none/*.conf\nIncludeOptional missing.conf\nServerRoot /srv\nInclude x.conf\nInclude dir\n",
                ),
                ("/etc/apache2/sites/b.conf", "B 2\n"),
                ("/etc/apache2/sites/a.conf", "<VirtualHost *>\nInclude /etc/apache2/inner\n</VirtualHost>\n"),
                ("/etc/apache2/inner", "ServerName a.test\n"),
                ("/srv/x.conf", "X\n"),
                ("/srv/dir/2", "Two\n"),
                ("/srv/dir/1", "One\n"),
            ],
            &Options::default(),
        );
        assert!(x.errors.is_empty(), "{:?}", x.errors);
        assert_eq!(
            flat(&x.directives),
            ["A 1", "VirtualHost *", "B 2", "X ", "One ", "Two "]
        );
        let inner = &x.directives[1].children.as_ref().unwrap()[0];
        assert_eq!(inner.at.to_string(), "/etc/apache2/inner:1");
    }

    #[test]
    fn include_errors() {
        let x = run(
            &[(
                "/etc/apache2/apache2.conf",
                "Include none/*.conf\nInclude missing.conf\nInclude apache2.conf\n",
            )],
            &Options::default(),
        );
        let msgs: Vec<String> = x.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs[0].starts_with("/etc/apache2/apache2.conf:1: no file matches"),
            "{msgs:?}"
        );
        assert!(msgs[1].starts_with("/etc/apache2/apache2.conf:2: cannot read /etc/apache2/missing.conf"));
        // The loop stops at the depth limit, once.
        assert!(
            msgs.iter().any(|m| m.contains("nested more than 128")),
            "{msgs:?}"
        );
    }

    #[test]
    fn defines_and_conditions() {
        let x = run(
            &[(
                "/etc/apache2/apache2.conf",
                "Define SITE a.test\nDefine ON\n<IfDefine ON>\nA ${SITE}\n</IfDefine>\n<IfDefine !ON>\nB\n</IfDefine>\n<IfDefine CLI>\nC\n</IfDefine>\nUnDefine ON\n<IfDefine !ON>\nD \"${SITE} x\" ${FROM_ENV} ${NOPE}\n</IfDefine>\n",
            )],
            &Options {
                defines: vec!["CLI".into()],
                ..Options::default()
            },
        );
        assert_eq!(
            flat(&x.directives),
            ["A a.test", "C ", "D a.test x|env-value|${NOPE}"]
        );
        assert_eq!(x.notes.len(), 1);
        assert!(x.notes[0].to_string().contains(":14: variable ${NOPE}"));
    }

    #[test]
    fn modules() {
        let text = "<IfModule mod_ssl.c>\nA\n</IfModule>\n<IfModule peruser.c>\nP\n</IfModule>\nLoadModule ssl_module m/mod_ssl.so\nLoadModule mpm_itk_module m/itk.so\n<IfModule mod_ssl.c>\nB\n</IfModule>\n<IfModule !ssl_module>\nC\n</IfModule>\n<IfModule mpm_itk_module>\nI\n</IfModule>\n<IfModule peruser.c>\nQ\n</IfModule>\n<IfModule log_config_module>\nL\n</IfModule>\n";
        let x = run(&[("/etc/apache2/apache2.conf", text)], &Options::default());
        let loads = [
            "LoadModule ssl_module|m/mod_ssl.so",
            "LoadModule mpm_itk_module|m/itk.so",
        ];
        assert_eq!(flat(&x.directives), ["P ", loads[0], loads[1], "B ", "I ", "L "]);
        let x = run(
            &[(
                "/etc/apache2/apache2.conf",
                "<IfModule itk.c>\nI\n</IfModule>\n<IfModule peruser.c>\nP\n</IfModule>\n",
            )],
            &Options {
                modules: vec!["mpm_itk_module".into()],
                ..Options::default()
            },
        );
        assert_eq!(flat(&x.directives), ["I "]);
    }

    #[test]
    fn sections_nest_boundedly_across_includes() {
        let x = run(
            &[("/etc/apache2/apache2.conf", "<A>\nInclude apache2.conf\n</A>\n")],
            &Options::default(),
        );
        let msgs: Vec<String> = x.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].ends_with("sections nested more than 64 deep (with the files they include)"),
            "{msgs:?}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let x = run(
            &[
                ("/etc/apache2/apache2.conf", "Include a.conf\n"),
                ("/etc/apache2/a.conf", "\n<VirtualHost *>\n"),
            ],
            &Options::default(),
        );
        assert_eq!(
            x.errors[0].to_string(),
            "/etc/apache2/a.conf:2: <VirtualHost> was not closed"
        );
    }
}
