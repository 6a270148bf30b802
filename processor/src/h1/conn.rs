//! The connection loop: read a head (within the head limit and timeout), route it, read
//! and discard its body (or give it to a CGI script: [`cgi`]), write its response, and
//! either wait for the next request, hand the connection back to a multiplexer, or
//! close it with a lingering close. A plain connection idle for
//! [`crate::park::PARK_AFTER`] between requests ends its loop
//! ([`Outcome::Idle`]) to be parked; its loop starts again from a [`Resume`].
//!
//! The read buffer only grows by [`READ_CHUNK`] at a time and only while it holds less
//! than the head limit (or one chunk line, or one trailer section) of unparsed bytes,
//! so it never exceeds `limit_request_head + READ_CHUNK` beyond what the multiplexer
//! handed over.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::http::linger::{self, Linger};
use common::http::rate::{Deadline, RateTimeout};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::body::{BodyError, Discard};
use super::request::{self, Framing, Head};
use super::response::{self, drops_connection, Persist};
use crate::handler::static_files::hot;
use crate::handler::{self, Method, Response, Site};
use crate::session::{Completed, ConnConfig, Observer, Outcome, Router, Stop};
use crate::transport::Transport;

mod cgi;

/// Bytes read from the socket at a time.
pub const READ_CHUNK: usize = 16 * 1024;

/// The lingering close after the last response ([`common::http::linger`]): per read
/// and in total; as many bytes as the client sends meanwhile.
const LINGER: Linger = Linger {
    per_read: Duration::from_secs(2),
    total: Duration::from_secs(5),
    bytes: usize::MAX,
};

/// Why a request body could not be discarded.
#[derive(Debug, Error)]
enum DiscardError {
    #[error("{0}")]
    Framing(BodyError),
    #[error("request body over the discard limit")]
    TooLarge,
    #[error("request body over limit_request_body ({0} bytes)")]
    OverLimit(u64),
    #[error("request body not received in time")]
    Timeout,
    #[error("client closed or failed while sending the body")]
    Closed,
}

/// How a connection's loop starts: fresh from a hand-off ([`Resume::default`]), or
/// again after its connection was parked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resume {
    /// Whether the loop may end at idle to be parked ([`Outcome::Idle`]); plain TCP only.
    pub may_park: bool,
    /// Requests already served on the connection (`keep_alive_max_requests`).
    pub requests: u64,
    /// The keep-alive deadline the connection was parked with.
    pub idle_until: Option<Instant>,
}

/// What to do after a request.
enum Step {
    Next,
    Close,
}

