//! The supervisor's event loop: the child table, reaping and replacing with backoff,
//! readiness, and the two ways of stopping (SIGTERM graceful, SIGINT at once).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::control::{self, AsyncChannel, FromChild, ToChild};
use conf::Config;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::plan::{self, Resources};
use crate::{listen, spawn, SupervisorError};

/// A place in the process table that is kept filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Multiplexer(u32),
    Processor { env: usize, index: u32 },
}

struct Child {
    slot: Slot,
    started: Instant,
    ready: bool,
    /// For sending; the reader task owns a duplicate.
    control: OwnedFd,
}

#[derive(Default, Clone, Copy)]
struct Backoff {
    failures: u32,
}

enum Event {
    Ready(i32),
}

/// A child that lived less than this counts as failing at start.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Consecutive start failures of one slot before `ready` that make the supervisor give up.
const GIVE_UP_BEFORE_READY: u32 = 5;
const EVENT_QUEUE: usize = 1024;

/// Where a stop is.
enum Stopping {
    No,
    /// Multiplexers are draining; processors are told once they are gone.
    Multiplexers {
        deadline: Instant,
    },
    /// Processors are draining.
    Processors {
        deadline: Instant,
    },
    /// Everything was SIGKILLed; waiting to reap.
    Killed {
        deadline: Instant,
    },
}

/// The running supervisor.
pub struct Supervisor {
    cfg: Config,
    exe: PathBuf,
    privileged: bool,
    res: Resources,
    children: HashMap<i32, Child>,
    pending: Vec<(Instant, Slot)>,
    backoff: HashMap<Slot, Backoff>,
    initial: Vec<Slot>,
    ready_logged: bool,
    stopping: Stopping,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
}

fn role_name(slot: Slot) -> &'static str {
    match slot {
        Slot::Multiplexer(_) => "multiplexer",
        Slot::Processor { .. } => "processor",
    }
}

