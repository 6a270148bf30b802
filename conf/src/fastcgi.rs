//! `[environments.NAME.fastcgi]`: the FastCGI backends the supervisor runs for an
//! environment (php-cgi or any FastCGI application), and `[server] runtime_dir`, where
//! their sockets live.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgi::strings;
use crate::error::Report;
use crate::limits::MAX_TIMEOUT_SECS;
use crate::model::{Fastcgi, Manager};
use crate::tree::{Entry, Table};

/// `[server] runtime_dir` when absent.
pub(crate) const DEFAULT_RUNTIME_DIR: &str = "/run/bulkhead";

/// `max_requests` when absent. Not php-cgi's own 500: a php-cgi start costs about
/// 30 ms of CPU (it loads its extensions; php-fpm forks a warm master instead), so at
/// 4,000 requests/s recycling every 500 spent a third of a CPU on starts (4,100 req/s
/// against 7,700 with 10,000, measured); 10,000 still bounds what a leak can grow to,
/// like `max_requests_per_child`.
pub(crate) const DEFAULT_MAX_REQUESTS: i64 = 10_000;

/// Most backends one environment may run (`max_backends`).
pub(crate) const MAX_BACKENDS: i64 = 1024;

/// The keys of `[environments.NAME.fastcgi]`.
const KEYS: &[&str] = &[
    "manager",
    "command",
    "extensions",
    "min_backends",
    "max_backends",
    "max_requests",
    "idle_timeout",
    "fastcgi_timeout",
    "requests_per_connection",
    "env",
];

/// `requests_per_connection` when absent: a kept connection goes back to accept after
/// this many answers, so a request waiting on the socket behind busy kept connections
/// waits for at most that many (Apache's `MaxKeepAliveRequests` default).
pub(crate) const DEFAULT_REQUESTS_PER_CONNECTION: i64 = 100;

/// Environment variables bulkhead sets for a backend itself.
const RESERVED_ENV: &[&str] = &[
    "PHP_FCGI_CHILDREN",
    "PHP_FCGI_MAX_REQUESTS",
    "FCGI_WEB_SERVER_ADDRS",
    "FPM_SOCKETS",
];

/// `manager`: `"bulkhead"` (default) or `"php-fpm"`.
fn manager(t: &Table, r: &mut Report) -> Option<Manager> {
    let Some(e) = t.get("manager") else {
        return Some(Manager::Bulkhead);
    };
    match e.str(r)? {
        "bulkhead" => Some(Manager::Bulkhead),
        "php-fpm" => Some(Manager::PhpFpm),
        other => {
            e.error(
                r,
                format!(
                    "manager is \"bulkhead\" or \"php-fpm\", got '{}'",
                    other.escape_debug()
                ),
            );
            None
        }
    }
}

/// With php-fpm, what its pool file cannot say: `min_backends` (the pool is
/// `pm = ondemand`: a warning) and an `env` value holding a quote or a line break (it
/// is written as a single-quoted ini value on one line: an error).
fn check_php_fpm(t: &Table, r: &mut Report, min_backends: Option<i64>, env_parsed: bool) -> bool {
    if let (Some(e), Some(1..)) = (t.get("min_backends"), min_backends) {
        r.warn(
            &e.span,
            &e.path,
            "min_backends is ignored with manager = \"php-fpm\": its pool is pm = ondemand (children forked on demand by its master)",
        );
    }
    let Some(env) = t.get("env").filter(|_| env_parsed) else {
        return true;
    };
    let Some(env) = env.table(r) else { return false };
    let mut ok = true;
    for (_, value) in env.entries() {
        if value.str(r).is_some_and(|v| v.contains(['\'', '\n', '\r'])) {
            value.error(
                r,
                "with manager = \"php-fpm\", an env value cannot hold ', a newline or a carriage return (php-fpm's pool file)",
            );
            ok = false;
        }
    }
    ok
}

/// `[server] runtime_dir`: absolute; default [`DEFAULT_RUNTIME_DIR`].
pub(crate) fn runtime_dir(t: &Table, r: &mut Report) -> Option<PathBuf> {
    match t.get("runtime_dir") {
        None => Some(PathBuf::from(DEFAULT_RUNTIME_DIR)),
        Some(e) => e.abs_path(r),
    }
}

