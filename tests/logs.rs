//! Access and error logs: one Combined Log Format (or JSON) line per request in each
//! vhost's own file, open only in that vhost's environment; a logrotate-style rename
//! plus SIGUSR1 loses and duplicates nothing; the error log follows the rotation too.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

const UA: &str = "bulkhead-test/1.0 (logs)";
const REFERER: &str = "http://ref.example/from?page=1";

/// The two-environment config with `alice_log` on alice.test and `bob_log` on bob.test
/// (`access_log_format` `bob_format` when given).
fn config(w: &Path, extra_server: &str, alice_log: Option<&Path>, bob_log: Option<(&Path, &str)>) -> String {
    let mut c = two_env_config(w, extra_server);
    if let Some(p) = alice_log {
        c = c.replace(
            "environment = \"alice\"\n",
            &format!("environment = \"alice\"\naccess_log = \"{}\"\n", p.display()),
        );
    }
    if let Some((p, format)) = bob_log {
        c = c.replace(
            "environment = \"bob\"\n",
            &format!(
                "environment = \"bob\"\naccess_log = \"{}\"\naccess_log_format = \"{format}\"\n",
                p.display()
            ),
        );
    }
    c
}

/// One GET with a User-Agent and a Referer on a fresh connection.
fn get_ua(addr: SocketAddr, host: &str, path: &str) -> Response {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {UA}\r\nReferer: {REFERER}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut s, false).expect("no response")
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `p` has at least `n` lines; returns them.
fn wait_lines(p: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = lines(p);
        if l.len() >= n || Instant::now() >= deadline {
            return l;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `s` has the shape of `pattern`: `9` a digit, `A` a letter or digit or `_`
/// (regex `\w`), anything else itself.
fn shaped(s: &str, pattern: &str) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'9' => c.is_ascii_digit(),
            b'A' => c.is_ascii_alphanumeric() || c == b'_',
            p => c == p,
        })
}

