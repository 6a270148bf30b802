//! Connection limits: `max_clients_vhost` caps one vhost and not its neighbours;
//! `max_clients` caps the connections in processors server-wide (a new one waits and
//! gets 503, one warning) and what one multiplexer holds (over it a new connection it
//! would have to hold is closed at accept, one line per episode).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::*;

const BIG: u64 = 64 << 20;

/// Connected (not listening) TCP socket inodes the multiplexers hold.
fn held_by_multiplexers(server: &TestServer) -> usize {
    let connected = connected_tcp_inodes();
    server
        .children("multiplexer")
        .iter()
        .map(|m| socket_inodes(*m).intersection(&connected).count())
        .sum()
}

#[test]
fn max_clients_vhost_caps_one_vhost_not_its_neighbours() {
    require_root!();
    let w = Dir::new("max_clients_vhost_caps_one_vhost_not_its_neighbours");
    sites(w.path(), 0o600);
    put(w.path(), "capped/index.html", b"capped home", ALICE, 0o600);
    sparse_file(w.path(), "capped/big.bin", BIG, ALICE, 0o600);
    let more = format!(
        "[[vhosts]]\nserver_name = \"capped.test\"\nenvironment = \"alice\"\ndocument_root = \"{}\"\nmax_clients_vhost = 1\n",
        w.path().join("capped").display()
    );
    let server = TestServer::start(&pools_config(
        w.path(),
        "processor_wait_timeout = [1, 4]",
        "min_processors = 1\nmax_processors = 4",
        "",
        &more,
    ));
    ok(&server, "capped.test", "capped home", "under the cap");
    // That connection counts until its processor has closed it (the client may read
    // the whole response first): wait for it to be gone before taking the one place.
    let capped_active = || {
        let snap = scoreboard_json(server.addr);
        snap["vhosts"]
            .as_array()
            .and_then(|v| {
                v.iter()
                    .find(|v| v["server_name"].as_str() == Some("capped.test"))
            })
            .and_then(|v| v["active_conns"].as_u64())
            .expect("capped.test in the status page")
    };
    assert!(server.wait_until(Duration::from_secs(5), || capped_active() == 0));

    let download = stalled_download(server.addr, "capped.test", "/big.bin");
    let t = Instant::now();
    let r = get(server.addr, "capped.test", "/");
    let took = t.elapsed();
    assert_eq!(r.status, 503, "capped vhost over its limit: {r:?}");
    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    eprintln!("capped vhost refused in {took:?}");
    // The same environment's other vhost is served meanwhile, and so is bob.
    for _ in 0..5 {
        ok(
            &server,
            "alice.test",
            "alice home",
            "neighbour of the capped vhost",
        );
        ok(&server, "bob.test", "bob home", "other environment");
    }
    let snap = scoreboard_json(server.addr);
    let alice = env_row(&snap, "alice");
    assert_eq!(alice["dropped_vhost_limit"].as_u64(), Some(1), "{alice:?}");
    assert_eq!(alice["dropped_saturated"].as_u64(), Some(0), "{alice:?}");
    assert_eq!(alice["availability"].as_u64(), Some(100), "{alice:?}");

    drop(download);
    let served = server.wait_until(Duration::from_secs(5), || {
        get(server.addr, "capped.test", "/").status == 200
    });
    assert!(served, "capped vhost not served after its connection closed");
}

/// Multiplexers grow when every one is loaded, up to `max_multiplexers`, and an extra
/// one that accepts nothing for `multiplexer_idle_timeout` is stopped.
/// One multiplexer, `max_clients = 2`, long head and keep-alive timeouts.
fn capped_config(w: &std::path::Path) -> String {
    pools_config(
        w,
        "max_clients = 2\nprocessor_wait_timeout = [1, 2]",
        "min_processors = 1\nmax_processors = 4",
        "min_processors = 1\nmax_processors = 4",
        "",
    )
    .replace("min_multiplexers = 2", "min_multiplexers = 1")
    .replace("request_head_timeout = 2", "request_head_timeout = 30")
    .replace("keep_alive_timeout = 1", "keep_alive_timeout = 30")
}

