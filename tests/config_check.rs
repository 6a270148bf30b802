//! `bulkhead check` and `bulkhead serve` on configuration files: every error is reported
//! on stderr as `FILE:LINE: KEY: message`, all of them at once, with a non-zero exit;
//! a valid file (including the demo's) is `OK`. None of this needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::{Dir, BIN};

const SERVER: &str = r#"
[server]
user = 2000
group = 2000
listen = ["127.0.0.1:0"]
"#;

const ALICE: &str = r#"
[environments.alice]
user = 2001
group = 2001
"#;

const VHOST: &str = r#"
[[vhosts]]
server_name = "alice.example"
environment = "alice"
document_root = "/srv/alice/www"
"#;

fn vhost(name: &str, env: &str, root: &str) -> String {
    format!("\n[[vhosts]]\nserver_name = \"{name}\"\nenvironment = \"{env}\"\ndocument_root = \"{root}\"\n")
}

/// A config file in its own temp dir (kept alive by the returned guard).
struct Conf {
    _dir: Dir,
    path: PathBuf,
    text: String,
}

impl Conf {
    fn new(test: &str, parts: &[&str]) -> Conf {
        Self::in_dir(Dir::new(test), parts)
    }

    fn in_dir(dir: Dir, parts: &[&str]) -> Conf {
        let path = dir.path().join("bulkhead.toml");
        let text = parts.concat();
        std::fs::write(&path, &text).unwrap();
        Conf {
            _dir: dir,
            path,
            text,
        }
    }

    /// 1-based line of the first line containing `needle`.
    #[track_caller]
    fn line_of(&self, needle: &str) -> usize {
        let index = self.text.lines().position(|l| l.contains(needle));
        index.unwrap_or_else(|| panic!("{needle:?} not in config:\n{}", self.text)) + 1
    }
}

/// The outcome of running the binary.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `bulkhead ARGS`; fails the test if it does not exit within 30 s.
fn run(args: &[&str], config: &Path) -> Run {
    let child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            panic!("bulkhead {args:?} did not exit within 30 s");
        }
    };
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check(conf: &Conf) -> Run {
    run(&["check"], &conf.path)
}

/// Asserts a failed run whose stderr has a line `FILE:LINE: KEY: …FRAGMENT…`.
#[track_caller]
fn assert_error(run: &Run, conf: &Conf, line: usize, key: &str, fragment: &str) {
    assert!(
        run.code.is_some_and(|c| c != 0),
        "exit {:?}, want non-zero\nstdout:\n{}\nstderr:\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
    let prefix = format!("{}:{line}: {key}: ", conf.path.display());
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(&prefix) && l[l.find(&prefix).unwrap()..].contains(fragment)),
        "no {prefix:?} line containing {fragment:?} in stderr:\n{}\n--- config:\n{}",
        run.stderr,
        conf.text
    );
}

/// `check`'s summary line: `FILE: N error(s)`.
#[track_caller]
fn assert_count(run: &Run, conf: &Conf, n: usize) {
    let summary = format!("{}: {n} error(s)", conf.path.display());
    assert!(
        run.stderr.lines().any(|l| l == summary),
        "want {summary:?} in:\n{}",
        run.stderr
    );
}

#[test]
fn valid_config_is_ok() {
    let dir = Dir::new("valid_config_is_ok");
    let root = dir.path().join("alice/www");
    std::fs::create_dir_all(&root).unwrap();
    let v = vhost("alice.example", "alice", &root.display().to_string());
    let conf = Conf::in_dir(dir, &[SERVER, ALICE, &v]);
    let r = check(&conf);
    assert_eq!(r.code, Some(0), "stderr:\n{}", r.stderr);
    assert!(r.stdout.contains("OK"), "stdout: {:?}", r.stdout);
    assert!(
        r.stdout.contains(&conf.path.display().to_string()),
        "stdout: {:?}",
        r.stdout
    );
    assert!(r.stderr.trim().is_empty(), "stderr: {:?}", r.stderr);
}

