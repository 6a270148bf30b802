//! Root never opens a path a tenant controls (issue 9 item 2): a tenant who owns its
//! access log's directory (which `check` allows) plants a symlink, swaps a directory
//! for one, or hard-links another file where its log should be. The supervisor opens
//! logs without following links, at start, on SIGUSR1 and on SIGHUP, so the canary
//! outside is never created or written, and the server keeps serving everyone.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(10);

/// alice's vhost logs to `alice_log`, bob's to `bob_log`.
fn config(w: &Path, alice_log: &Path, bob_log: &Path) -> String {
    two_env_config(w, "")
        .replace(
            "environment = \"alice\"\n",
            &format!(
                "environment = \"alice\"\naccess_log = \"{}\"\n",
                alice_log.display()
            ),
        )
        .replace(
            "environment = \"bob\"\n",
            &format!("environment = \"bob\"\naccess_log = \"{}\"\n", bob_log.display()),
        )
}

/// A directory at `p` owned by `uid`, mode 0755.
fn dir_of(p: &Path, uid: u32) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    chown(p, uid);
    chmod(p, 0o755);
    p.to_path_buf()
}

/// A symlink made as alice would make it (owned by her).
fn alice_link(target: &Path, link: &Path) {
    symlink(target, link).unwrap();
    chown(link, ALICE);
}

fn line_count(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0)
}

/// Waits until `p` has at least `n` lines.
fn wait_lines(p: &Path, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while line_count(p) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    line_count(p)
}

#[track_caller]
fn assert_untouched(canary: &Path, server: &TestServer, when: &str) {
    assert!(
        std::fs::symlink_metadata(canary).is_err(),
        "{when}: root created {} through alice's link:\n{}",
        canary.display(),
        server.log()
    );
}

/// Waits for the n-th refusal of alice's log (or for the canary to appear, as it does
/// when root follows the link), then asserts the canary is untouched and the refusal
/// logged.
#[track_caller]
fn wait_refusal(server: &TestServer, what: &str, n: usize, canary: &Path, when: &str) {
    let refused = server.wait_until(WAIT, || {
        server.log().lines().filter(|l| l.contains(what)).count() >= n || canary.exists()
    });
    assert_untouched(canary, server, when);
    assert!(refused, "{when}: no refusal #{n} ({what:?}):\n{}", server.log());
}

#[test]
fn a_link_planted_as_the_log_is_never_followed_through_start_sigusr1_and_sighup() {
    require_root!();
    let w = Dir::new("a_link_planted_as_the_log_is_never_followed_through_start_sigusr1_and_sighup");
    put(w.path(), "alice/index.html", b"alice home", ALICE, 0o644);
    put(w.path(), "bob/index.html", b"bob home", BOB, 0o644);
    let logs = dir_of(&w.path().join("logs"), 0);
    let alice_dir = dir_of(&logs.join("alice"), ALICE);
    let outside = dir_of(&w.path().join("outside"), 0);
    // Where a root-owned file would appear (think /etc/cron.d/x).
    let canary = outside.join("canary");
    let (alice_log, bob_log) = (alice_dir.join("access.log"), logs.join("bob.log"));
    alice_link(&canary, &alice_log);

    let server = TestServer::start(&config(w.path(), &alice_log, &bob_log));
    let refused = format!(
        "access log {}: '{}' is a symbolic link",
        alice_log.display(),
        alice_log.display()
    );
    wait_refusal(&server, &refused, 1, &canary, "start");
    server.all_ok(1, "both served");
    // Only alice's log is refused: bob's is written.
    assert_eq!(wait_lines(&bob_log, 1), 1, "{}", server.log());
    assert_untouched(&canary, &server, "after a request");

    server.signal(Signal::SIGUSR1);
    wait_refusal(&server, &refused, 2, &canary, "SIGUSR1");
    server.all_ok(1, "both served");

    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("reload: new generation starting", WAIT)
            .is_some(),
        "{}",
        server.log()
    );
    wait_refusal(&server, &refused, 3, &canary, "SIGHUP");
    server.all_ok(1, "both served");

    // A hard link to a root file where the log should be: refused, the file unchanged.
    let secret = outside.join("secret");
    std::fs::write(&secret, "root:x:0:0\n").unwrap();
    std::fs::remove_file(&alice_log).unwrap();
    std::fs::hard_link(&secret, &alice_log).unwrap();
    server.signal(Signal::SIGUSR1);
    wait_refusal(&server, "has 2 hard links", 1, &canary, "SIGUSR1 on a hard link");
    server.all_ok(1, "both served");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root:x:0:0\n");
    assert_untouched(&canary, &server, "the end");
}

#[test]
fn a_directory_swapped_for_a_link_after_start_is_never_followed() {
    require_root!();
    let w = Dir::new("a_directory_swapped_for_a_link_after_start_is_never_followed");
    put(w.path(), "alice/index.html", b"alice home", ALICE, 0o644);
    put(w.path(), "bob/index.html", b"bob home", BOB, 0o644);
    let logs = dir_of(&w.path().join("logs"), 0);
    let alice_dir = dir_of(&logs.join("alice"), ALICE);
    let current = dir_of(&alice_dir.join("current"), ALICE);
    let outside = dir_of(&w.path().join("outside"), 0);
    let (alice_log, bob_log) = (current.join("access.log"), logs.join("bob.log"));
    // What root would create by following the swapped directory.
    let canary = outside.join("access.log");

    let server = TestServer::start(&config(w.path(), &alice_log, &bob_log));
    server.all_ok(1, "both served");
    assert_eq!(wait_lines(&alice_log, 1), 1, "{}", server.log());

    // alice swaps her directory for a link to the outside.
    let old = alice_dir.join("current.old");
    std::fs::rename(&current, &old).unwrap();
    alice_link(&outside, &current);

    server.signal(Signal::SIGUSR1);
    let refused = format!(
        "access log {}: '{}' is a symbolic link",
        alice_log.display(),
        current.display()
    );
    wait_refusal(&server, &refused, 1, &canary, "SIGUSR1");
    // alice's processors keep the file they had: still logged, in the old directory.
    server.all_ok(1, "both served");
    assert_eq!(wait_lines(&old.join("access.log"), 2), 2, "{}", server.log());
    assert_untouched(&canary, &server, "a request after SIGUSR1");

    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("reload: new generation starting", WAIT)
            .is_some(),
        "{}",
        server.log()
    );
    wait_refusal(&server, &refused, 2, &canary, "SIGHUP");
    // The config is still loaded (only a warning: alice controls that directory).
    assert!(server.log().contains("config:"), "{}", server.log());
    assert!(!server.log().contains("reload refused"), "{}", server.log());
    server.all_ok(1, "both served");
    assert_untouched(&canary, &server, "SIGHUP");
}
