//! RFC 9112/9110 against the real binary, table-driven: each case names the clause it
//! checks. The limits with Apache's names just under and just over, the read timeouts
//! with a minimum rate (mod_reqtimeout's), and the protocol details proxies rely on
//! (`Expect`, `TRACE`, `OPTIONS *`, `CONNECT`, framing errors, field syntax), each on
//! a connection's first request (read by a multiplexer) and on a later one (read by
//! the processor).

use std::io::Write;
use std::time::Duration;

use crate::util::wire::*;
use crate::util::*;

/// A good keep-alive request, sent first for the "later request" position.
const GOOD: &str = "GET / HTTP/1.1\r\nHost: alice.test\r\n\r\n";

/// Where a case's request is on its connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    /// The first request: the multiplexer reads the head.
    First,
    /// After a good one: the processor reads the head.
    Later,
}

struct Case {
    clause: &'static str,
    request: Vec<u8>,
    status: u16,
    /// Whether the connection must close after the answer.
    closes: bool,
}

fn case(clause: &'static str, request: impl Into<Vec<u8>>, status: u16, closes: bool) -> Case {
    Case {
        clause,
        request: request.into(),
        status,
        closes,
    }
}

/// Runs every case at both positions on `s`; returns the failures (all at once).
fn run(s: &Strict, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        for at in [At::First, At::Later] {
            let before: &[&str] = if at == At::Later { &[GOOD] } else { &[] };
            let (responses, closed) = exchange(s.addr(), before, &c.request, Duration::from_secs(2));
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            if statuses != [c.status] {
                failures.push(format!(
                    "{} ({at:?}): answered {statuses:?}, expected [{}]",
                    c.clause, c.status
                ));
            } else if c.closes && !closed {
                failures.push(format!("{} ({at:?}): the connection stayed open", c.clause));
            } else if !c.closes && closed {
                failures.push(format!("{} ({at:?}): the connection was closed", c.clause));
            }
        }
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), s.server.log());
    for status in cases.iter().map(|c| c.status).filter(|&s| s >= 400) {
        let needle = format!("status={status}");
        assert!(
            s.server.wait_for_log(&needle, Duration::from_secs(5)).is_some(),
            "no log line with {needle}"
        );
    }
}

fn line_of(len: usize) -> String {
    // "GET /?" + query + " HTTP/1.1"
    format!(
        "GET /?{} HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n",
        "q".repeat(len - 15)
    )
}

fn fields(n: usize) -> String {
    let extra: String = (1..n).map(|i| format!("X-{i}: y\r\n")).collect();
    format!("GET / HTTP/1.1\r\nHost: alice.test\r\n{extra}Connection: close\r\n\r\n")
}

fn field_of(len: usize) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: alice.test\r\nX-A: {}\r\nConnection: close\r\n\r\n",
        "v".repeat(len - 5)
    )
}

#[test]
fn limits_just_under_and_just_over() {
    require_root!();
    let s = strict("rfc9112_limits");
    run(
        &s,
        &[
            case(
                "RFC 9112 §3 (limit_request_line): a line at the limit is served",
                line_of(LINE),
                200,
                true,
            ),
            case(
                "RFC 9112 §3, RFC 9110 §15.5.15: a line over limit_request_line is 414",
                line_of(LINE + 1),
                414,
                true,
            ),
            // The Connection field is one more: FIELDS - 1 others and Host.
            case(
                "RFC 9110 §5.4 (limit_request_fields): fields at the limit are served",
                fields(FIELDS - 1),
                200,
                true,
            ),
            case(
                "RFC 6585 §5: one field over limit_request_fields is 431",
                fields(FIELDS),
                431,
                true,
            ),
            case(
                "RFC 9110 §5.4 (limit_request_field_size): a field at the limit is served",
                field_of(FIELD_SIZE),
                200,
                true,
            ),
            case(
                "RFC 6585 §5: a field over limit_request_field_size is 431",
                field_of(FIELD_SIZE + 1),
                431,
                true,
            ),
        ],
    );
}

