//! `max_connections_per_ip`: one client address over the cap is closed at accept (one
//! log line for the episode) while another address is served; a slot given back is
//! taken again.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use crate::util::*;

const OVER: &str = "max_connections_per_ip: this address is over the cap";

fn config(root: &std::path::Path) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 1
max_multiplexers = 1
request_head_timeout = 20
max_connections_per_ip = 3

[environments.alice]
user = {ALICE}
group = {ALICE}
min_processors = 1
max_processors = 2

[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{}"
"#,
        root.join("alice").display()
    )
}

/// A whole GET from `from`: the response, or `None` when the connection was closed
/// without one.
fn get_from(from: Ipv4Addr, server: &TestServer) -> Option<Response> {
    let mut s = connect_from(from, server.addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n");
    read_response(&mut s, false)
}

/// A connection from `from` that sent half a head and waits in the multiplexer.
fn half_head(from: Ipv4Addr, server: &TestServer) -> TcpStream {
    let mut s = connect_from(from, server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: ali").unwrap();
    s
}

#[test]
fn an_address_over_the_cap_is_refused_while_another_is_served() {
    require_root!();
    let w = Dir::new("an_address_over_the_cap_is_refused_while_another_is_served");
    sites(w.path(), 0o600);
    let server = TestServer::start(&config(w.path()));
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let b = Ipv4Addr::new(127, 0, 0, 3);

    // Under the cap: served.
    let r = get_from(a, &server).expect("a first request from 127.0.0.2");
    assert_eq!(r.status, 200, "{r:?}");
    // Three slow clients from 127.0.0.2 fill its cap (accepted in order, so the
    // multiplexer holds them before it takes the next connection).
    let mut slow: Vec<TcpStream> = (0..3).map(|_| half_head(a, &server)).collect();
    for attempt in 0..2 {
        let r = get_from(a, &server);
        assert!(r.is_none(), "attempt {attempt}: over the cap yet answered: {r:?}");
    }
    // Another address is served meanwhile.
    for _ in 0..3 {
        let r = get_from(b, &server).expect("127.0.0.3 answered");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "alice home");
    }
    // One log line for the episode, not one per refused connection.
    let line = server
        .wait_for_log(OVER, Duration::from_secs(5))
        .expect("no refusal logged");
    eprintln!("refusal logged: {}", strip_ansi(&line));
    let lines = server.log_lines().iter().filter(|l| l.contains(OVER)).count();
    assert_eq!(lines, 1, "refusals logged: {lines}");

    // A slow client finishing its head gives its slot back once handed off.
    let mut done = slow.pop().unwrap();
    done.write_all(b"ce.test\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    done.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    done.read_to_end(&mut out).unwrap();
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "{out:?}"
    );
    let served = server.wait_until(Duration::from_secs(5), || {
        get_from(a, &server).is_some_and(|r| r.status == 200)
    });
    assert!(
        served,
        "127.0.0.2 still refused after one of its connections finished"
    );
    drop(slow);
}

/// With the shipped two multiplexers (one listening socket each, the kernel spreading
/// connections between them), the cap is still the server's: an address never holds
/// more than `max_connections_per_ip` connections in all multiplexers together.
#[test]
fn the_cap_holds_across_two_multiplexers() {
    require_root!();
    let w = Dir::new("the_cap_holds_across_two_multiplexers");
    sites(w.path(), 0o600);
    let cfg = config(w.path())
        .replace(
            "min_multiplexers = 1\nmax_multiplexers = 1\n",
            "min_multiplexers = 2\n",
        )
        .replace("max_connections_per_ip = 3", "max_connections_per_ip = 6");
    let server = TestServer::start(&cfg);
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let b = Ipv4Addr::new(127, 0, 0, 3);
    let mut conns: Vec<(TcpStream, bool)> = (0..14).map(|_| (half_head(a, &server), false)).collect();
    for (s, _) in &conns {
        s.set_nonblocking(true).unwrap();
    }
    // A refused connection is closed at accept; a held one waits for the rest of its
    // head (request_head_timeout = 20 s). Wait until at least 8 have been closed.
    let closed = |conns: &mut Vec<(TcpStream, bool)>| {
        for (s, gone) in conns.iter_mut() {
            let mut b = [0u8; 64];
            match s.read(&mut b) {
                Ok(_) => *gone = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *gone = true,
            }
        }
        conns.iter().filter(|(_, g)| *g).count()
    };
    let enough = server.wait_until(Duration::from_secs(10), || closed(&mut conns) >= 8);
    let refused = closed(&mut conns);
    assert!(enough, "only {refused} of 14 refused with a cap of 6");
    // Another address is served meanwhile, by whichever multiplexer.
    for _ in 0..4 {
        let r = get_from(b, &server).expect("127.0.0.3 answered");
        assert_eq!(r.status, 200, "{r:?}");
    }
    let refused = closed(&mut conns);
    let held = 14 - refused;
    // Two multiplexers taking the last slot at the same instant may both refuse.
    assert!((5..=6).contains(&held), "{held} held with a cap of 6");
    let pids: std::collections::HashSet<String> = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("multiplexer serving"))
        .map(|l| {
            l.split("pid=")
                .nth(1)
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(pids.len(), 2, "two multiplexers ran: {pids:?}");
}
