//! The processor's HTTP/2 protocol, on a TLS connection whose ALPN chose `h2`: hyper's
//! HTTP/2 server (`hyper::server::conn::http2`) does the framing, HPACK, flow control
//! and the stream and reset limits; each stream is handed to [`stream`], which routes
//! it like a request of HTTP/1.1 over TLS ([`crate::route::TlsRouter`]: another vhost's
//! host gets 421) and answers it with the same handlers (static files, CGI, FastCGI).
//!
//! hyper owns the decrypted connection to its end: that is fine here because a TLS
//! connection is never handed back to a multiplexer (a request for another environment
//! is answered 421 and the browser retries on a new connection).
//!
//! Limits (`[server] http2*`): concurrent streams, header list size (HPACK-decoded, so a
//! CONTINUATION flood ends at it), stream and connection windows, and the two reset
//! budgets that end a rapid-reset flood with GOAWAY. An idle connection (no stream
//! open) is closed with GOAWAY after `keep_alive_timeout` (`request_head_timeout`
//! before its first stream), and on a processor's stop after its streams finish.

mod body;
mod io;
mod script;
mod stream;

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use common::control::Http2Boot;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::board::Board;
use crate::route::Sites;
use crate::session::{ConnConfig, Stop};
use crate::tls::TlsSites;

/// The ALPN protocol id of HTTP/2.
pub(crate) const ALPN: &[u8] = b"h2";

/// After GOAWAY with no stream open, how long the client has to close (or to answer
/// hyper's PING) before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Longest a stopped connection waits for its streams' tasks (each bounded by its own
/// timeouts) before it is counted out.
const STREAMS_GONE: Duration = Duration::from_secs(120);

/// The limits of every HTTP/2 connection of this processor.
#[derive(Debug, Clone)]
pub(crate) struct Http2Conf {
    boot: Http2Boot,
}

impl Http2Conf {
    pub fn new(boot: Http2Boot) -> Self {
        Self { boot }
    }

    fn builder(&self) -> hyper::server::conn::http2::Builder<Local> {
        let b = &self.boot;
        let mut builder = hyper::server::conn::http2::Builder::new(Local);
        builder
            .max_concurrent_streams(b.max_concurrent_streams)
            .max_header_list_size(b.max_header_list_size)
            .initial_stream_window_size(b.stream_window)
            .initial_connection_window_size(b.connection_window)
            .max_pending_accept_reset_streams(b.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(b.max_local_error_reset_streams);
        builder
    }
}

/// Runs hyper's stream tasks on this processor's local set (nothing here is `Send`).
#[derive(Clone, Copy)]
pub(crate) struct Local;

impl<F> hyper::rt::Executor<F> for Local
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// What the streams of one connection share.
pub(crate) struct Shared {
    pub sites: Rc<Sites>,
    /// For whether the certificate presented covers a host of another of our vhosts.
    pub tls: Rc<TlsSites>,
    pub cfg: Rc<ConnConfig>,
    pub board: Rc<Board>,
    /// The vhost whose certificate the handshake presented, and how it was routed.
    pub vhost: u32,
    pub by_default: bool,
    /// The ClientHello's server name, lower-cased.
    pub sni: Option<String>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Requests answered 421.
    pub misdirected: Cell<u64>,
    /// Streams being answered now, streams begun, and since when none is open.
    active: Cell<usize>,
    begun: Cell<u64>,
    idle_since: Cell<Instant>,
    /// Told when the last open stream ends (or the last stream allowed begins).
    went_idle: Notify,
    /// The connection's vhost's `keep_alive_max_requests` (0: unlimited): streams
    /// before GOAWAY, as nginx's `keepalive_requests` for HTTP/2.
    max_requests: u64,
    /// The last host routed on this connection and where it went (`None`: 421):
    /// the streams of a connection mostly name one host, and the answer for a host
    /// does not change while the connection lives.
    pub(super) last_route: std::cell::RefCell<Option<(Option<String>, Option<u32>)>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sites: Rc<Sites>,
        tls: Rc<TlsSites>,
        cfg: Rc<ConnConfig>,
        board: Rc<Board>,
        vhost: u32,
        by_default: bool,
        sni: Option<String>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Self {
        let max_requests = sites.by_vhost(vhost).map_or(0, |s| s.max_requests);
        Self {
            sites,
            tls,
            cfg,
            board,
            vhost,
            by_default,
            sni,
            peer,
            local,
            misdirected: Cell::new(0),
            active: Cell::new(0),
            begun: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            went_idle: Notify::new(),
            max_requests,
            last_route: std::cell::RefCell::new(None),
        }
    }
}

/// Counts a stream open from its request to the end of its answer (or its reset).
pub(crate) struct Open(Rc<Shared>);

impl Open {
    fn new(shared: Rc<Shared>) -> Self {
        shared.active.set(shared.active.get() + 1);
        shared.begun.set(shared.begun.get() + 1);
        if shared.max_requests != 0 && shared.begun.get() >= shared.max_requests {
            // The connection loop sends GOAWAY once woken.
            shared.went_idle.notify_one();
        }
        Open(shared)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let s = &self.0;
        let n = s.active.get().saturating_sub(1);
        s.active.set(n);
        if n == 0 {
            s.idle_since.set(Instant::now());
            s.went_idle.notify_one();
        }
    }
}

/// Serves an HTTP/2 connection until the client ends it, it has been idle too long, or
/// the processor stops (then GOAWAY, and its open streams finish).
pub(crate) async fn serve(
    session: TlsStream<TcpStream>,
    shared: Rc<Shared>,
    conf: &Http2Conf,
    stop: &mut watch::Receiver<Stop>,
) {
    let for_streams = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let open = Open::new(for_streams.clone());
        async move { Ok::<_, Infallible>(stream::serve(open, req).await) }
    });
    let io = io::Coalesce::new(session);
    let conn = conf
        .builder()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    let mut stop_open = true;
    loop {
        let spent = shared.max_requests != 0 && shared.begun.get() >= shared.max_requests;
        if !closing && (spent || *stop.borrow() != Stop::Run) {
            conn.as_mut().graceful_shutdown();
            closing = true;
            shared.idle_since.set(Instant::now().max(shared.idle_since.get()));
        }
        let idle = shared.active.get() == 0;
        // Closing: from the later of GOAWAY and the last stream's end.
        let grace = shared.idle_since.get() + CLOSE_GRACE;
        let idle_for = if shared.begun.get() == 0 {
            shared.cfg.request_head_timeout
        } else {
            shared.cfg.keep_alive_timeout
        };
        let deadline = shared.idle_since.get() + idle_for;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %shared.peer, "HTTP/2 connection ended: {e}");
                }
                break;
            }
            () = tokio::time::sleep_until(deadline), if idle && !closing => {
                if shared.active.get() == 0 {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    shared.idle_since.set(Instant::now());
                }
            }
            () = tokio::time::sleep_until(grace), if idle && closing => {
                tracing::debug!(peer = %shared.peer, "HTTP/2 client did not close after GOAWAY; dropped");
                break;
            }
            () = shared.went_idle.notified(), if !idle => {}
            r = stop.changed(), if stop_open && !closing => {
                if r.is_err() {
                    stop_open = false;
                }
            }
        }
    }
    // hyper is done with the connection; stream tasks still answering (a script that
    // has not finished) end as their bodies find no reader.
    let wait = async {
        while shared.active.get() > 0 {
            shared.went_idle.notified().await;
        }
    };
    let _ = tokio::time::timeout(STREAMS_GONE, wait).await;
}
