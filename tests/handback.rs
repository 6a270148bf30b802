//! Routing by host, and hand-back on keep-alive connections: a later request on a
//! connection for another environment's vhost goes back through a multiplexer to the
//! right environment, sequential or pipelined, with responses in order. Every body comes
//! from a file mode 0600 owned by one environment's uid, so a body proves which uid
//! served it.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::util::*;

/// The standard sites and this module's own files.
fn files(w: &Path) {
    sites(w, 0o600);
    put(w, "alice/a1.txt", b"alice one", ALICE, 0o600);
    put(w, "alice/a2.txt", b"alice two", ALICE, 0o600);
    put(w, "bob/b1.txt", b"bob one", BOB, 0o600);
    put(w, "bob/b2.txt", b"bob two", BOB, 0o600);
}

fn start(test: &str) -> (Dir, TestServer) {
    let w = Dir::new(test);
    files(w.path());
    let server = TestServer::start(&two_env_config(w.path(), ""));
    (w, server)
}

fn expect(r: Option<Response>, body: &str, server: &TestServer, what: &str) {
    let r = r.unwrap_or_else(|| panic!("{what}: no response\n{}", server.log()));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, body),
        "{what}\n{}",
        server.log()
    );
}

#[test]
fn keep_alive_alternates_environments() {
    require_root!();
    let (_w, server) = start("keep_alive_alternates_environments");
    let mut s = connect(server.addr);
    expect(
        get_on(&mut s, "alice.test", "/a1.txt"),
        "alice one",
        &server,
        "alice first",
    );
    expect(
        get_on(&mut s, "bob.test", "/b1.txt"),
        "bob one",
        &server,
        "bob after alice",
    );
    expect(
        get_on(&mut s, "alice.test", "/a2.txt"),
        "alice two",
        &server,
        "alice after bob",
    );
    expect(
        get_on(&mut s, "alice.test", "/"),
        "alice home",
        &server,
        "alice again",
    );
    expect(
        get_on(&mut s, "bob.test", "/b2.txt"),
        "bob two",
        &server,
        "bob again",
    );
    // The same connection all along: it is still open and still served.
    write!(s, "GET / HTTP/1.1\r\nHost: bob.test\r\nConnection: close\r\n\r\n").unwrap();
    expect(read_response(&mut s, false), "bob home", &server, "last");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn pipelined_requests_for_two_environments_answer_in_order() {
    require_root!();
    let (_w, server) = start("pipelined_requests_for_two_environments_answer_in_order");
    let mut s = connect(server.addr);
    s.write_all(
        b"GET /a1.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n\
          GET /b1.txt HTTP/1.1\r\nHost: bob.test\r\n\r\n\
          GET /a2.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n\
          GET /b2.txt HTTP/1.1\r\nHost: bob.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    for (i, body) in ["alice one", "bob one", "alice two", "bob two"]
        .iter()
        .enumerate()
    {
        expect(
            read_response(&mut s, false),
            body,
            &server,
            &format!("response {i}"),
        );
    }
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // Starting with bob, and a HEAD in the middle (no body to frame).
    let mut s = connect(server.addr);
    s.write_all(
        b"GET /b1.txt HTTP/1.1\r\nHost: bob.test\r\n\r\n\
          HEAD /a1.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n\
          GET /a2.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n\
          GET /b2.txt HTTP/1.1\r\nHost: bob.test\r\n\r\n",
    )
    .unwrap();
    expect(read_response(&mut s, false), "bob one", &server, "bob first");
    let head = read_response(&mut s, true).expect("HEAD response");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("9"));
    expect(
        read_response(&mut s, false),
        "alice two",
        &server,
        "alice after HEAD",
    );
    expect(read_response(&mut s, false), "bob two", &server, "bob last");
}

/// A config whose first (default) vhost is neither alice.test nor bob.test, so routing
/// to a name, an alias or a wildcard cannot be mistaken for the default.
fn routing_config(w: &Path) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 2
request_head_timeout = 2
keep_alive_timeout = 5

[environments.alice]
user = {ALICE}
group = {ALICE}

[environments.bob]
user = {BOB}
group = {BOB}

[[vhosts]]
server_name = "default.test"
environment = "bob"
document_root = "{d}"

[[vhosts]]
server_name = "alice.test"
server_alias = ["www.alice.test", "*.alice.test"]
environment = "alice"
document_root = "{a}"

[[vhosts]]
server_name = "bob.test"
server_alias = ["*.bob.test"]
environment = "bob"
document_root = "{b}"
"#,
        d = w.join("bobdefault").display(),
        a = w.join("alice").display(),
        b = w.join("bob").display(),
    )
}

