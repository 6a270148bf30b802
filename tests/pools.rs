//! Pools that size themselves (issue 5): an environment scaled to zero starts a
//! processor for its first request and goes back to zero after `idle_timeout`; a
//! saturated environment answers 503 within the wait its availability allows, its
//! availability falls and recovers step by step, one warning per episode, while another
//! environment stays fast; `expire_timeout` kills a processor stuck in one request;
//! `max_requests_per_child` recycles without failing a request; spares are spawned at
//! prefork's rate, one tick apart.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::*;

const BIG: u64 = 64 << 20;

/// The standard sites and this module's own files.
fn files(w: &Path) {
    sites(w, 0o600);
    sparse_file(w, "alice/big.bin", BIG, ALICE, 0o600);
}

fn timed_get(addr: SocketAddr, host: &str) -> (Response, Duration) {
    let t = Instant::now();
    let r = get(addr, host, "/");
    (r, t.elapsed())
}

/// `n` GETs of bob.test, each on a new connection; their latencies (all must be 200).
fn bob_latencies(server: &TestServer, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let (r, d) = timed_get(server.addr, "bob.test");
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "bob home"),
                "bob request {i}"
            );
            d
        })
        .collect()
}

fn stop(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
}

fn cont(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
}

/// SIGCONTs a stopped processor even when an assertion fails, so the server can stop.
struct Stopped(i32);

impl Drop for Stopped {
    fn drop(&mut self) {
        cont(self.0);
    }
}

/// Occupies alice's only processor (`max_processors = 1`, one connection each) with a
/// stalled download and SIGSTOPs it; waits until the status page shows it busy.
fn saturate_alice(server: &TestServer) -> (TcpStream, Stopped) {
    let procs = server.processors_of(ALICE);
    assert_eq!(procs.len(), 1, "alice's pool: {procs:?}");
    let download = stalled_download(server.addr, "alice.test", "/big.bin");
    let busy = server.wait_until(Duration::from_secs(5), || {
        env_stat(server.addr, "alice", "active_conns") == 1
    });
    assert!(busy, "alice's processor never showed the download");
    stop(procs[0]);
    (download, Stopped(procs[0]))
}

/// Ends a saturation: SIGCONT, drop the download, wait until alice's processor is free.
fn release_alice(server: &TestServer, download: TcpStream, stopped: Stopped) {
    drop(stopped);
    drop(download);
    let free = server.wait_until(Duration::from_secs(5), || {
        env_stat(server.addr, "alice", "active_conns") == 0
    });
    assert!(
        free,
        "alice's processor still busy after SIGCONT:\n{}",
        server.log()
    );
}

#[test]
fn scale_to_zero_starts_on_demand_and_stops_when_idle() {
    require_root!();
    let w = Dir::new("scale_to_zero_starts_on_demand_and_stops_when_idle");
    files(w.path());
    let server = TestServer::start(&pools_config(
        w.path(),
        "",
        "min_processors = 0\nstart_processors = 0\nmax_processors = 4\nidle_timeout = 2",
        "min_processors = 1",
        "",
    ));
    assert!(
        server.processors_of(ALICE).is_empty(),
        "alice has processors before any request: {:?}",
        server.processors_of(ALICE)
    );
    assert_eq!(server.processors_of(BOB).len(), 1);

    // The first request starts a processor (a spare, assigned) and is served by it.
    let (r, cold) = timed_get(server.addr, "alice.test");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "alice home"),
        "{}",
        server.log()
    );
    let first = server.processors_of(ALICE);
    assert!(!first.is_empty(), "served, but no alice processor");
    eprintln!("cold start: {cold:?}, alice processors {first:?}");
    assert!(
        env_stat(server.addr, "alice", "cold_starts") >= 1,
        "no cold start counted"
    );

    // idle_timeout (2 s; the tick is 1 s): back to zero.
    let gone = server.wait_until(Duration::from_secs(8), || server.processors_of(ALICE).is_empty());
    assert!(
        gone,
        "alice still has processors {:?} after idle_timeout\n{}",
        server.processors_of(ALICE),
        server.log()
    );
    assert_eq!(
        server.processors_of(BOB).len(),
        1,
        "bob's minimum was retired too"
    );

    // And it scales up from zero again.
    ok(&server, "alice.test", "alice home", "second cold start");
}

