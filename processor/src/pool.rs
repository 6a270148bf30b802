//! The processor's receive loop: take hand-offs from the environment's socket (at most
//! `max_connections` at once), serve each connection, pass hand-backs to the
//! multiplexers, and drain and stop on shutdown.

use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::control::{AsyncChannel, FromChild, ProcessorBoot, ToChild};
use common::handoff::{self, HandoffError, Meta, NO_VHOST};
use common::head::{request_host, MAX_HEADERS};
use common::vhost::HostTable;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::http::{self, ConnConfig, Outcome, Router, Site};

/// Errors that stop a processor.
#[derive(Debug, Error)]
pub enum ProcessorError {
    #[error("bootstrap carried {0} fds, expected 1")]
    FdCount(usize),
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error("control channel: {0}")]
    Control(#[from] common::control::ControlError),
}

/// How long a hand-back waits for room in the multiplexers' queue.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(5);
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

struct Sites {
    sites: Vec<Site>,
    hosts: HostTable,
}

impl Sites {
    fn by_vhost(&self, id: u32) -> Option<&Site> {
        self.sites.iter().find(|s| s.vhost_id == id)
    }
}

/// Routes the later requests of one connection: our own hosts stay; the host the
/// multiplexer sent to our default vhost stays with it; anything else goes back.
struct ConnRouter<'a> {
    sites: &'a Sites,
    /// Set when the first request was routed to vhost 0 by default: its host (or none).
    default_host: Option<Option<String>>,
}

impl Router for ConnRouter<'_> {
    fn route(&self, host: Option<&str>) -> Option<&Site> {
        if let Some(i) = host.and_then(|h| self.sites.hosts.lookup(h)) {
            return self.sites.sites.get(i);
        }
        match &self.default_host {
            Some(d) if d.as_deref().map(str::to_ascii_lowercase) == host.map(str::to_ascii_lowercase) => {
                self.sites.by_vhost(0)
            }
            _ => None,
        }
    }
}

/// The host of the first request in `buf` when it is not one of ours (routed by default).
fn default_routed_host(sites: &Sites, buf: &[u8]) -> Option<Option<String>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(buf).ok()?;
    let host = request_host(&req).ok()?;
    match host {
        Some(h) if sites.hosts.lookup(h).is_some() => None,
        h => Some(h.map(str::to_owned)),
    }
}

/// Runs a processor (privileges already dropped) until told to stop.
pub fn run(boot: ProcessorBoot, mut fds: Vec<OwnedFd>, control: OwnedFd) -> Result<(), ProcessorError> {
    if fds.len() != 1 {
        return Err(ProcessorError::FdCount(fds.len()));
    }
    let sock = fds.remove(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(boot, sock, control))
}

