//! The multiplexer: accepts connections as an unprivileged user, reads just the request
//! head to pick the vhost, and passes the socket with the bytes read to the pool of the
//! vhost's environment. It also takes connections handed back by processors and routes
//! them again, as untrusted as any new one.

mod access;
mod bound;
mod conn;
mod dontwait;
mod handback;
mod peer_uid;
mod per_ip;
mod pool;
mod proxy;
mod respond;
mod snapshot;
pub mod status;
mod tls;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use common::bootfds::MultiplexerFds;
use common::control::{AsyncChannel, FromChild, MultiplexerBoot, ToChild};
use common::scoreboard::{now_ms, slot, Segment};
use common::vhost::HostTable;
use pool::Pools;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Errors that stop a multiplexer.
#[derive(Debug, Error)]
pub enum MultiplexerError {
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error("control channel: {0}")]
    Control(#[from] common::control::ControlError),
    #[error(transparent)]
    Scoreboard(#[from] common::scoreboard::ScoreboardError),
    #[error("{0}; exiting so that the supervisor starts a fresh multiplexer")]
    LoopDied(String),
}

/// What every connection task reads.
pub(crate) struct Shared {
    pub hosts: HostTable,
    /// Each environment's socket (the multiplexers' end), in no reactor: hand-offs are
    /// sent on it ([`common::handoff::send_waiting`] waits for room on a registration
    /// of its own), hand-backs taken through a [`handback::ReadySet`].
    pub env_socks: Vec<OwnedFd>,
    pub limit_request_head: usize,
    /// The longest a head may take (and the TLS hello's bound).
    pub request_head_timeout: Duration,
    /// `limit_request_line` and the others, with `limit_request_head`.
    pub head_limits: common::head::Limits,
    /// `request_head_timeout` with its rate.
    pub head_timeout: common::http::rate::RateTimeout,
    pub handoff_timeout: Duration,
    pub pools: Pools,
    pub facts: snapshot::Facts,
    pub status_path: String,
    /// Who may see the status page and the metrics.
    pub status_access: access::Access,
    /// This multiplexer's own slot.
    pub own: Segment,
    /// Connections this multiplexer is working on (reading a head, waiting for room,
    /// handing off): at most `max_clients`; over it a new one is closed at once.
    pub held: Rc<bound::Gauge>,
    /// `max_connections_per_ip`: connections per client address in this multiplexer.
    pub per_ip: Rc<per_ip::PerIp>,
    /// Per environment: hand-backs being routed, at most what the environment's
    /// processors can hold (`max_processors * max_connections_per_processor`).
    pub handbacks: Vec<Rc<bound::Gauge>>,
    /// Connections taken from a listener and still being read or handed off (the slow
    /// path); with the accept loops, what a reload waits for before the old pools close.
    pub from_listeners: Rc<()>,
    /// Where a ClientHello without a known server name goes (`tls_default`).
    pub tls_default: Option<u32>,
    /// `tls_strict_sni`: such a hello gets an `unrecognized_name` alert.
    pub tls_strict_sni: bool,
    /// `proxy_protocol`: which listeners read a PROXY header, from whom, the tag key.
    pub proxy: Option<proxy::Proxy>,
}

impl Shared {
    pub fn env_name(&self, env: usize) -> &str {
        self.pools.envs.get(env).map(|e| e.name.as_str()).unwrap_or("?")
    }
}

/// Runs a multiplexer (privileges already dropped) until told to stop.
/// Its fds were checked against its bootstrap by [`common::child::start`].
pub fn run(
    boot: MultiplexerBoot,
    fds: MultiplexerFds<OwnedFd>,
    control: OwnedFd,
) -> Result<(), MultiplexerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(boot, fds, control))
}

