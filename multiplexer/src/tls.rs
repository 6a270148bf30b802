//! A connection on a TLS listener: its ClientHello is peeked at (`MSG_PEEK`, nothing
//! consumed), parsed for its server name by rustls's `Acceptor` fed a copy of the
//! peeked bytes (no key, no crypto), routed with the host table's rules, and the socket
//! is handed to the environment untouched, flagged TLS; the processor runs the
//! handshake with the environment's own key.
//!
//! A hello that arrived whole with the connection takes the fast path: one peek in the
//! accept loop, the route, the hand-off, without registering the socket with the
//! reactor (as plain HTTP's fast path in `conn.rs`).
//!
//! Bounds: the hello must be complete within [`MAX_HELLO`] bytes and
//! `request_head_timeout`. Waiting for more bytes never spins: after a peek, the socket
//! stays readable, so a peek that finds no new byte answers the reactor `WouldBlock`,
//! which clears its readiness; the next wake-up needs new data. A client that shut its
//! side stays "read closed" for good (the reactor never clears that), so then what is
//! queued is all there is: an incomplete hello ends the connection at once. `SO_RCVLOWAT` set to the
//! length the records announce makes that wake-up come once they are all there (one per
//! record, not one per segment); it is set back to 1 before the hand-off.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;

use common::control::VhostBoot;
use common::handoff::{self, flags, HandoffError};
use common::scoreboard::table;
use common::vhost::HostTable;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::pool::Refusal;
use crate::proxy::{self, Tag};
use crate::{conn, respond, Shared};

/// Most bytes of ClientHello records examined (a post-quantum hello is 1.5–2 KiB).
pub const MAX_HELLO: usize = 16 * 1024;

/// The TLS record type of handshake messages.
const HANDSHAKE: u8 = 22;
/// The handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Alert descriptions sent before a close.
const ALERT_DECODE_ERROR: u8 = 50;
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
const ALERT_PROTOCOL_VERSION: u8 = 70;

/// What the peeked bytes amount to so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peeked {
    /// Not complete: at least this many bytes in all are needed.
    Need(usize),
    /// A complete ClientHello and its server name (lower-cased), if any.
    Hello(Option<String>),
    /// Plain HTTP on the TLS port.
    PlainHttp,
    /// Not a TLS ClientHello (an SSLv2-style hello, garbage, a malformed record), with
    /// the alert to send, if one fits.
    Bad(String, Option<u8>),
    /// The hello would be over [`MAX_HELLO`].
    TooLarge,
}

fn need(n: usize) -> Peeked {
    if n > MAX_HELLO {
        Peeked::TooLarge
    } else {
        Peeked::Need(n)
    }
}

/// Examines the peeked bytes `buf` (pure): walks the records, gathers the handshake
/// bytes they carry, and parses the hello once the whole handshake message is there,
/// so each byte is examined a bounded number of times however the hello is split.
pub(crate) fn examine(buf: &[u8]) -> Peeked {
    let mut at = 0;
    // Handshake bytes in the complete records so far: the message's declared length
    // needs its first four.
    let mut body: [u8; 4] = [0; 4];
    let mut body_len = 0usize;
    // Handshake bytes carried by the complete records so far.
    let mut carried = 0usize;
    loop {
        if buf.len() < at + 5 {
            return need(at + 5);
        }
        let h = &buf[at..at + 5];
        if h[0] != HANDSHAKE {
            if at > 0 {
                let why = format!("a record of type {} inside the ClientHello", h[0]);
                return Peeked::Bad(why, Some(ALERT_DECODE_ERROR));
            }
            return first_bytes(buf);
        }
        if h[1] != 3 {
            return Peeked::Bad(
                format!("record version {}.{}", h[1], h[2]),
                Some(ALERT_PROTOCOL_VERSION),
            );
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len == 0 || len > 16384 + 256 {
            return Peeked::Bad(
                format!("a handshake record of {len} bytes"),
                Some(ALERT_DECODE_ERROR),
            );
        }
        let end = at + 5 + len;
        if end > buf.len() {
            return need(end);
        }
        for &b in buf[at + 5..end].iter().take(4usize.saturating_sub(body_len)) {
            body[body_len] = b;
            body_len += 1;
        }
        carried += len;
        at = end;
        if body_len < 4 {
            continue;
        }
        if body[0] != CLIENT_HELLO {
            return Peeked::Bad(
                format!("handshake message type {} first", body[0]),
                Some(ALERT_DECODE_ERROR),
            );
        }
        let declared = (usize::from(body[1]) << 16) | (usize::from(body[2]) << 8) | usize::from(body[3]);
        if declared + 4 > MAX_HELLO {
            return Peeked::TooLarge;
        }
        if carried < declared + 4 {
            continue;
        }
        return parse(&buf[..at]);
    }
}

/// What a connection that does not start with a handshake record is.
fn first_bytes(buf: &[u8]) -> Peeked {
    let method = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method >= 3 || (method > 0 && buf.get(method) == Some(&b' ')) {
        return Peeked::PlainHttp;
    }
    if buf[0] & 0x80 != 0 {
        return Peeked::Bad("an SSLv2-style hello".into(), None);
    }
    Peeked::Bad(format!("not a TLS handshake (first byte {:#04x})", buf[0]), None)
}

/// Parses complete ClientHello records with rustls (no configuration, no crypto).
fn parse(records: &[u8]) -> Peeked {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = records;
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Peeked::Bad(format!("ClientHello records: {e}"), Some(ALERT_DECODE_ERROR)),
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            Peeked::Hello(accepted.client_hello().server_name().map(str::to_ascii_lowercase))
        }
        Ok(None) => Peeked::Bad(
            "ClientHello incomplete after its declared length".into(),
            Some(ALERT_DECODE_ERROR),
        ),
        Err((e @ rustls::Error::PeerIncompatible(_), _)) => {
            Peeked::Bad(format!("ClientHello: {e}"), Some(ALERT_PROTOCOL_VERSION))
        }
        Err((e, _)) => Peeked::Bad(format!("ClientHello: {e}"), Some(ALERT_DECODE_ERROR)),
    }
}

