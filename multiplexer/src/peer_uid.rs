//! Who owns the client end of a TCP connection made on this host: one
//! NETLINK_SOCK_DIAG (inet_diag) query for the client's socket by its exact 4-tuple,
//! answered to unprivileged callers. Used only for the status page and the metrics.
//!
//! Hand-written rather than `netlink-packet-sock-diag` + `netlink-sys`: the request is
//! one fixed 72-byte message and the reply needs exactly four fields, each checked here.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use thiserror::Error;

/// Why the owner of a peer's socket is not known.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PeerUidError {
    #[error("netlink socket: errno {0}")]
    Socket(i32),
    #[error("netlink send: errno {0}")]
    Send(i32),
    #[error("netlink receive: errno {0}")]
    Recv(i32),
    #[error("no answer from the kernel within {TIMEOUT_MS} ms")]
    Timeout,
    /// No such socket on this host (a remote client, or a local one already gone).
    #[error("no socket on this host has that address pair")]
    NotFound,
    #[error("the kernel refused the query: errno {0}")]
    Kernel(i32),
    /// The socket exists but its uid means nothing: a time-wait or request socket,
    /// a listener, or one no process holds any more.
    #[error("the socket is in state {state} with inode {inode}; its uid is not an owner")]
    NoOwner { state: u8, inode: u32 },
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
}

/// How long the kernel may take to answer (it answers an exact lookup at once).
const TIMEOUT_MS: i32 = 20;
/// `SOCK_DIAG_BY_FAMILY` from `<linux/sock_diag.h>`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_NOCOOKIE`.
const NO_COOKIE: u32 = u32::MAX;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
/// Replies are one header and one `inet_diag_msg` with a few attributes.
const REPLY_BUF: usize = 4096;
/// Our sequence number; the reply must carry it.
const SEQ: u32 = 0x6275_6c6b;

/// TCP states whose socket is a full one, created by the process that owns it.
const OWNED_STATES: &[u8] = &[
    1,  // ESTABLISHED
    2,  // SYN_SENT
    4,  // FIN_WAIT1
    5,  // FIN_WAIT2 (a full socket only when its inode is set)
    8,  // CLOSE_WAIT
    9,  // LAST_ACK
    11, // CLOSING
];

/// The uid owning the socket whose local address is `peer` and whose remote address is
/// `local`: the client of a connection we accepted, when that client is on this host.
pub fn owner(peer: SocketAddr, local: SocketAddr) -> Result<u32, PeerUidError> {
    let request = request(peer, local);
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(PeerUidError::Socket(errno()));
    }
    // SAFETY: socket(2) just returned this fd; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed sockaddr_nl is valid; nl_pid 0 addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let nl_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `request` and `kernel` are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            nl_len,
        )
    };
    if sent < 0 {
        return Err(PeerUidError::Send(errno()));
    }
    if sent as usize != request.len() {
        return Err(PeerUidError::Send(libc::EMSGSIZE));
    }
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, TIMEOUT_MS) };
    if ready == 0 {
        return Err(PeerUidError::Timeout);
    }
    if ready < 0 {
        return Err(PeerUidError::Recv(errno()));
    }
    let mut buf = [0u8; REPLY_BUF];
    let mut from: libc::sockaddr_nl = kernel;
    let mut from_len = nl_len;
    // SAFETY: `buf` and `from` are valid writable buffers of the lengths given.
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            (&mut from as *mut libc::sockaddr_nl).cast(),
            &mut from_len,
        )
    };
    if n < 0 {
        return Err(PeerUidError::Recv(errno()));
    }
    if from.nl_pid != 0 {
        return Err(PeerUidError::Malformed("not sent by the kernel"));
    }
    // With MSG_TRUNC, `n` is the datagram's real length.
    let n = n as usize;
    if n > buf.len() {
        return Err(PeerUidError::Malformed("reply larger than the buffer"));
    }
    parse_reply(&buf[..n], peer, local)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The address of a socket as inet_diag writes it: the family, and 16 bytes in network
/// order (an IPv4 address in the first 4). An IPv4-mapped IPv6 address is asked about
/// as IPv6: the kernel looks it up as IPv4 when both ends are mapped.
fn diag_addr(a: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (libc::AF_INET as u8, out)
        }
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets()),
    }
}

/// `struct inet_diag_sockid` for the client's socket: its source is our peer.
fn sock_id(peer: SocketAddr, local: SocketAddr) -> [u8; 48] {
    let mut id = [0u8; 48];
    id[0..2].copy_from_slice(&peer.port().to_be_bytes());
    id[2..4].copy_from_slice(&local.port().to_be_bytes());
    id[4..20].copy_from_slice(&diag_addr(peer.ip()).1);
    id[20..36].copy_from_slice(&diag_addr(local.ip()).1);
    // idiag_if = 0: any interface.
    id[40..44].copy_from_slice(&NO_COOKIE.to_ne_bytes());
    id[44..48].copy_from_slice(&NO_COOKIE.to_ne_bytes());
    id
}

