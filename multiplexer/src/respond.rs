//! Answers the multiplexer gives itself (malformed heads, timeouts, full pools), each
//! with a short body, `Connection: close`, one log line, and a bounded lingering close
//! so the client reads the answer instead of a reset.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::warn;

/// How long, and how much, to keep reading after an error answer before closing.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// Reason phrase for the statuses the multiplexer sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

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
    let r = reason(status);
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {r}</title></head><body><h1>{r}</h1></body></html>\n"
    );
    let retry = retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {r}\r\nDate: {}\r\nServer: bulkhead\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\n{retry}Connection: close\r\n\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    let _ = tokio::time::timeout(LINGER, async {
        if stream.write_all(&out).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Writes a 200 with `body` (no body for HEAD) and closes the connection.
pub async fn ok(mut stream: TcpStream, content_type: &str, body: &[u8], head_only: bool) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nDate: {}\r\nServer: bulkhead\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    let _ = tokio::time::timeout(LINGER * 5, async {
        if stream.write_all(&out).await.is_ok() {
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let mut total = 0;
            while total < LINGER_BYTES {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        }
    })
    .await;
}
