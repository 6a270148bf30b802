//! Graceful reload (issue 5, item 8): SIGHUP re-reads the config. A client loop runs
//! through five reloads without a failed request; a broken config is refused with every
//! error logged (file:line: key) and the running children keep serving; an environment
//! whose uid changed is served by processors of the new uid. A reload refused for an
//! access log that cannot be opened changes nothing (a processor started later still
//! writes its own vhost's log); SIGUSR1 with 20 logged vhosts in one environment keeps
//! its processors and every vhost logs into its reopened file.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

const ALICE2: u32 = 2003;

fn config(w: &Path) -> String {
    pools_config(
        w,
        "",
        "min_processors = 1\nmax_processors = 4",
        "min_processors = 1\nmax_processors = 4",
        "",
    )
}

/// Sends SIGHUP number `n` (1-based) and waits for the new generation to start and the
/// old one to finish.
fn reload(server: &TestServer, n: usize) {
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log_count("reload: new generation starting", n, Duration::from_secs(10))
            .is_some(),
        "reload {n}: no new generation\n{}",
        server.log()
    );
    assert!(
        server
            .wait_for_log_count("reload: old generation finished", n, Duration::from_secs(10))
            .is_some(),
        "reload {n}: the old generation did not finish\n{}",
        server.log()
    );
}

/// How a client loop uses connections.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// A new connection per request, alternating alice and bob.
    NewConnection,
    /// One connection for alice's requests only.
    KeepAlive,
    /// One connection alternating alice and bob: every request after the first is
    /// handed back by one environment's processor to the other's.
    KeepAliveHandBack,
}

/// One request in one write (several small writes would meet Nagle and delayed ACKs).
fn request(s: &mut TcpStream, host: &str, close: bool) -> Option<Response> {
    use std::io::Write;
    let extra = if close { "Connection: close\r\n" } else { "" };
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes())
        .ok()?;
    read_response(s, false)
}

/// A client loop until `stop`: each request must be answered 200 with the right body.
/// A keep-alive connection is replaced only after a response with `Connection: close`
/// (a clean close the server announced). Counts requests in `done`; returns the
/// failures.
fn client(addr: SocketAddr, mode: Mode, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut n = 0;
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let (host, body) = if n % 2 == 0 || matches!(mode, Mode::KeepAlive) {
            ("alice.test", "alice home")
        } else {
            ("bob.test", "bob home")
        };
        n += 1;
        let r = match mode {
            Mode::NewConnection => request(&mut connect(addr), host, true),
            Mode::KeepAlive | Mode::KeepAliveHandBack => {
                let s = conn.get_or_insert_with(|| connect(addr));
                let r = request(s, host, false);
                let close = r.as_ref().is_none_or(|r| {
                    r.header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                });
                if close {
                    conn = None;
                }
                r
            }
        };
        done.fetch_add(1, Ordering::Relaxed);
        match r {
            Some(r) if r.status == 200 && r.body == body.as_bytes() => {}
            other => failures.push(format!(
                "{mode:?} request {n} to {host}: {:?}",
                other.map(|r| (r.status, r.text()))
            )),
        }
    }
    failures
}

#[test]
fn five_reloads_under_load_fail_no_request() {
    require_root!();
    let w = Dir::new("five_reloads_under_load_fail_no_request");
    sites(w.path(), 0o644);
    let server = TestServer::start(&config(w.path()));
    server.all_ok(1, "before");
    let stop = Arc::new(AtomicBool::new(false));
    let modes = [Mode::NewConnection, Mode::KeepAlive, Mode::KeepAliveHandBack];
    let done: Vec<Arc<AtomicUsize>> = modes.iter().map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let clients: Vec<_> = modes
        .into_iter()
        .zip(&done)
        .map(|(mode, done)| {
            let (addr, stop, done) = (server.addr, stop.clone(), done.clone());
            std::thread::spawn(move || client(addr, mode, stop, done))
        })
        .collect();
    // Each reload runs while every client is sending: wait for 30 more requests from
    // each before every SIGHUP and after the last reload.
    let progress = |what: &str| {
        let start: Vec<usize> = done.iter().map(|d| d.load(Ordering::Relaxed)).collect();
        let moved = server.wait_until(Duration::from_secs(10), || {
            done.iter()
                .zip(&start)
                .all(|(d, s)| d.load(Ordering::Relaxed) >= s + 30)
        });
        assert!(moved, "clients stalled {what}\n{}", server.log());
    };
    let before = server.serving_children();
    for n in 1..=5 {
        progress(&format!("before reload {n}"));
        reload(&server, n);
    }
    progress("after the last reload");
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let counts: Vec<usize> = done.iter().map(|d| d.load(Ordering::Relaxed)).collect();
    eprintln!("requests per client {modes:?}: {counts:?}");
    assert!(
        failures.is_empty(),
        "{} failed requests during five reloads: {failures:#?}\n{}",
        failures.len(),
        server.log()
    );
    // A new generation of children, and the same listener.
    let after = server.serving_children();
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "children of the first generation survived five reloads: {before:?} → {after:?}"
    );
    assert_eq!(scoreboard_json(server.addr)["generation"].as_u64(), Some(5));
    server.all_ok(5, "after five reloads");
}

