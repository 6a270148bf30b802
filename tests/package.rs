//! The Debian package: `deploy/deb/build` makes the .deb (cargo-deb, from the very
//! binary the tests run: dev profile, not rebuilt), a clean Debian 12 root from
//! `mmdebstrap` (its tarball cached under /var/cache/bulkhead-test/), the package
//! installed there with apt, its unit's commands run there (ExecStartPre's check
//! through chroot, then ExecStart in a mount namespace pivoted to that root, where the
//! private views work as on a booted system), the default site fetched over HTTP, the
//! server stopped, the package purged, and nothing of it left but the `bulkhead`
//! system user (kept, as Debian policy advises).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::*;

const CACHE: &str = "/var/cache/bulkhead-test";
const SUITE: &str = "bookworm";

fn progress(start: Instant, what: &str) {
    eprintln!("package test [{:>5.1} s] {what}", start.elapsed().as_secs_f64());
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The cached base tarball (made by mmdebstrap once, atomically renamed into place).
fn base_tarball(mmdebstrap: &Path) -> PathBuf {
    let tar = Path::new(CACHE).join(format!("{SUITE}-apt.tar"));
    if !tar.exists() {
        std::fs::create_dir_all(CACHE).unwrap();
        let tmp = Path::new(CACHE).join(format!(".{SUITE}-apt.{}.tar", std::process::id()));
        run(Command::new(mmdebstrap)
            .args(["--variant=apt", "--format=tar", "--quiet", SUITE])
            .arg(&tmp));
        std::fs::rename(&tmp, &tar).unwrap();
    }
    tar
}

/// The chroot made a mount point of its own (as `/` is on a booted system: the private
/// views remount it), with /proc and /dev, for as long as this lives.
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn new(root: &Path) -> Mounts {
        run(Command::new("mount").arg("--bind").arg(root).arg(root));
        let mut m = Mounts(vec![root.to_path_buf()]);
        let proc_ = root.join("proc");
        let dev = root.join("dev");
        run(Command::new("mount").args(["-t", "proc", "proc"]).arg(&proc_));
        m.0.push(proc_);
        run(Command::new("mount").arg("--bind").arg("/dev").arg(&dev));
        m.0.push(dev);
        m
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

/// Every path under `root` (not /proc, /dev, /run, /tmp, apt's and dpkg's own books).
fn tree(root: &Path) -> BTreeSet<String> {
    const SKIP: &[&str] = &[
        "/proc",
        "/dev",
        "/sys",
        "/run",
        "/tmp",
        "/var/lib/dpkg",
        "/var/lib/apt",
        "/var/cache/apt",
        "/var/cache/debconf",
        "/var/cache/ldconfig",
        "/var/log",
        "/etc/ld.so.cache",
    ];
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = format!("/{}", path.strip_prefix(root).unwrap().display());
            if SKIP.contains(&rel.as_str()) {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
            out.insert(rel);
        }
    }
    out
}

/// The files that belong to the base system's user database (changed by useradd).
fn user_db(p: &str) -> bool {
    [
        "/etc/passwd-",
        "/etc/group-",
        "/etc/shadow-",
        "/etc/gshadow-",
        "/etc/subuid",
        "/etc/subgid",
    ]
    .iter()
    .any(|f| p.starts_with(f))
}

#[test]
fn package_installs_serves_and_purges_in_a_clean_debian_root() {
    require_root!();
    let Some(mmdebstrap) = require_tool("mmdebstrap", "mmdebstrap") else {
        return;
    };
    let start = Instant::now();
    let dir = Dir::new("package_installs_serves_and_purges_in_a_clean_debian_root");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();

    progress(start, "building the .deb (deploy/deb/build, dev profile)");
    // --fast: cargo-deb's quicker compression (the test's package is thrown away).
    let deb = run(
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/deb/build"))
            .arg("--fast")
            .env("BULKHEAD_DEB_PROFILE", "dev")
            .env("BULKHEAD_DEB_NO_BUILD", "1"),
    );
    let deb = PathBuf::from(deb.trim().lines().last().unwrap());
    assert!(deb.exists(), "{}", deb.display());
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for want in [
        "./usr/bin/bulkhead",
        "./etc/bulkhead/bulkhead.toml",
        "./lib/systemd/system/bulkhead.service",
        "./etc/logrotate.d/bulkhead",
        "./usr/lib/sysusers.d/bulkhead.conf",
        "./usr/share/man/man1/bulkhead.1.gz",
        "./usr/share/man/man1/bulkhead-status.1.gz",
    ] {
        assert!(listing.contains(want), "{want} not in the package:\n{listing}");
    }
    let ctrl = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&ctrl));
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap_or_default();
    assert!(
        conffiles.contains("/etc/bulkhead/bulkhead.toml"),
        "conffiles: {conffiles}"
    );

    progress(start, "the Debian 12 base root (mmdebstrap, cached)");
    let tar = base_tarball(&mmdebstrap);
    run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&root));
    let before = tree(&root);
    let mounts = Mounts::new(&root);
    let chroot = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg(&root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    };

    progress(start, "installing with apt-get");
    std::fs::copy(&deb, root.join("tmp/bulkhead.deb")).unwrap();
    run(&mut chroot(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "/tmp/bulkhead.deb",
    ]));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("bulkhead:")),
        "no bulkhead user:\n{passwd}"
    );
    assert!(root.join("var/www/bulkhead/index.html").exists());

    // Ports free on this machine, in place of 80 and 9180 (the conffile edited, as an
    // admin would).
    let port = free_port();
    let conf_path = root.join("etc/bulkhead/bulkhead.toml");
    let conf = std::fs::read_to_string(&conf_path)
        .unwrap()
        .replace(
            "listen = [\"0.0.0.0:80\", \"[::]:80\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace("127.0.0.1:9180", &format!("127.0.0.1:{}", free_port()));
    std::fs::write(&conf_path, conf).unwrap();

    progress(
        start,
        "starting it as the unit would (ExecStartPre, then ExecStart)",
    );
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/bulkhead.service")).unwrap();
    let exec = |key: &str| -> Vec<String> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"));
        line.split_whitespace().map(str::to_owned).collect()
    };
    // RuntimeDirectory=bulkhead
    std::fs::create_dir_all(root.join("run/bulkhead")).unwrap();
    let pre = exec("ExecStartPre=");
    let pre: Vec<&str> = pre.iter().map(String::as_str).collect();
    run(&mut chroot(&pre));
    let main = exec("ExecStart=");
    let main: Vec<&str> = main.iter().map(String::as_str).collect();
    let log_path = dir.path().join("serve.log");
    // Not plain chroot: a processor joining its environment's mount namespace gets
    // that namespace's root, which must be this root (as `/` is on a booted system).
    // So a mount namespace of its own with this root pivoted to, then ExecStart (the
    // old root stays on /tmp/.oldroot there, under every view's private /tmp: the base
    // system has no umount; it goes with the namespace).
    let mut serve = Command::new("unshare");
    serve
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "cd \"$0\" && mkdir -p tmp/.oldroot && pivot_root . tmp/.oldroot && \
             exec chroot . \"$@\"",
        )
        .arg(&root)
        .args(&main)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let mut child = serve
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut exited = None;
    let page = poll(Duration::from_secs(30), || {
        exited = child.try_wait().unwrap();
        if exited.is_some() {
            return Some(None);
        }
        std::net::TcpStream::connect(addr).ok()?;
        let r = get(addr, "localhost", "/");
        (r.status == 200).then(|| Some(r.text()))
    });
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let page = page
        .flatten()
        .unwrap_or_else(|| panic!("the default site did not answer (exit {exited:?}):\n{}", log()));
    assert!(page.contains("<h1>bulkhead works</h1>"), "{page}");
    progress(start, "the default site answered; stopping (SIGTERM)");
    // The line is written once the answer is sent.
    let access_log = root.join("var/log/bulkhead/access.log");
    let logged = poll(Duration::from_secs(5), || {
        let access = std::fs::read_to_string(&access_log).unwrap_or_default();
        access.contains("\"GET / HTTP/1.1\" 200").then_some(())
    });
    assert!(
        logged.is_some(),
        "access log: {:?}\n{}",
        std::fs::read_to_string(&access_log),
        log()
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}:\n{}", log());

    let _ = std::fs::remove_dir(root.join("tmp/.oldroot"));
    progress(start, "purging");
    run(&mut chroot(&["apt-get", "purge", "-y", "-q", "bulkhead"]));
    // Unknown to dpkg (exit 1), or known as not installed with no config left.
    let q = chroot(&["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "bulkhead"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&q.stdout).trim().to_owned();
    assert!(
        q.status.code() == Some(1) || status.starts_with("un"),
        "dpkg status after the purge: {status:?}"
    );
    std::fs::remove_file(root.join("tmp/bulkhead.deb")).unwrap();
    drop(mounts);
    let after = tree(&root);
    let left: Vec<&String> = after.difference(&before).filter(|p| !user_db(p)).collect();
    let gone: Vec<&String> = before.difference(&after).collect();
    assert!(
        left.is_empty() && gone.is_empty(),
        "left after the purge: {left:?}; gone that was there before: {gone:?}"
    );
    assert!(!root.join("var/log/bulkhead").exists() && !root.join("etc/bulkhead").exists());
    // The system user stays (policy); nothing carries its uid.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let uid: u32 = passwd
        .lines()
        .find_map(|l| l.strip_prefix("bulkhead:"))
        .and_then(|l| l.split(':').nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no bulkhead user after the purge:\n{passwd}"));
    use std::os::unix::fs::MetadataExt;
    let owned: Vec<&String> = after
        .iter()
        .filter(|p| {
            std::fs::symlink_metadata(root.join(p.trim_start_matches('/'))).is_ok_and(|m| m.uid() == uid)
        })
        .collect();
    assert!(owned.is_empty(), "owned by the bulkhead user ({uid}): {owned:?}");
    progress(start, "purged: nothing left but the bulkhead system user");
}
