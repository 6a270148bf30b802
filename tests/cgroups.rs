//! cgroup limits per environment (issue 12 item 1), on this machine through cgroup v1:
//! a CGI script past `memory_max` is OOM-killed and counted in `/metrics` while bob
//! serves; a fork loop stops at `pids_max` (counted) and the host still forks; a busy
//! loop under `cpu_max = 20` gets about a fifth of a CPU; the processors are in their
//! group before serving and a script inherits it; a reload rewrites a kept group's
//! limits and removes a dropped environment's group; without limits nothing is made;
//! `bulkhead check` says which hierarchy each limit uses; a limit the kernel refuses
//! stops the start. Each test has its own
//! `cgroup_root` (relative: below the test run's own group in each hierarchy).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

/// The directory of the test run's own group in the v1 hierarchy of `controller`
/// (`/sys/fs/cgroup/<controller>` + its path in `/proc/self/cgroup`), plus `rel`.
fn v1_dir(controller: &str, rel: &str) -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = text
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, list, path) = (p.next()?, p.next()?, p.next()?);
            list.split(',').any(|c| c == controller).then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no v1 {controller} hierarchy:\n{text}"));
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(own.trim_start_matches('/'))
        .join(rel)
}

/// Whether this machine has the v1 controllers the tests read (as this one does).
fn have_v1() -> bool {
    let ok = ["memory", "pids", "cpu"]
        .iter()
        .all(|c| Path::new("/sys/fs/cgroup").join(c).join("cgroup.procs").exists());
    if !ok {
        // CI runs where this machine does (a hybrid layout with the v1 controllers).
        if std::env::var_os("CI").is_some() {
            panic!("no cgroup v1 memory, pids and cpu hierarchies: CI's machine must have them");
        }
        eprintln!("skipping: no cgroup v1 memory, pids and cpu hierarchies here");
    }
    ok
}

/// alice (a CGI vhost, `cgi = [".cgi"]`, 20 s timeout) with `alice` in its table, bob
/// (static) with `bob`; `cgroup_root` as given.
fn config(w: &Path, root: &str, alice: &str, bob: &str) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 1
request_head_timeout = 5
keep_alive_timeout = 5
cgroup_root = "{root}"

[environments.alice]
user = {ALICE}
group = {ALICE}
min_processors = 1
max_processors = 2
{alice}

[environments.bob]
user = {BOB}
group = {BOB}
min_processors = 1
max_processors = 2
{bob}

[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{a}"
cgi = [".cgi"]
cgi_timeout = 20

[[vhosts]]
server_name = "bob.test"
environment = "bob"
document_root = "{b}"
"#,
        a = w.join("alice").display(),
        b = w.join("bob").display()
    )
}

/// A python3 CGI script at `alice/<name>`, alice's, mode 0755.
fn py_script(w: &Path, name: &str, body: &str) {
    let text = format!("#!/usr/bin/python3\nimport os, sys, time\nprint('Content-Type: text/plain')\nprint()\nsys.stdout.flush()\n{body}");
    put(w, &format!("alice/{name}"), text.as_bytes(), ALICE, 0o755);
}

/// A per-test root name, unique across concurrent runs.
fn root_name(test: &str) -> String {
    format!("bulkhead-test-{test}-{}", std::process::id())
}

