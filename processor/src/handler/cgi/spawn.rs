//! Starting a script and ending it. The child gets fds 0, 1 and 2 only (every other fd
//! of the processor is close-on-exec): stdin the spooled body (or an empty pipe),
//! stdout a pipe to us, stderr the processor's own fd 2, which is the environment's log
//! pipe. Between fork and exec it only calls `setsid` (its own session and process
//! group, no controlling terminal) and `setrlimit`. At its deadline, or when the
//! request ends first, the whole process group is killed with SIGKILL; a process that
//! left the group with its own `setsid` escapes that (cgroups close the hole later).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::process::Stdio;

use thiserror::Error;
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

use super::Script;

/// A script could not be started.
#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("{path}: cannot start CGI script: {error}")]
    Exec { path: String, error: io::Error },
}

/// The limits a script runs under (soft, hard), lowered to at most the processor's own
/// hard limits. No RLIMIT_NPROC: it counts every process and thread of the uid, the
/// environment's processors included, so no value is both safe and useful; the pids
/// cgroup bounds that later.
fn limits(timeout_secs: u64) -> [(libc::__rlimit_resource_t, u64, u64); 5] {
    const GIB: u64 = 1 << 30;
    [
        // SIGXCPU a little after the wall-clock timeout, SIGKILL after that.
        (libc::RLIMIT_CPU, timeout_secs + 5, timeout_secs + 10),
        // Heap and private mappings (not RLIMIT_AS, which also counts reservations).
        (libc::RLIMIT_DATA, GIB, GIB),
        (libc::RLIMIT_FSIZE, GIB, GIB),
        (libc::RLIMIT_CORE, 0, 0),
        (libc::RLIMIT_NOFILE, 1024, 1024),
    ]
}

/// Lowers each (resource, soft, hard) to at most this process's own hard limit, so
/// setting them cannot fail for want of privilege. Shared with the FastCGI backends.
pub(crate) fn cap_to_own(limits: &mut [(libc::__rlimit_resource_t, u64, u64)]) {
    for (resource, soft, hard) in limits {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the valid struct passed.
        if unsafe { libc::getrlimit(*resource, &mut current) } == 0 {
            *hard = (*hard).min(current.rlim_max);
            *soft = (*soft).min(*hard);
        }
    }
}

/// A running script: its stdout and its process group.
#[derive(Debug)]
pub struct Running {
    child: Child,
    pub stdout: ChildStdout,
    /// Its pid, which `setsid` made its process group's id too.
    pgid: libc::pid_t,
    pub deadline: Instant,
    /// Reaped: the group id may no longer be ours to signal.
    reaped: bool,
}

/// Starts `script` with `env` and `stdin` (the spooled body; `None`: an empty pipe).
pub fn spawn(
    script: &Script,
    env: Vec<(OsString, OsString)>,
    stdin: Option<File>,
    timeout: std::time::Duration,
) -> Result<Running, SpawnError> {
    let exec_error = |error| SpawnError::Exec {
        path: script.filename.display().to_string(),
        error,
    };
    let mut rlimits = limits(timeout.as_secs());
    cap_to_own(&mut rlimits);
    let mut cmd = Command::new(&script.filename);
    cmd.env_clear()
        .envs(env)
        .current_dir(&script.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match stdin {
        Some(file) => cmd.stdin(Stdio::from(file)),
        None => cmd.stdin(Stdio::piped()),
    };
    // SAFETY: the closure runs between fork and exec and calls only setsid(2), prctl(2)
    // and setrlimit(2), which are async-signal-safe; it allocates nothing (the limits are a
    // copied array) and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // A script whose processor dies (a crash, expire_timeout's SIGKILL) dies
            // with it instead of running on unsupervised; children it forks are the
            // process group's, which the processor kills on every other way out.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            for (resource, soft, hard) in rlimits {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(exec_error)?;
    // Nothing to write: the script reads end of file.
    drop(child.stdin.take());
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| exec_error(io::Error::other("no stdout pipe")))?;
    let pgid = child
        .id()
        .and_then(|id| libc::pid_t::try_from(id).ok())
        .ok_or_else(|| exec_error(io::Error::other("no pid")))?;
    Ok(Running {
        child,
        stdout,
        pgid,
        deadline: Instant::now() + timeout,
        reaped: false,
    })
}

impl Running {
    /// SIGKILL to the whole process group (the leader is not reaped yet, so the group
    /// id is still its own).
    pub fn kill_group(&mut self) {
        if !self.reaped {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory
            // is involved.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }

    /// Its output has ended: wait for the leader until the deadline (then kill the
    /// group) and reap it, so no zombie stays.
    pub async fn finish(&mut self) {
        if self.reaped {
            return;
        }
        if tokio::time::timeout_at(self.deadline, self.child.wait())
            .await
            .is_err()
        {
            self.kill_group();
            let _ = self.child.wait().await;
        }
        self.reaped = true;
    }

    /// The deadline passed: kill the group and reap the leader.
    pub async fn expire(&mut self) {
        self.kill_group();
        let _ = self.child.wait().await;
        self.reaped = true;
    }
}

impl Drop for Running {
    /// The request ended before the script did (client gone, HEAD, an error): the group
    /// is killed; the runtime reaps the dropped child.
    fn drop(&mut self) {
        self.kill_group();
    }
}
