//! Accepting without a herd (issue 15 item 2): each multiplexer slot accepts on its
//! own `SO_REUSEPORT` socket, kept by the supervisor. Connections spread over both
//! multiplexers; a multiplexer killed with connections queued at its socket loses
//! none (its replacement gets the very socket); a reload from two multiplexers to one
//! loses none of the connections queued at the retired socket (the kernel moves them,
//! `net.ipv4.tcp_migrate_req`). The clients of the last two run throughout and each
//! must get its answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::*;

/// Every TCP socket of the machine: inode -> (state, local port, accept queue).
fn tcp_sockets() -> HashMap<u64, (u8, u16, u64)> {
    let mut out = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let state = u8::from_str_radix(f[3], 16).ok();
            // tx_queue:rx_queue; for a listening socket rx_queue is its accept queue.
            let rx = f[4]
                .split(':')
                .nth(1)
                .and_then(|q| u64::from_str_radix(q, 16).ok());
            if let (Some(port), Some(state), Some(rx), Ok(inode)) = (port, state, rx, f[9].parse()) {
                out.insert(inode, (state, port, rx));
            }
        }
    }
    out
}

const LISTEN: u8 = 0x0A;

/// The inodes of the sockets listening on `port`.
fn listening(port: u16) -> Vec<u64> {
    let mut v: Vec<u64> = tcp_sockets()
        .into_iter()
        .filter(|(_, (state, p, _))| *state == LISTEN && *p == port)
        .map(|(inode, _)| inode)
        .collect();
    v.sort();
    v
}

/// The socket inodes `pid` holds.
fn sockets_of(pid: i32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The listening sockets on `port` that `pid` holds.
fn listening_of(pid: i32, port: u16) -> Vec<u64> {
    let l = listening(port);
    let mut v: Vec<u64> = sockets_of(pid).into_iter().filter(|i| l.contains(i)).collect();
    v.sort();
    v
}

/// TCP connections (not listeners) `pid` holds: what it was working on.
fn connections_of(pid: i32) -> usize {
    let tcp = tcp_sockets();
    sockets_of(pid)
        .iter()
        .filter(|i| tcp.get(i).is_some_and(|(state, _, _)| *state != LISTEN))
        .count()
}

/// Connections waiting in the accept queue of the listening socket `inode`.
fn queued(inode: u64) -> u64 {
    tcp_sockets().get(&inode).map_or(0, |(_, _, rx)| *rx)
}

/// Stops `pid` (SIGSTOP) while it holds no connection, so that killing it later loses
/// nothing it had taken: only its socket's queue is at stake.
fn freeze_idle(server: &TestServer, pid: i32) {
    let frozen = server.wait_until(Duration::from_secs(5), || {
        kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
        let stopped = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().starts_with('T')))
            .unwrap_or(false);
        if stopped && connections_of(pid) == 0 {
            return true;
        }
        kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
        false
    });
    assert!(frozen, "multiplexer {pid} never idle");
}

/// Clients until `stop`, each a new connection per request, alternating alice and bob;
/// every request must be answered 200 with its site's body.
struct Stream {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(addr: SocketAddr, clients: usize) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|c| {
                let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut n = c;
                    while !stop.load(Ordering::Relaxed) {
                        let (host, body) = if n % 2 == 0 {
                            ("alice.test", "alice home")
                        } else {
                            ("bob.test", "bob home")
                        };
                        n += 1;
                        let mut s = match std::net::TcpStream::connect(addr) {
                            Ok(s) => s,
                            Err(e) => {
                                failures
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(format!("connect: {e}"));
                                continue;
                            }
                        };
                        let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                        use std::io::Write;
                        let sent = s.write_all(
                            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
                        );
                        match (sent, read_response(&mut s, false)) {
                            (Ok(()), Some(r)) if r.status == 200 && r.text() == body => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            (sent, r) => failures.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                                "{host}: sent {sent:?}, answer {:?}",
                                r.map(|r| (r.status, r.text()))
                            )),
                        }
                    }
                })
            })
            .collect();
        Stream {
            stop,
            done,
            failures,
            threads,
        }
    }

    /// Waits until `more` requests past now are answered.
    fn wait_more(&self, server: &TestServer, more: usize, when: &str) {
        let target = self.done.load(Ordering::Relaxed) + more;
        assert!(
            server.wait_until(Duration::from_secs(20), || self.done.load(Ordering::Relaxed)
                >= target),
            "{when}: {} answered, {:?} failed\n{}",
            self.done.load(Ordering::Relaxed),
            self.failures.lock().unwrap_or_else(|e| e.into_inner()),
            server.log()
        );
    }

    /// Stops the clients; their failures.
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (self.done.load(Ordering::Relaxed), f)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn start(name: &str) -> (Dir, TestServer) {
    let w = Dir::new(name);
    sites(w.path(), 0o644);
    let server = TestServer::start(&two_env_config(w.path(), ""));
    (w, server)
}

