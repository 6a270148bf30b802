//! What each child holds, read from /proc: no processor holds a listening socket or any
//! fd of another environment, no multiplexer holds a file under a document root, every
//! fd above 2 of every child is close-on-exec, and an fd the supervisor inherited by
//! accident does not reach its children.

use std::collections::HashSet;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use crate::util::*;

const O_CLOEXEC: u32 = 0o2000000;

/// The standard sites and this module's own files.
fn files(w: &Path) {
    sites(w, 0o600);
    put(w, "alice/secret.txt", b"alice secret", ALICE, 0o600);
    put(w, "alice/sub/page.html", b"alice page", ALICE, 0o600);
    put(w, "bob/b.txt", b"bob b", BOB, 0o600);
}

/// Two processors per environment, so that "same environment" and "other environment"
/// are both visible.
/// Long head and keep-alive timeouts, so that the connections a test holds open stay
/// open while it looks.
fn config(w: &Path) -> String {
    two_env_config(w, "")
        .replace("min_processors = 1", "min_processors = 2")
        .replace("request_head_timeout = 2", "request_head_timeout = 30")
        .replace("keep_alive_timeout = 5", "keep_alive_timeout = 30")
}

/// Serves a few requests of each kind: fresh connections, keep-alive, a hand-back.
fn traffic(server: &TestServer) {
    for _ in 0..5 {
        assert_eq!(
            get(server.addr, "alice.test", "/secret.txt").text(),
            "alice secret"
        );
        assert_eq!(
            get(server.addr, "alice.test", "/sub/page.html").text(),
            "alice page"
        );
        assert_eq!(get(server.addr, "bob.test", "/b.txt").text(), "bob b");
    }
    let mut s = connect(server.addr);
    assert_eq!(get_on(&mut s, "alice.test", "/").unwrap().text(), "alice home");
    assert_eq!(get_on(&mut s, "bob.test", "/").unwrap().text(), "bob home");
    assert_eq!(
        get_on(&mut s, "alice.test", "/sub/page.html").unwrap().text(),
        "alice page"
    );
}

/// Waits until no child holds a TCP socket other than a listener (every connection of
/// `traffic` is closed on the server side too).
fn wait_idle(server: &TestServer) {
    let idle = server.wait_until(Duration::from_secs(10), || {
        let connected = connected_tcp_inodes();
        server
            .all_children()
            .iter()
            .all(|p| socket_inodes(*p).is_disjoint(&connected))
    });
    assert!(idle, "children still hold connections");
}

/// Socket inodes of `pid` on fds above 2 (0-2 are the shared /dev/null and error log).
fn own_sockets(pid: i32) -> HashSet<u64> {
    fd_links(pid)
        .iter()
        .filter(|(fd, _)| *fd > 2)
        .filter_map(|(_, t)| socket_inode(t))
        .collect()
}

/// The fds above 2 of `pid` that are neither a socket nor an anonymous inode
/// (eventpoll, eventfd, timerfd, signalfd).
fn unexpected_fds(pid: i32) -> Vec<(i32, String)> {
    fd_links(pid)
        .into_iter()
        .filter(|(fd, t)| *fd > 2 && !t.starts_with("socket:[") && !t.starts_with("anon_inode:"))
        .collect()
}

