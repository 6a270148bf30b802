//! The request target (RFC 9112 §3.2) as a file path: origin-form or absolute-form,
//! query split off, percent-decoded exactly once, and refused when decoding could make
//! it mean something else (encoded slashes, NUL, `..`).

use thiserror::Error;

/// Why a target cannot name a file.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("request target {0:?} is not origin-form or absolute-form")]
    Form(String),
    #[error("invalid percent-encoding in {0:?}")]
    BadPercent(String),
    #[error("encoded slash or backslash in {0:?}")]
    EncodedSlash(String),
    #[error("NUL byte in {0:?}")]
    Nul(String),
    #[error("dot-dot segment in {0:?}")]
    DotDot(String),
}

impl TargetError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Form(_) | Self::BadPercent(_) => 400,
            Self::EncodedSlash(_) | Self::Nul(_) | Self::DotDot(_) => 403,
        }
    }
}

/// A request target that names a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTarget {
    /// The path as received (still encoded), for redirects.
    pub raw_path: String,
    /// Everything after the first `?`, if there was one.
    pub query: Option<String>,
    /// Decoded segments, without empty and `.` segments.
    pub segments: Vec<Vec<u8>>,
    /// The path ends in `/` (or `/.`): it names a directory.
    pub trailing_slash: bool,
}

/// A parsed request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `*` (only meaningful for OPTIONS).
    Asterisk,
    Path(PathTarget),
}

/// Parse and check a request target.
pub fn parse(target: &str) -> Result<Target, TargetError> {
    if target == "*" {
        return Ok(Target::Asterisk);
    }
    let form = || TargetError::Form(target.to_owned());
    let path_and_query = if target.starts_with('/') {
        target
    } else if let Some(rest) = after_authority(target) {
        if rest.starts_with('/') {
            rest
        } else if rest.is_empty() || rest.starts_with('?') {
            // "http://host" or "http://host?q": the path is "/".
            return parse(&format!("/{rest}"));
        } else {
            return Err(form());
        }
    } else {
        return Err(form());
    };
    let (raw_path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (path_and_query, None),
    };
    if raw_path.contains('#') || query.as_deref().is_some_and(|q| q.contains('#')) {
        return Err(form());
    }
    let decoded = decode(raw_path)?;
    let mut segments = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split(|&b| b == b'/') {
        trailing_slash = seg.is_empty() || seg == b".";
        match seg {
            b"" | b"." => {}
            b".." => return Err(TargetError::DotDot(raw_path.to_owned())),
            _ => segments.push(seg.to_vec()),
        }
    }
    Ok(Target::Path(PathTarget {
        raw_path: raw_path.to_owned(),
        query,
        segments,
        trailing_slash,
    }))
}

/// What follows the authority of an absolute-form target (`http://host/p?q` → `/p?q`).
fn after_authority(target: &str) -> Option<&str> {
    let scheme_len = ["http://", "https://"].into_iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme).then_some(scheme.len())
    })?;
    let rest = &target[scheme_len..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (end > 0).then(|| &rest[end..])
}

/// Percent-decode once; an encoded `/`, `\` or NUL is refused rather than decoded.
fn decode(path: &str) -> Result<Vec<u8>, TargetError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0 {
            // The parser never lets one through; refuse it here too, not at open(2).
            return Err(TargetError::Nul(path.to_owned()));
        }
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|&b| (b as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(TargetError::BadPercent(path.to_owned()));
        };
        // Both digits are < 16, so this fits in a byte.
        let byte = (hi * 16 + lo) as u8;
        match byte {
            b'/' | b'\\' => return Err(TargetError::EncodedSlash(path.to_owned())),
            0 => return Err(TargetError::Nul(path.to_owned())),
            _ => out.push(byte),
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(t: &str) -> PathTarget {
        match parse(t) {
            Ok(Target::Path(p)) => p,
            other => panic!("{t}: {other:?}"),
        }
    }

    #[test]
    fn forms_and_queries() {
        let p = path("/a/b%20c/?x=1&y=/..");
        assert_eq!(p.segments, vec![b"a".to_vec(), b"b c".to_vec()]);
        assert!(p.trailing_slash);
        assert_eq!(p.query.as_deref(), Some("x=1&y=/.."));
        assert_eq!(p.raw_path, "/a/b%20c/");
        let p = path("http://Example.com:8080/x/./y");
        assert_eq!(p.segments, vec![b"x".to_vec(), b"y".to_vec()]);
        assert!(!p.trailing_slash);
        let p = path("http://example.com?q");
        assert!(p.segments.is_empty() && p.trailing_slash && p.query.as_deref() == Some("q"));
        assert!(path("/d/.").trailing_slash);
        assert_eq!(path("//x//y").segments.len(), 2);
        assert_eq!(path("/%C3%A9").segments, vec!["é".as_bytes().to_vec()]);
        assert_eq!(parse("*"), Ok(Target::Asterisk));
    }

    #[test]
    fn refusals() {
        for (t, status) in [
            ("/../etc/passwd", 403),
            ("/a/..", 403),
            ("/%2e%2e/x", 403),
            ("/.%2E/x", 403),
            ("/a%2fb", 403),
            ("/a%5Cb", 403),
            ("/a%00b", 403),
            ("/a%zz", 400),
            ("/a%2", 400),
            ("/a#f", 400),
            ("a/b", 400),
            ("example.com:443", 400),
            ("ftp://x/y", 400),
        ] {
            assert_eq!(parse(t).map_err(|e| e.status()), Err(status), "{t}");
        }
    }
}
