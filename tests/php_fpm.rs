//! `manager = "php-fpm"` against the real binary with Debian's php-fpm: each
//! environment's PHP answers its own uid; the master and its children run as the
//! environment, with the socket, `/dev/null` and the log pipe and nothing of another
//! environment; a master killed with SIGKILL is replaced (its children go with it)
//! and the next request succeeds; a reload that drops the environment's `fastcgi`
//! stops the master and its children and removes the socket and the pool file; the
//! children are the environment's `BACKENDS` in `?json`; a chrooted environment in a
//! private view runs the system's php-fpm with nothing copied into its jail.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::php::*;
use crate::util::*;

/// `<?php echo posix_geteuid();`
const WHOAMI: &str = "<?php echo posix_geteuid();";

/// Debian's php-fpm (`/usr/sbin/php-fpmX.Y`, package php-fpm); `None`: skipped (a
/// failure under CI, whose scripts/test installs it).
fn php_fpm() -> Option<PathBuf> {
    let found = std::fs::read_dir("/usr/sbin").ok().and_then(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("php-fpm"))
            })
            .min()
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("php-fpm is missing: CI must install Debian's php-fpm (scripts/test)");
        }
        eprintln!("skipping: php-fpm is not installed (apt-get install php-fpm)");
    }
    found
}

/// `[environments.ENV.fastcgi]` with php-fpm as its manager, `extra` keys appended.
fn fpm_table(env: &str, fpm: &Path, extra: &str) -> String {
    format!(
        "\n[environments.{env}.fastcgi]\nmanager = \"php-fpm\"\ncommand = [\"{}\"]\nextensions = [\".php\"]\n{extra}\n",
        fpm.display()
    )
}

/// alice and bob, both with php-fpm.
fn config(w: &Path, fpm: &Path) -> String {
    php_config(
        w,
        "",
        &format!(
            "{}{}",
            fpm_table("alice", fpm, "idle_timeout = 2"),
            fpm_table("bob", fpm, "")
        ),
    )
}

/// The php-fpm masters of `server` running as `uid` (its children whose title is
/// php-fpm's: `php-fpm: master process (...)`).
fn masters(server: &TestServer, uid: u32) -> Vec<i32> {
    children_of(server.pid())
        .into_iter()
        .filter(|p| uid_of(*p) == Some(uid) && cmdline(*p).first().is_some_and(|a| a.starts_with("php-fpm")))
        .collect()
}

