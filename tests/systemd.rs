//! systemd: the notification protocol played by the test (a datagram socket as
//! `NOTIFY_SOCKET`): `READY=1` with a `STATUS=` line once the server is ready,
//! `WATCHDOG=1` at half `WATCHDOG_USEC`, `RELOADING=1` with `MONOTONIC_USEC` then
//! `READY=1` around a reload, `STOPPING=1`; no child ever sees `NOTIFY_SOCKET` or
//! `WATCHDOG_USEC`; and `deploy/bulkhead.service` (with `deploy/bulkhead.socket`)
//! passes `systemd-analyze verify`. Socket activation through
//! `systemd-socket-activate`: served on the passed fds (and a configured address not
//! passed bound as usual), kept over a reload, no `LISTEN_*` in any child; a passed
//! socket no address names refused at start.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

/// Collects datagrams until `want` is among their lines or `timeout` passes; returns
/// every line seen.
fn until(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            lines.extend(text.lines().map(str::to_owned));
            if lines.iter().any(|l| l == want) {
                break;
            }
        }
    }
    lines
}

#[test]
fn systemd_notify_ready_watchdog_reload_stopping() {
    require_root!();
    let dir = Dir::new("systemd_notify_ready_watchdog_reload_stopping");
    let w = dir.path();
    sites(w, 0o644);
    let path = w.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let config = two_env_config(w, "");
    let mut server = TestServer::try_start_with(&config, |cmd| {
        cmd.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "1000000");
    })
    .unwrap_or_else(|log| panic!("server did not become ready:\n{log}"));

    let lines = until(&sock, "READY=1", Duration::from_secs(10));
    assert!(lines.iter().any(|l| l == "READY=1"), "{lines:?}");
    let status = lines
        .iter()
        .find(|l| l.starts_with("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= with READY=1: {lines:?}"));
    assert!(
        status.starts_with("STATUS=serving 2 environments, ") && status.contains("processor"),
        "{status}"
    );
    // Half of WATCHDOG_USEC: at least one ping within two seconds.
    let lines = until(&sock, "WATCHDOG=1", Duration::from_secs(3));
    assert!(lines.iter().any(|l| l == "WATCHDOG=1"), "{lines:?}");

    // No child inherits the notification socket or the watchdog.
    for pid in server.all_children() {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        assert!(
            !env.contains("NOTIFY_SOCKET") && !env.contains("WATCHDOG_"),
            "child {pid} ({:?}) has {env:?}",
            cmdline(pid)
        );
    }

    server.signal(Signal::SIGHUP);
    let lines = until(&sock, "READY=1", Duration::from_secs(10));
    let at = |want: &str| lines.iter().position(|l| l == want);
    let reloading = at("RELOADING=1").unwrap_or_else(|| panic!("no RELOADING=1: {lines:?}"));
    let ready = at("READY=1").unwrap_or_else(|| panic!("no READY=1 after the reload: {lines:?}"));
    assert!(reloading < ready, "{lines:?}");
    let usec = lines[reloading..ready]
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC with RELOADING=1: {lines:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{usec}");
    ok(&server, "alice.test", "alice home", "after the reload");

    server.signal(Signal::SIGTERM);
    let lines = until(&sock, "STOPPING=1", Duration::from_secs(10));
    assert!(lines.iter().any(|l| l == "STOPPING=1"), "{lines:?}");
    assert!(server.wait_exit(Duration::from_secs(40)).is_some());
}

#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = require_tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = Dir::new("systemd_unit_verifies");
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bulkhead.service")).unwrap();
    // The unit names the installed binary; verify needs one that exists.
    let unit = unit.replace("/usr/bin/bulkhead", BIN);
    let path = dir.path().join("bulkhead.service");
    std::fs::write(&path, unit).unwrap();
    // The socket unit beside it (it names the service).
    let socket = dir.path().join("bulkhead.socket");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bulkhead.socket"),
        &socket,
    )
    .unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .arg(&socket)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

