//! One HTTP/2 stream: the request as a handler sees it ([`Request`]), routed by its
//! `:authority` (or Host) with [`TlsRouter`] (421 for a host not served on this
//! connection), answered by the same handlers as HTTP/1.1 (static files here, CGI and
//! FastCGI in [`super::script`]), and its [`Response`] turned into hyper's.
//!
//! A request that may run a script gets a local task of its own: it owns the script or
//! the FastCGI request until its body is sent, and ends (killing a script) when the
//! client resets the stream, since its body then has no reader. Any other request is
//! answered in hyper's stream task, and a large file's body pumped by a task.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{mpsc, oneshot};

use super::body::H2Body;
use super::{Open, Shared};
use crate::board::ConnObserver;
use crate::handler::cgi::spool::SpoolError;
use crate::handler::cgi::{self, Output};
use crate::handler::static_files::hot::Hot;
use crate::handler::{self, Body, Headers, Method, Request, Response, Site};
use crate::route::TlsRouter;
use crate::session::{Completed, FastcgiRequest, Observer, Router, HTTP2};
use crate::transport::WRITE_TIMEOUT;

/// Bytes read from a file or a script per piece of a pumped body.
const PIECE: usize = 16 * 1024;
/// Files up to this size go to hyper in one piece, without the pump.
const SMALL_FILE: u64 = 64 * 1024;
/// Header fields a response over HTTP/2 must not carry (RFC 9113 §8.2.2); a script's
/// are dropped.
const CONNECTION_FIELDS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Answers one stream. A request that may run a script gets its own task (it owns the
/// script or the FastCGI request until its body is sent) and this waits for its
/// response head; any other is answered here, and a large file's body pumped by a task.
pub(super) async fn serve(open: Open, req: hyper::Request<Incoming>) -> hyper::Response<H2Body> {
    // hyper and rustls buffer what they read: a cached file reads its inotify queue.
    crate::handler::static_files::hot::suspect();
    let shared = open.0.clone();
    let (parts, body) = req.into_parts();
    let request = request(&parts);
    let site = route(&shared, &request);
    let Some(site) = site.filter(|s| cgi::may_match(s, &request)) else {
        let declared = field(&parts.headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        return inline(open, &shared, site, request, declared);
    };
    let vhost = site.vhost_id;
    let (tx, rx) = oneshot::channel();
    tokio::task::spawn_local(async move {
        run(&shared, vhost, parts, body, request, tx).await;
        drop(open);
    });
    rx.await
        .unwrap_or_else(|_| head(Response::error(500, "stream task failed"), false).0)
}

/// The vhost that answers `request` on this connection; `None`: 421 (counted as
/// [`TlsRouter`] counts it, also when the answer is the one remembered).
fn route<'s>(shared: &'s Shared, request: &Request) -> Option<&'s Site> {
    let remembered = match &*shared.last_route.borrow() {
        Some((host, vhost)) if *host == request.host => Some(*vhost),
        _ => None,
    };
    let vhost = match remembered {
        Some(vhost) => {
            if vhost.is_none() {
                shared.misdirected.set(shared.misdirected.get().saturating_add(1));
            }
            vhost
        }
        None => {
            let vhost = decide(shared, request);
            *shared.last_route.borrow_mut() = Some((request.host.clone(), vhost));
            vhost
        }
    };
    shared.sites.by_vhost(vhost?)
}

fn decide(shared: &Shared, request: &Request) -> Option<u32> {
    let router = TlsRouter {
        sites: &shared.sites,
        vhost: shared.vhost,
        by_default: shared.by_default,
        sni: shared.sni.clone(),
        misdirected: &shared.misdirected,
        covers: &|host| shared.tls.covers(shared.vhost, host),
    };
    Some(router.route(request.host.as_deref())?.vhost_id)
}