#[test]
fn processors_hold_no_listener_and_nothing_of_another_environment() {
    require_root!();
    let w = Dir::new("processors_hold_no_listener_and_nothing_of_another_environment");
    files(w.path());
    let server = TestServer::start(&config(w.path()));
    traffic(&server);
    wait_idle(&server);

    let alice = server.processors_of(ALICE);
    let bob = server.processors_of(BOB);
    let muxes = server.children("multiplexer");
    assert_eq!((alice.len(), bob.len(), muxes.len()), (2, 2, 2));

    // The check below can see a listener: every multiplexer holds one.
    let listening = tcp_inodes(true);
    for m in &muxes {
        assert!(
            !own_sockets(*m).is_disjoint(&listening),
            "multiplexer {m} holds no listener: {:?}",
            fd_links(*m)
        );
    }

    let all_tcp = tcp_inodes(false);
    let sockets_of = |pids: &[i32]| -> HashSet<u64> { pids.iter().flat_map(|p| own_sockets(*p)).collect() };
    let mux_sockets = sockets_of(&muxes);
    for (name, mine, theirs, root, other_root) in [
        ("alice", &alice, &bob, "alice", "bob"),
        ("bob", &bob, &alice, "bob", "alice"),
    ] {
        let other = sockets_of(theirs);
        for p in mine {
            let fds = fd_links(*p);
            let socks = own_sockets(*p);
            assert!(
                socks.is_disjoint(&listening),
                "{name}'s processor {p} holds a listening socket: {fds:?}"
            );
            // Idle: no TCP socket at all, connected or not.
            assert!(
                socks.is_disjoint(&all_tcp),
                "{name}'s processor {p} holds a TCP socket: {fds:?}"
            );
            assert!(
                socks.is_disjoint(&other),
                "{name}'s processor {p} shares a socket with the other environment's: {fds:?}"
            );
            // Not even the multiplexers' end of its own environment's socketpair.
            assert!(
                socks.is_disjoint(&mux_sockets),
                "{name}'s processor {p} shares a socket with a multiplexer: {fds:?}"
            );
            let other_root = w.path().join(other_root);
            let own_root = w.path().join(root);
            // Idle, a processor holds only sockets, its epoll, and (cached for a
            // second, O_PATH) its own document root.
            let unexpected: Vec<_> = unexpected_fds(*p)
                .into_iter()
                .filter(|(_, t)| Path::new(t) != own_root)
                .collect();
            assert_eq!(unexpected, vec![], "{name}'s processor {p}: {fds:?}");
            for (fd, t) in &fds {
                assert!(
                    !Path::new(t).starts_with(&other_root),
                    "{name}'s processor {p} fd {fd} -> {t}"
                );
                assert!(
                    Path::new(t) == own_root || !Path::new(t).starts_with(&own_root),
                    "{name}'s processor {p} keeps fd {fd} -> {t} open while idle"
                );
            }
        }
        // The processors of one environment share its socketpair end.
        let shared: HashSet<u64> = own_sockets(mine[0])
            .intersection(&own_sockets(mine[1]))
            .copied()
            .collect();
        assert_eq!(shared.len(), 1, "{name}'s processors share {shared:?}");
    }
}

#[test]
fn multiplexers_hold_no_file_under_a_document_root() {
    require_root!();
    let w = Dir::new("multiplexers_hold_no_file_under_a_document_root");
    files(w.path());
    let server = TestServer::start(&config(w.path()));
    traffic(&server);
    // And one connection held open in each role while looking.
    let mut busy = connect(server.addr);
    assert_eq!(get_on(&mut busy, "alice.test", "/").unwrap().text(), "alice home");
    let mut partial = connect(server.addr);
    partial
        .write_all(b"GET /secret.txt HTTP/1.1\r\nHost: alice.test\r\n")
        .unwrap();
    let muxes = server.children("multiplexer");
    assert_eq!(muxes.len(), 2);
    assert!(
        server.wait_until(Duration::from_secs(10), || {
            let connected = connected_tcp_inodes();
            muxes.iter().any(|m| !own_sockets(*m).is_disjoint(&connected))
        }),
        "no multiplexer holds the partial request: {:?}",
        muxes.iter().map(|m| fd_links(*m)).collect::<Vec<_>>(),
    );
    let roots = [w.path().join("alice"), w.path().join("bob")];
    for m in &muxes {
        let fds = fd_links(*m);
        for (fd, t) in &fds {
            for r in &roots {
                assert!(!Path::new(t).starts_with(r), "multiplexer {m} fd {fd} -> {t}");
            }
        }
        assert_eq!(unexpected_fds(*m), vec![], "multiplexer {m}: {fds:?}");
    }
    drop(partial);
    drop(busy);
    wait_idle(&server);
    for m in &muxes {
        assert_eq!(unexpected_fds(*m), vec![], "multiplexer {m}: {:?}", fd_links(*m));
    }
}

