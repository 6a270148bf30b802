//! The processor's HTTP/1.1 side: one client connection at a time, keep-alive and
//! pipelining, request body framing (RFC 9112 §6), and static files from a vhost's
//! document root.
//!
//! Code map:
//! - [`conn`]: the connection loop (reading heads, timeouts, hand-back, lingering close).
//! - [`request`]: one request head → an owned [`request::Head`] with its body framing.
//! - [`body`]: discarding a request body (Content-Length or chunked) from the stream.
//! - [`target`]: request target → decoded, checked path segments.
//! - [`fs`]: walking the document root one component at a time (SymLinksIfOwnerMatch).
//! - [`file`]: validators, conditional requests, ranges: a [`response::Reply`] for a file.
//! - [`response`]: status lines, header blocks, error pages, sendfile.
//!
//! Choices where RFC 9110/9112 leave room:
//! - Methods: GET and HEAD serve files; OPTIONS answers 200 with `Allow: GET, HEAD,
//!   OPTIONS` (for `*` and any well-formed path); every other syntactically valid method
//!   token gets 405 with the same `Allow`. An invalid token is a malformed head: 400.
//! - Files of at most [`response::SMALL_FILE`] bytes are read into the response buffer
//!   and go out with the header block in one write (for a 1 KiB body on a fresh
//!   connection that measured ~25 µs faster than sendfile); larger ones go out with
//!   sendfile(2) after the header block, sent with `MSG_MORE` so both leave together.
//! - 400, 408, 414, 431, 500 and 505 close the connection (as Apache's
//!   `ap_status_drops_connection`); 301, 304, 403, 404, 405, 412 and 416 keep it.
//! - Range applies to GET only (RFC 9110 §14.2): HEAD gets the 200 header block.
//! - A request body is read and discarded *before* the response is written, so that a
//!   client that writes its whole body before reading cannot deadlock against a large
//!   response. With `Expect: 100-continue` we send `100 Continue` only when the answer is
//!   not an error; for an error we answer at once and close (the body is never read).

mod body;
mod conn;
mod file;
mod fs;
#[cfg(test)]
mod fuzz;
mod oneshot;
mod request;
mod response;
mod target;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

/// One vhost this processor serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub vhost_id: u32,
    pub server_name: String,
    /// As seen by this process (already chroot-relative).
    pub document_root: PathBuf,
}

/// How a connection should stop, as its processor stops taking work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep serving.
    Run,
    /// Finish the request in progress; the next response carries `Connection: close`.
    /// An idle keep-alive connection may still bring one more request (answered with
    /// close) until its keep-alive timeout, so no client request races a close.
    Graceful,
    /// The server is stopping: finish the request in progress, close idle connections now.
    Now,
}

/// One finished request, for the scoreboard and the access log.
pub struct Completed<'a> {
    pub site: &'a Site,
    pub method: &'a str,
    pub target: &'a str,
    /// HTTP/1.x minor version.
    pub minor: u8,
    pub status: u16,
    /// Body bytes sent (Apache's `%b`).
    pub bytes: u64,
    pub started: std::time::SystemTime,
    pub duration: Duration,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Told about every request a connection serves.
pub trait Observer {
    /// A routed request begins (its head is complete).
    fn started(&self, site: &Site);
    /// A response is about to be written: count it now, so that a client that has its
    /// answer already sees it counted by the next scrape.
    fn answering(&self, _status: u16, _body_bytes: u64) {}
    /// It was answered (or failed while answering).
    fn completed(&self, done: &Completed<'_>);
}

/// An observer that does nothing (tests).
pub struct NoObserver;

impl Observer for NoObserver {
    fn started(&self, _: &Site) {}
    fn completed(&self, _: &Completed<'_>) {}
}

pub use response::WRITE_TIMEOUT;

/// What the one-shot fast path did.
pub enum OneShotResult {
    /// Not a one-shot request: serve the connection with [`serve`].
    NotApplicable,
    /// Answered in full; close the connection.
    Done,
    /// Answered in part: these bytes remain to be written, then close.
    Partial(Vec<u8>),
}

/// Serves a connection whose only request is `buffered` (complete, no body, asking to
/// close, answered from memory or a small file) with one write and without the
/// reactor. The first request is always `first`'s (the multiplexer routed it).
pub fn serve_one_shot(
    stream: &std::net::TcpStream,
    buffered: &[u8],
    first: &Site,
    cfg: &ConnConfig,
    observer: &dyn Observer,
) -> OneShotResult {
    let Some((shot, head)) = oneshot::prepare(buffered, first, cfg.limit_request_head) else {
        return OneShotResult::NotApplicable;
    };
    let n = oneshot::send(stream, &shot, first, &head, observer);
    if n >= shot.bytes.len() {
        OneShotResult::Done
    } else {
        OneShotResult::Partial(shot.bytes[n..].to_vec())
    }
}

/// Decides whether a later request on the connection stays here.
pub trait Router {
    /// `None`: the host belongs to another environment and the connection is handed back.
    fn route(&self, host: Option<&str>) -> Option<&Site>;
}

/// Limits and timeouts for one connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Idle wait for the next request; `ZERO` disables keep-alive.
    pub keep_alive_timeout: Duration,
    /// Once a head has started arriving, it must complete within this.
    pub request_head_timeout: Duration,
    /// Bytes; 431 over it (414 if the request line alone is too long).
    pub limit_request_head: usize,
    /// Per read while discarding a request body.
    pub body_read_timeout: Duration,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Client closed, error answered, keep-alive timeout, or shutdown.
    Closed,
    /// A later request named a host [`Router::route`] does not serve. Every earlier
    /// response has been written in full; the bytes are everything unread from the
    /// client, starting at the first byte of that request's head. Nothing of that
    /// request was answered.
    HandBack(Vec<u8>),
}

/// Serve one client connection.
///
/// `buffered` holds what the multiplexer already read, starting with the first request
/// head. The first request is served by `first` without routing; later ones go through
/// `router`. When `shutdown` turns true, the request in progress is finished (with
/// `Connection: close` if its head is not yet written) and no other request is read.
pub async fn serve(
    stream: &mut TcpStream,
    buffered: Vec<u8>,
    first: &Site,
    router: &dyn Router,
    cfg: &ConnConfig,
    shutdown: &mut watch::Receiver<Stop>,
    observer: &dyn Observer,
) -> Outcome {
    conn::run(stream, buffered, first, router, cfg, shutdown, observer).await
}