#[test]
fn saturated_environment_gets_503_within_its_wait_and_others_stay_fast() {
    require_root!();
    let w = Dir::new("saturated_environment_gets_503_within_its_wait_and_others_stay_fast");
    files(w.path());
    let server = TestServer::start(&pools_config(
        w.path(),
        "processor_wait_timeout = [1, 4]",
        "min_processors = 1\nmax_processors = 1\nmax_connections_per_processor = 1",
        "min_processors = 1\nmax_processors = 4",
        "",
    ));
    ok(&server, "alice.test", "alice home", "before saturation");
    // Warm up, then bob's unloaded latency.
    bob_latencies(&server, 20);
    let unloaded = p99(&bob_latencies(&server, 200));

    let (download, stopped) = saturate_alice(&server);
    assert_eq!(env_stat(server.addr, "alice", "availability"), 100);

    // A's requests, in a thread, while bob is measured here.
    let addr = server.addr;
    let a = std::thread::spawn(move || {
        let mut out = Vec::new();
        for _ in 0..6 {
            let (r, d) = timed_get(addr, "alice.test");
            let snap = scoreboard_json(addr);
            let row = env_row(&snap, "alice");
            out.push((
                r.status,
                r.header("retry-after").map(str::to_string),
                d,
                row["availability"].as_u64(),
                row["dropped_saturated"].as_u64(),
            ));
        }
        out
    });
    let mut loaded = Vec::new();
    while !a.is_finished() || loaded.len() < 200 {
        loaded.extend(bob_latencies(&server, 10));
    }
    let a = a.join().unwrap();
    eprintln!("alice while saturated (status, retry-after, took, availability, drops): {a:?}");

    // Availability before each request: 100, 75, 50, 25, 0, 0. The wait is at most
    // availability/100 × 1 s (plus scheduling slack), and Peruser's wait is the whole
    // of it when nothing frees up, so at least 80% of it.
    let before = [100u64, 75, 50, 25, 0, 0];
    // Waits shorter than that are collected and asserted last, so the rest is checked.
    let mut short = Vec::new();
    for (i, ((status, retry, took, avail, drops), was)) in a.iter().zip(before).enumerate() {
        assert_eq!(*status, 503, "request {i} to saturated alice\n{}", server.log());
        assert!(retry.is_some(), "request {i}: 503 without Retry-After");
        let wait = Duration::from_millis(10 * was);
        if was == 0 {
            assert!(
                *took < Duration::from_millis(200),
                "request {i} at availability 0 took {took:?}, expected an immediate refusal"
            );
        } else {
            assert!(
                *took < wait + Duration::from_millis(500),
                "request {i} at availability {was} took {took:?}, expected at most about {wait:?}"
            );
            if *took < wait.mul_f64(0.8) {
                short.push(format!(
                    "request {i} at availability {was} waited {took:?}, expected {wait:?}"
                ));
            }
        }
        // Never slower than the one before (strictly faster follows from the bounds).
        assert!(
            i == 0 || *took < a[i - 1].2 + Duration::from_millis(50),
            "request {i} slower than request {}",
            i - 1
        );
        assert_eq!(
            *avail,
            Some(was.saturating_sub(25)),
            "availability after request {i}"
        );
        assert_eq!(*drops, Some(i as u64 + 1), "dropped_saturated after request {i}");
    }
    assert!(
        a[0].2 < Duration::from_millis(1500),
        "first refusal took {:?}",
        a[0].2
    );

    // Bob meanwhile: a multiplexer blocked by alice's wait would hold bob's requests
    // for a wait slice (250 ms) or the whole wait (1 s); a p99 under 150 ms proves
    // none was, with room for a shared, loaded machine, where a few ms of preemption
    // would break any bound relative to the unloaded p99 of about 1 ms.
    let loaded_p99 = p99(&loaded);
    eprintln!(
        "bob p99: unloaded {unloaded:?}, during alice's saturation {loaded_p99:?} ({} requests)",
        loaded.len()
    );
    assert!(
        loaded_p99 < Duration::from_millis(150),
        "bob slowed down while alice was saturated: p99 {loaded_p99:?} vs unloaded {unloaded:?}"
    );
    assert_eq!(env_stat(server.addr, "bob", "availability"), 100);
    assert_eq!(env_stat(server.addr, "bob", "dropped_saturated"), 0);

    // SIGCONT: alice recovers; each unsaturated pass raises availability by 25.
    release_alice(&server, download, stopped);
    let mut rising = Vec::new();
    for _ in 0..5 {
        ok(&server, "alice.test", "alice home", "after SIGCONT");
        rising.push(env_stat(server.addr, "alice", "availability"));
    }
    if rising != [25, 50, 75, 100, 100] {
        short.push(format!(
            "availability after each of 5 requests served after SIGCONT: {rising:?}, expected [25, 50, 75, 100, 100]"
        ));
    } else {
        assert!(
            server
                .wait_for_log("availability back to 100%", Duration::from_secs(2))
                .is_some(),
            "no recovery logged\n{}",
            server.log()
        );
    }
    assert!(
        short.is_empty(),
        "availability is not applied as specified: {short:#?}"
    );
}

