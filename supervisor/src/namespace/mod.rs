//! Environments' private views, the supervisor's side. For each environment with
//! `private_view` (when running as root), built when its first child starts (a
//! server of 10,000 environments starts without building 10,000 views): a holder (`bulkhead ns-holder`,
//! [`common::sandbox::holder`]) started as the first process of a new PID namespace;
//! it makes the mount and IPC namespaces and builds the view ([`plan`]). The
//! supervisor keeps fds of its three namespaces. Each child of the environment
//! (processors, FastCGI backends) is forked with the supervisor's `pid_for_children`
//! set to that PID namespace ([`View::spawn`]) and is sent the mount and IPC
//! namespaces before its bootstrap (`ToChild::Enter`), which it joins before its
//! privilege drop; CGI scripts inherit their processor's.
//!
//! A view is shared (`Arc`) by the generations whose configurations give it the same
//! [`plan::Key`]: a reload that keeps the environment's view settings keeps its holder,
//! namespaces, `/tmp` and `/dev/shm`, and the holder is told to cover the trees of the
//! environments the reload added (`ToChild::Hide`). Dropping the last generation using
//! a view closes the holder's channel: the holder exits, and with it anything left in
//! the namespace.

pub mod plan;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::control::{self, Bootstrap, FromChild, Receiver, RoleBoot, ToChild};
use common::sandbox::holder::HolderBoot;
use common::sandbox::mounts::Step;
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

/// One environment's namespaces, held for every generation that shares them.
pub struct View {
    /// The holder's pid (the supervisor's child).
    pub holder: i32,
    /// The holder's channel: closing it ends the holder.
    control: OwnedFd,
    mnt: OwnedFd,
    ipc: OwnedFd,
    pid: OwnedFd,
    /// What its children apply after their drop.
    pub sandbox: Sandbox,
    /// What a later generation must plan for to share it.
    key: plan::Key,
    /// The other environments' paths it covers (grows when a reload adds some).
    hidden: Mutex<BTreeSet<PathBuf>>,
    /// A `Hide` request failed: no later generation shares it (its holder may have
    /// exited, or may still answer).
    broken: AtomicBool,
}

fn os<'a>(env: &'a str, what: &'static str) -> impl FnOnce(std::io::Error) -> NamespaceError + 'a {
    move |source| NamespaceError::Os {
        env: env.to_string(),
        what,
        source,
    }
}

