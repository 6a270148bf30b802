//! The harness: `TestServer::start(config)` writes the config to a temp dir, runs the
//! real binary, waits for its `ready` line (never a sleep), and on drop stops it and
//! fails the test if any process logged a panic. Also the configs most tests start from.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::http::get;
use super::processes::{children_of, cmdline, uid_of};
use super::{ALICE, BIN, BOB, MUX_UID};

/// A one-environment config: one multiplexer, alice (2001, at most 2 processors), then
/// `vhosts` (its `[[vhosts]]` tables); `extra_server` goes into `[server]`.
pub fn alice_config(extra_server: &str, vhosts: &str) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 1
request_head_timeout = 2
keep_alive_timeout = 5
{extra_server}

[environments.alice]
user = {ALICE}
group = {ALICE}
min_processors = 1
max_processors = 2
{vhosts}"#
    )
}

/// The standard two-environment config: alice (2001) and bob (2002), one vhost each.
pub fn two_env_config(root: &Path, extra_server: &str) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 2
request_head_timeout = 2
keep_alive_timeout = 5
{extra_server}

[environments.alice]
user = {ALICE}
group = {ALICE}
min_processors = 1
max_processors = 4

[environments.bob]
user = {BOB}
group = {BOB}
min_processors = 1
max_processors = 4

[[vhosts]]
server_name = "alice.test"
server_alias = ["www.alice.test", "*.alice.test"]
environment = "alice"
document_root = "{a}"

[[vhosts]]
server_name = "bob.test"
environment = "bob"
document_root = "{b}"
"#,
        a = root.join("alice").display(),
        b = root.join("bob").display()
    )
}

/// A two-environment config like [`two_env_config`], with the pool directives left to
/// the caller: `server_extra` goes into `[server]`, `alice_extra` / `bob_extra` into the
/// environments' tables, `more` after the two vhosts (extra `[[vhosts]]`). Short
/// timeouts so the pool tests stay fast.
pub fn pools_config(
    root: &Path,
    server_extra: &str,
    alice_extra: &str,
    bob_extra: &str,
    more: &str,
) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 2
request_head_timeout = 2
keep_alive_timeout = 1
{server_extra}

[environments.alice]
user = {ALICE}
group = {ALICE}
{alice_extra}

[environments.bob]
user = {BOB}
group = {BOB}
{bob_extra}

[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{a}"

[[vhosts]]
server_name = "bob.test"
environment = "bob"
document_root = "{b}"

{more}
"#,
        a = root.join("alice").display(),
        b = root.join("bob").display()
    )
}

/// `s` without ANSI colour escapes (the log is coloured, so `pid=N` is not contiguous).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The time of day, in seconds, of a supervisor log line (colours removed), from its
/// RFC 3339 timestamp (`2026-01-02T03:04:05.678901Z  INFO …`).
pub fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// One GET of `/` on a fresh connection, which must be a 200 with `body`.
pub fn ok(server: &TestServer, host: &str, body: &str, when: &str) {
    let r = get(server.addr, host, "/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, body),
        "{when}: GET {host}/\n{}",
        server.log()
    );
}

/// The log as the reader threads fill it; `<eof>` once the server's stderr closed.
type Log = Arc<(Mutex<String>, Condvar)>;

fn append(log: &Log, text: &str) {
    let (m, cv) = &**log;
    m.lock().unwrap().push_str(text);
    cv.notify_all();
}

/// A running `bulkhead serve`.
pub struct TestServer {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    /// The Prometheus listener, when one is configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The first `listen_tls` listener, when one is configured.
    pub tls_addr: Option<SocketAddr>,
    pub config_path: PathBuf,
    log: Log,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts the server on `config` and waits for `ready`.
    pub fn start(config: &str) -> TestServer {
        Self::try_start(config).unwrap_or_else(|log| panic!("server did not become ready:\n{log}"))
    }

    /// Like `start`, but returns the log if the server does not become ready.
    pub fn try_start(config: &str) -> Result<TestServer, String> {
        Self::try_start_with(config, |_| {})
    }