#[test]
fn one_saturation_warning_per_episode() {
    require_root!();
    let w = Dir::new("one_saturation_warning_per_episode");
    files(w.path());
    let server = TestServer::start(&pools_config(
        w.path(),
        // 2 steps: refusals after 1 s, 0.5 s, then at once.
        "processor_wait_timeout = [1, 2]",
        "min_processors = 1\nmax_processors = 1\nmax_connections_per_processor = 1",
        "",
        "",
    ));
    const WARNING: &str = "environment saturated: dropping requests with 503";
    let count = || server.log_lines().iter().filter(|l| l.contains(WARNING)).count();

    let (download, stopped) = saturate_alice(&server);
    for i in 0..4 {
        let r = get(server.addr, "alice.test", "/");
        assert_eq!(r.status, 503, "request {i} to saturated alice");
    }
    assert_eq!(env_stat(server.addr, "alice", "dropped_saturated"), 4);
    let line = server
        .wait_for_log_line(Duration::from_secs(2), |l| l.contains(WARNING))
        .expect("no saturation warning");
    // The fields, not the message (which always says "max_processors").
    assert!(
        line.contains("environment=alice") && line.contains("max_processors=1 "),
        "the warning names the environment and its max_processors: {line}"
    );
    assert_eq!(count(), 1, "one warning for 4 refusals\n{}", server.log());

    // Recovery: served requests raise availability back to 100 (two of them, 0 → 50
    // → 100, as specified; up to 100 are allowed here, so that this test is about the
    // warning, not about the rise, which the saturation test checks), then a second
    // episode.
    release_alice(&server, download, stopped);
    let mut served = 0;
    while env_stat(server.addr, "alice", "availability") < 100 && served < 100 {
        ok(&server, "alice.test", "alice home", "recovering");
        served += 1;
    }
    assert_eq!(
        env_stat(server.addr, "alice", "availability"),
        100,
        "no recovery after {served} served requests"
    );
    assert!(
        server
            .wait_for_log("availability back to 100%", Duration::from_secs(2))
            .is_some(),
        "no recovery logged"
    );
    let (download, stopped) = saturate_alice(&server);
    for i in 0..3 {
        let r = get(server.addr, "alice.test", "/");
        assert_eq!(r.status, 503, "second episode, request {i}");
    }
    assert!(
        server
            .wait_for_log_count(WARNING, 2, Duration::from_secs(2))
            .is_some(),
        "no warning for the second episode\n{}",
        server.log()
    );
    assert_eq!(count(), 2, "one warning per episode\n{}", server.log());
    release_alice(&server, download, stopped);
}

