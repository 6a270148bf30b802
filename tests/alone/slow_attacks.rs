//! Debian's `slowhttptest` against the real server, 30 s per mode: slowloris (`-H`,
//! heads that never end), slow body (`-B`, a POST body trickled) and slow read (`-X`, a
//! response read through a tiny window). Meanwhile a normal client (from another
//! loopback address, 127.0.0.3) asks for a page every 20 ms: every request succeeds
//! and its p99 stays within 2x of the p99 measured unloaded just before and just after
//! (the worse of the two; with a floor of a few ms: 2x of 0.3 ms is noise). These run in
//! the `alone` test binary, so no other test of the suite shares the machine with them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::*;

/// The modes run one at a time (each with its own server): 1,000 attacking sockets
/// and a latency bound do not share a machine with another mode.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Seconds of attack per mode (the issue's 30 s).
const ATTACK_SECS: u64 = 30;
/// New attacking connections per second: 1,000 in the first 10 s.
const RATE: &str = "100";
/// Gap between the normal client's requests.
const GAP: Duration = Duration::from_millis(20);
/// What the loaded p99 may exceed twice the unloaded one by: scheduling noise on a
/// shared machine is a few ms whatever the server does.
const FLOOR: Duration = Duration::from_millis(5);

/// One `GET /` from 127.0.0.3 on a fresh connection: its latency, or why it failed.
fn one_request(addr: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 200") || !text.ends_with("alice home") {
        let why: String = text.chars().take(400).collect();
        return Err(format!("answer: {why:?}"));
    }
    Ok(took)
}

/// Requests every [`GAP`] until `stop`: the latencies and the failures.
fn normal_client(addr: SocketAddr, stop: &AtomicBool) -> (Vec<Duration>, Vec<String>) {
    renice(0);
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::Relaxed) {
        match one_request(addr) {
            Ok(d) => ok.push(d),
            Err(e) => failed.push(e),
        }
        std::thread::sleep(GAP);
    }
    (ok, failed)
}

/// The normal client for `d`.
fn normal_for(addr: SocketAddr, d: Duration) -> (Vec<Duration>, Vec<String>) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| normal_client(addr, &stop));
        std::thread::sleep(d);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    })
}

/// Raises the priority of thread or process `pid` (0: the calling thread): the p99
/// compared is the server's, not that of other work on a shared machine.
fn renice(pid: i32) {
    // SAFETY: setpriority takes plain integers; a failure only leaves the priority.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, -10) };
}

/// Runs slowhttptest with `mode_args` for [`ATTACK_SECS`] against `server` while the
/// normal client runs, and checks the normal client's requests.
fn attack(name: &str, server: &TestServer, tool: &std::path::Path, path: &str, mode_args: &[&str]) {
    let addr = server.addr;
    for pid in std::iter::once(server.pid()).chain(server.all_children()) {
        renice(pid);
    }
    // Warm up (the processor, the page cache), then the unloaded baseline.
    let _ = normal_for(addr, Duration::from_secs(1));
    let (base, base_failed) = normal_for(addr, Duration::from_secs(8));
    assert!(
        base_failed.is_empty(),
        "{name}: unloaded requests failed: {base_failed:?}"
    );
    let before_p99 = p99(&base);

    let url = format!("http://127.0.0.1:{}{path}", addr.port());
    // Niced: what is measured is the server's cost of the slow sockets, not the CPU
    // the attacking tool takes from the normal client on a small machine.
    let mut child = Command::new("nice")
        .args(["-n", "19"])
        .arg(tool)
        .args(mode_args)
        .args(["-c", "1000", "-r", RATE, "-i", "5", "-p", "3", "-v", "1"])
        .args(["-l", &ATTACK_SECS.to_string(), "-u", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("slowhttptest starts");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let client = std::thread::spawn(move || {
        // Let the attack build up before counting.
        std::thread::sleep(Duration::from_secs(2));
        normal_client(addr, &stop2)
    });
    let started = Instant::now();
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = child.wait().expect("slowhttptest ends");
    stop.store(true, Ordering::Relaxed);
    let (loaded, failed) = client.join().unwrap();
    let ran = started.elapsed();
    let loaded_p99 = p99(&loaded);
    // Unloaded again once the attack is over: on a shared machine the noise floor moves
    // over a minute, so the baseline is the worse of the two unloaded p99s.
    std::thread::sleep(Duration::from_secs(1));
    let (after, after_failed) = normal_for(addr, Duration::from_secs(8));
    assert!(
        after_failed.is_empty(),
        "{name}: requests failed after the attack: {after_failed:?}"
    );
    let base_p99 = before_p99.max(p99(&after));
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let worst: Vec<(usize, Duration)> = {
        let mut w: Vec<(usize, Duration)> = loaded.iter().copied().enumerate().collect();
        w.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        w.truncate(8);
        w
    };
    eprintln!(
        "{name}: medians unloaded {:?} loaded {:?}; worst (index, latency) {worst:?}",
        median(&base),
        median(&loaded)
    );
    let bound = (base_p99 * 2).max(base_p99 + FLOOR);
    let summary: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.contains("status")
                || l.contains("closed")
                || l.contains("service available")
                || l.contains("Exit")
        })
        .collect();
    eprintln!(
        "{name}: slowhttptest {status} after {ran:?}; unloaded p99 {before_p99:?} before, {:?} after ({} requests), \
         loaded p99 {loaded_p99:?} ({} requests, bound {bound:?}), {} failed; tool said: {summary:?}",
        p99(&after),
        base.len(),
        loaded.len(),
        failed.len()
    );
    // The attack ran its course, or ended early because the server had closed every
    // one of its connections (slowloris: the per-address cap refuses most at accept
    // and request_head_timeout cuts the rest, so the tool runs out of sockets).
    assert!(
        ran >= Duration::from_secs(ATTACK_SECS - 5) || out.contains("No open connections left"),
        "{name}: slowhttptest ended after {ran:?}: {out}"
    );
    assert!(
        failed.is_empty(),
        "{name}: normal requests failed under attack: {failed:?}"
    );
    assert!(
        loaded.len() > 500,
        "{name}: only {} normal requests",
        loaded.len()
    );
    assert!(
        loaded_p99 <= bound,
        "{name}: loaded p99 {loaded_p99:?} over {bound:?} (unloaded {base_p99:?})"
    );
}

