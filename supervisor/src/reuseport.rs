//! One listening socket per multiplexer slot and address (`SO_REUSEPORT`), so that
//! the kernel gives each new connection to one socket, and so wakes one multiplexer,
//! instead of waking every multiplexer waiting on a shared listener (the herd).
//!
//! Slot `i` (a multiplexer's `Kind::Multiplexer { index }`) accepts on socket
//! `i mod n`, where `n` is the current generation's `min_multiplexers`: slot 0's
//! socket is the listener of `Listeners` itself, slots `1..n` are bound here to the
//! same address. Multiplexers started above `min_multiplexers` for load share a
//! socket with a lower slot. The supervisor keeps every socket: a multiplexer that
//! dies leaves its queue in its socket, and its replacement (same index) gets that
//! very socket, so nothing queued is lost. A reload that lowers `min_multiplexers`
//! drops the supervisor's copy of the sockets past the new `n`; the old multiplexers
//! hold theirs until they stop accepting, and when the last copy closes the kernel
//! moves that socket's queue to the others (`net.ipv4.tcp_migrate_req = 1`, Linux
//! 5.14, set here when it is not; without it a closing socket would reset its queue,
//! so every address then keeps one shared socket, as a socket passed by systemd
//! without `ReusePort=yes` does).

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::sys::socket::{getsockopt, sockopt};
use thiserror::Error;
use tracing::{info, warn};

use crate::listen;

/// The sysctl that makes a closing listener pass its queue to the others of its group.
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Why an address keeps one shared socket.
#[derive(Debug, Error)]
pub enum ReuseportError {
    #[error("{MIGRATE_REQ}: {0} (Linux 5.14 or later, as root, moves a closed socket's queue)")]
    Migrate(String),
    #[error("{addr}: the listener has no SO_REUSEPORT (a passed socket: ReusePort=yes in the .socket unit)")]
    NotReusePort { addr: SocketAddr },
    #[error("{addr}: binding slot {slot}'s socket: {source}")]
    Bind {
        addr: SocketAddr,
        slot: usize,
        source: listen::ListenError,
    },
}

/// The sockets of slots `1..n` per address (slot 0 is the address's own listener).
#[derive(Debug, Default)]
pub struct SlotSockets {
    extra: Vec<(SocketAddr, Vec<OwnedFd>)>,
}

impl SlotSockets {
    /// The sockets for `slots` slots of every listener in `primaries` (bound
    /// addresses), keeping those `current` has. An address that cannot have its own
    /// sockets (see [`ReuseportError`]) keeps one shared socket and says why, once.
    pub fn build<'a>(
        primaries: impl IntoIterator<Item = &'a (SocketAddr, OwnedFd)>,
        slots: u32,
        current: &SlotSockets,
    ) -> SlotSockets {
        let want = (slots.max(1) as usize).saturating_sub(1);
        let mut extra = Vec::new();
        if want == 0 {
            return SlotSockets { extra };
        }
        if let Err(e) = migration() {
            warn_once(&format!("{e}"));
            return SlotSockets { extra };
        }
        for (addr, fd) in primaries {
            match sockets_for(*addr, fd.as_fd(), want, current) {
                Ok(fds) => extra.push((*addr, fds)),
                Err(e) => warn_once(&format!("{e}")),
            }
        }
        SlotSockets { extra }
    }

    /// The socket slot `index` accepts on for the listener `primary` bound to `addr`.
    pub fn pick<'a>(&'a self, addr: SocketAddr, primary: BorrowedFd<'a>, index: u32) -> BorrowedFd<'a> {
        let Some((_, fds)) = self.extra.iter().find(|(a, _)| *a == addr) else {
            return primary;
        };
        match (index as usize) % (fds.len() + 1) {
            0 => primary,
            i => fds.get(i - 1).map(AsFd::as_fd).unwrap_or(primary),
        }
    }

    /// Drops the supervisor's copies (the server is stopping).
    pub fn clear(&mut self) {
        self.extra.clear();
    }
}

/// `want` sockets for slots 1.. of `addr`: `current`'s (dup'd), then new ones.
fn sockets_for(
    addr: SocketAddr,
    primary: BorrowedFd<'_>,
    want: usize,
    current: &SlotSockets,
) -> Result<Vec<OwnedFd>, ReuseportError> {
    if !getsockopt(&primary, sockopt::ReusePort).unwrap_or(false) {
        return Err(ReuseportError::NotReusePort { addr });
    }
    let kept = current.extra.iter().find(|(a, _)| *a == addr).map(|(_, f)| f);
    let mut fds = Vec::with_capacity(want);
    for slot in 1..=want {
        let fd = match kept.and_then(|k| k.get(slot - 1)) {
            Some(fd) => fd.try_clone().map_err(|e| ReuseportError::Bind {
                addr,
                slot,
                source: listen::ListenError::Sys {
                    addr,
                    what: "dup",
                    source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
                },
            })?,
            None => {
                listen::join_listener(addr)
                    .map_err(|source| ReuseportError::Bind { addr, slot, source })?
                    .1
            }
        };
        fds.push(fd);
    }
    info!(%addr, sockets = want + 1, "one SO_REUSEPORT socket per multiplexer slot");
    Ok(fds)
}

/// Checks (once) that a closing socket's queue moves to the others: sets
/// `tcp_migrate_req` to 1 when it is 0.
fn migration() -> Result<(), ReuseportError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let read = || std::fs::read_to_string(MIGRATE_REQ).map(|s| s.trim().to_owned());
        match read() {
            Ok(v) if v == "1" => Ok(()),
            Ok(_) => {
                std::fs::write(MIGRATE_REQ, "1").map_err(|e| format!("cannot set it to 1: {e}"))?;
                info!("set net.ipv4.tcp_migrate_req = 1: a listener that closes passes its queue on");
                match read() {
                    Ok(v) if v == "1" => Ok(()),
                    _ => Err("set to 1 but does not read back as 1".into()),
                }
            }
            Err(e) => Err(format!("cannot read it: {e}")),
        }
    })
    .clone()
    .map_err(ReuseportError::Migrate)
}

/// One warning per distinct reason for the life of the process.
fn warn_once(why: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut said) = SAID.lock() else { return };
    if said.iter().any(|s| s == why) {
        return;
    }
    said.push(why.to_owned());
    warn!("{why}; this listener is shared by every multiplexer (each new connection wakes them all)");
}
