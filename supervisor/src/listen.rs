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
/// and returns the address actually bound (port 0 resolved) with the socket. An
/// address some other socket listens on is refused (EADDRINUSE) as without
/// `SO_REUSEPORT`: a second server started as root on the same address must fail, not
/// join the first one's group and take half its connections.
pub fn bind_listener(addr: SocketAddr) -> Result<(SocketAddr, OwnedFd), ListenError> {
    if addr.port() != 0 {
        // A probe without SO_REUSEPORT: it cannot bind where anything listens.
        drop(new_socket(addr, false)?);
    }
    join_listener(addr)
}

/// Binds another socket of `addr`'s `SO_REUSEPORT` group (a multiplexer slot's,
/// `reuseport.rs`), or the first one of a new group.
pub fn join_listener(addr: SocketAddr) -> Result<(SocketAddr, OwnedFd), ListenError> {
    let sys = |what| move |source| ListenError::Sys { addr, what, source };
    let fd = new_socket(addr, true)?;
    // Accepted sockets inherit TCP_NODELAY on Linux: set once here, not per connection.
    setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(sys("TCP_NODELAY"))?;
    set_notsent_lowat(&fd).map_err(sys("TCP_NOTSENT_LOWAT"))?;
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

/// A TCP socket bound to `addr` (not listening yet), with `SO_REUSEPORT` when `group`.
fn new_socket(addr: SocketAddr, group: bool) -> Result<OwnedFd, ListenError> {
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
    if group {
        // So that more sockets on this address can join it, one per multiplexer slot
        // (`reuseport.rs`); only a process of the same effective uid (root) can join.
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(sys("SO_REUSEPORT"))?;
    }
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(sys("IPV6_V6ONLY"))?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(sys("bind"))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_listener_is_refused_but_a_slot_joins() {
        let (addr, _first) = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        let again = bind_listener(addr);
        assert!(
            matches!(
                again,
                Err(ListenError::Sys {
                    what: "bind",
                    source: nix::Error::EADDRINUSE,
                    ..
                })
            ),
            "{again:?}"
        );
        let (joined, _slot) = join_listener(addr).unwrap();
        assert_eq!(joined, addr);
    }
}