#[test]
fn host_routing_rules() {
    require_root!();
    let w = Dir::new("host_routing_rules");
    files(w.path());
    put(w.path(), "bobdefault/index.html", b"default site", BOB, 0o600);
    let server = TestServer::start(&routing_config(w.path()));
    let cases: &[(&str, &str, &str)] = &[
        (
            "exact name",
            "GET / HTTP/1.1\r\nHost: alice.test\r\n",
            "alice home",
        ),
        ("exact name", "GET / HTTP/1.1\r\nHost: bob.test\r\n", "bob home"),
        (
            "case and port",
            "GET / HTTP/1.1\r\nHost: BoB.TeSt:8080\r\n",
            "bob home",
        ),
        (
            "trailing dot",
            "GET / HTTP/1.1\r\nHost: alice.test.\r\n",
            "alice home",
        ),
        (
            "alias",
            "GET / HTTP/1.1\r\nHost: www.alice.test\r\n",
            "alice home",
        ),
        (
            "wildcard",
            "GET / HTTP/1.1\r\nHost: shop.alice.test\r\n",
            "alice home",
        ),
        (
            "deep wildcard",
            "GET / HTTP/1.1\r\nHost: a.b.alice.test\r\n",
            "alice home",
        ),
        (
            "wildcard of bob",
            "GET / HTTP/1.1\r\nHost: x.bob.test\r\n",
            "bob home",
        ),
        (
            "wildcard needs a label",
            "GET / HTTP/1.1\r\nHost: .alice.test\r\n",
            "default site",
        ),
        (
            "absolute form wins over Host",
            "GET http://bob.test/ HTTP/1.1\r\nHost: alice.test\r\n",
            "bob home",
        ),
        (
            "absolute form wins over Host",
            "GET http://alice.test/a1.txt HTTP/1.1\r\nHost: bob.test\r\n",
            "alice one",
        ),
        ("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n", "default site"),
        (
            "unknown Host",
            "GET / HTTP/1.1\r\nHost: nobody.test\r\n",
            "default site",
        ),
        (
            "default by name",
            "GET / HTTP/1.1\r\nHost: default.test\r\n",
            "default site",
        ),
    ];
    for (what, head, body) in cases {
        let reply = raw(server.addr, format!("{head}Connection: close\r\n\r\n").as_bytes());
        assert!(reply.starts_with("HTTP/1.1 200 "), "{what}: {head:?} -> {reply}");
        assert!(reply.ends_with(body), "{what}: {head:?} -> {reply}");
    }
}

#[test]
fn later_requests_are_routed_like_first_ones() {
    require_root!();
    let w = Dir::new("later_requests_are_routed_like_first_ones");
    files(w.path());
    put(w.path(), "bobdefault/index.html", b"default site", BOB, 0o600);
    let server = TestServer::start(&routing_config(w.path()));
    let mut s = connect(server.addr);
    expect(get_on(&mut s, "alice.test", "/"), "alice home", &server, "alice");
    // Absolute form on a later request: its authority wins in the processor too.
    write!(
        s,
        "GET http://bob.test/b1.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n"
    )
    .unwrap();
    expect(
        read_response(&mut s, false),
        "bob one",
        &server,
        "absolute form to bob",
    );
    expect(
        get_on(&mut s, "x.alice.test", "/a1.txt"),
        "alice one",
        &server,
        "wildcard back to alice",
    );
    expect(
        get_on(&mut s, "nobody.test", "/"),
        "default site",
        &server,
        "unknown host",
    );
    expect(
        get_on(&mut s, "www.alice.test", "/a2.txt"),
        "alice two",
        &server,
        "alias",
    );

    // A connection whose first request went to the default vhost by an unknown Host:
    // the same host stays there, another one is routed by name.
    let mut s = connect(server.addr);
    expect(
        get_on(&mut s, "nobody.test", "/"),
        "default site",
        &server,
        "default first",
    );
    expect(
        get_on(&mut s, "nobody.test", "/"),
        "default site",
        &server,
        "default again",
    );
    expect(
        get_on(&mut s, "alice.test", "/a1.txt"),
        "alice one",
        &server,
        "then alice",
    );
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    expect(
        get_on(&mut s, "bob.test", "/b2.txt"),
        "bob two",
        &server,
        "then bob",
    );
}
