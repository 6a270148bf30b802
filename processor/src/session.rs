//! What a connection of any protocol shares with the serve loop: how it should stop,
//! its limits and timeouts, how later requests are routed, who is told about each
//! request, and how it ended.

use std::time::Duration;

use crate::handler::Site;

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

/// The `minor` of a request that came over HTTP/2.
pub const HTTP2: u8 = 20;

/// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`, for a request's `minor`.
pub fn protocol(minor: u8) -> &'static str {
    match minor {
        0 => "HTTP/1.0",
        HTTP2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// One finished request, for the scoreboard and the access log.
pub struct Completed<'a> {
    pub site: &'a Site,
    pub method: &'a str,
    pub target: &'a str,
    /// HTTP/1.x minor version ([`HTTP2`] for HTTP/2).
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
    /// The connection's client and destination addresses as the multiplexer handed
    /// them off (a PROXY header's when the listener reads one); `None`: ask the socket.
    fn addresses(&self) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        None
    }
    /// A routed request begins (its head is complete).
    fn started(&self, site: &Site);
    /// A response is about to be written: count it now, so that a client that has its
    /// answer already sees it counted by the next scrape.
    fn answering(&self, _status: u16, _body_bytes: u64) {}
    /// It was answered (or failed while answering).
    fn completed(&self, done: &Completed<'_>);
    /// A request to a FastCGI backend begins: counted, and in flight until
    /// [`Self::fastcgi_done`] (called by [`FastcgiRequest`]'s drop).
    fn fastcgi_started(&self) {}
    /// That request is over, and how it failed if it did.
    fn fastcgi_done(&self, _failure: Option<FastcgiFailure>) {}
}

/// How a FastCGI request failed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastcgiFailure {
    /// 502, or a broken answer after its header block.
    BadGateway,
    /// `fastcgi_timeout`: 504, or the connection closed after the header block.
    Timeout,
}

/// A FastCGI request in flight: counted in when made, out when dropped, on every way
/// out (a panic's unwinding included), with the failure set in `failure` by then.
pub struct FastcgiRequest<'a> {
    observer: &'a dyn Observer,
    pub failure: std::rc::Rc<std::cell::Cell<Option<FastcgiFailure>>>,
}

impl<'a> FastcgiRequest<'a> {
    pub fn start(observer: &'a dyn Observer) -> Self {
        observer.fastcgi_started();
        Self {
            observer,
            failure: Default::default(),
        }
    }

    /// Records `failure` unless one is recorded already.
    pub fn fail(&self, failure: FastcgiFailure) {
        if self.failure.get().is_none() {
            self.failure.set(Some(failure));
        }
    }
}

impl Drop for FastcgiRequest<'_> {
    fn drop(&mut self) {
        self.observer.fastcgi_done(self.failure.get());
    }
}

/// An observer that does nothing (tests).
pub struct NoObserver;

impl Observer for NoObserver {
    fn started(&self, _: &Site) {}
    fn completed(&self, _: &Completed<'_>) {}
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
    /// `limit_request_line`, `limit_request_fields`, `limit_request_field_size`
    /// (its `head` is replaced by `limit_request_head`: see [`ConnConfig::limits`]).
    pub head_limits: common::head::Limits,
    /// `request_head_timeout` with its rate, for every head read here.
    pub head_timeout: common::http::rate::RateTimeout,
}

impl ConnConfig {
    /// Every limit on a head.
    pub fn limits(&self) -> common::head::Limits {
        common::head::Limits {
            head: self.limit_request_head,
            ..self.head_limits
        }
    }
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
    /// Idle between requests with nothing unread or unsent, its loop allowed to end
    /// there ([`crate::h1::Resume::may_park`]): park the connection.
    Idle {
        /// Requests served on it so far.
        requests: u64,
        /// Its keep-alive deadline.
        until: tokio::time::Instant,
    },
}
