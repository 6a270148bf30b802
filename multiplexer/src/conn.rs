//! One client connection in the multiplexer: read the request head within the limits,
//! route it by host, and hand the socket with the bytes read to the environment's pool.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::time::Duration;

use common::control::VhostBoot;
use common::handoff::{self, HandoffError, Meta};
use common::head::{self, head_end, HeadError, Limits, MAX_HEADERS};
use common::http::rate::RateTimeout;
use common::panics::Release;
use common::scoreboard::{slot, table};
use common::vhost::HostTable;
use tokio::sync::watch;

use crate::pool::Refusal;
use crate::{snapshot, status};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::proxy::{self, Tag};
use crate::respond;
use crate::Shared;

/// Where a connection comes from and goes to, as routing sees it: the client, the
/// local (destination) address, and the tag when both came from a PROXY header.
pub type Origin = (SocketAddr, SocketAddr, Option<Tag>);

/// What reading the head came to.
enum Head {
    /// The head is complete; route on it.
    Complete(usize),
    /// Answer with this status.
    Fail(u16, String),
    /// The client went away.
    Gone,
}

/// Finds the end of a head that grows, examining each byte about once: a client
/// that trickles its head one byte at a time costs linear work, not quadratic.
#[derive(Default)]
struct HeadScan {
    /// Length of the complete empty lines before the request line seen so far.
    blank: usize,
    /// Where the request line starts, once a byte of it has arrived.
    start: Option<usize>,
    /// Bytes of the buffer already searched without finding the end.
    scanned: usize,
    /// Bytes examined in all (for tests).
    examined: usize,
}

impl HeadScan {
    /// The end of the head in `window` (which only ever grows), if it is there: what
    /// [`head_end`] finds, from the new bytes only.
    fn find(&mut self, window: &[u8]) -> Option<usize> {
        let start = match self.start {
            Some(start) => start,
            None => {
                // Empty lines before the request line are skipped as the parser skips
                // them; a lone CR at the end may still become one.
                let more = head::leading_blank(&window[self.blank..]);
                self.examined += more + 1;
                self.blank += more;
                let rest = &window[self.blank..];
                if rest.is_empty() || rest == b"\r" {
                    return None;
                }
                self.scanned = self.blank;
                *self.start.insert(self.blank)
            }
        };
        self.examined += window.len() - self.scanned.saturating_sub(3).max(start);
        let end = head::head_end_from(window, start, self.scanned);
        self.scanned = window.len();
        end
    }
}

/// Waits until `stream` is readable, then reads at most `want` bytes into the thread's
/// scratch buffer and appends them to `buf`: a connection that waits for its next bytes
/// holds no buffer beyond what it already sent (a slowloris that sent half a head costs
/// that half, not `limit_request_head`).
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>, want: usize) -> std::io::Result<usize> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    loop {
        stream.readable().await?;
        let r: std::io::Result<usize> = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < want {
                scratch.resize(want, 0);
            }
            // Not `try_read`: a processor's copy of a handed-back socket may have
            // cleared O_NONBLOCK ([`crate::dontwait`]).
            let n = stream.try_io(tokio::io::Interest::READABLE, || {
                crate::dontwait::recv(stream, &mut scratch[..want], 0)
            })?;
            buf.extend_from_slice(&scratch[..n]);
            Ok(n)
        });
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, limit: usize, timeout: RateTimeout) -> Head {
    let mut scan = HeadScan::default();
    // mod_reqtimeout's rule: the deadline moves with the bytes that arrive.
    let mut deadline = timeout.start();
    deadline.received(buf.len());
    let read = async {
        loop {
            let window = &buf[..buf.len().min(limit)];
            if let Some(end) = scan.find(window) {
                return Head::Complete(end);
            }
            if buf.len() >= limit {
                let e = head::too_large(buf, limit);
                return Head::Fail(e.status(), e.to_string());
            }
            let want = limit - buf.len();
            let r = tokio::time::timeout_at(deadline.tokio_at(), read_some(stream, buf, want)).await;
            let n = match r {
                Err(_) => return Head::Fail(408, "request head timeout".to_owned()),
                Ok(Ok(n)) => n,
                Ok(Err(_)) => return Head::Gone,
            };
            deadline.received(n);
            if n == 0 {
                return Head::Gone;
            }
        }
    };
    read.await
}

/// What to do with a complete head.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Hand the connection to `env`'s pool for `vhost`.
    Route { vhost: u32, env: usize },
    /// The server-status page, in this format, for this host name.
    Status { format: status::Format, host: String },
    /// Answer with this status.
    Fail(u16, String),
}

