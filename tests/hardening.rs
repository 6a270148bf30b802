//! The holes a review found (issue 9), each reproduced against the real binary: heads
//! that used to panic a multiplexer's accept loop or leak a processor's connection
//! count, one parser's answer for first and later requests, routing that agrees
//! between multiplexer and processor for overlapping names, the status path behind
//! userinfo, the capability bounding set of every child, and its scrubbed environment.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::util::*;

/// The standard sites and this module's own files.
fn files(w: &Path) {
    sites(w, 0o600);
    put(w, "alice/a1.txt", b"alice one", ALICE, 0o600);
    put(w, "bob/b1.txt", b"bob one", BOB, 0o600);
}

fn start(test: &str, extra_vhosts: &str) -> (Dir, TestServer) {
    let w = Dir::new(test);
    files(w.path());
    let config = format!("{}\n{extra_vhosts}", two_env_config(w.path(), ""));
    let server = TestServer::start(&config);
    (w, server)
}

/// Every status line in `text`, in order (a response may follow a body directly).
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| text.get(i + m.len()..i + m.len() + 3)?.parse().ok())
        .collect()
}

/// A two-byte character across bytes 6–7 and 7–8 of the target: `target[..7]` and
/// `target[..8]` were both slices inside a character.
const UTF8_HEADS: [&[u8]; 2] = [
    b"GET /aaaaa\xc3\xa9 HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n",
    b"GET /aaaaaa\xc3\xa9 HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n",
];

