//! What both the multiplexer and the processor need from a request head: finding where
//! it ends, and which host it names (RFC 9112 §3.2: the absolute-form authority wins
//! over Host; more than one Host is an error).

use thiserror::Error;

/// Maximum number of header fields accepted in one request head.
pub const MAX_HEADERS: usize = 100;

/// Why a head cannot be routed.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum HeadError {
    #[error("malformed request head")]
    Malformed,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host header")]
    BadHost,
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
}

/// The host a request names, without its port, as written (compare case-insensitively).
///
/// `Ok(None)` means no host at all (an HTTP/1.0 request without Host); an HTTP/1.1
/// request without one is [`HeadError::MissingHost`] (RFC 9112 §3.2: 400).
pub fn request_host<'a>(req: &httparse::Request<'_, 'a>) -> Result<Option<&'a str>, HeadError> {
    let mut host_header: Option<&'a [u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Err(HeadError::DuplicateHost);
            }
            host_header = Some(h.value);
        }
    }
    let path = req.path.ok_or(HeadError::Malformed)?;
    if let Some(authority) = absolute_form_authority(path) {
        return Ok(Some(strip_port(authority).ok_or(HeadError::BadHost)?));
    }
    match host_header {
        Some(v) => {
            let s = std::str::from_utf8(v).map_err(|_| HeadError::BadHost)?;
            let s = s.trim_matches(|c| c == ' ' || c == '\t');
            if s.is_empty() {
                // An empty Host is allowed (RFC 9112 §3.2) and routes to the default.
                return Ok(None);
            }
            Ok(Some(strip_port(s).ok_or(HeadError::BadHost)?))
        }
        None if req.version == Some(1) => Err(HeadError::MissingHost),
        None => Ok(None),
    }
}

/// The authority of an absolute-form request target (`http://host:port/path`).
pub fn absolute_form_authority(target: &str) -> Option<&str> {
    let rest = if target.len() > 7 && target[..7].eq_ignore_ascii_case("http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case("https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Drop any userinfo.
    Some(match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    })
}

/// `host[:port]` → `host`; IPv6 literals keep their brackets. `None` if malformed.
fn strip_port(s: &str) -> Option<&str> {
    let host = if s.starts_with('[') {
        let close = s.find(']')?;
        let after = &s[close + 1..];
        if !after.is_empty() && !valid_port(after.strip_prefix(':')?) {
            return None;
        }
        &s[..=close]
    } else {
        match s.rfind(':') {
            Some(i) => {
                if !valid_port(&s[i + 1..]) {
                    return None;
                }
                &s[..i]
            }
            None => s,
        }
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:~!$&'()*+,;=%".contains(&b));
    ok.then_some(host)
}

fn valid_port(p: &str) -> bool {
    p.is_empty() || (p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Where the head ends in `buf` (index just past the blank line), if it is complete.
/// Accepts bare LF line endings as httparse does.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
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
mod tests {
    use super::*;

    fn host_of(raw: &str) -> Result<Option<String>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(raw.as_bytes()).unwrap();
        request_host(&req).map(|h| h.map(str::to_owned))
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
        assert_eq!(
            host_of("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
                .unwrap()
                .as_deref(),
            Some("[::1]")
        );
        assert_eq!(
            host_of("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Err(HeadError::BadHost)
        );
        assert_eq!(
            host_of("GET / HTTP/1.1\r\nHost: a:x\r\n\r\n"),
            Err(HeadError::BadHost)
        );
    }

    #[test]
    fn head_end_finds_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }
}