#[test]
fn broken_config_is_refused_and_the_old_one_keeps_serving() {
    require_root!();
    let w = Dir::new("broken_config_is_refused_and_the_old_one_keeps_serving");
    sites(w.path(), 0o644);
    let good = config(w.path());
    let server = TestServer::start(&good);
    server.all_ok(3, "before");
    let procs = (server.processors_of(ALICE), server.processors_of(BOB));
    let muxes = server.children("multiplexer");

    // An unknown key right after `[server]`, at a known line.
    let text = std::fs::read_to_string(&server.config_path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.trim() == "[server]").unwrap() + 1;
    lines.insert(at, "frobnicate = 1");
    std::fs::write(&server.config_path, lines.join("\n")).unwrap();
    let want = format!("{}:{}: server.frobnicate", server.config_path.display(), at + 1);

    server.signal(Signal::SIGHUP);
    let refused = server.wait_for_log("reload refused", Duration::from_secs(5));
    assert!(refused.is_some(), "no refusal logged\n{}", server.log());
    assert!(
        server.log_lines().iter().any(|l| l.contains(&want)),
        "the error is not logged as `{want}`\n{}",
        server.log()
    );
    assert!(
        !server.log().contains("reload: new generation starting"),
        "a broken config started a generation\n{}",
        server.log()
    );

    // Served by the same children.
    server.all_ok(10, "after the refused reload");
    assert_eq!(
        (server.processors_of(ALICE), server.processors_of(BOB)),
        procs,
        "processors changed after a refused reload"
    );
    assert_eq!(server.children("multiplexer"), muxes);
    assert_eq!(scoreboard_json(server.addr)["generation"].as_u64(), Some(0));

    // Fixed again, the next SIGHUP reloads.
    std::fs::write(&server.config_path, text).unwrap();
    reload(&server, 1);
    server.all_ok(3, "after the fixed reload");
}

#[test]
fn changed_uid_takes_effect() {
    require_root!();
    let w = Dir::new("changed_uid_takes_effect");
    sites(w.path(), 0o644);
    let server = TestServer::start(&config(w.path()));
    server.all_ok(3, "before");
    assert_eq!(server.processors_of(ALICE).len(), 1);
    let bob = server.processors_of(BOB);

    let text = std::fs::read_to_string(&server.config_path).unwrap();
    let changed = text.replace(
        &format!("user = {ALICE}\ngroup = {ALICE}"),
        &format!("user = {ALICE2}\ngroup = {ALICE2}"),
    );
    assert_ne!(changed, text);
    std::fs::write(&server.config_path, changed).unwrap();
    reload(&server, 1);

    // A processor just assigned may still be dropping privileges: poll.
    let mut alice2 = Vec::new();
    server.wait_until(Duration::from_secs(5), || {
        alice2 = server.processors_of(ALICE2);
        !alice2.is_empty()
    });
    assert!(
        !alice2.is_empty(),
        "no processor runs as {ALICE2} after the reload\n{}",
        server.log()
    );
    assert!(
        server.processors_of(ALICE).is_empty(),
        "processors of the old uid are left: {:?}",
        server.processors_of(ALICE)
    );
    for p in &alice2 {
        assert_eq!(
            status_field(*p, "Gid").map(|g| first_num(&g)),
            Some(ALICE2),
            "gid of {p}"
        );
    }
    server.all_ok(5, "after the uid change");
    // Served by the new uid: the pool did not grow a processor of the old one.
    assert!(server.processors_of(ALICE).is_empty());
    assert!(server.processors_of(BOB).iter().all(|p| !bob.contains(p)));
}

