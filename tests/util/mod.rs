//! What every integration test shares: the uids the tests switch to, the root-or-skip
//! rule, and (re-exported) the server harness, process inspection, the HTTP client,
//! the Prometheus and status parsers, and per-test directories; `php` (used as
//! `util::php::*`): FastCGI configs and backends, a form client, DokuWiki.

#![allow(dead_code, unused_imports)]

pub mod fastcgi;
pub mod fs;
pub mod http;
pub mod php;
pub mod processes;
pub mod prometheus;
pub mod server;
pub mod wire;

pub use fastcgi::*;
pub use fs::*;
pub use http::*;
pub use processes::*;
pub use prometheus::*;
pub use server::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
/// uid/gid of the multiplexers in tests.
pub const MUX_UID: u32 = 2000;
pub const ALICE: u32 = 2001;
pub const BOB: u32 = 2002;

/// True when the test may run; prints why and returns false when it needs root and
/// does not have it. Under CI (`CI` set) a missing root is a failure, never a skip.
pub fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this test needs root and CI must run it as root");
    }
    eprintln!("skipping: this test needs root (real uid switches, chroot, fd passing between uids)");
    false
}

/// The first line of every test that needs root: returns from the test (a skip) when
/// not root, fails under CI. (`#[macro_use] mod util` comes first in `main.rs`.)
macro_rules! require_root {
    () => {
        if !$crate::util::root_or_skip() {
            return;
        }
    };
}

/// The path of the external `tool` if it is installed. Under CI (`CI` set) a missing
/// tool is a failure (`.ci/run` installs it); otherwise prints why the test is skipped
/// and returns `None`. `package` is the Debian package that provides it.
pub fn require_tool(tool: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/usr/bin".into()])
            .map(|d| d.join(tool))
            .find(|p| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is missing: CI must install Debian's {package} (see .ci/run)");
        }
        eprintln!("skipping: {tool} is not installed (apt-get install {package})");
    }
    found
}

/// Polls `f` until it returns `Some`, for at most `timeout`; the last `None` otherwise.
pub fn poll<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// The 99th percentile (nearest rank) of `v`.
pub fn p99(v: &[std::time::Duration]) -> std::time::Duration {
    let mut s = v.to_vec();
    s.sort();
    let rank = ((s.len() as f64) * 0.99).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}
