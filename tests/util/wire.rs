//! What the protocol suites (`rfc9112.rs`, `smuggling.rs`) share: one strict server
//! (small head limits and read timeouts, an access log), a client that counts every
//! response until the server closes, and a trickler that sends at a set rate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{connect, log_dir, put, read_response, Dir, Response, TestServer, ALICE, MUX_UID};

/// alice's home page.
pub const HOME: &str = "home of alice\n";
/// What a hidden (smuggled) request would fetch: never in any answer.
pub const HIDDEN: &str = "HIDDEN-PATH-WAS-SERVED";

/// `limit_request_line` of [`strict`].
pub const LINE: usize = 1000;
/// `limit_request_fields` of [`strict`].
pub const FIELDS: usize = 20;
/// `limit_request_field_size` of [`strict`].
pub const FIELD_SIZE: usize = 500;
/// `limit_request_body` of [`strict`].
pub const BODY_LIMIT: usize = 10_000;
/// `keep_alive_max_requests` of `max.test` in [`strict`].
pub const MAX_REQUESTS: usize = 3;

/// A running strict server with its world directory and access log.
pub struct Strict {
    pub server: TestServer,
    pub access_log: PathBuf,
    _w: Dir,
}

/// alice.test and max.test (`keep_alive_max_requests = 3`) in one environment, with
/// Apache's limits made small and mod_reqtimeout's timeouts `[1, 3, 500]`.
pub fn strict(test: &str) -> Strict {
    let w = Dir::new(test);
    put(w.path(), "alice/index.html", HOME.as_bytes(), ALICE, 0o644);
    for i in 0..40 {
        put(
            w.path(),
            &format!("alice/hidden-{i}"),
            HIDDEN.as_bytes(),
            ALICE,
            0o644,
        );
    }
    let access_log = log_dir(w.path()).join("alice.log");
    let server = TestServer::start(&config(w.path(), &access_log));
    Strict {
        server,
        access_log,
        _w: w,
    }
}

fn config(root: &Path, access_log: &Path) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 1
keep_alive_timeout = 5
limit_request_line = {LINE}
limit_request_fields = {FIELDS}
limit_request_field_size = {FIELD_SIZE}
request_head_timeout = [1, 3, 500]
request_body_timeout = [1, 3, 500]

[environments.alice]
user = {ALICE}
group = {ALICE}
min_processors = 1
max_processors = 2

[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{a}"
access_log = "{log}"
limit_request_body = {BODY_LIMIT}

[[vhosts]]
server_name = "max.test"
environment = "alice"
document_root = "{a}"
keep_alive_max_requests = {MAX_REQUESTS}
"#,
        a = root.join("alice").display(),
        log = access_log.display(),
    )
}

impl Strict {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The access log's lines naming a hidden path (must stay empty). Waits a moment:
    /// the processor writes the line after the answer.
    pub fn hidden_hits(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/hidden-"))
            .map(str::to_owned)
            .collect()
    }
}

/// Sends `bytes` on a fresh connection (after `before`, whose responses are read
/// first) and reads every response until the server closes or is silent for `quiet`.
/// Returns the responses to `bytes` and whether the connection was closed.
pub fn exchange(addr: SocketAddr, before: &[&str], bytes: &[u8], quiet: Duration) -> (Vec<Response>, bool) {
    let mut s = connect(addr);
    for b in before {
        s.write_all(b.as_bytes()).unwrap();
        let r = read_response(&mut s, false).expect("an answer to the request before");
        assert_eq!(r.status, 200, "the request before: {r:?}");
    }
    // The server may close before it read everything: a failed write is no failure.
    let _ = s.write_all(bytes);
    let (responses, closed) = responses_until_close(&mut s, quiet);
    (responses, closed)
}

/// Every response on `s` until it closes (`true`) or is silent for `quiet` (`false`).
pub fn responses_until_close(s: &mut TcpStream, quiet: Duration) -> (Vec<Response>, bool) {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    loop {
        let mut first = [0u8; 1];
        match s.read(&mut first) {
            Ok(0) => return (out, true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
        let mut chained = (&first[..]).chain(&mut *s);
        match read_response(&mut chained, false) {
            Some(r) => out.push(r),
            None => return (out, true),
        }
    }
}

/// Sends `prefix`, then `filler` bytes at `rate` bytes per second in pieces every
/// 50 ms (for at most `limit` in all), while reading the answer. Returns the status
/// (`None`: closed without one) and when it came.
pub fn trickle(
    addr: SocketAddr,
    before: &[&str],
    prefix: &[u8],
    filler: &[u8],
    rate: usize,
    limit: Duration,
) -> (Option<u16>, Duration) {
    let mut s = connect(addr);
    for b in before {
        s.write_all(b.as_bytes()).unwrap();
        let r = read_response(&mut s, false).expect("an answer to the request before");
        assert_eq!(r.status, 200, "the request before: {r:?}");
    }
    s.write_all(prefix).unwrap();
    let start = Instant::now();
    let mut writer = s.try_clone().unwrap();
    let filler = filler.to_vec();
    let piece = (rate / 20).max(1);
    std::thread::spawn(move || {
        let mut sent = 0;
        while sent < filler.len() && start.elapsed() < limit {
            let end = (sent + piece).min(filler.len());
            if writer.write_all(&filler[sent..end]).is_err() {
                return;
            }
            sent = end;
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    s.set_read_timeout(Some(limit + Duration::from_secs(5))).unwrap();
    let status = read_response(&mut s, false).map(|r| r.status);
    (status, start.elapsed())
}

/// Header lines of `n` bytes each (CRLF included), numbered, as many as fit `total`.
pub fn field_lines(total: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() + n <= total {
        let name = format!("X-F{i}: ");
        out.extend_from_slice(name.as_bytes());
        out.extend(std::iter::repeat_n(b'a', n - name.len() - 2));
        out.extend_from_slice(b"\r\n");
        i += 1;
    }
    out
}