#[test]
fn unknown_key() {
    let conf = Conf::new(
        "unknown_key",
        &[SERVER, "lisen = [\"0.0.0.0:80\"]\n", ALICE, VHOST],
    );
    let r = check(&conf);
    assert_error(&r, &conf, conf.line_of("lisen"), "server.lisen", "unknown key");
    assert_count(&r, &conf, 1);
}

#[test]
fn wrong_type() {
    let conf = Conf::new(
        "wrong_type",
        &[SERVER, ALICE, "min_processors = \"ten\"\n", VHOST],
    );
    let r = check(&conf);
    assert_error(
        &r,
        &conf,
        conf.line_of("\"ten\""),
        "environments.alice.min_processors",
        "expected an integer",
    );
    assert_count(&r, &conf, 1);
}

#[test]
fn vhost_naming_an_unknown_environment() {
    let conf = Conf::new(
        "vhost_naming_an_unknown_environment",
        &[SERVER, ALICE, &vhost("c.example", "carol", "/srv/c")],
    );
    let r = check(&conf);
    assert_error(
        &r,
        &conf,
        conf.line_of("\"carol\""),
        "vhosts[0].environment",
        "unknown environment 'carol'",
    );
    assert_count(&r, &conf, 1);
}

#[test]
fn environment_as_root_user_or_group() {
    for (env, key, fragment) in [
        ("user = 0\ngroup = 2001\n", "environments.alice.user", "uid 0"),
        (
            "user = \"root\"\ngroup = 2001\n",
            "environments.alice.user",
            "uid 0",
        ),
        ("user = 2001\ngroup = 0\n", "environments.alice.group", "gid 0"),
        (
            "user = 2001\ngroup = \"root\"\n",
            "environments.alice.group",
            "gid 0",
        ),
    ] {
        let conf = Conf::new(
            "environment_as_root_user_or_group",
            &[SERVER, "\n[environments.alice]\n", env, VHOST],
        );
        let r = check(&conf);
        let needle = if key.ends_with("user") {
            "user ="
        } else {
            "group ="
        };
        // The environment's line, not the server's.
        let line = conf
            .text
            .lines()
            .enumerate()
            .skip(conf.line_of("[environments.alice]"))
            .find(|(_, l)| l.starts_with(needle))
            .map(|(i, _)| i + 1)
            .unwrap();
        assert_error(&r, &conf, line, key, fragment);
        assert_count(&r, &conf, 1);
    }
}

#[test]
fn host_name_claimed_by_two_vhosts() {
    let conf = Conf::new(
        "host_name_claimed_by_two_vhosts",
        &[SERVER, ALICE, VHOST, &vhost("Alice.Example", "alice", "/srv/b")],
    );
    let r = check(&conf);
    assert_error(
        &r,
        &conf,
        conf.line_of("Alice.Example"),
        "vhosts[1].server_name",
        "already claimed by vhosts[0]",
    );
    assert_count(&r, &conf, 1);

    let conf = Conf::new("host_name_claimed_by_two_vhosts", &[
        SERVER,
        ALICE,
        VHOST,
        "\n[[vhosts]]\nserver_name = \"b.example\"\nserver_alias = [\"www.b.example\", \"alice.example\"]\n",
        "environment = \"alice\"\ndocument_root = \"/srv/b\"\n",
    ]);
    let r = check(&conf);
    assert_error(
        &r,
        &conf,
        conf.line_of("server_alias"),
        "vhosts[1].server_alias[1]",
        "already claimed by vhosts[0]",
    );
    assert_count(&r, &conf, 1);
}

