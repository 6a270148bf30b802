//! An fd keeper: a small process that holds one end of every environment's hand-off
//! socket for one generation, so that no process needs more than one fd per
//! environment (issue 15 item 6). A generation has two: one keeps the multiplexer
//! ends (and streams them to each new multiplexer), one keeps the processor ends (and
//! gives one to each new processor, through the supervisor). The supervisor keeps
//! neither end itself.
//!
//! A keeper runs as the multiplexers' user (privileges dropped like any child), reads
//! only its control channel from the supervisor, never a byte from a client or a
//! tenant, and holds nothing but its ends: the multiplexers hold every multiplexer end
//! already and see every connection first, so holding the processor ends gives that
//! user nothing new. It ends when its control channel closes (its generation is
//! dropped, or the supervisor died).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bootfds::{check_kind, FdKind};
use crate::control::{self, ControlError, FromChild, Receiver, ToChild};
use crate::seqpacket::MAX_FDS_PER_MESSAGE;

/// A keeper's slice: which ends it keeps and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperBoot {
    /// `"multiplexer"` or `"processor"`: for its log lines.
    pub side: String,
    pub generation: u64,
    /// How many ends will arrive (one per environment).
    pub ends: u32,
}

/// The largest control message a keeper reads (its messages carry no data).
const MAX_REQUEST: usize = 4096;
/// How long a keeper waits for the supervisor: as long as it lives (the channel's end
/// of file, or the parent-death signal, ends the keeper).
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a keeper stopped.
#[derive(Debug, Error)]
pub enum KeeperError {
    #[error("control channel: {0}")]
    Control(#[from] ControlError),
    #[error("{got} ends arrived, {want} announced")]
    TooMany { got: usize, want: u32 },
    #[error("end {index}: {why}")]
    Kind { index: usize, why: String },
    #[error("{0:?}: not a message for an fd keeper")]
    Unexpected(String),
}

/// Keeps ends and answers the supervisor until the control channel closes.
pub fn run(boot: &KeeperBoot, control: OwnedFd) -> Result<(), KeeperError> {
    let mut ends: Vec<OwnedFd> = Vec::new();
    let mut rx = Receiver::with_max(MAX_REQUEST);
    loop {
        let (msg, fds) = match rx.recv_blocking::<ToChild>(control.as_fd(), MAX_FDS_PER_MESSAGE, FOREVER) {
            Ok(m) => m,
            // The supervisor dropped the generation (or died): our job is over.
            Err(ControlError::Empty)
            | Err(ControlError::Packet(crate::seqpacket::PacketError::Closed { .. })) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match msg {
            ToChild::Keep => {
                if ends.len() + fds.len() > boot.ends as usize {
                    return Err(KeeperError::TooMany {
                        got: ends.len() + fds.len(),
                        want: boot.ends,
                    });
                }
                for fd in fds {
                    check_kind(fd.as_fd(), FdKind::SeqPacket).map_err(|why| KeeperError::Kind {
                        index: ends.len(),
                        why,
                    })?;
                    ends.push(fd);
                }
            }
            ToChild::Give { env } => {
                let fd: Vec<RawFd> = ends
                    .get(env as usize)
                    .map(AsRawFd::as_raw_fd)
                    .into_iter()
                    .collect();
                control::send(control.as_fd(), &FromChild::Given { env }, &fd)?;
            }
            ToChild::Stream => {
                // A multiplexer that died or never reads costs this stream only (each
                // send waits a bounded time); the keeper carries on.
                if let Some(to) = fds.first() {
                    if let Err(e) = stream(&ends, to.as_fd()) {
                        eprintln!(
                            "bulkhead fd-keeper ({} ends): streaming to a multiplexer: {e}",
                            boot.side
                        );
                    }
                }
            }
            ToChild::Pending => {
                let n = ends.iter().filter(|e| waiting(e.as_fd())).count();
                control::send(control.as_fd(), &FromChild::Pending { ends: n as u32 }, &[])?;
            }
            ToChild::CloseQueues => {
                for e in &ends {
                    let _ = nix::sys::socket::shutdown(e.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                }
            }
            other => return Err(KeeperError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// How long a stream waits for the receiver to take a batch.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `ends` in order on `to`, at most [`MAX_FDS_PER_MESSAGE`] per message, each
/// batch once the receiver has acknowledged the one before (an empty `Keep`). The
/// kernel counts fds in flight per user against its open-files limit and then refuses
/// every SCM_RIGHTS message of that user (ETOOMANYREFS): the keeper runs as the
/// multiplexers' user, so 10,000 ends queued at once towards a multiplexer still
/// starting would make the running multiplexers' hand-offs fail.
pub fn stream(ends: &[OwnedFd], to: BorrowedFd<'_>) -> Result<(), ControlError> {
    let raw: Vec<RawFd> = ends.iter().map(AsRawFd::as_raw_fd).collect();
    let mut rx = Receiver::with_max(MAX_REQUEST);
    for batch in raw.chunks(MAX_FDS_PER_MESSAGE) {
        control::send(to, &ToChild::Keep, batch)?;
        match rx.recv_blocking::<ToChild>(to, 0, BATCH_TIMEOUT)? {
            (ToChild::Keep, _) => {}
            _ => return Err(ControlError::Empty),
        }
    }
    Ok(())
}

/// Receives `count` ends from a keeper's stream (see [`stream`]), each checked to be a
/// SEQPACKET socket; any other message, too many fds or a wrong kind is an error.
pub fn receive(from: BorrowedFd<'_>, count: usize, timeout: Duration) -> Result<Vec<OwnedFd>, KeeperError> {
    let mut rx = Receiver::with_max(MAX_REQUEST);
    let mut ends = Vec::with_capacity(count);
    let deadline = std::time::Instant::now() + timeout;
    while ends.len() < count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (msg, fds) = rx.recv_blocking::<ToChild>(from, count - ends.len(), left)?;
        if !matches!(msg, ToChild::Keep) {
            return Err(KeeperError::Unexpected(format!("{msg:?}")));
        }
        for fd in fds {
            check_kind(fd.as_fd(), FdKind::SeqPacket).map_err(|why| KeeperError::Kind {
                index: ends.len(),
                why,
            })?;
            ends.push(fd);
        }
        // Taken: the next batch may come.
        control::send(from, &ToChild::Keep, &[])?;
    }
    Ok(ends)
}

/// Whether a message waits to be read on `fd` (`FIONREAD`).
fn waiting(fd: BorrowedFd<'_>) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    r == 0 && n > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seqpacket::seqpacket_pair;

    /// 600 ends streamed in batches arrive in order, each one the same socket.
    #[test]
    fn streams_every_end_in_order() {
        let pairs: Vec<(OwnedFd, OwnedFd)> = (0..600).map(|_| seqpacket_pair().unwrap()).collect();
        let ends: Vec<OwnedFd> = pairs.iter().map(|(a, _)| a.try_clone().unwrap()).collect();
        let (tx, rx) = seqpacket_pair().unwrap();
        let t = std::thread::spawn(move || stream(&ends, tx.as_fd()).unwrap());
        let got = receive(rx.as_fd(), 600, Duration::from_secs(10)).unwrap();
        t.join().unwrap();
        assert_eq!(got.len(), 600);
        for (i, fd) in got.iter().enumerate() {
            crate::seqpacket::send(fd.as_fd(), &[b"x"], &[]).unwrap();
            let mut buf = [0u8; 4];
            let (n, _) = crate::seqpacket::recv(pairs[i].1.as_fd(), &mut buf, 0).unwrap();
            assert_eq!(n, 1, "end {i}");
        }
    }

    /// A stream that sends anything but ends is refused.
    #[test]
    fn refuses_other_messages() {
        let (tx, rx) = seqpacket_pair().unwrap();
        control::send(tx.as_fd(), &ToChild::Pending, &[]).unwrap();
        assert!(matches!(
            receive(rx.as_fd(), 1, Duration::from_secs(1)),
            Err(KeeperError::Unexpected(_))
        ));
    }
}
