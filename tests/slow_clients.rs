//! Idle keep-alive connections parked outside their task (`processor/src/park.rs`),
//! seen in `/proc/PID/fdinfo` of the processor's park set: resumed by their next
//! request (pipelined or not, or handed back), closed at `keep_alive_timeout` and at
//! SIGTERM, answered with `Connection: close` when their processor recycles, counted
//! across parks by `keep_alive_max_requests`, and 2,000 at once. (Debian's
//! `slowhttptest` attacks are in `tests/alone/slow_attacks.rs`.)

use std::io::{Read, Write};
use std::time::Duration;

use crate::util::*;

/// Connections parked in processor `pid`: the sockets in its park set, the one epoll
/// set whose entries are `EPOLLONESHOT` (tokio's are edge-triggered), as
/// `/proc/PID/fdinfo` lists them.
fn parked_in(pid: i32) -> usize {
    const ONESHOT: u32 = 1 << 30;
    fd_links(pid)
        .into_iter()
        .filter(|(_, target)| target == "anon_inode:[eventpoll]")
        .filter_map(|(fd, _)| std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("tfd:"))
                .filter_map(|l| {
                    let mut words = l.split_whitespace();
                    words.find(|w| *w == "events:")?;
                    u32::from_str_radix(words.next()?, 16).ok()
                })
                .filter(|events| events & ONESHOT != 0)
                .count()
        })
        .sum()
}

/// Connections parked in alice's processors.
fn parked(server: &TestServer) -> usize {
    server.processors_of(ALICE).into_iter().map(parked_in).sum()
}

/// Waits until alice's processors hold `n` parked connections.
fn wait_parked(server: &TestServer, n: usize) {
    let got = poll(Duration::from_secs(20), || (parked(server) == n).then_some(()));
    assert!(got.is_some(), "{} parked, not {n}", parked(server));
}

/// The two-environment server with `server_extra` in `[server]` and alice's processors
/// allowed `per_processor` connections each.
fn park_server(name: &str, server_extra: &str, per_processor: usize) -> (Dir, TestServer) {
    let w = Dir::new(name);
    sites(w.path(), 0o600);
    let config = two_env_config(w.path(), server_extra)
        .replace("keep_alive_timeout = 5\n", "")
        .replacen(
            "max_processors = 4\n",
            &format!("max_processors = 4\nmax_connections_per_processor = {per_processor}\n"),
            1,
        );
    let server = TestServer::start(&config);
    (w, server)
}

fn alice_home(s: &mut std::net::TcpStream) -> Response {
    // One write: a request in pieces would wait for the delayed ACK of its first.
    s.write_all(b"GET / HTTP/1.1\r\nHost: alice.test\r\n\r\n")
        .unwrap();
    let r = read_response(s, false).expect("answered");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "alice home");
    r
}

/// A parked connection serves its next request, and pipelined requests that wake it.
#[test]
fn parked_connection_serves_its_next_request() {
    require_root!();
    let (_w, server) = park_server(
        "parked_connection_serves_its_next_request",
        "keep_alive_timeout = 60",
        64,
    );
    let mut c = connect(server.addr);
    alice_home(&mut c);
    wait_parked(&server, 1);
    alice_home(&mut c);
    wait_parked(&server, 1);
    // Two requests in one write: the first wakes the park, the second is read after it.
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: alice.test\r\n\r\nGET /nothing HTTP/1.1\r\nHost: alice.test\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut c, false).expect("first pipelined answer");
    assert_eq!((r.status, r.text().as_str()), (200, "alice home"));
    let r = read_response(&mut c, false).expect("second pipelined answer");
    assert_eq!(r.status, 404);
    wait_parked(&server, 1);
    // A request for the other environment's host hands the parked connection back.
    let r = get_on(&mut c, "bob.test", "/").expect("answered by bob");
    assert_eq!((r.status, r.text().as_str()), (200, "bob home"));
    wait_parked(&server, 0);
}

/// A parked connection is closed at its keep-alive timeout, without an answer.
#[test]
fn parked_connection_closes_at_keep_alive_timeout() {
    require_root!();
    let (_w, server) = park_server(
        "parked_connection_closes_at_keep_alive_timeout",
        "keep_alive_timeout = 2",
        64,
    );
    let mut c = connect(server.addr);
    alice_home(&mut c);
    wait_parked(&server, 1);
    let mut rest = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let closed = c.read_to_end(&mut rest);
    assert!(closed.is_ok() && rest.is_empty(), "{closed:?} {rest:?}");
    wait_parked(&server, 0);
}