/// `name{environment="env"}` from `/metrics`, 0 when absent.
fn metric(server: &TestServer, name: &str, env: &str) -> f64 {
    let addr = server.metrics_addr.expect("metrics address");
    let r = get(addr, "localhost", "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let samples = parse_samples(&r.text()).unwrap();
    env_sum(&samples, name, env)
}

/// The data of a chunked body given as text (a script's answer is chunked).
fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        raw = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn cgroups_memory_max_oom_kills_the_script_and_is_counted() {
    require_root!();
    if !have_v1() {
        return;
    }
    let dir = Dir::new("cgroups_memory_max_oom_kills_the_script_and_is_counted");
    let w = dir.path();
    sites(w, 0o644);
    // Really holds 200 MiB: every page written.
    py_script(
        w,
        "eat.cgi",
        "b = bytearray(b'x' * (200 << 20))\nprint('survived', len(b))\n",
    );
    let root = root_name("memory");
    let server = TestServer::start(&config(w, &root, "memory_max = \"64M\"", ""));
    let group = v1_dir("memory", &format!("{root}/alice"));
    let limit = std::fs::read_to_string(group.join("memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    // bob unloaded, then while alice's script is killed again and again.
    let bob_times = |n: usize| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let r = get(server.addr, "bob.test", "/");
                assert_eq!(r.status, 200);
                t.elapsed()
            })
            .collect()
    };
    let unloaded = p99(&bob_times(50));
    let addr = server.addr;
    let eater = std::thread::spawn(move || {
        (0..3)
            .map(|_| get(addr, "alice.test", "/eat.cgi"))
            .map(|r| (r.status, r.text()))
            .collect::<Vec<_>>()
    });
    let mut loaded = Vec::new();
    while !eater.is_finished() {
        loaded.extend(bob_times(5));
    }
    for (status, text) in eater.join().unwrap() {
        assert!(!text.contains("survived"), "{status} {text}");
    }
    let loaded = p99(&loaded);
    let bound = (unloaded * 2).max(Duration::from_millis(150));
    assert!(
        loaded <= bound,
        "bob's p99 {loaded:?} while alice is OOM-killed, {unloaded:?} unloaded"
    );
    assert!(
        server.wait_until(Duration::from_secs(5), || metric(
            &server,
            "bulkhead_oom_kills_total",
            "alice"
        ) >= 1.0),
        "no OOM kill counted:\n{}",
        server.log()
    );
    assert_eq!(metric(&server, "bulkhead_oom_kills_total", "bob"), 0.0);
    assert!(env_stat(server.addr, "alice", "oom_kills") >= 1);
    // Both keep answering.
    ok(&server, "bob.test", "bob home", "after alice's OOM");
    ok(&server, "alice.test", "alice home", "after alice's OOM");
}

#[test]
fn cgroups_pids_max_stops_a_fork_loop() {
    require_root!();
    if !have_v1() {
        return;
    }
    let dir = Dir::new("cgroups_pids_max_stops_a_fork_loop");
    let w = dir.path();
    sites(w, 0o644);
    // Forks up to 200 sleeping children, counting the refusals, then ends them.
    py_script(
        w,
        "forks.cgi",
        "kids, failed = [], 0\n\
         for _ in range(200):\n\
         \x20   try:\n\
         \x20       pid = os.fork()\n\
         \x20   except OSError:\n\
         \x20       failed += 1\n\
         \x20       continue\n\
         \x20   if pid == 0:\n\
         \x20       time.sleep(30)\n\
         \x20       os._exit(0)\n\
         \x20   kids.append(pid)\n\
         for k in kids:\n\
         \x20   os.kill(k, 9)\n\
         \x20   os.waitpid(k, 0)\n\
         print('started', len(kids), 'failed', failed)\n",
    );
    let root = root_name("pids");
    let server = TestServer::start(&config(w, &root, "pids_max = 30", ""));
    let group = v1_dir("pids", &format!("{root}/alice"));
    assert_eq!(
        std::fs::read_to_string(group.join("pids.max")).unwrap().trim(),
        "30"
    );
    let r = get(server.addr, "alice.test", "/forks.cgi");
    assert_eq!(r.status, 200, "{}", r.text());
    let words: Vec<String> = dechunk(&r.text())
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (started, failed): (u32, u32) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    assert!(started < 30 && failed > 170, "{}", r.text());
    assert!(
        server.wait_until(Duration::from_secs(5), || metric(
            &server,
            "bulkhead_pids_max_hits_total",
            "alice"
        ) >= 1.0),
        "no pids.max hit counted:\n{}",
        server.log()
    );
    ok(&server, "bob.test", "bob home", "after alice's fork loop");
    // The host can still fork.
    assert!(std::process::Command::new("true").status().unwrap().success());
}

