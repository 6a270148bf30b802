//! Unit tests of the shared head parser: host rules, request-line errors, limits.

use super::*;

fn parsed(raw: &[u8]) -> Result<Option<(String, Option<String>)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    parse(raw, &mut headers, 8192).map(|h| h.map(|h| (h.target.to_owned(), h.host.map(str::to_owned))))
}

fn host_of(raw: &str) -> Result<Option<String>, HeadError> {
    parsed(raw.as_bytes()).map(|h| h.expect("complete").1)
}

fn status_of(raw: &[u8]) -> u16 {
    parsed(raw).expect_err("an error").status()
}

#[test]
fn host_rules() {
    assert_eq!(
        host_of("GET / HTTP/1.1\r\nHost: A.example:80\r\n\r\n")
            .unwrap()
            .as_deref(),
        Some("A.example")
    );
    assert_eq!(
        host_of("GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .unwrap()
            .as_deref(),
        Some("b.example")
    );
    assert_eq!(
        host_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        Err(HeadError::DuplicateHost)
    );
    assert_eq!(host_of("GET / HTTP/1.1\r\n\r\n"), Err(HeadError::MissingHost));
    assert_eq!(host_of("GET / HTTP/1.0\r\n\r\n"), Ok(None));
    assert_eq!(host_of("GET / HTTP/1.1\r\nHost: \r\n\r\n"), Ok(None));
    assert_eq!(
        host_of("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
            .unwrap()
            .as_deref(),
        Some("[::1]")
    );
    assert_eq!(
        host_of("GET / HTTP/1.1\r\nHost: [v1.x:y]\r\n\r\n")
            .unwrap()
            .as_deref(),
        Some("[v1.x:y]")
    );
    assert_eq!(
        host_of("GET / HTTP/1.1\r\nHost: 10.0.0.1:\r\n\r\n")
            .unwrap()
            .as_deref(),
        Some("10.0.0.1")
    );
    for bad in [
        "a b",
        "a:x",
        "::1",
        "fe80::1",
        "::1:80",
        "[::g]",
        "[1.2.3.4]",
        "[::1",
        "[::1]x",
        "a:80:80",
        "a@b",
        "a/b",
        "%zz",
        "a:123456",
    ] {
        assert_eq!(
            host_of(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
            Err(HeadError::BadHost),
            "{bad}"
        );
    }
}

#[test]
fn absolute_form_needs_host_in_http11() {
    // RFC 9112 §3.2: the authority wins, but an HTTP/1.1 request still needs Host.
    assert_eq!(
        host_of("GET http://a.example/ HTTP/1.1\r\n\r\n"),
        Err(HeadError::MissingHost)
    );
    assert_eq!(
        host_of("GET http://a.example/ HTTP/1.0\r\n\r\n")
            .unwrap()
            .as_deref(),
        Some("a.example")
    );
    assert_eq!(
        host_of("GET http://a.example:80:80/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        Err(HeadError::BadHost)
    );
    assert_eq!(
        host_of("GET http://a/ HTTP/1.1\r\nHost: ::1\r\n\r\n"),
        Err(HeadError::BadHost)
    );
}

#[test]
fn absolute_form_parts() {
    let f = absolute_form("http://user:pw@Host.example:8080/server-status?auto").unwrap();
    assert_eq!(f.authority, "Host.example:8080");
    assert_eq!(f.rest, "/server-status?auto");
    assert_eq!(path_and_query("HTTPS://h?q"), "?q");
    assert_eq!(path_and_query("/a?b"), "/a?b");
    assert_eq!(absolute_form("http://"), None);
}

#[test]
fn multibyte_characters_never_panic() {
    // A two-byte character across bytes 7 and 8 of the target (the review's crash).
    for t in [
        "/aaaaa\u{e9}",
        "/aaaaaa\u{e9}",
        "/aaaa\u{e9}\u{e9}",
        "h\u{e9}\u{e9}\u{e9}\u{e9}",
        "\u{e9}",
    ] {
        assert_eq!(absolute_form(t), None, "{t}");
        let raw = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
        let _ = parsed(raw.as_bytes());
    }
    let raw = "GET http://h\u{e9}/ HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(parsed(raw.as_bytes()), Err(HeadError::BadHost));
}

#[test]
fn request_line_errors() {
    assert_eq!(status_of(b"GET / FOO/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status_of(b"G ET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET / HTTX/1.1\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET / HTTP/2.0\r\n\r\n"), 505);
    assert_eq!(status_of(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
    assert_eq!(status_of(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), 400);
    assert!(matches!(parsed(b"GET / HTTP/2"), Ok(None)));
}

#[test]
fn limits() {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut headers, 100),
        Ok(None)
    ));
    let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(200));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert_eq!(
        parse(long_line.as_bytes(), &mut headers, 100)
            .unwrap_err()
            .status(),
        414
    );
    let long_head = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(200));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert_eq!(
        parse(long_head.as_bytes(), &mut headers, 100)
            .unwrap_err()
            .status(),
        431
    );
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    assert_eq!(status_of(raw.as_bytes()), 431);
}

#[test]
fn head_end_finds_blank_line() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
    assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    // Leading empty lines are skipped, as the parser skips them.
    assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.0\r\n\r\n"), Some(22));
    assert_eq!(head_end(b"\r\n\r\n"), None);
}

#[test]
fn head_end_scans_only_new_bytes() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut scanned = 0;
    for n in 1..=head.len() {
        let found = head_end_from(&head[..n], 0, scanned);
        if n < head.len() {
            assert_eq!(found, None, "{n}");
        } else {
            assert_eq!(found, Some(head.len()));
        }
        scanned = n;
    }
}

/// Apache's three limits, just under and just over each.
#[test]
fn apache_limits_just_under_and_over() {
    let limits = Limits {
        head: 65536,
        line: 100,
        fields: 5,
        field_size: 50,
    };
    let status = |raw: &str| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse_with(raw.as_bytes(), &mut headers, &limits) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(e) => e.status(),
        }
    };
    // "GET /" + path + " HTTP/1.1" is 14 bytes besides the path.
    let line = |n: usize| format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(n - 14));
    assert_eq!(status(&line(100)), 200);
    assert_eq!(status(&line(101)), 414);
    // An unfinished line already too long is refused at once.
    assert_eq!(status(&format!("GET /{}", "a".repeat(200))), 414);
    let field = |n: usize| format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(n - 3));
    assert_eq!(status(&field(50)), 200);
    assert_eq!(status(&field(51)), 431);
    assert_eq!(status(&format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(60))), 431);
    let fields = |n: usize| {
        let extra: String = (1..n).map(|i| format!("X-{i}: y\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: a\r\n{extra}\r\n")
    };
    assert_eq!(status(&fields(5)), 200);
    assert_eq!(status(&fields(6)), 431);
}

/// RFC 9112 §5.1/§5.2 and RFC 9110 §5.5: what a field line may not hold.
#[test]
fn field_line_syntax() {
    for bad in [
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n\tb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX\x00A: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX\x01A: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
        "GET / HTTP/1.1\rHost: a\r\n\r\n",
        "GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let r = parse(bad.as_bytes(), &mut headers, 8192);
        assert!(matches!(&r, Err(e) if e.status() == 400), "{bad:?}: {r:?}");
    }
}