/// Parses and routes a complete head with the parser the processor uses too (one head,
/// one answer): a pure function of the host table, the vhosts, the status path, the
/// head limit and the head. The first vhost is the default for a missing or unknown
/// host.
#[cfg(test)]
fn decide(hosts: &HostTable, vhosts: &[VhostBoot], status_path: &str, limit: usize, head: &[u8]) -> Decision {
    decide_with(hosts, vhosts, status_path, &Limits::head_only(limit), head)
}

/// [`decide`] within all the head limits (`limit_request_line` …).
fn decide_with(
    hosts: &HostTable,
    vhosts: &[VhostBoot],
    status_path: &str,
    limits: &Limits,
    head: &[u8],
) -> Decision {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = match head::parse_with(head, &mut headers, limits) {
        Ok(Some(req)) => req,
        // `head` ends with its blank line: a partial parse is a malformed head.
        Ok(None) => return Decision::Fail(400, HeadError::Malformed.to_string()),
        Err(e) => return Decision::Fail(e.status(), e.to_string()),
    };
    let (path, query) = match head::path_and_query(req.target).split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (head::path_and_query(req.target), None),
    };
    if path == status_path && matches!(req.method, "GET" | "HEAD") {
        return Decision::Status {
            format: status::parse_query(query),
            host: req.host.unwrap_or("localhost").to_string(),
        };
    }
    let vhost = req
        .host
        .and_then(|h| hosts.lookup(h))
        .map(|i| i as u32)
        .unwrap_or(0);
    match vhosts.get(vhost as usize) {
        Some(v) => Decision::Route {
            vhost,
            env: v.env as usize,
        },
        None => Decision::Fail(503, "vhost has no environment".to_owned()),
    }
}

/// [`decide`] with this multiplexer's tables.
fn decide_in(shared: &Shared, head: &[u8]) -> Decision {
    decide_with(
        &shared.hosts,
        &shared.pools.vhosts,
        &shared.status_path,
        &shared.head_limits,
        head,
    )
}

/// The fast path for a fresh connection, outside the reactor: one non-blocking read,
/// and when it holds a whole head for a pool with room, the hand-off, without ever
/// registering the socket with epoll. Anything else (no data yet, a partial head, an
/// error to answer, a full pool, the status page) continues on the async path with the
/// bytes read. Runs in the accept loop itself: no task is spawned for a connection that
/// is handed off at once.
pub fn accepted(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    tag: Option<Tag>,
    shared: &Rc<Shared>,
    inflight: &Rc<()>,
    per_ip: crate::per_ip::Slot,
) {
    // One read into a reused buffer: the common case hands off without allocating.
    let fallback = first_bytes(
        &stream,
        shared.limit_request_head,
        libc::MSG_DONTWAIT,
        |n, buf| {
            let got: &[u8] = match n {
                0 => return None,
                n if n < 0 => &[],
                n => &buf[..n as usize],
            };
            if try_hand_off(got, &stream, (peer, local, tag), 0, shared) {
                return None;
            }
            Some(got.to_vec())
        },
    );
    let Some(buf) = fallback else { return };
    // Bounded: over `max_clients` connections in the works, this one is closed.
    let Some(held) = shared.held.take() else { return };
    let shared = shared.clone();
    // Taken now, before the task first runs, so a reload's quiesce check sees it.
    let token = (inflight.clone(), shared.from_listeners.clone(), active(&shared));
    tokio::task::spawn_local(async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => handle(stream, buf, (peer, local, tag), false, shared).await,
            Err(e) => warn!(%peer, "registering a connection: {e}"),
        }
        drop((token, held, per_ip));
    });
}

/// One non-blocking `recv` of at most `len` bytes with `flags` (the plain fast path
/// reads, the TLS one peeks) into a buffer reused per thread, handed to `f` with the
/// call's result (`n < 0`: an error, `0`: end of file). The fast paths of both
/// listener kinds allocate nothing per connection this way.
pub(crate) fn first_bytes<R>(
    stream: &std::net::TcpStream,
    len: usize,
    flags: libc::c_int,
    f: impl FnOnce(isize, &[u8]) -> R,
) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        buf.resize(len, 0);
        // SAFETY: `buf` is a valid, writable buffer of its length for the call; with
        // MSG_DONTWAIT it never blocks (and MSG_PEEK, when given, consumes nothing).
        let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        f(n, &buf)
    })
}

