//! The admin subcommands: `bulkhead check` warning when the open-files limit is too
//! low for the configuration (and naming `LimitNOFILE=`), `bulkhead reopen-logs`
//! (SIGUSR1 through the pid file: a renamed access log is reopened), and
//! `bulkhead status` printing the `?peruser_stats` table read from the server.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::*;

/// `bulkhead ARGS` with its open-files limit set to `(soft, hard)` (when given).
fn bulkhead(args: &[&str], config: &Path, nofile: Option<(u64, u64)>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--config").arg(config);
    if let Some((soft, hard)) = nofile {
        // SAFETY: between fork and exec only setrlimit, async-signal-safe, is called.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
                    .map_err(std::io::Error::from)
            });
        }
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config of `n` environments, one vhost each, none started before it is asked for.
fn many(w: &Path, n: usize) -> String {
    many_with(w, n, "min_processors = 0\n")
}

/// A config of `n` environments, one vhost each, each with `pool` in its table.
fn many_with(w: &Path, n: usize, pool: &str) -> String {
    let mut c = format!(
        "[server]\nuser = {MUX_UID}\ngroup = {MUX_UID}\nlisten = [\"127.0.0.1:8080\"]\nserver_limit = {}\n",
        n + 16
    );
    for i in 0..n {
        c.push_str(&format!(
            "\n[environments.e{i}]\nuser = {u}\ngroup = {u}\n{pool}\n[[vhosts]]\nserver_name = \"e{i}.test\"\n\
             environment = \"e{i}\"\ndocument_root = \"{d}\"\n",
            u = 3000 + i,
            d = w.display()
        ));
    }
    c
}

#[test]
fn check_warns_when_the_open_files_limit_is_too_low() {
    let dir = Dir::new("check_warns_when_the_open_files_limit_is_too_low");
    let w = dir.path();
    let path = w.join("many.toml");
    std::fs::write(&path, many(w, 400)).unwrap();

    let out = bulkhead(&["check"], &path, Some((256, 512)));
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "a warning must not fail check:\n{stdout}{stderr}"
    );
    let warning = stderr
        .lines()
        .find(|l| l.contains("open files limit"))
        .unwrap_or_else(|| panic!("no warning about the open-files limit:\n{stderr}"));
    assert!(
        warning.starts_with("warning: ")
            && warning.contains("soft 256, hard 512")
            && warning.contains("400 environments")
            && warning.contains("LimitNOFILE="),
        "{warning}"
    );

    // The same environments each started at once (a processor, its log pipe and view
    // in the supervisor): the server could not start, and check says so.
    let started = w.join("started.toml");
    std::fs::write(&started, many_with(w, 400, "")).unwrap();
    let out = bulkhead(&["check"], &started, Some((256, 512)));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("needs to start") && l.contains("LimitNOFILE=")),
        "{stderr}"
    );
    // What each process needs is said in any case.
    assert!(
        stdout.contains("open files (fds) per process for 400 environments"),
        "{stdout}"
    );

    // Enough room: no warning, for the same configuration (when this machine's hard
    // limit allows it) or a small one.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if hard >= 8192 {
        let out = bulkhead(&["check"], &path, Some((1024, 8192)));
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success() && !stderr.contains("open files"),
            "{stdout}{stderr}"
        );
        let small = w.join("small.toml");
        std::fs::write(&small, many(w, 2)).unwrap();
        let out = bulkhead(&["check"], &small, Some((1024, 8192)));
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success() && !stderr.contains("open files"),
            "{stdout}{stderr}"
        );
    }
}

#[test]
fn reopen_logs_signals_through_the_pid_file() {
    require_root!();
    let dir = Dir::new("reopen_logs_signals_through_the_pid_file");
    let w = dir.path();
    sites(w, 0o644);
    let logs = log_dir(w);
    let log = logs.join("alice.log");
    let pid_file = w.join("bulkhead.pid");
    let config = two_env_config(w, &format!("pid_file = \"{}\"", pid_file.display())).replace(
        "environment = \"alice\"\n",
        &format!("environment = \"alice\"\naccess_log = \"{}\"\n", log.display()),
    );
    let server = TestServer::start(&config);
    ok(&server, "alice.test", "alice home", "before the rotation");
    assert!(server.wait_until(Duration::from_secs(5), || log_lines(&log) == 1));
    std::fs::rename(&log, logs.join("alice.log.1")).unwrap();

    let out = bulkhead(&["reopen-logs"], &server.config_path, None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("sent SIGUSR1 to bulkhead (pid {})", server.pid())),
        "{stdout}"
    );
    assert!(
        server
            .wait_for_log("SIGUSR1: reopening logs", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log()
    );
    // Once reopened, requests land in the new file. One answered while the reopen was
    // still on its way may land in the old one; none is lost or logged twice.
    let mut after = 0;
    let moved = server.wait_until(Duration::from_secs(10), || {
        ok(&server, "alice.test", "alice home", "after the rotation");
        after += 1;
        log_lines(&log) > 0
    });
    assert!(moved, "nothing written to the reopened log\n{}", server.log());
    let total = || log_lines(&logs.join("alice.log.1")) + log_lines(&log);
    assert!(server.wait_until(Duration::from_secs(5), || total() == 1 + after));
    assert_eq!(total(), 1 + after, "every request logged once");
    assert!(log_lines(&logs.join("alice.log.1")) >= 1);

    // Without a pid_file: a clear error, exit 1.
    let bare = w.join("bare.toml");
    std::fs::write(&bare, two_env_config(w, "")).unwrap();
    let out = bulkhead(&["reopen-logs"], &bare, None);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no [server] pid_file"), "{stderr}");
}

fn log_lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn status_prints_the_peruser_stats_table() {
    require_root!();
    let dir = Dir::new("status_prints_the_peruser_stats_table");
    let w = dir.path();
    sites(w, 0o644);
    // `status` reads the address from the config: a fixed port, not 0.
    let port = free_port();
    let config = two_env_config(w, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let server = TestServer::start(&config);
    for _ in 0..3 {
        ok(&server, "alice.test", "alice home", "counting");
    }
    ok(&server, "bob.test", "bob home", "counting");

    // The counters reach the scoreboard within a moment.
    let mut last = String::new();
    let seen = poll(Duration::from_secs(10), || {
        let out = bulkhead(&["status"], &server.config_path, None);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        last = stdout.clone();
        let row = |name: &str| {
            stdout
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        };
        // ID Environment Pss Connections Requests Dropped Avail
        let (a, b) = (row("alice")?, row("bob")?);
        (a.get(4).map(String::as_str) == Some("3") && b.get(4).map(String::as_str) == Some("1")).then_some(())
    });
    assert!(seen.is_some(), "bulkhead status:\n{last}");
    let lines: Vec<&str> = last.lines().collect();
    assert_eq!(lines.first(), Some(&"Environments"), "{last}");
    let header: Vec<&str> = lines[1]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "Environment",
            "Pss",
            "Connections",
            "Requests",
            "Dropped (503)",
            "Avail"
        ],
        "{last}"
    );
    // Nothing listening: exit 1 with the address.
    drop(server);
    let copy = w.join("stopped.toml");
    std::fs::write(&copy, &config).unwrap();
    let out = bulkhead(&["status"], &copy, None);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("connecting to 127.0.0.1:{port}")),
        "{stderr}"
    );
}
