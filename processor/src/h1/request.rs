//! One HTTP/1.1 request head: parsed with the parser shared with the multiplexer within
//! the head limit, split into what only HTTP/1.1 needs (body framing per RFC 9112 §6,
//! connection options, `Expect`) and the protocol-neutral [`Request`] a handler sees.

pub use common::head::is_tchar;
use common::head::{self, HeadError, MAX_HEADERS};
use thiserror::Error;

use crate::handler::{Headers, Method, Request};

/// Why a head cannot be served; every variant closes the connection.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RequestError {
    /// The request line, the limits or the host (the parser shared with the
    /// multiplexer, so a later request gets the answer a first one gets).
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("Transfer-Encoding together with Content-Length")]
    TransferEncodingWithLength,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingHttp10,
    #[error("Transfer-Encoding {0:?} does not end in chunked")]
    BadTransferEncoding(String),
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("invalid Content-Length {0:?}")]
    BadContentLength(String),
}

impl RequestError {
    /// The status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Head(e) => e.status(),
            _ => 400,
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Content-Length (0 when absent).
    Length(u64),
    /// Final transfer coding is chunked.
    Chunked,
}

impl Framing {
    pub fn has_body(self) -> bool {
        self != Framing::Length(0)
    }
}

/// The owned parts of a request head.
#[derive(Debug, Clone)]
pub struct Head {
    /// Bytes of the head in the buffer, blank line included.
    pub len: usize,
    /// HTTP/1.x minor version: 0 or 1.
    pub minor: u8,
    /// Checked only once the request is known to stay here.
    pub framing: Result<Framing, RequestError>,
    pub conn_close: bool,
    pub conn_keep_alive: bool,
    pub expect_continue: bool,
    /// An HTTP/1.1 `Expect` other than `100-continue`: 417 (RFC 9110 §10.1.1; an
    /// HTTP/1.0 request's `Expect` is ignored).
    pub expect_other: bool,
    /// What the handler sees.
    pub request: Request,
}

impl Head {
    /// Whether the client allows another request on this connection.
    pub fn wants_keep_alive(&self) -> bool {
        if self.conn_close {
            false
        } else if self.minor == 0 {
            self.conn_keep_alive
        } else {
            true
        }
    }
}

/// Parse the head at the start of `buf` with the shared parser. `Ok(None)`: not
/// complete yet (and still within `limit`). Leading blank lines must already have been
/// removed.
pub fn parse(buf: &[u8], limit: usize) -> Result<Option<Head>, RequestError> {
    parse_with(buf, &head::Limits::head_only(limit))
}

/// [`parse`] within every head limit (`limit_request_line` …).
pub fn parse_with(buf: &[u8], limits: &head::Limits) -> Result<Option<Head>, RequestError> {
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let Some(req) = head::parse_with_uninit(buf, &mut headers, limits)? else {
        return Ok(None);
    };
    let headers = req.headers;
    let list = |name: &str| joined(headers, name);
    let single = |name: &str| single(headers, name);
    let connection = list("connection").unwrap_or_default();
    let minor = req.minor;
    let expect = joined(headers, "expect");
    let expect_continue = minor == 1
        && expect
            .as_deref()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("100-continue"));
    Ok(Some(Head {
        len: req.len,
        minor,
        framing: framing(headers, minor),
        conn_close: has_token(&connection, "close"),
        conn_keep_alive: has_token(&connection, "keep-alive"),
        expect_continue,
        expect_other: minor == 1 && expect.is_some() && !expect_continue,
        request: Request {
            method: match req.method {
                "GET" => Method::Get,
                "HEAD" => Method::Head,
                "OPTIONS" => Method::Options,
                other => Method::Other(other.to_owned()),
            },
            target: req.target.to_owned(),
            host: req.host.map(str::to_owned),
            headers: Headers {
                if_match: list("if-match"),
                if_none_match: list("if-none-match"),
                if_modified_since: single("if-modified-since"),
                if_unmodified_since: single("if-unmodified-since"),
                range: single("range"),
                if_range: single("if-range"),
                referer: single("referer"),
                user_agent: single("user-agent"),
            },
        },
    }))
}

/// All values of a list-valued field, joined with ", "; `None` if absent or not UTF-8.
fn joined(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let v = std::str::from_utf8(h.value).ok()?.trim();
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(v);
            }
            None => out = Some(v.to_owned()),
        }
    }
    out
}