/// The server the three modes attack: alice with a page and a 16 MiB file to read
/// slowly, the default limits but for the head timeout, which stays the default 20 s
/// (the attack lasts 30 s, so slowloris sockets are cut and come back).
fn start(name: &str) -> Option<(Dir, TestServer, std::path::PathBuf)> {
    let tool = require_tool("slowhttptest", "slowhttptest")?;
    let w = Dir::new(name);
    sites(w.path(), 0o600);
    sparse_file(w.path(), "alice/big.bin", 16 << 20, ALICE, 0o600);
    // The slow-body and slow-read sockets are in processors: with the default
    // max_connections_per_processor (1,024; it was 64, and at 4 x 64 the normal client
    // got 503 within seconds) alice's pool holds more than the attack's 1,000.
    let config = two_env_config(w.path(), "").replace("request_head_timeout = 2\n", "");
    let server = TestServer::start(&config);
    Some((w, server, tool))
}

#[test]
fn slowloris_does_not_slow_a_normal_client() {
    require_root!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_w, server, tool)) = start("slowloris_does_not_slow_a_normal_client") else {
        return;
    };
    attack("slowloris", &server, &tool, "/", &["-H", "-x", "24"]);
}

#[test]
fn slow_body_does_not_slow_a_normal_client() {
    require_root!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_w, server, tool)) = start("slow_body_does_not_slow_a_normal_client") else {
        return;
    };
    attack(
        "slow-body",
        &server,
        &tool,
        "/",
        &["-B", "-s", "8192", "-x", "10"],
    );
}

/// Slow read of a 16 MiB file. Its stall (about ten consecutive normal requests taking
/// 0.4-3 s while the slow-read sockets ramped up) was the kernel's TCP memory at
/// `tcp_mem`'s hard limit, each slow socket's send queue filled up to 4 MiB; the
/// listeners' `TCP_NOTSENT_LOWAT` bounds what waits unsent (ARCHITECTURE.md, "Slow
/// clients: slowhttptest"), and the stall is gone. It was ignored while it ran in the
/// `integration` binary: there it missed the 2x p99 bound in about half the runs, by
/// 1-6 ms, from 20-40 ms outliers that came with whichever test ran beside it (the
/// loaded median equalled the unloaded one). Alone it passes on a loaded machine.
#[test]
fn slow_read_does_not_slow_a_normal_client() {
    require_root!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_w, server, tool)) = start("slow_read_does_not_slow_a_normal_client") else {
        return;
    };
    let args = ["-X", "-k", "2", "-w", "512", "-y", "1024", "-n", "5", "-z", "32"];
    attack("slow-read", &server, &tool, "/big.bin", &args);
}