#[test]
fn each_multiplexer_accepts_on_its_own_socket_and_both_serve() {
    require_root!();
    let (_w, server) = start("reuseport_spread");
    let port = server.addr.port();
    let socks = listening(port);
    assert_eq!(socks.len(), 2, "one socket per multiplexer slot: {socks:?}");
    assert_eq!(
        listening_of(server.pid(), port),
        socks,
        "the supervisor keeps both"
    );
    let muxes = server.children("multiplexer");
    assert_eq!(muxes.len(), 2, "{muxes:?}");
    let (a, b) = (listening_of(muxes[0], port), listening_of(muxes[1], port));
    assert!(a.len() == 1 && b.len() == 1 && a != b, "{a:?} {b:?}");

    // Connections spread over both (each one to the socket its addresses hash to).
    server.all_ok(100, "spread");
    let r = get(server.addr, "alice.test", "/server-status?json");
    assert_eq!(r.status, 200, "{}", r.text());
    let json: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    let taken: Vec<u64> = json["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter(|c| c["role"] == "Multiplexer")
        .map(|c| c["connections"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(taken.len(), 2, "{json}");
    assert!(
        taken.iter().all(|t| *t > 0),
        "each multiplexer accepted some: {taken:?}"
    );
}

#[test]
fn a_killed_multiplexer_loses_none_of_its_queue() {
    require_root!();
    let (_w, server) = start("reuseport_kill");
    let port = server.addr.port();
    let muxes = server.children("multiplexer");
    assert_eq!(muxes.len(), 2, "{muxes:?}");
    let victim = muxes[0];
    let sock = listening_of(victim, port);
    assert_eq!(sock.len(), 1, "{sock:?}");
    // Frozen with nothing taken: connections for its socket queue there.
    freeze_idle(&server, victim);
    let stream = Stream::start(server.addr, 4);
    // Each client soon waits on a connection queued there.
    assert!(
        server.wait_until(Duration::from_secs(10), || queued(sock[0]) > 0),
        "nothing queued at the frozen multiplexer's socket\n{}",
        server.log()
    );
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let mut fresh = Vec::new();
    assert!(
        server.wait_until(Duration::from_secs(10), || {
            fresh = server
                .children("multiplexer")
                .into_iter()
                .filter(|p| !muxes.contains(p))
                .collect();
            fresh.len() == 1
        }),
        "not replaced\n{}",
        server.log()
    );
    assert_eq!(
        listening_of(fresh[0], port),
        sock,
        "the replacement got the same socket"
    );
    assert!(
        server.wait_until(Duration::from_secs(10), || queued(sock[0]) == 0),
        "the queue was not taken\n{}",
        server.log()
    );
    stream.wait_more(&server, 50, "after the replacement");
    let (done, failures) = stream.finish();
    assert!(
        failures.is_empty(),
        "{done} answered; lost: {failures:?}\n{}",
        server.log()
    );
}

#[test]
fn a_reload_to_one_multiplexer_loses_none_of_the_retired_queue() {
    require_root!();
    let (w, server) = start("reuseport_retire");
    let port = server.addr.port();
    let old = server.children("multiplexer");
    assert_eq!(old.len(), 2, "{old:?}");
    let socks = listening(port);
    assert_eq!(socks.len(), 2, "{socks:?}");
    // Both old multiplexers frozen with nothing taken: every new connection queues at
    // one of the two sockets.
    for pid in &old {
        freeze_idle(&server, *pid);
    }
    let stream = Stream::start(server.addr, 6);
    assert!(
        server.wait_until(Duration::from_secs(10), || socks.iter().all(|s| queued(*s) > 0)),
        "not queued at both sockets: {:?}\n{}",
        socks.iter().map(|s| queued(*s)).collect::<Vec<_>>(),
        server.log()
    );
    std::fs::write(
        &server.config_path,
        two_env_config(w.path(), "").replace("min_multiplexers = 2", "min_multiplexers = 1"),
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
    // The supervisor keeps only slot 0's socket; the retired one lives on in the
    // frozen multiplexer that holds it.
    let mut kept = Vec::new();
    assert!(
        server.wait_until(Duration::from_secs(10), || {
            kept = listening_of(server.pid(), port);
            kept.len() == 1
        }),
        "{kept:?}"
    );
    let retired: Vec<u64> = socks.iter().copied().filter(|s| !kept.contains(s)).collect();
    assert_eq!(retired.len(), 1, "{socks:?} {kept:?}");
    assert!(queued(retired[0]) > 0, "nothing queued at the retired socket");
    // The new multiplexer serves slot 0's queue.
    assert!(
        server.wait_until(Duration::from_secs(10), || queued(kept[0]) == 0),
        "slot 0's queue not served\n{}",
        server.log()
    );
    // The old multiplexers die with the retired socket's queue: its last copy closes,
    // and the kernel moves the queue to slot 0's socket.
    for pid in &old {
        kill(Pid::from_raw(*pid), Signal::SIGKILL).unwrap();
    }
    assert!(
        server.wait_until(Duration::from_secs(10), || listening(port) == kept),
        "{:?}",
        listening(port)
    );
    stream.wait_more(&server, 50, "after the retired socket closed");
    let (done, failures) = stream.finish();
    assert!(
        failures.is_empty(),
        "{done} answered; lost: {failures:?}\n{}",
        server.log()
    );
    assert_eq!(server.children("multiplexer").len(), 1);
}