/// Whether `line` matches
/// `^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET PATH HTTP/1\.1" STATUS \d+ "REF" "UA"$`.
fn combined(line: &str, path: &str, status: u16) -> bool {
    let Some(rest) = line.strip_prefix("127.0.0.1 - - [") else {
        return false;
    };
    let Some((when, rest)) = rest.split_at_checked(26) else {
        return false;
    };
    if !shaped(when, "99/AAA/9999:99:99:99 +0000") {
        return false;
    }
    let Some(rest) = rest.strip_prefix(&format!("] \"GET {path} HTTP/1.1\" {status} ")) else {
        return false;
    };
    let Some(rest) = rest.strip_suffix(&format!(" \"{REFERER}\" \"{UA}\"")) else {
        return false;
    };
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `pid` has a file open whose path is `p`.
fn holds(pid: i32, p: &Path) -> bool {
    let p = p.to_string_lossy();
    fd_links(pid).iter().any(|(_, t)| *t == p)
}

#[test]
fn access_logs_are_per_vhost_combined_or_json() {
    require_root!();
    let w = Dir::new("access_logs_are_per_vhost_combined_or_json");
    sites(w.path(), 0o644);
    let logs = log_dir(w.path());
    let (alice_log, bob_log) = (logs.join("alice.log"), logs.join("bob.log"));
    let server = TestServer::start(&config(w.path(), "", Some(&alice_log), Some((&bob_log, "json"))));

    let mut alice_paths = Vec::new();
    for n in 0..4 {
        let path = format!("/index.html?n={n}");
        let r = get_ua(server.addr, "alice.test", &path);
        assert_eq!((r.status, r.text().as_str()), (200, "alice home"));
        alice_paths.push((path, 200));
    }
    let r = get_ua(server.addr, "www.alice.test", "/missing.html");
    assert_eq!(r.status, 404);
    alice_paths.push(("/missing.html".to_string(), 404));
    for n in 0..3 {
        let r = get_ua(server.addr, "bob.test", &format!("/?n={n}"));
        assert_eq!((r.status, r.text().as_str()), (200, "bob home"));
    }

    // alice: one Combined Log Format line per request, in order (one connection after
    // the other, one processor).
    let got = wait_lines(&alice_log, alice_paths.len());
    assert_eq!(got.len(), alice_paths.len(), "{got:#?}\n{}", server.log());
    for (line, (path, status)) in got.iter().zip(&alice_paths) {
        assert!(
            combined(line, path, *status),
            "not a combined log line for {path} {status}: {line:?}"
        );
    }
    assert!(got[0].contains("\" 200 10 \""), "10 body bytes: {}", got[0]);

    // bob: one JSON object per line, nothing of alice's.
    let got = wait_lines(&bob_log, 3);
    assert_eq!(got.len(), 3, "{got:#?}");
    for (n, line) in got.iter().enumerate() {
        let v = serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
        assert_eq!(v["remote_addr"].as_str(), Some("127.0.0.1"), "{line}");
        assert_eq!(v["vhost"].as_str(), Some("bob.test"), "{line}");
        assert_eq!(v["method"].as_str(), Some("GET"), "{line}");
        assert_eq!(v["uri"].as_str(), Some(format!("/?n={n}").as_str()), "{line}");
        assert_eq!(v["status"].as_u64(), Some(200), "{line}");
        assert_eq!(v["bytes"].as_u64(), Some(8), "{line}");
        assert_eq!(v["user_agent"].as_str(), Some(UA), "{line}");
        assert_eq!(v["referer"].as_str(), Some(REFERER), "{line}");
    }

    // Each log is open in its own environment's processors only.
    let (alice, bob) = (server.processors_of(ALICE), server.processors_of(BOB));
    assert!(!alice.is_empty() && !bob.is_empty());
    for p in &alice {
        assert!(holds(*p, &alice_log), "alice's processor {p}: {:?}", fd_links(*p));
        assert!(
            !holds(*p, &bob_log),
            "alice's processor {p} holds bob's log: {:?}",
            fd_links(*p)
        );
    }
    for p in &bob {
        assert!(holds(*p, &bob_log), "bob's processor {p}: {:?}", fd_links(*p));
        assert!(
            !holds(*p, &alice_log),
            "bob's processor {p} holds alice's log: {:?}",
            fd_links(*p)
        );
    }
    for p in server.children("multiplexer").into_iter().chain(server.spares()) {
        assert!(
            !holds(p, &alice_log) && !holds(p, &bob_log),
            "{p} ({:?}) holds an access log: {:?}",
            cmdline(p),
            fd_links(p)
        );
    }
}

/// The `n` of every `GET /index.html?n=N` line of `p`.
fn numbers(p: &Path) -> Vec<usize> {
    lines(p)
        .iter()
        .filter_map(|l| {
            let rest = l.split("\"GET /index.html?n=").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

#[test]
fn rotation_by_rename_and_sigusr1_loses_and_duplicates_nothing() {
    require_root!();
    let w = Dir::new("rotation_by_rename_and_sigusr1_loses_and_duplicates_nothing");
    sites(w.path(), 0o644);
    let logs = log_dir(w.path());
    let log = logs.join("alice.log");
    let rotated = logs.join("alice.log.1");
    let server = TestServer::start(&config(w.path(), "", Some(&log), None));

    // Requests 0..100 go before the rotation, 100..200 during it (while the file is
    // renamed and SIGUSR1 handled), 200..300 once every processor writes the new file.
    const TOTAL: usize = 300;
    let sent = Arc::new(AtomicUsize::new(0));
    let rotated_flag = Arc::new(AtomicBool::new(false));
    let client = {
        let (sent, rotated_flag, addr) = (sent.clone(), rotated_flag.clone(), server.addr);
        std::thread::spawn(move || {
            for n in 0..TOTAL {
                if n == 200 {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while !rotated_flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                let r = get(addr, "alice.test", &format!("/index.html?n={n}"));
                assert_eq!(r.status, 200, "request {n}: {}", r.text());
                sent.store(n + 1, Ordering::SeqCst);
            }
        })
    };
    assert!(
        server.wait_until(Duration::from_secs(10), || sent.load(Ordering::SeqCst) >= 100),
        "the client is stuck at {}",
        sent.load(Ordering::SeqCst)
    );
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    assert!(
        server
            .wait_for_log("SIGUSR1: reopening logs", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log()
    );
    // The new file at the original path, and every alice processor writing it.
    let switched = server.wait_until(Duration::from_secs(5), || {
        let procs = server.processors_of(ALICE);
        log.exists() && !procs.is_empty() && procs.iter().all(|p| holds(*p, &log) && !holds(*p, &rotated))
    });
    let during = sent.load(Ordering::SeqCst);
    rotated_flag.store(true, Ordering::SeqCst);
    client.join().expect("client thread");
    assert!(
        switched,
        "alice's processors never switched to the new {}: {:?}\n{}",
        log.display(),
        server
            .processors_of(ALICE)
            .iter()
            .map(|p| (*p, fd_links(*p)))
            .collect::<Vec<_>>(),
        server.log()
    );

    // Every numbered request is in exactly one of the two files.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (old, new) = loop {
        let (old, new) = (numbers(&rotated), numbers(&log));
        if old.len() + new.len() >= TOTAL || Instant::now() >= deadline {
            break (old, new);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for n in old.iter().chain(&new) {
        *count.entry(*n).or_default() += 1;
    }
    let lost: Vec<usize> = (0..TOTAL).filter(|n| !count.contains_key(n)).collect();
    let twice: Vec<usize> = count.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect();
    assert!(
        lost.is_empty() && twice.is_empty() && count.len() == TOTAL,
        "lost {lost:?}, logged twice {twice:?} (old file {} lines, new file {} lines)",
        old.len(),
        new.len()
    );
    // Before the rename: the old file; after the switch: the new one.
    assert!((0..100).all(|n| old.contains(&n)), "old: {old:?}");
    assert!((200..TOTAL).all(|n| new.contains(&n)), "new: {new:?}");
    println!(
        "rotation: processors switched after {during} requests; {} lines in {}, {} in {}",
        old.len(),
        rotated.display(),
        new.len(),
        log.display()
    );
}

/// A server logging to `<w>/logs/error.log`, checked to have written its start there,
/// after that file was renamed to `error.log.1` and SIGUSR1 handled: the supervisor's
/// and every multiplexer's fd 2 is the new file, and every processor's is still its
/// environment's log pipe (the supervisor writes its lines). Returns the server, the
/// path and the rotated path.
fn rotated_error_log(w: &Path) -> (TestServer, PathBuf, PathBuf) {
    sites(w, 0o644);
    let logs = log_dir(w);
    let path = logs.join("error.log");
    let rotated = logs.join("error.log.1");
    let server = TestServer::start_with_error_log(
        &two_env_config(w, &format!("error_log = \"{}\"", path.display())),
        &path,
    );
    // The children write there too; a processor's start line comes through its log
    // pipe and may follow the supervisor's "ready".
    let read = || strip_ansi(&std::fs::read_to_string(&path).unwrap());
    server.wait_until(Duration::from_secs(5), || {
        let t = read();
        t.contains("multiplexer serving") && t.contains("processor serving")
    });
    let text = read();
    assert!(text.contains("ready: listening on "), "{text}");
    assert!(text.contains("multiplexer serving"), "{text}");
    assert!(text.contains("processor serving"), "{text}");
    assert!(!text.contains("request refused"), "{text}");

    std::fs::rename(&path, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    assert!(
        server
            .wait_for_log("SIGUSR1: reopening logs", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log()
    );
    // The supervisor's and the multiplexers' stderr move to the new file at the
    // original path; a processor's stays its log pipe.
    let mut pids = server.children("multiplexer");
    pids.push(server.pid());
    for p in server.processors() {
        let fd2 = fd_links(p).into_iter().find(|(fd, _)| *fd == 2);
        assert!(
            fd2.as_ref().is_some_and(|(_, t)| t.starts_with("pipe:[")),
            "processor {p}: fd 2 is {fd2:?}"
        );
    }
    // A spare (root, unassigned) holds the error log it was exec'd with: the rotated
    // file or the new one, never a pipe or anything else.
    for p in server.spares() {
        let fd2 = fd_links(p).into_iter().find(|(fd, _)| *fd == 2);
        assert!(
            fd2.as_ref()
                .is_some_and(|(_, t)| Path::new(t) == path || Path::new(t) == rotated),
            "spare {p}: fd 2 is {fd2:?}"
        );
    }
    let moved = server.wait_until(Duration::from_secs(5), || {
        path.exists()
            && pids.iter().all(|p| {
                fd_links(*p)
                    .iter()
                    .any(|(fd, t)| *fd == 2 && Path::new(t) == path)
            })
    });
    assert!(
        moved,
        "fd 2 not moved to the new {}: {:?}",
        path.display(),
        pids.iter()
            .map(|p| (*p, fd_links(*p).into_iter().find(|(fd, _)| *fd == 2)))
            .collect::<Vec<_>>()
    );

    (server, path, rotated)
}

#[test]
fn error_log_file_receives_every_process_and_follows_rotation() {
    require_root!();
    let w = Dir::new("error_log_file_receives_every_process_and_follows_rotation");
    let (server, path, rotated) = rotated_error_log(w.path());

    // A processor logs a 404 at info ("request refused"): in the new file only.
    let r = get(server.addr, "alice.test", "/missing.html");
    assert_eq!(r.status, 404);
    let deadline = Instant::now() + Duration::from_secs(5);
    let new = loop {
        let new = strip_ansi(&std::fs::read_to_string(&path).unwrap_or_default());
        if new.contains("request refused") || Instant::now() >= deadline {
            break new;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(new.contains("request refused"), "new error log:\n{new}");
    let old = strip_ansi(&std::fs::read_to_string(&rotated).unwrap());
    assert!(!old.contains("request refused"), "old error log:\n{old}");
    assert!(old.contains("SIGUSR1: reopening logs"), "old error log:\n{old}");
}

/// A spare processor is exec'd ahead of need, so its stderr is whatever the error log
/// was then; once assigned after a rotation it must still write the new file.
#[test]
fn error_log_rotation_reaches_processors_assigned_later() {
    require_root!();
    let w = Dir::new("error_log_rotation_reaches_processors_assigned_later");
    let (server, path, rotated) = rotated_error_log(w.path());

    // A processor that replaces alice's after the rotation (a spare exec'd before it,
    // or a fresh one) writes the new file too.
    let victim = server.processors_of(ALICE)[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let replaced = server.wait_until(Duration::from_secs(5), || {
        let now = server.processors_of(ALICE);
        !now.is_empty() && !now.contains(&victim)
    });
    assert!(replaced, "alice's processor was not replaced:\n{}", server.log());
    let r = get(server.addr, "alice.test", "/missing-again.html");
    assert_eq!(r.status, 404);
    let refused = |text: &str| text.matches("request refused").count();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (old, new) = loop {
        let read = |p: &Path| strip_ansi(&std::fs::read_to_string(p).unwrap_or_default());
        let (old, new) = (read(&rotated), read(&path));
        if refused(&old) + refused(&new) >= 1 || Instant::now() >= deadline {
            break (old, new);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let now = server.processors_of(ALICE);
    assert!(
        refused(&new) == 1 && refused(&old) == 0,
        "the replacement processor {now:?} logged its 404 to the old file (fd 2: {:?}):\n--- old ---\n{old}\n--- new ---\n{new}",
        now.iter()
            .map(|p| fd_links(*p).into_iter().find(|(fd, _)| *fd == 2))
            .collect::<Vec<_>>()
    );
}
