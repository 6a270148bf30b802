//! Error answers, body framing, static files and path safety through the real binary.
//!
//! The first request on a connection is read by a multiplexer, which answers a bad head
//! itself (400/408/414/431/505, one `WARN … status=NNN` line, then close). Every later request,
//! and the body of every request, is read by the processor, which answers the same
//! heads with the same statuses and logs `request refused status=NNN` (`request failed`
//! for 5xx). Each check looks at
//! the status, at whether the connection is closed after it, and at the log line (matched
//! by the client's port, which both processes log as the peer).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::*;

const ALICE_HOME: &str = "<html><body>alice home</body></html>\n";
const HELLO: &str = "hello, world of alice\n";
/// Inside alice's document root: what a smuggled request would fetch.
const ALICE_SECRET: &str = "alice-docroot-secret-7f3a";
/// Outside every document root (in the world dir), readable by alice's uid.
const OUTSIDE_SECRET: &str = "outside-the-docroot-secret-91c2";

/// A request that must never be answered when it appears inside a body.
const SMUGGLED: &str = "GET /secret.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n";
/// A good first request that keeps the connection open.
const GOOD: &str = "GET / HTTP/1.1\r\nHost: alice.test\r\n\r\n";

/// The world dir (kept alive for the server's lifetime) and a server on it.
fn setup(test: &str) -> (Dir, TestServer) {
    let w = Dir::new(test);
    put(w.path(), "alice/index.html", ALICE_HOME.as_bytes(), ALICE, 0o644);
    put(w.path(), "alice/hello.txt", HELLO.as_bytes(), ALICE, 0o644);
    put(
        w.path(),
        "alice/secret.txt",
        ALICE_SECRET.as_bytes(),
        ALICE,
        0o600,
    );
    put(w.path(), "alice/sub/index.html", b"sub index", ALICE, 0o644);
    put(w.path(), "bob/index.html", b"bob home", BOB, 0o644);
    // Next to the document roots, owned by alice: only a traversal could serve it.
    put(w.path(), "secret.txt", OUTSIDE_SECRET.as_bytes(), ALICE, 0o600);
    put(w.path(), "x", OUTSIDE_SECRET.as_bytes(), ALICE, 0o600);
    put(w.path(), "b", OUTSIDE_SECRET.as_bytes(), ALICE, 0o600);
    let server = TestServer::start(&two_env_config(w.path(), ""));
    (w, server)
}

/// One client connection.
struct Client {
    s: TcpStream,
    port: u16,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let s = connect(addr);
        let port = s.local_addr().unwrap().port();
        Client { s, port }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    #[track_caller]
    fn response(&mut self, what: &str) -> Response {
        read_response(&mut self.s, false).unwrap_or_else(|| panic!("{what}: no response"))
    }

    #[track_caller]
    fn head_response(&mut self, what: &str) -> Response {
        read_response(&mut self.s, true).unwrap_or_else(|| panic!("{what}: no response"))
    }

    /// Everything the server still sends until it closes (must be nothing).
    #[track_caller]
    fn assert_closed(&mut self, what: &str) {
        let mut rest = Vec::new();
        match self.s.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "{what}: more bytes after the last response: {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => panic!("{what}: connection not closed cleanly: {e}"),
        }
    }
}

/// The log line for `status` whose peer is `port`, by the multiplexer (`WARN`, its own
/// answer) or by the processor (`request refused`). Waits for it: the log is collected
/// asynchronously.
#[track_caller]
fn assert_logged(server: &TestServer, port: u16, status: u16, by_processor: bool, what: &str) -> String {
    let find = || {
        strip_ansi(&server.log())
            .lines()
            .find(|l| {
                l.contains(&format!("status={status}"))
                    && names_port(l, port)
                    && if by_processor {
                        l.contains("request refused") || l.contains("request failed")
                    } else {
                        l.contains("WARN") && !l.contains("request refused")
                    }
            })
            .map(str::to_owned)
    };
    server.wait_until(Duration::from_secs(10), || find().is_some());
    let who = if by_processor { "processor" } else { "multiplexer" };
    find().unwrap_or_else(|| {
        panic!(
            "{what}: no {who} log line with status={status} for peer port {port}:\n{}",
            server.log()
        )
    })
}

