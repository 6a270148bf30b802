//! Hand-backs: connections a processor returns (a later request for a host it does
//! not serve), taken from every environment's socket by one loop per multiplexer,
//! checked as untrusted as a fresh connection and routed again.
//!
//! Two costs are cut here, no check:
//! - **One multiplexer woken per hand-back.** Every multiplexer holds the same end of
//!   each environment's socket; registered in every reactor, each message woke every
//!   multiplexer and all but one found the queue empty. The sockets are instead in an
//!   epoll instance of the loop's own ([`ReadySet`], level-triggered, one fd for all
//!   environments), which only the generation's first multiplexer (index 0, which a
//!   replacement keeps) registers with its reactor. The others look at their set every
//!   [`SWEEP`] and take what is still queued: if the first one is gone or overloaded, a
//!   hand-back waits at most that long. The queue stays one per environment: a
//!   processor chooses no multiplexer and gains nothing.
//! - **No reactor for a hand-back whose payload holds a whole head** for a pool with
//!   room: it is routed and handed off at once ([`conn::try_hand_off`], as a fresh
//!   connection's first read is), never registered with epoll, no task spawned.
//!   Anything else (a partial head, a full pool, an error or the status page to
//!   answer) goes to [`conn::handle`].

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use common::handoff::{self, HandoffError};
use common::seqpacket::PacketError;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::warn;

use crate::conn;
use crate::Shared;

/// Errors of the hand-back loop's epoll set.
#[derive(Debug, Error)]
pub enum HandBackError {
    #[error("epoll_create1: {0}")]
    Create(std::io::Error),
    #[error("adding environment {env}'s socket (fd {fd}) to the hand-back set: {source}")]
    Add {
        env: usize,
        fd: RawFd,
        source: std::io::Error,
    },
    #[error("registering the hand-back set with the reactor: {0}")]
    Register(std::io::Error),
    #[error("epoll_wait on the hand-back set: {0}")]
    Wait(std::io::Error),
}

/// How often a multiplexer other than the first takes what is queued.
pub(crate) const SWEEP: Duration = Duration::from_millis(20);
/// Ready environments taken per `epoll_wait` of the set.
const EVENTS: usize = 64;
/// Hand-backs taken from one environment's socket per round, so that one processor's
/// flood does not hold the loop (the set is level-triggered: the rest is reported
/// again on the next round).
const BATCH: usize = 64;

/// Every environment socket, for readability, in an epoll instance of this
/// multiplexer's own, level-triggered; the event's data is the environment's index.
/// Nobody waits on it directly: the first multiplexer registers it with its reactor
/// (it is readable while a socket in it is), the others poll it.
pub(crate) struct ReadySet {
    epoll: OwnedFd,
}

