//! The private view of an environment, on the side of the processes that live in it:
//! joining the environment's mount and IPC namespaces right after the exec (before the
//! privilege drop), then, once privileges are dropped (no_new_privs is set), Landlock
//! and a seccomp deny list as the last steps before the runtime or the exec. The
//! namespaces themselves are made once per environment by its holder ([`holder`]).

pub mod holder;
pub mod landlock;
pub mod mounts;
pub mod seccomp;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What a child of an environment with a private view applies after its drop. Travels
/// in the bootstrap; paths are as the child sees them (inside its chroot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// The child was sent its environment's namespaces before the bootstrap and must
    /// have joined them.
    pub namespaces: bool,
    /// Landlock: read and execute below these (the system's programs and libraries).
    pub read_only: Vec<PathBuf>,
    /// Landlock: everything below these (the environment's own tree, its `/tmp`).
    pub read_write: Vec<PathBuf>,
    /// Landlock: device files read and written (`/dev/null` …).
    pub devices: Vec<PathBuf>,
    /// Landlock: directories listed (not read) anywhere below `/` (a chroot's own `/`).
    pub list_root: bool,
}

/// Why a sandbox step failed; the child exits on any of them.
#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("setns({what}): {source}")]
    Setns {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("expected 2 namespace fds (mnt, ipc), got {0}")]
    NsCount(usize),
    #[error("the environment's namespaces were not sent before the bootstrap")]
    NotEntered,
    #[error("landlock: {0}")]
    Landlock(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// Joins the IPC and then the mount namespace of `fds` (`[mnt, ipc]`, as the
/// supervisor sends them). Single-threaded and still root: setns(CLONE_NEWNS) needs
/// both. The root and working directory become the namespace's.
pub fn enter(fds: &[OwnedFd]) -> Result<(), SandboxError> {
    let [mnt, ipc] = fds else {
        return Err(SandboxError::NsCount(fds.len()));
    };
    setns(ipc, libc::CLONE_NEWIPC, "ipc")?;
    setns(mnt, libc::CLONE_NEWNS, "mnt")
}

fn setns(fd: &OwnedFd, kind: libc::c_int, what: &'static str) -> Result<(), SandboxError> {
    // SAFETY: setns on an fd we own; the kernel checks that it is a namespace of `kind`.
    let r = unsafe { libc::setns(fd.as_raw_fd(), kind) };
    if r < 0 {
        return Err(SandboxError::Setns {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Landlock, then the seccomp deny list. After the privilege drop (no_new_privs).
pub fn apply(s: &Sandbox) -> Result<(), SandboxError> {
    landlock::restrict(s)?;
    seccomp::deny()
}
