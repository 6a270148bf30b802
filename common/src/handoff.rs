//! The hand-off message: one client socket plus the bytes already read from it,
//! sent as one SOCK_SEQPACKET message (never split) with the fd in SCM_RIGHTS.
//!
//! Layout (little-endian), [`HEADER_LEN`] bytes then the payload:
//! `magic "BH" | version u8 | flags u8 | vhost u32 | peer addr (19) | local addr (19) |
//! tag (32) | len u32`. An address is `family u8 (4 or 6) | 16 bytes ip | port u16`.
//! The tag is all zeros unless [`flags::PROXIED`] is set: then it is the multiplexers'
//! authentication of the two addresses (carried by a PROXY protocol header) for this
//! very socket, which a processor returns unchanged with a hand-back and cannot make.
//! The same message goes multiplexer → processor (a routed connection) and
//! processor → multiplexer (a keep-alive hand-back); the receiver of a hand-back
//! treats it as untrusted as a fresh connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::seqpacket::{self, PacketError};

/// Size of the fixed header.
pub const HEADER_LEN: usize = 2 + 1 + 1 + 4 + 19 + 19 + TAG_LEN + 4;
/// Size of the tag of a [`flags::PROXIED`] connection's addresses.
pub const TAG_LEN: usize = 32;
/// Largest payload a hand-off may carry; receivers size their buffer from this.
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// Buffer size that holds any valid message.
pub const MAX_MESSAGE: usize = HEADER_LEN + MAX_PAYLOAD;

const MAGIC: &[u8; 2] = b"BH";
/// 2: the tag (PROXY protocol addresses).
const VERSION: u8 = 2;
/// `vhost` value meaning "not routed yet" (hand-backs).
pub const NO_VHOST: u32 = u32::MAX;

/// Flag bits.
pub mod flags {
    /// The connection came in on a TLS listener: nothing was read from it (the
    /// ClientHello was only peeked at), the processor runs the handshake.
    pub const TLS: u8 = 1;
    /// A processor hands the connection back to a multiplexer.
    pub const HAND_BACK: u8 = 2;
    /// With [`TLS`]: the hello named no vhost with a certificate (no server name, or an
    /// unknown one), so it went to the TLS default vhost.
    pub const TLS_DEFAULT: u8 = 4;
    /// The addresses are the client's and the destination's from a PROXY protocol
    /// header (the socket's are the proxy's), authenticated by the meta's `tag`.
    pub const PROXIED: u8 = 8;
    /// The socket came through a hand-back: the processor that sent it back may keep a
    /// copy, and through it clear O_NONBLOCK (a flag of the shared file description)
    /// at any moment. Set by the multiplexer on every hand-off of a handed-back socket,
    /// whatever the processor claimed.
    pub const VISITED: u8 = 16;
}

/// Errors decoding or moving a hand-off.
#[derive(Debug, Error)]
pub enum HandoffError {
    #[error("hand-off message too short ({0} bytes)")]
    Short(usize),
    #[error("hand-off message has a bad magic or version")]
    BadMagic,
    #[error("hand-off payload length {declared} does not match the {actual} bytes received")]
    BadLength { declared: usize, actual: usize },
    #[error("hand-off payload of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("hand-off address family {0} is unknown")]
    BadFamily(u8),
    #[error("hand-off carried {0} fds, expected exactly 1")]
    FdCount(usize),
    #[error("no room in the queue within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Packet(#[from] PacketError),
}

/// The fixed part of a hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub flags: u8,
    pub vhost: u32,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// With [`flags::PROXIED`]: the multiplexers' tag of `peer` and `local` for this
    /// socket; zeros otherwise.
    pub tag: [u8; TAG_LEN],
}

fn put_addr(out: &mut [u8], a: &SocketAddr) {
    let (fam, ip) = match a.ip() {
        IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => (6u8, v6.octets()),
    };
    out[0] = fam;
    out[1..17].copy_from_slice(&ip);
    out[17..19].copy_from_slice(&a.port().to_le_bytes());
}