/// The views a new generation starts with: none is built here (an environment's view
/// is built at its first child's start, [`build`]), but an environment whose view
/// `previous` (the newest generation so far) has built with the same [`plan::Key`]
/// shares it, once its holder has covered the paths this configuration hides and that
/// view does not yet. Unprivileged there are none (one warning).
pub fn views(
    cfg: &Config,
    gen: u64,
    privileged: bool,
    previous: Option<&crate::generation::Generation>,
) -> Result<Vec<Option<Arc<View>>>, NamespaceError> {
    if !privileged {
        let n = cfg.environments.iter().filter(|e| e.private_view).count();
        if n > 0 {
            warn!(
                environments = n,
                "private_view needs root: off (the server runs unprivileged)"
            );
        }
        return Ok(cfg.environments.iter().map(|_| None).collect());
    }
    // By name, once: a reload of 10,000 environments looks each up in O(1).
    let old_index: std::collections::HashMap<&str, usize> = previous
        .map(|g| {
            g.cfg
                .environments
                .iter()
                .enumerate()
                .filter(|(j, _)| g.views.get(*j).is_some_and(Option::is_some))
                .map(|(j, o)| (o.name.as_str(), j))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(cfg.environments.len());
    for (i, e) in cfg.environments.iter().enumerate() {
        let old = e
            .private_view
            .then(|| old_index.get(e.name.as_str()))
            .flatten()
            .and_then(|&j| previous?.views.get(j)?.clone());
        let Some(v) = old else {
            out.push(None);
            continue;
        };
        let (steps, sandbox) = plan::plan(cfg, i);
        let key = plan::key(cfg, i, &steps, &sandbox);
        let kept = if v.key == key && !v.broken.load(Ordering::Relaxed) {
            match v.hide(&plan::hidden(&steps)) {
                Ok(()) => Some(v),
                Err(err) => {
                    warn!(environment = %e.name, "private view: {err}; building a new one at its next start");
                    None
                }
            }
        } else {
            None
        };
        if let Some(v) = &kept {
            info!(environment = %e.name, generation = gen, holder = v.holder, "private view kept");
        }
        out.push(kept);
    }
    Ok(out)
}

/// Environment `env`'s view for a generation of `cfg` that has none yet: a new holder,
/// the view planned from `cfg` (called at the environment's first child's start).
pub fn build(cfg: &Config, env: usize, gen: u64) -> Result<Arc<View>, NamespaceError> {
    let (steps, sandbox) = plan::plan(cfg, env);
    let key = plan::key(cfg, env, &steps, &sandbox);
    Ok(Arc::new(start(cfg, env, gen, steps, sandbox, key)?))
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

fn start(
    cfg: &Config,
    env: usize,
    gen: u64,
    steps: Vec<Step>,
    sandbox: Sandbox,
    key: plan::Key,
) -> Result<View, NamespaceError> {
    let e = &cfg.environments[env];
    let name = e.name.as_str();
    let exe = std::env::current_exe().map_err(os(name, "finding our own binary"))?;
    let hidden = Mutex::new(plan::hidden(&steps));
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
        control: s.control,
        mnt,
        ipc,
        pid,
        sandbox,
        key,
        hidden,
        broken: AtomicBool::new(false),
    })
}

/// A holder is gone (the kernel killed what was left in its PID namespace): the view
/// is built again, from the newest configuration of the generations that shared it, and
/// given to all of them, so the environment's next children have a namespace to be
/// forked into. Returns whether `pid` was a holder.
pub(crate) fn holder_died(gens: &mut [crate::generation::Generation], pid: i32) -> bool {
    let users: Vec<(usize, usize)> = gens
        .iter()
        .enumerate()
        .flat_map(|(g, gen)| {
            gen.views
                .iter()
                .enumerate()
                .filter(|(_, v)| v.as_ref().is_some_and(|v| v.holder == pid))
                .map(move |(e, _)| (g, e))
        })
        .collect();
    let Some(&(g, env)) = users.last() else {
        return false;
    };
    let cfg = gens[g].cfg.clone();
    let name = &cfg.environments[env].name;
    tracing::error!(environment = %name, pid, "the private view's holder died; its processes are gone, building the view again");
    let (steps, sandbox) = plan::plan(&cfg, env);
    let key = plan::key(&cfg, env, &steps, &sandbox);
    // On failure the dead view stays: forking into its namespace fails, so the
    // environment's children fail to start rather than start without a view.
    match start(&cfg, env, gens[g].id, steps, sandbox, key) {
        Ok(v) => {
            let v = Arc::new(v);
            for (g, e) in users {
                gens[g].views[e] = Some(v.clone());
            }
        }
        Err(e) => tracing::error!("{e}; its children cannot start until the next reload"),
    }
    true
}

impl View {
    /// Has the holder cover every path of `want` this view does not cover yet.
    fn hide(&self, want: &BTreeSet<PathBuf>) -> Result<(), common::control::ControlError> {
        let mut hidden = self.hidden.lock().unwrap_or_else(|p| p.into_inner());
        let paths: Vec<PathBuf> = want.difference(&hidden).cloned().collect();
        if paths.is_empty() {
            return Ok(());
        }
        let asked = control::send(self.control.as_fd(), &ToChild::Hide { paths: paths.clone() }, &[]);
        let answer = asked.and_then(|()| {
            let mut rx = Receiver::with_max(1024);
            rx.recv_blocking::<FromChild>(self.control.as_fd(), 0, READY_TIMEOUT)
        });
        match answer {
            Ok((FromChild::Ready, _)) => {
                hidden.extend(paths);
                Ok(())
            }
            Ok(_) => {
                self.broken.store(true, Ordering::Relaxed);
                Err(common::control::ControlError::Empty)
            }
            Err(e) => {
                self.broken.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

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
