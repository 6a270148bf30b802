//! The meta-variables of RFC 3875 §4.1 for one request, and nothing of the server's own
//! environment: the script's environment is cleared and gets only these and `PATH`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use common::head::{self, MAX_HEADERS};

use super::Script;
use crate::handler::{Request, Site};

/// The search path a script gets.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What the connection knows that the request does not say.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// HTTP/1.x minor version as received.
    pub minor: u8,
    /// Body bytes the script reads on stdin, when there is a body.
    pub content_length: Option<u64>,
    /// The connection is TLS: `HTTPS=on`, `REQUEST_SCHEME=https` (what PHP
    /// applications read to build their own URLs).
    pub secure: bool,
}

/// The request's header fields (name, value) from its raw head, for `HTTP_*`; parsed
/// again here so that the static path never keeps a header list.
pub fn fields(raw_head: &[u8], limit: usize) -> Vec<(String, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    // Already accepted within every limit: only the total bound again, and room for
    // as many fields as `limit_request_fields` may allow.
    let limits = head::Limits {
        head: limit,
        line: usize::MAX,
        fields: MAX_HEADERS,
        field_size: usize::MAX,
    };
    match head::parse_with(raw_head, &mut headers, &limits) {
        Ok(Some(req)) => req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The environment of the script `script` for `req` on `site`.
pub fn build(
    site: &Site,
    req: &Request,
    script: &Script,
    fields: &[(String, Vec<u8>)],
    conn: Conn,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(24 + fields.len());
    let mut set = |k: &str, v: OsString| env.push((k.into(), v));
    let s = |v: &str| OsString::from(v);
    set("GATEWAY_INTERFACE", s("CGI/1.1"));
    set(
        "SERVER_SOFTWARE",
        s(concat!("bulkhead/", env!("CARGO_PKG_VERSION"))),
    );
    set(
        "SERVER_PROTOCOL",
        s(if conn.minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" }),
    );
    set("SERVER_NAME", s(&site.server_name));
    if let Some(local) = conn.local {
        set("SERVER_ADDR", s(&plain_ip(local)));
        set("SERVER_PORT", s(&local.port().to_string()));
    }
    if let Some(peer) = conn.peer {
        set("REMOTE_ADDR", s(&plain_ip(peer)));
        set("REMOTE_PORT", s(&peer.port().to_string()));
    }
    if conn.secure {
        set("HTTPS", s("on"));
        set("REQUEST_SCHEME", s("https"));
    } else {
        set("REQUEST_SCHEME", s("http"));
    }
    set("REQUEST_METHOD", s(req.method.as_str()));
    set("REQUEST_URI", s(&req.target));
    set("QUERY_STRING", s(script.target.query.as_deref().unwrap_or("")));
    set("DOCUMENT_ROOT", site.document_root.clone().into_os_string());
    let segments = &script.target.segments;
    set("SCRIPT_NAME", joined(&segments[..script.script_segments], false));
    set("SCRIPT_FILENAME", script.filename.clone().into_os_string());
    let rest = &segments[script.script_segments..];
    if !rest.is_empty() {
        let info = joined(rest, script.target.trailing_slash);
        let mut translated = site.document_root.clone().into_os_string().into_vec();
        translated.extend_from_slice(info.as_bytes());
        set("PATH_INFO", info);
        set("PATH_TRANSLATED", OsString::from_vec(translated));
    }
    if let Some(len) = conn.content_length {
        set("CONTENT_LENGTH", s(&len.to_string()));
        if let Some((_, v)) = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            set("CONTENT_TYPE", OsString::from_vec(v.clone()));
        }
    }
    set("PATH", s(PATH));
    for (name, value) in http_vars(fields) {
        env.push((name.into(), OsString::from_vec(value)));
    }
    env
}

/// `HTTP_<NAME>` for every field, repeated fields joined with ", " (RFC 3875 §4.1.18).
/// Left out: `Proxy` (httpoxy: it would become `HTTP_PROXY`), `Content-Type` and
/// `Content-Length` (their own variables), and names with `_`, which could pose as
/// another field once `-` becomes `_` (as Apache 2.4).
fn http_vars(fields: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in fields {
        let skip = ["proxy", "content-type", "content-length"];
        if skip.iter().any(|s| name.eq_ignore_ascii_case(s)) || name.contains('_') {
            continue;
        }
        let var = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        match out.iter_mut().find(|(n, _)| *n == var) {
            Some((_, v)) => {
                v.extend_from_slice(b", ");
                v.extend_from_slice(value);
            }
            None => out.push((var, value.clone())),
        }
    }
    out
}

/// `/a/b` from decoded segments (`/a/b/` with `slash`).
fn joined(segments: &[Vec<u8>], slash: bool) -> OsString {
    let mut out = Vec::new();
    for seg in segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if slash || out.is_empty() {
        out.push(b'/');
    }
    OsString::from_vec(out)
}

/// The address without brackets, an IPv4-mapped IPv6 address as IPv4.
fn plain_ip(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.ip().to_string(),
        },
        SocketAddr::V4(v4) => v4.ip().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_variables() {
        let f = |n: &str, v: &str| (n.to_string(), v.as_bytes().to_vec());
        let vars = http_vars(&[
            f("Host", "a"),
            f("Proxy", "http://evil"),
            f("X-A", "1"),
            f("x-a", "2"),
            f("X_A", "3"),
            f("Content-Type", "text/plain"),
        ]);
        assert_eq!(vars, vec![f("HTTP_HOST", "a"), f("HTTP_X_A", "1, 2")]);
        assert_eq!(joined(&[b"a".to_vec(), b"b".to_vec()], true), "/a/b/");
        assert_eq!(plain_ip("[::ffff:1.2.3.4]:5".parse().unwrap()), "1.2.3.4");
    }
}