/// GET until 200 (the master may still be starting), at most 30 s.
fn get_ok(server: &TestServer, host: &str, target: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = get_close(server.addr, host, target, "");
        if a.status == 200 || Instant::now() > deadline {
            return a;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The two sites, each with a `whoami.php` owned by its environment.
fn whoami_sites(test: &str) -> Dir {
    let dir = Dir::new(test);
    let w = dir.path();
    sites(w, 0o644);
    php(w, "alice/whoami.php", WHOAMI, ALICE);
    php(w, "bob/whoami.php", WHOAMI, BOB);
    dir
}

/// alice.test and bob.test each answer `whoami.php` with their own uid.
fn each_answers_its_uid(server: &TestServer) {
    for (host, uid) in [("alice.test", ALICE), ("bob.test", BOB)] {
        let a = get_ok(server, host, "/whoami.php");
        assert_eq!(
            (a.status, a.text()),
            (200, uid.to_string()),
            "{host}: {}\n{}",
            a.head,
            server.log()
        );
    }
}

/// Socket and pipe inodes `pid` holds (`socket:[N]`, `pipe:[N]`).
fn inodes(pid: i32) -> HashSet<String> {
    fd_links(pid)
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.starts_with("socket:") || l.starts_with("pipe:"))
        .collect()
}

#[test]
fn php_fpm_runs_each_environment_as_its_uid_with_only_its_own_fds() {
    require_root!();
    let Some(fpm) = php_fpm() else { return };
    let dir = whoami_sites("php_fpm_uids_and_fds");
    let w = dir.path();
    let server = TestServer::start(&config(w, &fpm));
    each_answers_its_uid(&server);
    let supervisor = inodes(server.pid());
    let mut trees = Vec::new();
    for uid in [ALICE, BOB] {
        let m = masters(&server, uid);
        assert_eq!(m.len(), 1, "php-fpm masters as {uid}: {m:?}\n{}", server.log());
        let kids = children_of(m[0]);
        assert!(!kids.is_empty(), "no php-fpm child as {uid} after a request");
        let mut tree = vec![m[0]];
        tree.extend(&kids);
        for p in &tree {
            assert_eq!(uid_of(*p), Some(uid), "process {p} of {uid}'s php-fpm");
            let gid = status_field(*p, "Gid").map(|g| first_num(&g));
            assert_eq!(gid, Some(uid), "gid of process {p}");
        }
        // The master: /dev/null on 0 and 1 (php-fpm's own doing), the log pipe on 2,
        // the adopted socket on 3, which the supervisor holds too.
        let links: Vec<(i32, String)> = fd_links(m[0]);
        let at = |fd| links.iter().find(|(n, _)| *n == fd).map(|(_, l)| l.clone());
        assert_eq!(at(0).as_deref(), Some("/dev/null"), "{links:?}");
        assert!(at(2).is_some_and(|l| l.starts_with("pipe:")), "{links:?}");
        let sock = at(3).unwrap_or_default();
        assert!(
            sock.starts_with("socket:") && supervisor.contains(&sock),
            "fd 3 of the master is not the supervisor's socket: {links:?}"
        );
        trees.push((uid, tree));
    }
    // Nothing one environment's php-fpm holds is held by the other's.
    let held = |tree: &[i32]| tree.iter().flat_map(|p| inodes(*p)).collect::<HashSet<_>>();
    let (a, b) = (held(&trees[0].1), held(&trees[1].1));
    let shared: Vec<_> = a.intersection(&b).collect();
    assert!(shared.is_empty(), "alice's and bob's php-fpm share {shared:?}");
    // Every fd of a child is /dev/null, a pipe, a socket, or PHP's own lock file.
    for (_, tree) in &trees {
        for p in &tree[1..] {
            for (fd, l) in fd_links(*p) {
                let ok = l == "/dev/null"
                    || l.starts_with("pipe:")
                    || l.starts_with("socket:")
                    || l.starts_with("anon_inode:")
                    || l.contains(".ZendSem");
                assert!(ok, "child {p} of php-fpm holds fd {fd} -> {l}");
            }
        }
    }
    // The children are alice's running backends (counted at the supervisor's tick).
    let row = poll(Duration::from_secs(5), || {
        let snap = scoreboard_json(server.addr);
        let f = env_row(&snap, "alice")["fastcgi"].clone();
        (f["running"].as_u64()? >= 1).then_some(f)
    });
    let f = row.unwrap_or_else(|| panic!("alice's fastcgi.running never >= 1\n{}", server.log()));
    assert_eq!(f["max_backends"].as_u64(), Some(8), "{f}");
    assert_eq!(f["starts"].as_u64(), Some(1), "one master started: {f}");
}

#[test]
fn php_fpm_killed_master_is_replaced() {
    require_root!();
    let Some(fpm) = php_fpm() else { return };
    let dir = Dir::new("php_fpm_killed_master");
    let w = dir.path();
    sites(w, 0o644);
    php(w, "alice/whoami.php", WHOAMI, ALICE);
    let server = TestServer::start(&config(w, &fpm));
    assert_eq!(get_ok(&server, "alice.test", "/whoami.php").text(), "2001");
    let before = masters(&server, ALICE);
    assert_eq!(before.len(), 1, "{before:?}");
    let kids = children_of(before[0]);
    kill(Pid::from_raw(before[0]), Signal::SIGKILL).unwrap();
    let after = poll(Duration::from_secs(15), || {
        let now = masters(&server, ALICE);
        (now.len() == 1 && now[0] != before[0]).then_some(now)
    });
    assert!(
        after.is_some(),
        "no new master after killing {before:?}\n{}",
        server.log()
    );
    // Its children went with it (the process group).
    assert!(
        server.wait_until(Duration::from_secs(5), || kids.iter().all(|k| !alive(*k))),
        "children {kids:?} of the killed master still run"
    );
    let a = get_ok(&server, "alice.test", "/whoami.php");
    assert_eq!(
        (a.status, a.text()),
        (200, "2001".into()),
        "{}\n{}",
        a.head,
        server.log()
    );
}

#[test]
fn php_fpm_reload_dropping_the_environment_stops_its_master() {
    require_root!();
    let Some(fpm) = php_fpm() else { return };
    let dir = Dir::new("php_fpm_reload");
    let w = dir.path();
    sites(w, 0o644);
    php(w, "alice/whoami.php", WHOAMI, ALICE);
    php(w, "bob/whoami.php", WHOAMI, BOB);
    let server = TestServer::start(&config(w, &fpm));
    assert_eq!(get_ok(&server, "alice.test", "/whoami.php").text(), "2001");
    let m = masters(&server, ALICE);
    assert_eq!(m.len(), 1, "{m:?}");
    let mut tree = children_of(m[0]);
    assert!(!tree.is_empty());
    tree.push(m[0]);
    let run = runtime_dir(w).join("fastcgi");
    let files = |ext: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&run)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == ext))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        files("conf").len(),
        2,
        "a pool file per environment in {}",
        run.display()
    );
    let text = std::fs::read_to_string(&server.config_path).unwrap();
    let start = text.find("[environments.alice.fastcgi]").unwrap();
    let end = text.find("[environments.bob.fastcgi]").unwrap();
    std::fs::write(&server.config_path, format!("{}{}", &text[..start], &text[end..])).unwrap();
    server.signal(Signal::SIGHUP);
    assert!(
        server.wait_until(Duration::from_secs(30), || tree.iter().all(|p| !alive(*p))),
        "alice's php-fpm {tree:?} still runs after the reload\n{}",
        server.log()
    );
    assert!(masters(&server, ALICE).is_empty());
    assert!(
        server.wait_until(Duration::from_secs(30), || files("conf").len() == 1
            && files("sock").len() == 1),
        "the old generation's files are still there: {:?} {:?}\n{}",
        files("conf"),
        files("sock"),
        server.log()
    );
    // bob's new master serves, and alice's PHP is now a plain file.
    assert_eq!(get_ok(&server, "bob.test", "/whoami.php").text(), "2002");
}