/// A request no script answers (or refused with 421), answered without a task of its
/// own unless its body is a large file.
fn inline(
    open: Open,
    shared: &Rc<Shared>,
    site: Option<&Site>,
    request: Request,
    declared: Option<u64>,
) -> hyper::Response<H2Body> {
    let observer = ConnObserver::stream(&shared.board, (shared.peer, shared.local), shared.vhost);
    let started = std::time::SystemTime::now();
    let t0 = std::time::Instant::now();
    let head_only = request.method == Method::Head;
    let Some(site) = site else {
        let why = format!(
            "host {:?} is not served on this connection",
            request.host.as_deref().unwrap_or("")
        );
        let response = Response::error(421, why);
        log(&response, shared);
        observer.answering(421, response.body_len(head_only));
        return head(response, head_only).0;
    };
    observer.started(site);
    let limit = site.cgi.body_limit;
    let mut response = if limit > 0 && declared.is_some_and(|n| n > limit) {
        Response::error(413, SpoolError::TooLarge(limit))
    } else {
        handler::respond(site, &request)
    };
    handler::https::add_hsts(site, &mut response);
    log(&response, shared);
    let status = response.status;
    let bytes = response.body_len(head_only);
    observer.answering(status, bytes);
    let (response, pump) = head(response, head_only);
    let vhost = site.vhost_id;
    let shared = shared.clone();
    let done = move |bytes: u64| {
        let Some(site) = shared.sites.by_vhost(vhost) else {
            return;
        };
        let observer = ConnObserver::stream(&shared.board, (shared.peer, shared.local), shared.vhost);
        observer.started(site);
        observer.completed(&completed(site, &request, status, bytes, (started, t0)));
    };
    // This stream's request is counted out here; a pumped body's completion is counted
    // (and logged) by its own observer when it ends.
    drop(observer);
    match pump {
        None => {
            done(bytes);
            drop(open);
        }
        Some(pump) => {
            tokio::task::spawn_local(async move {
                done(pump.run().await);
                drop(open);
            });
        }
    }
    response
}

async fn run(
    shared: &Shared,
    vhost: u32,
    parts: hyper::http::request::Parts,
    body: Incoming,
    request: Request,
    tx: oneshot::Sender<hyper::Response<H2Body>>,
) {
    let observer = ConnObserver::stream(&shared.board, (shared.peer, shared.local), shared.vhost);
    let started = std::time::SystemTime::now();
    let t0 = std::time::Instant::now();
    let head_only = request.method == Method::Head;
    let Some(site) = shared.sites.by_vhost(vhost) else {
        let _ = tx.send(head(Response::error(500, "vhost gone"), head_only).0);
        return;
    };
    observer.started(site);
    let mut backend: Option<FastcgiRequest<'_>> = None;
    let authority = parts.uri.authority().map(|a| a.as_str());
    let answer = answer(
        shared,
        site,
        &request,
        &parts.headers,
        body,
        authority,
        &observer,
        &mut backend,
    );
    let response = answer.await;
    log(&response, shared);
    let status = response.status;
    observer.answering(status, response.body_len(head_only));
    let (response, pump) = head(response, head_only);
    let mut bytes = match response.body() {
        H2Body::Full(Some(b)) => b.len() as u64,
        _ => 0,
    };
    if tx.send(response).is_ok() {
        if let Some(pump) = pump {
            bytes = pump.run().await;
        }
    }
    drop(backend);
    observer.completed(&completed(site, &request, status, bytes, (started, t0)));
}

/// The access-log facts of one finished stream; `(started, t0)`: its wall-clock start
/// and the instant its duration is measured from.
fn completed<'a>(
    site: &'a Site,
    request: &'a Request,
    status: u16,
    bytes: u64,
    (started, t0): (std::time::SystemTime, std::time::Instant),
) -> Completed<'a> {
    Completed {
        site,
        method: request.method.as_str(),
        target: &request.target,
        minor: HTTP2,
        status,
        bytes,
        started,
        duration: t0.elapsed(),
        referer: request.headers.referer.as_deref(),
        user_agent: request.headers.user_agent.as_deref(),
    }
}

/// A 4xx or 5xx's log line, as HTTP/1.1 writes it.
fn log(response: &Response, shared: &Shared) {
    if response.status >= 500 {
        tracing::warn!(status = response.status, reason = %response.reason, peer = %shared.peer, "request failed");
    } else if response.status >= 400 {
        tracing::info!(status = response.status, reason = %response.reason, peer = %shared.peer, "request refused");
    }
}

/// The request as a handler sees it: `:path` as the target, `:authority` (else Host)
/// as the host, without its port.
fn request(parts: &hyper::http::request::Parts) -> Request {
    let method = match parts.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        m => Method::Other(m.to_string()),
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let host = match parts.uri.authority() {
        Some(a) => Some(a.host().to_string()),
        None => field(&parts.headers, header::HOST).map(|h| strip_port(&h).to_string()),
    };
    Request {
        method,
        target,
        host,
        headers: headers(&parts.headers),
    }
}