/// The fast path's hand-off: a whole head within `limit_request_head`, routed to a
/// pool with room, sent at once (a fresh connection's first read, a hand-back's
/// payload, `flags` [`handoff::flags::VISITED`]). False: nothing was sent; the caller
/// goes on the async path.
pub(crate) fn try_hand_off(
    buf: &[u8],
    stream: &std::net::TcpStream,
    from: Origin,
    flags: u8,
    shared: &Shared,
) -> bool {
    // A hand-back's payload may be longer than the limit: the head must end within it.
    let window = &buf[..buf.len().min(shared.limit_request_head)];
    let Some(end) = head_end(window) else { return false };
    let Decision::Route { vhost, env } = decide_in(shared, &buf[..end]) else {
        return false;
    };
    if !shared.pools.has_room(env, vhost as usize) {
        return false;
    }
    let (peer, local, tag) = from;
    let meta = proxy::meta(flags, vhost, peer, local, tag);
    let sock = &shared.env_socks[env];
    match handoff::send(sock.as_fd(), &meta, buf, stream.as_fd()) {
        Ok(()) => {
            shared
                .pools
                .table
                .add(shared.pools.env_word(env, table::env::HANDOFFS), 1);
            shared.pools.raise(env);
            true
        }
        Err(HandoffError::Packet(e)) if e.is_would_block() => false,
        Err(e) => {
            warn!(environment = shared.env_name(env), "hand-off failed: {e}");
            false
        }
    }
}

/// Serves one connection: `buf` holds bytes already read (a hand-back's payload);
/// `handed_back` when a processor sent it.
/// Counts a connection this multiplexer is working on in its slot's `ACTIVE_CONNS`
/// until the token is dropped: taken when the connection is taken (before its task
/// first runs), so the supervisor never sees an idle multiplexer that is about to hand
/// a connection to a pool (a reload closes the old pools on that), and it starts
/// another multiplexer when every one is loaded.
pub fn active(shared: &Rc<Shared>) -> Release<impl FnOnce()> {
    shared.own.add(slot::ACTIVE_CONNS, 1);
    let shared = shared.clone();
    Release::new(move || shared.own.sub(slot::ACTIVE_CONNS, 1))
}

pub async fn handle(stream: TcpStream, buf: Vec<u8>, from: Origin, handed_back: bool, shared: Rc<Shared>) {
    handle_counted(stream, buf, from, handed_back, &shared).await;
}

async fn handle_counted(
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    from: Origin,
    handed_back: bool,
    shared: &Rc<Shared>,
) {
    let (peer, local, tag) = from;
    let limit = shared.limit_request_head;
    let end = match read_head(&mut stream, &mut buf, limit, shared.head_timeout).await {
        Head::Complete(end) => end,
        Head::Fail(status, why) => return Box::pin(respond::error(stream, status, &why, peer, None)).await,
        Head::Gone => {
            if !buf.is_empty() {
                debug!(%peer, bytes = buf.len(), "client closed before its request head was complete");
            }
            return;
        }
    };
    // Boxed: the state of what follows (routing, waiting for room, the hand-off) is
    // allocated only once a head is complete, not held by every connection still
    // reading one.
    Box::pin(route(
        stream,
        buf,
        end,
        (
            Client {
                peer,
                local,
                handed_back,
                proxied: tag.is_some(),
            },
            tag,
        ),
        shared,
    ))
    .await
}

/// Routes a complete head (`buf[..end]`) and hands the connection off or answers it.
async fn route(
    stream: TcpStream,
    buf: Vec<u8>,
    end: usize,
    (from, tag): (Client, Option<Tag>),
    shared: &Rc<Shared>,
) {
    let Client { peer, local, .. } = from;
    let (vhost, env) = match decide_in(shared, &buf[..end]) {
        Decision::Route { vhost, env } => (vhost, env),
        Decision::Fail(status, why) => return respond::error(stream, status, &why, peer, None).await,
        Decision::Status { format, host } => {
            return serve_status(stream, &buf[..end], format, &host, from, shared).await;
        }
    };
    let retry = shared.pools.wait_timeout.as_secs().max(1) as u32;
    match shared.pools.admit(env, vhost as usize).await {
        Ok(()) => {}
        Err(Refusal::Saturated) => {
            let why = format!("environment {} saturated", shared.env_name(env));
            return respond::error(stream, 503, &why, peer, Some(retry)).await;
        }
        Err(Refusal::VhostLimit) => {
            let why = format!("vhost {} over max_clients_vhost", vhost_name(shared, vhost));
            return respond::error(stream, 503, &why, peer, Some(retry)).await;
        }
    }
    let visited = if from.handed_back {
        handoff::flags::VISITED
    } else {
        0
    };
    let meta = proxy::meta(visited, vhost, peer, local, tag);
    match hand_off(shared, env, &meta, &buf, &stream).await {
        Ok(()) => shared
            .pools
            .table
            .add(shared.pools.env_word(env, table::env::HANDOFFS), 1),
        Err(e) => {
            shared
                .pools
                .table
                .add(shared.pools.env_word(env, table::env::DROPPED_ERROR), 1);
            warn!(environment = shared.env_name(env), "hand-off failed: {e}");
            respond::error(stream, 503, "environment unavailable", peer, Some(retry)).await
        }
    }
}