/// One exact lookup (no `NLM_F_DUMP`): `nlmsghdr` + `inet_diag_req_v2`.
fn request(peer: SocketAddr, local: SocketAddr) -> [u8; NLMSG_HDR + REQ_LEN] {
    let mut m = [0u8; NLMSG_HDR + REQ_LEN];
    m[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&SEQ.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in ours.
    let r = &mut m[NLMSG_HDR..];
    r[0] = diag_addr(peer.ip()).0;
    r[1] = libc::IPPROTO_TCP as u8;
    // idiag_ext 0, pad 0; every state (an exact lookup ignores them anyway).
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    r[8..56].copy_from_slice(&sock_id(peer, local));
    m
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_ne_bytes(bytes))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let bytes: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_ne_bytes(bytes))
}

/// `idiag_src` and `idiag_dst` of an `inet_diag_msg` (at least [`MSG_LEN`] bytes).
fn reply_addrs(body: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let port = |at: usize| Some(u16::from_be_bytes(body.get(at..at + 2)?.try_into().ok()?));
    let (sport, dport) = (port(4)?, port(6)?);
    let family = i32::from(*body.first()?);
    let ip = |at: usize| -> Option<IpAddr> {
        if family == libc::AF_INET {
            let octets: [u8; 4] = body.get(at..at + 4)?.try_into().ok()?;
            Some(IpAddr::from(octets))
        } else if family == libc::AF_INET6 {
            let octets: [u8; 16] = body.get(at..at + 16)?.try_into().ok()?;
            Some(IpAddr::from(octets))
        } else {
            None
        }
    };
    Some((SocketAddr::new(ip(8)?, sport), SocketAddr::new(ip(24)?, dport)))
}