/// The fields a handler reads, in one pass over the list: each the first field of its
/// name, if that one is text (as `HeaderMap::get` would give it).
fn headers(h: &HeaderMap) -> Headers {
    let mut out = Headers::default();
    let mut seen = 0u8;
    for (name, value) in h {
        let (bit, slot) = if *name == header::IF_MATCH {
            (0, &mut out.if_match)
        } else if *name == header::IF_NONE_MATCH {
            (1, &mut out.if_none_match)
        } else if *name == header::IF_MODIFIED_SINCE {
            (2, &mut out.if_modified_since)
        } else if *name == header::IF_UNMODIFIED_SINCE {
            (3, &mut out.if_unmodified_since)
        } else if *name == header::RANGE {
            (4, &mut out.range)
        } else if *name == header::IF_RANGE {
            (5, &mut out.if_range)
        } else if *name == header::REFERER {
            (6, &mut out.referer)
        } else if *name == header::USER_AGENT {
            (7, &mut out.user_agent)
        } else {
            continue;
        };
        if seen & (1 << bit) == 0 {
            seen |= 1 << bit;
            *slot = value.to_str().ok().map(str::to_string);
        }
    }
    out
}

fn field(headers: &HeaderMap, name: impl hyper::header::AsHeaderName) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// `host` of `host:port` (an IPv6 literal keeps its brackets).
fn strip_port(h: &str) -> &str {
    match h.rfind(':') {
        Some(i) if !h[i..].contains(']') && h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &h[..i],
        _ => h,
    }
}

#[allow(clippy::too_many_arguments)]
/// The response to a routed request, with the FastCGI request (if any) left in
/// `backend` for as long as its body is being sent.
async fn answer<'o>(
    shared: &Shared,
    site: &Site,
    request: &Request,
    fields: &HeaderMap,
    body: Incoming,
    authority: Option<&str>,
    observer: &'o dyn Observer,
    backend: &mut Option<FastcgiRequest<'o>>,
) -> Response {
    let limit = site.cgi.body_limit;
    let declared = field(fields, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if limit > 0 && declared.is_some_and(|n| n > limit) {
        return Response::error(413, SpoolError::TooLarge(limit));
    }
    let script = if site.cgi.is_off() {
        None
    } else {
        cgi::select(site, request)
    };
    let mut response = match script {
        Some(Ok(script)) => {
            let cgi = super::script::cgi(
                shared, site, request, fields, body, authority, script, observer, backend,
            );
            return cgi.await;
        }
        Some(Err(response)) => response,
        // A body nobody reads: hyper resets the stream's sending side once answered.
        None => handler::respond(site, request),
    };
    handler::https::add_hsts(site, &mut response);
    response
}

/// What is still to be read and sent after the header block.
enum Source2 {
    File { file: File, offset: u64, len: u64 },
    Output(Box<Output>),
}

/// A body being pumped into hyper's channel.
struct Pump {
    source: Source2,
    tx: mpsc::Sender<Bytes>,
    aborted: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Pump {
    /// Sends the body; the bytes sent. A read error, or a client that does not take a
    /// piece within [`WRITE_TIMEOUT`], resets the stream.
    async fn run(mut self) -> u64 {
        let mut sent = 0u64;
        loop {
            let mut buf = vec![0u8; PIECE];
            let n = match &mut self.source {
                Source2::File { file, offset, len } => {
                    let want = (*len - sent).min(PIECE as u64) as usize;
                    if want == 0 {
                        break;
                    }
                    match file.read_at(&mut buf[..want], *offset + sent) {
                        Ok(0) | Err(_) => {
                            self.aborted.set(true);
                            break;
                        }
                        Ok(n) => n,
                    }
                }
                Source2::Output(output) => match output.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::info!("script output cut short: {e}");
                        self.aborted.set(true);
                        break;
                    }
                },
            };
            buf.truncate(n);
            match tokio::time::timeout(WRITE_TIMEOUT, self.tx.send(Bytes::from(buf))).await {
                Ok(Ok(())) => sent += n as u64,
                // The stream was reset or the connection is gone.
                Ok(Err(_)) => break,
                Err(_) => {
                    self.aborted.set(true);
                    break;
                }
            }
        }
        sent
    }
}

