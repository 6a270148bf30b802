//! The bytes under a protocol. [`Transport::Plain`] is a TCP socket with the fast paths
//! measured in ARCHITECTURE.md: a write tried at once, before the reactor knows the
//! socket's readiness ([`send_now`]); file bodies with sendfile(2); and a `MSG_PEEK`
//! that lets a clean close skip the lingering close.
//!
//! Every read and write on a plain socket is `recv`/`send` with `MSG_DONTWAIT`, never
//! `read`/`write`: a socket that came through a hand-back ([`Transport::Shared`]) may
//! still be held by the processor that sent it back, which can clear O_NONBLOCK (a
//! flag of the file description both share) at any moment, and one blocking call
//! would stop this processor's thread and every connection on it. sendfile(2) has no
//! such flag, so a shared socket's files are read and sent in pieces.
//!
//! [`Transport::Tls`] is a rustls session over the socket: every method matches on the
//! variant, so a protocol is written once against [`Transport`] with no dynamic dispatch
//! per write; its `send_file` reads the file into records (no sendfile: the bytes are
//! encrypted here), its `nothing_pending` also asks whether decrypted bytes are
//! buffered, and it cannot be handed back (the session cannot leave the process).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// How long a write may make no progress before the client is given up on
/// (Apache's `Timeout`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of a file read per write where sendfile(2) cannot be used (a few TLS records).
const FILE_CHUNK: usize = 64 * 1024;

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
    /// A streamed body's source failed (a CGI script's timeout or read error).
    #[error("{0}")]
    Source(String),
}

/// One client connection's byte stream.
#[derive(Debug)]
pub enum Transport {
    /// Plaintext TCP straight from a multiplexer's accept.
    Plain(TcpStream),
    /// Plaintext TCP that came through a hand-back ([`common::handoff::flags::VISITED`]):
    /// another process may hold a copy, so nothing here may rely on O_NONBLOCK.
    Shared(TcpStream),
    /// TLS, its handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// A plain socket, [`Transport::Shared`] when it came through a hand-back.
    pub fn plain(stream: TcpStream, visited: bool) -> Self {
        if visited {
            Self::Shared(stream)
        } else {
            Self::Plain(stream)
        }
    }

    /// The peer address, for log lines only (a syscall, so not on the request path).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Plain(s) | Self::Shared(s) => s.peer_addr().ok(),
            Self::Tls(s) => s.get_ref().0.peer_addr().ok(),
        }
    }

    /// The local address (a syscall: CGI's SERVER_ADDR and SERVER_PORT only).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Plain(s) | Self::Shared(s) => s.local_addr().ok(),
            Self::Tls(s) => s.get_ref().0.local_addr().ok(),
        }
    }

    /// Writes all of `bytes`, trying once at once and then through the reactor, bounded
    /// by [`WRITE_TIMEOUT`]. `more`: more bytes follow at once (a header block before a
    /// sendfile body), so the kernel may send both in one segment.
    pub async fn write_all(&mut self, bytes: &[u8], more: bool) -> Result<(), WriteError> {
        match self {
            Self::Plain(s) | Self::Shared(s) => {
                plain_write_all(s, bytes, if more { libc::MSG_MORE } else { 0 }).await
            }
            Self::Tls(s) => tls_write_all(s, bytes, !more).await,
        }
    }

    /// Sends `len` bytes of `file` from `offset`: sendfile(2) on a plain socket, read
    /// and written in pieces otherwise.
    pub async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> Result<(), WriteError> {
        if let Self::Plain(s) = self {
            return plain_send_file(s, file, offset, len).await;
        }
        copy_file(self, file, offset, len).await
    }

    /// True when the client has sent nothing more (or has closed): closing now cannot
    /// turn into a reset that destroys the response, so no lingering is needed.
    pub fn nothing_pending(&self) -> bool {
        match self {
            // Only bytes left in the kernel's queue turn a close into a reset; what
            // rustls already took from the socket cannot.
            Self::Tls(s) => socket_quiet(s.get_ref().0),
            Self::Plain(s) | Self::Shared(s) => socket_quiet(s),
        }
    }

    /// The socket to hand back to a multiplexer with the unread bytes; `None` for a
    /// transport whose state cannot leave this process.
    pub fn hand_back_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Self::Plain(s) | Self::Shared(s) => Some(s.as_fd()),
            Self::Tls(_) => None,
        }
    }

    /// Whether the connection is TLS (its requests are checked against its certificate's
    /// vhost, and never handed back).
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

