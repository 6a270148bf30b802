//! Environments' private views, the supervisor's side. For each environment with
//! `private_view` (when running as root), once per generation: a holder
//! (`bulkhead ns-holder`, [`common::sandbox::holder`]) started as the first process
//! of a new PID namespace; it makes the mount and IPC namespaces and builds the view
//! ([`plan`]). The supervisor keeps fds of its three namespaces. Each child of the
//! environment (processors, FastCGI backends) is forked with the supervisor's
//! `pid_for_children` set to that PID namespace ([`View::spawn`]) and is sent the mount
//! and IPC namespaces before its bootstrap (`ToChild::Enter`), which it joins before
//! its privilege drop; CGI scripts inherit their processor's. Dropping the view (with
//! its generation) closes the holder's channel: the holder exits, and with it anything
//! left in the namespace.

pub mod plan;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use common::control::{self, Bootstrap, FromChild, Receiver, RoleBoot, ToChild};
use common::sandbox::holder::HolderBoot;
use common::sandbox::Sandbox;
use conf::Config;
use thiserror::Error;
use tracing::{info, warn};

use crate::spawn::{self, SpawnError, Spawned};

/// How long a holder may take to build its view.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an environment's view could not be made.
#[derive(Debug, Error)]
pub enum NamespaceError {
    #[error("environment {env}: private view: {what}: {source}")]
    Os {
        env: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("environment {env}: private view: starting its holder: {source}")]
    Spawn { env: String, source: SpawnError },
    #[error("environment {env}: private view: its holder failed (its error is logged above): {source}")]
    Holder {
        env: String,
        source: common::control::ControlError,
    },
}

/// One environment's namespaces, held for a generation.
pub struct View {
    /// The holder's pid (the supervisor's child).
    pub holder: i32,
    /// The holder's channel: closing it ends the holder.
    _control: OwnedFd,
    mnt: OwnedFd,
    ipc: OwnedFd,
    pid: OwnedFd,
    /// What its children apply after their drop.
    pub sandbox: Sandbox,
}

fn os<'a>(env: &'a str, what: &'static str) -> impl FnOnce(std::io::Error) -> NamespaceError + 'a {
    move |source| NamespaceError::Os {
        env: env.to_string(),
        what,
        source,
    }
}

/// The views of every environment with `private_view` (none when unprivileged: a
/// warning per environment).
pub fn views(cfg: &Config, gen: u64, privileged: bool) -> Result<Vec<Option<View>>, NamespaceError> {
    let mut out = Vec::new();
    for (i, e) in cfg.environments.iter().enumerate() {
        if !e.private_view {
            out.push(None);
        } else if !privileged {
            warn!(environment = %e.name, "private_view needs root: off (the server runs unprivileged)");
            out.push(None);
        } else {
            out.push(Some(start(cfg, i, gen)?));
        }
    }
    Ok(out)
}

/// Runs `f` with this process's `pid_for_children` set to `target` (None: a new PID
/// namespace), then restores its own. The supervisor is a current-thread runtime, and
/// `pid_for_children` is per thread: the fork in `f` runs on this same thread.
fn with_pid_ns<T>(target: Option<&OwnedFd>, f: impl FnOnce() -> T) -> std::io::Result<T> {
    let own = std::fs::File::open("/proc/thread-self/ns/pid")?;
    // SAFETY: unshare/setns with integer arguments and fds we own.
    let r = unsafe {
        match target {
            None => libc::unshare(libc::CLONE_NEWPID),
            Some(fd) => libc::setns(fd.as_raw_fd(), libc::CLONE_NEWPID),
        }
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let out = f();
    // SAFETY: as above; back to our own namespace (always allowed).
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
        // Every later child would land in the environment's namespace: nothing safe
        // is left to do.
        let e = std::io::Error::last_os_error();
        tracing::error!("restoring the supervisor's pid_for_children: {e}; exiting");
        std::process::exit(70);
    }
    Ok(out)
}

