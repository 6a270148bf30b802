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
