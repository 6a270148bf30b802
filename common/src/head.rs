//! The one request-head parser both the multiplexer (a connection's first request) and
//! the processor (the later ones) use, so that one head always gets one answer: where
//! a head ends, its request line (RFC 9112 §3), which host it names (§3.2: the
//! absolute-form authority wins over Host; more than one Host, none in HTTP/1.1, or one
//! that is not `uri-host [":" port]` is a 400) and the status every failure maps to.

use std::net::Ipv6Addr;

use thiserror::Error;

pub mod limits;

pub use limits::Limits;

/// Header slots of a parse: the most `limit_request_fields` may be.
pub const MAX_HEADERS: usize = 500;

/// Why a head cannot be served; [`HeadError::status`] is the answer to it.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum HeadError {
    #[error("malformed request head")]
    Malformed,
    #[error("malformed request line")]
    RequestLine,
    #[error("unsupported HTTP version")]
    Version,
    #[error("more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("header field line longer than {limit} bytes")]
    FieldTooLarge { limit: usize },
    #[error("request line longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host header")]
    BadHost,
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
}

impl HeadError {
    /// The status this error is answered with, by either role.
    pub fn status(&self) -> u16 {
        match self {
            Self::Version => 505,
            Self::TooManyHeaders { .. } | Self::FieldTooLarge { .. } | Self::HeadTooLarge { .. } => 431,
            Self::UriTooLong { .. } => 414,
            Self::Malformed | Self::RequestLine | Self::DuplicateHost | Self::BadHost | Self::MissingHost => {
                400
            }
        }
    }
}

/// A complete, well-formed request head, borrowing from the buffer it was parsed from.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    /// Bytes of the head in the buffer (leading blank lines and the final blank line
    /// included).
    pub len: usize,
    pub method: &'b str,
    pub target: &'b str,
    /// HTTP/1.x minor version: 0 or 1.
    pub minor: u8,
    /// The host the request names, without its port, as written (compare
    /// case-insensitively); `None` when it names none (HTTP/1.0 without Host, or an
    /// empty Host), which routes to the default vhost.
    pub host: Option<&'b str>,
    pub headers: &'h [httparse::Header<'b>],
}

/// [`parse_with`] with only a total bound (the other limits at Apache's defaults).
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limit: usize,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    parse_with(buf, headers, &Limits::head_only(limit))
}

/// Parses the head at the start of `buf` (RFC 9112 §2.2: leading empty lines are
/// skipped) within `limits`. `Ok(None)`: not complete yet and still within them.
pub fn parse_with<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &Limits,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let slots = limits.fields_slots().min(headers.len());
    let req = httparse::Request::new(&mut headers[..slots]);
    parse_into(buf, req, slots, limits, |req| req.parse(buf))
}

/// [`parse_with`] into uninitialised slots: a processor parses a head per keep-alive
/// request, and zeroing [`MAX_HEADERS`] slots first cost it more than the parse.
pub fn parse_with_uninit<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [std::mem::MaybeUninit<httparse::Header<'b>>],
    limits: &Limits,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let slots = limits.fields_slots().min(headers.len());
    let req = httparse::Request::new(&mut []);
    parse_into(buf, req, slots, limits, move |req| {
        req.parse_with_uninit_headers(buf, &mut headers[..slots])
    })
}

fn parse_into<'h, 'b>(
    buf: &'b [u8],
    mut req: httparse::Request<'h, 'b>,
    slots: usize,
    limits: &Limits,
    parse: impl FnOnce(&mut httparse::Request<'h, 'b>) -> httparse::Result<usize>,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let limit = limits.head;
    limits::check_lines(&buf[leading_blank(buf)..], limits)?;
    let len = match parse(&mut req) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limit {
                Err(too_large(buf, limit))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders { limit: slots }),
        Err(_) => return line_error(buf, limit),
    };
    if len > limit {
        return Err(too_large(buf, limit));
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let host = request_host(req.headers, target, minor)?;
    Ok(Some(RequestHead {
        len,
        method,
        target,
        minor,
        host,
        headers: req.headers,
    }))
}

/// Over the limit: 414 if the request line alone does not fit, else 431.
pub fn too_large(buf: &[u8], limit: usize) -> HeadError {
    let start = leading_blank(buf);
    let line_end = buf[start..]
        .iter()
        .take(limit.saturating_add(1))
        .position(|&b| b == b'\n');
    match line_end {
        Some(i) if i < limit => HeadError::HeadTooLarge { limit },
        _ => HeadError::UriTooLong { limit },
    }
}

/// httparse refused the head: find out whether the request line is at fault. A line of
/// three parts whose version is a well-formed `HTTP/d.d` other than 1.0 and 1.1 is a
/// 505; any other malformed line (a space inside the method or the target, a version
/// that is not `HTTP/d.d`) is a 400 (RFC 9112 §3). Waits for the end of the line.
fn line_error<'h, 'b>(buf: &[u8], limit: usize) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let start = leading_blank(buf);
    let Some(eol) = buf[start..].iter().position(|&b| b == b'\n') else {
        return if buf.len() > limit {
            Err(too_large(buf, limit))
        } else {
            Ok(None)
        };
    };
    let line = &buf[start..start + eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(HeadError::RequestLine);
    };
    if method.is_empty() || !method.iter().copied().all(is_tchar) || target.is_empty() {
        return Err(HeadError::RequestLine);
    }
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if *major == b'1' && (*minor == b'0' || *minor == b'1') {
                // The line is fine: the fault is in a header field.
                Err(HeadError::Malformed)
            } else {
                Err(HeadError::Version)
            }
        }
        _ => Err(HeadError::RequestLine),
    }
}