struct Conn<'a> {
    stream: &'a mut Transport,
    /// Unparsed bytes from the client, starting at the next request (or body) byte.
    buf: Vec<u8>,
    /// Read buffer, allocated on the first read (a one-shot request never needs it).
    chunk: Vec<u8>,
    cfg: &'a ConnConfig,
    shutdown: &'a mut watch::Receiver<Stop>,
    observer: &'a dyn Observer,
    /// Status and body bytes of the last response written, for the observer.
    last: Option<(u16, u64)>,
    /// The peer and local addresses, asked once per connection (two syscalls) by the
    /// first request that needs them (CGI's and FastCGI's REMOTE_ADDR, SERVER_ADDR).
    addrs: std::cell::OnceCell<(Option<SocketAddr>, Option<SocketAddr>)>,
    /// Requests begun on this connection here (`keep_alive_max_requests`).
    requests: u64,
    /// The current request's site's `request_body_timeout`.
    body_timeout: RateTimeout,
    /// May end at idle to be parked.
    may_park: bool,
    /// The deadline of the next idle wait, when it began before a park.
    idle_until: Option<Instant>,
    /// The last read filled its chunk: the socket's readiness was kept, so the next
    /// read may take bytes the reactor has not seen (`hot::suspect`).
    last_full: bool,
    /// Set when the loop ends to be parked: the keep-alive deadline.
    parked: Option<Instant>,
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    stream: &mut Transport,
    buffered: Vec<u8>,
    first: Option<&Site>,
    router: &dyn Router,
    cfg: &ConnConfig,
    shutdown: &mut watch::Receiver<Stop>,
    observer: &dyn Observer,
    resume: Resume,
) -> Outcome {
    let may_park = resume.may_park && !stream.is_tls();
    let mut conn = Conn {
        stream,
        buf: buffered,
        chunk: Vec::new(),
        cfg,
        shutdown,
        observer,
        last: None,
        addrs: std::cell::OnceCell::new(),
        requests: resume.requests,
        body_timeout: RateTimeout::fixed(Duration::from_secs(20)),
        may_park,
        idle_until: resume.idle_until,
        last_full: false,
        parked: None,
    };
    let mut first = first;
    // A resumed connection is between requests: its next head is not the first.
    let mut first_read = resume.idle_until.is_none();
    loop {
        if !first_read && *conn.shutdown.borrow() == Stop::Now {
            let _ = conn.stream.shutdown().await;
            return Outcome::Closed;
        }
        let head = match conn.read_head(std::mem::take(&mut first_read)).await {
            Ok(Some(head)) => head,
            Ok(None) => {
                return match conn.parked {
                    Some(until) => Outcome::Idle {
                        requests: conn.requests,
                        until,
                    },
                    None => Outcome::Closed,
                }
            }
            Err(response) => {
                Box::pin(conn.finish(response, false)).await;
                return Outcome::Closed;
            }
        };
        let host = head.request.host.as_deref();
        let site = match first.take() {
            Some(site) => site,
            None => match router.route(host) {
                Some(site) => site,
                None if conn.stream.hand_back_fd().is_none() => {
                    // A decrypted connection stays here: the client retries elsewhere.
                    let why = format!("host {:?} is not served on this connection", host.unwrap_or(""));
                    let head_only = head.request.method == Method::Head;
                    Box::pin(conn.finish(Response::error(421, why), head_only)).await;
                    return Outcome::Closed;
                }
                None => return Outcome::HandBack(std::mem::take(&mut conn.buf)),
            },
        };
        // Boxed: a request's state (files, CGI, FastCGI) exists only while it is
        // served, not in every idle keep-alive connection's task.
        match Box::pin(conn.handle(site, &head)).await {
            Step::Next => {}
            Step::Close => return Outcome::Closed,
        }
    }
}