impl AsRawFd for ReadySet {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl ReadySet {
    /// The set of `socks` (index = environment).
    pub fn new(socks: &[OwnedFd]) -> Result<Self, HandBackError> {
        // SAFETY: epoll_create1 takes no pointers; the fd it returns is ours alone.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(HandBackError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` was just returned by epoll_create1 and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        for (env, sock) in socks.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: env as u64,
            };
            // SAFETY: both fds are open; `ev` is a valid epoll_event for the call.
            let r = unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) };
            if r < 0 {
                return Err(HandBackError::Add {
                    env,
                    fd: sock.as_raw_fd(),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(ReadySet { epoll })
    }

    /// The environments whose sockets are readable now (never blocks).
    fn ready(&self, events: &mut [libc::epoll_event; EVENTS]) -> Result<usize, HandBackError> {
        // SAFETY: `events` is a writable array of EVENTS epoll_events; timeout 0.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(HandBackError::Wait(e));
        }
        Ok(n as usize)
    }

    /// Stops watching a socket whose processors' ends are all closed (level-triggered,
    /// its end of file would be reported on every round).
    fn remove(&self, sock: BorrowedFd<'_>) {
        // SAFETY: both fds are open; EPOLL_CTL_DEL ignores the event pointer.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                sock.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }
}

/// What draining one environment's socket came to.
enum Drained {
    /// Nothing more queued.
    Empty,
    /// [`BATCH`] taken; more may be queued.
    More,
    /// Its processors' ends are all closed: no hand-back will come.
    Gone,
}

/// Takes the hand-backs of every environment until told to stop: woken by the
/// reactor when `first` (the generation's multiplexer 0), else every [`SWEEP`].
pub(crate) async fn hand_back_loop(
    first: bool,
    shared: Rc<Shared>,
    mut stop: watch::Receiver<bool>,
    inflight: Rc<()>,
) -> Result<(), String> {
    let set = ReadySet::new(&shared.env_socks).map_err(|e| format!("hand-back loop: {e}"))?;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    if !first {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP) => {}
                _ = stop.changed() => return Ok(()),
            }
            while round(&set, &mut events, &shared, &inflight)? {
                tokio::task::yield_now().await;
            }
        }
    }
    // SAFETY: the AsyncFd owns the set (and its epoll fd) for as long as it is registered.
    let set =
        unsafe { AsyncFd::register_with_interest(set, tokio::io::Interest::READABLE) }.map_err(|e| {
            format!(
                "hand-back loop: {}",
                HandBackError::Register(std::io::Error::from(e))
            )
        })?;
    loop {
        let mut guard = tokio::select! {
            g = set.readable() => g.map_err(|e| format!("hand-back loop: {e}"))?,
            _ = stop.changed() => return Ok(()),
        };
        if round(set.get_ref(), &mut events, &shared, &inflight)? {
            // Readiness kept: the next round starts at once, after the other tasks.
            drop(guard);
            tokio::task::yield_now().await;
        } else {
            // Every ready socket was emptied; a message queued since is a new edge
            // of the set's readiness.
            guard.clear_ready();
        }
    }
}

/// One round over the ready environments; true when some may have more queued.
fn round(
    set: &ReadySet,
    events: &mut [libc::epoll_event; EVENTS],
    shared: &Rc<Shared>,
    inflight: &Rc<()>,
) -> Result<bool, String> {
    let n = set.ready(events).map_err(|e| e.to_string())?;
    let mut more = n == EVENTS;
    for ev in &events[..n] {
        let env = ev.u64 as usize;
        let Some(sock) = shared.env_socks.get(env) else {
            continue;
        };
        match drain(env, sock.as_fd(), shared, inflight) {
            Drained::Empty => {}
            Drained::More => more = true,
            Drained::Gone => set.remove(sock.as_fd()),
        }
    }
    Ok(more)
}

/// Takes up to [`BATCH`] hand-backs from environment `env`'s socket.
fn drain(env: usize, sock: BorrowedFd<'_>, shared: &Rc<Shared>, inflight: &Rc<()>) -> Drained {
    for _ in 0..BATCH {
        match with_hand_back(sock, |meta, payload, fd| {
            take(env, meta, payload, fd, shared, inflight)
        }) {
            Ok(()) => {}
            Err(HandoffError::Packet(e)) if e.is_would_block() => return Drained::Empty,
            Err(HandoffError::Packet(PacketError::Closed { .. })) => return Drained::Gone,
            Err(e) => warn!(environment = %shared.env_name(env), "bad hand-back refused: {e}"),
        }
    }
    Drained::More
}

/// Receives one hand-back into the thread's scratch buffer and gives it to `f`.
/// One buffer of [`handoff::MAX_MESSAGE`] per thread rather than one per environment's loop:
/// 128 KiB each was most of a multiplexer's memory with a thousand environments.
fn with_hand_back<R>(
    sock: BorrowedFd<'_>,
    f: impl FnOnce(handoff::Meta, &[u8], OwnedFd) -> R,
) -> Result<R, HandoffError> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        if buf.len() < handoff::MAX_MESSAGE {
            buf.resize(handoff::MAX_MESSAGE, 0);
        }
        let (meta, payload, fd) = handoff::recv(sock, &mut buf)?;
        Ok(f(meta, payload, fd))
    })
}

