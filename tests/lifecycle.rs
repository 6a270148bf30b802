//! The supervisor keeps the process table filled and stops the way it says: a child
//! killed with SIGKILL is replaced while requests keep being served, SIGTERM lets an
//! in-flight download finish while refusing new connections and exits 0, SIGINT stops
//! everything at once, `shutdown_timeout` SIGKILLs what SIGTERM left, a child that
//! keeps failing at start is restarted with a growing backoff instead of in a loop
//! (and before `ready`, five failures stop the server), and no child outlives the
//! supervisor. Spares (root, unassigned) count as children everywhere.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::*;

const BIG: u64 = 64 << 20;

/// Every child once both spares are up: spares (root, unassigned) must go too.
fn every_child(server: &TestServer) -> Vec<i32> {
    assert!(
        server.wait_until(Duration::from_secs(5), || server.spares().len() == 2),
        "spares: {:?} of {:?}",
        server.spares(),
        server.all_children()
    );
    server.all_children()
}

/// SIGKILLs `victim`, one of `kind()`, waits for the supervisor to log its death and
/// for one new pid in `kind()` (as many as before) that reports it is serving; returns
/// that pid. (A replacement may be a spare processor started earlier, so "new" means
/// "not in `kind()` before".)
fn kill_and_wait_replaced(server: &TestServer, what: &str, victim: i32, kind: impl Fn() -> Vec<i32>) -> i32 {
    let old = kind();
    assert!(old.contains(&victim));
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let died = server.wait_for_log_line(Duration::from_secs(5), |l| {
        l.contains("child died (signal SIGKILL); replacing in") && l.contains(&format!("pid={victim} "))
    });
    assert!(
        died.is_some(),
        "no death logged for {what} {victim}:\n{}",
        server.log()
    );
    let mut fresh = Vec::new();
    let replaced = server.wait_until(Duration::from_secs(5), || {
        let now = kind();
        fresh = now.iter().copied().filter(|p| !old.contains(p)).collect();
        now.len() == old.len() && !now.contains(&victim) && fresh.len() == 1
    });
    assert!(
        replaced,
        "{what} {victim} not replaced: {:?}\n{}",
        kind(),
        server.log()
    );
    let new = fresh[0];
    // A processor in a private view logs its pid as its PID namespace numbers it.
    let (logged, uid) = (ns_pid(new).unwrap_or(new), uid_of(new).unwrap_or(0));
    let serving = server.wait_for_log_line(Duration::from_secs(5), |l| {
        l.contains(" serving") && l.contains(&format!("pid={logged} ")) && l.contains(&format!("uid={uid}"))
    });
    assert!(
        serving.is_some(),
        "new {what} {new} never served:\n{}",
        server.log()
    );
    new
}

#[test]
fn killed_processor_and_multiplexer_are_replaced() {
    require_root!();
    let w = Dir::new("killed_processor_and_multiplexer_are_replaced");
    sites(w.path(), 0o600);
    let server = TestServer::start(&two_env_config(w.path(), ""));
    server.all_ok(1, "before any kill");

    // A processor: alice's only one is replaced by exactly one, bob's pool untouched.
    let procs = server.processors_of(ALICE);
    assert_eq!(procs.len(), 1, "{procs:?}");
    let bob = server.processors_of(BOB);
    let new = kill_and_wait_replaced(&server, "alice's processor", procs[0], || {
        server.processors_of(ALICE)
    });
    assert_eq!(server.processors_of(ALICE), vec![new]);
    assert_eq!(server.processors_of(BOB), bob, "bob's pool was disturbed");
    server.all_ok(50, "after the processor was replaced");

    // Killed again: a request sent right after it died, before any replacement is
    // ready, waits in the environment's socket (or for a processor started on demand)
    // instead of failing.
    kill(Pid::from_raw(new), Signal::SIGKILL).unwrap();
    assert!(server.wait_until(Duration::from_secs(5), || !alive(new)));
    let r = get(server.addr, "alice.test", "/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "alice home"),
        "{}",
        server.log()
    );
    assert!(
        server
            .wait_for_log_line(Duration::from_secs(5), |l| l
                .contains("child died (signal SIGKILL)")
                && l.contains(&format!("pid={new} ")))
            .is_some(),
        "{}",
        server.log()
    );
    let alice = server.processors_of(ALICE);
    assert!(
        (1..=4).contains(&alice.len()) && !alice.contains(&new),
        "{alice:?}"
    );
    server.all_ok(10, "after the second kill");

    // A multiplexer: the other one keeps accepting meanwhile.
    let muxes = server.children("multiplexer");
    assert_eq!(muxes.len(), 2, "{muxes:?}");
    let new = kill_and_wait_replaced(&server, "multiplexer", muxes[0], || {
        server.children("multiplexer")
    });
    assert_eq!(status_field(new, "Uid").map(|u| first_num(&u)), Some(MUX_UID));
    assert!(server.children("multiplexer").contains(&muxes[1]));
    server.all_ok(50, "after the multiplexer was replaced");

    // And bob's processor, through the same helper.
    kill_and_wait_replaced(&server, "bob's processor", bob[0], || server.processors_of(BOB));
    server.all_ok(10, "after bob's processor was replaced");
}

