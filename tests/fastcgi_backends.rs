//! FastCGI backends supervised by bulkhead as the environment (issue 11 item 2),
//! against the real binary and Debian's `php-cgi`, without the processor's FastCGI
//! client: the test speaks FastCGI to the socket itself. `min_backends` php-cgi
//! processes run as alice in their own session with fd 0 the listening socket, fds 1
//! and 2 the log pipe and nothing else; the socket is alice's, 0600, in root's 0711
//! directory, refused to bob; a killed backend is replaced; with `min_backends = 0`
//! the first connection starts one; `max_requests` replaces a backend without a
//! failed request; a burst of 8 against none starts at most `max_backends`, which
//! then stop after `idle_timeout`; busy backends count as started, so five long
//! requests get five backends within a second or so; `/bin/true` as a command backs off instead of
//! looping; SIGTERM and a reload without `fastcgi` stop them (and the reload unlinks
//! the socket); a chrooted environment's socket is in `<chroot>/.bulkhead/` and its
//! backend (php-cgi and its libraries copied into the jail) runs there.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

const PHP_CGI: &str = "/usr/bin/php-cgi";

/// Alice with one vhost and `[environments.alice.fastcgi]` holding `fastcgi`;
/// sockets below `<root>/run`.
fn config(root: &Path, fastcgi: &str) -> String {
    let site = root.join("alice");
    std::fs::create_dir_all(&site).unwrap();
    let vhost = format!(
        r#"
[environments.alice.fastcgi]
command = ["{PHP_CGI}"]
extensions = [".php"]
{fastcgi}

[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{}"
"#,
        site.display()
    );
    alice_config(
        &format!("runtime_dir = \"{}\"", root.join("run").display()),
        &vhost,
    )
}

/// The php-cgi processes among the server's children, sorted.
fn backends(server: &TestServer) -> Vec<i32> {
    server
        .all_children()
        .into_iter()
        .filter(|p| cmdline(*p).first().map(String::as_str) == Some(PHP_CGI))
        .collect()
}

fn wait_backends(server: &TestServer, n: usize, what: &str) -> Vec<i32> {
    let mut got = Vec::new();
    let ok = server.wait_until(Duration::from_secs(10), || {
        got = backends(server);
        got.len() == n
    });
    assert!(ok, "{what}: wanted {n} backends, have {got:?}\n{}", server.log());
    got
}

/// Whether `pid` is blocked in accept (the first field of `/proc/PID/syscall`).
fn in_accept(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<libc::c_long>().ok())
        .is_some_and(|n| n == libc::SYS_accept || n == libc::SYS_accept4)
}

/// A word of environment `env` in the supervisor's shared table (its one generation's).
fn table_word(server: &TestServer, env: usize, word: usize) -> u64 {
    let fd = fd_links(server.pid())
        .into_iter()
        .find(|(_, t)| t.contains("bulkhead-table"))
        .expect("the supervisor holds its shared table")
        .0;
    let bytes = std::fs::read(format!("/proc/{}/fd/{fd}", server.pid())).unwrap();
    let i = common::scoreboard::table::env_word(env, word) * 8;
    u64::from_ne_bytes(bytes[i..i + 8].try_into().unwrap())
}

/// The one socket file in `<root>/run/fastcgi`.
fn socket_path(root: &Path) -> PathBuf {
    let dir = root.join("run/fastcgi");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names.pop().unwrap()
}

fn php_file(root: &Path) -> PathBuf {
    put(
        root,
        "alice/t.php",
        b"<?php echo 'hello from ', getmyuid();",
        ALICE,
        0o644,
    )
}

/// One request over a fresh connection.
fn php(sock: &Path, script: &Path) -> Result<String, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("connect: {e}"))?;
    php_request(&mut s, script)
}

/// `n` clients, each one request for `script` over its own connection to `sock`.
fn start_clients(
    sock: &Path,
    script: &Path,
    n: usize,
) -> Vec<std::thread::JoinHandle<Result<String, String>>> {
    (0..n)
        .map(|_| {
            let (sock, script) = (sock.to_path_buf(), script.to_path_buf());
            std::thread::spawn(move || php(&sock, &script))
        })
        .collect()
}

/// Every client's answer says "slow done".
fn each_done(clients: Vec<std::thread::JoinHandle<Result<String, String>>>, server: &TestServer) {
    for c in clients {
        let out = c
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
        assert!(out.contains("slow done"), "{out}");
    }
}

