//! The first steps of every child, before it builds its runtime: take the control
//! channel from its fixed fd, receive the bootstrap, take its fds apart into the
//! role's bundle (every field's count and kind checked), drop privileges.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use thiserror::Error;

use crate::bootfds::{BackendFds, BootFdError, MultiplexerFds, ProcessorFds};
use crate::control::{
    BackendBoot, Bootstrap, ControlError, MultiplexerBoot, ProcessorBoot, Receiver, RoleBoot, ToChild,
};
use crate::fds::CONTROL_FD;
use crate::privdrop::{self, PrivDropError};

/// Largest number of fds a bootstrap may carry (listeners + one per environment).
pub const MAX_BOOT_FDS: usize = 1 << 16;
/// A spare waits for its environment as long as the supervisor lives (it dies with it:
/// parent-death signal, and the channel's end of file).
const BOOT_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a multiplexer waits for the fd keeper's stream of environment ends.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a child could not start.
#[derive(Debug, Error)]
pub enum ChildError {
    #[error("fd {CONTROL_FD} is not a control channel (run `bulkhead serve`, not a role directly)")]
    NoControl,
    #[error("bootstrap: {0}")]
    Control(#[from] ControlError),
    #[error("expected a bootstrap as the first control message")]
    NotBootstrap,
    #[error("dropping privileges: {0}")]
    Drop(#[from] PrivDropError),
    #[error(transparent)]
    Fds(#[from] BootFdError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("log pipe onto fds 1 and 2: {0}")]
    LogPipe(crate::fds::FdError),
    #[error("environment ends from the fd keeper: {0}")]
    Keeper(#[from] crate::keeper::KeeperError),
}

/// A child after its privileges are dropped.
pub struct Started {
    pub role: Role,
    pub control: OwnedFd,
}

/// A role's slice of the configuration with its fds.
pub enum Role {
    Multiplexer(Box<MultiplexerBoot>, MultiplexerFds<OwnedFd>),
    /// The log pipe is on fds 1 and 2 already.
    Processor(Box<ProcessorBoot>, ProcessorFds<OwnedFd>),
    /// A FastCGI backend, about to exec its command. The log pipe is on fds 1 and 2.
    Backend(Box<BackendBoot>, BackendFds<OwnedFd>),
    /// An environment's namespace holder: still root, nothing dropped.
    Holder(Box<crate::sandbox::holder::HolderBoot>),
    /// A generation's fd keeper (`crate::keeper`), dropped to the multiplexers' user.
    Keeper(Box<crate::keeper::KeeperBoot>),
}

/// Receives the bootstrap on [`CONTROL_FD`] and drops to its credentials.
pub fn start() -> Result<Started, ChildError> {
    privdrop::remember_parent();
    close_strays();
    // Die with the supervisor while waiting (a spare may wait long); the drop clears
    // this, and `privdrop` sets it again afterwards.
    // SAFETY: integer-only prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if crate::fds::is_cloexec(CONTROL_FD).is_err() {
        return Err(ChildError::NoControl);
    }
    // SAFETY: fd 3 was put there for us by the supervisor (checked open above) and
    // nothing else in this fresh process owns it.
    let fixed = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    // Move it off the fixed number, close-on-exec, so nothing exec'd later inherits it,
    // and close fd 3 now rather than after the bootstrap (a spare waits here a while).
    let control = fixed.try_clone().map_err(|_| ChildError::NoControl)?;
    drop(fixed);
    crate::fds::set_nonblocking(std::os::fd::AsFd::as_fd(&control)).map_err(|_| ChildError::NoControl)?;
    let mut rx = Receiver::new();
    let (mut msg, mut fds): (ToChild, Vec<OwnedFd>) =
        rx.recv_blocking(std::os::fd::AsFd::as_fd(&control), MAX_BOOT_FDS, BOOT_TIMEOUT)?;
    // An environment with a private view: its namespaces first, joined while this is
    // still the supervisor's fresh, single-threaded, root exec.
    let mut entered = false;
    if let ToChild::Enter = msg {
        crate::sandbox::enter(&fds)?;
        entered = true;
        (msg, fds) = rx.recv_blocking(std::os::fd::AsFd::as_fd(&control), MAX_BOOT_FDS, BOOT_TIMEOUT)?;
    }
    let ToChild::Bootstrap(boot) = msg else {
        return Err(ChildError::NotBootstrap);
    };
    let Bootstrap {
        credentials,
        role,
        sandbox,
    } = *boot;
    if sandbox.as_ref().is_some_and(|s| s.namespaces) && !entered {
        return Err(crate::sandbox::SandboxError::NotEntered.into());
    }
    let role = match role {
        RoleBoot::Holder(b) => {
            // Stays root: it builds the view and reaps; it never runs tenant code.
            return Ok(Started {
                role: Role::Holder(Box::new(b)),
                control,
            });
        }
        RoleBoot::Multiplexer(b) => {
            b.fds.check(&b)?;
            let mut fds = MultiplexerFds::from_wire(&b.fds, fds)?;
            // The environments' ends from the fd keeper, before anything else: the
            // multiplexer cannot route without all of them.
            if let Some(stream) = fds.env_stream.take() {
                fds.env_sockets = crate::keeper::receive(
                    std::os::fd::AsFd::as_fd(&stream),
                    b.environments.len(),
                    STREAM_TIMEOUT,
                )?;
            }
            Role::Multiplexer(Box::new(b), fds)
        }
        RoleBoot::Keeper(b) => Role::Keeper(Box::new(b)),
        RoleBoot::Processor(b) => {
            b.fds.check(&b)?;
            let fds = ProcessorFds::from_wire(&b.fds, fds)?;
            // A processor's fds 1 and 2 become its environment's log pipe while it is
            // still the supervisor's trusted exec, so nothing it writes from here on
            // (its own log, a panic, anything a compromised processor prints) reaches
            // the error log except through the supervisor, marked with the environment.
            crate::fds::install_stdio(&fds.log_pipe).map_err(ChildError::LogPipe)?;
            Role::Processor(Box::new(b), fds)
        }
        RoleBoot::Backend(b) => {
            let fds = BackendFds::from_wire(fds)?;
            // As for a processor: the log pipe on fds 1 and 2 while still our exec.
            crate::fds::install_stdio(&fds.log_pipe).map_err(ChildError::LogPipe)?;
            Role::Backend(Box::new(b), fds)
        }
    };
    match &credentials {
        Some(creds) => privdrop::drop_to(creds)?,
        None => privdrop::lock_down()?,
    }
    // The last walls, before the runtime or the exec: Landlock, then seccomp.
    if let Some(s) = &sandbox {
        crate::sandbox::apply(s)?;
    }
    // The bootstrap's text (a multiplexer's names every environment and vhost) is
    // parsed and gone: give its pages back rather than keep them for the process's life.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(Started { role, control })
}

/// Closes every fd above [`CONTROL_FD`]. The supervisor passes exactly 0, 1, 2 and the
/// control channel; anything else open here was inherited by accident (an fd the
/// supervisor itself got from whatever started it without close-on-exec) and may be a
/// file or socket of another tenant. Runs first, before this process opens anything.
fn close_strays() {
    let first = CONTROL_FD as libc::c_uint + 1;
    // SAFETY: nothing in this process owns an fd above CONTROL_FD yet; closing them
    // invalidates no live handle.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0 as libc::c_uint) };
    if r == 0 {
        return;
    }
    // Kernels before 5.9: list /proc/self/fd first, then close (the listing's own fd is
    // closed by then and its close fails harmlessly).
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > CONTROL_FD)
        .collect();
    for fd in fds {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}
