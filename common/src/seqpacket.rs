//! Sending and receiving one SOCK_SEQPACKET message with its fds.
//!
//! The receive side is the security boundary of fd passing: it always uses
//! MSG_CMSG_CLOEXEC (so a received client socket can never leak into an exec'd
//! child), and it treats a truncated message or truncated control data
//! (MSG_TRUNC / MSG_CTRUNC) as an error after closing every fd that did arrive.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};
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
/// Returns the message length and the fds, each already close-on-exec. Every fd that
/// arrived is owned before any check, so on any error (truncation, too many fds, an
/// unexpected control message) all of them are closed before the error is returned.
pub fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> Result<(usize, Vec<OwnedFd>), PacketError> {
    recv_with_space(fd, buf, max_fds, cmsg_space(SCM_MAX_FD))
}

/// The kernel's limit of fds in one SCM_RIGHTS message (`SCM_MAX_FD`).
pub const SCM_MAX_FD: usize = 253;

/// Words of the control buffer: at least `CMSG_SPACE(SCM_MAX_FD * 4)` (1032 bytes on
/// 64-bit Linux), checked by a test.
const CONTROL_WORDS: usize = 160;

/// Bytes of control buffer for `n` fds.
fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is pure arithmetic.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// [`recv`] with a control buffer of `space` bytes (tests shrink it to force MSG_CTRUNC).
fn recv_with_space(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    space: usize,
) -> Result<(usize, Vec<OwnedFd>), PacketError> {
    let raw = fd.as_raw_fd();
    let cap = buf.len();
    let max_fds = max_fds.min(MAX_FDS_PER_MESSAGE);
    // On the stack, in u64 words (cmsghdr alignment); room for SCM_MAX_FD fds.
    let mut control = [0u64; CONTROL_WORDS];
    let space = space.min(CONTROL_WORDS * 8);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value; the fields are set below.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = space as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: `hdr` points at one iovec over `buf` and at `control`, both valid and
    // writable for the lengths given, for the duration of the call.
    let n = unsafe { libc::recvmsg(raw, &mut hdr, flags) };
    if n < 0 {
        return match nix::Error::last() {
            nix::Error::EAGAIN => Err(PacketError::WouldBlock { fd: raw }),
            source => Err(PacketError::Io { fd: raw, source }),
        };
    }
    let bytes = n as usize;
    let mut fds = Vec::new();
    let mut unexpected = false;
    // SAFETY: `hdr` was filled by recvmsg; the CMSG_* macros walk only the
    // `msg_controllen` bytes the kernel wrote into `control`.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !c.is_null() {
        // SAFETY: `c` is a header inside `control`, as returned by CMSG_FIRSTHDR/NXTHDR.
        let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: pure arithmetic.
            let data_off = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(data_off) / std::mem::size_of::<RawFd>();
            // SAFETY: the data of this header holds `count` fds (the kernel sets
            // cmsg_len to cover only what it installed); read unaligned to be safe.
            let data = unsafe { libc::CMSG_DATA(c) } as *const RawFd;
            for i in 0..count {
                // SAFETY: within this header's data, as computed above.
                let r = unsafe { std::ptr::read_unaligned(data.add(i)) };
                if r >= 0 {
                    // SAFETY: the kernel just installed this fd in our table for us;
                    // nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                }
            }
        } else {
            unexpected = true;
        }
        // SAFETY: `c` is a valid header of `hdr`'s control buffer.
        c = unsafe { libc::CMSG_NXTHDR(&hdr, c) };
    }
    let mflags = hdr.msg_flags;
    if mflags & libc::MSG_CTRUNC != 0 {
        return Err(PacketError::ControlTruncated { fd: raw });
    }
    if mflags & libc::MSG_TRUNC != 0 {
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
        drop(fds);

        send(a.as_fd(), &[b"two"], &[x.as_raw_fd(), y.as_raw_fd()]).unwrap();
        assert!(matches!(
            recv(b.as_fd(), &mut buf, 1),
            Err(PacketError::TooManyFds { .. })
        ));
        // Both fds that arrived were closed.
        assert_eq!((copies_of(&x), copies_of(&y)), (1, 1));
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
        assert_eq!(copies_of(&x), 1, "the fd of a truncated message leaked");
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

    /// How many of our fds refer to the same socket as `x` (by inode).
    fn copies_of(x: &OwnedFd) -> usize {
        let want = std::fs::read_link(format!("/proc/self/fd/{}", x.as_raw_fd())).unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|l| *l == want)
            .count()
    }

    #[test]
    fn control_buffer_holds_scm_max_fd() {
        assert!(cmsg_space(SCM_MAX_FD) <= CONTROL_WORDS * 8);
    }

    /// 253 fds (SCM_MAX_FD, one fd repeated) into a control buffer that holds
    /// fewer: MSG_CTRUNC, and every fd that did arrive is closed.
    #[test]
    fn control_truncation_closes_every_fd_that_arrived() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _y) = seqpacket_pair().unwrap();
        assert_eq!(copies_of(&x), 1);
        let many = vec![x.as_raw_fd(); SCM_MAX_FD];
        let iov = [IoSlice::new(b"m")];
        let cmsg = [ControlMessage::ScmRights(&many)];
        for _ in 0..5 {
            sendmsg::<()>(a.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_DONTWAIT, None).unwrap();
            let mut buf = [0u8; 8];
            let r = recv_with_space(b.as_fd(), &mut buf, 1, cmsg_space(16));
            assert!(matches!(r, Err(PacketError::ControlTruncated { .. })), "{r:?}");
            assert_eq!(copies_of(&x), 1, "fds that arrived with MSG_CTRUNC leaked");
        }
        // The full-size buffer takes all 253 and refuses them as too many, closing all.
        for _ in 0..5 {
            sendmsg::<()>(a.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_DONTWAIT, None).unwrap();
            let mut buf = [0u8; 8];
            let r = recv(b.as_fd(), &mut buf, 1);
            assert!(
                matches!(r, Err(PacketError::TooManyFds { count: 253, .. })),
                "{r:?}"
            );
            assert_eq!(copies_of(&x), 1, "refused fds leaked");
        }
    }
}
