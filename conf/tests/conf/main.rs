//! `conf`'s tests, one binary: valid configurations (`valid`) and every error class,
//! each checked for file, line and key path (`errors`); children and processor pools
//! (`limits`); `[status]`, vhost logs and address blocks (`status`); rules that keep
//! tenants apart and who may own a chroot or a log directory (`apart`); the CGI keys
//! (`cgi`); `index` and `fallback` (`index`); the cgroup limits and `cgroup_root`
//! (`cgroup`); HTTPS listeners, certificates and key permissions (`tls`); the request
//! limits and read timeouts with Apache's names (`request`).

mod apart;
mod cgi;
mod cgroup;
mod errors;
mod fastcgi;
mod index;
mod limits;
mod request;
mod status;
mod tls;
mod valid;
mod view;

use std::path::Path;

use conf::{parse_str, Config, ConfigError};

pub(crate) const FILE: &str = "/etc/bulkhead/test.toml";

pub(crate) const SERVER: &str = r#"
[server]
user = 2000
group = 2000
listen = ["127.0.0.1:0"]
"#;

pub(crate) const ALICE: &str = r#"
[environments.alice]
user = 2001
group = 2001
"#;

pub(crate) const VHOST: &str = r#"
[[vhosts]]
server_name = "alice.example"
environment = "alice"
document_root = "/srv/alice/www"
"#;

pub(crate) fn parse(text: &str) -> Config {
    match parse_str(text, Path::new(FILE)) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got:\n{e}\n--- config:\n{text}"),
    }
}

pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
    match parse_str(text, Path::new(FILE)) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(e) => e.errors,
    }
}

/// 1-based line of the first line of `text` containing `needle`.
pub(crate) fn line_of(text: &str, needle: &str) -> usize {
    let index = text.lines().position(|l| l.contains(needle));
    index.unwrap_or_else(|| panic!("{needle:?} not in config")) + 1
}

/// Asserts that exactly one error is at `line` for `key`, that its display names the
/// file, line and key, and that its message contains `fragment`.
#[track_caller]
pub(crate) fn assert_has(errors: &[ConfigError], line: usize, key: &str, fragment: &str) {
    let found: Vec<_> = errors.iter().filter(|e| e.key == key).collect();
    let all = errors.iter().map(|e| format!("  {e}\n")).collect::<String>();
    assert_eq!(found.len(), 1, "want one error for {key}, got:\n{all}");
    let e = found[0];
    let shown = e.to_string();
    assert_eq!(e.line, line, "wrong line for {key}:\n{all}");
    assert!(
        shown.starts_with(&format!("{FILE}:{line}: {key}: ")),
        "bad display {shown:?}"
    );
    assert!(
        e.message.contains(fragment),
        "{shown:?} does not contain {fragment:?}"
    );
}

pub(crate) fn cat(parts: &[&str]) -> String {
    parts.concat()
}