/// Does `line` name `127.0.0.1:port` (and not a longer port with the same prefix)?
fn names_port(line: &str, port: u16) -> bool {
    let needle = format!("127.0.0.1:{port}");
    line.match_indices(&needle).any(|(i, _)| {
        !line[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[track_caller]
fn assert_close_header(r: &Response, what: &str) {
    assert!(
        r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "{what}: no Connection: close in {r:?}"
    );
}

/// Heads both the multiplexer (first request) and the processor (later request) must
/// refuse, with the status they get.
fn bad_heads() -> Vec<(&'static str, Vec<u8>, u16)> {
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: alice.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    let big_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: alice.test\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    vec![
        (
            "header line without colon",
            b"GET / HTTP/1.1\r\nHost alice.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "garbage bytes",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\xff\xfe garbage\r\n\r\n".to_vec(),
            400,
        ),
        (
            "request line without target and version",
            b"GET\r\nHost: alice.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "request line with two spaces",
            b"GET  / HTTP/1.1\r\nHost: alice.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: alice.test\r\nHost: bob.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space before the colon",
            b"GET / HTTP/1.1\r\nHost : alice.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: alice.test\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in a field value",
            b"GET / HTTP/1.1\r\nHost: alice.test\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "invalid Host",
            b"GET / HTTP/1.1\r\nHost: alice.test:80x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/2.0 request line",
            b"GET / HTTP/2.0\r\nHost: alice.test\r\n\r\n".to_vec(),
            505,
        ),
        ("10 KB header field", big_header.into_bytes(), 431),
        ("10 KB request target", big_uri.into_bytes(), 414),
    ]
}

#[test]
fn multiplexer_refuses_bad_first_heads() {
    require_root!();
    let (_w, server) = setup("multiplexer_refuses_bad_first_heads");
    for (what, bytes, status) in bad_heads() {
        let mut c = Client::new(server.addr);
        c.send(&bytes);
        let r = c.response(what);
        assert_eq!(r.status, status, "{what}: {r:?}\n{}", server.log());
        assert_close_header(&r, what);
        assert!(!r.text().contains(ALICE_HOME), "{what}: served the page");
        c.assert_closed(what);
        assert_logged(&server, c.port, status, false, what);
    }
}

/// A request for hello.txt whose head is exactly `len` bytes.
fn head_of_len(len: usize) -> String {
    let start = "GET /hello.txt HTTP/1.1\r\nHost: alice.test\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = len - start.len() - end.len();
    format!("{start}{}{end}", "p".repeat(pad))
}

#[test]
fn head_limit_is_the_same_in_multiplexer_and_processor() {
    require_root!();
    let (_w, server) = setup("head_limit_is_the_same_in_multiplexer_and_processor");
    // limit_request_head is 8192 (the default): a head of 8192 bytes is served, 8193 is 431,
    // whether the multiplexer (first request) or the processor (second) reads it.
    for (len, status) in [(8192, 200), (8193, 431)] {
        let req = head_of_len(len);
        assert_eq!(req.len(), len);
        for second in [false, true] {
            let what = format!("{len}-byte head, second={second}");
            let mut c = Client::new(server.addr);
            if second {
                c.send(GOOD.as_bytes());
                assert_eq!(c.response(&what).status, 200);
            }
            c.send(req.as_bytes());
            let r = c.response(&what);
            assert_eq!(r.status, status, "{what}: {r:?}");
            if status == 200 {
                assert_eq!(r.text(), HELLO, "{what}");
                // Still open: another request is answered.
                c.send(GOOD.as_bytes());
                assert_eq!(c.response(&what).status, 200, "{what}: after");
            } else {
                assert_close_header(&r, &what);
                c.assert_closed(&what);
                assert_logged(&server, c.port, status, second, &what);
            }
        }
    }
}

#[test]
fn multiplexer_head_timeout_is_408_and_close() {
    require_root!();
    let (_w, server) = setup("multiplexer_head_timeout_is_408_and_close");
    let mut c = Client::new(server.addr);
    let start = Instant::now();
    // Never completed: request_head_timeout is 2 s in two_env_config.
    c.send(b"GET / HTTP/1.1\r\nHost: alice.test\r\n");
    let r = c.response("partial head");
    let took = start.elapsed();
    assert_eq!(r.status, 408, "{r:?}");
    assert_close_header(&r, "408");
    c.assert_closed("408");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "408 after {took:?}, request_head_timeout is 2 s"
    );
    assert_logged(&server, c.port, 408, false, "head timeout");
}

#[test]
fn processor_refuses_bad_later_heads() {
    require_root!();
    let (_w, server) = setup("processor_refuses_bad_later_heads");
    for (what, bytes, status) in bad_heads() {
        let mut c = Client::new(server.addr);
        let mut req = GOOD.as_bytes().to_vec();
        req.extend_from_slice(&bytes);
        c.send(&req);
        let first = c.response(what);
        assert_eq!(first.status, 200, "{what}: first request: {first:?}");
        assert_eq!(first.text(), ALICE_HOME);
        let r = c.response(what);
        assert_eq!(
            r.status,
            status,
            "{what}: second request: {r:?}\n{}",
            server.log()
        );
        assert_close_header(&r, what);
        c.assert_closed(what);
        assert_logged(&server, c.port, status, true, what);
    }
}

#[test]
fn processor_head_timeout_is_408_and_close() {
    require_root!();
    let (_w, server) = setup("processor_head_timeout_is_408_and_close");
    let mut c = Client::new(server.addr);
    c.send(GOOD.as_bytes());
    let first = c.response("first");
    assert_eq!(first.status, 200);
    let start = Instant::now();
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: alice.test\r\n");
    let r = c.response("partial second head");
    let took = start.elapsed();
    assert_eq!(r.status, 408, "{r:?}\n{}", server.log());
    assert_close_header(&r, "408");
    c.assert_closed("408");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "408 after {took:?}, request_head_timeout is 2 s"
    );
    assert_logged(&server, c.port, 408, true, "second head timeout");
}

#[test]
fn idle_keep_alive_connection_closes_after_keep_alive_timeout() {
    require_root!();
    let w = Dir::new("idle_keep_alive_connection_closes_after_keep_alive_timeout");
    sites(w.path(), 0o644);
    let server = TestServer::start(
        &two_env_config(w.path(), "").replace("keep_alive_timeout = 5", "keep_alive_timeout = 1"),
    );
    for requests in [1, 3] {
        let mut c = Client::new(server.addr);
        for _ in 0..requests {
            let r = get_on(&mut c.s, "alice.test", "/").expect("no response");
            assert_eq!((r.status, r.text().as_str()), (200, "alice home"));
        }
        // Idle after its last response: closed after 1 s, not before, not much after.
        let start = Instant::now();
        c.assert_closed("idle keep-alive");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
            "closed {took:?} after {requests} responses, keep_alive_timeout is 1 s"
        );
    }
}

/// Requests whose body framing is ambiguous or broken (RFC 9112 §6), each with a body
/// that holds a complete request for alice's secret.
fn framing_errors() -> Vec<(&'static str, String)> {
    let n = SMUGGLED.len();
    vec![
        (
            "Transfer-Encoding with Content-Length",
            format!(
                "POST / HTTP/1.1\r\nHost: alice.test\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: {n}\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            // (Read as chunked, the body ends after `0` and the rest is the next request.)
        ),
        (
            "Content-Length with Transfer-Encoding (CL first)",
            // Read as Content-Length 0, the body would be the next request.
            format!(
                "GET / HTTP/1.1\r\nHost: alice.test\r\nContent-Length: 0\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "Transfer-Encoding: gzip",
            format!("POST / HTTP/1.1\r\nHost: alice.test\r\nTransfer-Encoding: gzip\r\n\r\n{SMUGGLED}"),
        ),
        (
            "Transfer-Encoding: chunked, gzip",
            format!("GET / HTTP/1.1\r\nHost: alice.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n{SMUGGLED}"),
        ),
        (
            "two Content-Length",
            format!(
                "POST / HTTP/1.1\r\nHost: alice.test\r\nContent-Length: 0\r\n\
                 Content-Length: {n}\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "Content-Length: abc",
            format!("GET / HTTP/1.1\r\nHost: alice.test\r\nContent-Length: abc\r\n\r\n{SMUGGLED}"),
        ),
        (
            "Content-Length: -1",
            format!("GET / HTTP/1.1\r\nHost: alice.test\r\nContent-Length: -1\r\n\r\n{SMUGGLED}"),
        ),
        (
            "malformed chunk size line",
            format!(
                "GET / HTTP/1.1\r\nHost: alice.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{SMUGGLED}"
            ),
        ),
        (
            "chunk data without CRLF",
            format!(
                "GET / HTTP/1.1\r\nHost: alice.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n{SMUGGLED}"
            ),
        ),
    ]
}

#[test]
fn framing_errors_on_first_request_get_one_400_and_close() {
    require_root!();
    let (_w, server) = setup("framing_errors_on_first_request_get_one_400_and_close");
    for (what, req) in framing_errors() {
        let mut c = Client::new(server.addr);
        c.send(req.as_bytes());
        let r = c.response(what);
        assert_eq!(r.status, 400, "{what}: {r:?}\n{}", server.log());
        assert_close_header(&r, what);
        assert!(!r.text().contains(ALICE_SECRET), "{what}: secret in the 400");
        // Exactly one response: the smuggled request in the body is never answered.
        c.assert_closed(what);
        assert_logged(&server, c.port, 400, true, what);
    }
}

#[test]
fn framing_errors_on_later_request_get_one_400_and_close() {
    require_root!();
    let (_w, server) = setup("framing_errors_on_later_request_get_one_400_and_close");
    for (what, req) in framing_errors() {
        let mut c = Client::new(server.addr);
        c.send(format!("{GOOD}{req}").as_bytes());
        let first = c.response(what);
        assert_eq!(first.status, 200, "{what}: first request: {first:?}");
        assert_eq!(first.text(), ALICE_HOME);
        let r = c.response(what);
        assert_eq!(r.status, 400, "{what}: {r:?}\n{}", server.log());
        assert_close_header(&r, what);
        assert!(!r.text().contains(ALICE_SECRET), "{what}: secret in the 400");
        c.assert_closed(what);
        assert_logged(&server, c.port, 400, true, what);
    }
    // The secret is really there: only framing kept it from being served.
    let r = get(server.addr, "alice.test", "/secret.txt");
    assert_eq!((r.status, r.text().as_str()), (200, ALICE_SECRET));
}

#[test]
fn well_framed_bodies_are_discarded_and_the_next_request_answered() {
    require_root!();
    let (_w, server) = setup("well_framed_bodies_are_discarded_and_the_next_request_answered");
    let body = SMUGGLED;
    let n = body.len();
    let cases = [
        (
            "POST with a chunked body",
            format!(
                "POST /hello.txt HTTP/1.1\r\nHost: alice.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {n:x}\r\n{body}\r\n0\r\n\r\n"
            ),
            405,
        ),
        (
            "GET with a chunked body, extension and trailer",
            format!(
                "GET /hello.txt HTTP/1.1\r\nHost: alice.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;ext=1\r\nGET /\r\n{:x}\r\n{}\r\n0\r\nX-Trailer: yes\r\n\r\n",
                n - 5,
                &body[5..]
            ),
            200,
        ),
        (
            "GET with a Content-Length body",
            format!("GET /hello.txt HTTP/1.1\r\nHost: alice.test\r\nContent-Length: {n}\r\n\r\n{body}"),
            200,
        ),
    ];
    for (what, req, status) in cases {
        let mut c = Client::new(server.addr);
        let next = "GET /index.html HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n";
        c.send(format!("{req}{next}").as_bytes());
        let r = c.response(what);
        assert_eq!(r.status, status, "{what}: {r:?}\n{}", server.log());
        if status == 405 {
            let allow = r.header("allow").unwrap_or_default();
            assert!(
                allow.contains("GET") && allow.contains("HEAD"),
                "{what}: Allow {allow:?}"
            );
        } else {
            assert_eq!(r.text(), HELLO, "{what}");
        }
        // The body was skipped, not parsed: the next response is the pipelined request's.
        let r = c.response(what);
        assert_eq!(r.status, 200, "{what}: pipelined request: {r:?}");
        assert_eq!(r.text(), ALICE_HOME, "{what}: pipelined request");
        c.assert_closed(what);
    }
}

#[test]
fn other_methods_get_405_with_allow() {
    require_root!();
    let (_w, server) = setup("other_methods_get_405_with_allow");
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let mut c = Client::new(server.addr);
        // First and second position on one connection.
        let req = format!("{method} /hello.txt HTTP/1.1\r\nHost: alice.test\r\nContent-Length: 0\r\n\r\n");
        c.send(format!("{req}{req}").as_bytes());
        for pos in ["first", "second"] {
            let r = c.response(method);
            assert_eq!(r.status, 405, "{method} ({pos}): {r:?}");
            let allow = r.header("allow").unwrap_or_default();
            let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
            assert!(
                methods.contains(&"GET") && methods.contains(&"HEAD"),
                "{method} ({pos}): Allow {allow:?}"
            );
            assert!(!methods.contains(&method), "{method} ({pos}): Allow {allow:?}");
        }
        assert_logged(&server, c.port, 405, true, method);
    }
}

#[test]
fn static_files_through_the_binary() {
    require_root!();
    let (_w, server) = setup("static_files_through_the_binary");
    let addr = server.addr;

    let r = get(addr, "alice.test", "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{r:?}"
    );
    assert_eq!(r.text(), ALICE_HOME);
    let r = get(addr, "alice.test", "/index.html");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));

    let r = get(addr, "alice.test", "/sub");
    assert_eq!(r.status, 301, "{r:?}");
    let location = r.header("location").unwrap_or_default();
    assert!(location.ends_with("/sub/"), "Location {location:?}");
    let r = get(addr, "alice.test", "/sub/");
    assert_eq!((r.status, r.text().as_str()), (200, "sub index"));

    let r = get(addr, "alice.test", "/no-such-file.txt");
    assert_eq!(r.status, 404, "{r:?}");

    let r = get(addr, "alice.test", "/hello.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), HELLO);
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    let etag = r.header("etag").expect("ETag").to_string();
    let last_modified = r.header("last-modified").expect("Last-Modified").to_string();
    let len = HELLO.len();

    let conditional = |header: &str| {
        let mut c = Client::new(addr);
        c.send(
            format!("GET /hello.txt HTTP/1.1\r\nHost: alice.test\r\n{header}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let r = c.response(header);
        c.assert_closed(header);
        r
    };
    let r = conditional(&format!("If-None-Match: {etag}"));
    assert_eq!(r.status, 304, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = conditional("If-None-Match: \"something-else\"");
    assert_eq!(r.status, 200, "{r:?}");
    let r = conditional(&format!("If-Modified-Since: {last_modified}"));
    assert_eq!(r.status, 304, "{r:?}");
    let r = conditional("If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT");
    assert_eq!(r.status, 200, "{r:?}");

    let r = conditional("Range: bytes=0-3");
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-3/{len}").as_str())
    );
    assert_eq!(r.text(), &HELLO[..4]);
    let r = conditional("Range: bytes=999999-");
    assert_eq!(r.status, 416, "{r:?}");
    assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()));

    // HEAD: the same headers as GET and no body. Pipelined with a GET on one
    // connection, so a body after the HEAD response would corrupt the next response.
    let mut c = Client::new(addr);
    c.send(
        b"HEAD /hello.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n\
          GET /hello.txt HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n",
    );
    let head = c.head_response("HEAD");
    let body = c.response("GET after HEAD");
    c.assert_closed("GET after HEAD");
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(body.status, 200, "{body:?}");
    assert_eq!(body.text(), HELLO);
    for h in [
        "content-length",
        "content-type",
        "etag",
        "last-modified",
        "accept-ranges",
    ] {
        assert_eq!(head.header(h), body.header(h), "{h} differs between HEAD and GET");
        assert!(head.header(h).is_some(), "HEAD without {h}");
    }
    assert_eq!(head.header("content-length"), Some(len.to_string().as_str()));
}

#[test]
fn path_traversal_is_refused() {
    require_root!();
    let (_w, server) = setup("path_traversal_is_refused");
    let targets: &[(&str, &[u16])] = &[
        ("/../../etc/passwd", &[403]),
        ("/../secret.txt", &[403]),
        ("/%2e%2e/%2e%2e/etc/passwd", &[403]),
        ("/%2e%2e/secret.txt", &[403]),
        ("/%2E%2E/secret.txt", &[403]),
        ("/.%2e/x", &[403]),
        ("/%2e./secret.txt", &[403]),
        ("/sub/../../secret.txt", &[403]),
        ("/a%2fb", &[403]),
        ("/..%2fsecret.txt", &[403]),
        ("/%2F", &[403]),
        ("/%2f..%2fsecret.txt", &[403]),
        ("/a%00b", &[403]),
        ("/secret.txt%00.html", &[403]),
        ("/a%5c..%5cb", &[403, 404]),
        ("/..%5csecret.txt", &[403, 404]),
        ("http://alice.test/../x", &[403]),
        ("http://alice.test/%2e%2e/secret.txt", &[403]),
    ];
    for &(target, allowed) in targets {
        // Both as the first request (multiplexer → processor) and as a later one.
        let mut c = Client::new(server.addr);
        c.send(
            format!(
                "GET {target} HTTP/1.1\r\nHost: alice.test\r\n\r\n\
                 GET {target} HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let mut statuses = Vec::new();
        for pos in ["first", "second"] {
            let r = c.response(target);
            assert!(
                allowed.contains(&r.status),
                "{target} ({pos}): status {} not in {allowed:?}\n{}",
                r.status,
                r.text()
            );
            let text = r.text();
            assert!(!text.contains(OUTSIDE_SECRET), "{target} ({pos}): got the secret");
            assert!(!text.contains("root:"), "{target} ({pos}): got /etc/passwd");
            statuses.push(r.status);
        }
        c.assert_closed(target);
        assert_logged(&server, c.port, statuses[0], true, target);
    }
}
