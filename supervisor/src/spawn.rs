//! Starting a child: fork+exec of our own binary in a role, with exactly one inherited
//! fd (its control channel, dup'ed to [`common::fds::CONTROL_FD`]) and a scrubbed
//! environment. Everything else the child gets arrives over that channel.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::fds::CONTROL_FD;
use common::seqpacket::{seqpacket_pair, PacketError};
use thiserror::Error;

/// Why a child could not be started.
#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("control socketpair for {role}: {source}")]
    Pair { role: &'static str, source: PacketError },
    #[error("exec {exe} {role}: {source}")]
    Exec {
        exe: String,
        role: &'static str,
        source: std::io::Error,
    },
}

/// A started child: its pid and the supervisor's end of its control channel.
pub struct Spawned {
    pub pid: i32,
    pub control: OwnedFd,
}

/// Environment variables a child may see; everything else is dropped.
const KEEP_ENV: &[&str] = &["RUST_LOG", "RUST_BACKTRACE", "BULKHEAD_LOG_FORMAT"];

/// fork+exec `exe role`.
pub fn spawn(exe: &Path, role: &'static str) -> Result<Spawned, SpawnError> {
    let (parent_end, child_end) = seqpacket_pair().map_err(|source| SpawnError::Pair { role, source })?;
    let child_raw = child_end.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg(role)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for k in KEEP_ENV {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    // SAFETY: the closure runs between fork and exec and only calls setsid, dup2 and
    // fcntl, which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // A new session without a controlling terminal: nothing the child runs can
            // push input into the terminal bulkhead was started from (TIOCSTI) or get
            // its job-control signals. A fresh fork is never a process group leader,
            // so this cannot fail with EPERM.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if child_raw == CONTROL_FD {
                let flags = libc::fcntl(CONTROL_FD, libc::F_GETFD);
                if flags < 0 || libc::fcntl(CONTROL_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(child_raw, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        exe: exe.display().to_string(),
        role,
        source,
    })?;
    drop(child_end);
    Ok(Spawned {
        pid: child.id() as i32,
        control: parent_end,
    })
}
