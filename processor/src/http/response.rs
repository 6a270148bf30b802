//! Writing responses: the status line and header block every response shares (Date,
//! Server, Content-Length, Connection), short HTML error pages, and file bodies —
//! small ones in the same write as the header block, large ones with sendfile(2)
//! driven by tokio's write readiness.

use std::fs::File;
use std::io;
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// How long a write may make no progress before the client is given up on
/// (Apache's `Timeout`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest count passed to one sendfile(2) call.
const SENDFILE_MAX: u64 = 1 << 30;

/// Why a response could not be written in full; the connection is closed.
#[derive(Debug, Error)]
pub enum WriteError {
    #[error("writing to the client: {0}")]
    Io(#[from] io::Error),
    #[error("client made no progress reading for {WRITE_TIMEOUT:?}")]
    Timeout,
    #[error("file ended {missing} bytes early (truncated while being sent)")]
    Truncated { missing: u64 },
}

/// What follows the header block.
#[derive(Debug)]
pub enum Body {
    /// No body and no Content-Length (304).
    None,
    /// In-memory body (error pages, redirects, OPTIONS).
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `offset`.
    File { file: File, offset: u64, len: u64 },
}

/// A response to be written.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// The status itself requires closing the connection.
    pub close: bool,
    /// For the log line of a 4xx/5xx.
    pub reason: String,
}

impl Reply {
    pub fn new(status: u16, body: Body) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            close: false,
            reason: String::new(),
        }
    }

    /// An error page, logged with `reason` when written. Statuses that leave the
    /// connection in doubt (400, 408, 414, 431, 500, 505) close it, as Apache does.
    pub fn error(status: u16, reason: impl ToString) -> Self {
        let text = reason_phrase(status);
        let page = format!(
            "<!DOCTYPE html>\n<html><head><title>{status} {text}</title></head>\
             <body><h1>{text}</h1></body></html>\n"
        );
        let mut reply = Self::new(status, Body::Bytes(page.into_bytes()));
        reply
            .headers
            .push(("Content-Type", "text/html; charset=utf-8".into()));
        reply.reason = reason.to_string();
        reply.close = matches!(status, 400 | 408 | 414 | 431 | 500 | 505);
        reply
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the Connection header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 default: no header.
    KeepAlive,
    /// HTTP/1.0 keep-alive: `Connection: keep-alive`.
    KeepAlive10,
    Close,
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The status line and header block.
pub(super) fn head_block(reply: &Reply, persist: Persist) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(256);
    let _ = write!(s, "HTTP/1.1 {} {}\r\n", reply.status, reason_phrase(reply.status));
    let _ = write!(s, "Date: {}\r\nServer: bulkhead\r\n", http_date_now());
    for (name, value) in &reply.headers {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    match &reply.body {
        Body::None => {}
        Body::Bytes(b) => {
            let _ = write!(s, "Content-Length: {}\r\n", b.len());
        }
        Body::File { len, .. } => {
            let _ = write!(s, "Content-Length: {len}\r\n");
        }
    }
    match persist {
        Persist::KeepAlive => {}
        Persist::KeepAlive10 => s.push_str("Connection: keep-alive\r\n"),
        Persist::Close => s.push_str("Connection: close\r\n"),
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Write `reply`; with `head_only`, the header block alone (HEAD). For a small file the
/// body is read before anything is written, so a failed read can still become a 500.
pub async fn write(
    stream: &mut TcpStream,
    reply: Reply,
    persist: Persist,
    head_only: bool,
) -> Result<(), WriteError> {
    let mut out = head_block(&reply, persist);
    match reply.body {
        Body::None => write_all(stream, &out).await,
        Body::Bytes(bytes) => {
            if !head_only {
                out.extend_from_slice(&bytes);
            }
            write_all(stream, &out).await
        }
        Body::File { .. } if head_only => write_all(stream, &out).await,
        Body::File { file, offset, len } if len <= SMALL_FILE => {
            // Small: read into the header buffer and send once (measured: sendfile's
            // setup costs more than the copy for a 1 KiB body on a fresh connection).
            let start = out.len();
            // `len` is at most SMALL_FILE, so this fits in usize.
            out.resize(start + len as usize, 0);
            if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(&file, &mut out[start..], offset) {
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    WriteError::Truncated { missing: len }
                } else {
                    WriteError::Io(e)
                });
            }
            write_all(stream, &out).await
        }
        Body::File { file, offset, len } => {
            // The header block with MSG_MORE, so the kernel sends it in one segment with
            // the first bytes sendfile(2) adds; two syscalls, no copy through user space.
            // (Not for an empty body: nothing would follow to push the header out.)
            let more = if len > 0 { libc::MSG_MORE } else { 0 };
            write_all_flags(stream, &out, more).await?;
            send_file(stream, &file, offset, len).await
        }
    }
}

/// Bodies up to this size are copied into the response buffer and sent in one write;
/// larger ones go out with sendfile(2).
pub const SMALL_FILE: u64 = 16 * 1024;

/// The `Date` header value, formatted once per second (as nginx caches its time).
fn http_date_now() -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        c.1.clone()
    })
}