/// `keep_alive_max_requests` counts the requests of a connection across its parks.
#[test]
fn keep_alive_max_requests_counts_across_parks() {
    require_root!();
    let (_w, server) = park_server(
        "keep_alive_max_requests_counts_across_parks",
        "keep_alive_timeout = 60\nkeep_alive_max_requests = 3",
        64,
    );
    let mut c = connect(server.addr);
    for i in 1..=3 {
        let r = alice_home(&mut c);
        let close = r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        assert_eq!(close, i == 3, "request {i}: {r:?}");
        if i < 3 {
            wait_parked(&server, 1);
        }
    }
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

/// SIGTERM closes parked connections at once, as it closes idle ones.
#[test]
fn parked_connections_close_at_sigterm() {
    require_root!();
    let (_w, mut server) = park_server(
        "parked_connections_close_at_sigterm",
        "keep_alive_timeout = 60\nshutdown_timeout = 60",
        64,
    );
    let mut conns: Vec<_> = (0..5).map(|_| connect(server.addr)).collect();
    for c in &mut conns {
        alice_home(c);
    }
    wait_parked(&server, 5);
    server.signal(nix::sys::signal::Signal::SIGTERM);
    for c in &mut conns {
        let mut rest = Vec::new();
        let r = c.read_to_end(&mut rest);
        assert!(r.is_ok() && rest.is_empty(), "{r:?} {rest:?}");
    }
    // Well before keep_alive_timeout and shutdown_timeout: nothing waited for them.
    let code = server.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(!server.log().contains("shutdown_timeout reached"));
}

/// 2,000 parked connections each serve their next request.
#[test]
fn two_thousand_parked_connections_keep_working() {
    require_root!();
    const N: usize = 2000;
    let (_w, server) = park_server(
        "two_thousand_parked_connections_keep_working",
        "keep_alive_timeout = 120\nmax_connections_per_ip = 0",
        N + 100,
    );
    // Each asks at once: a connection left silent meets the head timeout (2 s here).
    let mut conns: Vec<_> = (0..N)
        .map(|_| {
            let mut c = connect(server.addr);
            alice_home(&mut c);
            c
        })
        .collect();
    wait_parked(&server, N);
    for c in &mut conns {
        alice_home(c);
    }
    wait_parked(&server, N);
    drop(conns);
    wait_parked(&server, 0);
}

/// A graceful stop (recycling after `max_requests_per_child`) leaves a parked
/// connection its next request, answered with `Connection: close`, as it leaves an idle
/// one; the old processor then exits.
#[test]
fn parked_connection_gets_its_last_answer_at_recycling() {
    require_root!();
    let w = Dir::new("parked_connection_gets_its_last_answer_at_recycling");
    sites(w.path(), 0o600);
    let config = two_env_config(w.path(), "")
        .replace("keep_alive_timeout = 5\n", "keep_alive_timeout = 60\n")
        .replacen(
            "max_processors = 4\n",
            "max_processors = 4\nmax_requests_per_child = 2\n",
            1,
        );
    let server = TestServer::start(&config);
    let old = server.processors_of(ALICE);
    assert_eq!(old.len(), 1, "{old:?}");
    let mut a = connect(server.addr);
    alice_home(&mut a);
    wait_parked(&server, 1);
    // The second request of the processor: it stops taking connections. Its serve
    // loop was woken by then (before this line was logged), so it tells its
    // connections to stop before the parked one's next request wakes the park set.
    let r = get(server.addr, "alice.test", "/");
    assert_eq!(r.status, 200);
    assert!(
        server
            .wait_for_log("max_requests_per_child reached", Duration::from_secs(20))
            .is_some(),
        "{}",
        server.log()
    );
    let r = alice_home(&mut a);
    let close = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    assert!(close, "{r:?}");
    let mut rest = Vec::new();
    let _ = a.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(
        server.wait_until(Duration::from_secs(20), || !alive(old[0])),
        "the recycled processor is still running"
    );
}
