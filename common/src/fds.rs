//! Fixed fd numbers every child inherits, and the small fd helpers around them.
//!
//! A child of the supervisor inherits exactly: 0 and 1 (`/dev/null`), 2 (the
//! supervisor's stderr, the error log) and [`CONTROL_FD`]. Everything else it gets
//! arrives over the control channel with SCM_RIGHTS, received close-on-exec; a
//! processor puts its environment's log pipe on 1 and 2 before it drops privileges.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use thiserror::Error;

/// The child's end of its control channel (a SOCK_SEQPACKET socket).
pub const CONTROL_FD: RawFd = 3;

/// Errors from fd bookkeeping.
#[derive(Debug, Error)]
pub enum FdError {
    #[error("fd {fd}: fcntl: {source}")]
    Fcntl { fd: RawFd, source: nix::Error },
    #[error("fd {fd} is not a stream socket")]
    NotStreamSocket { fd: RawFd },
}

/// Puts an fd into non-blocking mode.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), FdError> {
    let raw = fd.as_raw_fd();
    let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(|source| FdError::Fcntl { fd: raw, source })?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(raw, FcntlArg::F_SETFL(flags)).map_err(|source| FdError::Fcntl { fd: raw, source })?;
    Ok(())
}

/// True if the fd has FD_CLOEXEC set.
pub fn is_cloexec(fd: RawFd) -> Result<bool, FdError> {
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(|source| FdError::Fcntl { fd, source })?;
    Ok(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
}

/// Checks that a received fd is a stream socket before trusting it as a client
/// connection (one syscall: SO_TYPE fails with ENOTSOCK on anything but a socket).
pub fn check_stream_socket(fd: &OwnedFd) -> Result<(), FdError> {
    let raw = fd.as_raw_fd();
    let ty = nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::SockType)
        .map_err(|_| FdError::NotStreamSocket { fd: raw })?;
    if ty != nix::sys::socket::SockType::Stream {
        return Err(FdError::NotStreamSocket { fd: raw });
    }
    Ok(())
}

/// Registers an owned fd with the current tokio reactor.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open and refers to the same file description for as long as
    // it lives, and the AsyncFd owns it for exactly that long.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

/// Registers a hand-off socket with the current tokio reactor for readability only (a
/// processor's end). Every processor of a pool holds the same end of its environment's
/// socket: registered for writability too, each message taken off the queue would wake
/// every holder (the edge of room coming back). The multiplexers' ends are in no
/// reactor (`multiplexer::handback`). [`crate::handoff::send_waiting`]
/// waits for room on a registration of its own, only while a queue is full.
pub fn async_fd_readable(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open and refers to the same file description for as long as
    // it lives, and the AsyncFd owns it for exactly that long.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Puts `fd` on stderr (fd 2): the reopened error log after SIGUSR1.
pub fn install_stderr(fd: &OwnedFd) -> Result<(), FdError> {
    install_on(fd, 2)
}

/// Puts `fd` on stdout and stderr (fds 1 and 2): a processor's log pipe.
pub fn install_stdio(fd: &OwnedFd) -> Result<(), FdError> {
    install_on(fd, 1)?;
    install_on(fd, 2)
}

fn install_on(fd: &OwnedFd, target: RawFd) -> Result<(), FdError> {
    let raw = fd.as_raw_fd();
    // SAFETY: dup2 onto a standard fd replaces it atomically; both fds are valid, and
    // nothing in this process owns `target` as an OwnedFd.
    if unsafe { libc::dup2(raw, target) } < 0 {
        return Err(FdError::Fcntl {
            fd: raw,
            source: nix::Error::last(),
        });
    }
    Ok(())
}