impl Conn<'_> {
    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow() != Stop::Run
    }

    /// The next complete head. `Ok(None)`: close silently (client gone, keep-alive
    /// timeout, shutdown while idle). `Err`: answer and close.
    async fn read_head(&mut self, first: bool) -> Result<Option<Head>, Response> {
        // mod_reqtimeout's rule, from the head's first byte: the deadline moves with
        // the bytes that arrive, up to the maximum.
        let mut deadline: Option<Deadline> = None;
        let limits = self.cfg.limits();
        // Whether the head's bytes may have arrived after the reactor last looked (a
        // cached file then reads its inotify queue: `hot::suspect`): a connection's
        // first head (read by a multiplexer, or the processor that handed it back),
        // bytes left from an earlier read (pipelined), a read after one that filled
        // its chunk, and TLS (rustls buffers what it reads).
        let mut suspect = first || !self.buf.is_empty() || self.last_full || self.stream.is_tls();
        loop {
            if !self.buf.is_empty() && deadline.is_none() {
                let mut d = self.cfg.head_timeout.start();
                d.received(self.buf.len());
                deadline = Some(d);
            }
            // RFC 9112 §2.2: ignore empty lines before a request line.
            let blank = self.buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            let blank = if self.buf[..blank].ends_with(b"\r") {
                blank - 1
            } else {
                blank
            };
            self.buf.drain(..blank);
            if !self.buf.is_empty() {
                match request::parse_with(&self.buf, &limits) {
                    Ok(Some(head)) => {
                        if suspect {
                            hot::suspect();
                        }
                        return Ok(Some(head));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Response::error(e.status(), e)),
                }
            }
            let deadline = match &mut deadline {
                Some(d) => d,
                None if first => deadline.insert(self.cfg.head_timeout.start()),
                None => {
                    // Idle between requests: the keep-alive timeout, or shutdown. An
                    // idle connection keeps no buffer (the next bytes are read into the
                    // thread's scratch buffer when they arrive).
                    if self.buf.is_empty() {
                        self.buf = Vec::new();
                    }
                    if !self.stream.is_tls() {
                        self.chunk = Vec::new();
                    }
                    // A plain connection still idle after PARK_AFTER ends its loop to
                    // be parked, its deadline unchanged; one parked already keeps its own.
                    let now = Instant::now();
                    let until = self
                        .idle_until
                        .take()
                        .unwrap_or(now + self.cfg.keep_alive_timeout);
                    // Nothing is buffered here (`buf` is empty, a plain stream keeps
                    // no bytes of its own); what the kernel holds wakes the park at once.
                    let park_at =
                        Some(now + crate::park::PARK_AFTER).filter(|&at| self.may_park && at < until);
                    let read = read_into(self.stream, &mut self.chunk, &mut self.buf);
                    tokio::select! {
                        r = timeout_at(park_at.unwrap_or(until), read) => match r {
                            Ok(Ok(n)) if n > 0 => {
                                suspect |= std::mem::replace(&mut self.last_full, n >= READ_CHUNK);
                                continue;
                            }
                            Err(_) if park_at.is_some() => {
                                self.parked = Some(until);
                                return Ok(None);
                            }
                            _ => return Ok(None),
                        },
                        () = wait_shutdown(self.shutdown) => return Ok(None),
                    }
                }
            };
            match timeout_at(
                deadline.tokio_at(),
                read_into(self.stream, &mut self.chunk, &mut self.buf),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => {
                    suspect |= std::mem::replace(&mut self.last_full, n >= READ_CHUNK);
                    deadline.received(n);
                }
                Ok(_) => return Ok(None),
                Err(_) => return Err(Response::error(408, "request head not received in time")),
            }
        }
    }

    /// Serve one routed request whose head starts the buffer.
    async fn handle(&mut self, site: &Site, head: &Head) -> Step {
        self.observer.started(site);
        self.requests += 1;
        self.body_timeout = site.body_timeout;
        let started = std::time::SystemTime::now();
        let t0 = std::time::Instant::now();
        self.last = None;
        let step = self.handle_inner(site, head).await;
        if let Some((status, bytes)) = self.last.take() {
            let req = &head.request;
            self.observer.completed(&Completed {
                site,
                method: req.method.as_str(),
                target: &req.target,
                minor: head.minor,
                status,
                bytes,
                started,
                duration: t0.elapsed(),
                referer: req.headers.referer.as_deref(),
                user_agent: req.headers.user_agent.as_deref(),
            });
        }
        step
    }

    async fn handle_inner(&mut self, site: &Site, head: &Head) -> Step {
        // A script is chosen before the body is read; it gets the header list, parsed
        // again from the head (a vhost without CGI never looks).
        // Plain HTTP for a vhost that redirects to HTTPS: the redirect, never a script.
        let redirect = if site.https.redirects() && !self.stream.is_tls() {
            handler::https::redirect(site, &head.request)
        } else {
            None
        };
        let script = if site.cgi.is_off() || redirect.is_some() {
            None
        } else {
            handler::cgi::select(site, &head.request)
        };
        let fields = match &script {
            Some(Ok(_)) => handler::cgi::env::fields(&self.buf[..head.len], self.cfg.limit_request_head),
            _ => Vec::new(),
        };
        self.buf.drain(..head.len);
        let head_only = head.request.method == Method::Head;
        let framing = match &head.framing {
            Ok(f) => *f,
            Err(e) => return self.finish(Response::error(400, e), head_only).await,
        };
        let mut response = match (redirect, script) {
            (Some(redirect), _) => redirect,
            (None, Some(Ok(script))) => return self.cgi(site, head, framing, script, fields).await,
            (None, Some(Err(response))) => response,
            (None, None) => handler::respond(site, &head.request),
        };
        if self.stream.is_tls() {
            handler::https::add_hsts(site, &mut response);
        }
        let mut close = drops_connection(response.status);
        let mut keep = self.may_keep(site, head) && !close;
        if head.expect_other {
            // RFC 9110 §10.1.1: an expectation we cannot meet. Its body (if any) is
            // never read, so the connection cannot continue past it.
            let e = Response::error(417, "only Expect: 100-continue is supported");
            return if framing.has_body() || !keep {
                self.finish(e, head_only).await
            } else {
                self.answer(e, persist_of(head), head_only).await
            };
        }
        // Apache's LimitRequestBody for every request, not only a script's: a declared
        // length over it is refused before a byte of the body is read.
        let limit = site.cgi.body_limit;
        if let (true, false, crate::h1::request::Framing::Length(n)) = (limit > 0, close, framing) {
            if n > limit {
                let e = DiscardError::OverLimit(limit);
                return self.finish(Response::error(413, e), head_only).await;
            }
        }
        if framing.has_body() && !close {
            if head.expect_continue && response.status >= 400 {
                // The client waits for our word before sending the body: answer now and
                // close, since whether it then sends the body is unknowable.
                keep = false;
            } else {
                if head.expect_continue {
                    if let Err(e) = response::write_continue(self.stream).await {
                        tracing::debug!(peer = ?self.peer(), error = %e, "writing 100 Continue");
                        return Step::Close;
                    }
                }
                match self.discard(framing, limit).await {
                    Ok(()) => {}
                    Err(DiscardError::TooLarge) => keep = false,
                    Err(e @ DiscardError::OverLimit(_)) => {
                        // A chunked body that passed the limit: the rest is not read.
                        return self.finish(Response::error(413, e), head_only).await;
                    }
                    Err(DiscardError::Framing(e)) => response = Response::error(400, e),
                    Err(DiscardError::Timeout) => response = Response::error(408, DiscardError::Timeout),
                    Err(DiscardError::Closed) => return Step::Close,
                }
                close = drops_connection(response.status);
            }
        }
        if !keep || close {
            return self.finish(response, head_only).await;
        }
        self.answer(response, persist_of(head), head_only).await
    }

    /// Whether the connection may stay open after this request: the client wants it,
    /// keep-alive is on, and `keep_alive_max_requests` is not reached (the last one
    /// gets `Connection: close`).
    fn may_keep(&self, site: &Site, head: &Head) -> bool {
        head.wants_keep_alive()
            && !self.cfg.keep_alive_timeout.is_zero()
            && (site.max_requests == 0 || self.requests < site.max_requests)
    }

    /// Write `response` and decide what follows: the next request, or a close.
    async fn answer(&mut self, response: Response, persist: Persist, head_only: bool) -> Step {
        match self.send(response, persist, head_only).await {
            Ok(true) => Step::Next,
            Ok(false) if self.buf.is_empty() && self.stream.nothing_pending() => Step::Close,
            Ok(false) => self.close().await,
            Err(()) => Step::Close,
        }
    }

    /// Write a last response with `Connection: close`, then close.
    async fn finish(&mut self, response: Response, head_only: bool) -> Step {
        let clean = response.status < 400 && self.buf.is_empty();
        if self.send(response, Persist::Close, head_only).await.is_ok() {
            if clean && self.stream.nothing_pending() {
                return Step::Close;
            }
            self.close().await;
        }
        Step::Close
    }

    /// The peer address, for log lines only (a syscall, so not on the request path).
    fn peer(&self) -> Option<SocketAddr> {
        match self.observer.addresses() {
            Some((peer, _)) => Some(peer),
            None => self.stream.peer_addr(),
        }
    }

    /// The peer and local addresses, once per connection (a gateway request's
    /// meta-variables): the hand-off's (a PROXY header's when there was one), else
    /// the socket's.
    fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        *self.addrs.get_or_init(|| match self.observer.addresses() {
            Some((peer, local)) => (Some(peer), Some(local)),
            None => (self.stream.peer_addr(), self.stream.local_addr()),
        })
    }

    /// Write `response`, closing instead of keeping alive if shutdown has begun.
    /// `Ok(kept)` tells whether the response allowed another request.
    async fn send(&mut self, response: Response, mut persist: Persist, head_only: bool) -> Result<bool, ()> {
        if self.shutting_down() {
            persist = Persist::Close;
        }
        if response.status >= 500 {
            tracing::warn!(status = response.status, reason = %response.reason, peer = ?self.peer(), "request failed");
        } else if response.status >= 400 {
            tracing::info!(status = response.status, reason = %response.reason, peer = ?self.peer(), "request refused");
        }
        let bytes = response.body_len(head_only);
        let status = response.status;
        self.last = Some((status, bytes));
        self.observer.answering(response.status, bytes);
        match response::write(self.stream, response, persist, head_only).await {
            Ok(sent) => {
                // A stream's length is known only now (for the access log).
                self.last = Some((status, sent));
                Ok(persist != Persist::Close)
            }
            Err(e) => {
                tracing::info!(peer = ?self.peer(), error = %e, "response not completed");
                Err(())
            }
        }
    }

    /// Half-close and linger: read and drop input until the client closes, briefly.
    async fn close(&mut self) -> Step {
        linger::close(self.stream, &mut self.chunk, LINGER).await;
        Step::Close
    }

    /// Read and drop one request body, leaving the buffer at the next request; more
    /// than `limit` bytes of it (0: no limit of its own) is [`DiscardError::OverLimit`].
    async fn discard(&mut self, framing: Framing, limit: u64) -> Result<(), DiscardError> {
        let to_error = |e| match e {
            BodyError::TooLarge => DiscardError::TooLarge,
            e => DiscardError::Framing(e),
        };
        let mut body = Discard::new(framing, self.cfg.limit_request_head).map_err(to_error)?;
        let mut deadline = self.body_timeout.start();
        loop {
            let used = body.feed(&self.buf).map_err(to_error)?;
            self.buf.drain(..used);
            if limit > 0 && body.received() > limit {
                return Err(DiscardError::OverLimit(limit));
            }
            if body.is_done() {
                return Ok(());
            }
            let read = read_into(self.stream, &mut self.chunk, &mut self.buf);
            match timeout_at(deadline.tokio_at(), read).await {
                Ok(Ok(n)) if n > 0 => deadline.received(n),
                Ok(_) => return Err(DiscardError::Closed),
                Err(_) => return Err(DiscardError::Timeout),
            }
        }
    }
}

