//! `<VirtualHost>` sections (and the main server's directives) as read: names,
//! document root, environment, TLS files, log, redirects, CGI, limits. `sites.rs`
//! makes them `[[vhosts]]`. `AddHandler cgi-script .ext` (server or vhost) is `cgi`
//! (httpd's `Options ExecCGI` is not checked); a conditional or piped `CustomLog`, or
//! one in a format other than Combined, is reported.

use super::expand::Directive;
use super::translate::{from, Id, State};
use super::At;

/// Which environment a vhost names.
#[derive(Debug, Clone)]
pub enum EnvRef {
    /// Peruser's `ServerEnvironment NAME`.
    Named(String),
    /// An index into `State::envs`.
    Index(usize),
}

/// A `<VirtualHost>` (or the main server) as read.
#[derive(Debug, Clone, Default)]
pub struct Vhost {
    pub at: Option<At>,
    pub addrs: Vec<String>,
    pub name: Option<(String, String)>,
    /// Where `ServerName` and `DocumentRoot` were set (the main server's are reported).
    pub name_at: Option<At>,
    pub docroot_at: Option<At>,
    pub aliases: Vec<String>,
    pub aliases_from: Vec<String>,
    pub docroot: Option<(String, String)>,
    pub env: Option<(EnvRef, At)>,
    /// The directive that named it (`ServerEnvironment`, `AssignUserID`).
    pub env_directive: String,
    pub max_clients: Option<(i64, String)>,
    pub ssl_engine: Option<(bool, At)>,
    pub cert: Option<(String, String)>,
    pub key: Option<(String, String)>,
    pub log: Option<(String, String)>,
    pub redirects: Vec<Directive>,
    pub index: Option<(Vec<String>, String)>,
    pub cgi: Option<(Vec<String>, String)>,
    pub script_aliases: Vec<Directive>,
    pub body_limit: Option<(i64, String)>,
}

/// The combined formats (Apache's `%b` and Debian's `%O`).
const COMBINED: &[&str] = &[
    "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"",
    "%h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"",
];

/// Reads one `<VirtualHost>`.
pub fn read(st: &mut State, d: &Directive) -> Vhost {
    let mut v = Vhost {
        at: Some(d.at.clone()),
        addrs: d.args.clone(),
        ..Vhost::default()
    };
    for c in d.children.as_deref().unwrap_or(&[]) {
        if c.children.is_some() {
            st.section(c);
        } else if !directive(st, &mut v, c) {
            let why = match c.name.to_ascii_lowercase().as_str() {
                "errorlog" => Some("bulkhead has one error log ([server] error_log): not translated"),
                "sslcertificatechainfile" => {
                    Some("put the chain after the certificate in one file (tls_certificate): not translated")
                }
                "user" | "group" => {
                    Some("User/Group in a vhost need suEXEC; use AssignUserID: not translated")
                }
                "assignuseridexpr" | "assigngroupidexpr" => Some(
                    "a user chosen per request: bulkhead's environment is per vhost (AssignUserID): not translated",
                ),
                _ => None,
            };
            st.untranslated(c, why);
        }
    }
    v
}