async fn serve(
    boot: MultiplexerBoot,
    fds: MultiplexerFds<OwnedFd>,
    control: OwnedFd,
) -> Result<(), MultiplexerError> {
    let MultiplexerFds {
        listeners: listener_fds,
        tls_listeners: tls_fds,
        metrics_listener: metrics_fd,
        env_sockets: env_fds,
        // Taken (and read) by `common::child::start`.
        env_stream: _,
        table: table_fd,
        slot: own_fd,
    } = fds;
    let mut hosts = HostTable::new();
    for (name, idx) in &boot.hosts {
        hosts.insert(name, *idx as usize);
    }
    // In no reactor: a hand-off taken by a processor must not wake every multiplexer,
    // nor a hand-back all of them (`handback`).
    let env_socks = env_fds;
    // One mapping of the table: the pools' words and the per-address rows shared by
    // the multiplexers.
    let table = Rc::new(Segment::map(&table_fd, true)?);
    let across = match (boot.index, boot.max_connections_per_ip) {
        (Some(index), max) if max > 0 => per_ip::Across::new(table.clone(), index),
        _ => None,
    };
    drop(table_fd);
    let own = Segment::map(&own_fd, true)?;
    drop(own_fd);
    own.set(slot::PID, std::process::id() as u64);
    own.set(slot::ROLE, slot::ROLE_MULTIPLEXER);
    own.set(slot::STARTED_MS, now_ms());
    own.set(slot::LAST_USED_MS, now_ms());
    own.set(slot::GENERATION, boot.generation);
    own.set(slot::MAGIC, slot::MAGIC_VALUE);
    own.set(slot::STATE, slot::READY);
    let handbacks: Vec<Rc<bound::Gauge>> = boot
        .environments
        .iter()
        .map(|e| {
            let max = (e.max_processors as usize).saturating_mul(e.capacity as usize);
            let what = format!(
                "environment {}: more hand-backs in flight than max_processors * max_connections_per_processor",
                e.name
            );
            bound::Gauge::new(max, what)
        })
        .collect();
    let held_max = if boot.max_clients > 0 {
        boot.max_clients as usize
    } else {
        boot.environments
            .iter()
            .map(|e| (e.max_processors as usize).saturating_mul(e.capacity as usize))
            .fold(0usize, usize::saturating_add)
    };
    let held = bound::Gauge::new(
        held_max,
        "multiplexer: max_clients connections are being read or routed; new connections are closed".into(),
    );
    let per_ip = per_ip::PerIp::new(
        boot.max_connections_per_ip,
        boot.max_connections_per_ip_ipv6_prefix,
        held_max.saturating_add(1),
        across,
    );
    let pools = Pools::new(
        boot.environments,
        boot.vhosts,
        table,
        Duration::from_millis(boot.processor_wait_timeout_ms),
        boot.processor_wait_steps,
        boot.max_clients,
    );
    let shared = Rc::new(Shared {
        hosts,
        env_socks,
        limit_request_head: boot.limit_request_head,
        request_head_timeout: Duration::from_millis(boot.request_head_timeout_ms),
        head_limits: boot
            .head_limits
            .unwrap_or(common::head::Limits::head_only(boot.limit_request_head)),
        head_timeout: boot
            .head_timeout
            .unwrap_or(common::http::rate::RateTimeout::fixed(Duration::from_millis(
                boot.request_head_timeout_ms,
            ))),
        handoff_timeout: Duration::from_millis(boot.handoff_timeout_ms),
        pools,
        facts: snapshot::Facts {
            generation: boot.generation,
            server_limit: boot.server_limit as u64,
            max_multiplexers: boot.max_multiplexers as u64,
        },
        status_path: boot.status_path,
        status_access: access::Access {
            allow: boot.status_allow,
            users: boot.status_allow_users,
        },
        own,
        held,
        per_ip,
        handbacks,
        from_listeners: Rc::new(()),
        tls_default: boot.tls_default,
        tls_strict_sni: boot.tls_strict_sni,
        proxy: boot
            .proxy
            .as_ref()
            .map(|p| proxy::Proxy::new(p, &boot.listeners, &boot.tls_listeners)),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Listeners stop first on a reload; hand-backs are routed until the final stop.
    let (accept_stop_tx, accept_stop_rx) = watch::channel(false);
    let inflight = Rc::new(());

    // The loops this multiplexer is for. One that ends while it should run (a panic, a
    // listener error) ends the process: a multiplexer that stays up without accepting
    // would look healthy to the supervisor and never be replaced.
    let mut essential: tokio::task::JoinSet<Result<(), String>> = tokio::task::JoinSet::new();
    // Accept loops still running (a token each), for the quiesce after a reload.
    let accepting = Rc::new(());
    let proxied =
        |flags: Option<&Vec<bool>>, i: usize| flags.and_then(|f| f.get(i)).copied().unwrap_or(false);
    let plain = listener_fds
        .into_iter()
        .zip(boot.listeners.iter().copied())
        .enumerate()
        .map(|(i, l)| (l, (false, proxied(boot.proxy.as_ref().map(|p| &p.plain), i))));
    let tls = tls_fds
        .into_iter()
        .zip(boot.tls_listeners.iter().copied())
        .enumerate()
        .map(|(i, l)| (l, (true, proxied(boot.proxy.as_ref().map(|p| &p.tls), i))));
    for ((fd, bound), kind) in plain.chain(tls) {
        // Already non-blocking: the supervisor binds listeners with SOCK_NONBLOCK.
        let std_listener = std::net::TcpListener::from(fd);
        // SAFETY: the listener owns its fd for as long as the AsyncFd holds it.
        let listener = unsafe { AsyncFd::register(std_listener) }.map_err(std::io::Error::from)?;
        // A listener on a specific address is the local address of all its connections;
        // only a wildcard one needs getsockname per connection.
        let fixed_local = (!bound.ip().is_unspecified()).then_some(bound);
        let accept = accept_loop(
            listener,
            fixed_local,
            kind,
            shared.clone(),
            accept_stop_rx.clone(),
            inflight.clone(),
        );
        let running = accepting.clone();
        essential.spawn_local(async move {
            let r = accept.await;
            drop(running);
            r
        });
    }
    if let Some(fd) = metrics_fd {
        let std_listener = std::net::TcpListener::from(fd);
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let metrics = conn::metrics_loop(listener, shared.clone(), accept_stop_rx.clone(), inflight.clone());
        essential.spawn_local(async move {
            metrics.await;
            Ok(())
        });
    }
    // The generation's first multiplexer is woken by hand-backs; the others sweep.
    let first = boot.index.is_none_or(|i| i == 0);
    essential.spawn_local(handback::hand_back_loop(
        first,
        shared.clone(),
        stop_rx.clone(),
        inflight.clone(),
    ));

    let mut quiescing = false;
    let mut chan = AsyncChannel::new(control)?;
    chan.send(&FromChild::Ready, &[])?;
    info!(
        pid = std::process::id(),
        uid = nix::unistd::getuid().as_raw(),
        "multiplexer serving"
    );
    loop {
        tokio::select! {
            m = chan.recv::<ToChild>(common::child::MAX_BOOT_FDS) => match m {
                Ok((ToChild::Shutdown, _)) => break,
                Ok((ToChild::StopAccepting, _)) => {
                    info!("reload: no longer accepting; routing hand-backs until the old processors are done");
                    let _ = accept_stop_tx.send(true);
                    quiescing = true;
                }
                Ok((ToChild::Slots { add, remove }, fds)) => shared.pools.update(add, fds, remove),
                Ok((ToChild::ErrorLog, fds)) => {
                    if let Some(fd) = fds.first() {
                        let _ = common::fds::install_stderr(fd);
                    }
                }
                Ok((other, _)) => warn!("ignoring control message {other:?}"),
                Err(e) => {
                    warn!("control channel closed ({e}); stopping");
                    break;
                }
            },
            Some(done) = essential.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    error!("{why}; exiting");
                    return Err(MultiplexerError::LoopDied(why));
                }
                Err(e) => {
                    let why = format!("an accept or hand-back loop died ({e})");
                    error!("{why}; exiting");
                    return Err(MultiplexerError::LoopDied(why));
                }
            },
            // After StopAccepting: tell the supervisor (in our slot) once nothing taken
            // from a listener can still reach our generation's pools, so it closes
            // them only then (a connection accepted just before the stop is not lost).
            _ = tokio::time::sleep(QUIESCE_POLL), if quiescing => {
                if Rc::strong_count(&accepting) == 1 && Rc::strong_count(&shared.from_listeners) == 1 {
                    shared.own.set(slot::QUIESCED, 1);
                    quiescing = false;
                }
            }
            _ = shared.pools.spawn_notify.notified() => {
                let wanted: Vec<u32> = shared.pools.spawn_wanted.borrow_mut().drain(..).collect();
                for env in wanted {
                    if let Err(e) = chan.send(&FromChild::Spawn { env }, &[]) {
                        warn!("asking for a processor: {e}");
                    }
                }
            }
        }
    }
    shared.own.set(slot::STATE, slot::STOPPING);
    let _ = accept_stop_tx.send(true);
    let _ = stop_tx.send(true);
    // Finish the hand-offs in flight: each is bounded by the head, wait and hand-off timeouts.
    let bound = shared.request_head_timeout
        + shared.handoff_timeout
        + shared.pools.wait_timeout
        + Duration::from_secs(3);
    let deadline = tokio::time::Instant::now() + bound;
    while Rc::strong_count(&inflight) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!("multiplexer stopped");
    Ok(())
}

