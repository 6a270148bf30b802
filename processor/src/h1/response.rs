//! HTTP/1.1 response framing: the status line and header block every response shares
//! (Date, Server, Content-Length, Connection), and how a [`Response`]'s body travels —
//! small files in the same write as the header block, large ones with the transport's
//! sendfile after it.

use std::fs::File;
use std::io;

use common::http::{date, status};

use crate::handler::cgi::Output;
use crate::handler::static_files::hot::Hot;
use crate::handler::{Body, Response};
use crate::transport::{Transport, WriteError};

/// Bodies up to this size are copied into the response buffer and sent in one write;
/// larger ones go out with sendfile(2).
pub const SMALL_FILE: u64 = 16 * 1024;

/// What the Connection header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 default: no header.
    KeepAlive,
    /// HTTP/1.0 keep-alive: `Connection: keep-alive`.
    KeepAlive10,
    Close,
}

/// Statuses that leave the connection in doubt close it, as Apache's
/// `ap_status_drops_connection`.
pub fn drops_connection(status: u16) -> bool {
    matches!(status, 400 | 408 | 414 | 431 | 500 | 505)
}

/// The status line and header block.
pub(super) fn head_block(response: &Response, persist: Persist) -> Vec<u8> {
    use std::fmt::Write as _;
    if let Body::Hot(hot) = &response.body {
        let room = if hot.body.len() as u64 <= SMALL_FILE {
            hot.body.len()
        } else {
            0
        };
        return hot_head(hot, response, persist, room);
    }
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "HTTP/1.1 {} {}\r\n",
        response.status,
        status::reason(response.status)
    );
    let _ = write!(s, "Date: {}\r\nServer: bulkhead\r\n", date::now());
    for (name, value) in &response.headers {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    match &response.body {
        Body::None | Body::Hot(_) => {}
        Body::Bytes(b) => {
            let _ = write!(s, "Content-Length: {}\r\n", b.len());
        }
        Body::File { len, .. } => {
            let _ = write!(s, "Content-Length: {len}\r\n");
        }
        Body::Stream(output) => {
            for (name, value) in &output.fields {
                let _ = write!(s, "{name}: {value}\r\n");
            }
            if let Some(len) = output.length {
                let _ = write!(s, "Content-Length: {len}\r\n");
            } else if output.chunked {
                s.push_str("Transfer-Encoding: chunked\r\n");
            }
        }
    }
    s.push_str(persist_field(persist));
    s.push_str("\r\n");
    s.into_bytes()
}

fn persist_field(persist: Persist) -> &'static str {
    match persist {
        Persist::KeepAlive => "",
        Persist::KeepAlive10 => "Connection: keep-alive\r\n",
        Persist::Close => "Connection: close\r\n",
    }
}

/// A cached file's 200, the same bytes as [`head_block`] writes for it from the file:
/// the entry's fields before the response's own (HSTS), then Content-Length. `room`:
/// capacity to leave for the body.
fn hot_head(hot: &Hot, response: &Response, persist: Persist, room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + hot.h1_fields.len() + room);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nDate: ");
    date::with_now(|d| out.extend_from_slice(d.as_bytes()));
    out.extend_from_slice(b"\r\nServer: bulkhead\r\n");
    out.extend_from_slice(&hot.h1_fields);
    for (name, value) in &response.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(hot.body.len() as u64, &mut digits));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(persist_field(persist).as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// `n` in decimal, in `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Appends `len` (at most [`SMALL_FILE`]) bytes of `file` from `offset` to `out`.
pub(super) fn append_file(out: &mut Vec<u8>, file: &File, offset: u64, len: u64) -> Result<(), WriteError> {
    let start = out.len();
    // `len` is at most SMALL_FILE, so this fits in usize.
    out.resize(start + len as usize, 0);
    std::os::unix::fs::FileExt::read_exact_at(file, &mut out[start..], offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WriteError::Truncated { missing: len }
        } else {
            WriteError::Io(e)
        }
    })
}

