//! The processor's HTTP/1.1 protocol: one client connection at a time, keep-alive and
//! pipelining, request body framing (RFC 9112 §6), response framing, and the one-shot
//! path. What answers a request is the [`crate::handler`]'s; the bytes travel over a
//! [`Transport`].
//!
//! Code map:
//! - [`conn`]: the connection loop (reading heads, timeouts, hand-back, lingering close).
//! - [`request`]: one request head → an owned [`request::Head`]: its framing and
//!   connection options, and the protocol-neutral [`crate::handler::Request`].
//! - [`body`]: discarding a request body (Content-Length or chunked) from the stream.
//! - [`response`]: status lines, header blocks, how a body travels.
//! - [`oneshot`]: a lone `Connection: close` request answered in one write, no reactor.
//!
//! Choices where RFC 9112 leaves room:
//! - An invalid method token is a malformed head: 400.
//! - Files of at most [`response::SMALL_FILE`] bytes are read into the response buffer
//!   and go out with the header block in one write (for a 1 KiB body on a fresh
//!   connection that measured ~25 µs faster than sendfile); larger ones go out with
//!   sendfile(2) after the header block, sent with `MSG_MORE` so both leave together.
//! - 400, 408, 414, 431, 500 and 505 close the connection (as Apache's
//!   `ap_status_drops_connection`); 301, 304, 403, 404, 405, 412 and 416 keep it.
//! - A request body is read and discarded *before* the response is written, so that a
//!   client that writes its whole body before reading cannot deadlock against a large
//!   response. With `Expect: 100-continue` we send `100 Continue` only when the answer is
//!   not an error; for an error we answer at once and close (the body is never read).

mod body;
mod conn;
#[cfg(test)]
mod fuzz;
mod oneshot;
mod request;
mod response;

#[cfg(test)]
mod tests;

use std::os::fd::AsFd;

use tokio::sync::watch;

use crate::handler::Site;
use crate::session::{ConnConfig, Observer, Outcome, Router, Stop};
use crate::transport::Transport;

pub use conn::Resume;

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
    let n = oneshot::send(stream.as_fd(), &shot, first, &head, observer);
    if n >= shot.bytes.len() {
        OneShotResult::Done
    } else {
        OneShotResult::Partial(shot.bytes[n..].to_vec())
    }
}

/// Serve one client connection.
///
/// `buffered` holds what the multiplexer already read, starting with the first request
/// head. The first request is served by `first` without routing (`None`: it is routed
/// too, as on a TLS connection); later ones go through `router`, and one it does not
/// route is handed back, or answered 421 on a transport that cannot be. When `shutdown` turns true, the request in progress is finished (with
/// `Connection: close` if its head is not yet written) and no other request is read.
pub async fn serve(
    transport: &mut Transport,
    buffered: Vec<u8>,
    first: Option<&Site>,
    router: &dyn Router,
    cfg: &ConnConfig,
    shutdown: &mut watch::Receiver<Stop>,
    observer: &dyn Observer,
) -> Outcome {
    conn::run(
        transport,
        buffered,
        first,
        router,
        cfg,
        shutdown,
        observer,
        Resume::default(),
    )
    .await
}

/// [`serve`] from `resume`: a connection that may end its loop at idle to be parked
/// ([`Outcome::Idle`]), or one resumed from a park.
#[allow(clippy::too_many_arguments)]
pub async fn serve_resumable(
    transport: &mut Transport,
    buffered: Vec<u8>,
    first: Option<&Site>,
    router: &dyn Router,
    cfg: &ConnConfig,
    shutdown: &mut watch::Receiver<Stop>,
    observer: &dyn Observer,
    resume: Resume,
) -> Outcome {
    conn::run(
        transport, buffered, first, router, cfg, shutdown, observer, resume,
    )
    .await
}