/// The value of a singleton field; `None` if absent, repeated or not UTF-8 (a repeated
/// singleton is invalid, and every caller ignores an invalid value).
fn single(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    let mut found = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let first = found.next()?;
    if found.next().is_some() {
        return None;
    }
    std::str::from_utf8(first.value).ok().map(|v| v.trim().to_owned())
}

fn has_token(list: &str, token: &str) -> bool {
    list.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// RFC 9112 §6.1–6.3, strictly: TE with CL, TE in HTTP/1.0, a final coding other than
/// chunked, chunked twice, any repeated Content-Length or one that is not plain digits
/// are all errors.
fn framing(headers: &[httparse::Header<'_>], minor: u8) -> Result<Framing, RequestError> {
    let mut codings: Vec<String> = Vec::new();
    let mut seen_te = false;
    let mut length: Option<&[u8]> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            seen_te = true;
            let value = String::from_utf8_lossy(h.value);
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(RequestError::DuplicateContentLength);
            }
            length = Some(h.value);
        }
    }
    if seen_te {
        if minor == 0 {
            return Err(RequestError::TransferEncodingHttp10);
        }
        if length.is_some() {
            return Err(RequestError::TransferEncodingWithLength);
        }
        let all = codings.join(", ");
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        let tokens_ok = codings.iter().all(|c| !c.is_empty() && c.bytes().all(is_tchar));
        if codings.last().map(String::as_str) != Some("chunked") || chunked != 1 || !tokens_ok {
            return Err(RequestError::BadTransferEncoding(all));
        }
        return Ok(Framing::Chunked);
    }
    match length {
        None => Ok(Framing::Length(0)),
        Some(raw) => {
            let v = trim_ows(raw);
            let bad = || RequestError::BadContentLength(String::from_utf8_lossy(raw).into_owned());
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            let n = v.iter().try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            n.map(Framing::Length).ok_or_else(bad)
        }
    }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        parse(raw.as_bytes(), 8192).expect("parses").expect("complete")
    }

    fn framing_of(raw: &str) -> Result<Framing, RequestError> {
        head(raw).framing
    }

    #[test]
    fn framing_rules() {
        let r = |extra: &str| framing_of(&format!("POST / HTTP/1.1\r\nHost: a\r\n{extra}\r\n"));
        assert_eq!(r(""), Ok(Framing::Length(0)));
        assert_eq!(r("Content-Length: 12\r\n"), Ok(Framing::Length(12)));
        assert_eq!(r("Transfer-Encoding: chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(r("Transfer-Encoding: gzip, Chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(
            r("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
            Ok(Framing::Chunked)
        );
        assert!(r("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n").is_err());
        assert!(r("Transfer-Encoding: chunked, gzip\r\n").is_err());
        assert!(r("Transfer-Encoding: chunked, chunked\r\n").is_err());
        assert!(r("Transfer-Encoding: \r\n").is_err());
        assert!(r("Content-Length: 3\r\nContent-Length: 3\r\n").is_err());
        for bad in ["+3", "-3", "", "3a", "0x3", "3 3", "99999999999999999999", "1,1"] {
            assert!(r(&format!("Content-Length: {bad}\r\n")).is_err(), "{bad:?}");
        }
        let h10 = framing_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h10, Err(RequestError::TransferEncodingHttp10));
    }

    #[test]
    fn limits_and_versions() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n", 100), Ok(None)));
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(200));
        assert_eq!(parse(long_line.as_bytes(), 100).unwrap_err().status(), 414);
        let long_head = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(200));
        assert_eq!(parse(long_head.as_bytes(), 100).unwrap_err().status(), 431);
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n", 100).unwrap_err().status(), 505);
        assert!(matches!(parse(b"GET / HTTP/2", 100), Ok(None)));
        assert_eq!(parse(b"GET / HTTX/1.1\r\n\r\n", 100).unwrap_err().status(), 400);
        assert_eq!(parse(b"GET  / HTTP/1.1\r\n\r\n", 100).unwrap_err().status(), 400);
    }

    #[test]
    fn connection_options() {
        assert!(head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").wants_keep_alive());
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n").wants_keep_alive());
        assert!(!head("GET / HTTP/1.0\r\n\r\n").wants_keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").wants_keep_alive());
        assert!(head("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
        let other = head("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\n\r\n");
        assert!(!other.expect_continue && other.expect_other);
        assert!(!head("GET / HTTP/1.0\r\nExpect: x\r\n\r\n").expect_other);
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").expect_other);
        assert_eq!(
            head("get / HTTP/1.1\r\nHost: a\r\n\r\n").request.method,
            Method::Other("get".into())
        );
    }
}