#[test]
fn min_backends_run_as_the_environment_with_only_the_socket_and_the_log_pipe() {
    require_root!();
    if require_tool("php-cgi", "php-cgi").is_none() {
        return;
    }
    let dir = Dir::new("fcgi_min");
    let root = dir.path();
    let mut server = TestServer::start(&config(root, "min_backends = 2\nmax_backends = 4"));
    let pids = wait_backends(&server, 2, "at start");
    for pid in &pids {
        // php-cgi opens its extensions while it starts: look once it waits in accept.
        assert!(
            server.wait_until(Duration::from_secs(10), || in_accept(*pid)),
            "backend {pid} never reached accept\n{}",
            server.log()
        );
        assert_eq!(uid_of(*pid), Some(ALICE), "backend {pid} runs as alice");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
        assert_eq!(after[3], pid.to_string(), "backend {pid} leads its own session");
        assert_eq!(after[4], "0", "backend {pid} has no controlling terminal");
        let fds = fd_links(*pid);
        let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).take(3).collect();
        assert_eq!(numbers, [0, 1, 2], "backend {pid}'s fds: {fds:?}");
        // Anything above 2 is php's own (opcache's lock file, /tmp/.ZendSem.*): never a
        // socket, pipe or memfd of ours.
        for (fd, target) in &fds[3..] {
            let ours = ["socket:", "pipe:", "anon_inode:", "/memfd:"]
                .iter()
                .any(|p| target.starts_with(p));
            assert!(
                !ours && target.contains("ZendSem"),
                "backend {pid} fd {fd}: {target}"
            );
        }
        assert!(fds[0].1.starts_with("socket:"), "{fds:?}");
        assert!(fds[1].1.starts_with("pipe:") && fds[1].1 == fds[2].1, "{fds:?}");
    }
    let sock = socket_path(root);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (ALICE, ALICE));
    assert_eq!(meta.mode() & 0o7777, 0o600);
    let dmeta = std::fs::metadata(sock.parent().unwrap()).unwrap();
    assert_eq!((dmeta.uid(), dmeta.mode() & 0o7777), (0, 0o711));
    assert_eq!(connect_as(&sock, BOB, BOB), Err(libc::EACCES), "bob is refused");
    assert_eq!(connect_as(&sock, ALICE, ALICE), Ok(()), "alice connects");
    // A real request, answered as alice.
    let script = php_file(root);
    let out = php(&sock, &script).unwrap();
    assert!(out.contains(&format!("hello from {ALICE}")), "{out}");

    // kill -9: counted as a death, replaced.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();
    let mut now = Vec::new();
    let replaced = server.wait_until(Duration::from_secs(10), || {
        now = backends(&server);
        now.len() == 2 && !now.contains(&pids[0])
    });
    assert!(replaced, "killed backend not replaced: {now:?}\n{}", server.log());
    assert!(server.log().contains("fastcgi backend died"), "{}", server.log());
    use common::scoreboard::table::env;
    let words = [
        env::BACKENDS,
        env::BACKEND_STARTS,
        env::BACKEND_DEATHS,
        env::MAX_BACKENDS,
    ];
    let got = words.map(|w| table_word(&server, 0, w));
    assert_eq!(
        got,
        [2, 3, 1, 4],
        "BACKENDS, BACKEND_STARTS, BACKEND_DEATHS, MAX_BACKENDS"
    );

    // SIGTERM stops the backends with everything else.
    server.signal(Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        server.log()
    );
    for pid in now {
        assert!(!alive(pid), "backend {pid} outlived the server");
    }
    assert!(!sock.exists(), "socket left behind");
}

#[test]
fn the_first_connection_starts_a_backend_and_max_requests_replaces_it_without_a_failure() {
    require_root!();
    if require_tool("php-cgi", "php-cgi").is_none() {
        return;
    }
    let dir = Dir::new("fcgi_demand");
    let root = dir.path();
    let server = TestServer::start(&config(
        root,
        "min_backends = 0\nmax_backends = 2\nmax_requests = 2",
    ));
    // Nothing runs before a connection waits (two ticks' worth).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(backends(&server), Vec::<i32>::new(), "{}", server.log());
    let sock = socket_path(root);
    let script = php_file(root);
    // Queued in the backlog, answered once the backend is up.
    let out = php(&sock, &script).unwrap();
    assert!(out.contains("hello from"), "{out}");
    let mut seen = std::collections::BTreeSet::new();
    seen.extend(backends(&server));
    for i in 0..7 {
        let out = php(&sock, &script).unwrap_or_else(|e| panic!("request {i}: {e}\n{}", server.log()));
        assert!(out.contains("hello from"), "request {i}: {out}");
        seen.extend(backends(&server));
    }
    // Eight requests at two per backend: the pid changed; a clean exit is no death.
    assert!(seen.len() >= 2, "backends seen: {seen:?}\n{}", server.log());
    assert!(!server.log().contains("fastcgi backend died"), "{}", server.log());
    assert!(backends(&server).len() <= 2);
}