/// Every fd above 2 of `pid` is close-on-exec; returns how many were checked.
fn check_cloexec(pid: i32, role: &str) -> usize {
    let mut checked = 0;
    for (fd, target) in fd_links(pid) {
        if fd <= 2 {
            continue;
        }
        // An fd closed between the listing and its fdinfo is skipped.
        if let Some(flags) = fd_flags(pid, fd) {
            assert!(
                flags & O_CLOEXEC != 0,
                "{role} {pid}: fd {fd} -> {target} is not close-on-exec (flags {flags:o}): {:?}",
                fd_links(pid)
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_child_fd_above_2_is_close_on_exec() {
    require_root!();
    let w = Dir::new("every_child_fd_above_2_is_close_on_exec");
    files(w.path());
    let server = TestServer::start(&config(w.path()));
    traffic(&server);
    wait_idle(&server);
    let check_all = |when: &str| {
        let children = server.all_children();
        assert_eq!(server.children("multiplexer").len(), 2, "{when}: {children:?}");
        assert_eq!(server.processors_of(ALICE).len(), 2, "{when}: {children:?}");
        assert_eq!(server.processors_of(BOB).len(), 2, "{when}: {children:?}");
        // Spare processors (still root, waiting for a bootstrap) included: they hold
        // fds 0-2 and their control channel, nothing else.
        assert!(
            server.wait_until(Duration::from_secs(5), || server.spares().len() == 2),
            "{when}: spares {:?} of {children:?}",
            server.spares()
        );
        let spares = server.spares();
        let children = server.all_children();
        for p in children {
            let role = cmdline(p).get(1).cloned().unwrap_or_default();
            let n = check_cloexec(p, &role);
            if spares.contains(&p) {
                let fds = fd_links(p);
                let above: Vec<_> = fds.iter().filter(|(fd, _)| *fd > 2).collect();
                assert!(
                    fds.iter().filter(|(fd, _)| *fd <= 2).count() == 3
                        && above.len() == 1
                        && above[0].1.starts_with("socket:["),
                    "{when}: spare {p} holds more than fds 0-2 and its control channel: {fds:?}"
                );
                assert_eq!(n, 1, "{when}: spare {p}");
            } else if role == "ns-holder" {
                // A private view's holder (root, pid 1 of its environment's PID
                // namespace): fds 0-2 as a spare has them and its control channel.
                let fds = fd_links(p);
                let above: Vec<_> = fds.iter().filter(|(fd, _)| *fd > 2).collect();
                assert!(
                    above.len() == 1 && above[0].1.starts_with("socket:["),
                    "{when}: holder {p} holds more than fds 0-2 and its control channel: {fds:?}"
                );
                assert_eq!(n, 1, "{when}: holder {p}");
            } else {
                assert!(n >= 3, "{when}: {role} {p} has too few fds");
            }
        }
    };
    check_all("idle");

    // A connection a processor received over SCM_RIGHTS and keeps alive, and one a
    // multiplexer accepted and is reading the head of.
    let mut kept = connect(server.addr);
    assert_eq!(get_on(&mut kept, "bob.test", "/").unwrap().text(), "bob home");
    let mut partial = connect(server.addr);
    partial.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let held = |pids: Vec<i32>| {
        let connected = connected_tcp_inodes();
        pids.iter().any(|p| !own_sockets(*p).is_disjoint(&connected))
    };
    assert!(
        server.wait_until(Duration::from_secs(10), || held(server.processors_of(BOB))
            && held(server.children("multiplexer"))),
        "connections not held: {:?}",
        server
            .all_children()
            .iter()
            .map(|p| fd_links(*p))
            .collect::<Vec<_>>(),
    );
    check_all("with connections");
}

#[test]
fn an_fd_the_supervisor_inherited_does_not_reach_its_children() {
    require_root!();
    let w = Dir::new("an_fd_the_supervisor_inherited_does_not_reach_its_children");
    files(w.path());
    // Whatever starts the supervisor may leak an fd to it, here one on alice's secret.
    let secret = std::fs::File::open(w.path().join("alice/secret.txt")).unwrap();
    let raw = secret.as_raw_fd();
    const STRAY: i32 = 57;
    let server = TestServer::try_start_with(&config(w.path()), |cmd| {
        // SAFETY: dup2 is async-signal-safe; it leaves STRAY without FD_CLOEXEC.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, STRAY) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
    .unwrap_or_else(|log| panic!("not ready:\n{log}"));
    drop(secret);
    let sup = fd_links(server.pid());
    assert!(
        sup.iter().any(|(fd, _)| *fd == STRAY),
        "the supervisor did not get the stray fd: {sup:?}"
    );
    traffic(&server);
    let secret = w.path().join("alice/secret.txt");
    // Spares (root, exec'd before any bootstrap) included.
    assert!(
        server.wait_until(Duration::from_secs(5), || server.spares().len() == 2),
        "no spares to check: {:?}",
        server.all_children()
    );
    for p in server.all_children() {
        let role = cmdline(p).get(1).cloned().unwrap_or_default();
        let uid = status_field(p, "Uid").map(|u| first_num(&u));
        for (fd, t) in fd_links(p) {
            assert!(
                Path::new(&t) != secret,
                "{role} {p} (uid {uid:?}) holds fd {fd} -> {t}, a file of alice it was never given"
            );
        }
    }
}
