//! The private view of an environment (`private_view = true`): a CGI script of alice
//! sees only alice's processes in `/proc`, cannot read bob's 0644 file by its host
//! path nor find bob's directory, has a `/tmp` of its own, sees none of bob's SysV
//! shared memory; Landlock refuses a 0644 file outside the allowed set; seccomp
//! refuses `unshare` and `ptrace`; a chrooted environment runs the system's `php-cgi`
//! with nothing copied into the jail (time zone, `date()`, `random_bytes()`, seccomp
//! in the backend) and DokuWiki chrooted; a killed holder is replaced; a reload keeps
//! a view whose settings stay (its `/tmp` too) and has it hide an added environment,
//! and rebuilds one whose settings changed; `check` validates `bind_ro` and describes
//! each view.

use std::path::Path;
use std::time::Duration;

use crate::util::php::{have_php_cgi, php_table, PHP_CGI};
use crate::util::*;

/// alice and bob, both with a private view and CGI (`.cgi`) on their sites.
fn config(root: &Path) -> String {
    let text = two_env_config(root, "private_view = true\ncgi_timeout = 10");
    text.replace(
        &format!("document_root = \"{}\"\n", root.join("alice").display()),
        &format!(
            "document_root = \"{}\"\ncgi = [\".cgi\"]\n",
            root.join("alice").display()
        ),
    )
    .replace(
        &format!("document_root = \"{}\"\n", root.join("bob").display()),
        &format!(
            "document_root = \"{}\"\ncgi = [\".cgi\"]\n",
            root.join("bob").display()
        ),
    )
}

/// A `/bin/sh` script at `rel`, owned by `uid`, printing a plain-text answer.
fn script(root: &Path, rel: &str, uid: u32, body: &str) {
    let text = format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec 2>&1\n{body}\n");
    put(root, rel, text.as_bytes(), uid, 0o755);
}

fn run(server: &TestServer, host: &str, path: &str) -> String {
    let r = get(server.addr, host, path);
    assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
    r.text()
}

#[test]
fn a_script_sees_only_its_own_environment() {
    require_root!();
    let dir = Dir::new("ns_view");
    let w = dir.path();
    sites(w, 0o644);
    put(w, "bob/secret.txt", b"bob's wp-config", BOB, 0o644);
    let bob_secret = w.join("bob/secret.txt");
    // A 0644 file in a directory no view covers (/var/tmp): Landlock's to refuse.
    let outside = tempfile::Builder::new()
        .prefix("bulkhead-ns-ll-")
        .tempdir_in("/var/tmp")
        .unwrap();
    chmod(outside.path(), 0o755);
    put(outside.path(), "f.txt", b"outside", 0, 0o644);
    let outside_file = outside.path().join("f.txt");
    let tmp_name = format!("bulkhead-ns-{}", std::process::id());
    script(
        w,
        "alice/ps.cgi",
        ALICE,
        "for p in /proc/[0-9]*; do echo \"proc $(stat -c %u $p)\"; done",
    );
    script(
        w,
        "alice/peek.cgi",
        ALICE,
        &format!(
            "cat {} && echo READ-BOB\nls -d {} && echo SEES-BOB\ncat {} && echo READ-OUTSIDE\ncat {}/alice/index.html && echo READ-OWN\necho mine > /tmp/{tmp_name} && echo WROTE-TMP",
            bob_secret.display(),
            w.join("bob").display(),
            outside_file.display(),
            w.display(),
        ),
    );
    script(
        w,
        "bob/tmp.cgi",
        BOB,
        &format!("ls /tmp/{tmp_name} && echo SEES-ALICE-TMP; echo done"),
    );
    script(w, "bob/ipc.cgi", BOB, "/usr/bin/ipcmk -M 4096; /usr/bin/ipcs -m");
    script(w, "alice/ipc.cgi", ALICE, "/usr/bin/ipcs -m");
    script(
        w,
        "alice/walls.cgi",
        ALICE,
        "/usr/bin/unshare -r /bin/true; echo unshare=$?\n/usr/bin/python3 -c 'import ctypes,os; l=ctypes.CDLL(None,use_errno=True); r=l.ptrace(0,0,0,0); print(\"ptrace\", r, os.strerror(ctypes.get_errno()))'",
    );
    let server = TestServer::start(&config(w));

    let ps = run(&server, "alice.test", "/ps.cgi");
    let uids: Vec<&str> = ps.lines().filter_map(|l| l.strip_prefix("proc ")).collect();
    assert!(!uids.is_empty(), "{ps}");
    assert!(
        uids.iter().all(|u| *u == ALICE.to_string()),
        "another uid's process is visible: {ps}"
    );

    let peek = run(&server, "alice.test", "/peek.cgi");
    assert!(!peek.contains("READ-BOB"), "{peek}");
    assert!(!peek.contains("SEES-BOB"), "{peek}");
    assert!(
        !peek.contains("READ-OUTSIDE"),
        "Landlock let a file outside through: {peek}"
    );
    assert!(peek.contains("Permission denied"), "{peek}");
    assert!(peek.contains("READ-OWN") && peek.contains("alice home"), "{peek}");
    assert!(peek.contains("WROTE-TMP"), "{peek}");
    assert!(
        !Path::new("/tmp").join(&tmp_name).exists(),
        "alice's /tmp is the host's"
    );
    let tmp = run(&server, "bob.test", "/tmp.cgi");
    assert!(!tmp.contains("SEES-ALICE-TMP"), "{tmp}");

    let bob_ipc = run(&server, "bob.test", "/ipc.cgi");
    assert!(bob_ipc.contains("Shared memory id"), "{bob_ipc}");
    let alice_ipc = run(&server, "alice.test", "/ipc.cgi");
    let segments = alice_ipc.lines().filter(|l| l.starts_with("0x")).count();
    assert_eq!(segments, 0, "alice sees SysV segments: {alice_ipc}");

    let walls = run(&server, "alice.test", "/walls.cgi");
    assert!(!walls.contains("unshare=0"), "{walls}");
    assert!(walls.contains("ptrace -1 Operation not permitted"), "{walls}");
}

