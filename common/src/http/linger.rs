//! The lingering close (as Apache's `lingering_close`): after the last response,
//! half-close and read and drop what the client still sends, so that our close does not
//! turn into a reset that destroys the response in flight. Bounded per read, in total
//! and in bytes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

/// How long and how much to linger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// The longest wait for one read.
    pub per_read: Duration,
    /// The longest wait in all.
    pub total: Duration,
    /// Bytes read and dropped at most.
    pub bytes: usize,
}

/// Half-closes `stream`, then reads into `sink` and drops the bytes until the client
/// closes, an error, or a bound of `linger`.
pub async fn close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, sink: &mut [u8], linger: Linger) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let end = Instant::now() + linger.total;
    let mut total = 0usize;
    while total < linger.bytes {
        let until = end.min(Instant::now() + linger.per_read);
        match timeout_at(until, stream.read(sink)).await {
            Ok(Ok(n)) if n > 0 => total = total.saturating_add(n),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// The peer sees our half-close; what it then sends is read and dropped up to the
    /// byte bound, after which the close is ours.
    #[test]
    fn reads_until_a_bound() {
        rt().block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(64);
            let bound = Linger {
                per_read: Duration::from_secs(5),
                total: Duration::from_secs(5),
                bytes: 10,
            };
            let peer = async {
                let mut got = Vec::new();
                theirs.read_to_end(&mut got).await.unwrap();
                assert!(got.is_empty());
                for _ in 0..4 {
                    let _ = theirs.write_all(b"abcd").await;
                }
            };
            let mut sink = [0u8; 4];
            let t0 = std::time::Instant::now();
            // The peer stays open: only the byte bound can end the linger early.
            tokio::join!(close(&mut ours, &mut sink, bound), peer);
            assert!(t0.elapsed() < Duration::from_secs(2));
        });
    }

    /// A client that neither closes nor sends is given up on after `per_read`.
    #[test]
    fn gives_up_on_a_silent_client() {
        rt().block_on(async {
            let (mut ours, _theirs) = tokio::io::duplex(64);
            let bound = Linger {
                per_read: Duration::from_millis(20),
                total: Duration::from_secs(5),
                bytes: usize::MAX,
            };
            let t0 = std::time::Instant::now();
            close(&mut ours, &mut [0u8; 16], bound).await;
            assert!(t0.elapsed() < Duration::from_secs(2));
        });
    }
}
