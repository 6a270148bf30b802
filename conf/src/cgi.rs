//! The CGI keys: a vhost's `cgi` (file extensions), `cgi_dirs` (URL path prefixes),
//! `cgi_timeout` (seconds) and `limit_request_body` (bytes of a body handed to a
//! script; `[server]` holds the defaults of the last two).

use std::time::Duration;

use crate::error::Report;
use crate::limits::MAX_TIMEOUT_SECS;
use crate::model::Cgi;
use crate::tree::{Entry, Table};

/// `[server] cgi_timeout` when absent (Apache's `Timeout`).
pub(crate) const DEFAULT_TIMEOUT_SECS: i64 = 60;

/// `[server] limit_request_body` when absent (100 MiB).
pub(crate) const DEFAULT_BODY_LIMIT: u64 = 100 << 20;

/// `limit_request_body` in `t` (bytes, 0 = no limit of its own): `Some(None)` when
/// absent, `None` when invalid.
pub(crate) fn body_limit(t: &Table, r: &mut Report) -> Option<Option<u64>> {
    match t.get("limit_request_body") {
        None => Some(None),
        Some(e) => Some(Some(u64::try_from(e.int_in(r, 0, i64::MAX)?).ok()?)),
    }
}

/// `cgi_timeout` in `t`, at least 1 (Apache's `Timeout` has no "off"): `Some(None)`
/// when absent, `None` when invalid.
pub(crate) fn timeout(t: &Table, r: &mut Report) -> Option<Option<Duration>> {
    match t.get("cgi_timeout") {
        None => Some(None),
        Some(e) => {
            let secs = e.int_in(r, 1, MAX_TIMEOUT_SECS)?;
            Some(Some(Duration::from_secs(u64::try_from(secs).ok()?)))
        }
    }
}

/// A vhost's CGI keys; the defaults are `[server]`'s `cgi_timeout` and
/// `limit_request_body`.
pub(crate) fn vhost(
    t: &Table,
    r: &mut Report,
    default_timeout: Duration,
    default_body_limit: u64,
) -> Option<Cgi> {
    let extensions = strings(t, r, "cgi", |s| {
        let ok = s.len() > 1 && s.starts_with('.') && !s[1..].contains(['.', '/', '\0']);
        (!ok).then(|| format!("a CGI extension starts with '.' and has no other '.' or '/', got '{s}'"))
    });
    let dirs = strings(t, r, "cgi_dirs", |s| {
        let ok = s.len() > 1
            && s.starts_with('/')
            && s.ends_with('/')
            && !s.contains(['\0', '?', '#', '%', '\\'])
            && !s.split('/').any(|seg| seg == "." || seg == "..");
        (!ok).then(|| {
            format!("a CGI directory is a URL path starting and ending with '/' (not '/' alone, no '.' or '..' segments, '%', '?' or '#'), got '{s}'")
        })
    });
    let timeout = timeout(t, r);
    let body_limit = body_limit(t, r);
    Some(Cgi {
        extensions: extensions?,
        dirs: dirs?,
        timeout: timeout?.unwrap_or(default_timeout),
        body_limit: body_limit?.unwrap_or(default_body_limit),
    })
}

/// An optional array of strings, each checked by `bad` (an error message or `None`).
pub(crate) fn strings(
    t: &Table,
    r: &mut Report,
    key: &str,
    bad: impl Fn(&str) -> Option<String>,
) -> Option<Vec<String>> {
    let Some(entry) = t.get(key) else {
        return Some(Vec::new());
    };
    let elements: Vec<Entry> = entry.array(r)?;
    let mut out = Vec::new();
    let mut ok = true;
    for e in &elements {
        match e.str(r) {
            Some(s) => match bad(s) {
                Some(message) => {
                    e.error(r, message);
                    ok = false;
                }
                None if out.iter().any(|o| o == s) => {
                    e.error(r, format!("'{s}' is listed twice"));
                    ok = false;
                }
                None => out.push(s.to_string()),
            },
            None => ok = false,
        }
    }
    ok.then_some(out)
}