/// A chrooted environment with a private view (the system's trees shown read-only in
/// an empty jail) runs the system's php-fpm: its pool file and socket in the jail's
/// `/.bulkhead/`, nothing else added to the jail.
#[test]
fn php_fpm_runs_chrooted_in_a_private_view() {
    require_root!();
    let Some(fpm) = php_fpm() else { return };
    let dir = Dir::new("php_fpm_jail");
    let w = dir.path();
    let jail = w.join("alice");
    crate::util::fs::put(
        &jail,
        "www/t.php",
        b"<?php echo getmyuid(), '|', is_dir('/srv') ? 'srv' : 'nosrv';",
        ALICE,
        0o644,
    );
    crate::util::fs::chown(&jail, 0);
    crate::util::fs::chmod(&jail, 0o755);
    let text = php_config(w, "private_view = true", &fpm_table("alice", &fpm, ""))
        .replace(
            &format!("group = {ALICE}\n"),
            &format!("group = {ALICE}\nchroot = \"{}\"\n", jail.display()),
        )
        .replace(
            &format!("document_root = \"{}\"", jail.display()),
            &format!("document_root = \"{}\"", jail.join("www").display()),
        );
    let server = TestServer::start(&text);
    let a = get_ok(&server, "alice.test", "/t.php");
    assert_eq!(
        (a.status, a.text()),
        (200, format!("{ALICE}|nosrv")),
        "{}\n{}",
        a.head,
        server.log()
    );
    let mut names: Vec<String> = std::fs::read_dir(&jail)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".bulkhead", "www"]);
    let inside: Vec<String> = std::fs::read_dir(jail.join(".bulkhead"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(inside.iter().any(|n| n.ends_with(".conf")), "{inside:?}");
}

/// With the sockets outside `/tmp` (the shipped `runtime_dir` is `/run/bulkhead`), a
/// php-fpm master in the default private view still reads its pool file there: the
/// socket directory is in its Landlock read-only set (it was in none, so every master
/// died at once with "failed to open configuration file … Permission denied"), while
/// a php-cgi environment beside it gets nothing there.
#[test]
fn php_fpm_reads_its_pool_file_from_a_runtime_dir_outside_tmp() {
    require_root!();
    let Some(fpm) = php_fpm() else { return };
    let dir = whoami_sites("php_fpm_run");
    let w = dir.path();
    let run = tempfile::Builder::new()
        .prefix("bh-")
        .tempdir_in("/var/tmp")
        .unwrap();
    crate::util::fs::chmod(run.path(), 0o755);
    let text = php_config(
        w,
        "",
        &format!("{}{}", fpm_table("alice", &fpm, ""), php_table("bob", "")),
    )
    .replace(
        &format!("runtime_dir = \"{}\"", runtime_dir(w).display()),
        &format!("runtime_dir = \"{}\"", run.path().display()),
    );
    assert!(text.contains("/var/tmp/bh-"), "{text}");
    let server = TestServer::start(&text);
    each_answers_its_uid(&server);
    assert!(
        server.log().contains("private view ready"),
        "the default private view is on as root\n{}",
        server.log()
    );
    assert!(!server.log().contains("Permission denied"), "{}", server.log());
}