#[test]
fn a_reload_without_fastcgi_stops_the_backends_and_unlinks_the_socket() {
    require_root!();
    if require_tool("php-cgi", "php-cgi").is_none() {
        return;
    }
    let dir = Dir::new("fcgi_reload");
    let root = dir.path();
    let server = TestServer::start(&config(root, "min_backends = 1"));
    let pids = wait_backends(&server, 1, "at start");
    let sock = socket_path(root);
    let text = std::fs::read_to_string(&server.config_path).unwrap();
    let start = text.find("[environments.alice.fastcgi]").unwrap();
    let end = text.find("[[vhosts]]").unwrap();
    let without = format!("{}{}", &text[..start], &text[end..]);
    std::fs::write(&server.config_path, without).unwrap();
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("reload: old generation finished", Duration::from_secs(30))
            .is_some(),
        "{}",
        server.log()
    );
    assert!(
        server.wait_until(Duration::from_secs(10), || !alive(pids[0])),
        "backend {} still runs\n{}",
        pids[0],
        server.log()
    );
    assert!(backends(&server).is_empty());
    assert!(!sock.exists(), "socket {} not unlinked", sock.display());
}

#[test]
fn a_burst_starts_backends_progressively_up_to_max_and_idle_ones_stop() {
    require_root!();
    if require_tool("php-cgi", "php-cgi").is_none() {
        return;
    }
    let dir = Dir::new("fcgi_burst");
    let root = dir.path();
    let server = TestServer::start(&config(
        root,
        "min_backends = 0\nmax_backends = 2\nidle_timeout = 1",
    ));
    let sock = socket_path(root);
    let slow = put(
        root,
        "alice/slow.php",
        b"<?php usleep(300000); echo 'slow done';",
        ALICE,
        0o644,
    );
    let clients = start_clients(&sock, &slow, 8);
    let mut most = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        most = most.max(backends(&server).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    each_done(clients, &server);
    assert!(most <= 2, "{most} backends for max_backends = 2");
    assert!(
        server
            .log()
            .contains("environment alice: max_backends (2) reached"),
        "{}",
        server.log()
    );
    // Idle for idle_timeout (1 s), down to min_backends (0). Both at once: a walk of
    // /proc's children lists can miss a process that is there (the kernel documents
    // them as racy), so an empty walk alone is not proof.
    assert!(
        server.wait_until(Duration::from_secs(10), || {
            server.log().contains("idle for idle_timeout") && backends(&server).is_empty()
        }),
        "idle backends still run: {:?}\n{}",
        backends(&server),
        server.log()
    );
    assert!(server.log().contains("idle for idle_timeout"), "{}", server.log());
    assert!(!server.log().contains("fastcgi backend died"), "{}", server.log());
}

/// Busy backends are never caught in accept (a queue that never empties returns them
/// from it at once); one serving a connection it accepted is past its start all the
/// same, so a sustained load grows the set by one per hold-off (100 ms), not one per
/// second. Five requests that each hold a backend for 4 s: the fifth backend starts
/// well before a backend is free, where "in accept" alone took 4 s.
#[test]
fn busy_backends_count_as_started_so_a_sustained_load_grows_the_set_quickly() {
    require_root!();
    if require_tool("php-cgi", "php-cgi").is_none() {
        return;
    }
    let dir = Dir::new("fcgi_grow");
    let root = dir.path();
    let server = TestServer::start(&config(root, "min_backends = 0\nmax_backends = 5"));
    let sock = socket_path(root);
    let slow = put(
        root,
        "alice/slow.php",
        b"<?php sleep(4); echo 'slow done';",
        ALICE,
        0o644,
    );
    let t0 = std::time::Instant::now();
    let clients = start_clients(&sock, &slow, 5);
    let grown = server.wait_until(Duration::from_millis(2500), || backends(&server).len() == 5);
    let took = t0.elapsed();
    assert!(
        grown,
        "5 busy requests: {} backends after {took:?}\n{}",
        backends(&server).len(),
        server.log()
    );
    each_done(clients, &server);
    assert!(!server.log().contains("fastcgi backend died"), "{}", server.log());
}

#[test]
fn a_command_that_exits_at_once_backs_off_instead_of_looping() {
    require_root!();
    let dir = Dir::new("fcgi_loop");
    let root = dir.path();
    let cfg = config(root, "min_backends = 2\nmax_backends = 2").replace(PHP_CGI, "/bin/true");
    let server = TestServer::start(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    let starts = server.log().matches("fastcgi backend started").count();
    // Two at once, then each replacement after 100, 200, 400, 800 ms…: a handful.
    assert!(
        (2..=14).contains(&starts),
        "{starts} starts in 3 s\n{}",
        server.log()
    );
    assert!(!server.log().contains("fastcgi backend died"), "{}", server.log());
    // The server itself is unharmed.
    put(root, "alice/index.html", b"up", ALICE, 0o644);
    assert_eq!(get(server.addr, "alice.test", "/").text(), "up");
}

/// Backends that die at once: after three early deaths in a row the requests waiting
/// on the socket are refused (a 502 well before `fastcgi_timeout`) by a forked child.
/// The supervisor itself never accepts on that socket, whose open file description
/// every backend makes blocking for its program: it used to accept there itself and
/// sat in `accept4` once the queue was empty, replacing no child and handling no
/// signal (found with php-fpm failing to start). Here a killed processor is still
/// replaced afterwards, and the server still stops on SIGTERM.
#[test]
fn refusing_waiting_requests_never_blocks_the_supervisor() {
    require_root!();
    let dir = Dir::new("fcgi_refuse");
    let root = dir.path();
    let cfg = config(root, "min_backends = 0\nmax_backends = 2").replace(PHP_CGI, "/bin/false");
    let mut server = TestServer::start(&cfg);
    php_file(root);
    let t0 = std::time::Instant::now();
    let answer = get(server.addr, "alice.test", "/t.php");
    assert_eq!(answer.status, 502, "{}\n{}", answer.text(), server.log());
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "refused after {:?}, not at once",
        t0.elapsed()
    );
    assert!(
        server
            .wait_for_log(
                "the waiting requests are refused with 502",
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        server.log()
    );
    // The supervisor still watches its children.
    let before = server.processors_of(ALICE);
    assert!(!before.is_empty(), "{}", server.log());
    for p in &before {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), Signal::SIGKILL);
    }
    let replaced = server.wait_until(Duration::from_secs(10), || {
        let now = server.processors_of(ALICE);
        !now.is_empty() && now.iter().all(|p| !before.contains(p))
    });
    assert!(
        replaced,
        "no processor replaced: the supervisor is stuck\n{}",
        server.log()
    );
    server.signal(Signal::SIGTERM);
    assert!(
        server.wait_exit(Duration::from_secs(15)).is_some(),
        "no exit on SIGTERM\n{}",
        server.log()
    );
}

