//! The bytes under hyper's HTTP/2: the TLS session behind a write buffer whose flush
//! first yields once, so that the frames of every stream ready in this turn of the
//! processor's local set (each stream answers in its own task) leave in one run of TLS
//! records and one write(2), not one per response.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};

/// Bytes of frames gathered before they are encrypted and written.
const WRITE_BUFFER: usize = 32 * 1024;

pub(super) struct Coalesce<T> {
    inner: BufWriter<T>,
    /// The last flush yielded: the next one writes.
    yielded: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Coalesce<T> {
    pub(super) fn new(io: T) -> Self {
        Self {
            inner: BufWriter::with_capacity(WRITE_BUFFER, io),
            yielded: false,
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.yielded && !self.inner.buffer().is_empty() {
            // Let the other ready tasks (streams with answers) add their frames first;
            // woken at once, so this only reorders the run queue.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.yielded = false;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_flush_yields_once_then_writes_everything_gathered() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut io = Coalesce::new(near);
        io.write_all(b"one ").await.unwrap();
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut io).poll_flush(cx))).await;
        assert!(first.is_pending(), "the first flush yields");
        io.write_all(b"two").await.unwrap();
        io.flush().await.unwrap();
        let mut got = [0u8; 7];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
        // Nothing buffered: a flush does not yield.
        let idle = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut io).poll_flush(cx))).await;
        assert!(idle.is_ready());
    }
}
