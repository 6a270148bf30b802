//! A stream that runs a CGI script or goes to a FastCGI backend, on the HTTP/2 side:
//! the request body spooled first (within `limit_request_body` and
//! `request_body_timeout`), the script's meta-variables (`:authority` as `HTTP_HOST`,
//! cookie crumbs joined), local redirects followed, and the answer's header block
//! read; its body is then pumped like any other ([`super::stream`]).

use std::fs::File;

use hyper::body::{Body as _, Incoming};
use hyper::header::HeaderMap;
use thiserror::Error;

use super::Shared;
use crate::handler::cgi::output::{self, Source};
use crate::handler::cgi::spool::{Spool, SpoolError};
use crate::handler::cgi::{self, env, spawn, Answer, Script};
use crate::handler::{self, Body, Method, Request, Response, Site};
use crate::session::{FastcgiRequest, Observer, HTTP2};

/// A script's body when its vhost sets no `limit_request_body` (as HTTP/1.1's decoder).
const MAX_BODY: u64 = 1 << 30;
/// Most local redirects (`Location: /path`) followed for one request (as HTTP/1.1).
const MAX_REDIRECTS: usize = 4;

/// Why a request body did not reach its spool file.
#[derive(Debug, Error)]
enum BodyError {
    #[error("{0}")]
    Spool(#[from] SpoolError),
    #[error("request body not received in time")]
    Timeout,
    #[error("client reset the stream while sending the body: {0}")]
    Reset(hyper::Error),
}

/// A request that runs a CGI script or goes to a FastCGI backend: the body spooled
/// first, then as HTTP/1.1's `h1/conn/cgi.rs` (local redirects, the streamed answer).
#[allow(clippy::too_many_arguments)]
pub(super) async fn cgi<'o>(
    shared: &Shared,
    site: &Site,
    request: &Request,
    fields: &HeaderMap,
    body: Incoming,
    authority: Option<&str>,
    script: Script,
    observer: &'o dyn Observer,
    backend: &mut Option<FastcgiRequest<'o>>,
) -> Response {
    let mut stdin = None;
    let mut content_length = None;
    if !body.is_end_stream() {
        match spool(body, site.cgi.body_limit, site.body_timeout).await {
            Ok((file, len)) => {
                stdin = Some(file);
                content_length = Some(len);
            }
            Err(e @ BodyError::Spool(SpoolError::TooLarge(_))) => return Response::error(413, e),
            Err(e @ BodyError::Timeout) => return Response::error(408, e),
            Err(e) => return Response::error(400, e),
        }
    }
    let fields = cgi_fields(fields, authority);
    let mut next: Option<Request> = None;
    let mut script = script;
    for _ in 0..=MAX_REDIRECTS {
        let req = next.as_ref().unwrap_or(request);
        let conn = env::Conn {
            peer: Some(shared.peer),
            local: Some(shared.local),
            minor: HTTP2,
            content_length,
            secure: true,
        };
        let vars = env::build(site, req, &script, &fields, conn);
        *backend = None;
        let answer = match &script.fastcgi {
            None => match spawn::spawn(&script, vars, stdin.take(), site.cgi.timeout) {
                Ok(running) => output::read_head(Source::Script(running))
                    .await
                    .map_err(|e| Response::error(e.status(), e)),
                Err(e) => Err(Response::error(500, e)),
            },
            Some(conf) => {
                let r = backend.insert(FastcgiRequest::start(observer));
                handler::fastcgi::ask(conf, &vars, stdin.take(), r).await
            }
        };
        let path = match answer {
            Ok(Answer::Response { status, mut output }) => {
                if status == 204 || status == 304 {
                    output.length = None;
                }
                let own_hsts = output
                    .fields
                    .iter()
                    .any(|f| f.0.eq_ignore_ascii_case("strict-transport-security"));
                let mut response = Response::new(status, Body::Stream(output));
                if !own_hsts {
                    handler::https::add_hsts(site, &mut response);
                }
                return response;
            }
            Ok(Answer::LocalRedirect(path)) => path,
            Err(response) => return response,
        };
        *backend = None;
        // RFC 3875 §6.2.2: as if the client had asked for `path`, a GET without a body.
        let redirected = Request {
            method: Method::Get,
            target: path,
            host: request.host.clone(),
            headers: request.headers.clone(),
        };
        content_length = None;
        match cgi::select(site, &redirected) {
            Some(Ok(s)) => {
                script = s;
                next = Some(redirected);
            }
            Some(Err(response)) => return response,
            None => {
                let mut response = handler::respond(site, &redirected);
                handler::https::add_hsts(site, &mut response);
                return response;
            }
        }
    }
    Response::error(500, format!("more than {MAX_REDIRECTS} CGI local redirects"))
}

/// The header fields a script sees (`HTTP_*`): `:authority` (with its port) as Host, and the cookie
/// crumbs of HTTP/2 joined with `; ` (RFC 9113 §8.2.3).
fn cgi_fields(headers: &HeaderMap, host: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(headers.len() + 1);
    if headers.get("host").is_none() {
        if let Some(h) = host {
            out.push(("host".to_string(), h.as_bytes().to_vec()));
        }
    }
    let mut cookie: Option<Vec<u8>> = None;
    for (name, value) in headers {
        if name == "cookie" {
            let c = cookie.get_or_insert_with(Vec::new);
            if !c.is_empty() {
                c.extend_from_slice(b"; ");
            }
            c.extend_from_slice(value.as_bytes());
        } else {
            out.push((name.as_str().to_string(), value.as_bytes().to_vec()));
        }
    }
    if let Some(c) = cookie {
        out.push(("cookie".to_string(), c));
    }
    out
}

/// The request body into a new spool file of at most `limit` bytes (0: the 1 GiB of
/// HTTP/1.1's decoder), within the site's `request_body_timeout` (with its rate); the
/// file rewound, with its length.
async fn spool(
    mut body: Incoming,
    limit: u64,
    timeout: common::http::rate::RateTimeout,
) -> Result<(File, u64), BodyError> {
    let limit = if limit == 0 { MAX_BODY } else { limit };
    let mut spool = Spool::new(limit)?;
    let mut deadline = timeout.start();
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline.tokio_at(), frame).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(spool.finish()?),
            Ok(Some(Err(e))) => return Err(BodyError::Reset(e)),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    deadline.received(data.len());
                    spool.write(&data)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn cookies_are_joined_for_scripts() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        h.append("x-y", HeaderValue::from_static("z"));
        let f = cgi_fields(&h, Some("a.test"));
        assert!(f.contains(&("host".into(), b"a.test".to_vec())));
        assert!(f.contains(&("cookie".into(), b"a=1; b=2".to_vec())));
        assert!(f.contains(&("x-y".into(), b"z".to_vec())));
    }
}
