//! Hand-backs: connections a processor returns (a later request for a host it does
//! not serve), taken from each environment's socket by one loop per environment,
//! checked as untrusted as a fresh connection and routed again.
//!
//! A hand-back whose payload holds a whole head for a pool with room is routed and
//! handed off at once ([`conn::try_hand_off`], as a fresh connection's first read is):
//! never registered with epoll, no task spawned. Anything else (a partial head, a
//! full pool, an error or the status page to answer) goes to [`conn::handle`].

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use common::handoff::{self, HandoffError};
use common::seqpacket::PacketError;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::warn;

use crate::conn;
use crate::Shared;

/// Takes environment `env`'s hand-backs until told to stop.
pub(crate) async fn hand_back_loop(
    env: usize,
    shared: Rc<Shared>,
    mut stop: watch::Receiver<bool>,
    inflight: Rc<()>,
) -> Result<(), String> {
    loop {
        let sock = &shared.env_socks[env];
        let mut guard = tokio::select! {
            g = sock.readable() => g.map_err(|e| format!("hand-back loop of {}: {e}", shared.env_name(env)))?,
            _ = stop.changed() => return Ok(()),
        };
        loop {
            let got = with_hand_back(guard.get_inner().as_fd(), |meta, payload, fd| {
                take(env, meta, payload, fd, &shared, &inflight)
            });
            match got {
                Ok(()) => {}
                Err(HandoffError::Packet(e)) if e.is_would_block() => {
                    guard.clear_ready();
                    break;
                }
                Err(HandoffError::Packet(PacketError::Closed { .. })) => return Ok(()),
                Err(e) => warn!(environment = %shared.env_name(env), "bad hand-back refused: {e}"),
            }
        }
    }
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
    if conn::try_hand_off(payload, &stream, from, shared) {
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