fn get_addr(b: &[u8]) -> Result<SocketAddr, HandoffError> {
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&b[1..17]);
    let port = u16::from_le_bytes([b[17], b[18]]);
    let v6 = Ipv6Addr::from(ip);
    let ip = match b[0] {
        4 => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        6 => IpAddr::V6(v6),
        f => return Err(HandoffError::BadFamily(f)),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Encodes the header for `meta` and a payload of `payload_len` bytes.
pub fn encode_header(meta: &Meta, payload_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(MAGIC);
    h[2] = VERSION;
    h[3] = meta.flags;
    h[4..8].copy_from_slice(&meta.vhost.to_le_bytes());
    put_addr(&mut h[8..27], &meta.peer);
    put_addr(&mut h[27..46], &meta.local);
    h[46..78].copy_from_slice(&meta.tag);
    h[78..82].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h
}

/// Decodes a received message; returns the meta and the payload slice.
pub fn decode(msg: &[u8]) -> Result<(Meta, &[u8]), HandoffError> {
    if msg.len() < HEADER_LEN {
        return Err(HandoffError::Short(msg.len()));
    }
    if &msg[0..2] != MAGIC || msg[2] != VERSION {
        return Err(HandoffError::BadMagic);
    }
    let declared = u32::from_le_bytes([msg[78], msg[79], msg[80], msg[81]]) as usize;
    if declared > MAX_PAYLOAD {
        return Err(HandoffError::TooLarge(declared));
    }
    let payload = &msg[HEADER_LEN..];
    if payload.len() != declared {
        return Err(HandoffError::BadLength {
            declared,
            actual: payload.len(),
        });
    }
    let meta = Meta {
        flags: msg[3],
        vhost: u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]),
        peer: get_addr(&msg[8..27])?,
        local: get_addr(&msg[27..46])?,
        tag: msg[46..78]
            .try_into()
            .map_err(|_| HandoffError::Short(msg.len()))?,
    };
    Ok((meta, payload))
}

/// Sends `conn` with `meta` and `payload` on `sock` as one message. Does not block:
/// `PacketError::WouldBlock` means the pool's queue is full.
pub fn send(
    sock: BorrowedFd<'_>,
    meta: &Meta,
    payload: &[u8],
    conn: BorrowedFd<'_>,
) -> Result<(), HandoffError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(HandoffError::TooLarge(payload.len()));
    }
    let header = encode_header(meta, payload.len());
    seqpacket::send(sock, &[&header, payload], &[conn.as_raw_fd()])?;
    Ok(())
}