fn vhost_name(shared: &Shared, vhost: u32) -> &str {
    shared
        .pools
        .vhosts
        .get(vhost as usize)
        .map(|v| v.server_name.as_str())
        .unwrap_or("?")
}

/// Where a status or metrics request came from.
struct Client {
    peer: SocketAddr,
    local: SocketAddr,
    /// Sent back by a processor: the socket was chosen by a tenant.
    handed_back: bool,
    /// The addresses are a PROXY header's: the socket is the proxy's.
    proxied: bool,
}

/// The one rule for the status page and the metrics ([`crate::access`]). A connection a
/// processor handed back is refused outright: a tenant can hand back its own end of a
/// connection to a root-owned socket it holds the other end of, making the "client"
/// look like root.
fn status_allowed(shared: &Shared, from: &Client) -> Result<(), String> {
    if from.handed_back {
        return Err("status refused: the connection was handed back by a processor".into());
    }
    if from.proxied {
        return shared.status_access.check_carried(from.peer, from.local);
    }
    shared.status_access.check(from.peer, from.local)
}

/// The server-status page, served by the multiplexer from the scoreboard (no tenant
/// process involved), to allowed clients only.
async fn serve_status(
    stream: TcpStream,
    head: &[u8],
    format: status::Format,
    host: &str,
    from: Client,
    shared: &Shared,
) {
    if let Err(why) = status_allowed(shared, &from) {
        return respond::error(stream, 403, &why, from.peer, None).await;
    }
    let snap = snapshot::take(&shared.pools, &shared.facts, host);
    let (body, content_type) = status::render(&snap, &format);
    let head_only = head.starts_with(b"HEAD ");
    respond::ok(stream, content_type, body.as_bytes(), head_only).await;
}

/// The Prometheus endpoint on `[status] metrics_listen`: `GET /metrics` only.
pub async fn metrics_loop(
    listener: tokio::net::TcpListener,
    shared: Rc<Shared>,
    mut stop: watch::Receiver<bool>,
    inflight: Rc<()>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let Ok((mut stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(held) = shared.held.take() else { continue };
        let shared = shared.clone();
        let token = inflight.clone();
        tokio::task::spawn_local(async move {
            let _held = held;
            let mut buf = Vec::new();
            let limit = shared.limit_request_head;
            let end = match read_head(&mut stream, &mut buf, limit, shared.head_timeout).await {
                Head::Complete(end) => end,
                Head::Fail(status, why) => return respond::error(stream, status, &why, peer, None).await,
                Head::Gone => return,
            };
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let path = match req.parse(&buf[..end]) {
                Ok(httparse::Status::Complete(_)) => req.path.unwrap_or("").split('?').next().unwrap_or(""),
                _ => return respond::error(stream, 400, "malformed request head", peer, None).await,
            };
            if path != "/metrics" {
                return respond::error(stream, 404, "not the metrics path", peer, None).await;
            }
            let Ok(local) = stream.local_addr() else { return };
            let from = Client {
                peer,
                local,
                handed_back: false,
                proxied: false,
            };
            if let Err(why) = status_allowed(&shared, &from) {
                return respond::error(stream, 403, &why, peer, None).await;
            }
            let snap = snapshot::take(&shared.pools, &shared.facts, "localhost");
            let body = status::prometheus(&snap);
            let head_only = req.method == Some("HEAD");
            respond::ok(
                stream,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
                head_only,
            )
            .await;
            drop(token);
        });
    }
}

/// Sends the connection to environment `env`'s pool, waiting a bounded time for room.
pub async fn hand_off(
    shared: &Shared,
    env: usize,
    meta: &Meta,
    payload: &[u8],
    stream: &TcpStream,
) -> Result<(), HandoffError> {
    let sock = &shared.env_socks[env];
    handoff::send_waiting(
        sock.as_fd(),
        meta,
        payload,
        stream.as_fd(),
        shared.handoff_timeout,
    )
    .await
}

#[cfg(test)]
mod tests;
