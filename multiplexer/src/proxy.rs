//! The PROXY protocol (HAProxy's v1 text and v2 binary headers) on the listeners of
//! `[server] proxy_protocol`: a connection must come from `proxy_protocol_from` and
//! start with a valid header, or it is closed with a log line; the receiver never
//! guesses whether a header is there.
//!
//! The header is framed here (v1: `PROXY ` up to the first CRLF, at most 107 bytes;
//! v2: the 16-byte fixed part and the length it declares, at most [`MAX_HEADER`] in
//! all) from peeked bytes, parsed with the `ppp` crate, and then exactly its bytes are
//! read, so the request head or the ClientHello after it is untouched (a TLS listener's
//! hello is then peeked as on any other). Bounded by `request_head_timeout`; waiting
//! never spins (a peek with nothing new clears the reactor's readiness, `SO_RCVLOWAT`
//! asks for the length a v2 header declares).
//!
//! The client and destination addresses it carries are the connection's from then on
//! (logs, CGI variables, status rules, per-IP accounting), in the hand-off flagged
//! [`flags::PROXIED`] with a tag: HMAC-SHA256, under a key of the
//! generation that only its multiplexers hold, of the socket's cookie (`SO_COOKIE`,
//! which the kernel gives every socket once and never reuses) and the two addresses.
//! A processor hands them back with the connection; the multiplexer believes them
//! only if the tag matches the socket it received, so a hostile processor can neither
//! invent an address nor move a real one to another socket. A hand-back without the
//! flag whose socket came in on a PROXY listener is refused: with the socket's own
//! addresses it would look as if it came from the proxy (often loopback).
//!
//! A `LOCAL` (v2) or `UNKNOWN` (v1) header, the proxy's own health check, keeps the
//! socket's addresses, tagged the same way.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::rc::Rc;

use common::handoff::{flags, Meta, TAG_LEN};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::access::cidr_contains;
use crate::{conn, tls, Shared};

/// Largest header taken, v2 TLVs included (HAProxy's are tens of bytes).
pub const MAX_HEADER: usize = 2048;
/// v1's limit, CRLF included (the protocol's own).
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// `SO_COOKIE` (generic and x86 value; not exported by `libc` for every target).
const SO_COOKIE: libc::c_int = 57;

/// The tag of a proxied connection's addresses.
pub type Tag = [u8; TAG_LEN];

/// What the peeked bytes amount to so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Framed {
    /// Not complete: at least this many bytes in all are needed.
    Need(usize),
    /// A valid header of `len` bytes carrying these (client, destination) addresses;
    /// `None`: `LOCAL`, `UNKNOWN` or a non-IP family, the socket's own addresses hold.
    Header {
        len: usize,
        addrs: Option<(SocketAddr, SocketAddr)>,
    },
    /// Not a valid header.
    Bad(String),
}

/// Frames and parses a header at the start of `buf` (pure).
pub(crate) fn examine(buf: &[u8]) -> Framed {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if buf.len() < 16 {
            return Framed::Need(16);
        }
        let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if total > MAX_HEADER {
            return Framed::Bad(format!("a v2 header of {total} bytes (at most {MAX_HEADER})"));
        }
        if buf.len() < total {
            return Framed::Need(total);
        }
        return v2(&buf[..total]);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Framed::Bad("no PROXY protocol header".into());
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    match window.iter().position(|&b| b == b'\r') {
        Some(cr) if cr + 1 == window.len() && window.len() < V1_MAX => Framed::Need(cr + 2),
        Some(cr) if window.get(cr + 1) == Some(&b'\n') => v1(&buf[..cr + 2]),
        Some(_) => Framed::Bad("a v1 header whose CR is not followed by LF".into()),
        None if window.len() >= V1_MAX => {
            Framed::Bad(format!("no CRLF within {V1_MAX} bytes of a v1 header"))
        }
        None => Framed::Need(buf.len() + 1),
    }
}