async fn serve(boot: ProcessorBoot, sock: OwnedFd, control: OwnedFd) -> Result<(), ProcessorError> {
    let mut hosts = HostTable::new();
    let mut sites = Vec::new();
    for (i, s) in boot.sites.into_iter().enumerate() {
        hosts.insert(&s.server_name, i);
        for a in &s.aliases {
            hosts.insert(a, i);
        }
        sites.push(Site {
            vhost_id: s.vhost_id,
            server_name: s.server_name,
            document_root: s.document_root,
        });
    }
    let sites = Rc::new(Sites { sites, hosts });
    let cfg = Rc::new(ConnConfig {
        keep_alive_timeout: Duration::from_millis(boot.keep_alive_timeout_ms),
        request_head_timeout: Duration::from_millis(boot.request_head_timeout_ms),
        limit_request_head: boot.limit_request_head,
        body_read_timeout: BODY_READ_TIMEOUT,
    });
    let sock = Rc::new(common::fds::async_fd(sock)?);
    let max = boot.max_connections.max(1) as usize;
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut chan = AsyncChannel::new(control)?;
    chan.send(&FromChild::Ready, &[])?;
    info!(
        environment = %boot.environment,
        pid = std::process::id(),
        uid = nix::unistd::getuid().as_raw(),
        "processor serving"
    );
    let env = Rc::new(boot.environment);

    let mut buf = vec![0u8; handoff::MAX_MESSAGE];
    let mut draining = false;
    loop {
        let permit = if draining {
            // Serve what is already queued, then stop taking connections.
            match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ProcessorError::Io(std::io::ErrorKind::Other.into()))?,
            }
        } else {
            tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                m = chan.recv::<ToChild>(0) => {
                    match m {
                        Ok((ToChild::Shutdown, _)) => info!(environment = %env, "shutdown: draining"),
                        Ok((ToChild::Bootstrap(_), _)) => { warn!("ignoring a second bootstrap"); continue }
                        Err(e) => warn!("control channel closed ({e}); stopping"),
                    }
                    draining = true;
                    let _ = stop_tx.send(true);
                    continue;
                }
            }
        };
        // Receive one hand-off.
        let received = if draining {
            match handoff::recv(sock.get_ref().as_fd(), &mut buf) {
                Ok(r) => Some(r),
                Err(HandoffError::Packet(_)) => break,
                Err(e) => {
                    warn!(environment = %env, "bad hand-off refused: {e}");
                    None
                }
            }
        } else {
            let got = tokio::select! {
                g = sock.readable() => g,
                m = chan.recv::<ToChild>(0) => {
                    if let Ok((ToChild::Bootstrap(_), _)) = m { continue; }
                    info!(environment = %env, "shutdown: draining");
                    draining = true;
                    let _ = stop_tx.send(true);
                    continue;
                }
            };
            let mut guard = got?;
            match handoff::recv(guard.get_inner().as_fd(), &mut buf) {
                Ok(r) => Some(r),
                Err(HandoffError::Packet(e)) if e.is_would_block() => {
                    guard.clear_ready();
                    None
                }
                Err(HandoffError::Packet(common::seqpacket::PacketError::Closed { .. })) => break,
                Err(e) => {
                    warn!(environment = %env, "bad hand-off refused: {e}");
                    None
                }
            }
        };
        let Some((meta, payload, fd)) = received else {
            continue;
        };
        if let Err(e) = common::fds::check_stream_socket(&fd) {
            warn!(environment = %env, "hand-off refused: {e}");
            continue;
        }
        let payload = payload.to_vec();
        let (sites, cfg, sock, env) = (sites.clone(), cfg.clone(), sock.clone(), env.clone());
        let mut stop = stop_rx.clone();
        tokio::task::spawn_local(async move {
            connection(fd, meta, payload, &sites, &cfg, &sock, &env, &mut stop).await;
            drop(permit);
        });
    }
    // Wait for every connection to finish (each is bounded by its own timeouts).
    let _ = slots.acquire_many(max as u32).await;
    info!(environment = %env, "processor stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    fd: OwnedFd,
    meta: Meta,
    payload: Vec<u8>,
    sites: &Sites,
    cfg: &ConnConfig,
    sock: &AsyncFd<OwnedFd>,
    env: &str,
    stop: &mut watch::Receiver<bool>,
) {
    let Some(first) = sites.by_vhost(meta.vhost) else {
        warn!(
            environment = env,
            vhost = meta.vhost,
            "hand-off for a vhost not in this environment; closing"
        );
        return;
    };
    // Already non-blocking: the multiplexers accept with SOCK_NONBLOCK and set it on
    // every hand-back they adopt, and the flag belongs to the shared file description.
    let std_stream = std::net::TcpStream::from(fd);
    let Ok(mut stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let default_host = if meta.vhost == 0 {
        default_routed_host(sites, &payload)
    } else {
        None
    };
    let router = ConnRouter { sites, default_host };
    match http::serve(&mut stream, payload, first, &router, cfg, stop).await {
        Outcome::Closed => {}
        Outcome::HandBack(bytes) => {
            debug!(
                environment = env,
                bytes = bytes.len(),
                "handing the connection back"
            );
            let back = Meta {
                flags: handoff::flags::HAND_BACK,
                vhost: NO_VHOST,
                peer: meta.peer,
                local: meta.local,
            };
            if let Err(e) = hand_back(sock, &back, &bytes, &stream).await {
                warn!(environment = env, peer = %meta.peer, "hand-back failed: {e}");
            }
        }
    }
}

async fn hand_back(
    sock: &AsyncFd<OwnedFd>,
    meta: &Meta,
    bytes: &[u8],
    stream: &TcpStream,
) -> Result<(), HandoffError> {
    let attempt = async {
        loop {
            let mut guard = sock
                .writable()
                .await
                .map_err(|_| HandoffError::Packet(common::seqpacket::PacketError::Closed { fd: -1 }))?;
            match handoff::send(guard.get_inner().as_fd(), meta, bytes, stream.as_fd()) {
                Err(HandoffError::Packet(e)) if e.is_would_block() => guard.clear_ready(),
                other => return other,
            }
        }
    };
    tokio::time::timeout(HAND_BACK_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(HandoffError::Packet(
            common::seqpacket::PacketError::WouldBlock { fd: -1 },
        )))
}