#[test]
fn sigterm_finishes_a_download_refuses_new_connections_and_exits_0() {
    require_root!();
    let w = Dir::new("sigterm_finishes_a_download_refuses_new_connections_and_exits_0");
    sites(w.path(), 0o600);
    sparse_file(w.path(), "alice/big.bin", BIG, ALICE, 0o600);
    let config = two_env_config(w.path(), "shutdown_timeout = 30")
        .replace("keep_alive_timeout = 5", "keep_alive_timeout = 10");
    let mut server = TestServer::start(&config);
    let children = every_child(&server);

    let mut s = connect(server.addr);
    write!(s, "GET /big.bin HTTP/1.1\r\nHost: alice.test\r\n\r\n").unwrap();
    // The head, then a little of the body: the rest is still to be sent when SIGTERM comes.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in the head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let len: u64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("no Content-Length");
    assert_eq!(len, BIG);
    let mut got = 0u64;
    let mut chunk = vec![0u8; 64 << 10];
    got += s.read(&mut chunk).unwrap() as u64;
    assert!(got > 0 && got < BIG);

    server.signal(Signal::SIGTERM);
    assert!(server
        .wait_for_log("SIGTERM: finishing in-flight requests", Duration::from_secs(5))
        .is_some());
    // Once both multiplexers are gone nothing listens any more, and the processors are
    // told to drain: alice's still has our download in flight.
    assert!(
        server.wait_until(Duration::from_secs(10), || server
            .children("multiplexer")
            .is_empty()),
        "multiplexers did not stop:\n{}",
        server.log()
    );
    // The processors are told in the same step; bob's, idle, stops at once.
    let bob = server.processors_of(BOB);
    assert!(
        server.wait_until(Duration::from_secs(5), || bob.iter().all(|p| !alive(*p))),
        "{}",
        server.log()
    );
    match TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(mut late) => {
            // Accepted by nobody: it must not get a response.
            late.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = late.write_all(b"GET / HTTP/1.1\r\nHost: alice.test\r\n\r\n");
            let mut out = Vec::new();
            let _ = late.read_to_end(&mut out);
            panic!(
                "a connection after SIGTERM was accepted (response: {:?})",
                String::from_utf8_lossy(&out)
            );
        }
    }
    assert!(
        alive(server.pid()),
        "the supervisor exited with a download in flight:\n{}",
        server.log()
    );

    // The download completes, every byte of it.
    let started = Instant::now();
    while got < len {
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "connection closed after {got} of {len} bytes:\n{}",
            server.log()
        );
        assert!(
            chunk[..n].iter().all(|&c| c == 0),
            "the sparse file reads as zeros"
        );
        got += n as u64;
    }
    assert_eq!(got, len);
    assert!(started.elapsed() < Duration::from_secs(10));
    // Then the processor closes the connection instead of keeping it alive for another
    // request (keep_alive_timeout is 10 s here; the read timeout 3 s).
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let t = Instant::now();
    match s.read(&mut chunk) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes after the body"),
        Err(e) => panic!(
            "connection still open {:?} after the body of an in-flight response under SIGTERM ({e}):\n{}",
            t.elapsed(),
            server.log()
        ),
    }

    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.log()
    );
    assert!(
        server.wait_until(Duration::from_secs(5), || children.iter().all(|p| !alive(*p))),
        "children left after SIGTERM"
    );
    let log = server.log();
    assert!(!log.contains("shutdown_timeout reached"), "{log}");
    assert!(!log.contains("child died"), "{log}");
}