#[test]
fn cgroups_cpu_max_caps_a_busy_loop() {
    require_root!();
    if !have_v1() {
        return;
    }
    let dir = Dir::new("cgroups_cpu_max_caps_a_busy_loop");
    let w = dir.path();
    sites(w, 0o644);
    // Spins for 4 s of wall time, then says how much CPU it got.
    py_script(
        w,
        "spin.cgi",
        "t = time.time()\nwhile time.time() - t < 4:\n    pass\nc = os.times()\nprint(c.user + c.system)\n",
    );
    let root = root_name("cpu");
    let server = TestServer::start(&config(w, &root, "cpu_max = 20\ncpu_weight = 50", ""));
    let group = v1_dir("cpu", &format!("{root}/alice"));
    let read = |f: &str| std::fs::read_to_string(group.join(f)).unwrap().trim().to_string();
    assert_eq!(read("cpu.cfs_quota_us"), "20000");
    assert_eq!(read("cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpu.shares"), "512");
    let start = Instant::now();
    let r = get(server.addr, "alice.test", "/spin.cgi");
    assert_eq!(r.status, 200, "{}", r.text());
    let cpu: f64 = dechunk(&r.text()).trim().parse().unwrap();
    let wall = start.elapsed().as_secs_f64();
    // 20% of 4 s is 0.8 s; a generous bound.
    assert!(cpu > 0.05 && cpu < 4.0 * 0.30, "cpu {cpu} s over {wall} s");
}

#[test]
fn cgroups_processors_are_placed_before_serving_and_scripts_inherit() {
    require_root!();
    if !have_v1() {
        return;
    }
    let dir = Dir::new("cgroups_processors_are_placed_before_serving_and_scripts_inherit");
    let w = dir.path();
    sites(w, 0o644);
    py_script(w, "where.cgi", "print(open('/proc/self/cgroup').read())\n");
    let root = root_name("placed");
    let server = TestServer::start(&config(w, &root, "pids_max = 100\nmemory_max = \"256M\"", ""));
    let pids_group = v1_dir("pids", &format!("{root}/alice"));
    let memory_group = v1_dir("memory", &format!("{root}/alice"));
    // Every alice processor is in both groups as soon as the server is ready (the
    // move happens before its bootstrap); bob's are in neither and bob has no group.
    let alice = server.processors_of(ALICE);
    assert!(!alice.is_empty());
    for p in &alice {
        assert!(
            pids_in(&pids_group).contains(p),
            "{p} not in {}",
            pids_group.display()
        );
        assert!(
            pids_in(&memory_group).contains(p),
            "{p} not in {}",
            memory_group.display()
        );
    }
    for p in server.processors_of(BOB) {
        assert!(!pids_in(&pids_group).contains(&p));
    }
    assert!(!v1_dir("pids", &format!("{root}/bob")).exists());
    // A script runs in its processor's group.
    let r = get(server.addr, "alice.test", "/where.cgi");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains(&format!("pids:/{root}/alice")) || r.text().contains(&format!("/{root}/alice\n")),
        "{}",
        r.text()
    );
    // A processor started on demand (a spare assigned) is placed too: kill one and
    // wait for its replacement.
    let victim = alice[0];
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL);
    assert!(server.wait_until(Duration::from_secs(10), || {
        let now = server.processors_of(ALICE);
        !now.is_empty() && !now.contains(&victim)
    }));
    for p in server.processors_of(ALICE) {
        assert!(pids_in(&pids_group).contains(&p), "replacement {p} not placed");
    }
}