#[test]
fn reload_and_stop_commands_signal_through_the_pid_file() {
    require_root!();
    let w = Dir::new("reload_and_stop_commands_signal_through_the_pid_file");
    sites(w.path(), 0o644);
    let pid_file = w.path().join("bulkhead.pid");
    let cfg = config(w.path()).replacen(
        "[server]\n",
        &format!("[server]\npid_file = \"{}\"\n", pid_file.display()),
        1,
    );
    let mut server = TestServer::start(&cfg);
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), server.pid().to_string());
    let run = |cmd: &str| {
        let out = std::process::Command::new(BIN)
            .args([cmd, "--config"])
            .arg(&server.config_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bulkhead {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("reload");
    reload(&server, 1);
    server.all_ok(3, "after `bulkhead reload`");
    run("stop");
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "`bulkhead stop` did not stop the server\n{}",
        server.log()
    );
    assert!(!pid_file.exists(), "pid file left after a stop");
}

fn vhost(name: &str, env: &str, root: &Path, log: &Path) -> String {
    format!(
        "[[vhosts]]\nserver_name = \"{name}\"\nenvironment = \"{env}\"\ndocument_root = \"{}\"\naccess_log = \"{}\"\n",
        root.display(),
        log.display()
    )
}

/// A config with `vhosts` only (the harness's two are replaced).
fn config_with(w: &Path, vhosts: &[String]) -> String {
    let base = config(w);
    let cut = base.find("[[vhosts]]").unwrap();
    format!("{}{}", &base[..cut], vhosts.join("\n"))
}

fn get_path(server: &TestServer, host: &str, path: &str) -> u16 {
    get(server.addr, host, path).status
}

/// A reload refused after its config was checked (a new listener address that cannot
/// be bound) changes nothing: the
/// running generation keeps its own log table, so a processor started for it later
/// (here: after its predecessor is killed) writes its own vhost's log, even though the
/// refused config put the vhosts in another order.
#[test]
fn refused_reload_keeps_the_running_logs() {
    require_root!();
    let w = Dir::new("refused_reload_keeps_the_running_logs");
    sites(w.path(), 0o644);
    let logs = log_dir(w.path());
    let (a, b) = (w.path().join("alice"), w.path().join("bob"));
    let (alice_log, bob_log) = (logs.join("alice.log"), logs.join("bob.log"));
    let good = config_with(
        w.path(),
        &[
            vhost("alice.test", "alice", &a, &alice_log),
            vhost("bob.test", "bob", &b, &bob_log),
        ],
    );
    let server = TestServer::start(&good);
    server.all_ok(1, "before");
    // Swapped order, one more logged vhost (so every index moves), and a listener on
    // an address someone else holds: valid for `check`, refused when it is bound.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let bad = config_with(
        w.path(),
        &[
            vhost("bob.test", "bob", &b, &bob_log),
            vhost("alice.test", "alice", &a, &alice_log),
            vhost("other.test", "bob", &b, &logs.join("other.log")),
        ],
    )
    .replacen(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:0\", \"{taken_addr}\"]"),
        1,
    );
    assert!(bad.contains(&taken_addr.to_string()), "{bad}");
    std::fs::write(&server.config_path, bad).unwrap();
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("reload refused", Duration::from_secs(5))
            .is_some(),
        "a reload with a listener that cannot be bound was not refused\n{}",
        server.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !server.log().contains("reload: new generation starting"),
        "a refused reload started a generation\n{}",
        server.log()
    );
    // A processor started later for the running generation.
    let old = server.processors_of(ALICE);
    for p in &old {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), Signal::SIGKILL);
    }
    assert!(
        server.wait_until(Duration::from_secs(10), || {
            let now = server.processors_of(ALICE);
            !now.is_empty() && now.iter().all(|p| !old.contains(p))
        }),
        "alice's processor was not replaced\n{}",
        server.log()
    );
    let ok = server.wait_until(Duration::from_secs(5), || {
        get_path(&server, "alice.test", "/?after-refused-reload") == 200
    });
    assert!(ok, "alice not served\n{}", server.log());
    let ok = server.wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&alice_log).is_ok_and(|t| t.contains("after-refused-reload"))
    });
    assert!(
        ok,
        "alice's request is not in alice's log\nalice: {:?}\nbob: {:?}\n{}",
        std::fs::read_to_string(&alice_log),
        std::fs::read_to_string(&bob_log),
        server.log()
    );
    assert!(
        !std::fs::read_to_string(&bob_log)
            .unwrap_or_default()
            .contains("after-refused-reload"),
        "alice's request went to bob's log"
    );
    assert_eq!(scoreboard_json(server.addr)["generation"].as_u64(), Some(0));
}

