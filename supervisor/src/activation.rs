//! Socket activation (`sd_listen_fds(3)`): the listening sockets a service manager
//! passes in `LISTEN_FDS` (with `LISTEN_PID` and `LISTEN_FDNAMES`) are used instead of
//! binding, each matched to a `listen`, `listen_tls` or `[status] metrics_listen`
//! address by its own local address (getsockname), not by its name or its position.
//!
//! A passed socket that no configured address names stops the start (an error that
//! says which socket and which address); a configured address that no passed socket
//! carries is bound as usual. The passed sockets are kept for the supervisor's life, so
//! a reload that keeps (or brings back) an address uses the very socket systemd holds.
//! The `sd-notify` crate marks them close-on-exec; children never see `LISTEN_*` since
//! every child's environment is cleared (`spawn.rs`).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, SockaddrStorage};
use thiserror::Error;

use crate::listen::{self, ListenError};

/// Why the passed sockets cannot be used.
#[derive(Debug, Error)]
pub enum ActivationError {
    #[error("socket activation: LISTEN_FDS/LISTEN_FDNAMES: {0}")]
    Env(std::io::Error),
    #[error("socket activation: passed fd {fd} ({name}): {what}: {source}")]
    Sys {
        fd: RawFd,
        name: String,
        what: &'static str,
        source: nix::Error,
    },
    #[error("socket activation: passed fd {fd} ({name}) is not a listening TCP socket")]
    NotTcpListener { fd: RawFd, name: String },
    #[error(
        "socket activation: passed fd {fd} ({name}) is bound to {addr}, which no listen, \
         listen_tls or [status] metrics_listen names (add it to the configuration or \
         remove it from the .socket unit's ListenStream=)"
    )]
    Unmatched {
        fd: RawFd,
        name: String,
        addr: SocketAddr,
    },
}

/// One socket the service manager passed.
#[derive(Debug)]
struct Passed {
    addr: SocketAddr,
    name: String,
    fd: OwnedFd,
}

static PASSED: OnceLock<Vec<Passed>> = OnceLock::new();

/// Takes the passed sockets (once; later calls do nothing) and checks each against
/// `configured`. Without `LISTEN_PID` naming this process, there are none.
pub fn take(configured: &[SocketAddr]) -> Result<usize, ActivationError> {
    if let Some(p) = PASSED.get() {
        return Ok(p.len());
    }
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(ActivationError::Env)?
        .collect();
    let mut passed = Vec::with_capacity(fds.len());
    for (raw, name) in fds {
        // SAFETY: sd_listen_fds' contract: fds 3..3+LISTEN_FDS were opened for this
        // process (LISTEN_PID is ours) and nothing else in it owns them.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        passed.push(inspect(raw, name, fd)?);
    }
    for p in &passed {
        if !configured.iter().any(|c| matches(*c, p.addr)) {
            return Err(ActivationError::Unmatched {
                fd: p.fd.as_raw_fd(),
                name: p.name.clone(),
                addr: p.addr,
            });
        }
        tracing::info!(addr = %p.addr, name = %p.name, "socket activation: using the passed socket");
    }
    let n = passed.len();
    let _ = PASSED.set(passed);
    Ok(n)
}

/// The listener for `addr`: a copy of the passed socket with that address, else a new
/// one bound now. Returns the address actually used (port 0 resolved).
pub fn listener(addr: SocketAddr) -> Result<(SocketAddr, OwnedFd), ListenError> {
    if let Some(p) = PASSED.get().into_iter().flatten().find(|p| matches(addr, p.addr)) {
        let fd = p.fd.try_clone().map_err(|e| ListenError::Sys {
            addr,
            what: "dup",
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
        })?;
        return Ok((p.addr, fd));
    }
    listen::bind_listener(addr)
}

/// Whether the configured address `want` names the bound address `got`: exactly (a
/// port 0 asks for a fresh port, never a passed socket's).
fn matches(want: SocketAddr, got: SocketAddr) -> bool {
    want == got
}

/// The passed fd's local address, after checking it is a listening TCP socket, made
/// non-blocking as the multiplexers expect.
fn inspect(raw: RawFd, name: String, fd: OwnedFd) -> Result<Passed, ActivationError> {
    let sys = |what: &'static str, name: &str| {
        let name = name.to_owned();
        move |source| ActivationError::Sys {
            fd: raw,
            name,
            what,
            source,
        }
    };
    let kind = getsockopt(&fd, sockopt::SockType).map_err(sys("SO_TYPE", &name))?;
    let listening = getsockopt(&fd, sockopt::AcceptConn).map_err(sys("SO_ACCEPTCONN", &name))?;
    let bound: SockaddrStorage = getsockname(raw).map_err(sys("getsockname", &name))?;
    let addr = bound
        .as_sockaddr_in()
        .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
        .or_else(|| {
            bound
                .as_sockaddr_in6()
                .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
        });
    let (Some(addr), SockType::Stream, true) = (addr, kind, listening) else {
        return Err(ActivationError::NotTcpListener { fd: raw, name });
    };
    // As for the sockets bound here: accepted sockets inherit TCP_NODELAY and
    // TCP_NOTSENT_LOWAT.
    nix::sys::socket::setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(sys("TCP_NODELAY", &name))?;
    crate::listen::set_notsent_lowat(&fd).map_err(sys("TCP_NOTSENT_LOWAT", &name))?;
    let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(sys("F_GETFL", &name))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(raw, FcntlArg::F_SETFL(flags)).map_err(sys("F_SETFL", &name))?;
    Ok(Passed { addr, name, fd })
}
