//! One client connection in the multiplexer: read the request head within the limits,
//! route it by host, and hand the socket with the bytes read to the environment's pool.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use common::handoff::{self, HandoffError, Meta};
use common::head::{head_end, request_host, HeadError, MAX_HEADERS};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::respond;
use crate::Shared;

/// What reading the head came to.
enum Head {
    /// The head is complete; route on it.
    Complete(usize),
    /// Answer with this status.
    Fail(u16, &'static str),
    /// The client went away.
    Gone,
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, limit: usize, timeout: Duration) -> Head {
    let read = async {
        loop {
            let window = &buf[..buf.len().min(limit)];
            if let Some(end) = head_end(window) {
                return Head::Complete(end);
            }
            if buf.len() >= limit {
                return if window.contains(&b'\n') {
                    Head::Fail(431, "request head too large")
                } else {
                    Head::Fail(414, "request line too long")
                };
            }
            let want = limit - buf.len();
            let start = buf.len();
            buf.resize(start + want, 0);
            let r = stream.read(&mut buf[start..]).await;
            let n = match r {
                Ok(n) => n,
                Err(_) => {
                    buf.truncate(start);
                    return Head::Gone;
                }
            };
            buf.truncate(start + n);
            if n == 0 {
                return Head::Gone;
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(h) => h,
        Err(_) => Head::Fail(408, "request head timeout"),
    }
}

/// Which vhost a complete head names: `Err` is the status to answer.
fn route(shared: &Shared, head: &[u8]) -> Result<u32, (u16, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err((400, "malformed request head")),
        Err(httparse::Error::Version) => return Err((505, "unsupported HTTP version")),
        Err(httparse::Error::TooManyHeaders) => return Err((431, "too many header fields")),
        Err(_) => return Err((400, "malformed request head")),
    }
    let host = match request_host(&req) {
        Ok(h) => h,
        Err(HeadError::DuplicateHost) => return Err((400, "more than one Host header")),
        Err(HeadError::MissingHost) => return Err((400, "HTTP/1.1 request without Host")),
        Err(_) => return Err((400, "invalid Host header")),
    };
    Ok(host
        .and_then(|h| shared.hosts.lookup(h))
        .map(|i| i as u32)
        .unwrap_or(0))
}

/// Serves one connection: `buf` holds bytes already read (a hand-back's payload).
/// The fast path for a fresh connection, outside the reactor: one non-blocking read,
/// and when it holds a whole head for a pool with room, the hand-off, without ever
/// registering the socket with epoll. Anything else (no data yet, a partial head, an
/// error to answer, a full pool) continues on the async path with the bytes read.
pub async fn accepted(stream: std::net::TcpStream, peer: SocketAddr, local: SocketAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; shared.limit_request_head];
    // SAFETY: `buf` is a valid, writable buffer of the given length for the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => return,
        n if n < 0 => buf.clear(),
        n => buf.truncate(n as usize),
    }
    if let Some(end) = head_end(&buf) {
        if let Ok(vhost) = route(&shared, &buf[..end]) {
            if let Some(&env) = shared.vhost_env.get(vhost as usize) {
                let meta = Meta {
                    flags: 0,
                    vhost,
                    peer,
                    local,
                };
                let sock = &shared.env_socks[env as usize];
                match handoff::send(sock.get_ref().as_fd(), &meta, &buf, stream.as_fd()) {
                    Ok(()) => return,
                    Err(HandoffError::Packet(e)) if e.is_would_block() => {}
                    Err(e) => {
                        let name = shared
                            .env_names
                            .get(env as usize)
                            .map(String::as_str)
                            .unwrap_or("?");
                        warn!(environment = name, "hand-off failed: {e}");
                    }
                }
            }
        }
    }
    match TcpStream::from_std(stream) {
        Ok(stream) => handle(stream, buf, peer, local, shared).await,
        Err(e) => warn!(%peer, "registering a connection: {e}"),
    }
}

pub async fn handle(
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
) {
    let limit = shared.limit_request_head;
    let end = match read_head(&mut stream, &mut buf, limit, shared.request_head_timeout).await {
        Head::Complete(end) => end,
        Head::Fail(status, why) => return respond::error(stream, status, why, peer, None).await,
        Head::Gone => {
            if !buf.is_empty() {
                debug!(%peer, bytes = buf.len(), "client closed before its request head was complete");
            }
            return;
        }
    };
    let vhost = match route(&shared, &buf[..end]) {
        Ok(v) => v,
        Err((status, why)) => return respond::error(stream, status, why, peer, None).await,
    };
    let Some(&env) = shared.vhost_env.get(vhost as usize) else {
        return respond::error(stream, 503, "vhost has no environment", peer, Some(5)).await;
    };
    let meta = Meta {
        flags: 0,
        vhost,
        peer,
        local,
    };
    match hand_off(&shared, env as usize, &meta, &buf, &stream).await {
        Ok(()) => {}
        Err(e) => {
            let name = shared
                .env_names
                .get(env as usize)
                .map(String::as_str)
                .unwrap_or("?");
            warn!(environment = name, "hand-off failed: {e}");
            respond::error(stream, 503, "environment unavailable", peer, Some(5)).await
        }
    }
}

/// Sends the connection to environment `env`'s pool, waiting a bounded time for room.
pub async fn hand_off(
    shared: &Shared,
    env: usize,
    meta: &Meta,
    payload: &[u8],
    stream: &TcpStream,
) -> Result<(), HandoffError> {
    let sock = &shared.env_socks[env];
    let attempt = async {
        loop {
            let mut guard = sock
                .writable()
                .await
                .map_err(|_| HandoffError::Packet(common::seqpacket::PacketError::Closed { fd: -1 }))?;
            match handoff::send(guard.get_inner().as_fd(), meta, payload, stream.as_fd()) {
                Err(HandoffError::Packet(e)) if e.is_would_block() => guard.clear_ready(),
                other => return other,
            }
        }
    };
    match tokio::time::timeout(shared.handoff_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(HandoffError::Packet(common::seqpacket::PacketError::WouldBlock {
            fd: -1,
        })),
    }
}