/// Write `response`; with `head_only`, the header block alone (HEAD). For a small file
/// the body is read before anything is written, so a failed read can still become a 500.
/// Returns the body bytes sent (for a stream, known only at its end).
pub async fn write(
    transport: &mut Transport,
    response: Response,
    persist: Persist,
    head_only: bool,
) -> Result<u64, WriteError> {
    let mut out = head_block(&response, persist);
    let len = response.body_len(head_only);
    let sent = match response.body {
        Body::None => transport.write_all(&out, false).await,
        Body::Bytes(bytes) => {
            if !head_only {
                out.extend_from_slice(&bytes);
            }
            transport.write_all(&out, false).await
        }
        Body::File { .. } if head_only => transport.write_all(&out, false).await,
        Body::File { file, offset, len } if len <= SMALL_FILE => {
            // Small: read into the header buffer and send once (measured: sendfile's
            // setup costs more than the copy for a 1 KiB body on a fresh connection).
            append_file(&mut out, &file, offset, len)?;
            transport.write_all(&out, false).await
        }
        Body::File { file, offset, len } => {
            // The header block with MSG_MORE, so the kernel sends it in one segment with
            // the first bytes sendfile(2) adds; two syscalls, no copy through user space.
            // (Not for an empty body: nothing would follow to push the header out.)
            transport.write_all(&out, len > 0).await?;
            transport.send_file(&file, offset, len).await
        }
        Body::Hot(hot) => {
            // The head and the body from memory in one write: one buffer for a small
            // body, else the two pieces in one sendmsg(2) (the rest, if the socket took
            // less, through the reactor).
            if head_only {
                transport.write_all(&out, false).await
            } else if hot.body.len() as u64 <= SMALL_FILE {
                out.extend_from_slice(&hot.body);
                transport.write_all(&out, false).await
            } else {
                write_two(transport, &out, &hot.body).await
            }
        }
        Body::Stream(_) if head_only => transport.write_all(&out, false).await,
        Body::Stream(output) => return write_stream(transport, out, output).await,
    };
    sent.map(|()| len)
}

/// Writes `head` and `body` with one sendmsg(2) on plain TCP when the socket takes them
/// (the rest through [`Transport::write_all`]); TLS writes them one after the other
/// (rustls gathers them into records).
async fn write_two(transport: &mut Transport, head: &[u8], body: &[u8]) -> Result<(), WriteError> {
    let sent = match transport.hand_back_fd().filter(|_| !transport.is_tls()) {
        Some(fd) => match send_two_now(fd, head, body) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(WriteError::Io(e)),
        },
        None => 0,
    };
    if sent < head.len() {
        transport.write_all(&head[sent..], true).await?;
        transport.write_all(body, false).await
    } else if sent < head.len() + body.len() {
        transport.write_all(&body[sent - head.len()..], false).await
    } else {
        // All of it went: no empty send after it.
        Ok(())
    }
}

/// One non-blocking sendmsg(2) of two buffers (as [`crate::transport::send_now`]).
fn send_two_now(fd: std::os::fd::BorrowedFd<'_>, head: &[u8], body: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: `msg` points at two iovecs over buffers that outlive the call, which only
    // reads them; MSG_DONTWAIT never blocks.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Writes the header block, then the stream as it comes, each piece of at most
/// [`SMALL_FILE`] bytes in one write (chunked when the stream says so, the last chunk
/// only after the source ended cleanly: a failed source never looks complete). Each
/// piece is read straight into the write buffer, after room for its chunk-size line.
async fn write_stream(
    transport: &mut Transport,
    mut out: Vec<u8>,
    mut output: Box<Output>,
) -> Result<u64, WriteError> {
    use std::io::Write as _;
    /// Room for a chunk-size line: its hex digits (4 for 16 KiB) and CRLF.
    const PREFIX: usize = 8;
    const _: () = assert!(SMALL_FILE <= 0xff_ffff, "a chunk-size line fits PREFIX");
    let mut sent = 0u64;
    loop {
        let start = out.len();
        if output.chunked {
            out.extend_from_slice(&[0u8; PREFIX]);
        }
        let data = out.len();
        let n = output
            .read_into(&mut out, SMALL_FILE as usize)
            .await
            .map_err(|e| WriteError::Source(e.to_string()))?;
        if n == 0 {
            out.truncate(start);
            if output.chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            return transport.write_all(&out, false).await.map(|()| sent);
        }
        sent += n as u64;
        if output.chunked {
            let mut size = [0u8; PREFIX];
            let mut cursor = &mut size[..];
            let _ = write!(cursor, "{n:x}\r\n");
            let used = PREFIX - cursor.len();
            out[start..start + used].copy_from_slice(&size[..used]);
            out.copy_within(data..data + n, start + used);
            out.truncate(start + used + n);
            out.extend_from_slice(b"\r\n");
        }
        // The source's end already arrived: the last chunk goes in the same write.
        if output.finished() {
            if output.chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            return transport.write_all(&out, false).await.map(|()| sent);
        }
        transport.write_all(&out, false).await?;
        out.clear();
    }
}

/// The interim response to `Expect: 100-continue`.
pub async fn write_continue(transport: &mut Transport) -> Result<(), WriteError> {
    transport.write_all(b"HTTP/1.1 100 Continue\r\n\r\n", false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_block_has_the_common_fields() {
        let response = Response::error(404, "gone").header("X-A", "b");
        let text = String::from_utf8(head_block(&response, Persist::Close)).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\nDate: "), "{text}");
        assert!(text.contains("\r\nServer: bulkhead\r\n"));
        assert!(text.contains("\r\nX-A: b\r\n"));
        assert!(text.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(text.ends_with("\r\nConnection: close\r\n\r\n"));
        let not_modified = head_block(&Response::new(304, Body::None), Persist::KeepAlive10);
        let text = String::from_utf8(not_modified).unwrap();
        assert!(!text.contains("Content-Length") && text.ends_with("Connection: keep-alive\r\n\r\n"));
    }
}