#[test]
fn expire_timeout_kills_a_processor_stuck_in_one_request() {
    require_root!();
    let w = Dir::new("expire_timeout_kills_a_processor_stuck_in_one_request");
    files(w.path());
    let server = TestServer::start(&pools_config(
        w.path(),
        "",
        "min_processors = 1\nmax_processors = 2\nexpire_timeout = 2",
        "",
        "",
    ));
    ok(&server, "alice.test", "alice home", "before");
    let procs = server.processors_of(ALICE);
    assert_eq!(procs.len(), 1, "{procs:?}");
    let victim = procs[0];
    let download = stalled_download(server.addr, "alice.test", "/big.bin");
    let started = Instant::now();
    stop(victim);
    let _guard = Stopped(victim);
    let line = server.wait_for_log_line(Duration::from_secs(6), |l| {
        l.contains("busy on one request longer than expire_timeout") && l.contains(&format!("pid={victim}"))
    });
    assert!(
        line.is_some(),
        "stuck processor {victim} not killed\n{}",
        server.log()
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "killed after {took:?}, expire_timeout is 2 s"
    );
    assert!(
        server.wait_until(Duration::from_secs(3), || !alive(victim)),
        "{victim} still alive"
    );
    drop(download);
    ok(
        &server,
        "alice.test",
        "alice home",
        "after the stuck processor was killed",
    );
    let now = server.processors_of(ALICE);
    assert!(
        !now.is_empty() && !now.contains(&victim),
        "alice's pool after the kill: {now:?}"
    );
}

#[test]
fn max_requests_per_child_recycles_without_a_failed_request() {
    require_root!();
    let w = Dir::new("max_requests_per_child_recycles_without_a_failed_request");
    files(w.path());
    let server = TestServer::start(&pools_config(
        w.path(),
        "",
        "min_processors = 1\nmax_processors = 2\nmax_requests_per_child = 5",
        "",
        "",
    ));
    let mut pids = BTreeSet::new();
    let mut failures = Vec::new();

    // New connection per request.
    for i in 0..40 {
        let mut s = connect(server.addr);
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        match read_response(&mut s, false) {
            Some(r) if r.status == 200 && r.body == b"alice home" => {}
            other => failures.push(format!("new connection {i}: {other:?}")),
        }
        pids.extend(server.processors_of(ALICE));
    }

    // Keep-alive: reconnect only after a response that says `Connection: close`.
    let mut conn: Option<TcpStream> = None;
    let mut connections = 0;
    for i in 0..40 {
        let s = conn.get_or_insert_with(|| {
            connections += 1;
            connect(server.addr)
        });
        match get_on(s, "alice.test", "/") {
            Some(r) if r.status == 200 && r.body == b"alice home" => {
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    conn = None;
                }
            }
            other => {
                failures.push(format!("keep-alive request {i}: {other:?}"));
                conn = None;
            }
        }
        pids.extend(server.processors_of(ALICE));
    }
    assert!(
        failures.is_empty(),
        "failed requests while recycling: {failures:#?}\n{}",
        server.log()
    );
    eprintln!("keep-alive client used {connections} connections; alice pids {pids:?}");
    assert!(pids.len() >= 3, "processors were not recycled: {pids:?}");
    assert!(
        server
            .log_lines()
            .iter()
            .filter(|l| l.contains("max_requests_per_child reached"))
            .count()
            >= 2,
        "no recycling logged\n{}",
        server.log()
    );
}