/// The interim response to `Expect: 100-continue`.
pub async fn write_continue(stream: &mut TcpStream) -> Result<(), WriteError> {
    write_all(stream, b"HTTP/1.1 100 Continue\r\n\r\n").await
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), WriteError> {
    write_all_flags(stream, bytes, 0).await
}

async fn write_all_flags(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    flags: libc::c_int,
) -> Result<(), WriteError> {
    // Try the socket at once: a fresh connection's readiness is not known to the
    // reactor yet, and waiting for it costs a round through epoll per response.
    match direct_send(stream, bytes, flags) {
        Ok(n) if n == bytes.len() => return Ok(()),
        Ok(n) => bytes = &bytes[n..],
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(WriteError::Io(e)),
    }
    // Bounded overall: a response head or an in-memory body.
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await {
        Ok(r) => r.map_err(WriteError::Io),
        Err(_) => Err(WriteError::Timeout),
    }
}

/// One non-blocking send(2) outside the reactor (see `write_all`). A WouldBlock here
/// leaves the reactor's readiness alone, and the caller then waits through it.
fn direct_send(stream: &TcpStream, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `bytes` is a valid buffer for the duration of the call.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | flags,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// sendfile(2) `len` bytes from `offset`, waiting for write readiness between calls.
async fn send_file(stream: &TcpStream, file: &File, offset: u64, len: u64) -> Result<(), WriteError> {
    let mut off = libc::off_t::try_from(offset).map_err(|_| WriteError::Truncated { missing: len })?;
    let mut left = len;
    // First without the reactor (its readiness may not be known yet), like write_all.
    if left > 0 {
        use std::os::fd::AsRawFd;
        let count = left.min(SENDFILE_MAX) as usize;
        // SAFETY: both fds are open for the call; `off` is a valid off_t.
        let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
        if n > 0 {
            left -= n as u64;
        } else if n == 0 {
            return Err(WriteError::Truncated { missing: left });
        }
    }
    while left > 0 {
        match tokio::time::timeout(WRITE_TIMEOUT, stream.writable()).await {
            Ok(r) => r?,
            Err(_) => return Err(WriteError::Timeout),
        }
        let count = left.min(SENDFILE_MAX) as usize;
        let sent = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile(stream, file, Some(&mut off), count).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => return Err(WriteError::Truncated { missing: left }),
            Ok(n) => left -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WriteError::Io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_block_has_the_common_fields() {
        let reply = Reply::error(404, "gone").header("X-A", "b");
        let text = String::from_utf8(head_block(&reply, Persist::Close)).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\nDate: "), "{text}");
        assert!(text.contains("\r\nServer: bulkhead\r\n"));
        assert!(text.contains("\r\nX-A: b\r\n"));
        assert!(text.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(text.ends_with("\r\nConnection: close\r\n\r\n"));
        let not_modified = head_block(&Reply::new(304, Body::None), Persist::KeepAlive10);
        let text = String::from_utf8(not_modified).unwrap();
        assert!(!text.contains("Content-Length") && text.ends_with("Connection: keep-alive\r\n\r\n"));
    }
}
