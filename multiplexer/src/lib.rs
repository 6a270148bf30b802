//! The multiplexer: accepts connections as an unprivileged user, reads just the request
//! head to pick the vhost, and passes the socket with the bytes read to the pool of the
//! vhost's environment. It also takes connections handed back by processors and routes
//! them again, as untrusted as any new one.

mod conn;
mod respond;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::control::{AsyncChannel, FromChild, MultiplexerBoot, ToChild};
use common::handoff;
use common::vhost::HostTable;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn};

/// Errors that stop a multiplexer.
#[derive(Debug, Error)]
pub enum MultiplexerError {
    #[error("bootstrap carried {got} fds, expected {want}")]
    FdCount { got: usize, want: usize },
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error("control channel: {0}")]
    Control(#[from] common::control::ControlError),
}

/// What every connection task reads.
pub(crate) struct Shared {
    pub hosts: HostTable,
    pub vhost_env: Vec<u32>,
    pub env_names: Vec<String>,
    pub env_socks: Vec<AsyncFd<OwnedFd>>,
    pub limit_request_head: usize,
    pub request_head_timeout: Duration,
    pub handoff_timeout: Duration,
}

/// Runs a multiplexer (privileges already dropped) until told to stop.
pub fn run(boot: MultiplexerBoot, fds: Vec<OwnedFd>, control: OwnedFd) -> Result<(), MultiplexerError> {
    let want = boot.listeners.len() + boot.environments.len();
    if fds.len() != want {
        return Err(MultiplexerError::FdCount { got: fds.len(), want });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(boot, fds, control))
}

async fn serve(
    boot: MultiplexerBoot,
    mut fds: Vec<OwnedFd>,
    control: OwnedFd,
) -> Result<(), MultiplexerError> {
    let env_fds = fds.split_off(boot.listeners.len());
    let mut hosts = HostTable::new();
    for (name, idx) in &boot.hosts {
        hosts.insert(name, *idx as usize);
    }
    let mut env_socks = Vec::with_capacity(env_fds.len());
    for fd in env_fds {
        env_socks.push(common::fds::async_fd(fd)?);
    }
    let shared = Arc::new(Shared {
        hosts,
        vhost_env: boot.vhost_env,
        env_names: boot.environments,
        env_socks,
        limit_request_head: boot.limit_request_head,
        request_head_timeout: Duration::from_millis(boot.request_head_timeout_ms),
        handoff_timeout: Duration::from_millis(boot.handoff_timeout_ms),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let inflight = Rc::new(());

    for (fd, bound) in fds.into_iter().zip(boot.listeners.iter().copied()) {
        let std_listener = std::net::TcpListener::from(fd);
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        // A listener on a specific address is the local address of all its connections;
        // only a wildcard one needs getsockname per connection.
        let fixed_local = (!bound.ip().is_unspecified()).then_some(bound);
        tokio::task::spawn_local(accept_loop(
            listener,
            fixed_local,
            shared.clone(),
            stop_rx.clone(),
            inflight.clone(),
        ));
    }
    for env in 0..shared.env_socks.len() {
        tokio::task::spawn_local(hand_back_loop(
            env,
            shared.clone(),
            stop_rx.clone(),
            inflight.clone(),
        ));
    }

    let mut chan = AsyncChannel::new(control)?;
    chan.send(&FromChild::Ready, &[])?;
    info!(
        pid = std::process::id(),
        uid = nix::unistd::getuid().as_raw(),
        "multiplexer serving"
    );
    loop {
        match chan.recv::<ToChild>(0).await {
            Ok((ToChild::Shutdown, _)) => break,
            Ok((ToChild::Bootstrap(_), _)) => warn!("ignoring a second bootstrap"),
            Err(e) => {
                warn!("control channel closed ({e}); stopping");
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    // Finish the hand-offs in flight: each is bounded by the head and hand-off timeouts.
    let bound = shared.request_head_timeout + shared.handoff_timeout + Duration::from_secs(3);
    let deadline = tokio::time::Instant::now() + bound;
    while Rc::strong_count(&inflight) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!("multiplexer stopped");
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    fixed_local: Option<SocketAddr>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    inflight: Rc<()>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let local = fixed_local.or_else(|| stream.local_addr().ok()).unwrap_or(peer);
                let token = inflight.clone();
                let shared = shared.clone();
                tokio::task::spawn_local(async move {
                    conn::handle(stream, Vec::new(), peer, local, shared).await;
                    drop(token);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn hand_back_loop(env: usize, shared: Arc<Shared>, mut stop: watch::Receiver<bool>, inflight: Rc<()>) {
    let mut buf = vec![0u8; handoff::MAX_MESSAGE];
    loop {
        let sock = &shared.env_socks[env];
        let mut guard = tokio::select! {
            g = sock.readable() => match g { Ok(g) => g, Err(_) => return },
            _ = stop.changed() => return,
        };
        loop {
            match handoff::recv(guard.get_inner().as_fd(), &mut buf) {
                Ok((_meta, payload, fd)) => {
                    if let Some((stream, peer, local)) = adopt(fd) {
                        let payload = payload.to_vec();
                        let token = inflight.clone();
                        let shared2 = shared.clone();
                        tokio::task::spawn_local(async move {
                            conn::handle(stream, payload, peer, local, shared2).await;
                            drop(token);
                        });
                    }
                }
                Err(handoff::HandoffError::Packet(e)) if e.is_would_block() => {
                    guard.clear_ready();
                    break;
                }
                Err(handoff::HandoffError::Packet(common::seqpacket::PacketError::Closed { .. })) => return,
                Err(e) => warn!(environment = %shared.env_names[env], "bad hand-back refused: {e}"),
            }
        }
    }
}

/// Turns a received fd into a stream after checking it is a TCP socket. The addresses
/// come from the socket itself, not from the (untrusted) message.
fn adopt(fd: OwnedFd) -> Option<(TcpStream, SocketAddr, SocketAddr)> {
    if let Err(e) = common::fds::check_stream_socket(&fd) {
        warn!("hand-back refused: {e}");
        return None;
    }
    let std_stream = std::net::TcpStream::from(fd);
    let local = std_stream.local_addr().ok()?;
    let peer = std_stream.peer_addr().ok()?;
    std_stream.set_nonblocking(true).ok()?;
    TcpStream::from_std(std_stream).ok().map(|s| (s, peer, local))
}