/// Checks the kernel's answer: one message carrying our sequence number, an error or an
/// `inet_diag_msg` for exactly the socket asked about, in a state whose uid is an
/// owner's. Never panics, whatever `reply` holds.
pub(crate) fn parse_reply(reply: &[u8], peer: SocketAddr, local: SocketAddr) -> Result<u32, PeerUidError> {
    let malformed = PeerUidError::Malformed;
    let len = u32_at(reply, 0).ok_or(malformed("shorter than a netlink header"))? as usize;
    if len < NLMSG_HDR || len > reply.len() {
        return Err(malformed("netlink length out of bounds"));
    }
    let kind = u16_at(reply, 4).ok_or(malformed("short header"))?;
    if u32_at(reply, 8) != Some(SEQ) {
        return Err(malformed("wrong sequence number"));
    }
    let body = &reply[NLMSG_HDR..len];
    if kind == libc::NLMSG_ERROR as u16 {
        let code = u32_at(body, 0).ok_or(malformed("short error message"))? as i32;
        return Err(match code.checked_neg() {
            Some(libc::ENOENT) => PeerUidError::NotFound,
            Some(0) => malformed("an acknowledgement instead of an answer"),
            Some(e) => PeerUidError::Kernel(e),
            None => malformed("error code out of range"),
        });
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(malformed("unexpected message type"));
    }
    if body.len() < MSG_LEN {
        return Err(malformed("shorter than inet_diag_msg"));
    }
    // Exactly the socket asked about, never a listener found by the kernel's fallback
    // lookup. An IPv6 socket connected to an IPv4 address reports mapped addresses.
    let (src, dst) = reply_addrs(body).ok_or(malformed("unknown address family"))?;
    let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
    if (canonical(src), canonical(dst)) != (canonical(peer), canonical(local)) {
        return Err(malformed("a different socket"));
    }
    let state = body[1];
    let uid = u32_at(body, 64).ok_or(malformed("short inet_diag_msg"))?;
    let inode = u32_at(body, 68).ok_or(malformed("short inet_diag_msg"))?;
    // Time-wait and request sockets report uid 0; a socket no process holds has no
    // inode. Neither has an owner to judge.
    if !OWNED_STATES.contains(&state) || inode == 0 {
        return Err(PeerUidError::NoOwner { state, inode });
    }
    Ok(uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        )
    }

    /// A well-formed answer for `addrs()`, owned by `uid`.
    fn answer(uid: u32) -> Vec<u8> {
        let (peer, local) = addrs();
        let mut m = vec![0u8; NLMSG_HDR + MSG_LEN];
        let n = m.len() as u32;
        m[0..4].copy_from_slice(&n.to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m[8..12].copy_from_slice(&SEQ.to_ne_bytes());
        let b = &mut m[NLMSG_HDR..];
        b[0] = libc::AF_INET as u8;
        b[1] = 1;
        b[4..52].copy_from_slice(&sock_id(peer, local));
        b[64..68].copy_from_slice(&uid.to_ne_bytes());
        b[68..72].copy_from_slice(&12345u32.to_ne_bytes());
        m
    }

    fn error(code: i32) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDR + 20];
        let n = m.len() as u32;
        m[0..4].copy_from_slice(&n.to_ne_bytes());
        m[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        m[8..12].copy_from_slice(&SEQ.to_ne_bytes());
        m[16..20].copy_from_slice(&code.to_ne_bytes());
        m
    }

    fn parse(reply: &[u8]) -> Result<u32, PeerUidError> {
        let (peer, local) = addrs();
        parse_reply(reply, peer, local)
    }

    #[test]
    fn a_good_answer_gives_its_uid() {
        assert_eq!(parse(&answer(2001)), Ok(2001));
    }

    #[test]
    fn errors_and_acknowledgements() {
        assert_eq!(parse(&error(-libc::ENOENT)), Err(PeerUidError::NotFound));
        assert_eq!(
            parse(&error(-libc::EPERM)),
            Err(PeerUidError::Kernel(libc::EPERM))
        );
        assert!(matches!(parse(&error(0)), Err(PeerUidError::Malformed(_))));
        assert!(matches!(parse(&error(i32::MIN)), Err(PeerUidError::Malformed(_))));
        // An error message too short for its code.
        let mut short = error(-libc::ENOENT);
        short.truncate(NLMSG_HDR + 2);
        let n = short.len() as u32;
        short[0..4].copy_from_slice(&n.to_ne_bytes());
        assert!(matches!(parse(&short), Err(PeerUidError::Malformed(_))));
    }

    #[test]
    fn malformed_replies_are_refused_without_panic() {
        let good = answer(0);
        // Every truncation, with its length word left or fixed.
        for n in 0..good.len() {
            assert!(parse(&good[..n]).is_err(), "truncated to {n}");
            let mut cut = good[..n].to_vec();
            if n >= 4 {
                cut[0..4].copy_from_slice(&(n as u32).to_ne_bytes());
            }
            assert!(parse(&cut).is_err(), "truncated to {n}, length fixed");
        }
        // Every length word.
        for len in [0u32, 1, 15, 16, 17, 87, 89, u32::MAX] {
            let mut m = good.clone();
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            assert!(parse(&m).is_err(), "length {len}");
        }
        let with = |at: usize, v: u8| {
            let mut m = good.clone();
            m[at] = v;
            parse(&m)
        };
        assert!(with(4, 99).is_err(), "wrong type");
        assert!(with(8, 0).is_err(), "wrong sequence");
        assert!(with(NLMSG_HDR, libc::AF_INET6 as u8).is_err(), "wrong family");
        assert!(with(NLMSG_HDR, 99).is_err(), "unknown family");
        assert!(with(NLMSG_HDR + 5, 0).is_err(), "wrong source port");
        assert!(with(NLMSG_HDR + 8, 10).is_err(), "wrong source address");
        assert!(with(NLMSG_HDR + 24, 10).is_err(), "wrong destination address");
        // A listener, a time-wait socket, or one without an inode has no owner.
        assert!(matches!(
            with(NLMSG_HDR + 1, 10),
            Err(PeerUidError::NoOwner { .. })
        ));
        assert!(matches!(
            with(NLMSG_HDR + 1, 6),
            Err(PeerUidError::NoOwner { .. })
        ));
        let mut m = good.clone();
        m[NLMSG_HDR + 68..NLMSG_HDR + 72].fill(0);
        assert!(matches!(parse(&m), Err(PeerUidError::NoOwner { .. })));
        // Arbitrary bytes.
        let mut x: u32 = 0x1234_5678;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn finds_the_owner_of_a_local_client() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(owner(peer, local), Ok(me));
        // Our own accepted socket is not the client: the tuple is looked up reversed.
        assert_eq!(client.local_addr().unwrap(), peer);
        // A closed client, after the connection is gone, has no owner.
        drop(client);
        drop(server);
        let r = owner(peer, local);
        assert!(r.is_err(), "{r:?}");
        // An address pair no socket has.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(owner(nobody, local).is_err());
    }

    #[test]
    fn finds_the_owner_over_ipv6() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            return; // no IPv6 loopback here
        };
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(owner(peer, server.local_addr().unwrap()), Ok(me));
    }
}