#[test]
fn a_chrooted_environment_runs_the_system_php() {
    require_root!();
    if !have_php_cgi() {
        return;
    }
    let dir = Dir::new("ns_php_jail");
    let w = dir.path();
    let jail = w.join("alice");
    put(
        &jail,
        "www/t.php",
        b"<?php $s = implode('|', [date_default_timezone_get(), date('Y'), strlen(bin2hex(random_bytes(8))), getmyuid(), is_dir('/srv') ? 'srv' : 'nosrv', trim(shell_exec('/usr/bin/unshare -r /bin/true 2>/dev/null; echo $?')), file_get_contents('/etc/passwd')]); header('Content-Length: ' . strlen($s)); echo $s;",
        ALICE,
        0o644,
    );
    chown(&jail, 0);
    chmod(&jail, 0o755);
    let text = crate::util::php::php_config(w, "private_view = true", &php_table("alice", ""))
        .replace(
            &format!("group = {ALICE}\n"),
            &format!("group = {ALICE}\nchroot = \"{}\"\n", jail.display()),
        )
        .replace(
            &format!("document_root = \"{}\"", jail.display()),
            &format!("document_root = \"{}\"", jail.join("www").display()),
        );
    assert!(Path::new(PHP_CGI).exists());
    let server = TestServer::start(&text);
    let r = get(server.addr, "alice.test", "/t.php");
    let body = r.text();
    assert_eq!(r.status, 200, "{body}\n{}", server.log());
    let year = body.split('|').nth(1).unwrap_or("");
    assert!(year.len() == 4 && year.starts_with("20"), "{body}");
    let parts: Vec<&str> = body.split('|').collect();
    assert_eq!(parts[0], "UTC", "{body}");
    assert_eq!(parts[2], "16", "{body}");
    assert_eq!(parts[3], ALICE.to_string(), "{body}");
    assert_eq!(parts[4], "nosrv", "{body}");
    // The backend runs under the seccomp deny list too (a shell it starts inherits it).
    assert_ne!(parts[5], "0", "unshare succeeded in a backend: {body}");
    assert!(
        parts[6].contains(&format!(":{ALICE}:{ALICE}:")) && !parts[6].contains(&format!(":{BOB}:")),
        "{body}"
    );
    // Nothing was copied into the jail: only the site and the socket directory.
    let mut names: Vec<String> = std::fs::read_dir(&jail)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".bulkhead", "www"]);
    // And bob, without a chroot but with a private view (its document root missing).
    assert_eq!(get(server.addr, "bob.test", "/index.html").status, 404);
}