#[test]
fn cgroups_reload_rewrites_kept_and_removes_dropped_groups() {
    require_root!();
    if !have_v1() {
        return;
    }
    let dir = Dir::new("cgroups_reload_rewrites_kept_and_removes_dropped_groups");
    let w = dir.path();
    sites(w, 0o644);
    let root = root_name("reload");
    let mut server = TestServer::start(&config(w, &root, "pids_max = 50", "pids_max = 40"));
    let alice = v1_dir("pids", &format!("{root}/alice"));
    let bob = v1_dir("pids", &format!("{root}/bob"));
    assert!(bob.join("pids.max").exists());
    // bob keeps its environment but loses its limits; alice's change.
    std::fs::write(
        &server.config_path,
        config(w, &root, "pids_max = 60", "") + "\n[status]\nmetrics_listen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("reload: new generation starting", Duration::from_secs(10))
            .is_some(),
        "{}",
        server.log()
    );
    assert!(
        server.wait_until(Duration::from_secs(15), || !bob.exists()),
        "bob's group is still there:\n{}",
        server.log()
    );
    assert_eq!(
        std::fs::read_to_string(alice.join("pids.max")).unwrap().trim(),
        "60"
    );
    ok(&server, "bob.test", "bob home", "after the reload");
    // At exit the groups go too.
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(20)).is_some());
    assert!(!alice.exists(), "alice's group outlived the server");
}

#[test]
fn cgroups_none_without_limits() {
    require_root!();
    if !have_v1() {
        return;
    }
    let dir = Dir::new("cgroups_none_without_limits");
    let w = dir.path();
    sites(w, 0o644);
    let root = root_name("none");
    let server = TestServer::start(&config(w, &root, "", ""));
    ok(&server, "alice.test", "alice home", "without limits");
    for c in ["memory", "pids", "cpu"] {
        assert!(!v1_dir(c, &root).exists(), "{c}: a tree was made");
    }
    assert!(!server.log().contains("cgroup"), "{}", server.log());
}

#[test]
fn cgroups_check_reports_the_hierarchies() {
    require_root!();
    if !have_v1() {
        return;
    }
    let dir = Dir::new("cgroups_check_reports_the_hierarchies");
    let w = dir.path();
    sites(w, 0o644);
    let path = w.join("check.toml");
    let root = root_name("check");
    std::fs::write(
        &path,
        config(
            w,
            &root,
            "memory_max = \"1G\"\nmemory_high = \"512M\"\npids_max = 10\ncpu_max = 50\nio_weight = 10",
            "",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cgroup v1 /sys/fs/cgroup/memory: memory under "),
        "{stdout}"
    );
    assert!(
        stdout.contains("environment alice: memory (v1), pids (v1), cpu (v1)"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: environment alice: memory_high needs cgroup v2"),
        "{stderr}"
    );
    // bob has no limit: no cgroup line (its private view has its own line).
    assert!(!stdout.contains("environment bob: memory"), "{stdout}");
    assert!(!stdout.contains("environment bob: pids"), "{stdout}");
    // check makes nothing.
    assert!(!v1_dir("pids", &root).exists());
}

#[test]
fn cgroups_a_limit_the_kernel_refuses_stops_the_start() {
    require_root!();
    if !have_v1() {
        return;
    }
    let dir = Dir::new("cgroups_a_limit_the_kernel_refuses_stops_the_start");
    let w = dir.path();
    sites(w, 0o644);
    // v1 refuses a child's CFS quota above its parent's: the tree's root gets half a
    // CPU, alice asks for a whole one.
    let root = root_name("refused");
    let root_dir = v1_dir("cpu", &root);
    std::fs::create_dir(&root_dir).unwrap();
    std::fs::write(root_dir.join("cpu.cfs_quota_us"), "50000").unwrap();
    let result = TestServer::try_start(&config(w, &root, "cpu_max = 100", ""));
    let _ = std::fs::remove_dir(&root_dir);
    let log = match result {
        Ok(server) => panic!(
            "started although alice's cpu_max cannot be applied:\n{}",
            server.log()
        ),
        Err(log) => log,
    };
    assert!(
        log.contains("cpu.cfs_quota_us") && log.contains("100000") && log.contains("EINVAL"),
        "{log}"
    );
    assert!(!root_dir.join("alice").exists());
}
