//! `bench/run --smoke` on the debug binary, so the benchmark harness never rots: it
//! starts bulkhead with the benchmark's two-tenant config, checks both tenants' files
//! byte for byte, sends a little load (wrk when installed, else curl or python3) and
//! exits 0 only if every request succeeded. Nothing about speed is asserted.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::util::BIN;

/// The whole run is bounded: past this, bench/run gets SIGTERM (its trap stops the
/// servers it started), then its process group SIGKILL.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
// The loop below waits for the child on every path (try_wait, or wait after SIGKILL).
#[allow(clippy::zombie_processes)]
fn bench_smoke_passes() {
    require_root!();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/run");
    assert!(script.exists(), "{} is missing", script.display());
    let out = tempfile::tempdir().unwrap();
    let log = out.path().join("bench.log");
    let file = std::fs::File::create(&log).unwrap();
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&script)
        .arg("--smoke")
        .env("BULKHEAD_BIN", BIN)
        .env_remove("BENCH_CLIENT")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        // Its own process group, so that a hung run can be killed whole.
        .process_group(0)
        .spawn()
        .expect("run bench/run");
    let pgid = Pid::from_raw(child.id() as i32);

    let mut status = None;
    let mut termed: Option<Instant> = None;
    while status.is_none() {
        status = child.try_wait().expect("wait for bench/run");
        if status.is_some() {
            break;
        }
        match termed {
            None if started.elapsed() > LIMIT => {
                let _ = killpg(pgid, Signal::SIGTERM);
                termed = Some(Instant::now());
            }
            Some(t) if t.elapsed() > Duration::from_secs(15) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                status = Some(child.wait().expect("reap bench/run"));
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let status = status.unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        termed.is_none(),
        "bench/run --smoke did not finish within {}s; its output:\n{text}",
        LIMIT.as_secs()
    );
    assert!(
        status.success(),
        "bench/run --smoke exited with {status}; its output:\n{text}"
    );
    assert!(
        text.contains("smoke: OK"),
        "bench/run --smoke exited 0 without its OK line; its output:\n{text}"
    );
    eprintln!(
        "bench/run --smoke passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
