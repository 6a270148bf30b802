//! The one-shot fast path: a connection whose only request arrived with the hand-off,
//! asks to close, and has a small answer is served with one write, without ever
//! registering the socket with the reactor (as the multiplexer hands off without it).
//! Anything else goes through the connection loop.

use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

use super::request::{self, Method};
use super::response::{self, Body, Persist, SMALL_FILE};
use super::{conn, Completed, Observer, Site};

/// A response ready to be written in one go.
pub(super) struct OneShot {
    pub bytes: Vec<u8>,
    status: u16,
    body_bytes: u64,
}

/// Builds the whole response to `buf` when it is one complete `Connection: close`
/// GET/HEAD without a body, and its answer is small; `None` otherwise.
pub(super) fn prepare(buf: &[u8], site: &Site, limit: usize) -> Option<(OneShot, request::Head)> {
    let head = request::parse(buf, limit).ok()??;
    if head.len != buf.len() || head.wants_keep_alive() {
        return None;
    }
    if !matches!(head.method, Method::Get | Method::Head) || head.expect_continue {
        return None;
    }
    match &head.framing {
        Ok(f) if !f.has_body() => {}
        _ => return None,
    }
    let reply = conn::dispatch(site, &head);
    let head_only = head.method == Method::Head;
    let mut out = response::head_block(&reply, Persist::Close);
    let body_bytes = match reply.body {
        Body::None => 0,
        _ if head_only => 0,
        Body::Bytes(b) => {
            out.extend_from_slice(&b);
            b.len() as u64
        }
        Body::File { file, offset, len } if len <= SMALL_FILE => {
            let start = out.len();
            out.resize(start + len as usize, 0);
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut out[start..], offset).ok()?;
            len
        }
        Body::File { .. } => return None,
    };
    if reply.status >= 400 {
        tracing::info!(status = reply.status, reason = %reply.reason, "request refused");
    }
    Some((
        OneShot {
            bytes: out,
            status: reply.status,
            body_bytes,
        },
        head,
    ))
}

/// Writes the prepared response to `fd`; returns how many bytes went out (the caller
/// finishes through the reactor if not all did).
pub(super) fn send(
    fd: &impl AsRawFd,
    shot: &OneShot,
    site: &Site,
    head: &request::Head,
    observer: &dyn Observer,
) -> usize {
    let started = SystemTime::now();
    let t0 = Instant::now();
    observer.started(site);
    observer.answering(shot.status, shot.body_bytes);
    // SAFETY: the buffer is valid for the call; MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            shot.bytes.as_ptr().cast(),
            shot.bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    observer.completed(&Completed {
        site,
        method: head.method.as_str(),
        target: &head.target,
        minor: head.minor,
        status: shot.status,
        bytes: shot.body_bytes,
        started,
        duration: t0.elapsed(),
        referer: head.referer.as_deref(),
        user_agent: head.user_agent.as_deref(),
    });
    n.max(0) as usize
}
