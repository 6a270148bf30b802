//! The bytes under hyper's HTTP/2: the TLS session behind a write buffer whose flush,
//! when asked right after frames were written, is answered later, so that the frames
//! of every stream ready in this turn of the processor's local set (each stream answers
//! in its own task) leave in one run of TLS records and one write(2), not one per
//! response.
//!
//! h2 flushes in two places: to drain a large DATA frame it queued by reference (a 1 KiB
//! body is one, on a transport without vectored writes) before it encodes the next
//! frame, and at the end of every poll of the connection. Only the second needs the
//! bytes on the wire, and it comes with nothing written since the flush before it:
//! a flush right after writes is answered "done" with the task woken (so h2 polls
//! again, after the stream tasks now ready, and asks again at its end), and a flush
//! with nothing written since the last one, or with [`FLUSH_AT`] bytes gathered,
//! writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};

/// Bytes of frames gathered before they are encrypted and written.
const WRITE_BUFFER: usize = 32 * 1024;
/// Gathered bytes past which a flush always writes.
const FLUSH_AT: usize = 16 * 1024;

pub(super) struct Coalesce<T> {
    inner: BufWriter<T>,
    /// Bytes were written since the last flush was asked for.
    wrote: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Coalesce<T> {
    pub(super) fn new(io: T) -> Self {
        Self {
            inner: BufWriter::with_capacity(WRITE_BUFFER, io),
            wrote: false,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote = true;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let gathered = self.inner.buffer().len();
        let wrote = std::mem::replace(&mut self.wrote, false);
        if wrote && gathered > 0 && gathered < FLUSH_AT {
            // Later: the task is woken, so h2 polls again once the other ready tasks
            // (streams with answers) have run, and flushes at the end of that poll.
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wrote = false;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_flush_right_after_writes_waits_for_the_next_one() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut io = Coalesce::new(near);
        io.write_all(b"one ").await.unwrap();
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut io).poll_flush(cx))).await;
        assert!(matches!(first, Poll::Ready(Ok(()))), "answered at once");
        io.write_all(b"two").await.unwrap();
        io.flush().await.unwrap(); // after writes: answered, nothing sent yet
        let mut got = [0u8; 7];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(20), far.read_exact(&mut got)).await;
        assert!(early.is_err(), "nothing on the wire yet");
        io.flush().await.unwrap(); // nothing written since: writes everything gathered
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
        // Past FLUSH_AT, a flush writes at once.
        let big = vec![b'x'; FLUSH_AT];
        io.write_all(&big).await.unwrap();
        io.flush().await.unwrap();
        let mut back = vec![0u8; FLUSH_AT];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(back, big);
    }
}