#[test]
fn document_root_outside_the_chroot() {
    let dir = Dir::new("document_root_outside_the_chroot");
    let jail = dir.path().join("alice");
    std::fs::create_dir_all(jail.join("www")).unwrap();
    std::fs::create_dir_all(dir.path().join("bob/www")).unwrap();
    let env = format!(
        "\n[environments.alice]\nuser = 2001\ngroup = 2001\nchroot = \"{}\"\n",
        jail.display()
    );
    let outside = dir.path().join("bob/www").display().to_string();
    let v = vhost("alice.example", "alice", &outside);
    let conf = Conf::in_dir(dir, &[SERVER, &env, &v]);
    let r = check(&conf);
    assert_error(
        &r,
        &conf,
        conf.line_of("document_root = "),
        "vhosts[0].document_root",
        "outside the chroot",
    );
    assert_count(&r, &conf, 1);
}

#[test]
fn missing_user() {
    let conf = Conf::new(
        "missing_user",
        &[
            SERVER,
            "\n[environments.alice]\nuser = \"no-such-user-xyz\"\ngroup = 2001\n",
            VHOST,
        ],
    );
    let r = check(&conf);
    assert_error(
        &r,
        &conf,
        conf.line_of("no-such-user-xyz"),
        "environments.alice.user",
        "no such user 'no-such-user-xyz'",
    );
    assert_count(&r, &conf, 1);
}

/// One file with every class above: all are reported, in line order, with the count.
fn many_errors(dir: &Path) -> Vec<String> {
    let jail = dir.join("jail");
    std::fs::create_dir_all(&jail).unwrap();
    vec![
        SERVER.to_string(),
        "lisen = [\"0.0.0.0:80\"]\n".to_string(),
        "\n[environments.alice]\nuser = 0\ngroup = 0\nmin_processors = \"ten\"\n".to_string(),
        format!(
            "\n[environments.bob]\nuser = \"no-such-user-xyz\"\ngroup = 2002\nchroot = \"{}\"\n",
            jail.display()
        ),
        vhost("a.example", "alice", "/srv/a"),
        vhost("b.example", "carol", "/srv/b"),
        vhost("A.example", "alice", "/srv/a2"),
        vhost("bob.example", "bob", "/srv/bob"),
    ]
}

/// The errors `many_errors` must produce: (needle for the line, key, fragment).
const MANY: &[(&str, &str, &str)] = &[
    ("lisen", "server.lisen", "unknown key"),
    ("user = 0", "environments.alice.user", "uid 0"),
    ("group = 0", "environments.alice.group", "gid 0"),
    (
        "\"ten\"",
        "environments.alice.min_processors",
        "expected an integer",
    ),
    (
        "no-such-user-xyz",
        "environments.bob.user",
        "no such user 'no-such-user-xyz'",
    ),
    (
        "\"carol\"",
        "vhosts[1].environment",
        "unknown environment 'carol'",
    ),
    (
        "A.example",
        "vhosts[2].server_name",
        "already claimed by vhosts[0]",
    ),
    ("/srv/bob", "vhosts[3].document_root", "outside the chroot"),
];

#[test]
fn several_errors_are_all_reported() {
    let dir = Dir::new("several_errors_are_all_reported");
    let parts = many_errors(dir.path());
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let conf = Conf::in_dir(dir, &parts);
    let r = check(&conf);
    let mut lines = Vec::new();
    for &(needle, key, fragment) in MANY {
        let line = conf.line_of(needle);
        assert_error(&r, &conf, line, key, fragment);
        lines.push(line);
    }
    assert_count(&r, &conf, MANY.len());
    // Reported in line order.
    let prefix = format!("{}:", conf.path.display());
    let reported: Vec<usize> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(reported, lines, "stderr:\n{}", r.stderr);
}

#[test]
fn serve_on_an_invalid_config_starts_nothing() {
    let dir = Dir::new("serve_on_an_invalid_config_starts_nothing");
    let pid_file = dir.path().join("bulkhead.pid");
    let mut parts = many_errors(dir.path());
    parts.insert(1, format!("pid_file = \"{}\"\n", pid_file.display()));
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let conf = Conf::in_dir(dir, &parts);
    let r = run(&["serve"], &conf.path);
    for &(needle, key, fragment) in MANY {
        assert_error(&r, &conf, conf.line_of(needle), key, fragment);
    }
    assert!(!pid_file.exists(), "serve wrote its pid file");
    for started in ["ready: listening", "multiplexer serving", "processor serving"] {
        assert!(
            !r.stderr.contains(started),
            "serve got as far as {started:?}:\n{}",
            r.stderr
        );
    }
}