#[test]
fn protocol_details() {
    require_root!();
    let s = strict("rfc9112_protocol");
    let h = "Host: alice.test\r\n";
    run(
        &s,
        &[
            case(
                "RFC 9110 §9.3.8: TRACE is 405 (with Allow)",
                format!("TRACE / HTTP/1.1\r\n{h}\r\n"),
                405,
                false,
            ),
            case(
                "RFC 9110 §9.3.7: OPTIONS * is answered",
                format!("OPTIONS * HTTP/1.1\r\n{h}\r\n"),
                200,
                false,
            ),
            case(
                "RFC 9110 §9.3.6: CONNECT is 405, not 400",
                format!("CONNECT alice.test:443 HTTP/1.1\r\n{h}\r\n"),
                405,
                false,
            ),
            case(
                "RFC 9110 §10.1.1: an expectation other than 100-continue is 417",
                format!("GET / HTTP/1.1\r\n{h}Expect: the-unexpected\r\n\r\n"),
                417,
                false,
            ),
            case(
                "RFC 9110 §10.1.1: 417 with a body closes (the body is never read)",
                format!("GET / HTTP/1.1\r\n{h}Expect: x\r\nContent-Length: 3\r\n\r\nabc"),
                417,
                true,
            ),
            case(
                "RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is 400",
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                400,
                true,
            ),
            case(
                "RFC 9112 §6.1: Content-Length with Transfer-Encoding is 400 and close",
                format!(
                    "POST / HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                ),
                400,
                true,
            ),
            case(
                "RFC 9112 §7.1: a bad chunk size is 400 and close",
                format!("GET / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
                400,
                true,
            ),
            case(
                "RFC 9112 §6.3: differing Content-Length values are 400",
                format!("GET / HTTP/1.1\r\n{h}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
                400,
                true,
            ),
            case(
                "RFC 9112 §6.3: Transfer-Encoding not ending in chunked is 400",
                format!("GET / HTTP/1.1\r\n{h}Transfer-Encoding: chunked, gzip\r\n\r\n"),
                400,
                true,
            ),
            case(
                "RFC 9112 §5.2: obsolete line folding is 400",
                format!("GET / HTTP/1.1\r\n{h}X-A: a\r\n b\r\n\r\n"),
                400,
                true,
            ),
            case(
                "RFC 9112 §5.1: whitespace before the colon is 400",
                "GET / HTTP/1.1\r\nHost : alice.test\r\n\r\n",
                400,
                true,
            ),
            case(
                "RFC 9112 §2.2: a bare CR is 400",
                format!("GET / HTTP/1.1\r\n{h}X-A: a\rb\r\n\r\n"),
                400,
                true,
            ),
            case(
                "RFC 9110 §5.5: a control character in a value is 400",
                format!("GET / HTTP/1.1\r\n{h}X-A: a\x01b\r\n\r\n"),
                400,
                true,
            ),
            case(
                "RFC 9110 §5.1: NUL in a field name is 400",
                format!("GET / HTTP/1.1\r\n{h}X\x00A: b\r\n\r\n"),
                400,
                true,
            ),
        ],
    );
    // The Allow header of 405 and OPTIONS.
    for req in [
        "TRACE / HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n",
    ] {
        let (r, _) = exchange(s.addr(), &[], req.as_bytes(), Duration::from_secs(2));
        let allow = r.first().and_then(|r| r.header("allow")).unwrap_or("");
        assert!(
            allow.contains("GET") && allow.contains("OPTIONS"),
            "{req:?}: Allow {allow:?}"
        );
    }
}

/// RFC 9110 §10.1.1: `100 Continue` only when the body will be read.
#[test]
fn expect_100_continue_only_when_the_body_is_read() {
    require_root!();
    let s = strict("rfc9112_expect");
    for at in [At::First, At::Later] {
        let mut c = connect(s.addr());
        if at == At::Later {
            c.write_all(GOOD.as_bytes()).unwrap();
            assert_eq!(read_response(&mut c, false).unwrap().status, 200);
        }
        c.write_all(
            b"GET / HTTP/1.1\r\nHost: alice.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
        let interim = read_response(&mut c, false).expect("an interim answer");
        assert_eq!(interim.status, 100, "{at:?}: 100 before the body is read");
        c.write_all(b"hello").unwrap();
        assert_eq!(read_response(&mut c, false).unwrap().status, 200, "{at:?}");
        // A body over limit_request_body, and a method that reads no body: no 100.
        for (head, status) in [
            (format!("GET / HTTP/1.1\r\nHost: alice.test\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", BODY_LIMIT + 1), 413),
            ("POST / HTTP/1.1\r\nHost: alice.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n".to_owned(), 405),
        ] {
            let before: &[&str] = if at == At::Later { &[GOOD] } else { &[] };
            let (r, closed) = exchange(s.addr(), before, head.as_bytes(), Duration::from_secs(2));
            let statuses: Vec<u16> = r.iter().map(|r| r.status).collect();
            assert_eq!(statuses, [status], "{at:?} {head:?}: answered at once, no 100");
            assert!(closed, "{at:?}: closed (the body was never asked for)");
        }
    }
}

/// Apache's MaxKeepAliveRequests: the last allowed answer says `Connection: close`.
#[test]
fn keep_alive_max_requests_closes_after_the_last() {
    require_root!();
    let s = strict("rfc9112_max_requests");
    let mut c = connect(s.addr());
    for i in 1..=MAX_REQUESTS {
        let r = get_on(&mut c, "max.test", "/").expect("answered");
        assert_eq!(r.status, 200);
        let close = r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        assert_eq!(
            close,
            i == MAX_REQUESTS,
            "request {i}: Connection: close only on the last"
        );
    }
    let (rest, closed) = responses_until_close(&mut c, Duration::from_secs(3));
    assert!(rest.is_empty() && closed, "closed after {MAX_REQUESTS} requests");
    // The default (100) lets more through.
    let mut c = connect(s.addr());
    for _ in 0..MAX_REQUESTS + 2 {
        let r = get_on(&mut c, "alice.test", "/").expect("answered");
        assert!(r.header("connection").is_none(), "{r:?}");
    }
}

/// One trickled case: what it sends, at what rate, and what it must get by when.
struct Trickle {
    clause: &'static str,
    at: At,
    prefix: String,
    filler: Vec<u8>,
    rate: usize,
    /// `Some(408)` (or a close) within `window`, or `Some(200)`.
    status: u16,
    window: (f64, f64),
}

fn run_trickles(s: &Strict, cases: Vec<Trickle>) {
    let addr = s.addr();
    let handles: Vec<_> = cases
        .into_iter()
        .map(|t| {
            std::thread::spawn(move || {
                let before: &[&str] = if t.at == At::Later { &[GOOD] } else { &[] };
                let (status, took) = trickle(
                    addr,
                    before,
                    t.prefix.as_bytes(),
                    &t.filler,
                    t.rate,
                    Duration::from_secs(8),
                );
                let took = took.as_secs_f64();
                eprintln!("{} ({:?}): {status:?} after {took:.2} s", t.clause, t.at);
                let status_ok = status == Some(t.status) || (t.status == 408 && status.is_none());
                let ok = status_ok && took >= t.window.0 && took <= t.window.1;
                (!ok).then(|| {
                    format!(
                        "{} ({:?}): got {status:?} after {took:.2} s, expected {} within {:?} s",
                        t.clause, t.at, t.status, t.window
                    )
                })
            })
        })
        .collect();
    let failures: Vec<String> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), s.server.log());
}

/// `request_head_timeout = [1, 3, 500]`: below the rate, cut soon after the initial
/// second; above it but never finishing, cut at the maximum; above it and finishing
/// in time, served.
#[test]
fn head_timeout_with_minimum_rate() {
    require_root!();
    let s = strict("rfc9112_head_timeout");
    let prefix = "GET / HTTP/1.1\r\nHost: alice.test\r\n".to_owned();
    let mut finishing = field_lines(1500, 300);
    finishing.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut cases = Vec::new();
    for at in [At::First, At::Later] {
        cases.push(Trickle {
            clause: "RFC 9110 §15.5.9: a head trickled below the rate is cut (408)",
            at,
            prefix: prefix.clone(),
            filler: field_lines(4000, 400),
            rate: 40,
            status: 408,
            window: (0.8, 2.2),
        });
        cases.push(Trickle {
            clause: "mod_reqtimeout: a head above the rate that never ends is cut at the maximum",
            at,
            prefix: prefix.clone(),
            filler: field_lines(7000, 350),
            rate: 1500,
            status: 408,
            window: (2.7, 4.5),
        });
        cases.push(Trickle {
            clause: "mod_reqtimeout: a head above the rate that ends in time is served",
            at,
            prefix: prefix.clone(),
            filler: finishing.clone(),
            rate: 1000,
            status: 200,
            window: (1.0, 2.9),
        });
    }
    run_trickles(&s, cases);
}

/// `request_body_timeout = [1, 3, 500]` while a body is read (here discarded).
#[test]
fn body_timeout_with_minimum_rate() {
    require_root!();
    let s = strict("rfc9112_body_timeout");
    // max.test has the default limit_request_body (100 MiB).
    let head = |len: usize| format!("GET / HTTP/1.1\r\nHost: max.test\r\nContent-Length: {len}\r\n\r\n");
    let mut cases = Vec::new();
    for at in [At::First, At::Later] {
        cases.push(Trickle {
            clause: "RFC 9110 §15.5.9: a body trickled below the rate is cut (408)",
            at,
            prefix: head(100_000),
            filler: vec![b'b'; 100_000],
            rate: 40,
            status: 408,
            window: (0.8, 2.2),
        });
        cases.push(Trickle {
            clause: "mod_reqtimeout: a body above the rate that never ends is cut at the maximum",
            at,
            prefix: head(100_000),
            filler: vec![b'b'; 100_000],
            rate: 1500,
            status: 408,
            window: (2.7, 4.5),
        });
        cases.push(Trickle {
            clause: "mod_reqtimeout: a body above the rate that ends in time is served",
            at,
            prefix: head(1500),
            filler: vec![b'b'; 1500],
            rate: 1000,
            status: 200,
            window: (1.0, 2.9),
        });
    }
    run_trickles(&s, cases);
}