/// Where a hello goes (pure): the vhost its server name reaches with the host table's
/// rules when that vhost has a certificate, else the TLS default (flagged as such), or
/// `None` with `strict` (an `unrecognized_name` alert) or without a default.
pub(crate) fn route(
    hosts: &HostTable,
    vhosts: &[VhostBoot],
    tls_default: Option<u32>,
    strict: bool,
    sni: Option<&str>,
) -> Option<(u32, bool)> {
    let found = sni
        .and_then(|name| hosts.lookup(name))
        .filter(|&v| vhosts.get(v).is_some_and(|v| v.tls));
    match found {
        Some(v) => Some((v as u32, false)),
        None if strict => None,
        None => tls_default.map(|d| (d, true)),
    }
}

/// A fresh connection from a TLS listener. First one peek outside the reactor: a
/// ClientHello that came whole with the connection, for a pool with room, is handed off
/// at once, without registering the socket or spawning a task (as the plain fast path
/// does). Anything else is peeked, routed and handed off on a task.
pub fn accepted(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    tag: Option<Tag>,
    shared: &Rc<Shared>,
    inflight: &Rc<()>,
    per_ip: crate::per_ip::Slot,
) {
    let done = conn::first_bytes(
        &stream,
        MAX_HELLO,
        libc::MSG_PEEK | libc::MSG_DONTWAIT,
        |n, buf| {
            if n <= 0 {
                return false;
            }
            match examine(&buf[..n as usize]) {
                Peeked::Hello(sni) => try_hand_off(sni.as_deref(), &stream, (peer, local, tag), shared),
                _ => false,
            }
        },
    );
    if done {
        return;
    }
    let Some(held) = shared.held.take() else { return };
    let shared = shared.clone();
    let token = (
        inflight.clone(),
        shared.from_listeners.clone(),
        conn::active(&shared),
    );
    tokio::task::spawn_local(async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => handle(stream, (peer, local, tag), &shared).await,
            Err(e) => warn!(%peer, "registering a connection: {e}"),
        }
        drop((token, held, per_ip));
    });
}

/// The fast path's hand-off: routed to a pool with room, sent at once.
fn try_hand_off(
    sni: Option<&str>,
    stream: &std::net::TcpStream,
    from: conn::Origin,
    shared: &Shared,
) -> bool {
    let (peer, local, tag) = from;
    let Some((vhost, default)) = route(
        &shared.hosts,
        &shared.pools.vhosts,
        shared.tls_default,
        shared.tls_strict_sni,
        sni,
    ) else {
        return false;
    };
    let Some(env) = shared.pools.vhosts.get(vhost as usize).map(|v| v.env as usize) else {
        return false;
    };
    if !shared.pools.has_room(env, vhost as usize) {
        return false;
    }
    let flags = flags::TLS | if default { flags::TLS_DEFAULT } else { 0 };
    let meta = proxy::meta(flags, vhost, peer, local, tag);
    match handoff::send(shared.env_socks[env].as_fd(), &meta, &[], stream.as_fd()) {
        Ok(()) => {
            shared
                .pools
                .table
                .add(shared.pools.env_word(env, table::env::HANDOFFS), 1);
            shared.pools.raise(env);
            true
        }
        Err(HandoffError::Packet(e)) if e.is_would_block() => false,
        Err(e) => {
            warn!(environment = shared.env_name(env), "TLS hand-off failed: {e}");
            false
        }
    }
}