fn v1(header: &[u8]) -> Framed {
    use ppp::v1::{Addresses, Header};
    match Header::try_from(header) {
        Ok(h) => {
            let addrs = match h.addresses {
                Addresses::Tcp4(a) => Some((
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                )),
                Addresses::Tcp6(a) => Some((
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                )),
                Addresses::Unknown => None,
            };
            Framed::Header {
                len: header.len(),
                addrs,
            }
        }
        Err(e) => Framed::Bad(format!("v1 header: {e}")),
    }
}

fn v2(header: &[u8]) -> Framed {
    use ppp::v2::{Addresses, Command, Header, Protocol};
    match Header::try_from(header) {
        Ok(h) if h.len() != header.len() => Framed::Bad("v2 header length".into()),
        Ok(h) => {
            if h.command == Command::Local {
                return Framed::Header {
                    len: header.len(),
                    addrs: None,
                };
            }
            if h.protocol == Protocol::Datagram {
                return Framed::Bad("a v2 header for a datagram".into());
            }
            let addrs = match h.addresses {
                Addresses::IPv4(a) => Some((
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                )),
                Addresses::IPv6(a) => Some((
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                )),
                Addresses::Unspecified | Addresses::Unix(_) => None,
            };
            Framed::Header {
                len: header.len(),
                addrs,
            }
        }
        Err(e) => Framed::Bad(format!("v2 header: {e}")),
    }
}

/// The multiplexer's PROXY protocol settings, from the bootstrap.
pub(crate) struct Proxy {
    /// `proxy_protocol_from`: (network, prefix length).
    pub from: Vec<(IpAddr, u8)>,
    /// The bound addresses of the listeners that read a header.
    pub listeners: Vec<SocketAddr>,
    key: ring::hmac::Key,
}

impl Proxy {
    pub fn new(boot: &common::control::ProxyBoot, plain: &[SocketAddr], tls: &[SocketAddr]) -> Proxy {
        let on = |addrs: &[SocketAddr], flags: &[bool]| -> Vec<SocketAddr> {
            addrs
                .iter()
                .zip(flags)
                .filter_map(|(a, on)| on.then_some(*a))
                .collect()
        };
        let mut listeners = on(plain, &boot.plain);
        listeners.extend(on(tls, &boot.tls));
        Proxy {
            from: boot.from.clone(),
            listeners,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &boot.key.0),
        }
    }

    /// Whether `peer` may send a header.
    pub fn allowed(&self, peer: SocketAddr) -> bool {
        self.from
            .iter()
            .any(|(net, p)| cidr_contains(*net, *p, peer.ip()))
    }

    /// Whether a socket whose local address is `local` was accepted on a listener
    /// that reads a header.
    pub fn is_proxy_listener(&self, local: SocketAddr) -> bool {
        let ip = local.ip().to_canonical();
        self.listeners.iter().any(|l| {
            // A wildcard listener takes its own family only (IPv6 ones are v6-only).
            let wildcard = l.ip().is_unspecified() && l.is_ipv4() == ip.is_ipv4();
            l.port() == local.port() && (wildcard || l.ip().to_canonical() == ip)
        })
    }

    fn message(cookie: u64, peer: SocketAddr, local: SocketAddr) -> [u8; 8 + 2 * 19] {
        let mut m = [0u8; 8 + 2 * 19];
        m[..8].copy_from_slice(&cookie.to_le_bytes());
        for (i, a) in [peer, local].iter().enumerate() {
            let at = 8 + i * 19;
            let (family, ip) = match a.ip().to_canonical() {
                IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped().octets()),
                IpAddr::V6(v6) => (6u8, v6.octets()),
            };
            m[at] = family;
            m[at + 1..at + 17].copy_from_slice(&ip);
            m[at + 17..at + 19].copy_from_slice(&a.port().to_le_bytes());
        }
        m
    }

    /// The tag of `peer` and `local` for the socket whose cookie is `cookie`.
    pub fn tag(&self, cookie: u64, peer: SocketAddr, local: SocketAddr) -> Tag {
        let full = ring::hmac::sign(&self.key, &Self::message(cookie, peer, local));
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(full.as_ref());
        tag
    }

    /// Whether `tag` is the tag of these addresses for this cookie (constant time).
    pub fn verify(&self, cookie: u64, peer: SocketAddr, local: SocketAddr, tag: &Tag) -> bool {
        ring::hmac::verify(&self.key, &Self::message(cookie, peer, local), tag).is_ok()
    }

    /// The addresses a hand-back is routed with: the message's, when flagged
    /// [`flags::PROXIED`] and its tag matches the socket received; the socket's own
    /// when not flagged and it is not from a PROXY listener; otherwise why it is refused.
    pub fn hand_back(
        &self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        socket: (SocketAddr, SocketAddr),
    ) -> Result<(SocketAddr, SocketAddr, Option<Tag>), &'static str> {
        if meta.flags & flags::PROXIED == 0 {
            if self.is_proxy_listener(socket.1) {
                return Err(
                    "a connection from a PROXY protocol listener came back without its client address",
                );
            }
            return Ok((socket.0, socket.1, None));
        }
        let cookie = socket_cookie(fd).ok_or("the socket has no cookie")?;
        if !self.verify(cookie, meta.peer, meta.local, &meta.tag) {
            return Err("the client address it carries is not the one this socket was handed off with");
        }
        Ok((meta.peer, meta.local, Some(meta.tag)))
    }
}

