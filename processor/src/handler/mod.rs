//! What answers a request, apart from the protocol that carried it: a handler sees a
//! protocol-neutral [`Request`] and produces a [`Response`] whose [`Body`] is bytes, a
//! file range or a stream; the protocol frames and writes it (HTTP/1.1 today, HTTP/2
//! later).
//!
//! Handlers: [`static_files`], [`cgi`] and [`fastcgi`], each a module here (a match,
//! no dynamic dispatch). A script (CGI or FastCGI) is chosen before the body is read
//! ([`cgi::select`]), since a script gets the body and any method; everything else
//! goes through [`respond`], and the protocol discards a body before answering it.
//!
//! Choices where RFC 9110 leaves room:
//! - Methods: GET and HEAD serve files; OPTIONS answers 200 with `Allow: GET, HEAD,
//!   OPTIONS` (for `*` and any well-formed path); every other syntactically valid method
//!   token gets 405 with the same `Allow`.
//! - Range applies to GET only (RFC 9110 §14.2): HEAD gets the 200 header block.

pub mod access;
pub mod cgi;
pub mod fastcgi;
pub mod https;
pub mod stamp;
pub mod static_files;

use std::fs::File;
use std::path::PathBuf;

use common::http::error_page;

/// One vhost this processor serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub vhost_id: u32,
    pub server_name: String,
    /// As seen by this process (already chroot-relative).
    pub document_root: PathBuf,
    /// URL path prefixes refused with 403 (the vhost's `deny`).
    pub deny: Vec<String>,
    /// Which requests run a CGI script.
    pub cgi: cgi::CgiConf,
    /// The directory index file names, tried in order (`index`).
    pub index: Vec<String>,
    /// What answers a path that resolves to nothing (`fallback`).
    pub fallback: Option<Fallback>,
    /// `redirect_to_https` and `hsts_max_age`.
    pub https: https::Https,
    /// `request_body_timeout`: the whole body of a request, with its rate.
    pub body_timeout: common::http::rate::RateTimeout,
    /// `keep_alive_max_requests`: requests on one connection (0: unlimited), the last
    /// answered with `Connection: close`.
    pub max_requests: u64,
}

/// A vhost's `fallback`: the URL path of a file (a script or a static file) that
/// answers a request whose path is neither a file nor a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// As configured (`/index.php`).
    pub path: String,
    /// Its segments (`["index.php"]`).
    pub segments: Vec<Vec<u8>>,
}

impl Fallback {
    pub fn new(path: &str) -> Self {
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        Self {
            path: path.to_string(),
            segments,
        }
    }
}

impl Site {
    /// The default `index` and no `fallback`, no CGI, no `deny` (tests).
    #[cfg(test)]
    pub fn plain(vhost_id: u32, server_name: &str, document_root: PathBuf) -> Self {
        Self {
            vhost_id,
            server_name: server_name.into(),
            document_root,
            deny: Vec::new(),
            cgi: Default::default(),
            index: vec!["index.html".into()],
            fallback: None,
            https: https::Https::default(),
            body_timeout: common::http::rate::RateTimeout::fixed(std::time::Duration::from_secs(5)),
            max_requests: 0,
        }
    }
}

/// The request method, as far as this server distinguishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    /// Any other valid token (methods are case-sensitive: `get` lands here).
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Other(m) => m,
        }
    }
}

/// A request as a handler sees it, whatever protocol carried it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The request target as received (origin-form, absolute-form or `*`).
    pub target: String,
    /// The host per RFC 9112 §3.2 (absolute-form authority first), without port.
    pub host: Option<String>,
    pub headers: Headers,
}

/// The header fields handlers read, taken out once by the protocol (no header list is
/// kept per request; CGI's environment will need the rest, and they go here).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_unmodified_since: Option<String>,
    pub range: Option<String>,
    pub if_range: Option<String>,
    /// For the access log.
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

/// What follows the header block.
#[derive(Debug)]
pub enum Body {
    /// No body and no Content-Length (304).
    None,
    /// In-memory body (error pages, redirects, OPTIONS).
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `offset`: the protocol decides how they travel
    /// (copied with the header block when small, sendfile(2) otherwise).
    File { file: File, offset: u64, len: u64 },
    /// A whole small file's 200 from [`static_files::hot`]: its bytes and its fields,
    /// ready (the protocol writes the entry's fields before the response's own).
    Hot(std::rc::Rc<static_files::hot::Hot>),
    /// A script's (or a FastCGI backend's) output, of unknown length: the protocol writes it in bounded pieces
    /// as it comes (chunked, or delimited by closing the connection).
    Stream(Box<cgi::Output>),
}

/// A response to be framed and written by the protocol.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// For the log line of a 4xx/5xx.
    pub reason: String,
}

impl Response {
    pub fn new(status: u16, body: Body) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            reason: String::new(),
        }
    }

    /// The shared error page ([`common::http::error_page`]), logged with `reason` when
    /// written.
    pub fn error(status: u16, reason: impl ToString) -> Self {
        let mut response = Self::new(status, Body::Bytes(error_page::page(status).into_bytes()));
        response
            .headers
            .push(("Content-Type", error_page::CONTENT_TYPE.into()));
        response.reason = reason.to_string();
        response
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Body bytes this response sends (none for HEAD).
    pub fn body_len(&self, head_only: bool) -> u64 {
        match &self.body {
            _ if head_only => 0,
            Body::None => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
            Body::Hot(hot) => hot.body.len() as u64,
            Body::Stream(_) => 0,
        }
    }
}

/// The methods this server implements.
const ALLOW: &str = "GET, HEAD, OPTIONS";

/// The response to `req` for `site`, before any request body is looked at.
pub fn respond(site: &Site, req: &Request) -> Response {
    let target = static_files::target::parse(&req.target);
    match (&req.method, target) {
        (Method::Other(m), _) => {
            Response::error(405, format!("method {m} not allowed")).header("Allow", ALLOW)
        }
        (_, Err(e)) => Response::error(e.status(), e),
        (Method::Options, Ok(_)) => Response::new(200, Body::Bytes(Vec::new())).header("Allow", ALLOW),
        (_, Ok(static_files::target::Target::Asterisk)) => {
            Response::error(400, "request target * is only for OPTIONS")
        }
        (Method::Get | Method::Head, Ok(static_files::target::Target::Path(path))) => {
            static_files::respond(site, &path, req)
        }
    }
}