async fn handle(stream: TcpStream, from: conn::Origin, shared: &Shared) {
    let (peer, local, tag) = from;
    let mut lowered = false;
    let peek = peek_hello(&stream, &mut lowered);
    let sni = match tokio::time::timeout(shared.request_head_timeout, peek).await {
        Err(_) => {
            info!(%peer, "TLS: no complete ClientHello within request_head_timeout; closing");
            return;
        }
        Ok(Err(Ending::Gone)) => {
            debug!(%peer, "TLS: client closed before its ClientHello was complete");
            return;
        }
        Ok(Err(Ending::PlainHttp)) => {
            return respond::error(stream, 400, "plain HTTP request on a TLS port", peer, None).await;
        }
        Ok(Err(Ending::Refused(why, alert))) => {
            info!(%peer, "TLS: {why}; closing");
            if let Some(alert) = alert {
                send_alert(&stream, alert);
            }
            return;
        }
        Ok(Ok(sni)) => sni,
    };
    let Some((vhost, default)) = route(
        &shared.hosts,
        &shared.pools.vhosts,
        shared.tls_default,
        shared.tls_strict_sni,
        sni.as_deref(),
    ) else {
        info!(%peer, sni = sni.as_deref().unwrap_or(""), "TLS: no vhost for this server name (tls_strict_sni); unrecognized_name");
        send_alert(&stream, ALERT_UNRECOGNIZED_NAME);
        return;
    };
    let Some(env) = shared.pools.vhosts.get(vhost as usize).map(|v| v.env as usize) else {
        return;
    };
    if lowered {
        set_rcvlowat(&stream, 1);
    }
    match shared.pools.admit(env, vhost as usize).await {
        Ok(()) => {}
        Err(Refusal::Saturated | Refusal::VhostLimit) => {
            // No HTTP answer can be given before a handshake: a close.
            info!(%peer, environment = shared.env_name(env), "TLS: no room for the connection; closing");
            return;
        }
    }
    let flags = flags::TLS | if default { flags::TLS_DEFAULT } else { 0 };
    let meta = proxy::meta(flags, vhost, peer, local, tag);
    match conn::hand_off(shared, env, &meta, &[], &stream).await {
        Ok(()) => shared
            .pools
            .table
            .add(shared.pools.env_word(env, table::env::HANDOFFS), 1),
        Err(e) => {
            shared
                .pools
                .table
                .add(shared.pools.env_word(env, table::env::DROPPED_ERROR), 1);
            warn!(environment = shared.env_name(env), "TLS hand-off failed: {e}");
        }
    }
}

/// Why peeking ended without a hello.
enum Ending {
    Gone,
    PlainHttp,
    Refused(String, Option<u8>),
}

/// Peeks until the ClientHello is complete; never consumes a byte. `lowered`: set once
/// `SO_RCVLOWAT` was changed (it must be set back before the hand-off).
async fn peek_hello(stream: &TcpStream, lowered: &mut bool) -> Result<Option<String>, Ending> {
    let mut buf = vec![0u8; MAX_HELLO];
    let mut seen = 0usize;
    loop {
        let Some((n, closed)) = peek_more(stream, &mut buf, seen).await else {
            return Err(Ending::Gone);
        };
        seen = n;
        match examine(&buf[..n]) {
            Peeked::Need(_) if closed => return Err(Ending::Gone),
            Peeked::Need(want) => {
                set_rcvlowat(stream, want);
                *lowered = true;
            }
            Peeked::Hello(sni) => return Ok(sni),
            Peeked::PlainHttp => return Err(Ending::PlainHttp),
            Peeked::Bad(why, alert) => return Err(Ending::Refused(why, alert)),
            Peeked::TooLarge => {
                return Err(Ending::Refused(
                    format!("ClientHello over {MAX_HELLO} bytes"),
                    Some(ALERT_DECODE_ERROR),
                ))
            }
        }
    }
}

/// Waits until `stream` has more than `seen` bytes queued, or its peer shut its side,
/// and peeks them into `buf`, consuming none: `Some((n, closed))`, or `None` when the
/// client is gone (end of file, nothing new after a shutdown, an error). Never spins:
/// a wake-up with nothing new clears the reactor's readiness and waits again (the
/// ClientHello's and the PROXY header's peek loops).
pub(crate) async fn peek_more(stream: &TcpStream, buf: &mut [u8], seen: usize) -> Option<(usize, bool)> {
    loop {
        let ready = stream.ready(Interest::READABLE).await.ok()?;
        // The client shut its side: what is queued is all there will be (and the
        // reactor keeps saying "readable" for good, so waiting would spin).
        let closed = ready.is_read_closed();
        let peeked = stream.try_io(Interest::READABLE, || {
            // SAFETY: `buf` is a valid writable buffer of its length for the call;
            // MSG_PEEK consumes nothing, MSG_DONTWAIT never blocks.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = n as usize;
            if n > 0 && n <= seen && !closed {
                // Nothing new: clear the reactor's readiness and wait for more.
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match peeked {
            Ok(n) if n == 0 || n <= seen => return None,
            Ok(n) => return Some((n, closed)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
}

/// `SO_RCVLOWAT`: the socket reads as readable once `bytes` are queued (or at EOF).
pub(crate) fn set_rcvlowat(stream: &TcpStream, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(1).max(1);
    // SAFETY: a valid c_int for the option's length; the fd is open.
    let r = unsafe {
        libc::setsockopt(
            stream.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        debug!("SO_RCVLOWAT: {}", std::io::Error::last_os_error());
    }
}

/// One fatal alert record, sent without waiting (a full socket just loses it).
fn send_alert(stream: &TcpStream, description: u8) {
    let record = [21u8, 3, 3, 0, 2, 2, description];
    let _ = crate::dontwait::send(stream, &record);
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