/// SIGUSR1 with 20 logged vhosts in one environment: its processor stays alive, and
/// every vhost logs into its reopened file.
#[test]
fn sigusr1_with_twenty_logged_vhosts_keeps_processors() {
    require_root!();
    let w = Dir::new("sigusr1_with_twenty_logged_vhosts_keeps_processors");
    sites(w.path(), 0o644);
    let logs = log_dir(w.path());
    let (a, b) = (w.path().join("alice"), w.path().join("bob"));
    let names: Vec<String> = (0..20).map(|i| format!("a{i}.alice.test")).collect();
    let mut vhosts: Vec<String> = names
        .iter()
        .map(|n| vhost(n, "alice", &a, &logs.join(format!("{n}.log"))))
        .collect();
    vhosts.push(vhost("bob.test", "bob", &b, &logs.join("bob.test.log")));
    let server = TestServer::start(&config_with(w.path(), &vhosts));
    for n in &names {
        assert_eq!(get_path(&server, n, "/"), 200, "{n}\n{}", server.log());
    }
    let before = server.processors_of(ALICE);
    assert!(!before.is_empty());
    // Rotate: move every log away, then ask for new ones.
    for n in &names {
        let p = logs.join(format!("{n}.log"));
        std::fs::rename(&p, p.with_extension("log.1")).unwrap();
    }
    server.signal(Signal::SIGUSR1);
    assert!(server
        .wait_for_log("SIGUSR1: reopening logs", Duration::from_secs(5))
        .is_some());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        server.processors_of(ALICE),
        before,
        "alice's processors changed after SIGUSR1\n{}",
        server.log()
    );
    for p in &before {
        assert!(alive(*p), "processor {p} stopped after SIGUSR1\n{}", server.log());
    }
    for n in &names {
        assert_eq!(get_path(&server, n, "/?after-usr1"), 200, "{n}\n{}", server.log());
    }
    for n in &names {
        let p = logs.join(format!("{n}.log"));
        let ok = server.wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&p).is_ok_and(|t| t.contains("after-usr1"))
        });
        assert!(ok, "{n} does not log into its reopened file\n{}", server.log());
    }
}

/// The listening TCP sockets `pid` holds, by inode.
fn listeners_of(pid: i32) -> std::collections::BTreeSet<u64> {
    let listening = tcp_inodes(true);
    socket_inodes(pid)
        .into_iter()
        .filter(|i| listening.contains(i))
        .collect()
}

#[test]
fn listeners_are_kept_across_a_reload() {
    require_root!();
    let w = Dir::new("listeners_are_kept_across_a_reload");
    sites(w.path(), 0o644);
    let server = TestServer::start(&config(w.path()));
    server.all_ok(1, "before");
    // The supervisor holds the listener (and the metrics one); every multiplexer holds
    // the same sockets it was given.
    let held = listeners_of(server.pid());
    assert!(held.len() >= 2, "the supervisor's listeners: {held:?}");
    let old = server.children("multiplexer");
    for m in &old {
        let mine = listeners_of(*m);
        assert!(
            !mine.is_empty() && mine.is_subset(&held),
            "multiplexer {m}: {mine:?} of {held:?}"
        );
    }
    reload(&server, 1);
    let new = server.children("multiplexer");
    assert!(new.iter().all(|m| !old.contains(m)), "{old:?} → {new:?}");
    // The very same sockets (same inodes), in the supervisor and the new multiplexers:
    // nothing was closed and bound again, so no connection could be refused meanwhile.
    assert_eq!(
        listeners_of(server.pid()),
        held,
        "the supervisor's listeners changed"
    );
    for m in &new {
        let mine = listeners_of(*m);
        assert!(
            !mine.is_empty() && mine.is_subset(&held),
            "new multiplexer {m}: {mine:?} of {held:?}"
        );
    }
    server.all_ok(3, "after the reload");
}

/// A connection an old multiplexer accepted just before a reload told it to stop
/// accepting (here: one whose head is still arriving) is handed to the old pool, and
/// the old pool is not closed under it: the old generation waits until the old
/// multiplexers hold nothing taken from a listener (their slot's QUIESCED).
#[test]
fn a_connection_accepted_before_a_reload_is_served() {
    require_root!();
    let w = Dir::new("a_connection_accepted_before_a_reload_is_served");
    sites(w.path(), 0o644);
    let server = TestServer::start(&config(w.path()));
    server.all_ok(1, "before");
    let mut s = connect(server.addr);
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: alice.test\r\n").unwrap();
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("old ones stop accepting", Duration::from_secs(10))
            .is_some(),
        "{}",
        server.log()
    );
    // Time for the old, idle processors to be told to drain and exit, had nothing
    // waited for the connection above (the head timeout is 2 s).
    std::thread::sleep(Duration::from_millis(1200));
    std::io::Write::write_all(&mut s, b"Connection: close\r\n\r\n").unwrap();
    let r = read_response(&mut s, false).unwrap_or_else(|| panic!("no response\n{}", server.log()));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "alice home"),
        "{}",
        server.log()
    );
    server.all_ok(1, "after");
}
