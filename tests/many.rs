//! 10,000 environments (issue 15 item 6) under this machine's 20,000 open-files hard
//! limit: a generated config (one vhost each, `min_processors = 0`, private views on
//! as by default) starts; the first, a middle and the last environment are served;
//! no process holds more than one fd per environment (supervisor, fd keepers and
//! multiplexers counted in `/proc/PID/fd`); a reload keeps serving a client that loops
//! throughout; a killed multiplexer's replacement routes to every environment asked.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

const ENVS: usize = 10_000;
/// Above the environments' ends, what a process may hold whatever their number.
const SLACK: usize = 300;
const FIRST_UID: u32 = 40_000;

/// `n` environments sharing one document root (so no view hides another's tree and
/// the test's cost is the servers', not 10,000 directories').
fn config(root: &Path, n: usize) -> String {
    let mut c = format!(
        "[server]\nuser = {MUX_UID}\ngroup = {MUX_UID}\nlisten = [\"127.0.0.1:0\"]\nmin_multiplexers = 2\n\
         request_head_timeout = 2\nkeep_alive_timeout = 5\n\n[status]\nmetrics_listen = \"off\"\n"
    );
    for i in 0..n {
        c.push_str(&format!(
            "\n[environments.e{i}]\nuser = {u}\ngroup = {u}\nmin_processors = 0\n\n[[vhosts]]\n\
             server_name = \"e{i}.test\"\nenvironment = \"e{i}\"\ndocument_root = \"{d}\"\n",
            u = FIRST_UID + i as u32,
            d = root.display()
        ));
    }
    c
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn served(server: &TestServer, i: usize, when: &str) {
    let r = get(server.addr, &format!("e{i}.test"), "/");
    assert!(
        r.status == 200 && r.body == b"many home",
        "{when}: e{i}: {} {:?}",
        r.status,
        r.text()
    );
}

/// Every process's fds against the environments' count.
fn one_fd_per_environment(server: &TestServer, when: &str) {
    let mut counted = vec![("supervisor".to_string(), server.pid())];
    for role in ["multiplexer", "fd-keeper"] {
        for pid in server.children(role) {
            counted.push((role.to_string(), pid));
        }
    }
    assert!(
        counted.iter().filter(|(r, _)| r == "fd-keeper").count() >= 2,
        "{when}: no fd keepers among {counted:?}"
    );
    for (role, pid) in counted {
        let n = fds(pid);
        assert!(
            n <= ENVS + SLACK,
            "{when}: {role} {pid} holds {n} fds for {ENVS} environments"
        );
        if role == "supervisor" {
            assert!(n <= SLACK, "{when}: the supervisor holds {n} fds");
        }
    }
}

#[test]
fn ten_thousand_environments_start_reload_and_survive_a_killed_multiplexer() {
    require_root!();
    let w = Dir::new("ten_thousand_environments_start_reload_and_survive_a_killed_multiplexer");
    let root = w.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "many home").unwrap();
    chmod(w.path(), 0o755);
    chmod(&root, 0o755);
    chmod(&root.join("index.html"), 0o644);
    let server = TestServer::start(&config(&root, ENVS));
    for i in [0, ENVS / 2, ENVS - 1] {
        served(&server, i, "after start");
    }
    one_fd_per_environment(&server, "after start");

    // A client loops over a handful of environments (a cold start each the first
    // time) while the configuration is reloaded.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let client = {
        let (addr, stop, done) = (server.addr, stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let i = [0, 1, ENVS / 3, ENVS / 2, ENVS - 2, ENVS - 1][n % 6];
                n += 1;
                let mut s = connect(addr);
                use std::io::Write;
                let sent = write!(
                    s,
                    "GET / HTTP/1.1\r\nHost: e{i}.test\r\nConnection: close\r\n\r\n"
                );
                let r = sent.ok().and_then(|()| read_response(&mut s, false));
                match r {
                    Some(r) if r.status == 200 && r.body == b"many home" => {}
                    other => failures.push(format!(
                        "request {n} to e{i}: {:?}",
                        other.map(|r| (r.status, r.text()))
                    )),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        })
    };
    let progress = |what: &str| {
        let start = done.load(Ordering::Relaxed);
        assert!(
            server.wait_until(Duration::from_secs(20), || done.load(Ordering::Relaxed)
                >= start + 20),
            "{what}: the client made no progress\n{}",
            server.log()
        );
    };
    progress("before the reload");
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("reload: old generation finished", Duration::from_secs(60))
            .is_some(),
        "the old generation did not finish\n{}",
        server.log()
    );
    progress("after the reload");
    stop.store(true, Ordering::Relaxed);
    let failures = client.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}\n{}",
        failures.len(),
        server.log()
    );
    one_fd_per_environment(&server, "after the reload");

    // A killed multiplexer's replacement gets every end from the keeper.
    let before = server.children("multiplexer");
    assert_eq!(before.len(), 2, "{before:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(before[0]), Signal::SIGKILL).unwrap();
    assert!(
        server.wait_until(Duration::from_secs(20), || {
            let now = server.children("multiplexer");
            now.len() == 2 && !now.contains(&before[0])
        }),
        "no replacement multiplexer\n{}",
        server.log()
    );
    assert!(server
        .wait_for_log_count("multiplexer serving", 5, Duration::from_secs(20))
        .is_some());
    // Both multiplexers take connections: enough requests reach the new one.
    for i in (0..ENVS).step_by(ENVS / 10).chain([ENVS - 1]) {
        for _ in 0..4 {
            served(&server, i, "after a multiplexer was killed");
        }
    }
    one_fd_per_environment(&server, "after a multiplexer was replaced");
}