#[test]
fn sigint_stops_at_once() {
    require_root!();
    let w = Dir::new("sigint_stops_at_once");
    sites(w.path(), 0o600);
    sparse_file(w.path(), "alice/big.bin", BIG, ALICE, 0o600);
    let mut server = TestServer::start(&two_env_config(w.path(), "shutdown_timeout = 30"));
    let children = every_child(&server);
    assert_eq!(server.children("multiplexer").len(), 2, "{children:?}");
    assert_eq!(server.processors_of(ALICE).len(), 1, "{children:?}");
    assert_eq!(server.processors_of(BOB).len(), 1, "{children:?}");

    // A download in flight does not delay SIGINT.
    let mut s = connect(server.addr);
    write!(s, "GET /big.bin HTTP/1.1\r\nHost: alice.test\r\n\r\n").unwrap();
    let mut chunk = vec![0u8; 64 << 10];
    let mut got = s.read(&mut chunk).unwrap() as u64;
    assert!(got > 0);

    let t = Instant::now();
    server.signal(Signal::SIGINT);
    let code = server.wait_exit(Duration::from_secs(5));
    assert!(
        code.is_some(),
        "still running 5 s after SIGINT:\n{}",
        server.log()
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "SIGINT took {:?}",
        t.elapsed()
    );
    assert!(
        server.wait_until(Duration::from_secs(5), || children.iter().all(|p| !alive(*p))),
        "children alive after SIGINT: {:?}",
        children.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    // The download was cut short.
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    assert!(got < BIG, "the whole file arrived despite SIGINT");
    assert!(TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)).is_err());
}

#[test]
fn a_child_failing_at_start_backs_off() {
    require_root!();
    let w = Dir::new("a_child_failing_at_start_backs_off");
    put(w.path(), "alice/index.html", b"alice home", ALICE, 0o600);
    put(w.path(), "jail/www/index.html", b"bob jailed", BOB, 0o600);
    // The chroot is root's (check refuses one bob could swap); its www is bob's.
    chown(&w.path().join("jail"), 0);
    let config = two_env_config(w.path(), "")
        .replace(
            &format!("group = {BOB}\n"),
            &format!(
                "group = {BOB}\nchroot = \"{}\"\n",
                w.path().join("jail").display()
            ),
        )
        .replace(
            &format!("\"{}\"", w.path().join("bob").display()),
            &format!("\"{}\"", w.path().join("jail/www").display()),
        );
    let server = TestServer::start(&config);
    assert_eq!(get(server.addr, "bob.test", "/").text(), "bob jailed");

    // Without its chroot directory, every new processor of bob fails at start.
    let jail = w.path().join("jail");
    let moved = w.path().join("jail.away");
    std::fs::rename(&jail, &moved).unwrap();
    let victim = server.processors_of(BOB)[0];
    let t = Instant::now();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    // The kill (a child younger than 10 s) and three failed starts: 100, 200, 400 and
    // 800 ms, so the fifth death, announced with 1.6 s, cannot come before 1.5 s have
    // passed, and no more than a handful of starts fit in that time.
    let fifth = server.wait_for_log_line(Duration::from_secs(8), |l| {
        l.contains("child died") && l.contains("replacing in 1.6s") && l.contains("role=\"processor\"")
    });
    let elapsed = t.elapsed();
    assert!(fifth.is_some(), "no 1.6 s backoff:\n{}", server.log());
    assert!(
        elapsed >= Duration::from_millis(1500),
        "5 deaths in {elapsed:?}:\n{}",
        server.log()
    );
    let deaths = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("child died") && l.contains("role=\"processor\""))
        .count();
    assert!(deaths <= 6, "{deaths} deaths in {elapsed:?}:\n{}", server.log());
    // Alice is not affected.
    let r = get(server.addr, "alice.test", "/");
    assert_eq!((r.status, r.text().as_str()), (200, "alice home"));

    // Once the directory is back, the next attempt succeeds and bob is served again.
    std::fs::rename(&moved, &jail).unwrap();
    assert!(
        server.wait_until(Duration::from_secs(8), || !server.processors_of(BOB).is_empty()
            && server
                .processors_of(BOB)
                .iter()
                .all(
                    |p| std::fs::read_link(format!("/proc/{p}/root")).ok() == jail.canonicalize().ok()
                )),
        "{}",
        server.log()
    );
    let r = get(server.addr, "bob.test", "/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "bob jailed"),
        "{}",
        server.log()
    );
}