/// Each configuration error is shown once on stderr's `bulkhead:` line (and at most
/// once more in the log line), not repeated by the error chain.
///
/// Fails today: `SupervisorError::Config` is `#[error("{0}")]` with `#[from]` (which makes
/// the errors its source too), so `{e:#}` prints the list twice, once in the
/// `tracing::error!` line and once in the `eprintln!` line of `main`: four times in all.
#[test]
fn serve_reports_each_config_error_once() {
    let conf = Conf::new(
        "serve_reports_each_config_error_once",
        &[SERVER, "lisen = [\"0.0.0.0:80\"]\n", ALICE, VHOST],
    );
    let r = run(&["serve"], &conf.path);
    assert_error(&r, &conf, conf.line_of("lisen"), "server.lisen", "unknown key");
    let shown = r.stderr.matches("server.lisen: unknown key").count();
    assert!(shown <= 2, "the error is shown {shown} times:\n{}", r.stderr);
}

/// The README's demo: `deploy/demo.toml.in` through the same `sed` as `deploy/demo.sh`.
#[test]
fn demo_config_is_valid() {
    let work = Dir::new("demo_config_is_valid");
    for site in ["alice", "bob"] {
        std::fs::create_dir_all(work.path().join(site).join("www")).unwrap();
    }
    std::fs::set_permissions(work.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The ownership deploy/demo.sh gives them as root: alice's tree is alice's, bob's
    // chroot is root's and only its www is bob's.
    if nix::unistd::geteuid().is_root() {
        let own = |rel: &str, uid: u32| {
            std::os::unix::fs::lchown(work.path().join(rel), Some(uid), Some(uid)).unwrap()
        };
        own("alice", 2001);
        own("alice/www", 2001);
        own("bob/www", 2002);
    }
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/demo.toml.in");
    let out = Command::new("sed")
        .arg("-e")
        .arg(format!("s#@WORK@#{}#g", work.path().display()))
        .arg("-e")
        .arg("s#@LISTEN@#127.0.0.1:0#g")
        .arg(&template)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('@'), "placeholders left:\n{text}");
    let path = work.path().join("bulkhead.toml");
    std::fs::write(&path, &text).unwrap();
    let r = run(&["check"], &path);
    assert_eq!(r.code, Some(0), "stderr:\n{}\n--- config:\n{text}", r.stderr);
    assert!(r.stdout.contains("OK"), "stdout: {:?}", r.stdout);
    assert!(
        r.stdout.contains("2 environments, 2 vhosts"),
        "stdout: {:?}",
        r.stdout
    );
}

/// Asserts a successful run whose stderr has a line `warning: FILE:LINE: KEY: …` with
/// every fragment.
#[track_caller]
fn assert_warning(run: &Run, conf: &Conf, line: usize, key: &str, fragments: &[&str]) {
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    let prefix = format!("warning: {}:{line}: {key}: ", conf.path.display());
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && fragments.iter().all(|f| l.contains(f))),
        "no {prefix:?} line containing {fragments:?} in stderr:\n{}\n--- config:\n{}",
        run.stderr,
        conf.text
    );
}

