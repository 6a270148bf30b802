//! Unit tests of the head scan and of `decide`, without root or sockets.

use super::{decide, Decision, HeadScan};
use crate::status::Format;
use common::control::VhostBoot;
use common::vhost::HostTable;

fn vhost(name: &str, env: u32) -> VhostBoot {
    VhostBoot {
        server_name: name.into(),
        env,
        max_clients: 0,
        tls: false,
    }
}

/// Routing needs no root and no sockets: the host table, the vhosts and the head.
#[test]
fn decide_routes_by_host() {
    let mut hosts = HostTable::new();
    hosts.insert("a.test", 0);
    hosts.insert("b.test", 1);
    hosts.insert("*.b.test", 1);
    hosts.insert("orphan.test", 7);
    let vhosts = [vhost("a.test", 0), vhost("b.test", 3)];
    let d = |head: &str| decide(&hosts, &vhosts, "/server-status", 8192, head.as_bytes());
    let route = |vhost, env| Decision::Route { vhost, env };
    assert_eq!(d("GET / HTTP/1.1\r\nHost: b.test\r\n\r\n"), route(1, 3));
    assert_eq!(d("GET / HTTP/1.1\r\nHost: X.B.Test:8080\r\n\r\n"), route(1, 3));
    assert_eq!(
        d("GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        route(1, 3)
    );
    // Missing (HTTP/1.0) or unknown hosts go to the first vhost.
    assert_eq!(d("GET / HTTP/1.0\r\n\r\n"), route(0, 0));
    assert_eq!(d("GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"), route(0, 0));
    // A host entry without a vhost is refused, not routed anywhere.
    assert_eq!(
        d("GET / HTTP/1.1\r\nHost: orphan.test\r\n\r\n").status(),
        Some(503)
    );
}

#[test]
fn decide_answers_errors_with_the_shared_statuses() {
    let hosts = HostTable::new();
    let vhosts = [vhost("a.test", 0)];
    let d = |head: &[u8], limit| decide(&hosts, &vhosts, "/server-status", limit, head);
    assert_eq!(d(b"GET / HTTP/1.1\r\n\r\n", 8192).status(), Some(400));
    assert_eq!(
        d(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 8192).status(),
        Some(400)
    );
    assert_eq!(d(b"GET / HTTP/2.0\r\n\r\n", 8192).status(), Some(505));
    assert_eq!(
        d(
            b"GET / HTTP/1.1\r\nX: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n\r\n",
            24
        )
        .status(),
        Some(431)
    );
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(64));
    assert_eq!(d(long.as_bytes(), 32).status(), Some(414));
    // Not a whole head (it must end with its blank line): malformed.
    assert_eq!(d(b"GET / HTTP/1.1\r\nHost: a\r\n", 8192).status(), Some(400));
}

#[test]
fn decide_finds_the_status_page() {
    let hosts = HostTable::new();
    let vhosts = [vhost("a.test", 0)];
    let d = |head: &str| decide(&hosts, &vhosts, "/server-status", 8192, head.as_bytes());
    match d("GET /server-status?auto HTTP/1.1\r\nHost: a.test\r\n\r\n") {
        Decision::Status { format, host } => {
            assert_eq!(format, Format::Auto);
            assert_eq!(host, "a.test");
        }
        other => panic!("{other:?}"),
    }
    match d("HEAD /server-status HTTP/1.0\r\n\r\n") {
        Decision::Status { host, .. } => assert_eq!(host, "localhost"),
        other => panic!("{other:?}"),
    }
    // Other methods, and other paths, are routed like any request.
    assert_eq!(
        d("POST /server-status HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        Decision::Route { vhost: 0, env: 0 }
    );
    assert_eq!(
        d("GET /server-status/x HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        Decision::Route { vhost: 0, env: 0 }
    );
}

impl Decision {
    fn status(&self) -> Option<u16> {
        match self {
            Decision::Fail(status, _) => Some(*status),
            _ => None,
        }
    }
}

/// A head trickled one byte at a time is found where a whole-buffer search finds
/// it, examining each byte a bounded number of times.
#[test]
fn head_scan_is_incremental() {
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    head.extend(std::iter::repeat_n(b"X-Pad: y\r\n".iter().copied(), 800).flatten());
    head.extend_from_slice(b"\r\nbody");
    let want = common::head::head_end(&head).unwrap();
    let mut scan = HeadScan::default();
    let mut found = None;
    for n in 1..=head.len() {
        if let Some(end) = scan.find(&head[..n]) {
            found = Some(end);
            break;
        }
    }
    assert_eq!(found, Some(want));
    assert!(
        scan.examined <= 4 * want,
        "examined {} bytes for a {want}-byte head",
        scan.examined
    );
    // Empty lines before the request line are skipped, however they arrive.
    let msg = b"\r\n\n\r\nGET / HTTP/1.0\r\n\r\n";
    let mut scan = HeadScan::default();
    let found = (1..=msg.len()).find_map(|n| scan.find(&msg[..n]));
    assert_eq!(found, common::head::head_end(msg));
    assert_eq!(found, Some(msg.len()));
    // Every way of splitting "\r\n\r\n" or "\n\n" across reads is found.
    for end in [&b"\r\n\r\n"[..], b"\n\n", b"\n\r\n"] {
        let mut msg = b"GET / HTTP/1.1\r\nHost: a".to_vec();
        msg.extend_from_slice(end);
        for cut in 1..msg.len() {
            let mut scan = HeadScan::default();
            assert_eq!(scan.find(&msg[..cut]), common::head::head_end(&msg[..cut]));
            assert_eq!(scan.find(&msg), Some(msg.len()), "cut at {cut}");
        }
    }
}
