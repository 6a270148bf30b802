//! `[server] http2*`: HTTP/2 on by default with safe limits, every bad value reported
//! at once with its line and key.

use crate::*;

#[test]
fn http2_is_on_with_safe_limits_by_default() {
    let s = parse(&cat(&[SERVER, "limit_request_head = 4096\n", ALICE, VHOST])).server;
    let h = &s.http2;
    assert!(h.enabled);
    assert_eq!(h.max_concurrent_streams, 128);
    assert_eq!(h.max_header_list_size, 4096, "the head limit by default");
    assert_eq!((h.stream_window, h.connection_window), (1 << 20, 4 << 20));
    assert_eq!(h.max_pending_accept_reset_streams, 20);
    assert_eq!(h.max_local_error_reset_streams, 1024);
}

#[test]
fn http2_keys_are_read_and_checked() {
    let set = "http2 = false\nhttp2_max_concurrent_streams = 10\nhttp2_max_header_list_size = 65536\n\
               http2_stream_window = 65535\nhttp2_connection_window = 1048576\n\
               http2_max_pending_accept_reset_streams = 5\nhttp2_max_local_error_reset_streams = 50\n";
    let h = parse(&cat(&[SERVER, set, ALICE, VHOST])).server.http2;
    assert!(!h.enabled);
    assert_eq!((h.max_concurrent_streams, h.max_header_list_size), (10, 65536));
    assert_eq!((h.stream_window, h.connection_window), (65535, 1 << 20));
    assert_eq!(
        (
            h.max_pending_accept_reset_streams,
            h.max_local_error_reset_streams
        ),
        (5, 50)
    );
    let bad = "http2 = \"yes\"\nhttp2_max_concurrent_streams = 0\nhttp2_stream_window = 100\n\
               http2_max_pending_accept_reset_streams = -1\n";
    let text = cat(&[SERVER, bad, ALICE, VHOST]);
    let e = errors(&text);
    assert_has(&e, line_of(&text, "http2 ="), "server.http2", "");
    for key in [
        "http2_max_concurrent_streams",
        "http2_stream_window",
        "http2_max_pending_accept_reset_streams",
    ] {
        assert_has(&e, line_of(&text, key), &format!("server.{key}"), "");
    }
}