#[test]
fn utf8_targets_stop_no_multiplexer() {
    require_root!();
    let (_w, server) = start("utf8_targets_stop_no_multiplexer", "");
    let muxes = server.children("multiplexer");
    // Fast path (one read holds the head): more requests than there are multiplexers,
    // each of which used to kill one accept loop.
    for _ in 0..3 * muxes.len().max(1) {
        for head in UTF8_HEADS {
            let out = raw(server.addr, head);
            assert_eq!(statuses(&out), vec![404], "{out}\n{}", server.log());
        }
    }
    // Slow path: the head arrives in two parts, so the multiplexer reads it async.
    for head in UTF8_HEADS {
        let mut s = connect(server.addr);
        s.write_all(&head[..12]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(&head[12..]).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert_eq!(statuses(&out), vec![404], "{out}\n{}", server.log());
    }
    let r = get(server.addr, "alice.test", "/a1.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "alice one"));
    assert_eq!(
        server.children("multiplexer"),
        muxes,
        "no multiplexer was replaced"
    );
}

#[test]
fn utf8_targets_pipelined_leak_no_connection() {
    require_root!();
    let (_w, server) = start("utf8_targets_pipelined_leak_no_connection", "");
    let alice = server.processors_of(ALICE);
    for head in UTF8_HEADS {
        // A later request on the connection: parsed by the processor, not the multiplexer.
        let mut bytes = b"GET /a1.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n".to_vec();
        bytes.extend_from_slice(head);
        let out = raw(server.addr, &bytes);
        assert_eq!(statuses(&out), vec![200, 404], "{out}\n{}", server.log());
    }
    let r = get(server.addr, "alice.test", "/a1.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "alice one"));
    assert!(
        server.wait_until(Duration::from_secs(5), || env_stat(
            server.addr,
            "alice",
            "active_conns"
        ) == 0),
        "alice's processors still count a connection: {}",
        scoreboard_json(server.addr)["environments"]
            .as_array()
            .map_or(0, |a| a.len())
    );
    assert_eq!(server.processors_of(ALICE), alice, "no processor died");
}

/// The same malformed head gets the same status as a connection's first request
/// (answered by a multiplexer) and as a later one (answered by a processor).
#[test]
fn malformed_heads_answered_alike_first_and_later() {
    require_root!();
    let (_w, server) = start("malformed_heads_answered_alike_first_and_later", "");
    let cases: [(&str, u16); 11] = [
        ("GET / FOO/1.1\r\nHost: alice.test\r\n\r\n", 400),
        ("G ET / HTTP/1.1\r\nHost: alice.test\r\n\r\n", 400),
        ("GET /a b HTTP/1.1\r\nHost: alice.test\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: alice.test\r\n\r\n", 505),
        ("GET http://alice.test/ HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: alice.test:80:80\r\n\r\n", 400),
        (
            "GET / HTTP/1.1\r\nHost: alice.test\r\nHost: bob.test\r\n\r\n",
            400,
        ),
        (
            "GET http://alice.test:x/ HTTP/1.1\r\nHost: alice.test\r\n\r\n",
            400,
        ),
    ];
    for (head, want) in cases {
        let first = raw(server.addr, head.as_bytes());
        let later = raw(
            server.addr,
            format!("GET /a1.txt HTTP/1.1\r\nHost: alice.test\r\n\r\n{head}").as_bytes(),
        );
        assert_eq!(statuses(&first), vec![want], "first {head:?}: {first}");
        assert_eq!(statuses(&later), vec![200, want], "later {head:?}: {later}");
    }
}

/// `*.alice.test` belongs to alice and `shop.alice.test` to bob: the multiplexer sends
/// shop to bob (an exact name wins over a wildcard), and so must alice's processor when
/// shop comes as a later request on a connection that began with alice.
#[test]
fn overlapping_wildcard_served_by_the_right_uid() {
    require_root!();
    let shop = r#"
[[vhosts]]
server_name = "shop.alice.test"
environment = "bob"
document_root = "BOB_ROOT"
"#;
    let w = Dir::new("overlapping_wildcard_served_by_the_right_uid");
    files(w.path());
    let extra = shop.replace("BOB_ROOT", &w.path().join("bob").display().to_string());
    let config = format!("{}\n{extra}", two_env_config(w.path(), ""));
    let server = TestServer::start(&config);
    let r = get(server.addr, "shop.alice.test", "/b1.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "bob one"), "first request");
    let mut s = connect(server.addr);
    let r = get_on(&mut s, "alice.test", "/a1.txt").expect("alice");
    assert_eq!((r.status, r.text().as_str()), (200, "alice one"));
    // bob's file is 0600 and owned by bob: only bob's processor can read it.
    let r = get_on(&mut s, "shop.alice.test", "/b1.txt").expect("shop after alice");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "bob one"),
        "{}",
        server.log()
    );
    let r = get_on(&mut s, "www.alice.test", "/a1.txt").expect("alice wildcard after shop");
    assert_eq!((r.status, r.text().as_str()), (200, "alice one"));
}

/// Userinfo in an absolute-form target does not hide the status path from the
/// multiplexer (it used to be passed to the tenant's processor).
#[test]
fn status_path_behind_userinfo_is_intercepted() {
    require_root!();
    let (_w, server) = start("status_path_behind_userinfo_is_intercepted", "");
    let out = raw(
        server.addr,
        b"GET http://user:pw@alice.test/server-status?auto HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&out), vec![200], "{out}");
    assert!(out.contains("Total Accesses:"), "{out}");
}

/// Every child's capability bounding set is empty once it serves (the loop that empties
/// it stops only at the end of the list).
#[test]
fn children_hold_no_capabilities() {
    require_root!();
    let (_w, server) = start("children_hold_no_capabilities", "");
    let _ = get(server.addr, "alice.test", "/a1.txt");
    let mut seen = 0;
    for pid in server
        .children("multiplexer")
        .into_iter()
        .chain(server.processors())
    {
        for key in ["CapBnd", "CapEff", "CapPrm", "CapAmb"] {
            let v = status_field(pid, key).unwrap_or_default();
            assert_eq!(v.trim(), "0000000000000000", "pid {pid} {key}");
        }
        assert_eq!(
            status_field(pid, "NoNewPrivs").unwrap_or_default().trim(),
            "1",
            "pid {pid}"
        );
        seen += 1;
    }
    assert!(seen >= 4, "multiplexers and processors checked: {seen}");
}

/// The variables of `pid`'s environment, from /proc.
fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every child (spares included) starts with a scrubbed environment: only the log
/// settings, nothing else of what the supervisor was started with.
#[test]
fn children_get_a_scrubbed_environment() {
    require_root!();
    let w = Dir::new("children_get_a_scrubbed_environment");
    files(w.path());
    let server = TestServer::try_start_with(&two_env_config(w.path(), ""), |cmd| {
        cmd.env("BULKHEAD_TEST_SECRET", "hunter2")
            .env("LD_PRELOAD", "")
            .env("RUST_BACKTRACE", "1");
    })
    .unwrap_or_else(|log| panic!("not ready:\n{log}"));
    let _ = get(server.addr, "alice.test", "/a1.txt");
    let sup = environ(server.pid());
    assert!(
        sup.iter().any(|v| v == "BULKHEAD_TEST_SECRET=hunter2"),
        "the supervisor did not get the variable: {sup:?}"
    );
    assert!(
        server.wait_until(Duration::from_secs(5), || server.spares().len() == 2),
        "no spares"
    );
    let children = server.all_children();
    assert!(children.len() >= 6, "{children:?}");
    for pid in children {
        let env = environ(pid);
        let names: Vec<&str> = env
            .iter()
            .filter_map(|v| v.split_once('='))
            .map(|(k, _)| k)
            .collect();
        assert!(
            names
                .iter()
                .all(|k| ["RUST_LOG", "RUST_BACKTRACE", "BULKHEAD_LOG_FORMAT"].contains(k)),
            "{:?} {pid} has {env:?}",
            cmdline(pid)
        );
        assert!(env.iter().any(|v| v == "RUST_LOG=info"), "{pid}: {env:?}");
        assert!(env.iter().any(|v| v == "RUST_BACKTRACE=1"), "{pid}: {env:?}");
    }
}

/// The pid file is written the way root opens every file: a symlink planted where it
/// goes is refused (the server does not start), and its target is never written.
#[test]
fn pid_file_symlink_is_not_followed() {
    require_root!();
    let w = Dir::new("pid_file_symlink_is_not_followed");
    files(w.path());
    let canary = w.path().join("canary");
    std::fs::write(&canary, b"untouched").unwrap();
    let run = w.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let pid_file = run.join("bulkhead.pid");
    std::os::unix::fs::symlink(&canary, &pid_file).unwrap();
    let config = two_env_config(w.path(), &format!("pid_file = \"{}\"", pid_file.display()));
    let started = TestServer::try_start(&config);
    assert!(started.is_err(), "the server started with a symlinked pid file");
    assert_eq!(std::fs::read(&canary).unwrap(), b"untouched");
    // A plain path works, and holds the supervisor's pid.
    std::fs::remove_file(&pid_file).unwrap();
    let server = TestServer::start(&config);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, server.pid());
}
