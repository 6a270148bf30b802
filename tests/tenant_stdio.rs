//! What a child holds of the supervisor's terminal, session and log, read from /proc
//! with the supervisor started on a pty (its controlling terminal and stdout): every
//! child leads its own session without a terminal, none has the supervisor's stdout, a
//! processor's fds 1 and 2 are its environment's log pipe, and what a processor writes
//! there reaches the log marked with its environment, escaped, bounded and rate-limited.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::util::*;

const O_NONBLOCK: u32 = 0o4000;

/// A pty pair: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: plain libc calls on fds this function owns; ptsname_r writes into `name`
    // within its length.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = OwnedFd::from_raw_fd(m);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(s >= 0, "open pty slave: {}", std::io::Error::last_os_error());
        (master, OwnedFd::from_raw_fd(s))
    }
}

/// Starts the server in a session of its own whose controlling terminal is a fresh
/// pty, also its stdout (as from an interactive root shell). Returns the pty master,
/// which must outlive the server.
fn start_on_pty(config: &str) -> (TestServer, OwnedFd) {
    let (master, slave) = pty();
    let server = TestServer::try_start_with(config, move |cmd| {
        cmd.stdout(std::process::Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; fd 1 is the pty slave here
        // (stdio is set up before this runs).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(1, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
    .unwrap_or_else(|log| panic!("not ready:\n{log}"));
    (server, master)
}

/// (session id, tty_nr) from /proc/PID/stat.
fn session(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[3].parse().unwrap(), f[4].parse().unwrap())
}

/// (device, inode) of what `pid`'s `fd` is open on.
fn file_id(pid: i32, fd: i32) -> (u64, u64) {
    let m = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).unwrap();
    (m.dev(), m.ino())
}

fn link(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn children_lead_their_own_sessions_and_hold_no_stdio_of_the_supervisor() {
    require_root!();
    let w = Dir::new("children_lead_their_own_sessions_and_hold_no_stdio_of_the_supervisor");
    sites(w.path(), 0o644);
    // alice without a private view: her replacement below is a spare, which lives in
    // the host's PID namespace and is never given to an environment with a view.
    let config = two_env_config(w.path(), "").replace(
        "[environments.alice]\n",
        "[environments.alice]\nprivate_view = false\n",
    );
    let (server, _master) = start_on_pty(&config);
    let sup = server.pid();
    assert!(server.wait_until(Duration::from_secs(10), || server.spares().len() == 2));
    let (sup_sid, sup_tty) = session(sup);
    assert_eq!(
        sup_sid, sup,
        "the test did not make the supervisor a session leader"
    );
    assert_ne!(sup_tty, 0, "the test did not give the supervisor a terminal");
    let sup_out = file_id(sup, 1);
    assert!(link(sup, 1).starts_with("/dev/pts/"), "{}", link(sup, 1));

    let muxes = server.children("multiplexer");
    let spares = server.spares();
    let (alice, bob) = (server.processors_of(ALICE), server.processors_of(BOB));
    assert_eq!((muxes.len(), spares.len(), alice.len(), bob.len()), (2, 2, 1, 1));
    for p in muxes.iter().chain(&spares).chain(&alice).chain(&bob) {
        let role = cmdline(*p).get(1).cloned().unwrap_or_default();
        let (sid, tty) = session(*p);
        assert_eq!(sid, *p, "{role} {p} does not lead its own session (sid {sid})");
        assert_eq!(tty, 0, "{role} {p} has a controlling terminal ({tty})");
        for fd in [0, 1, 2] {
            assert!(
                !link(*p, fd).starts_with("/dev/pts/"),
                "{role} {p}: fd {fd} is a terminal ({})",
                link(*p, fd)
            );
        }
        assert_ne!(
            file_id(*p, 1),
            sup_out,
            "{role} {p} holds the supervisor's stdout"
        );
    }
    for p in muxes.iter().chain(&spares) {
        assert_eq!(link(*p, 1), "/dev/null", "child {p}: fd 1");
    }
    // A processor's fds 1 and 2: one pipe, its environment's, which the supervisor
    // reads; not the supervisor's stderr.
    let sup_err = file_id(sup, 2);
    let sup_pipes: HashSet<String> = fd_links(sup).into_iter().map(|(_, t)| t).collect();
    let mut env_pipes = Vec::new();
    for p in alice.iter().chain(&bob) {
        let (one, two) = (link(*p, 1), link(*p, 2));
        assert!(two.starts_with("pipe:["), "processor {p}: fd 2 is {two}");
        assert_eq!(one, two, "processor {p}: fds 1 and 2 differ");
        assert_ne!(
            file_id(*p, 2),
            sup_err,
            "processor {p} holds the supervisor's stderr"
        );
        assert!(sup_pipes.contains(&two), "the supervisor does not hold {two}");
        // Non-blocking: a full pipe drops the processor's line instead of hanging it.
        let flags = fd_flags(*p, 2).unwrap();
        assert_ne!(flags & O_NONBLOCK, 0, "processor {p}: fd 2 flags {flags:o}");
        env_pipes.push(two);
    }
    assert_ne!(env_pipes[0], env_pipes[1], "alice and bob share a log pipe");

    // A spare assigned later (alice's processor replaced) gets alice's pipe too.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(alice[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut replacement = Vec::new();
    assert!(
        server.wait_until(Duration::from_secs(5), || {
            replacement = server.processors_of(ALICE);
            replacement.len() == 1 && replacement[0] != alice[0]
        }),
        "alice's processor was not replaced:\n{}",
        server.log()
    );
    let p = replacement[0];
    assert!(
        spares.contains(&p),
        "the replacement {p} was not one of the spares {spares:?}"
    );
    let (sid, tty) = session(p);
    assert_eq!((sid, tty), (p, 0), "processor {p}");
    assert_eq!(link(p, 1), env_pipes[0], "processor {p}: fd 1");
    assert_eq!(link(p, 2), env_pipes[0], "processor {p}: fd 2");
}

/// Opens `pid`'s fd 2 for writing, as root through /proc (a new, blocking open of the
/// same pipe).
fn open_stderr(pid: i32) -> std::fs::File {
    OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/fd/2"))
        .unwrap()
}

#[test]
fn a_processor_line_is_logged_escaped_and_marked_with_its_environment() {
    require_root!();
    let w = Dir::new("a_processor_line_is_logged_escaped_and_marked_with_its_environment");
    sites(w.path(), 0o644);
    let server = TestServer::start(&two_env_config(w.path(), ""));
    // The processor's own log lines come through its pipe, marked, still readable.
    let serving = server
        .wait_for_log_line(Duration::from_secs(5), |l| {
            l.contains("processor serving") && l.contains("environment=bob")
        })
        .unwrap_or_else(|| panic!("{}", server.log()));
    assert!(serving.contains("tenant{environment=bob}: "), "{serving}");

    let alice = server.processors_of(ALICE)[0];
    let mut f = open_stderr(alice);
    f.write_all(b"INFO supervisor: stopped \x1b[2Jwiped\rover\n")
        .unwrap();
    let line = server
        .wait_for_log_line(Duration::from_secs(5), |l| l.contains("INFO supervisor: stopped"))
        .unwrap_or_else(|| panic!("the line never reached the log:\n{}", server.log()));
    // The supervisor's own lines carry `bulkhead{role=supervisor}:`; a tenant's line is
    // inside that, marked with its environment.
    assert!(
        line.contains(r"WARN bulkhead{role=supervisor}:tenant{environment=alice}: INFO supervisor: stopped \u{1b}[2Jwiped\rover"),
        "{line}"
    );
    let raw = server.log();
    assert!(!raw.contains("\x1b[2J") && !raw.contains("wiped\r"), "{raw}");
}

fn rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS").map(|v| first_num(&v) as u64).unwrap()
}

#[test]
fn a_flood_or_a_huge_line_costs_the_supervisor_bounded_memory() {
    require_root!();
    let w = Dir::new("a_flood_or_a_huge_line_costs_the_supervisor_bounded_memory");
    sites(w.path(), 0o644);
    let server = TestServer::start(&two_env_config(w.path(), ""));
    let before = rss_kib(server.pid());
    let alice = server.processors_of(ALICE)[0];
    let mut f = open_stderr(alice);
    let started = Instant::now();
    let mut huge = vec![b'h'; 1 << 20];
    huge.push(b'\n');
    f.write_all(&huge).unwrap();
    let mut flood = Vec::new();
    for i in 0..100_000 {
        writeln!(flood, "flood {i}").unwrap();
    }
    f.write_all(&flood).unwrap();
    drop(f);
    let summary = server
        .wait_for_log_line(Duration::from_secs(15), |l| {
            l.contains("lines of processor output dropped")
        })
        .unwrap_or_else(|| panic!("no drop summary:\n{}", tail(&server.log())));
    assert!(summary.contains("environment alice"), "{summary}");
    let cut = server
        .wait_for_log_line(Duration::from_secs(5), |l| l.contains("[line cut: "))
        .unwrap();
    assert!(cut.contains("tenant{environment=alice}: hhhh"), "{}", &cut[..200]);
    assert!(cut.len() < 4096, "a cut line of {} bytes", cut.len());
    // Everything was read (the writes returned); what was logged is bounded by the rate.
    let logged = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("tenant{environment=alice}: flood "))
        .count();
    let secs = started.elapsed().as_secs_f64() + 1.0;
    assert!(
        logged as f64 <= 200.0 + 50.0 * secs,
        "{logged} flood lines logged in {secs:.1}s"
    );
    let after = rss_kib(server.pid());
    assert!(
        after < before + 8 * 1024,
        "supervisor RSS grew from {before} KiB to {after} KiB"
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