impl Supervisor {
    /// Binds every listener and starts the first children.
    pub fn start(cfg: Config, exe: PathBuf) -> Result<Self, SupervisorError> {
        let privileged = nix::unistd::geteuid().is_root();
        if !privileged {
            warn!(
                uid = nix::unistd::getuid().as_raw(),
                "not running as root: every process runs as this user; isolation between environments is OFF"
            );
        }
        let mut listeners = Vec::new();
        for addr in &cfg.server.listen {
            listeners.push(listen::bind_listener(*addr)?);
        }
        let mut env_sockets = Vec::new();
        for e in &cfg.environments {
            let pair = common::seqpacket::seqpacket_pair().map_err(|source| SupervisorError::Pair {
                env: e.name.clone(),
                source,
            })?;
            env_sockets.push(pair);
        }
        if let Some(path) = &cfg.server.pid_file {
            std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
                SupervisorError::PidFile {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        let mut initial = Vec::new();
        for i in 0..cfg.server.min_multiplexers.max(1) {
            initial.push(Slot::Multiplexer(i));
        }
        for (env, e) in cfg.environments.iter().enumerate() {
            for index in 0..e.min_processors.max(1) {
                initial.push(Slot::Processor { env, index });
            }
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut sup = Supervisor {
            cfg,
            exe,
            privileged,
            res: Resources {
                listeners,
                env_sockets,
            },
            children: HashMap::new(),
            pending: Vec::new(),
            backoff: HashMap::new(),
            initial: initial.clone(),
            ready_logged: false,
            stopping: Stopping::No,
            events_tx,
            events_rx,
        };
        for slot in initial {
            sup.start_slot(slot)?;
        }
        Ok(sup)
    }

    fn start_slot(&mut self, slot: Slot) -> Result<(), SupervisorError> {
        let role = role_name(slot);
        let (boot, fds) = match slot {
            Slot::Multiplexer(_) => plan::multiplexer(&self.cfg, &self.res, self.privileged),
            Slot::Processor { env, .. } => plan::processor(&self.cfg, &self.res, env, self.privileged),
        };
        let spawned = spawn::spawn(&self.exe, role)?;
        let pid = spawned.pid;
        if let Err(e) = control::send(spawned.control.as_fd(), &ToChild::Bootstrap(Box::new(boot)), &fds) {
            // The child will exit on its own when its channel closes; it is reaped as a failure.
            error!(pid, role, "sending bootstrap: {e}");
        }
        let reader = spawned.control.try_clone().map_err(SupervisorError::Runtime)?;
        let tx = self.events_tx.clone();
        match AsyncChannel::new(reader) {
            Ok(mut chan) => {
                tokio::spawn(async move {
                    while let Ok((msg, _fds)) = chan.recv::<FromChild>(0).await {
                        match msg {
                            FromChild::Ready => {
                                if tx.send(Event::Ready(pid)).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            Err(e) => error!(pid, role, "watching control channel: {e}"),
        }
        self.children.insert(
            pid,
            Child {
                slot,
                started: Instant::now(),
                ready: false,
                control: spawned.control,
            },
        );
        Ok(())
    }

    /// Runs until stopped; returns the exit code.
    pub async fn run(mut self) -> Result<i32, SupervisorError> {
        let mut sigterm = signal(SignalKind::terminate()).map_err(SupervisorError::Signal)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(SupervisorError::Signal)?;
        let mut sigchld = signal(SignalKind::child()).map_err(SupervisorError::Signal)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(SupervisorError::Signal)?;
        // A child may have died before the handler was installed.
        self.reap()?;
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            let respawn_at = self.pending.iter().map(|(t, _)| *t).min().unwrap_or(far);
            let stop_at = match self.stopping {
                Stopping::No => far,
                Stopping::Multiplexers { deadline }
                | Stopping::Processors { deadline }
                | Stopping::Killed { deadline } => deadline,
            };
            tokio::select! {
                _ = sigterm.recv() => self.begin_stop(true),
                _ = sigint.recv() => self.begin_stop(false),
                _ = sigchld.recv() => self.reap()?,
                _ = sighup.recv() => warn!("SIGHUP: reload is not implemented yet; the running configuration stays"),
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                _ = tokio::time::sleep_until(respawn_at.into()) => self.respawn_due()?,
                _ = tokio::time::sleep_until(stop_at.into()) => self.stop_deadline(),
            }
            if let Some(code) = self.advance_stop() {
                if let Some(path) = &self.cfg.server.pid_file {
                    let _ = std::fs::remove_file(path);
                }
                info!("stopped");
                return Ok(code);
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Ready(pid) => {
                if let Some(c) = self.children.get_mut(&pid) {
                    c.ready = true;
                }
                if !self.ready_logged && self.initial_ready() {
                    self.ready_logged = true;
                    let addrs: Vec<String> = self.res.listeners.iter().map(|(a, _)| a.to_string()).collect();
                    info!(
                        pid = std::process::id(),
                        children = self.children.len(),
                        "ready: listening on {}",
                        addrs.join(", ")
                    );
                }
            }
        }
    }

    fn initial_ready(&self) -> bool {
        self.initial
            .iter()
            .all(|slot| self.children.values().any(|c| c.slot == *slot && c.ready))
    }

    fn reap(&mut self) -> Result<(), SupervisorError> {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(s) => s,
            };
            let (pid, how) = match status {
                WaitStatus::Exited(p, code) => (p.as_raw(), format!("exit status {code}")),
                WaitStatus::Signaled(p, sig, _) => (p.as_raw(), format!("signal {sig}")),
                _ => continue,
            };
            let Some(child) = self.children.remove(&pid) else {
                continue;
            };
            if !matches!(self.stopping, Stopping::No) {
                info!(pid, role = role_name(child.slot), "{how} while stopping");
                continue;
            }
            let b = self.backoff.entry(child.slot).or_default();
            if child.started.elapsed() < HEALTHY_AFTER {
                b.failures += 1;
            } else {
                b.failures = 0;
            }
            if !self.ready_logged && b.failures >= GIVE_UP_BEFORE_READY {
                let role = format!("{:?}", child.slot);
                let failures = b.failures;
                self.kill_all(Signal::SIGKILL);
                return Err(SupervisorError::StartFailures { role, failures });
            }
            let delay = match b.failures {
                0 => Duration::ZERO,
                n => (Duration::from_millis(100) * 2u32.saturating_pow(n - 1)).min(MAX_BACKOFF),
            };
            warn!(pid, role = role_name(child.slot), slot = ?child.slot, "child died ({how}); replacing in {delay:?}");
            self.pending.push((Instant::now() + delay, child.slot));
        }
    }

    fn respawn_due(&mut self) -> Result<(), SupervisorError> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| *t <= now);
        self.pending = later;
        for (_, slot) in due {
            if let Err(e) = self.start_slot(slot) {
                error!(slot = ?slot, "restarting: {e}");
                self.pending.push((now + MAX_BACKOFF, slot));
            }
        }
        Ok(())
    }

    fn begin_stop(&mut self, graceful: bool) {
        self.pending.clear();
        if !graceful {
            info!("SIGINT: stopping now");
            self.kill_all(Signal::SIGKILL);
            self.stopping = Stopping::Killed {
                deadline: Instant::now() + Duration::from_secs(5),
            };
            return;
        }
        if !matches!(self.stopping, Stopping::No) {
            return;
        }
        info!(timeout = ?self.cfg.server.shutdown_timeout, "SIGTERM: finishing in-flight requests, then stopping");
        // Stop accepting: the multiplexers close their listeners and finish their hand-offs.
        self.res.listeners.clear();
        self.tell(|s| matches!(s, Slot::Multiplexer(_)));
        self.stopping = Stopping::Multiplexers {
            deadline: Instant::now() + self.cfg.server.shutdown_timeout,
        };
    }

    fn tell(&self, which: impl Fn(Slot) -> bool) {
        for (pid, c) in &self.children {
            if which(c.slot) {
                if let Err(e) = control::send(c.control.as_fd(), &ToChild::Shutdown, &[]) {
                    warn!(pid, "sending shutdown: {e}");
                }
            }
        }
    }

    /// Moves the stop along; returns the exit code once every child is gone.
    fn advance_stop(&mut self) -> Option<i32> {
        if let Stopping::Multiplexers { deadline } = self.stopping {
            if !self
                .children
                .values()
                .any(|c| matches!(c.slot, Slot::Multiplexer(_)))
            {
                // No multiplexer can hand off any more: close our ends so a processor that
                // drains its queue sees the end of it, then tell the processors.
                for (m, _) in &mut self.res.env_sockets {
                    let _ = nix::sys::socket::shutdown(m.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                }
                self.tell(|s| matches!(s, Slot::Processor { .. }));
                self.stopping = Stopping::Processors { deadline };
            }
        }
        (!matches!(self.stopping, Stopping::No) && self.children.is_empty()).then_some(0)
    }

    fn stop_deadline(&mut self) {
        match self.stopping {
            Stopping::No => {}
            Stopping::Killed { .. } => {
                error!(left = self.children.len(), "children did not die after SIGKILL");
                self.children.clear();
            }
            _ => {
                warn!(
                    left = self.children.len(),
                    "shutdown_timeout reached: killing what is left"
                );
                self.kill_all(Signal::SIGKILL);
                self.stopping = Stopping::Killed {
                    deadline: Instant::now() + Duration::from_secs(5),
                };
            }
        }
    }

    fn kill_all(&self, sig: Signal) {
        for pid in self.children.keys() {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
    }
}
