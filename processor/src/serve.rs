//! The processor's serve loop: take hand-offs from the environment's socket (at most
//! `max_connections` at once), serve each connection (the one-shot path, else HTTP/1.1
//! with [`crate::route`] deciding which later requests stay), pass hand-backs to the
//! multiplexers, park idle plain connections ([`crate::park`]) and resume them when
//! they are readable, and drain and stop on shutdown.

use common::http::rate::RateTimeout;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::bootfds::ProcessorFds;
use common::control::{AsyncChannel, FromChild, ProcessorBoot, ToChild};
use common::handoff::{self, HandoffError, Meta, NO_VHOST};
use common::vhost::HostTable;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, error, info, warn};

use crate::board::{Board, ConnObserver, Counted};
use crate::h1;
use crate::handler::cgi::CgiConf;
use crate::handler::fastcgi::FastcgiConf;
use crate::handler::https::Https;
use crate::handler::{Fallback, Site};
use crate::park::ParkSet;
use crate::recycle::{Recycle, Recycler};
use crate::route::{ConnRouter, Sites, TlsRouter, FOREIGN};
use crate::session::{ConnConfig, Outcome, Stop};
use crate::tls::{self, TlsSites};
use crate::transport::Transport;
use common::scoreboard::{self, slot};

/// Errors that stop a processor.
#[derive(Debug, Error)]
pub enum ProcessorError {
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error("control channel: {0}")]
    Control(#[from] common::control::ControlError),
    #[error("scoreboard slot: {0}")]
    Slot(#[from] common::scoreboard::ScoreboardError),
    #[error("park set: {0}")]
    Park(#[from] crate::park::ParkError),
}

/// How long a hand-back waits for room in the multiplexers' queue.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(5);
/// A site's `request_body_timeout` when the supervisor sent none (mod_reqtimeout's).
const BODY_TIMEOUT: RateTimeout = RateTimeout {
    initial_ms: 20_000,
    max_ms: 40_000,
    min_rate: 500,
};

/// Runs a processor (privileges already dropped) until told to stop.
/// Its fds were checked against its bootstrap by [`common::child::start`].
pub fn run(boot: ProcessorBoot, fds: ProcessorFds<OwnedFd>, control: OwnedFd) -> Result<(), ProcessorError> {
    // Every fd the reactor can hold reported in one `epoll_wait` (connections, backend
    // connections, the park set, the queue, the control channel, the hot files' inotify
    // instance, a few more): the hot-file cache relies on the inotify instance being
    // reported with the sockets that became readable after it (`hot/watch.rs`).
    let backends = boot.fastcgi.as_ref().map_or(0, |f| f.max_backends as usize);
    let events = (boot.max_connections as usize)
        .saturating_add(backends)
        .saturating_add(64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_io_events_per_tick(events)
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(boot, fds, control))
}

/// A parked connection: what its loop needs to go on (its socket is the park set's).
/// It keeps its connection slot and stays counted while parked.
struct Parked {
    permit: tokio::sync::OwnedSemaphorePermit,
    meta: Meta,
    counted: Counted,
    /// Requests served on it (`keep_alive_max_requests` counts across parks).
    requests: u64,
    /// Its keep-alive deadline.
    until: tokio::time::Instant,
    /// [`ConnRouter::into_default_host`]: allocated only for a connection whose first
    /// request was routed by default to a host not in the table.
    default_host: Option<Option<String>>,
}

/// What every connection task of this processor shares.
struct Ctx {
    sites: Rc<Sites>,
    tls: Rc<TlsSites>,
    http2: Rc<Option<crate::h2::Http2Conf>>,
    cfg: Rc<ConnConfig>,
    sock: Rc<AsyncFd<OwnedFd>>,
    env: Rc<String>,
    board: Rc<Board>,
    stop: watch::Receiver<Stop>,
    park: Rc<ParkSet<Parked>>,
}

/// One received hand-off, with the connection slot it may use.
struct Received {
    permit: tokio::sync::OwnedSemaphorePermit,
    meta: Meta,
    payload: Vec<u8>,
    fd: OwnedFd,
}

/// Waits for room and for the next hand-off. Cancel-safe: nothing is awaited after a
/// message has been taken off the socket.
async fn next_handoff(
    slots: &Arc<Semaphore>,
    sock: &AsyncFd<OwnedFd>,
    buf: &mut [u8],
    env: &str,
) -> Option<Received> {
    let permit = slots.clone().acquire_owned().await.ok()?;
    loop {
        let mut guard = sock.readable().await.ok()?;
        match handoff::recv(guard.get_inner().as_fd(), buf) {
            Ok((meta, payload, fd)) => {
                return Some(Received {
                    permit,
                    meta,
                    payload: payload.to_vec(),
                    fd,
                });
            }
            Err(HandoffError::Packet(e)) if e.is_would_block() => guard.clear_ready(),
            Err(HandoffError::Packet(common::seqpacket::PacketError::Closed { .. })) => return None,
            Err(e) => warn!(environment = env, "bad hand-off refused: {e}"),
        }
    }
}

async fn serve(
    boot: ProcessorBoot,
    fds: ProcessorFds<OwnedFd>,
    control: OwnedFd,
) -> Result<(), ProcessorError> {
    let ProcessorFds {
        log_pipe,
        env_socket: sock,
        slot: slot_fd,
        access_logs,
    } = fds;
    // On fds 1 and 2 since `common::child::start`.
    drop(log_pipe);
    let mut fds = access_logs.into_iter();
    let mut hosts = HostTable::new();
    for (name, site) in &boot.hosts {
        let site = *site as usize;
        if site < boot.sites.len() || site == FOREIGN {
            hosts.insert(name, site);
        }
    }
    let fastcgi = boot
        .fastcgi
        .as_ref()
        .map(|f| Arc::new(FastcgiConf::from_boot(f, &boot.environment)));
    // Read as the environment, in its jail, before any connection: a site whose files
    // cannot be loaded refuses its handshakes, the others serve.
    let (tls, tls_errors) = TlsSites::load(
        boot.sites
            .iter()
            .filter_map(|s| Some((s.vhost_id, s.server_name.as_str(), s.tls.as_ref()?))),
        boot.tls_ticket_seed.as_ref(),
        boot.http2.is_some(),
    );
    let http2 = Rc::new(boot.http2.clone().map(crate::h2::Http2Conf::new));
    for e in tls_errors {
        error!(environment = %boot.environment, "TLS: {e}; that site's handshakes are refused");
    }
    let tls = Rc::new(tls);
    let mut sites = Vec::new();
    let mut logs = Vec::new();
    for s in boot.sites {
        logs.push(
            s.access_log
                .and_then(|format| fds.next().map(|fd| (std::fs::File::from(fd), format))),
        );
        sites.push(Site {
            vhost_id: s.vhost_id,
            server_name: s.server_name,
            document_root: s.document_root,
            deny: s.deny,
            cgi: CgiConf::new(
                s.cgi.extensions,
                &s.cgi.dirs,
                Duration::from_secs(s.cgi.timeout_secs.max(1)),
                s.cgi.body_limit,
            )
            .with_fastcgi(fastcgi.clone()),
            index: s.index,
            fallback: s.fallback.as_deref().map(Fallback::new),
            https: Https::new(s.redirect_to_https, s.hsts_max_age),
            body_timeout: s.body_timeout.unwrap_or(BODY_TIMEOUT),
            max_requests: s.keep_alive_max_requests.unwrap_or(100),
        });
    }
    let vhost_ids: Vec<u32> = sites.iter().map(|s| s.vhost_id).collect();
    // The most fds one control message may bring: a `Logs` with one per site of this
    // environment (the supervisor never sends more), or the one `ErrorLog`.
    let max_control_fds = sites.len() + 1;
    let sites = Rc::new(Sites { sites, hosts });
    let cfg = Rc::new(ConnConfig {
        keep_alive_timeout: Duration::from_millis(boot.keep_alive_timeout_ms),
        request_head_timeout: Duration::from_millis(boot.request_head_timeout_ms),
        limit_request_head: boot.limit_request_head,
        head_limits: boot
            .head_limits
            .unwrap_or(common::head::Limits::head_only(boot.limit_request_head)),
        head_timeout: boot
            .head_timeout
            .unwrap_or(RateTimeout::fixed(Duration::from_millis(
                boot.request_head_timeout_ms,
            ))),
    });
    // Readable only: a hand-back taken by a multiplexer must not wake the whole pool.
    let sock = Rc::new(common::fds::async_fd_readable(sock)?);
    let max = boot.max_connections.max(1) as usize;
    let slots = Arc::new(Semaphore::new(max));
    // `true` once this processor stops taking connections (shutdown or recycling);
    // connections then finish their current request and close.
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    // Set by the board near and at max_requests_per_child.
    let (recycler, mut recycle_rx) = Recycler::new(boot.max_requests_per_child);

    let seg = scoreboard::Segment::map(&slot_fd, true)?;
    drop(slot_fd);
    seg.set(slot::PID, std::process::id() as u64);
    seg.set(slot::ROLE, slot::ROLE_PROCESSOR);
    seg.set(slot::ENV, boot.env_id as u64);
    seg.set(slot::CAPACITY, max as u64);
    seg.set(slot::GENERATION, boot.generation);
    seg.set(slot::STARTED_MS, scoreboard::now_ms());
    seg.set(slot::LAST_USED_MS, scoreboard::now_ms());
    seg.set(slot::SITES, vhost_ids.len() as u64);
    for (i, v) in vhost_ids.iter().enumerate() {
        seg.set(slot::site_word(i, slot::site::VHOST), *v as u64);
    }
    seg.set(slot::MAGIC, slot::MAGIC_VALUE);
    seg.set(slot::STATE, slot::READY);
    let board = Rc::new(Board::new(seg, &vhost_ids, logs, recycler));

    let mut chan = AsyncChannel::new(control)?;
    chan.send(&FromChild::Ready, &[])?;
    info!(
        environment = %boot.environment,
        pid = std::process::id(),
        uid = nix::unistd::getuid().as_raw(),
        "processor serving"
    );
    let env = Rc::new(boot.environment);
    let ctx = Rc::new(Ctx {
        sites,
        tls,
        http2,
        cfg,
        sock: sock.clone(),
        env: env.clone(),
        board: board.clone(),
        stop: stop_rx.clone(),
        park: ParkSet::new()?,
    });
    {
        let weak = Rc::downgrade(&ctx);
        let park = ctx.park.clone();
        let stop = stop_rx.clone();
        tokio::task::spawn_local(async move {
            park.run(stop, |fd, parked| {
                if let Some(ctx) = weak.upgrade() {
                    tokio::task::spawn_local(resumed(fd, parked, ctx));
                }
            })
            .await;
        });
    }

    let mut buf = vec![0u8; handoff::MAX_MESSAGE];
    // Whether to serve what is already queued before stopping (supervisor shutdown:
    // yes; recycling: no, the queue belongs to the rest of the pool).
    let mut drain_queue = false;
    // How connections stop once this loop ends.
    let mut how = Stop::Graceful;
    // Whether this processor asked for its successor (once).
    let mut announced = false;
    // Processors of the environment running, this one included (`ToChild::Peers`).
    let mut peers = 1u32;
    loop {
        match *recycle_rx.borrow_and_update() {
            Recycle::Now => break,
            Recycle::Soon => {
                if !announced {
                    announced = true;
                    if let Err(e) = chan.send(&FromChild::Recycling, &[]) {
                        warn!(environment = %env, "asking for a successor: {e}");
                    }
                }
                // Near the limit and another processor serves: with FastCGI, go now, so
                // that the two run side by side (neither keeping backend connections)
                // only briefly. Static files lose nothing while both run: serve on to
                // the limit, so recycling costs no extra processor starts.
                if peers > 1 && fastcgi.is_some() {
                    info!(
                        environment = %env,
                        "max_requests_per_child nearly reached and a successor is running: finishing and exiting"
                    );
                    break;
                }
            }
            Recycle::No => {}
        }
        tokio::select! {
            biased;
            r = recycle_rx.changed() => {
                if r.is_err() {
                    break;
                }
            }
            m = chan.recv::<ToChild>(max_control_fds) => match m {
                Ok((ToChild::Logs { vhosts }, files)) => board.reopen_logs(&vhosts, files),
                Ok((ToChild::Peers { processors }, _)) => {
                    peers = processors;
                    if let Some(f) = &fastcgi {
                        f.pool.set_shared(processors > 1);
                    }
                }
                Ok((ToChild::Shutdown, _)) => {
                    info!(environment = %env, "shutdown: draining");
                    drain_queue = true;
                    how = Stop::Now;
                    break;
                }
                Ok((ToChild::Drain, _)) => {
                    info!(environment = %env, "reload: serving what is queued, then stopping");
                    drain_queue = true;
                    break;
                }
                Ok((ToChild::Graceful, _)) => {
                    let _ = stop_tx.send(Stop::Graceful);
                }
                Ok((ToChild::Retire, _)) => {
                    info!(environment = %env, "retiring: finishing in-flight requests");
                    break;
                }
                // Never sent to a processor: its fds 1 and 2 stay its log pipe.
                Ok((other, _)) => warn!(environment = %env, "ignoring control message {other:?}"),
                Err(e) => {
                    warn!("control channel closed ({e}); stopping");
                    break;
                }
            },
            r = next_handoff(&slots, &sock, &mut buf, &env) => match r {
                Some(r) => start_connection(r, &ctx),
                None => {
                    // The queue's writers are gone: the supervisor is stopping (SIGTERM)
                    // or replacing this generation (reload); its message says which.
                    let next = tokio::time::timeout(Duration::from_secs(1), chan.recv::<ToChild>(0)).await;
                    if let Ok(Ok((ToChild::Shutdown, _))) = next {
                        how = Stop::Now;
                    }
                    info!(environment = %env, "queue closed: finishing in-flight requests");
                    break;
                }
            },
        }
    }
    board.slot.set(slot::STATE, slot::STOPPING);
    if let Some(f) = &fastcgi {
        f.pool.close();
    }
    let _ = stop_tx.send(how);
    if drain_queue {
        // The supervisor shut its end first, so this queue is complete: serve it.
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            match handoff::recv(sock.get_ref().as_fd(), &mut buf) {
                Ok((meta, payload, fd)) => {
                    let r = Received {
                        permit,
                        meta,
                        payload: payload.to_vec(),
                        fd,
                    };
                    start_connection(r, &ctx);
                }
                Err(HandoffError::Packet(_)) => break,
                Err(e) => warn!(environment = %env, "bad hand-off refused: {e}"),
            }
        }
    }
    // Wait for every connection to finish (each is bounded by its own timeouts).
    let _ = slots.acquire_many(max as u32).await;
    info!(environment = %env, "processor stopped");
    Ok(())
}

fn start_connection(r: Received, ctx: &Rc<Ctx>) {
    // Only multiplexers write to this end of the socketpair (processors' sends go the
    // other way), and they send accepted TCP sockets; the count of fds was checked on
    // receipt. A wrong kind of fd would only make this connection's I/O fail.
    let ctx = ctx.clone();
    tokio::task::spawn_local(async move {
        let Received {
            permit,
            meta,
            payload,
            fd,
        } = r;
        let mut stop = ctx.stop.clone();
        // Each boxed: a plain connection's task does not carry the (larger) state of
        // a TLS one.
        if meta.flags & handoff::flags::TLS != 0 {
            let conn = TlsConn {
                sites: ctx.sites.clone(),
                tls: ctx.tls.clone(),
                http2: ctx.http2.clone(),
                cfg: ctx.cfg.clone(),
                board: ctx.board.clone(),
            };
            Box::pin(tls_connection(fd, meta, &conn, &ctx.env, &mut stop)).await;
            drop(permit);
        } else {
            Box::pin(connection(fd, meta, payload, &ctx, permit)).await;
        }
    });
}

/// A parked connection turned readable: its loop again, where it stopped.
async fn resumed(fd: OwnedFd, parked: Parked, ctx: Rc<Ctx>) {
    let Parked {
        permit,
        meta,
        counted,
        requests,
        until,
        default_host,
    } = parked;
    let observer = ConnObserver::resume(&ctx.board, (meta.peer, meta.local), counted);
    let std_stream = std::net::TcpStream::from(fd);
    // As in `connection`: a kept copy may have cleared the flag while it was parked.
    if meta.flags & handoff::flags::VISITED != 0 {
        let _ = std_stream.set_nonblocking(true);
    }
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let resume = h1::Resume {
        may_park: true,
        requests,
        idle_until: Some(until),
    };
    let router = Routing::Resumed(default_host);
    Box::pin(plain_loop(
        stream,
        meta,
        Vec::new(),
        None,
        router,
        &ctx,
        permit,
        observer,
        resume,
    ))
    .await;
}

async fn connection(
    fd: OwnedFd,
    meta: Meta,
    payload: Vec<u8>,
    ctx: &Ctx,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let Some(first) = ctx.sites.by_vhost(meta.vhost) else {
        warn!(
            environment = %ctx.env,
            vhost = meta.vhost,
            "hand-off for a vhost not in this environment; closing"
        );
        return;
    };
    // Already non-blocking: the multiplexers accept with SOCK_NONBLOCK and set it on
    // every hand-back they adopt, and the flag belongs to the shared file description.
    // Set again for a handed-back socket: the processor that sent it back may hold a
    // copy and have cleared it since. Nothing relies on it (every call on the socket
    // is MSG_DONTWAIT, see transport.rs); the reactor's registration expects it.
    let visited = meta.flags & handoff::flags::VISITED != 0;
    let std_stream = std::net::TcpStream::from(fd);
    if visited {
        let _ = std_stream.set_nonblocking(true);
    }
    // Counted in until the observer is dropped, on every way out of here.
    let observer = ConnObserver::open(&ctx.board, (meta.peer, meta.local), meta.vhost);
    // A lone `Connection: close` request with a small answer: one write, no reactor.
    let rest = match h1::serve_one_shot(&std_stream, &payload, first, &ctx.cfg, &observer) {
        h1::OneShotResult::Done => return,
        h1::OneShotResult::Partial(rest) => Some(rest),
        h1::OneShotResult::NotApplicable => None,
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    if let Some(rest) = rest {
        // Bounded by the transport's write timeout.
        let _ = Transport::plain(stream, visited).write_all(&rest, false).await;
        return;
    }
    let first_head = (meta.vhost == 0)
        .then(|| common::head::head_end(&payload).map(|end| payload[..end].to_vec()))
        .flatten();
    let resume = h1::Resume {
        may_park: true,
        ..Default::default()
    };
    plain_loop(
        stream,
        meta,
        payload,
        Some(first),
        Routing::First(first_head),
        ctx,
        permit,
        observer,
        resume,
    )
    .await;
}

/// How a plain connection's later requests are routed ([`ConnRouter`]): from its first
/// head (vhost 0 only), or from what it kept when parked.
enum Routing {
    First(Option<Vec<u8>>),
    Resumed(Option<Option<String>>),
}

/// A plain connection's HTTP/1.1 loop, then what its outcome asks: a close, a
/// hand-back, or a park.
#[allow(clippy::too_many_arguments)]
async fn plain_loop(
    stream: TcpStream,
    meta: Meta,
    payload: Vec<u8>,
    first: Option<&Site>,
    routing: Routing,
    ctx: &Ctx,
    permit: tokio::sync::OwnedSemaphorePermit,
    observer: ConnObserver<'_>,
    resume: h1::Resume,
) {
    let (env, board) = (&*ctx.env, &*ctx.board);
    let router = match routing {
        Routing::First(first_head) => ConnRouter {
            sites: &ctx.sites,
            first_head,
            default_host: std::cell::OnceCell::new(),
        },
        Routing::Resumed(default_host) => ConnRouter {
            sites: &ctx.sites,
            first_head: None,
            default_host: std::cell::OnceCell::from(default_host),
        },
    };
    let mut transport = Transport::plain(stream, meta.flags & handoff::flags::VISITED != 0);
    let mut stop = ctx.stop.clone();
    let outcome = h1::serve_resumable(
        &mut transport,
        payload,
        first,
        &router,
        &ctx.cfg,
        &mut stop,
        &observer,
        resume,
    )
    .await;
    // Still counted while a hand-back waits for room in the multiplexers' queue: a
    // reload closes the old pools only once no processor holds a connection and no
    // hand-back is queued, and this one is neither until it is sent.
    match outcome {
        Outcome::Closed => {}
        Outcome::Idle { requests, until } => {
            let (Transport::Plain(stream) | Transport::Shared(stream)) = transport else {
                return;
            };
            if *ctx.stop.borrow() == Stop::Now {
                return;
            }
            // Out of the reactor (its registration dropped) before the park set's.
            let Ok(stream) = stream.into_std() else {
                return;
            };
            let parked = Parked {
                permit,
                meta,
                counted: observer.park(ctx.board.clone()),
                requests,
                until,
                default_host: router.into_default_host(),
            };
            if let Err((e, _, _)) = ctx.park.park(OwnedFd::from(stream), parked, until) {
                debug!(environment = env, "not parked ({e}); closed");
            }
        }
        Outcome::HandBack(bytes) => {
            debug!(
                environment = env,
                bytes = bytes.len(),
                "handing the connection back"
            );
            board.handed_back();
            // A PROXY header's addresses go back with the multiplexers' tag, unchanged:
            // without it they would not be believed.
            let back = Meta {
                flags: handoff::flags::HAND_BACK | (meta.flags & handoff::flags::PROXIED),
                vhost: NO_VHOST,
                peer: meta.peer,
                local: meta.local,
                tag: meta.tag,
            };
            let Some(fd) = transport.hand_back_fd() else {
                warn!(environment = env, peer = %meta.peer, "this transport cannot be handed back; closing");
                return;
            };
            if let Err(e) =
                handoff::send_waiting(ctx.sock.get_ref().as_fd(), &back, &bytes, fd, HAND_BACK_TIMEOUT).await
            {
                warn!(environment = env, peer = %meta.peer, "hand-back failed: {e}");
            }
            drop(observer);
            drop(permit);
        }
    }
}

/// A connection the multiplexer routed by its ClientHello (nothing read from it): the
/// handshake with the vhost's own certificate, then HTTP/1.1 over it, every request
/// checked against that vhost ([`TlsRouter`]: 421 for another).
/// What a TLS connection needs of its processor.
struct TlsConn {
    sites: Rc<Sites>,
    tls: Rc<TlsSites>,
    http2: Rc<Option<crate::h2::Http2Conf>>,
    cfg: Rc<ConnConfig>,
    board: Rc<Board>,
}

async fn tls_connection(
    fd: OwnedFd,
    meta: Meta,
    conn: &TlsConn,
    env: &str,
    stop: &mut watch::Receiver<Stop>,
) {
    let (sites, tls, cfg, board) = (&*conn.sites, &*conn.tls, &*conn.cfg, &*conn.board);
    if sites.by_vhost(meta.vhost).is_none() {
        warn!(
            environment = env,
            vhost = meta.vhost,
            "TLS hand-off for a vhost not in this environment; closing"
        );
        return;
    }
    let Ok(stream) = TcpStream::from_std(std::net::TcpStream::from(fd)) else {
        return;
    };
    let observer = ConnObserver::open(board, (meta.peer, meta.local), meta.vhost);
    let by_default = meta.flags & handoff::flags::TLS_DEFAULT != 0;
    let session = match tls::accept(
        stream,
        tls,
        sites,
        meta.vhost,
        by_default,
        cfg.request_head_timeout,
    )
    .await
    {
        Ok(session) => session,
        Err(e) => {
            board.slot.add(tls::failure_word(&e), 1);
            info!(environment = env, peer = %meta.peer, "TLS handshake refused: {e}");
            return;
        }
    };
    let state = session.get_ref().1;
    board.slot.add(slot::TLS_HANDSHAKES, 1);
    if state.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        board.slot.add(slot::TLS_RESUMED, 1);
    }
    if state.alpn_protocol() == Some(b"http/1.1") {
        board.slot.add(slot::TLS_ALPN_HTTP11, 1);
    }
    let sni = session.get_ref().1.server_name().map(str::to_ascii_lowercase);
    if let (Some(h2), Some(crate::h2::ALPN)) = (&*conn.http2, state.alpn_protocol()) {
        board.slot.add(slot::TLS_ALPN_H2, 1);
        let shared = Rc::new(crate::h2::Shared::new(
            conn.sites.clone(),
            conn.tls.clone(),
            conn.cfg.clone(),
            conn.board.clone(),
            meta.vhost,
            by_default,
            sni,
            meta.peer,
            // The hand-off's destination: a PROXY header's when one was carried.
            meta.local,
        ));
        crate::h2::serve(session, shared.clone(), h2, stop).await;
        board.slot.add(slot::TLS_MISDIRECTED, shared.misdirected.get());
        drop(observer);
        return;
    }
    let misdirected = std::cell::Cell::new(0);
    let router = TlsRouter {
        sites,
        vhost: meta.vhost,
        by_default,
        sni,
        misdirected: &misdirected,
        covers: &|host| tls.covers(meta.vhost, host),
    };
    let mut transport = Transport::Tls(Box::new(session));
    let outcome = h1::serve(&mut transport, Vec::new(), None, &router, cfg, stop, &observer).await;
    board.slot.add(slot::TLS_MISDIRECTED, misdirected.get());
    if outcome != Outcome::Closed {
        debug!(
            environment = env,
            "a TLS connection cannot be handed back; closed"
        );
    }
}

#[cfg(test)]
mod tests {
    /// What a parked connection costs this process: its record in the park set.
    #[test]
    fn parked_record_is_small() {
        let size = crate::park::record_size::<super::Parked>();
        assert!(size <= 256, "a parked connection's record is {size} bytes");
    }
}