/// Sends like [`send`], waiting for room while the queue is full, for at most
/// `timeout`: the multiplexer's hand-off and the processor's hand-back. `sock` needs no
/// registration with the reactor (a multiplexer's are in none, a processor's is
/// registered for readability only, [`crate::fds::async_fd_readable`]): the wait for
/// room is on a registration of a duplicate of it, for writability, made only when the
/// queue is full and dropped with the send.
pub async fn send_waiting(
    sock: BorrowedFd<'_>,
    meta: &Meta,
    payload: &[u8],
    conn: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<(), HandoffError> {
    match send(sock, meta, payload, conn) {
        Err(HandoffError::Packet(e)) if e.is_would_block() => {}
        other => return other,
    }
    let closed = |_| HandoffError::Packet(PacketError::Closed { fd: -1 });
    let attempt = async {
        let dup = sock.try_clone_to_owned().map_err(closed)?;
        // SAFETY: `dup` is an open OwnedFd that the AsyncFd owns for as long as it lives.
        let room = unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::WRITABLE) }
            .map_err(|e| closed(std::io::Error::from(e)))?;
        loop {
            let mut guard = room.writable().await.map_err(closed)?;
            match send(guard.get_inner().as_fd(), meta, payload, conn) {
                Err(HandoffError::Packet(e)) if e.is_would_block() => guard.clear_ready(),
                other => return other,
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(HandoffError::Timeout(timeout)))
}

/// Receives one hand-off into `buf` (at least [`MAX_MESSAGE`] bytes). Exactly one fd
/// must arrive; otherwise every fd received is closed and an error returned.
pub fn recv<'b>(sock: BorrowedFd<'_>, buf: &'b mut [u8]) -> Result<(Meta, &'b [u8], OwnedFd), HandoffError> {
    let (n, mut fds) = seqpacket::recv(sock, buf, 1)?;
    if fds.len() != 1 {
        return Err(HandoffError::FdCount(fds.len()));
    }
    let fd = fds.pop().ok_or(HandoffError::FdCount(0))?;
    let (meta, payload) = decode(&buf[..n])?;
    Ok((meta, payload, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (a, b) = seqpacket::seqpacket_pair().unwrap();
        let (c, _d) = seqpacket::seqpacket_pair().unwrap();
        let meta = Meta {
            flags: flags::HAND_BACK,
            vhost: 7,
            peer: "[::1]:4000".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            tag: [7; TAG_LEN],
        };
        send(a.as_fd(), &meta, b"GET / HTTP/1.1\r\n\r\n", c.as_fd()).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (m, p, _fd) = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!(m, meta);
        assert_eq!(p, b"GET / HTTP/1.1\r\n\r\n");
    }

    /// A full queue is waited on for at most the timeout; room is used at once.
    #[test]
    fn send_waiting_is_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = seqpacket::seqpacket_pair().unwrap();
            let (c, _d) = seqpacket::seqpacket_pair().unwrap();
            // Registered for readability only, as a processor's is: the wait for room
            // must not need the registration's writability.
            let a = crate::fds::async_fd_readable(a).unwrap();
            let a = a.get_ref().as_fd();
            let meta = Meta {
                flags: 0,
                vhost: 1,
                peer: "127.0.0.1:1".parse().unwrap(),
                local: "127.0.0.1:2".parse().unwrap(),
                tag: [0; TAG_LEN],
            };
            let wait = Duration::from_millis(50);
            let payload = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            let err = loop {
                match send_waiting(a, &meta, &payload, c.as_fd(), wait).await {
                    Ok(()) => sent += 1,
                    Err(e) => break e,
                }
                assert!(sent < 10_000, "the queue never filled");
            };
            assert!(matches!(err, HandoffError::Timeout(_)), "{err}");
            // Once the receiver has taken the queue, the next send goes through.
            let mut buf = vec![0u8; MAX_MESSAGE];
            for _ in 0..sent {
                let (m, p, _fd) = recv(b.as_fd(), &mut buf).unwrap();
                assert_eq!((m, p.len()), (meta, payload.len()));
            }
            send_waiting(a, &meta, b"again", c.as_fd(), wait).await.unwrap();
            let (_, p, _fd) = recv(b.as_fd(), &mut buf).unwrap();
            assert_eq!(p, b"again");
            // Full again: a sender waiting for room is woken when the receiver empties
            // the queue (a unix socket reports room once 3/4 of its buffer is free).
            let mut queued = 0;
            while send(a, &meta, &payload, c.as_fd()).is_ok() {
                queued += 1;
            }
            let long = Duration::from_secs(30);
            let (sent, ()) = tokio::join!(send_waiting(a, &meta, b"woken", c.as_fd(), long), async {
                for _ in 0..queued {
                    let (_, p, _fd) = recv(b.as_fd(), &mut buf).unwrap();
                    assert_eq!(p.len(), payload.len());
                }
            });
            sent.unwrap();
            let (_, p, _fd) = recv(b.as_fd(), &mut buf).unwrap();
            assert_eq!(p, b"woken");
        });
    }

    #[test]
    fn no_fd_or_garbage_is_refused() {
        let (a, b) = seqpacket::seqpacket_pair().unwrap();
        seqpacket::send(a.as_fd(), &[b"nonsense"], &[]).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        assert!(matches!(recv(b.as_fd(), &mut buf), Err(HandoffError::FdCount(0))));
        let (c, _d) = seqpacket::seqpacket_pair().unwrap();
        seqpacket::send(a.as_fd(), &[b"nonsense"], &[c.as_raw_fd()]).unwrap();
        assert!(matches!(recv(b.as_fd(), &mut buf), Err(HandoffError::Short(8))));
        let mut h = encode_header(
            &Meta {
                flags: 0,
                vhost: 0,
                peer: "1.2.3.4:5".parse().unwrap(),
                local: "1.2.3.4:5".parse().unwrap(),
                tag: [0; TAG_LEN],
            },
            10,
        );
        assert!(matches!(decode(&h), Err(HandoffError::BadLength { .. })));
        h[8] = 9;
        assert!(decode(&h).is_err());
    }
}