#[test]
fn shutdown_timeout_sigkills_what_is_left() {
    require_root!();
    let w = Dir::new("shutdown_timeout_sigkills_what_is_left");
    sites(w.path(), 0o600);
    sparse_file(w.path(), "alice/big.bin", BIG, ALICE, 0o600);
    let config = two_env_config(w.path(), "shutdown_timeout = 1")
        .replace("keep_alive_timeout = 5", "keep_alive_timeout = 30");
    let mut server = TestServer::start(&config);
    let children = every_child(&server);
    let alice = server.processors_of(ALICE);
    // A download its client never reads: alice's processor cannot finish it.
    let stalled = stalled_download(server.addr, "alice.test", "/big.bin");

    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    let code = server.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    assert_eq!(code, Some(0), "after {took:?}:\n{}", server.log());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exited {took:?} after SIGTERM with shutdown_timeout = 1\n{}",
        server.log()
    );
    assert!(
        server
            .wait_for_log(
                "shutdown_timeout reached: killing what is left",
                Duration::from_secs(2)
            )
            .is_some(),
        "{}",
        server.log()
    );
    assert!(
        server.wait_until(Duration::from_secs(5), || children.iter().all(|p| !alive(*p))),
        "children left after shutdown_timeout: {:?} (alice's {alice:?})",
        children.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    drop(stalled);
}

/// The dynamic loader of this machine, which can run the binary as its program: the
/// supervisor's own executable is then the loader, and every child it execs as
/// `LOADER ROLE` fails at once (no program named ROLE).
fn dynamic_loader() -> Option<&'static str> {
    ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn five_start_failures_before_ready_stop_the_server() {
    require_root!();
    let Some(loader) = dynamic_loader() else {
        panic!("no dynamic loader found to run the binary through");
    };
    let w = Dir::new("five_start_failures_before_ready_stop_the_server");
    sites(w.path(), 0o600);
    let config = w.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        // No private views: their holders start before any child, and a holder that
        // cannot start stops the server at once; this is about the children's backoff.
        format!(
            "{}\n[status]\nmetrics_listen = \"off\"\n",
            two_env_config(w.path(), "private_view = false")
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = run_bounded(
        std::process::Command::new(loader)
            .arg(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(w.path())
            .env("RUST_LOG", "info"),
        None,
        Duration::from_secs(30),
    )
    .expect("the server kept running with children that cannot start");
    let took = t.elapsed();
    let log = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "exit {:?}:\n{log}", out.status);
    assert!(!log.contains("ready: listening"), "{log}");
    // The generation's fd keepers are exec'd the same way before any other child:
    // when they cannot start, nothing could, and the server stops at once, naming
    // them. (The children's backoff and the give-up rule are unit-tested in
    // supervisor/src/reap.rs.)
    if log.contains("fd keeper") {
        return;
    }
    assert!(
        log.contains("keeps failing at start (5 times in a row); giving up"),
        "{log}"
    );
    // Four backoffs (100, 200, 400, 800 ms) before the fifth failure.
    assert!(
        took >= Duration::from_millis(1500),
        "gave up after {took:?}:\n{log}"
    );
    let deaths = log.lines().filter(|l| l.contains("child died")).count();
    assert!(deaths >= 4, "{deaths} deaths logged:\n{log}");
}

#[test]
fn children_die_with_the_supervisor() {
    require_root!();
    let w = Dir::new("children_die_with_the_supervisor");
    sites(w.path(), 0o600);
    let mut server = TestServer::start(&two_env_config(w.path(), ""));
    server.all_ok(1, "before");
    let children = every_child(&server);
    assert!(children.len() >= 6, "{children:?}");
    // SIGKILL: the supervisor does nothing more; the parent-death signal does it all.
    server.signal(Signal::SIGKILL);
    let _ = server.wait_exit(Duration::from_secs(5));
    assert!(server.child.is_none(), "the supervisor survived SIGKILL");
    assert!(
        server.wait_until(Duration::from_secs(5), || children.iter().all(|p| !alive(*p))),
        "children outlived their supervisor: {:?}",
        children
            .iter()
            .filter(|p| alive(**p))
            .map(|p| (*p, cmdline(*p)))
            .collect::<Vec<_>>()
    );
    assert!(TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)).is_err());
}