/// RFC 9110 §5.6.2 tchar.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The host a request names, without its port (see [`RequestHead::host`]).
fn request_host<'b>(
    headers: &[httparse::Header<'b>],
    target: &'b str,
    minor: u8,
) -> Result<Option<&'b str>, HeadError> {
    let mut host_header: Option<&'b [u8]> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Err(HeadError::DuplicateHost);
            }
            host_header = Some(h.value);
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400, whatever its target.
    if minor == 1 && host_header.is_none() {
        return Err(HeadError::MissingHost);
    }
    // The Host field must be valid even when an absolute-form authority overrides it.
    let from_header = match host_header {
        Some(v) => {
            let s = std::str::from_utf8(v).map_err(|_| HeadError::BadHost)?;
            let s = s.trim_matches(|c| c == ' ' || c == '\t');
            if s.is_empty() {
                // An empty Host is allowed (RFC 9112 §3.2) and routes to the default.
                None
            } else {
                Some(uri_host(s).ok_or(HeadError::BadHost)?)
            }
        }
        None => None,
    };
    if let Some(form) = absolute_form(target) {
        return Ok(Some(uri_host(form.authority).ok_or(HeadError::BadHost)?));
    }
    Ok(from_header)
}

/// The parts of an absolute-form request target (`http://[userinfo@]host[:port]/path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsoluteForm<'a> {
    /// `host[:port]`, userinfo dropped.
    pub authority: &'a str,
    /// Everything after the authority (`/path?query`, possibly empty).
    pub rest: &'a str,
}

/// Splits an absolute-form target; `None` for any other form. Works on bytes, so a
/// multi-byte character anywhere in the target is just a byte that does not match.
pub fn absolute_form(target: &str) -> Option<AbsoluteForm<'_>> {
    let bytes = target.as_bytes();
    let scheme_len = if starts_with_ignore_case(bytes, b"http://") {
        7
    } else if starts_with_ignore_case(bytes, b"https://") {
        8
    } else {
        return None;
    };
    // The scheme is ASCII, so `scheme_len` is a character boundary.
    let after = target.get(scheme_len..)?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    // Drop any userinfo ('@' is ASCII: the index is a boundary).
    let authority = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    Some(AbsoluteForm { authority, rest })
}

/// The path and query of a request target in origin-form or absolute-form.
pub fn path_and_query(target: &str) -> &str {
    match absolute_form(target) {
        Some(form) => form.rest,
        None => target,
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() > prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `uri-host [":" port]` (RFC 3986 §3.2.2) → the host, IPv6 literals with their
/// brackets; `None` when it is not one (an unbracketed IPv6 address, a malformed IP
/// literal, two ports, a character no host may hold).
fn uri_host(s: &str) -> Option<&str> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let close = inner.find(']')?;
        if !valid_ip_literal(&inner[..close]) {
            return None;
        }
        let after = &inner[close + 1..];
        let port = if after.is_empty() {
            ""
        } else {
            after.strip_prefix(':')?
        };
        (&s[..close + 2], port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, p),
            None => (s, ""),
        }
    };
    if !valid_port(port) {
        return None;
    }
    let reg_name_ok = host.starts_with('[') || (!host.is_empty() && valid_reg_name(host));
    reg_name_ok.then_some(host)
}

/// `IPv6address` or `IPvFuture` inside brackets.
fn valid_ip_literal(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix(['v', 'V']) {
        let Some((ver, addr)) = rest.split_once('.') else {
            return false;
        };
        return !ver.is_empty()
            && ver.bytes().all(|b| b.is_ascii_hexdigit())
            && !addr.is_empty()
            && addr
                .bytes()
                .all(|b| is_unreserved(b) || is_sub_delim(b) || b == b':');
    }
    s.parse::<Ipv6Addr>().is_ok()
}

/// `reg-name` (unreserved, pct-encoded, sub-delims); an IPv4 address is one too.
fn valid_reg_name(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
                if !ok {
                    return false;
                }
                i += 3;
                continue;
            }
            c if is_unreserved(c) || is_sub_delim(c) => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn is_sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

fn valid_port(p: &str) -> bool {
    p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Length of the empty lines (CRLF or bare LF) before a request line, which RFC 9112
/// §2.2 says to ignore. A lone CR at the end is kept: it may start a CRLF.
pub fn leading_blank(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\n', ..]) => i += 1,
            Some([b'\r', b'\n', ..]) => i += 2,
            _ => return i,
        }
    }
}

/// Where the head ends in `buf` (index just past the blank line), if it is complete.
/// Leading empty lines are skipped as [`parse`] skips them; bare LF line endings are
/// accepted as httparse accepts them.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let start = leading_blank(buf);
    head_end_from(buf, start, start)
}

/// [`head_end`] for a buffer whose head starts at `start` (after its leading blank
/// lines) and whose bytes before `scanned` were already searched without success: only
/// the new bytes (and the three before them, where a terminator may have begun) are
/// searched, so a client that trickles its head costs linear time, not quadratic.
pub fn head_end_from(buf: &[u8], start: usize, scanned: usize) -> Option<usize> {
    let from = scanned.saturating_sub(3).max(start);
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            // A line ends at i; the head ends if the next line is empty.
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests;
