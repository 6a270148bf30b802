//! The one-shot fast path: a connection whose only request arrived with the hand-off,
//! asks to close, and has a small answer is served with one write, without ever
//! registering the socket with the reactor (as the multiplexer hands off without it).
//! Anything else goes through the connection loop.

use std::os::fd::BorrowedFd;
use std::time::{Instant, SystemTime};

use super::request::{self, Head};
use super::response::{self, Persist, SMALL_FILE};
use crate::handler::{self, Body, Method, Site};
use crate::session::{Completed, Observer};
use crate::transport;

/// A response ready to be written in one go.
pub(super) struct OneShot {
    pub bytes: Vec<u8>,
    status: u16,
    body_bytes: u64,
}

/// Builds the whole response to `buf` when it is one complete `Connection: close`
/// GET/HEAD without a body, and its answer is small; `None` otherwise.
pub(super) fn prepare(buf: &[u8], site: &Site, limit: usize) -> Option<(OneShot, Head)> {
    let head = request::parse(buf, limit).ok()??;
    if head.len != buf.len() || head.wants_keep_alive() {
        return None;
    }
    if !matches!(head.request.method, Method::Get | Method::Head) || head.expect_continue || head.expect_other
    {
        return None;
    }
    match &head.framing {
        Ok(f) if !f.has_body() => {}
        _ => return None,
    }
    let redirect = if site.https.redirects() {
        handler::https::redirect(site, &head.request)
    } else {
        None
    };
    if redirect.is_none() && handler::cgi::may_match(site, &head.request) {
        return None;
    }
    let response = match redirect {
        Some(redirect) => redirect,
        None => handler::respond(site, &head.request),
    };
    let head_only = head.request.method == Method::Head;
    let mut out = response::head_block(&response, Persist::Close);
    let body_bytes = match response.body {
        Body::None => 0,
        _ if head_only => 0,
        Body::Bytes(b) => {
            out.extend_from_slice(&b);
            b.len() as u64
        }
        Body::File { file, offset, len } if len <= SMALL_FILE => {
            response::append_file(&mut out, &file, offset, len).ok()?;
            len
        }
        Body::Hot(hot) if hot.body.len() as u64 <= SMALL_FILE => {
            out.extend_from_slice(&hot.body);
            hot.body.len() as u64
        }
        Body::File { .. } | Body::Hot(_) | Body::Stream(_) => return None,
    };
    if response.status >= 400 {
        tracing::info!(status = response.status, reason = %response.reason, "request refused");
    }
    Some((
        OneShot {
            bytes: out,
            status: response.status,
            body_bytes,
        },
        head,
    ))
}

/// Writes the prepared response to `fd` (plaintext: the one-shot path is the plain
/// transport's, before the reactor); returns how many bytes went out (the caller
/// finishes through the reactor if not all did).
pub(super) fn send(
    fd: BorrowedFd<'_>,
    shot: &OneShot,
    site: &Site,
    head: &Head,
    observer: &dyn Observer,
) -> usize {
    let started = SystemTime::now();
    let t0 = Instant::now();
    observer.started(site);
    observer.answering(shot.status, shot.body_bytes);
    let n = transport::send_now(fd, &shot.bytes, 0).unwrap_or(0);
    let req = &head.request;
    observer.completed(&Completed {
        site,
        method: req.method.as_str(),
        target: &req.target,
        minor: head.minor,
        status: shot.status,
        bytes: shot.body_bytes,
        started,
        duration: t0.elapsed(),
        referer: req.headers.referer.as_deref(),
        user_agent: req.headers.user_agent.as_deref(),
    });
    n
}
