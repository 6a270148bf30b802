//! An environment's holder: a small root process, one per environment with a private
//! view (kept across the reloads that keep the view's settings), started by the
//! supervisor as the first process (init) of the environment's new PID namespace. It
//! makes the environment's mount and IPC namespaces (`unshare`), builds the view
//! ([`super::mounts`]), says `Ready`, and then reaps the orphans of its PID namespace
//! and covers the trees of environments a reload added when the supervisor asks
//! (`ToChild::Hide`), until its control channel closes (every generation using the
//! view is gone, or the supervisor died): then it exits, and the kernel kills whatever
//! is left in the namespace. It runs no tenant code and reads nothing from a
//! client; `hidepid=invisible` hides it from the tenant, who cannot signal it (root).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::mounts::{self, MountError, Step};
use crate::control::{self, ControlError, FromChild, Receiver, ToChild};

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

/// Builds the view, says `Ready`, then reaps and carries out the supervisor's `Hide`
/// requests until `control` closes.
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
    let mut rx = Receiver::with_max(MAX_REQUEST);
    loop {
        reap();
        let mut pfd = libc::pollfd {
            fd: control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on our own fd, for at most a second.
        let r = unsafe { libc::poll(&mut pfd, 1, 1000) };
        if r <= 0 || pfd.revents == 0 {
            continue;
        }
        match rx.poll_message::<ToChild>(control.as_fd(), 0) {
            Ok(None) => {}
            // A reload kept this view and added environments: their trees are covered
            // here too, as if the view had been built with them.
            Ok(Some((ToChild::Hide { paths }, _))) => {
                for path in paths {
                    mounts::run(&Step::Hide { path })?;
                }
                control::send(control.as_fd(), &FromChild::Ready, &[])?;
            }
            // Nothing else is sent to a holder.
            Ok(Some(_)) => {}
            // Its end of file: the supervisor dropped the view (every generation
            // that used it is gone) or died.
            Err(_) => {
                reap();
                return Ok(());
            }
        }
    }
}

/// The largest request a holder reads (a `Hide` list of paths).
const MAX_REQUEST: usize = 1 << 20;

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