/// hyper's response head and body, and the pump its body needs.
fn head(response: Response, head_only: bool) -> (hyper::Response<H2Body>, Option<Pump>) {
    let status = match response.status {
        100..=199 => hyper::StatusCode::BAD_GATEWAY,
        s => hyper::StatusCode::from_u16(s).unwrap_or(hyper::StatusCode::BAD_GATEWAY),
    };
    if let Body::Hot(hot) = &response.body {
        return (hot_head(hot, &response.headers, head_only), None);
    }
    let mut headers = HeaderMap::with_capacity(response.headers.len() + 4);
    headers.insert("server", HeaderValue::from_static("bulkhead"));
    for (name, value) in &response.headers {
        add(&mut headers, name, value);
    }
    let mut length = None;
    let (body, pump) = match response.body {
        Body::None => (H2Body::Empty, None),
        Body::Bytes(b) => {
            length = Some(b.len() as u64);
            (H2Body::Full(Some(Bytes::from(b))), None)
        }
        Body::File { file, offset, len } => {
            length = Some(len);
            if head_only {
                (H2Body::Empty, None)
            } else if len <= SMALL_FILE {
                let mut buf = vec![0u8; len as usize];
                match file.read_exact_at(&mut buf, offset) {
                    Ok(()) => (H2Body::Full(Some(Bytes::from(buf))), None),
                    Err(e) => return head(Response::error(500, format!("reading the file: {e}")), head_only),
                }
            } else {
                pumped(Source2::File { file, offset, len })
            }
        }
        // Answered above.
        Body::Hot(_) => (H2Body::Empty, None),
        Body::Stream(output) => {
            for (name, value) in &output.fields {
                if !CONNECTION_FIELDS.iter().any(|c| name.eq_ignore_ascii_case(c)) {
                    add(&mut headers, name, value);
                }
            }
            length = output.length;
            let no_body =
                status == hyper::StatusCode::NO_CONTENT || status == hyper::StatusCode::NOT_MODIFIED;
            if head_only || no_body {
                (H2Body::Empty, None)
            } else {
                pumped(Source2::Output(output))
            }
        }
    };
    if let Some(len) = length {
        headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let body = if head_only { H2Body::Empty } else { body };
    let mut out = hyper::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    (out, pump)
}

/// A cached file's 200: its header map, built once per entry and cloned (the values
/// are shared, not copied), and its body shared with the cache.
fn hot_head(hot: &Hot, extra: &[(&'static str, String)], head_only: bool) -> hyper::Response<H2Body> {
    let mut headers = hot
        .h2_fields
        .get_or_init(|| {
            let mut h = HeaderMap::with_capacity(8);
            h.insert("server", HeaderValue::from_static("bulkhead"));
            add(&mut h, "Content-Type", &hot.content_type);
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            add(&mut h, "ETag", &hot.validators.etag);
            if let Some(lm) = &hot.last_modified {
                add(&mut h, "Last-Modified", lm);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(hot.body.len()));
            h
        })
        .clone();
    for (name, value) in extra {
        add(&mut headers, name, value);
    }
    let body = if head_only {
        H2Body::Empty
    } else {
        H2Body::Full(Some(hot.body.clone()))
    };
    let mut out = hyper::Response::new(body);
    *out.headers_mut() = headers;
    out
}

fn pumped(source: Source2) -> (H2Body, Option<Pump>) {
    let (body, tx, aborted) = H2Body::pumped();
    (body, Some(Pump { source, tx, aborted }))
}

/// The names handlers use, as written there, with hyper's (no parsing per response).
const KNOWN: &[(&str, HeaderName)] = &[
    ("Content-Type", header::CONTENT_TYPE),
    ("Last-Modified", header::LAST_MODIFIED),
    ("ETag", header::ETAG),
    ("Accept-Ranges", header::ACCEPT_RANGES),
    ("Content-Range", header::CONTENT_RANGE),
    ("Location", header::LOCATION),
    ("Allow", header::ALLOW),
    ("Strict-Transport-Security", header::STRICT_TRANSPORT_SECURITY),
];

/// Appends a field; one HTTP/2 cannot carry (a bad name or value from a script) is
/// left out with a log line.
fn add(headers: &mut HeaderMap, name: &str, value: &str) {
    let known = KNOWN.iter().find(|(n, _)| *n == name).map(|(_, h)| h.clone());
    let parsed = known.map_or_else(|| HeaderName::from_bytes(name.as_bytes()), Ok);
    match (parsed, HeaderValue::from_str(value)) {
        (Ok(n), Ok(v)) => {
            headers.append(n, v);
        }
        _ => tracing::info!(
            field = name,
            "a response header field HTTP/2 cannot carry; left out"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_field_of_each_name_is_taken() {
        let mut h = HeaderMap::new();
        h.append(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        h.append(header::RANGE, HeaderValue::from_static("bytes=2-3"));
        h.append(header::USER_AGENT, HeaderValue::from_bytes(b"\xff").unwrap());
        h.append(header::USER_AGENT, HeaderValue::from_static("curl"));
        h.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        let got = headers(&h);
        assert_eq!(got.range.as_deref(), Some("bytes=0-1"));
        assert_eq!(got.user_agent, None, "as HeaderMap::get: the first, not text");
        assert_eq!(got.if_none_match.as_deref(), Some("\"a\""));
        assert_eq!(got.if_match, None);
    }

    #[test]
    fn ports_come_off_hosts() {
        assert_eq!(strip_port("a.test:8443"), "a.test");
        assert_eq!(strip_port("a.test"), "a.test");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