/// Drives one keep-alive connection to alice (whose pool is one processor, recycled
/// after `MAX` requests; `fastcgi` gives the environment a FastCGI table) until the
/// answer that closes it. Returns the request that saw alice's successor running
/// beside the first processor (`None`: never), the request whose answer closed the
/// connection, and whether a processor other than the first ran right after it.
fn recycle_on_one_connection(test: &str, fastcgi: bool) -> (Option<usize>, usize, bool) {
    let w = Dir::new(test);
    files(w.path());
    let table = if fastcgi {
        "\n[environments.alice.fastcgi]\ncommand = [\"/bin/false\"]\nextensions = [\".php\"]"
    } else {
        ""
    };
    let server = TestServer::start(&pools_config(
        w.path(),
        "keep_alive_max_requests = 0",
        &format!("min_processors = 1\nmax_processors = 3\nmax_requests_per_child = {MAX}{table}"),
        "",
        "",
    ));
    assert!(server.wait_until(Duration::from_secs(5), || server.processors_of(ALICE).len() == 1));
    let first = server.processors_of(ALICE)[0];
    let mut s = connect(server.addr);
    s.set_nodelay(true).unwrap();
    let mut successor_at = None;
    // At its limit a processor stops taking connections and answers each one's next
    // request with `Connection: close`: here request MAX + 1.
    for i in 1..=MAX + 1 {
        let r = get_on(&mut s, "alice.test", "/");
        assert!(
            r.as_ref()
                .is_some_and(|r| r.status == 200 && r.body == b"alice home"),
            "request {i}: {r:?}\n{}",
            server.log()
        );
        let closes = r
            .and_then(|r| r.header("connection").map(|v| v.eq_ignore_ascii_case("close")))
            .unwrap_or(false);
        if i == MAX - 1 {
            // The successor was asked for by now (the end is within the lead at any
            // rate above 40 requests a second): give it time to start on a loaded host.
            std::thread::sleep(Duration::from_millis(500));
        }
        if closes {
            let others = server.processors_of(ALICE).iter().any(|p| *p != first);
            drop(s);
            // The first goes; its successor serves; nothing else is started.
            assert!(
                server.wait_until(Duration::from_secs(10), || !server
                    .processors_of(ALICE)
                    .contains(&first)),
                "the first processor did not exit\n{}",
                server.log()
            );
            let r = get(server.addr, "alice.test", "/");
            assert_eq!(r.status, 200);
            assert_eq!(server.processors_of(ALICE).len(), 1, "{}", server.log());
            return (successor_at, i, others);
        }
        // A look at the process table every 10 requests, each from the last 50 (a look
        // costs more than a request, and the processor paces its request from its rate).
        if successor_at.is_some() || (i % 10 != 0 && i < MAX - 50) {
            continue;
        }
        let pool = server.processors_of(ALICE);
        if pool.contains(&first) && pool.len() == 2 {
            successor_at = Some(i);
        }
    }
    panic!("no Connection: close in {} requests\n{}", MAX + 1, server.log());
}

const MAX: usize = 400;

/// A busy processor asks for its successor before it reaches `max_requests_per_child`
/// (from half its life, once its end is within the lead at its rate), so the
/// successor is up while it still serves, and its clients never wait for a cold start.
/// Serving static files only, it serves on to its limit.
#[test]
fn a_busy_processor_has_its_successor_running_before_it_recycles() {
    require_root!();
    let (at, closed, others) = recycle_on_one_connection(
        "a_busy_processor_has_its_successor_running_before_it_recycles",
        false,
    );
    eprintln!("successor running after request {at:?}; closed at {closed} of {MAX}");
    let at = at.expect("no successor while the first processor served");
    assert!(
        at >= MAX / 2,
        "successor after request {at} of {MAX}: before half its life"
    );
    assert_eq!(closed, MAX + 1, "a static-only processor serves to its limit");
    assert!(others, "no successor running at the last answer");
}

/// With FastCGI, two processors side by side keep no backend connections, so a
/// recycling processor goes as soon as its successor runs: its connection is closed
/// before the limit, and the successor is already running then.
#[test]
fn a_busy_fastcgi_processor_hands_over_once_its_successor_runs() {
    require_root!();
    let (at, closed, others) = recycle_on_one_connection(
        "a_busy_fastcgi_processor_hands_over_once_its_successor_runs",
        true,
    );
    eprintln!("successor running after request {at:?}; closed at {closed} of {MAX}");
    assert!(
        (MAX / 2..=MAX).contains(&closed),
        "closed at request {closed} of {MAX}: expected after half its life, before its limit"
    );
    assert!(
        others,
        "no successor running when the first let its connection go"
    );
}