/// The kernel's cookie of a socket (unique for the system's uptime, never reused).
pub fn socket_cookie(fd: BorrowedFd<'_>) -> Option<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` describe a valid writable u64 for the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

/// A hand-off's meta: `tag` set marks the addresses as a PROXY header's.
pub fn meta(flags: u8, vhost: u32, peer: SocketAddr, local: SocketAddr, tag: Option<Tag>) -> Meta {
    Meta {
        flags: flags
            | if tag.is_some() {
                common::handoff::flags::PROXIED
            } else {
                0
            },
        vhost,
        peer,
        local,
        tag: tag.unwrap_or_default(),
    }
}

/// Reads exactly the header's `len` bytes (already peeked, so one call).
fn consume(fd: BorrowedFd<'_>, len: usize) -> bool {
    let mut buf = [0u8; MAX_HEADER];
    let len = len.min(MAX_HEADER);
    // SAFETY: `buf` is valid and writable for `len` bytes; MSG_DONTWAIT never blocks.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) };
    n >= 0 && n as usize == len
}

/// What a look at the socket found.
enum Now {
    /// The header was read: these addresses (`None`: the socket's).
    Read(Option<(SocketAddr, SocketAddr)>),
    Wait,
    Bad(String),
    Gone,
}

/// One peek outside the reactor: a header that came whole is read at once.
fn try_now(stream: &std::net::TcpStream) -> Now {
    let framed = conn::first_bytes(
        stream,
        MAX_HEADER,
        libc::MSG_PEEK | libc::MSG_DONTWAIT,
        |n, buf| match n {
            0 => Err(Now::Gone),
            n if n < 0 => Err(Now::Wait),
            n => Ok(examine(&buf[..n as usize])),
        },
    );
    match framed {
        Err(now) => now,
        Ok(Framed::Need(_)) => Now::Wait,
        Ok(Framed::Bad(why)) => Now::Bad(why),
        Ok(Framed::Header { len, addrs }) if consume(stream.as_fd(), len) => Now::Read(addrs),
        Ok(Framed::Header { .. }) => Now::Gone,
    }
}

/// Why waiting for a header ended without one.
enum Ending {
    Gone,
    Bad(String),
}

/// Peeks until the header is complete, then reads exactly it.
async fn read_header(stream: &TcpStream) -> Result<Option<(SocketAddr, SocketAddr)>, Ending> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut seen = 0usize;
    let mut lowered = false;
    let result = loop {
        let Some((n, closed)) = tls::peek_more(stream, &mut buf, seen).await else {
            break Err(Ending::Gone);
        };
        seen = n;
        match examine(&buf[..n]) {
            Framed::Need(_) if closed => break Err(Ending::Gone),
            Framed::Need(want) => {
                tls::set_rcvlowat(stream, want);
                lowered = true;
            }
            Framed::Bad(why) => break Err(Ending::Bad(why)),
            Framed::Header { len, addrs } => {
                if consume(stream.as_fd(), len) {
                    break Ok(addrs);
                }
                break Err(Ending::Gone);
            }
        }
    };
    if lowered {
        tls::set_rcvlowat(stream, 1);
    }
    result
}

