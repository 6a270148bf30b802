//! Sending and receiving one SOCK_SEQPACKET message with its fds.
//!
//! The receive side is the security boundary of fd passing: it always uses
//! MSG_CMSG_CLOEXEC (so a received client socket can never leak into an exec'd
//! child), and it treats a truncated message or truncated control data
//! (MSG_TRUNC / MSG_CTRUNC) as an error after closing every fd that did arrive.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType,
};
use thiserror::Error;

/// Largest number of fds one message may carry (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS_PER_MESSAGE: usize = 250;

/// Errors from one send or receive.
#[derive(Debug, Error)]
pub enum PacketError {
    #[error("socket {fd}: would block")]
    WouldBlock { fd: RawFd },
    #[error("socket {fd}: peer closed")]
    Closed { fd: RawFd },
    #[error("socket {fd}: message truncated (larger than {cap} bytes)")]
    Truncated { fd: RawFd, cap: usize },
    #[error("socket {fd}: control data truncated (MSG_CTRUNC): fds were lost")]
    ControlTruncated { fd: RawFd },
    #[error("socket {fd}: {count} fds in one message, more than {max}")]
    TooManyFds { fd: RawFd, count: usize, max: usize },
    #[error("socket {fd}: unexpected control message")]
    UnexpectedControl { fd: RawFd },
    #[error("socket {fd}: {source}")]
    Io { fd: RawFd, source: nix::Error },
}

impl PacketError {
    /// True for EAGAIN: the caller should wait for readiness and retry.
    pub fn is_would_block(&self) -> bool {
        matches!(self, PacketError::WouldBlock { .. })
    }
}

/// A connected pair of SOCK_SEQPACKET sockets, both close-on-exec and non-blocking.
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), PacketError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|source| PacketError::Io { fd: -1, source })
}

/// Sends one message made of `parts` with `fds` attached. Never blocks, never raises SIGPIPE.
pub fn send(fd: BorrowedFd<'_>, parts: &[&[u8]], fds: &[RawFd]) -> Result<usize, PacketError> {
    let raw = fd.as_raw_fd();
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(PacketError::TooManyFds {
            fd: raw,
            count: fds.len(),
            max: MAX_FDS_PER_MESSAGE,
        });
    }
    let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    match sendmsg::<()>(raw, &iov, cmsgs, flags, None) {
        Ok(n) => Ok(n),
        Err(nix::Error::EAGAIN) => Err(PacketError::WouldBlock { fd: raw }),
        Err(nix::Error::EPIPE) | Err(nix::Error::ECONNRESET) => Err(PacketError::Closed { fd: raw }),
        Err(source) => Err(PacketError::Io { fd: raw, source }),
    }
}

/// Receives one message into `buf`, with at most `max_fds` fds.
///
/// Returns the message length and the fds, each already close-on-exec. On any
/// truncation every fd that arrived is closed before the error is returned.
pub fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> Result<(usize, Vec<OwnedFd>), PacketError> {
    let raw = fd.as_raw_fd();
    let cap = buf.len();
    let max_fds = max_fds.min(MAX_FDS_PER_MESSAGE);
    // Room for one more fd than allowed, so "too many" is seen rather than truncated.
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE + 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = match recvmsg::<()>(raw, &mut iov, Some(&mut cmsg_space), flags) {
        Ok(m) => m,
        Err(nix::Error::EAGAIN) => return Err(PacketError::WouldBlock { fd: raw }),
        Err(source) => return Err(PacketError::Io { fd: raw, source }),
    };
    let mut fds = Vec::new();
    let mut unexpected = false;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmRights(received) => {
                    for r in received {
                        // SAFETY: the kernel just installed this fd in our table for us;
                        // nothing else owns it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                    }
                }
                _ => unexpected = true,
            }
        }
    }
    let bytes = msg.bytes;
    let mflags = msg.flags;
    if mflags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(PacketError::ControlTruncated { fd: raw });
    }
    if mflags.contains(MsgFlags::MSG_TRUNC) {
        return Err(PacketError::Truncated { fd: raw, cap });
    }
    if unexpected {
        return Err(PacketError::UnexpectedControl { fd: raw });
    }
    if fds.len() > max_fds {
        return Err(PacketError::TooManyFds {
            fd: raw,
            count: fds.len(),
            max: max_fds,
        });
    }
    if bytes == 0 && fds.is_empty() {
        return Err(PacketError::Closed { fd: raw });
    }
    Ok((bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn fds_arrive_cloexec_and_extra_fds_are_refused() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, y) = seqpacket_pair().unwrap();
        send(a.as_fd(), &[b"hi"], &[x.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv(b.as_fd(), &mut buf, 1).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(fds.len(), 1);
        assert!(crate::fds::is_cloexec(fds[0].as_raw_fd()).unwrap());

        send(a.as_fd(), &[b"two"], &[x.as_raw_fd(), y.as_raw_fd()]).unwrap();
        assert!(matches!(
            recv(b.as_fd(), &mut buf, 1),
            Err(PacketError::TooManyFds { .. })
        ));
    }

    #[test]
    fn truncation_is_an_error() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _y) = seqpacket_pair().unwrap();
        send(a.as_fd(), &[&[7u8; 64]], &[x.as_raw_fd()]).unwrap();
        let mut small = [0u8; 8];
        assert!(matches!(
            recv(b.as_fd(), &mut small, 1),
            Err(PacketError::Truncated { .. })
        ));
        // The message is consumed; nothing else queued.
        assert!(recv(b.as_fd(), &mut small, 1).unwrap_err().is_would_block());
    }

    #[test]
    fn closed_peer_is_reported() {
        let (a, b) = seqpacket_pair().unwrap();
        drop(a);
        let mut buf = [0u8; 8];
        assert!(matches!(
            recv(b.as_fd(), &mut buf, 1),
            Err(PacketError::Closed { .. })
        ));
    }
}
