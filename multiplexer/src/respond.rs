//! Answers the multiplexer gives itself (malformed heads, timeouts, full pools), each
//! with a short body, `Connection: close`, one log line, and a bounded lingering close
//! so the client reads the answer instead of a reset. Reason phrases, the error page,
//! the date and the linger are the processor's too ([`common::http`]).

use std::net::SocketAddr;
use std::time::Duration;

use common::http::linger::{self, Linger};
use common::http::{date, error_page, status};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::warn;

/// How long, and how much, to keep reading after an error answer before closing.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// Writes `status` and closes the connection.
pub async fn error(
    mut stream: TcpStream,
    status: u16,
    why: &str,
    peer: SocketAddr,
    retry_after: Option<u32>,
) {
    if status == 403 || status == 404 {
        tracing::info!(%peer, status, "{why}");
    } else {
        warn!(%peer, status, "{why}");
    }
    let r = status::reason(status);
    let body = error_page::page(status);
    let retry = retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {r}\r\nDate: {}\r\nServer: bulkhead\r\nContent-Type: {}\r\n\
         Content-Length: {}\r\n{retry}Connection: close\r\n\r\n",
        date::now(),
        error_page::CONTENT_TYPE,
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    write_and_linger(&mut stream, &out, LINGER).await;
}

/// Writes a 200 with `body` (no body for HEAD) and closes the connection.
pub async fn ok(mut stream: TcpStream, content_type: &str, body: &[u8], head_only: bool) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nDate: {}\r\nServer: bulkhead\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        date::now(),
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    write_and_linger(&mut stream, &out, LINGER * 5).await;
}

/// Writes `out` and lingers, all within `within`.
async fn write_and_linger(stream: &mut TcpStream, out: &[u8], within: Duration) {
    let bound = Linger {
        per_read: within,
        total: within,
        bytes: LINGER_BYTES,
    };
    // Never a plain write or read: the socket's O_NONBLOCK may have been cleared by a
    // processor that handed it back ([`crate::dontwait`]).
    let mut s = crate::dontwait::DontWait(stream);
    let _ = tokio::time::timeout(within, async {
        if s.write_all(out).await.is_ok() {
            linger::close(&mut s, &mut [0u8; 4096], bound).await;
        }
    })
    .await;
}