/// Copies `bin` and the libraries `ldd` names into `jail` (root's), with a `/tmp`.
fn binary_into(jail: &Path, bin: &str) {
    let ldd = std::process::Command::new("ldd").arg(bin).output().unwrap();
    let mut files = vec![PathBuf::from(bin)];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line.split_whitespace().find(|w| w.starts_with('/'));
        files.extend(path.map(PathBuf::from));
    }
    for f in files {
        let to = jail.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    let tmp = jail.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    chmod(&tmp, 0o1777);
}

#[test]
fn a_chrooted_environment_gets_its_socket_inside_the_jail() {
    require_root!();
    if require_tool("php-cgi", "php-cgi").is_none() {
        return;
    }
    let dir = Dir::new("fcgi_chroot");
    let root = dir.path();
    let jail = root.join("alice");
    let text = config(root, "min_backends = 1")
        .replace(
            &format!("group = {ALICE}\n"),
            &format!("group = {ALICE}\nchroot = \"{}\"\n", jail.display()),
        )
        .replace(
            &format!("document_root = \"{}\"", jail.display()),
            &format!("document_root = \"{}\"", jail.join("www").display()),
        );
    put(
        &jail,
        "www/t.php",
        b"<?php echo 'jailed ', getmyuid(), ' ', __FILE__;",
        ALICE,
        0o644,
    );
    chown(&jail, 0);
    chmod(&jail, 0o755);
    binary_into(&jail, PHP_CGI);
    let server = TestServer::start(&text);
    let pids = wait_backends(&server, 1, "at start");
    assert_eq!(uid_of(pids[0]), Some(ALICE));
    let root_link = std::fs::read_link(format!("/proc/{}/root", pids[0])).unwrap();
    assert_eq!(root_link, jail, "the backend runs in the jail");
    let sock_dir = jail.join(".bulkhead");
    let dmeta = std::fs::metadata(&sock_dir).unwrap();
    assert_eq!((dmeta.uid(), dmeta.mode() & 0o7777), (0, 0o711));
    let socks: Vec<PathBuf> = std::fs::read_dir(&sock_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(socks.len(), 1, "{socks:?}");
    let meta = std::fs::symlink_metadata(&socks[0]).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (ALICE, 0o600));
    // The script path as the jail sees it.
    let out = php(&socks[0], Path::new("/www/t.php")).unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(
        out.split("\r\n\r\n").last().unwrap(),
        format!("jailed {ALICE} /www/t.php"),
        "{out}"
    );
    assert!(
        !root.join("run/fastcgi").exists()
            || std::fs::read_dir(root.join("run/fastcgi")).unwrap().count() == 0
    );
}