#[test]
fn a_killed_holder_is_replaced_and_the_environment_serves_again() {
    require_root!();
    let dir = Dir::new("ns_holder_kill");
    let w = dir.path();
    sites(w, 0o644);
    script(w, "alice/ps.cgi", ALICE, "ls -d /proc/[0-9]* | wc -l");
    let server = TestServer::start(&config(w));
    run(&server, "alice.test", "/ps.cgi");
    let holders = server.children("ns-holder");
    assert_eq!(holders.len(), 2, "one holder per environment: {holders:?}");
    let alice_before = server.processors_of(ALICE);
    // Which holder is alice's: the one whose PID namespace holds alice's processor.
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let alice_holder = *holders
        .iter()
        .find(|h| ns(**h) == ns(alice_before[0]))
        .expect("alice's processor is in a holder's PID namespace");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(alice_holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        server
            .wait_for_log("building the view again", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log()
    );
    assert!(
        server.wait_until(Duration::from_secs(10), || {
            let now = server.processors_of(ALICE);
            now.len() == 1
                && now[0] != alice_before[0]
                && get(server.addr, "alice.test", "/ps.cgi").status == 200
        }),
        "alice was not served again:\n{}",
        server.log()
    );
    assert_eq!(server.children("ns-holder").len(), 2);
    assert_eq!(get(server.addr, "bob.test", "/index.html").status, 200);
}

#[test]
fn check_validates_bind_ro_and_describes_each_view() {
    let dir = Dir::new("ns_check");
    let w = dir.path();
    sites(w, 0o644);
    let good = two_env_config(w, "private_view = true").replace(
        &format!("[environments.bob]\nuser = {BOB}\n"),
        &format!(
            "[environments.bob]\nuser = {BOB}\nbind_ro = [\"/usr/share/zoneinfo\", \"/etc/hostname\"]\n"
        ),
    );
    let bad = good.replace("/etc/hostname", &format!("{}/missing", w.display()));
    let run = |text: &str| {
        let path = w.join("b.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = run(&good);
    assert!(ok, "{text}");
    assert!(
        text.contains("environment alice: private view: mount, PID and IPC namespaces"),
        "{text}"
    );
    assert!(text.contains("environment bob: private view"), "{text}");
    let (ok, text) = run(&bad);
    assert!(!ok, "{text}");
    assert!(text.contains("bind_ro") && text.contains("missing"), "{text}");
}

/// carol, added by a reload: uid 2003 (no passwd entry needed).
const CAROL: u32 = 2003;

/// A reload that keeps alice's view settings keeps her view: the same holder, the
/// same `/tmp` (a file a script wrote survives), and her view now hides carol, whom
/// the reload added (carol's tree is outside `/tmp`, where only the view's hiding,
/// not Landlock, makes a path not exist). bob's `bind_ro` changed: his view is new,
/// and his old holder ends with the old generation.
#[test]
fn a_reload_keeps_a_view_and_its_tmp_and_hides_an_added_environment() {
    require_root!();
    let dir = Dir::new("ns_reload");
    let w = dir.path();
    sites(w, 0o644);
    let outside = tempfile::Builder::new()
        .prefix("bulkhead-ns-carol-")
        .tempdir_in("/var/tmp")
        .unwrap();
    chmod(outside.path(), 0o755);
    put(outside.path(), "carol/index.html", b"carol home", CAROL, 0o644);
    let carol_file = put(
        outside.path(),
        "carol/secret.txt",
        b"carol's wp-config",
        CAROL,
        0o644,
    );
    let mark = format!("bulkhead-ns-reload-{}", std::process::id());
    script(
        w,
        "alice/write.cgi",
        ALICE,
        &format!("echo kept > /tmp/{mark} && echo WROTE"),
    );
    script(
        w,
        "alice/read.cgi",
        ALICE,
        &format!(
            "cat /tmp/{mark}\ntest -e {} && echo SEES-CAROL\necho done",
            carol_file.display()
        ),
    );
    let server = TestServer::start(&config(w));
    assert!(run(&server, "alice.test", "/write.cgi").contains("WROTE"));
    let before = run(&server, "alice.test", "/read.cgi");
    // Before carol is an environment, her directory is just a host path alice sees.
    assert!(
        before.contains("kept") && before.contains("SEES-CAROL"),
        "{before}"
    );
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let holder_of = |uid: u32| {
        let p = server.processors_of(uid)[0];
        *server
            .children("ns-holder")
            .iter()
            .find(|h| ns(**h) == ns(p))
            .expect("a processor in a holder's PID namespace")
    };
    let (alice_holder, bob_holder) = (holder_of(ALICE), holder_of(BOB));

    let text = std::fs::read_to_string(&server.config_path).unwrap().replace(
        "[environments.bob]\n",
        "[environments.bob]\nbind_ro = [\"/usr/share/zoneinfo\"]\n",
    );
    let carol = format!(
        "\n[environments.carol]\nuser = {CAROL}\ngroup = {CAROL}\n\n[[vhosts]]\nserver_name = \"carol.test\"\nenvironment = \"carol\"\ndocument_root = \"{}\"\n",
        outside.path().join("carol").display()
    );
    std::fs::write(&server.config_path, text + &carol).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("reload: old generation finished", Duration::from_secs(20))
            .is_some(),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("private view kept") && l.contains("environment=alice")),
        "{log}"
    );
    assert_eq!(holder_of(ALICE), alice_holder, "alice's view was rebuilt");
    let after = run(&server, "alice.test", "/read.cgi");
    assert!(
        after.contains("kept"),
        "alice's /tmp did not survive the reload: {after}"
    );
    assert!(!after.contains("SEES-CAROL"), "alice sees carol's tree: {after}");
    assert!(after.contains("done"), "{after}");
    assert_eq!(get(server.addr, "carol.test", "/index.html").text(), "carol home");
    // bob's view is new; his old holder ended with the old generation.
    assert_ne!(
        holder_of(BOB),
        bob_holder,
        "bob's view was kept though its bind_ro changed"
    );
    assert!(
        server.wait_until(Duration::from_secs(5), || {
            let now = server.children("ns-holder");
            now.len() == 3 && !now.contains(&bob_holder)
        }),
        "holders: {:?}\n{}",
        server.children("ns-holder"),
        server.log()
    );
}

/// DokuWiki (Debian's, copied as real files) in a jail with a private view: nothing
/// of the system copied in, only the wiki and a session directory (PHP's
/// `session.save_path`, `/var/lib/php/sessions`, is the jail's own); the same walk as
/// `dokuwiki.rs` (start page, login, edit and save, a forged sectok refused).
#[test]
fn dokuwiki_works_chrooted_in_a_private_view() {
    require_root!();
    if !crate::dokuwiki::have_dokuwiki() {
        return;
    }
    let dir = Dir::new("ns_dokuwiki_jail");
    let w = dir.path();
    let jail = w.join("jail");
    let wiki = jail.join("wiki");
    crate::util::php::dokuwiki(&wiki, ALICE);
    let sessions = jail.join("var/lib/php/sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    chmod(&sessions, 0o1733);
    for p in [
        jail.clone(),
        jail.join("var"),
        jail.join("var/lib"),
        jail.join("var/lib/php"),
    ] {
        chown(&p, 0);
        chmod(&p, 0o755);
    }
    let vhost = format!(
        "\n[[vhosts]]\nserver_name = \"wiki.test\"\nenvironment = \"alice\"\ndocument_root = \"{}\"\nindex = [\"doku.php\"]\n",
        wiki.display()
    );
    let text = crate::util::php::php_config(w, "", &format!("{}{vhost}", php_table("alice", "")))
        .replace(
            &format!("group = {ALICE}\n"),
            &format!(
                "group = {ALICE}\nchroot = \"{}\"\nprivate_view = true\n",
                jail.display()
            ),
        )
        .replace(
            &format!("document_root = \"{}\"", w.join("alice").display()),
            &format!("document_root = \"{}\"", jail.join("wiki").display()),
        );
    let server = TestServer::start(&text);
    let log = || server.log();
    crate::dokuwiki::login_edit_save(server.addr, "wiki.test", &wiki, &log);
    assert!(
        std::fs::read_dir(&sessions).unwrap().count() > 0,
        "no session file in the jail's session directory"
    );
}