#[test]
fn shared_uids_and_overlapping_names_are_warnings_and_exit_0() {
    let carol = "\n[environments.carol]\nuser = 2001\ngroup = 2003\n";
    let bob = "\n[environments.bob]\nuser = 2002\ngroup = 2002\n";
    let wild = "\n[[vhosts]]\nserver_name = \"alice.test\"\nserver_alias = [\"*.alice.test\"]\nenvironment = \"alice\"\ndocument_root = \"/srv/a\"\n";
    let shop = vhost("shop.alice.test", "bob", "/srv/shop");
    let conf = Conf::new(
        "shared_uids_and_overlapping_names_are_warnings_and_exit_0",
        &[SERVER, ALICE, bob, carol, wild, &shop],
    );
    let r = check(&conf);
    assert_warning(
        &r,
        &conf,
        conf.line_of("[environments.carol]") + 1,
        "environments.carol.user",
        &["'alice' and 'carol' both run as uid 2001"],
    );
    assert_warning(
        &r,
        &conf,
        conf.line_of("\"shop.alice.test\""),
        "vhosts[1].server_name",
        &[
            "'shop.alice.test' (vhosts[1], environment 'bob')",
            "'*.alice.test' (vhosts[0], environment 'alice'",
        ],
    );
    assert!(r.stdout.contains("OK"), "stdout: {:?}", r.stdout);
}

#[test]
fn environment_with_the_multiplexers_uid_or_gid() {
    let conf = Conf::new(
        "environment_with_the_multiplexers_uid_or_gid",
        &[
            SERVER,
            "\n[environments.alice]\nuser = 2000\ngroup = 2000\n",
            VHOST,
        ],
    );
    let r = check(&conf);
    let line = conf.line_of("[environments.alice]");
    assert_error(
        &r,
        &conf,
        line + 1,
        "environments.alice.user",
        "the multiplexers' (server.user = \"2000\")",
    );
    assert_error(
        &r,
        &conf,
        line + 2,
        "environments.alice.group",
        "the multiplexers' (server.group = \"2000\")",
    );
    assert_count(&r, &conf, 2);
}

/// A log directory another uid can write (the group/world bit of a root directory, or
/// another tenant's directory) is refused with file:line, by `check` and by `serve`.
#[test]
fn access_log_in_a_directory_another_user_can_write() {
    let dir = Dir::new("access_log_in_a_directory_another_user_can_write");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut parts = vec![SERVER.to_string(), ALICE.to_string(), VHOST.to_string()];
    parts.push(format!("access_log = \"{}\"\n", open.join("alice.log").display()));
    let as_root = nix::unistd::geteuid().is_root();
    if as_root {
        // bob's directory, for alice's log.
        let bobs = dir.path().join("bob");
        std::fs::create_dir(&bobs).unwrap();
        std::os::unix::fs::lchown(&bobs, Some(2002), Some(2002)).unwrap();
        parts.push(vhost("www.alice.example", "alice", "/srv/alice/www"));
        parts.push(format!("access_log = \"{}\"\n", bobs.join("alice.log").display()));
    }
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let conf = Conf::in_dir(dir, &parts);
    for args in [&["check"][..], &["serve"][..]] {
        let r = run(args, &conf.path);
        assert_error(
            &r,
            &conf,
            conf.line_of("open/alice.log"),
            "vhosts[0].access_log",
            "is writable by its group or others (mode 0777)",
        );
        if as_root {
            assert_error(
                &r,
                &conf,
                conf.line_of("bob/alice.log"),
                "vhosts[1].access_log",
                "is owned by uid 2002; it must be owned by root or uid 2001",
            );
        }
        assert!(!open.join("alice.log").exists(), "{args:?} created the log");
    }
}

#[test]
fn a_tenants_uid_in_status_allow_users() {
    let status = "[status]\nallow_users = [\"root\", 2001]\n";
    // Whichever is defined first, the environment or [status].
    for parts in [[SERVER, ALICE, VHOST, status], [status, SERVER, ALICE, VHOST]] {
        let conf = Conf::new("a_tenants_uid_in_status_allow_users", &parts);
        let r = check(&conf);
        let line = conf.line_of("allow_users");
        let fragment = "user '2001' (uid 2001) runs environment 'alice'";
        assert_error(&r, &conf, line, "status.allow_users[1]", fragment);
        assert_count(&r, &conf, 1);
    }
}