/// A fresh connection on a listener that reads a PROXY header: refused unless it comes
/// from `proxy_protocol_from`; the header read (at once when it is there, else on a
/// task within `request_head_timeout`); then on as any connection of its kind, with
/// the carried addresses.
pub fn accepted(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    is_tls: bool,
    shared: &Rc<Shared>,
    inflight: &Rc<()>,
) {
    let Some(proxy) = shared.proxy.as_ref() else {
        return;
    };
    if !proxy.allowed(peer) {
        info!(%peer, "PROXY protocol: connection from outside proxy_protocol_from refused");
        return;
    }
    match try_now(&stream) {
        Now::Read(addrs) => return carry_on(stream, peer, local, addrs, is_tls, shared, inflight),
        Now::Bad(why) => {
            info!(%peer, "PROXY protocol: {why}; closing");
            return;
        }
        Now::Gone => return,
        Now::Wait => {}
    }
    let Some(held) = shared.held.take() else { return };
    let shared = shared.clone();
    let inflight = inflight.clone();
    let token = (
        inflight.clone(),
        shared.from_listeners.clone(),
        conn::active(&shared),
    );
    tokio::task::spawn_local(async move {
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => return warn!(%peer, "registering a connection: {e}"),
        };
        let read = tokio::time::timeout(shared.request_head_timeout, read_header(&stream)).await;
        let addrs = match read {
            Err(_) => {
                return info!(%peer, "PROXY protocol: no complete header within request_head_timeout; closing")
            }
            Ok(Err(Ending::Gone)) => {
                return debug!(%peer, "PROXY protocol: client closed before its header was complete")
            }
            Ok(Err(Ending::Bad(why))) => return info!(%peer, "PROXY protocol: {why}; closing"),
            Ok(Ok(addrs)) => addrs,
        };
        let Ok(stream) = stream.into_std() else { return };
        // Its own bound is taken again by what follows.
        drop(held);
        carry_on(stream, peer, local, addrs, is_tls, &shared, &inflight);
        drop(token);
    });
}

/// After the header: the tag, then the plain or TLS path with the carried addresses.
fn carry_on(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    addrs: Option<(SocketAddr, SocketAddr)>,
    is_tls: bool,
    shared: &Rc<Shared>,
    inflight: &Rc<()>,
) {
    let Some(proxy) = shared.proxy.as_ref() else {
        return;
    };
    let Some(cookie) = socket_cookie(stream.as_fd()) else {
        return warn!(%peer, "PROXY protocol: the socket has no cookie; closing");
    };
    let (client, dest) = addrs.unwrap_or((peer, local));
    let tag = Some(proxy.tag(cookie, client, dest));
    // `max_connections_per_ip` counts the carried client, not the proxy.
    let Some(per_ip) = shared.per_ip.take(client.ip()) else {
        return;
    };
    if is_tls {
        tls::accepted(stream, client, dest, tag, shared, inflight, per_ip)
    } else {
        conn::accepted(stream, client, dest, tag, shared, inflight, per_ip)
    }
}

#[cfg(test)]
mod tests;
