//! Binding the listeners (the only sockets the supervisor opens to the network; it
//! never accepts on them).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use thiserror::Error;

/// Why a listener could not be opened.
#[derive(Debug, Error)]
pub enum ListenError {
    #[error("listen {addr}: {what}: {source}")]
    Sys {
        addr: SocketAddr,
        what: &'static str,
        source: nix::Error,
    },
}

const BACKLOG: i32 = 1024;

/// `TCP_NOTSENT_LOWAT` of every listener (accepted sockets inherit it): at most this
/// many bytes written but not yet sent wait in a connection's send queue. Without it a
/// large response (sendfile of a big file) to a client that reads through a tiny
/// window fills the queue to the autotuned send buffer (up to `tcp_wmem`'s 4 MiB): 400
/// slow-read sockets of slowhttptest took the machine's TCP memory to `tcp_mem`'s hard
/// limit and stalled every other connection for up to seconds. 128 KiB keeps a fast
/// client's pipe full (what is in flight does not count) at a write per 128 KiB.
pub const NOTSENT_LOWAT: i32 = 128 * 1024;

/// Sets [`NOTSENT_LOWAT`] on listener `fd`.
pub fn set_notsent_lowat(fd: &OwnedFd) -> nix::Result<()> {
    // SAFETY: `fd` is an open socket; the option value is a live `c_int` of the length given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&NOTSENT_LOWAT as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

/// Binds `addr` (v6 sockets are v6-only, so `0.0.0.0:80` and `[::]:80` can coexist)
/// and returns the address actually bound (port 0 resolved) with the socket.
pub fn bind_listener(addr: SocketAddr) -> Result<(SocketAddr, OwnedFd), ListenError> {
    let sys = |what| move |source| ListenError::Sys { addr, what, source };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(sys("socket"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(sys("SO_REUSEADDR"))?;
    // So that more sockets on this address can join it, one per multiplexer slot
    // (`reuseport.rs`); only a process of the same effective uid (root) can join.
    setsockopt(&fd, sockopt::ReusePort, &true).map_err(sys("SO_REUSEPORT"))?;
    // Accepted sockets inherit TCP_NODELAY on Linux: set once here, not per connection.
    setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(sys("TCP_NODELAY"))?;
    set_notsent_lowat(&fd).map_err(sys("TCP_NOTSENT_LOWAT"))?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(sys("IPV6_V6ONLY"))?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(sys("bind"))?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN)).map_err(sys("listen"))?;
    let bound: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(sys("getsockname"))?;
    let actual = bound
        .as_sockaddr_in()
        .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
        .or_else(|| {
            bound
                .as_sockaddr_in6()
                .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
        })
        .unwrap_or(addr);
    Ok((actual, fd))
}