/// A directive of a vhost or of the main server; false when it is none of these.
pub fn directive(st: &mut State, v: &mut Vhost, d: &Directive) -> bool {
    let one = d.args.first().cloned();
    match d.name.to_ascii_lowercase().as_str() {
        "servername" => match one {
            Some(n) => {
                v.name = Some((host_of(&n), from(d)));
                v.name_at = Some(d.at.clone());
            }
            None => st.untranslated(d, Some("takes a name")),
        },
        "serveralias" => {
            v.aliases.extend(d.args.iter().cloned());
            v.aliases_from.push(from(d));
        }
        "documentroot" => match one {
            Some(p) => {
                let p = st.path(&p);
                let p = if p.len() > 1 {
                    p.trim_end_matches('/').to_string()
                } else {
                    p
                };
                v.docroot = Some((p, from(d)));
                v.docroot_at = Some(d.at.clone());
            }
            None => st.untranslated(d, Some("takes a directory")),
        },
        "serverenvironment" => match d.args.as_slice() {
            [name] => {
                v.env = Some((EnvRef::Named(name.clone()), d.at.clone()));
                v.env_directive.clone_from(&d.name);
            }
            // Peruser before 0.3: `ServerEnvironment user group [chroot]`.
            [u, g, rest @ ..] if rest.len() <= 1 => match (Id::parse(u), Id::parse(g)) {
                (Some(u), Some(g)) => {
                    let chroot = rest.first().map(|c| st.path(c));
                    let i = st.derived_env(u, g, chroot, d);
                    v.env = Some((EnvRef::Index(i), d.at.clone()));
                    v.env_directive.clone_from(&d.name);
                }
                _ => st.untranslated(d, Some("not a user and group")),
            },
            _ => st.untranslated(d, Some("takes a <Processor> name")),
        },
        "assignuserid" => match d.args.as_slice() {
            [u, g] => match (Id::parse(u), Id::parse(g)) {
                (Some(u), Some(g)) => {
                    let i = st.derived_env(u, g, None, d);
                    v.env = Some((EnvRef::Index(i), d.at.clone()));
                    v.env_directive.clone_from(&d.name);
                }
                _ => st.untranslated(d, Some("not a user and group")),
            },
            _ => st.untranslated(d, Some("takes a user and a group")),
        },
        "maxclientsvhost" => {
            if let Some(i) = st.int(d) {
                v.max_clients = Some((i, from(d)));
            }
        }
        "sslengine" => match one.map(|a| a.to_ascii_lowercase()).as_deref() {
            Some("on") => v.ssl_engine = Some((true, d.at.clone())),
            Some("off") => v.ssl_engine = Some((false, d.at.clone())),
            _ => st.untranslated(d, Some("only On and Off are translated")),
        },
        "sslcertificatefile" | "sslcertificatekeyfile" => match one {
            Some(p) => {
                let p = (st.path(&p), from(d));
                if d.is("sslcertificatefile") {
                    v.cert = Some(p);
                } else {
                    v.key = Some(p);
                }
            }
            None => st.untranslated(d, Some("takes a file")),
        },
        "customlog" | "transferlog" => log(st, v, d),
        "redirect" | "redirectpermanent" | "redirecttemp" => v.redirects.push(d.clone()),
        "directoryindex" => {
            if d.args.iter().any(|a| a.eq_ignore_ascii_case("disabled")) {
                st.untranslated(
                    d,
                    Some("bulkhead always answers a directory with its index or 403"),
                );
            } else {
                v.index = Some((d.args.clone(), from(d)));
            }
        }
        "addhandler" if d.args.first().is_some_and(|h| h == "cgi-script") => {
            let exts: Vec<String> = d.args[1..]
                .iter()
                .map(|e| {
                    if e.starts_with('.') {
                        e.clone()
                    } else {
                        format!(".{e}")
                    }
                })
                .collect();
            let mut all = v.cgi.take().map(|(l, _)| l).unwrap_or_default();
            all.extend(exts);
            v.cgi = Some((all, from(d)));
        }
        "scriptalias" => v.script_aliases.push(d.clone()),
        "limitrequestbody" => {
            if let Some(i) = st.int(d) {
                v.body_limit = Some((i, from(d)));
            }
        }
        _ => return false,
    }
    true
}

/// `https://www.a.test:443` → `www.a.test`.
pub fn host_of(name: &str) -> String {
    let n = name.split_once("://").map_or(name, |(_, rest)| rest);
    let n = n.split('/').next().unwrap_or(n);
    match n.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h.to_string(),
        _ => n.to_string(),
    }
}

fn log(st: &mut State, v: &mut Vhost, d: &Directive) {
    let Some(path) = d.args.first() else {
        return st.untranslated(d, Some("takes a file"));
    };
    if path.starts_with('|') {
        return st.untranslated(
            d,
            Some("a piped log: bulkhead writes files (rotate them with SIGUSR1)"),
        );
    }
    let format = if d.is("transferlog") {
        st.log_formats
            .iter()
            .rev()
            .find(|(nick, _)| nick.is_empty())
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| "common".to_string())
    } else {
        d.args.get(1).cloned().unwrap_or_else(|| "common".to_string())
    };
    let string = st
        .log_formats
        .iter()
        .rev()
        .find(|(nick, _)| *nick == format)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| format.clone());
    if format != "combined" && !COMBINED.contains(&string.as_str()) {
        st.untranslated(
            d,
            Some(
                "this format is not Combined: bulkhead writes the Combined Log Format (or json) to this file",
            ),
        );
    }
    if d.args.len() > 2 {
        st.untranslated(d, Some("a conditional log: bulkhead logs every request"));
    }
    v.log = Some((st.path(path), from(d)));
}