fn start(cfg: &Config, env: usize, gen: u64) -> Result<View, NamespaceError> {
    let e = &cfg.environments[env];
    let name = e.name.as_str();
    let exe = std::env::current_exe().map_err(os(name, "finding our own binary"))?;
    let (steps, sandbox) = plan::plan(cfg, env);
    let s = with_pid_ns(None, || spawn::spawn(&exe, "ns-holder"))
        .map_err(os(name, "unshare(CLONE_NEWPID)"))?
        .map_err(|source| NamespaceError::Spawn {
            env: name.to_string(),
            source,
        })?;
    let holder = s.pid;
    let kill = || {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let boot = Bootstrap {
        credentials: None,
        role: RoleBoot::Holder(HolderBoot {
            environment: name.to_string(),
            generation: gen,
            steps,
        }),
        sandbox: None,
    };
    let holder_err = |source| NamespaceError::Holder {
        env: name.to_string(),
        source,
    };
    if let Err(err) = control::send(s.control.as_fd(), &ToChild::Bootstrap(Box::new(boot)), &[]) {
        kill();
        return Err(holder_err(err));
    }
    let mut rx = Receiver::with_max(1024);
    match rx.recv_blocking::<FromChild>(s.control.as_fd(), 0, READY_TIMEOUT) {
        Ok((FromChild::Ready, _)) => {}
        Ok(_) => {
            kill();
            return Err(holder_err(common::control::ControlError::Empty));
        }
        Err(err) => {
            kill();
            return Err(holder_err(err));
        }
    }
    let ns = |kind: &str| -> std::io::Result<OwnedFd> {
        let f = std::fs::File::open(Path::new("/proc").join(holder.to_string()).join("ns").join(kind))?;
        Ok(OwnedFd::from(f))
    };
    let opened = (|| Ok::<_, std::io::Error>((ns("mnt")?, ns("ipc")?, ns("pid")?)))();
    let (mnt, ipc, pid) = match opened {
        Ok(t) => t,
        Err(err) => {
            kill();
            return Err(os(name, "opening the holder's namespaces")(err));
        }
    };
    info!(environment = %name, generation = gen, holder, "private view ready (mount, pid, ipc namespaces)");
    Ok(View {
        holder,
        _control: s.control,
        mnt,
        ipc,
        pid,
        sandbox,
    })
}

/// A holder is gone (the kernel killed what was left in its PID namespace): the
/// generation's view of that environment is built again, so the environment's next
/// children have a namespace to be forked into. Returns whether `pid` was a holder.
pub(crate) fn holder_died(gens: &mut [crate::generation::Generation], pid: i32) -> bool {
    for g in gens.iter_mut() {
        let Some(env) = g
            .views
            .iter()
            .position(|v| v.as_ref().is_some_and(|v| v.holder == pid))
        else {
            continue;
        };
        let name = g.cfg.environments[env].name.clone();
        tracing::error!(environment = %name, pid, "the private view's holder died; its processes are gone, building the view again");
        // On failure the dead view stays: forking into its namespace fails, so the
        // environment's children fail to start rather than start without a view.
        match start(&g.cfg, env, g.id) {
            Ok(v) => g.views[env] = Some(v),
            Err(e) => tracing::error!("{e}; its children cannot start until the next reload"),
        }
        return true;
    }
    false
}

impl View {
    /// fork+exec `exe role` inside this view's PID namespace, and send it the mount and
    /// IPC namespaces (to be joined before its bootstrap, which the caller sends).
    pub fn spawn(&self, exe: &Path, role: &'static str) -> Result<Spawned, SpawnError> {
        let s = with_pid_ns(Some(&self.pid), || spawn::spawn(exe, role)).map_err(|source| {
            SpawnError::Exec {
                exe: exe.display().to_string(),
                role,
                source,
            }
        })??;
        let fds = [self.mnt.as_raw_fd(), self.ipc.as_raw_fd()];
        if let Err(e) = control::send(s.control.as_fd(), &ToChild::Enter, &fds) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(s.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(SpawnError::Exec {
                exe: exe.display().to_string(),
                role,
                source: std::io::Error::other(e.to_string()),
            });
        }
        Ok(s)
    }
}
