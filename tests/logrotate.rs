//! logrotate: Debian's real `logrotate -f` with the shipped `deploy/bulkhead.logrotate`
//! (a generated copy with the paths moved into the test's directory) rotates twice
//! while a client keeps requesting; every request is in exactly one of the current,
//! the rotated and the compressed files.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::*;

/// The `n` of every `GET /index.html?n=N` in `text`.
fn numbers(text: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split("\"GET /index.html?n=").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

/// The text of a log file, decompressed when it ends in `.gz`.
fn read_log(p: &Path) -> String {
    if p.extension().is_some_and(|e| e == "gz") {
        let out = Command::new("gzip").arg("-dc").arg(p).output().unwrap();
        assert!(out.status.success(), "gzip -dc {}", p.display());
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        std::fs::read_to_string(p).unwrap_or_default()
    }
}

#[test]
fn logrotate_with_the_shipped_file_loses_and_duplicates_nothing() {
    require_root!();
    let Some(logrotate) = require_tool("logrotate", "logrotate") else {
        return;
    };
    let dir = Dir::new("logrotate_with_the_shipped_file_loses_and_duplicates_nothing");
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

    // The shipped file, its paths moved here.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bulkhead.logrotate")).unwrap();
    let rotate_conf = w.join("logrotate.conf");
    let generated = shipped
        .replace("/var/log/bulkhead", &logs.display().to_string())
        .replace(
            "/etc/bulkhead/bulkhead.toml",
            &server.config_path.display().to_string(),
        )
        .replace("/run/bulkhead/bulkhead.pid", &pid_file.display().to_string())
        .replace("/usr/bin/bulkhead", BIN);
    assert_ne!(generated, shipped);
    std::fs::write(&rotate_conf, generated).unwrap();
    let state = w.join("logrotate.state");

    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (sent, stop, addr) = (sent.clone(), stop.clone(), server.addr);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = get(addr, "alice.test", &format!("/index.html?n={n}"));
                assert_eq!(r.status, 200, "request {n}: {}", r.text());
                n += 1;
                sent.store(n, Ordering::SeqCst);
            }
        })
    };
    let at_least = |n: usize| {
        assert!(
            server.wait_until(Duration::from_secs(20), || sent.load(Ordering::SeqCst) >= n),
            "the client is stuck at {}",
            sent.load(Ordering::SeqCst)
        );
    };
    for round in 1..=2 {
        at_least(round * 100);
        let out = Command::new(&logrotate)
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&rotate_conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logrotate -f (round {round}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "logrotate round {round} done after {} requests",
            sent.load(Ordering::SeqCst)
        );
        assert!(
            server
                .wait_for_log_count("SIGUSR1: reopening logs", round, Duration::from_secs(10))
                .is_some(),
            "round {round}: no reopen\n{}",
            server.log()
        );
    }
    let after = sent.load(Ordering::SeqCst);
    at_least(after + 100);
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let total = sent.load(Ordering::SeqCst);

    // The files logrotate made: alice.log, alice.log.1, alice.log.2.gz (delaycompress).
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["alice.log", "alice.log.1", "alice.log.2.gz"], "{names:?}");
    // Every line is written once its request is answered; wait for the last ones.
    let count = |names: &[String]| {
        let mut count: BTreeMap<usize, usize> = BTreeMap::new();
        for name in names {
            for n in numbers(&read_log(&logs.join(name))) {
                *count.entry(n).or_default() += 1;
            }
        }
        count
    };
    let mut seen = count(&names);
    let _ = poll(Duration::from_secs(5), || {
        seen = count(&names);
        (seen.len() >= total).then_some(())
    });
    let lost: Vec<usize> = (0..total).filter(|n| !seen.contains_key(n)).collect();
    let twice: Vec<usize> = seen.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect();
    assert!(
        lost.is_empty() && twice.is_empty() && seen.len() == total,
        "{total} requests: lost {lost:?}, logged twice {twice:?}, files {:?}",
        names
            .iter()
            .map(|n| (n, numbers(&read_log(&logs.join(n))).len()))
            .collect::<Vec<_>>()
    );
}