/// `systemd-socket-activate -l ADDR --fdname=…` around `bulkhead serve`.
fn activate_via(listen: &[(SocketAddr, &str)]) -> Option<Vec<std::ffi::OsString>> {
    let tool = require_tool("systemd-socket-activate", "systemd")?;
    let mut via: Vec<std::ffi::OsString> = vec![tool.into()];
    for (addr, _) in listen {
        via.push(format!("--listen={addr}").into());
    }
    let names: Vec<&str> = listen.iter().map(|(_, n)| *n).collect();
    via.push(format!("--fdname={}", names.join(":")).into());
    // It passes on only the variables named.
    via.push("--setenv=RUST_LOG=info".into());
    // It execs the server only when a first connection arrives on a socket: knock once
    // its listener is there (the connection waits in the backlog for the server).
    let first = listen[0].0;
    std::thread::spawn(move || {
        poll(Duration::from_secs(20), || {
            std::net::TcpStream::connect(first).ok()
        });
    });
    Some(via)
}

#[test]
fn socket_activation_serves_on_the_passed_fds() {
    require_root!();
    let dir = Dir::new("socket_activation_serves_on_the_passed_fds");
    let w = dir.path();
    sites(w, 0o644);
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let Some(via) = activate_via(&[(http, "http"), (metrics, "status")]) else {
        return;
    };
    // One configured address is passed in neither: bound as usual.
    let config = two_env_config(w, "").replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"{http}\", \"127.0.0.1:0\"]"),
    ) + &format!("\n[status]\nmetrics_listen = \"{metrics}\"\n");
    let mut server = TestServer::try_start_via(&config, &via, |_| {})
        .unwrap_or_else(|log| panic!("server did not become ready:\n{log}"));
    // systemd-socket-activate holds both ports: answering there is answering on its fds.
    assert_eq!(server.addr, http, "{}", server.log());
    assert_eq!(server.metrics_addr, Some(metrics), "{}", server.log());
    ok(&server, "alice.test", "alice home", "on the passed socket");
    ok(&server, "bob.test", "bob home", "on the passed socket");
    let lines = server.log_lines();
    for name in ["http", "status"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("using the passed socket") && l.contains(&format!("name={name}"))),
            "{name}:\n{}",
            server.log()
        );
    }
    let m = get(metrics, "localhost", "/metrics");
    assert_eq!(m.status, 200, "{}", m.text());

    for pid in server.all_children() {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        assert!(
            !env.contains("LISTEN_") && !env.contains("NOTIFY_SOCKET"),
            "child {pid} ({:?}) has {env:?}",
            cmdline(pid)
        );
    }

    // A reload keeps the activated sockets (a fresh bind would fail: the port is held
    // by systemd-socket-activate); so does one that drops the address and one that
    // brings it back.
    let written = std::fs::read_to_string(&server.config_path).unwrap();
    let without = written.replace(&format!("\"{http}\", "), "");
    assert_ne!(without, written);
    let reload = |n: usize, text: &str| {
        std::fs::write(&server.config_path, text).unwrap();
        server.signal(Signal::SIGHUP);
        assert!(
            server
                .wait_for_log_count("reload: old generation finished", n, Duration::from_secs(15))
                .is_some(),
            "reload {n}:\n{}",
            server.log()
        );
        assert!(!server.log().contains("reload refused"), "{}", server.log());
    };
    reload(1, &written);
    ok(&server, "alice.test", "alice home", "after the reload");
    reload(2, &without);
    reload(3, &written);
    ok(&server, "alice.test", "alice home", "with the address back");
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(40)), Some(0));
}

#[test]
fn socket_activation_refuses_a_socket_no_address_names() {
    require_root!();
    let dir = Dir::new("socket_activation_refuses_a_socket_no_address_names");
    let w = dir.path();
    sites(w, 0o644);
    let stray: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let Some(via) = activate_via(&[(stray, "stray")]) else {
        return;
    };
    let log = match TestServer::try_start_via(&two_env_config(w, ""), &via, |_| {}) {
        Ok(s) => panic!("started with a stray socket:\n{}", s.log()),
        Err(log) => log,
    };
    assert!(
        log.contains(&format!("({}) is bound to {stray}, which no listen", "stray")),
        "{log}"
    );
}