/// One hand-back: within the bounds, checked, then routed (at once when it can be).
fn take(
    env: usize,
    meta: handoff::Meta,
    payload: &[u8],
    fd: OwnedFd,
    shared: &Rc<Shared>,
    inflight: &Rc<()>,
) {
    shared.pools.table.add(
        shared
            .pools
            .env_word(env, common::scoreboard::table::env::HANDBACKS),
        1,
    );
    // Bounded: a processor can hand back connections to itself at no cost of its own;
    // over a bound the hand-back is closed (`fd` drops).
    let Some(env_token) = shared.handbacks[env].take() else {
        return;
    };
    let Some(held) = shared.held.take() else { return };
    let Some((stream, peer, local)) = adopt(fd) else {
        return;
    };
    // A PROXY header's addresses only with the tag of this socket.
    let from = match &shared.proxy {
        None => (peer, local, None),
        Some(p) => match p.hand_back(stream.as_fd(), &meta, (peer, local)) {
            Ok(from) => from,
            Err(why) => {
                warn!(environment = %shared.env_name(env), %peer, "hand-back refused: {why}");
                return;
            }
        },
    };
    // A whole head for a pool with room: handed off now, and our copy closed.
    if conn::try_hand_off(payload, &stream, from, handoff::flags::VISITED, shared) {
        return;
    }
    let payload = payload.to_vec();
    let token = inflight.clone();
    let shared2 = shared.clone();
    let active = conn::active(shared);
    tokio::task::spawn_local(async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => conn::handle(stream, payload, from, true, shared2).await,
            Err(e) => warn!(%peer, "registering a handed-back connection: {e}"),
        }
        drop((token, env_token, held, active));
    });
}

/// Turns a received fd into a (non-blocking) stream after checking it is a TCP
/// socket. The addresses come from the socket itself, not from the (untrusted)
/// message (a PROXY header's only with their tag, [`crate::proxy::Proxy::hand_back`]).
/// Non-blocking is set here whatever the processor did: the next processor's reactor
/// relies on it.
fn adopt(fd: OwnedFd) -> Option<(std::net::TcpStream, SocketAddr, SocketAddr)> {
    if let Err(e) = common::fds::check_stream_socket(&fd) {
        warn!("hand-back refused: {e}");
        return None;
    }
    let stream = std::net::TcpStream::from(fd);
    let local = stream.local_addr().ok()?;
    let peer = stream.peer_addr().ok()?;
    stream.set_nonblocking(true).ok()?;
    Some((stream, peer, local))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::seqpacket;

    /// The set reports exactly the environments with something queued, by index,
    /// level-triggered, and forgets one that was removed; registered with a reactor it
    /// is readable while one is.
    #[test]
    fn set_reports_ready_environments() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pairs: Vec<_> = (0..3).map(|_| seqpacket::seqpacket_pair().unwrap()).collect();
            let (ours, theirs): (Vec<OwnedFd>, Vec<OwnedFd>) = pairs.into_iter().unzip();
            let set = ReadySet::new(&ours).unwrap();
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
            assert_eq!(set.ready(&mut events).unwrap(), 0);
            // SAFETY: the AsyncFd owns the set for as long as it is registered.
            let set = unsafe { AsyncFd::register_with_interest(set, tokio::io::Interest::READABLE) }.unwrap();
            seqpacket::send(theirs[2].as_fd(), &[b"x"], &[]).unwrap();
            let guard = tokio::time::timeout(Duration::from_secs(5), set.readable())
                .await
                .expect("the set never became readable")
                .unwrap();
            drop(guard);
            let set = set.into_inner();
            assert_eq!(set.ready(&mut events).unwrap(), 1);
            assert_eq!({ events[0].u64 }, 2);
            // Level-triggered: still there until it is taken.
            assert_eq!(set.ready(&mut events).unwrap(), 1);
            let mut buf = [0u8; 8];
            seqpacket::recv(ours[2].as_fd(), &mut buf, 0).unwrap();
            assert_eq!(set.ready(&mut events).unwrap(), 0);
            // A closed peer stays readable (end of file) until removed.
            drop(theirs);
            assert_eq!(set.ready(&mut events).unwrap(), 3);
            for s in &ours {
                set.remove(s.as_fd());
            }
            assert_eq!(set.ready(&mut events).unwrap(), 0);
        });
    }
}