#[test]
fn max_clients_closes_connections_a_multiplexer_cannot_hold() {
    require_root!();
    let w = Dir::new("max_clients_closes_connections_a_multiplexer_cannot_hold");
    sites(w.path(), 0o600);
    let server = TestServer::start(&capped_config(w.path()));
    ok(&server, "alice.test", "alice home", "before the limit");
    // Two connections whose heads never end: the multiplexer holds both.
    let mut partial: Vec<_> = (0..2)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    assert!(
        server.wait_until(Duration::from_secs(5), || held_by_multiplexers(&server) == 2),
        "the multiplexer does not hold both connections\n{}",
        server.log()
    );
    // Over the limit, a connection the multiplexer would have to hold (its head not
    // yet whole) is closed at once: no answer, no wait for the 30 s head timeout, one
    // line for the episode. (A whole head for a pool with room is handed off from the
    // accept loop itself, never held, so it does not count against this bound.)
    const LINE: &str = "max_clients connections are being read or routed";
    for i in 0..3 {
        let mut s = connect(server.addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: alice.test\r\n");
        let t = Instant::now();
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut out);
        assert!(
            out.is_empty(),
            "connection {i} over max_clients was answered: {out:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "connection {i} over max_clients held for {:?}",
            t.elapsed()
        );
    }
    assert!(
        server.wait_for_log(LINE, Duration::from_secs(5)).is_some(),
        "nothing logged\n{}",
        server.log()
    );
    let lines = server.log_lines().iter().filter(|l| l.contains(LINE)).count();
    assert_eq!(lines, 1, "one line per episode\n{}", server.log());
    // The held ones are served once their heads end, and new ones again after them.
    for s in &mut partial {
        s.write_all(b"Host: alice.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(s, false).expect("a held connection was dropped");
        assert_eq!((r.status, r.text().as_str()), (200, "alice home"));
    }
    drop(partial);
    assert!(
        server.wait_until(Duration::from_secs(5), || get(server.addr, "bob.test", "/")
            .status
            == 200),
        "not served after the held connections ended\n{}",
        server.log()
    );
}

#[test]
fn max_clients_caps_connections_in_processors_server_wide() {
    require_root!();
    let w = Dir::new("max_clients_caps_connections_in_processors_server_wide");
    sites(w.path(), 0o600);
    let server = TestServer::start(&capped_config(w.path()));
    // Two keep-alive connections, one in each environment, idle in their processors:
    // the server-wide limit is reached, though each pool has room.
    let mut kept = Vec::new();
    for (host, body) in [("alice.test", "alice home"), ("bob.test", "bob home")] {
        let mut s = connect(server.addr);
        let r = get_on(&mut s, host, "/").expect("no response");
        assert_eq!((r.status, r.text().as_str()), (200, body));
        kept.push(s);
    }
    assert!(
        server.wait_until(Duration::from_secs(5), || {
            let snap = scoreboard_json(server.addr);
            ["alice", "bob"]
                .iter()
                .all(|e| env_row(&snap, e)["active_conns"].as_u64() == Some(1))
        }),
        "the kept connections are not counted\n{}",
        server.log()
    );
    // A third waits at most processor_wait_timeout (1 s) and gets 503.
    let t = Instant::now();
    let r = get(server.addr, "alice.test", "/");
    let took = t.elapsed();
    assert_eq!(
        r.status,
        503,
        "a third connection over max_clients: {r:?}\n{}",
        server.log()
    );
    assert!(took < Duration::from_secs(3), "refused after {took:?}");
    assert!(
        server
            .wait_for_log("max_clients reached", Duration::from_secs(5))
            .is_some(),
        "no max_clients warning\n{}",
        server.log()
    );
    // One connection fewer in processors: served again.
    kept.pop();
    assert!(
        server.wait_until(Duration::from_secs(5), || get(server.addr, "alice.test", "/")
            .status
            == 200),
        "not served after a connection closed\n{}",
        server.log()
    );
}
