//! HTTP/2 keys of `[server]`: whether TLS connections offer `h2` by ALPN, and the
//! limits hyper's HTTP/2 server enforces on every connection (streams, header list,
//! flow-control windows, and the two reset budgets that stop rapid-reset and
//! CONTINUATION floods).

use crate::error::Report;
use crate::model::Http2;
use crate::tree::Table;

/// The `[server]` keys of this module.
pub(crate) const SERVER_KEYS: &[&str] = &[
    "http2",
    "http2_max_concurrent_streams",
    "http2_max_header_list_size",
    "http2_stream_window",
    "http2_connection_window",
    "http2_max_pending_accept_reset_streams",
    "http2_max_local_error_reset_streams",
];

/// The largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
const MAX_WINDOW: i64 = (1 << 31) - 1;

/// `[server] http2*`; `limit_request_head` is the default header list size.
pub(crate) fn server(t: &Table, r: &mut Report, limit_request_head: Option<usize>) -> Option<Http2> {
    let enabled = match t.get("http2") {
        None => Some(true),
        Some(e) => e.bool(r),
    };
    let streams = t.int_or(r, "http2_max_concurrent_streams", 128, 1, 10_000);
    let head = limit_request_head.unwrap_or(8192) as i64;
    let headers = t.int_or(r, "http2_max_header_list_size", head, 256, 1 << 20);
    let stream_window = t.int_or(r, "http2_stream_window", 1 << 20, 65_535, MAX_WINDOW);
    let conn_window = t.int_or(r, "http2_connection_window", 4 << 20, 65_535, MAX_WINDOW);
    let pending = t.int_or(r, "http2_max_pending_accept_reset_streams", 20, 1, 10_000);
    let local = t.int_or(r, "http2_max_local_error_reset_streams", 1024, 1, 1_000_000);
    Some(Http2 {
        enabled: enabled?,
        max_concurrent_streams: u32::try_from(streams?).ok()?,
        max_header_list_size: u32::try_from(headers?).ok()?,
        stream_window: u32::try_from(stream_window?).ok()?,
        connection_window: u32::try_from(conn_window?).ok()?,
        max_pending_accept_reset_streams: usize::try_from(pending?).ok()?,
        max_local_error_reset_streams: usize::try_from(local?).ok()?,
    })
}