async fn accept_loop(
    listener: AsyncFd<std::net::TcpListener>,
    fixed_local: Option<SocketAddr>,
    (tls, proxied): (bool, bool),
    shared: Rc<Shared>,
    mut stop: watch::Receiver<bool>,
    inflight: Rc<()>,
) -> Result<(), String> {
    loop {
        let mut guard = tokio::select! {
            g = listener.readable() => g.map_err(|e| format!("accept loop: waiting on the listener: {e}"))?,
            _ = stop.changed() => return Ok(()),
        };
        // Take what is queued, a bounded batch per wake-up so other tasks run too.
        for _ in 0..ACCEPT_BATCH {
            match guard.try_io(|l| accept_raw(l.get_ref())) {
                Ok(Ok((stream, peer))) => {
                    let local = fixed_local.or_else(|| stream.local_addr().ok()).unwrap_or(peer);
                    shared.own.add(slot::TAKEN, 1);
                    shared.pools.table.add(common::scoreboard::table::ACCEPTED, 1);
                    // A bug on one connection's path must not end the loop: the panic
                    // is logged by the hook, the connection is dropped (closed), and
                    // the next one is taken.
                    let one = std::panic::AssertUnwindSafe(|| {
                        if proxied {
                            // Counted per IP once its header names the client.
                            return proxy::accepted(stream, peer, local, tls, &shared, &inflight);
                        }
                        // Over `max_connections_per_ip`: closed now, before a byte is read.
                        let Some(per_ip) = shared.per_ip.take(peer.ip()) else {
                            return;
                        };
                        if tls {
                            tls::accepted(stream, peer, local, None, &shared, &inflight, per_ip)
                        } else {
                            conn::accepted(stream, peer, local, None, &shared, &inflight, per_ip)
                        }
                    });
                    let _ = std::panic::catch_unwind(one);
                }
                Ok(Err(e)) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                Err(_would_block) => break,
            }
        }
    }
}

/// How often a multiplexer that stopped accepting checks whether it is quiesced.
const QUIESCE_POLL: Duration = Duration::from_millis(10);

/// Connections taken per wake-up of an accept loop before yielding.
const ACCEPT_BATCH: usize = 64;

/// accept4(2) with SOCK_NONBLOCK|SOCK_CLOEXEC, returning the peer address from the
/// same call (no getpeername).
fn accept_raw(listener: &std::net::TcpListener) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: zeroed sockaddr_storage is a valid value to hand the kernel.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage/len describe a valid writable sockaddr buffer for the call.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: accept4 just returned this fd to us; nothing else owns it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    // SAFETY: the kernel filled `len` bytes of a sockaddr in `storage`.
    let addr = unsafe {
        <nix::sys::socket::SockaddrStorage as nix::sys::socket::SockaddrLike>::from_raw(
            (&storage as *const libc::sockaddr_storage).cast(),
            Some(len),
        )
    };
    let peer = addr
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| std::io::Error::other("accept4 returned an unknown address family"))?;
    Ok((stream, peer))
}
