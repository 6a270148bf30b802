//! Reads and writes on a client socket that never block, whatever the socket's
//! `O_NONBLOCK` says. The flag belongs to the open file description, which every
//! duplicate of the fd shares: a processor that hands a connection back may keep a
//! copy and clear the flag afterwards (`fcntl(F_SETFL, 0)`), and a plain `read(2)` or
//! `write(2)` in the multiplexer would then block its one thread, and every tenant's
//! connections with it. So every byte the multiplexer reads or writes on a client
//! socket goes through `recv`/`send` with `MSG_DONTWAIT` (and `MSG_NOSIGNAL`), which
//! do not block on any socket, driven by the reactor's readiness ([`DontWait`]).

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// One `recv(MSG_DONTWAIT | flags)` into `buf`: the bytes read (0 at end of file), or
/// the error (`WouldBlock` when nothing is there).
pub fn recv(stream: &impl AsRawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable buffer of its length for the call; with
    // MSG_DONTWAIT the call never blocks.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `send(MSG_DONTWAIT | MSG_NOSIGNAL)` of `buf`: the bytes the kernel took.
pub fn send(stream: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable buffer of its length for the call; with
    // MSG_DONTWAIT the call never blocks, with MSG_NOSIGNAL a reset peer is an error,
    // not a SIGPIPE.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A client stream read and written only with [`recv`] and [`send`].
pub struct DontWait<'a>(pub &'a TcpStream);

impl AsyncRead for DontWait<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let stream = self.0;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match stream.try_io(Interest::READABLE, || recv(stream, unfilled, 0)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for DontWait<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let stream = self.0;
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_io(Interest::WRITABLE, || send(stream, buf)) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// `shutdown(SHUT_WR)`, which never blocks.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(shutdown_write(self.0))
    }
}

/// `shutdown(fd, SHUT_WR)`.
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    // SAFETY: shutdown takes an fd this stream owns and a constant.
    if unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// With the socket's `O_NONBLOCK` cleared behind its back (as a processor keeping
    /// a copy could), reading with nothing to read and writing into a full buffer
    /// still return to the reactor instead of blocking the thread.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cleared_nonblocking_flag_blocks_nothing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = TcpStream::from_std(server).unwrap();
        // What a hostile copy does: the flag is the open file description's.
        let copy = nix::unistd::dup(server.as_raw_fd()).unwrap();
        // SAFETY: fcntl on an fd we own, with plain integers.
        assert!(unsafe { libc::fcntl(copy, libc::F_SETFL, 0) } == 0);
        let mut s = DontWait(&server);
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(std::time::Duration::from_millis(200), s.read(&mut buf)).await;
        assert!(read.is_err(), "the read waited in the reactor: {read:?}");
        // Fill the client's receive buffer and our send buffer: the write must wait
        // in the reactor too, not in the kernel.
        let big = vec![0u8; 1 << 20];
        let wrote = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            loop {
                s.write_all(&big).await.unwrap();
            }
        })
        .await;
        assert!(wrote.is_err());
        // The bytes flow once there are some.
        use std::io::Write;
        (&client).write_all(b"hello").unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        // SAFETY: `copy` is our own duplicate, closed once.
        unsafe { libc::close(copy) };
    }
}
