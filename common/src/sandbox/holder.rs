//! An environment's holder: a small root process, one per environment with a private
//! view and per generation, started by the supervisor as the first process (init) of
//! the environment's new PID namespace. It makes the environment's mount and IPC
//! namespaces (`unshare`), builds the view ([`super::mounts`]), says `Ready`, and then
//! only reaps the orphans of its PID namespace until its control channel closes (its
//! generation is gone, or the supervisor died): then it exits, and the kernel kills
//! whatever is left in the namespace. It runs no tenant code and reads nothing from a
//! client; `hidepid=invisible` hides it from the tenant, who cannot signal it (root).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::mounts::{self, MountError, Step};
use crate::control::{self, ControlError, FromChild};

/// A holder's slice: the environment it holds and the view's steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderBoot {
    pub environment: String,
    pub generation: u64,
    pub steps: Vec<Step>,
}

/// Why a holder could not build its environment's view.
#[derive(Debug, Error)]
pub enum HolderError {
    #[error("unshare(mount, ipc): {0}")]
    Unshare(std::io::Error),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("saying ready: {0}")]
    Ready(#[from] ControlError),
    #[error("not the first process of a new PID namespace (pid {0})")]
    NotInit(u32),
}

/// Builds the view, says `Ready`, then reaps until `control` closes.
pub fn run(boot: &HolderBoot, control: OwnedFd) -> Result<(), HolderError> {
    if std::process::id() != 1 {
        return Err(HolderError::NotInit(std::process::id()));
    }
    // SAFETY: integer-only syscall; this process is single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC) } < 0 {
        return Err(HolderError::Unshare(std::io::Error::last_os_error()));
    }
    // The view's directories must be passable by the environment whatever umask the
    // supervisor runs under (systemd's unit sets UMask=0077): 0755 directories, the
    // modes the plan gives explicitly are unaffected.
    // SAFETY: integer-only syscall.
    unsafe { libc::umask(0o022) };
    for step in &boot.steps {
        mounts::run(step)?;
    }
    let _ = std::env::set_current_dir("/");
    control::send(control.as_fd(), &FromChild::Ready, &[])?;
    loop {
        reap();
        let mut pfd = libc::pollfd {
            fd: control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on our own fd, for at most a second.
        let r = unsafe { libc::poll(&mut pfd, 1, 1000) };
        // The supervisor never writes to a holder: anything readable is its end of
        // file (it closed the channel with the generation, or died).
        if r > 0 && pfd.revents != 0 {
            reap();
            return Ok(());
        }
    }
}

/// Reaps every exited process of the namespace (orphans reparented to us).
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer, non-blocking.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return;
        }
    }
}