/// An environment's `fastcgi` table: `Some(None)` when absent, `None` when invalid.
pub(crate) fn environment(t: &Table, r: &mut Report, chroot: Option<&Path>) -> Option<Option<Fastcgi>> {
    let Some(entry) = t.get("fastcgi") else {
        return Some(None);
    };
    let t = entry.table(r)?;
    t.check_keys(r, KEYS);
    let manager = manager(&t, r);
    let command = t.require(r, "command").and_then(|e| {
        let c = command(&e, r)?;
        warn_missing(&e, r, &c[0], chroot);
        Some(c)
    });
    let extensions = strings(&t, r, "extensions", |s| {
        let ok = s.len() > 1 && s.starts_with('.') && !s[1..].contains(['.', '/', '\0']);
        (!ok).then(|| format!("a FastCGI extension starts with '.' and has no other '.' or '/', got '{s}'"))
    });
    let extensions = extensions.and_then(|x| {
        if x.is_empty() {
            r.error(
                &t.span,
                &t.path,
                "fastcgi needs at least one extension (e.g. extensions = [\".php\"])",
            );
            return None;
        }
        Some(x)
    });
    let min_backends = t.int_or(r, "min_backends", 0, 0, MAX_BACKENDS);
    let max_backends = t.int_or(r, "max_backends", 8, 1, MAX_BACKENDS);
    let max_requests = t.int_or(r, "max_requests", DEFAULT_MAX_REQUESTS, 0, i64::MAX);
    let idle_timeout = t.int_or(r, "idle_timeout", 60, 1, MAX_TIMEOUT_SECS);
    let fastcgi_timeout = t.int_or(r, "fastcgi_timeout", 60, 1, MAX_TIMEOUT_SECS);
    let per_connection = t.int_or(
        r,
        "requests_per_connection",
        DEFAULT_REQUESTS_PER_CONNECTION,
        1,
        1_000_000,
    );
    let env = match t.get("env") {
        None => Some(Vec::new()),
        Some(e) => env(&e, r),
    };
    // After `env` parsed: its table and strings are known good, so nothing is said twice.
    let fpm_ok = manager != Some(Manager::PhpFpm) || check_php_fpm(&t, r, min_backends, env.is_some());
    if let (Some(min), Some(max)) = (min_backends, max_backends) {
        if min > max {
            let e = t.get("min_backends");
            let message = format!("min_backends ({min}) is above max_backends ({max})");
            match e {
                Some(e) => e.error(r, message),
                None => r.error(&t.span, &t.path, message),
            }
            return None;
        }
    }
    if !fpm_ok {
        return None;
    }
    Some(Some(Fastcgi {
        manager: manager?,
        command: command?,
        extensions: extensions?,
        min_backends: u32::try_from(min_backends?).ok()?,
        max_backends: u32::try_from(max_backends?).ok()?,
        max_requests: u64::try_from(max_requests?).ok()?,
        idle_timeout: Duration::from_secs(u64::try_from(idle_timeout?).ok()?),
        timeout: Duration::from_secs(u64::try_from(fastcgi_timeout?).ok()?),
        requests_per_connection: u32::try_from(per_connection?).ok()?,
        env: env?,
    }))
}

/// `command`: a non-empty array; the program an absolute path (as the environment sees
/// it: inside its chroot when it has one), no NUL anywhere.
fn command(e: &Entry, r: &mut Report) -> Option<Vec<String>> {
    let elements = e.array(r)?;
    if elements.is_empty() {
        e.error(
            r,
            "command is empty; expected the program and its arguments, e.g. [\"/usr/bin/php-cgi\"]",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, el) in elements.iter().enumerate() {
        let Some(s) = el.str(r) else {
            ok = false;
            continue;
        };
        if s.contains('\0') {
            el.error(r, "contains a NUL byte");
            ok = false;
        } else if i == 0 && !s.starts_with('/') {
            el.error(r, format!("the program must be an absolute path, got '{s}'"));
            ok = false;
        } else {
            out.push(s.to_string());
        }
    }
    ok.then_some(out)
}

/// A warning when the program is not an executable file where the backends will look
/// (inside the chroot): they would only fail, with backoff, at every start.
fn warn_missing(e: &Entry, r: &mut Report, program: &str, chroot: Option<&Path>) {
    use std::os::unix::fs::PermissionsExt;
    let host = match chroot {
        Some(root) => root.join(program.trim_start_matches('/')),
        None => PathBuf::from(program),
    };
    let ok = std::fs::metadata(&host).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !ok {
        r.warn(
            &e.span,
            &e.path,
            format!(
                "'{}' is not an executable file; every backend start will fail",
                host.display()
            ),
        );
    }
}

/// `env`: a table of strings; names `[A-Za-z_][A-Za-z0-9_]*`, not one bulkhead sets.
fn env(e: &Entry, r: &mut Report) -> Option<Vec<(String, String)>> {
    let t = e.table(r)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (key, value) in t.entries() {
        let name_ok = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let Some(v) = value.str(r) else {
            ok = false;
            continue;
        };
        if !name_ok {
            value.error(
                r,
                format!("'{key}' is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            );
            ok = false;
        } else if RESERVED_ENV.contains(&key) {
            value.error(
                r,
                format!("{key} is set by bulkhead (one request at a time per backend; use max_backends and max_requests)"),
            );
            ok = false;
        } else if v.contains('\0') {
            value.error(r, "contains a NUL byte");
            ok = false;
        } else {
            out.push((key.to_string(), v.to_string()));
        }
    }
    ok.then_some(out)
}