/// How a response that keeps the connection says so.
fn persist_of(head: &Head) -> Persist {
    if head.minor == 0 {
        Persist::KeepAlive10
    } else {
        Persist::KeepAlive
    }
}

/// The read buffer, allocated on first use.
fn chunk_of(c: &mut Vec<u8>) -> &mut [u8] {
    if c.is_empty() {
        c.resize(READ_CHUNK, 0);
    }
    c
}

/// Read at most one chunk and append it to `buf`. Cancel-safe. Plain TCP reads into
/// the thread's scratch buffer once the socket is readable, so a connection waiting
/// for bytes holds no read buffer; TLS reads through `chunk`.
async fn read_into(stream: &mut Transport, chunk: &mut Vec<u8>, buf: &mut Vec<u8>) -> io::Result<usize> {
    let (Transport::Plain(s) | Transport::Shared(s)) = stream else {
        let chunk = chunk_of(chunk);
        let n = stream.read(chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        return Ok(n);
    };
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    loop {
        s.readable().await?;
        let r: io::Result<usize> = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < READ_CHUNK {
                scratch.resize(READ_CHUNK, 0);
            }
            let n = crate::transport::try_recv(s, &mut scratch[..READ_CHUNK])?;
            buf.extend_from_slice(&scratch[..n]);
            Ok(n)
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Resolves once an immediate stop is requested; never, if the sender is gone without
/// asking. A graceful stop lets an idle connection bring its next request.
async fn wait_shutdown(rx: &mut watch::Receiver<Stop>) {
    loop {
        if *rx.borrow_and_update() == Stop::Now {
            return;
        }
        if rx.changed().await.is_err() {
            if *rx.borrow() == Stop::Now {
                return;
            }
            std::future::pending::<()>().await;
        }
    }
}