    /// Like `try_start`, letting `customize` adjust the command first (e.g. to hand the
    /// supervisor an fd it should not pass on, or to run it as another user).
    pub fn try_start_with(config: &str, customize: impl FnOnce(&mut Command)) -> Result<TestServer, String> {
        Self::launch(config, customize, None, &[])
    }

    /// Like `try_start_with`, but the binary is run by `via` (a program and its
    /// arguments, e.g. `systemd-socket-activate -l ADDR`), which must exec it.
    pub fn try_start_via(
        config: &str,
        via: &[std::ffi::OsString],
        customize: impl FnOnce(&mut Command),
    ) -> Result<TestServer, String> {
        Self::launch(config, customize, None, via)
    }

    /// Starts a server whose config sets `[server] error_log = "<error_log>"`, where the
    /// supervisor moves stderr before anything else: the log that `wait_for_log` and
    /// `log()` see is read from that file (following it by name, like `tail -F`, so a
    /// rotation is followed too), plus whatever reached stderr before the move.
    pub fn start_with_error_log(config: &str, error_log: &Path) -> TestServer {
        Self::launch(config, |_| {}, Some(error_log), &[])
            .unwrap_or_else(|log| panic!("server did not become ready:\n{log}"))
    }

    /// The one start path: config file, command, log readers, the `ready` line.
    fn launch(
        config: &str,
        customize: impl FnOnce(&mut Command),
        error_log: Option<&Path>,
        via: &[std::ffi::OsString],
    ) -> Result<TestServer, String> {
        // Named after the test where libtest names the thread after it.
        let test = std::thread::current()
            .name()
            .map(|n| n.replace("::", "-"))
            .filter(|n| n != "main")
            .unwrap_or_else(|| "conf".into());
        let dir = tempfile::Builder::new()
            .prefix(&format!("bulkhead-{test}-conf-"))
            .tempdir()
            .unwrap();
        let config_path = dir.path().join("bulkhead.toml");
        // Tests run in parallel: never the fixed default metrics port.
        let config = if config.contains("[status]") {
            config.to_string()
        } else {
            format!("{config}\n[status]\nmetrics_listen = \"127.0.0.1:0\"\n")
        };
        std::fs::write(&config_path, &config).unwrap();
        let mut cmd = match via.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        customize(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let log: Log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let to_stderr = log.clone();
        // With an error log, stderr carries only what came before the move: no
        // `<eof>` when it closes, the file carries on.
        let eof = error_log.is_none();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if std::env::var_os("BULKHEAD_TEST_ECHO").is_some() {
                    eprint!("{line}");
                }
                append(&to_stderr, &line);
                line.clear();
            }
            if eof {
                append(&to_stderr, "<eof>\n");
            }
        });
        if let Some(path) = error_log {
            follow(path.to_path_buf(), log.clone());
        }
        let mut server = TestServer {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics_addr: None,
            tls_addr: None,
            config_path,
            log,
            _dir: dir,
        };
        let ready = server
            .wait_for_log_line(Duration::from_secs(30), |l| l.contains("ready: listening on "))
            .and_then(|line| {
                let tls = line
                    .split("tls on ")
                    .nth(1)
                    .and_then(|t| t.split([',', ' ', ';']).next())
                    .and_then(|t| t.parse().ok());
                server.tls_addr = tls;
                parse_ready(&line)
            });
        match ready {
            Some((addr, metrics)) => {
                server.addr = addr;
                server.metrics_addr = metrics;
                Ok(server)
            }
            None => {
                server.kill();
                Err(server.log())
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// Every log line so far, colours removed.
    pub fn log_lines(&self) -> Vec<String> {
        self.log().lines().map(strip_ansi).collect()
    }

    /// Waits until a log line contains `needle` (counting from the start of the log);
    /// returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until `count` log lines contain `needle`; returns the last one.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> Option<String> {
        self.wait_log(timeout, |log| {
            log.lines()
                .filter(|l| l.contains(needle))
                .nth(count - 1)
                .map(str::to_string)
        })
    }

    /// Waits until a log line (colours removed) satisfies `pred`; returns that line.
    /// Gives up early when the server's stderr has closed.
    pub fn wait_for_log_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_log(timeout, |log| log.lines().map(strip_ansi).find(|l| pred(l)))
    }

    fn wait_log(&self, timeout: Duration, find: impl Fn(&str) -> Option<String>) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(found) = find(&g) {
                return Some(found);
            }
            if g.contains("<eof>") {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the supervisor to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every child of the supervisor, any role, spares included.
    pub fn all_children(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    /// The supervisor's children in `role` ("multiplexer" or "processor"); for
    /// "processor", spares (exec'd ahead of need, still root, unassigned) included.
    pub fn children(&self, role: &str) -> Vec<i32> {
        self.all_children()
            .into_iter()
            .filter(|p| cmdline(*p).get(1).map(String::as_str) == Some(role))
            .collect()
    }

    /// Processors assigned to an environment (spares left out).
    pub fn processors(&self) -> Vec<i32> {
        // One look at each pid: a spare exec'd meanwhile must not count as assigned.
        self.children("processor")
            .into_iter()
            .filter(|p| uid_of(*p).is_some_and(|u| u != 0))
            .collect()
    }

    /// Spare processors: exec'd, waiting for an environment, still root (tests always
    /// run the server as root, except the unprivileged one, which has no spare to tell).
    pub fn spares(&self) -> Vec<i32> {
        self.children("processor")
            .into_iter()
            .filter(|p| uid_of(*p) == Some(0))
            .collect()
    }

    /// The children that serve: multiplexers and assigned processors (what the status
    /// page lists; a spare has no slot).
    pub fn serving_children(&self) -> Vec<i32> {
        let mut v = self.children("multiplexer");
        v.extend(self.processors());
        v.sort();
        v
    }

    /// Processor pids whose uid is `uid`.
    pub fn processors_of(&self, uid: u32) -> Vec<i32> {
        self.children("processor")
            .into_iter()
            .filter(|p| uid_of(*p) == Some(uid))
            .collect()
    }

    /// Waits until `f` holds, polling (for process-table changes no log announces).
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        f()
    }

    /// `n` requests to each of the two standard sites, each on a fresh connection;
    /// every one must be a 200 with the site's body.
    pub fn all_ok(&self, n: usize, when: &str) {
        for i in 0..n {
            for (host, body) in [("alice.test", "alice home"), ("bob.test", "bob home")] {
                let r = get(self.addr, host, "/");
                assert_eq!(
                    (r.status, r.text().as_str()),
                    (200, body),
                    "{when}: request {i} to {host}\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        let log = self.log();
        if !std::thread::panicking() && log.contains("panicked") {
            panic!("a bulkhead process panicked:\n{log}");
        }
    }
}

/// The listener and the metrics address of a `ready: listening on A[, B…]; metrics on M`
/// line (colours removed).
fn parse_ready(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let rest = line.split("ready: listening on ").nth(1)?;
    let addr = rest.split([',', ' ', ';']).next()?.trim().parse().ok()?;
    let metrics = line
        .split("metrics on ")
        .nth(1)
        .and_then(|m| m.split_whitespace().next())
        .and_then(|m| m.parse().ok());
    Some((addr, metrics))
}

/// Appends every line written to the file at `path` to `log`, following the name like
/// `tail -F` (a renamed file keeps being read until each child has its new fd); ends
/// once the `TestServer` is gone.
fn follow(path: PathBuf, log: Log) {
    std::thread::spawn(move || {
        use std::os::unix::fs::MetadataExt;
        // Every file seen at the path, with its inode and unfinished line.
        let mut files: Vec<(std::fs::File, u64, Vec<u8>)> = Vec::new();
        // Until the TestServer and the stderr reader are both gone.
        while Arc::strong_count(&log) > 1 {
            if let Ok(ino) = std::fs::metadata(&path).map(|m| m.ino()) {
                if !files.iter().any(|(_, i, _)| *i == ino) {
                    if let Ok(f) = std::fs::File::open(&path) {
                        let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                        files.push((f, ino, Vec::new()));
                    }
                }
            }
            let mut progressed = false;
            for (f, _, pending) in files.iter_mut() {
                let mut buf = [0u8; 8192];
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    progressed = true;
                }
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    let text: Vec<u8> = pending.drain(..=end).collect();
                    append(&log, &String::from_utf8_lossy(&text));
                }
            }
            if !progressed {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
}