/// True when the client has sent nothing more on `s` (or has closed).
fn socket_quiet(s: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: a one-byte stack buffer valid for the call; MSG_PEEK|MSG_DONTWAIT
    // neither blocks nor consumes anything.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock)
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) | Self::Shared(s) => poll_recv(s, cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) | Self::Shared(s) => poll_send(s, cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(_) | Self::Shared(_) => Poll::Ready(Ok(())),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // shutdown(2) never blocks.
            Self::Plain(s) | Self::Shared(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A read through the reactor's readiness with [`recv_now`].
fn poll_recv(s: &TcpStream, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    loop {
        std::task::ready!(s.poll_read_ready(cx))?;
        let dst = buf.initialize_unfilled();
        match try_recv(s, dst) {
            Ok(n) => {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// One [`recv_now`] through the reactor's readiness. A short read (fewer bytes than
/// asked, but some) drained the socket's receive queue (epoll(7), "stream-oriented
/// files"), so it clears the readiness as an EAGAIN would: the next read waits for the
/// reactor instead of making the syscall that would say so (tokio's own `poll_read`
/// does the same). Bytes arriving after the read raise a new edge, and the reactor's
/// tick keeps a readiness it set in between.
pub fn try_recv(s: &TcpStream, dst: &mut [u8]) -> io::Result<usize> {
    let mut short = None;
    let r = s.try_io(Interest::READABLE, || {
        let n = recv_now(s.as_fd(), dst)?;
        if n > 0 && n < dst.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match short {
        Some(n) => Ok(n),
        None => r,
    }
}

/// A write through the reactor's readiness with [`send_now`].
fn poll_send(s: &TcpStream, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        std::task::ready!(s.poll_write_ready(cx))?;
        match s.try_io(Interest::WRITABLE, || send_now(s.as_fd(), bytes, 0)) {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// One recv(2) with `MSG_DONTWAIT`: never blocks, whatever the socket's O_NONBLOCK says.
pub fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and writable for its length during the call;
    // MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One non-blocking send(2) outside the reactor: a fresh connection's readiness is not
/// known to the reactor yet, and waiting for it costs a round through epoll. A
/// WouldBlock here leaves the reactor's readiness alone; the caller then waits through
/// it. The one-shot path uses it on a socket the reactor never sees.
pub fn send_now(fd: BorrowedFd<'_>, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `bytes` is a valid buffer for the duration of the call; MSG_DONTWAIT
    // never blocks.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
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

async fn plain_write_all(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    flags: libc::c_int,
) -> Result<(), WriteError> {
    match send_now(stream.as_fd(), bytes, flags) {
        Ok(n) if n == bytes.len() => return Ok(()),
        Ok(n) => bytes = &bytes[n..],
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(WriteError::Io(e)),
    }
    // Bounded overall: a response head or an in-memory body.
    let rest = async {
        while !bytes.is_empty() {
            stream.writable().await?;
            match stream.try_io(Interest::WRITABLE, || send_now(stream.as_fd(), bytes, flags)) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, rest).await {
        Ok(r) => r.map_err(WriteError::Io),
        Err(_) => Err(WriteError::Timeout),
    }
}

/// Writes `bytes` into the session and, when `flush`, out to the socket, bounded by
/// [`WRITE_TIMEOUT`].
async fn tls_write_all(
    stream: &mut TlsStream<TcpStream>,
    bytes: &[u8],
    flush: bool,
) -> Result<(), WriteError> {
    let write = async {
        stream.write_all(bytes).await?;
        if flush {
            stream.flush().await?;
        }
        Ok::<(), io::Error>(())
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r.map_err(WriteError::Io),
        Err(_) => Err(WriteError::Timeout),
    }
}

/// `len` bytes of `file` from `offset`, read in pieces and written through
/// [`Transport::write_all`] (TLS records, or a shared socket's sends); each piece's
/// write is bounded by [`WRITE_TIMEOUT`], and the last one flushes.
async fn copy_file(t: &mut Transport, file: &File, offset: u64, len: u64) -> Result<(), WriteError> {
    use std::os::unix::fs::FileExt;
    if len == 0 {
        return t.write_all(&[], false).await;
    }
    let mut buf = vec![0u8; FILE_CHUNK.min(usize::try_from(len).unwrap_or(FILE_CHUNK))];
    let (mut at, mut left) = (offset, len);
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(WriteError::Truncated { missing: left });
        }
        at += n as u64;
        left -= n as u64;
        t.write_all(&buf[..n], left > 0).await?;
    }
    Ok(())
}

/// sendfile(2) `len` bytes from `offset`, waiting for write readiness between calls.
async fn plain_send_file(stream: &TcpStream, file: &File, offset: u64, len: u64) -> Result<(), WriteError> {
    let mut off = libc::off_t::try_from(offset).map_err(|_| WriteError::Truncated { missing: len })?;
    let mut left = len;
    // First without the reactor (its readiness may not be known yet), like write_all.
    if left > 0 {
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