#[test]
fn spares_are_spawned_at_the_prefork_rate() {
    require_root!();
    let w = Dir::new("spares_are_spawned_at_the_prefork_rate");
    files(w.path());
    let server = TestServer::start(&pools_config(
        w.path(),
        "server_limit = 64",
        "min_processors = 0\nstart_processors = 0\nmax_processors = 40\nmin_spare_processors = 20",
        "",
        "",
    ));
    let is_alice_spawn = |l: &str| l.contains("spawning processors") && l.contains("environment=alice");
    let fourth = server.wait_for_log_line(Duration::from_secs(8), |l| {
        is_alice_spawn(l) && l.contains("spawned=8")
    });
    let spawned: Vec<u32> = server
        .log_lines()
        .iter()
        .filter(|l| is_alice_spawn(l))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("spawned="))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    assert!(
        fourth.is_some(),
        "spawn counts so far {spawned:?}\n{}",
        server.log()
    );
    assert_eq!(
        &spawned[..4],
        &[1, 2, 4, 8],
        "spawn counts per tick: {spawned:?}\n{}",
        server.log()
    );
    // One count per tick: the lines' timestamps are a second apart (the tick is 1 s;
    // a late tick only delays the next one).
    let stamps: Vec<f64> = server
        .log_lines()
        .iter()
        .filter(|l| is_alice_spawn(l))
        .take(4)
        .map(|l| log_time(l).unwrap_or_else(|| panic!("no timestamp: {l}")))
        .collect();
    for pair in stamps.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (0.8..2.5).contains(&gap),
            "spawn lines {gap:.3} s apart, expected one tick (1 s): {stamps:?}\n{}",
            server.log()
        );
    }
    // They are real processors of alice's (started ones count as idle spares).
    assert!(
        server.wait_until(Duration::from_secs(5), || server.processors_of(ALICE).len() >= 15),
        "alice has {} processors",
        server.processors_of(ALICE).len()
    );
}

#[test]
fn multiplexers_grow_under_load_and_extra_ones_stop_when_idle() {
    require_root!();
    let w = Dir::new("multiplexers_grow_under_load_and_extra_ones_stop_when_idle");
    put(w.path(), "alice/index.html", b"alice home", ALICE, 0o644);
    put(w.path(), "bob/index.html", b"bob home", BOB, 0o644);
    let config = two_env_config(
        w.path(),
        // 300 half heads from one address: over max_connections_per_ip's default.
        "max_multiplexers = 2\nmultiplexer_idle_timeout = 1\nrequest_head_timeout = 20\nmax_connections_per_ip = 0",
    )
    .replace("min_multiplexers = 2", "min_multiplexers = 1")
    .replace("request_head_timeout = 2\n", "");
    let server = TestServer::start(&config);
    assert_eq!(server.children("multiplexer").len(), 1);
    // 300 connections each holding half a head: the one multiplexer works on all.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = connect(server.addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost: alice").unwrap();
        held.push(s);
    }
    assert!(
        server.wait_until(Duration::from_secs(5), || server.children("multiplexer").len()
            == 2),
        "no second multiplexer under load:\n{}",
        server.log()
    );
    assert!(server
        .wait_for_log("every multiplexer is loaded", Duration::from_secs(1))
        .is_some());
    // Finish every head: all are served, then the extra multiplexer idles and stops.
    for s in &mut held {
        s.write_all(b".test\r\nConnection: close\r\n\r\n").unwrap();
    }
    for s in &mut held {
        let r = read_response(s, false).expect("a response");
        assert_eq!(r.status, 200);
    }
    drop(held);
    assert!(
        server.wait_until(Duration::from_secs(8), || server.children("multiplexer").len()
            == 1),
        "the extra multiplexer did not stop:\n{}",
        server.log()
    );
    assert_eq!(get(server.addr, "alice.test", "/").status, 200);
}
