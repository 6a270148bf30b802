//! The supervisor's event loop: the child table, starting and assigning processors,
//! reaping and replacing with backoff, readiness, and the ways of stopping (SIGTERM
//! graceful, SIGINT at once). Pool sizing lives in `maintain.rs`, reloads in `reload.rs`.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::control::{self, SlotAdd, ToChild};
use common::scoreboard::{self, slot, table, Segment};
use conf::Config;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::bootstrap::{self, Listeners};
use crate::generation::Generation;
use crate::logs::AccessLogs;
use crate::{listen, spawn, SupervisorError};

/// What a child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Multiplexer {
        index: u32,
    },
    Processor {
        env: usize,
    },
    /// Exec'd, waiting for a bootstrap: has read nothing from any client or tenant.
    Spare,
}

pub(crate) struct ChildSlot {
    /// Read-only mapping.
    pub seg: Segment,
    /// Read-only fd, dup'ed to multiplexers.
    pub ro_fd: OwnedFd,
    pub index: usize,
}

pub(crate) struct Child {
    pub kind: Kind,
    pub gen: u64,
    pub started: Instant,
    pub ready: bool,
    pub control: OwnedFd,
    pub slot: Option<ChildSlot>,
    /// Told to stop (retire or shutdown).
    pub stopping: bool,
    /// When a processor was assigned its environment (cold start clock).
    pub assigned: Option<Instant>,
}

impl Child {
    fn new(
        kind: Kind,
        gen: u64,
        control: OwnedFd,
        slot: Option<ChildSlot>,
        assigned: Option<Instant>,
    ) -> Child {
        Child {
            kind,
            gen,
            started: Instant::now(),
            ready: false,
            control,
            slot,
            stopping: false,
            assigned,
        }
    }
}

pub(crate) enum Event {
    Ready(i32),
    Spawn {
        pid: i32,
        env: u32,
    },
    /// The child broke the control protocol (see `watch.rs`): it is killed.
    Violation {
        pid: i32,
        why: String,
    },
}

/// A child that lived less than this counts as failing at start.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Consecutive start failures of one slot before `ready` that make the supervisor give up.
const GIVE_UP_BEFORE_READY: u32 = 5;
const EVENT_QUEUE: usize = 1024;
/// Pre-started processors awaiting an environment, for fast cold starts.
pub(crate) const SPARES: usize = 2;
/// The maintenance tick (as Apache's).
const TICK: Duration = Duration::from_secs(1);

/// Where a stop is.
pub(crate) enum Stopping {
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

/// Something to start again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Restart {
    Multiplexer { gen: u64, index: u32 },
    Processor { gen: u64, env: usize },
}

/// The running supervisor.
pub struct Supervisor {
    pub(crate) exe: PathBuf,
    pub(crate) config_path: PathBuf,
    pub(crate) privileged: bool,
    pub(crate) listeners: Listeners,
    /// Oldest first; the last is the current generation.
    pub(crate) gens: Vec<Generation>,
    pub(crate) children: HashMap<i32, Child>,
    pub(crate) pending: Vec<(Instant, Restart)>,
    pub(crate) backoff: HashMap<Restart, u32>,
    pub(crate) ready_logged: bool,
    pub(crate) stopping: Stopping,
    pub(crate) events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    pub(crate) started_ms: u64,
    pub(crate) limit_warned: bool,
    /// A `max_multiplexers` warning was logged.
    pub(crate) mux_limit_warned: bool,
    /// Per extra multiplexer: its accepted count and when that last changed.
    pub(crate) mux_seen: HashMap<i32, (u64, Instant)>,
    /// The error log file when `error_log` is set (also on the supervisor's fd 2, which
    /// multiplexers and spares inherit; processors log through their log pipe).
    pub(crate) errlog: Option<OwnedFd>,
}

pub(crate) fn role_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Multiplexer { .. } => "multiplexer",
        Kind::Processor { .. } | Kind::Spare => "processor",
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
        let errlog = crate::errlog::install(&cfg)?;
        let mut http = Vec::new();
        for addr in &cfg.server.listen {
            http.push(listen::bind_listener(*addr)?);
        }
        let metrics = match cfg.status.metrics_listen {
            Some(addr) => Some(listen::bind_listener(addr)?),
            None => None,
        };
        if let Some(path) = &cfg.server.pid_file {
            std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
                SupervisorError::PidFile {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        // A refused access log (a link planted by a tenant) must not keep everyone
        // else's sites down: that vhost logs nothing, the error says why.
        let (logs, errors) = AccessLogs::open_all(&cfg);
        for e in errors {
            error!("{e}; this vhost's requests are not logged");
        }
        let started_ms = scoreboard::now_ms();
        let config_path = cfg.path.clone();
        let gen = Generation::new(0, Arc::new(cfg), started_ms, logs)?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut sup = Supervisor {
            exe,
            config_path,
            privileged,
            listeners: Listeners { http, metrics },
            gens: vec![gen],
            children: HashMap::new(),
            pending: Vec::new(),
            backoff: HashMap::new(),
            ready_logged: false,
            stopping: Stopping::No,
            events_tx,
            events_rx,
            started_ms,
            limit_warned: false,
            mux_limit_warned: false,
            errlog,
            mux_seen: HashMap::new(),
        };
        sup.start_generation(0)?;
        Ok(sup)
    }

    pub(crate) fn gen(&self, id: u64) -> Option<&Generation> {
        self.gens.iter().find(|g| g.id == id)
    }

    pub(crate) fn gen_mut(&mut self, id: u64) -> Option<&mut Generation> {
        self.gens.iter_mut().find(|g| g.id == id)
    }

    pub(crate) fn min_multiplexers(&self, gen: u64) -> u32 {
        self.gen(gen)
            .map(|g| g.cfg.server.min_multiplexers.max(1))
            .unwrap_or(1)
    }

    pub(crate) fn current(&self) -> u64 {
        self.gens.last().map(|g| g.id).unwrap_or(0)
    }

    /// Starts a generation's multiplexers and first processors.
    pub(crate) fn start_generation(&mut self, id: u64) -> Result<(), SupervisorError> {
        let Some(g) = self.gen(id) else { return Ok(()) };
        let cfg = g.cfg.clone();
        for index in 0..cfg.server.min_multiplexers.max(1) {
            self.start_multiplexer(id, index)?;
        }
        for (env, e) in cfg.environments.iter().enumerate() {
            for _ in 0..e.start_processors {
                self.start_processor(id, env)?;
            }
        }
        Ok(())
    }

    /// Whether one more child fits under `server_limit`.
    pub(crate) fn under_limit(&mut self) -> bool {
        let limit = self
            .gens
            .last()
            .map(|g| g.cfg.server.server_limit)
            .unwrap_or(u32::MAX) as usize;
        let live = self
            .children
            .values()
            .filter(|c| !matches!(c.kind, Kind::Spare))
            .count();
        if live < limit {
            return true;
        }
        if !self.limit_warned {
            self.limit_warned = true;
            warn!(
                server_limit = limit,
                "server_limit reached: no more processors are started; raise server_limit"
            );
        }
        false
    }

    fn watch(&mut self, pid: i32, control: &OwnedFd, processor: bool) -> Result<(), SupervisorError> {
        let reader = control.try_clone().map_err(SupervisorError::Runtime)?;
        crate::watch::spawn(pid, reader, processor, self.events_tx.clone());
        Ok(())
    }

    fn spawn_child(&mut self, role: &'static str) -> Result<(i32, OwnedFd), SupervisorError> {
        let s = spawn::spawn(&self.exe, role)?;
        self.watch(s.pid, &s.control, role == "processor")?;
        Ok((s.pid, s.control))
    }

    pub(crate) fn start_multiplexer(&mut self, gen: u64, index: u32) -> Result<(), SupervisorError> {
        let (pid, control) = self.spawn_child("multiplexer")?;
        let (rw, ro) = scoreboard::create("bulkhead-slot", slot::words(0))?;
        let seg = Segment::map(&ro, false)?;
        let Some(g) = self.gen_mut(gen) else { return Ok(()) };
        let Some(reg) = g.register(pid as u32) else {
            error!("scoreboard registry full; multiplexer not started");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return Ok(());
        };
        let Some(g) = self.gen(gen) else { return Ok(()) };
        let (boot, fds) = bootstrap::multiplexer(g, &self.listeners, &rw, self.privileged);
        if let Err(e) = control::send(control.as_fd(), &ToChild::Bootstrap(Box::new(boot)), &fds) {
            error!(pid, "sending multiplexer bootstrap: {e}");
        }
        drop(rw);
        // Every slot of its generation, this one included, so its status page is whole.
        let mut add = Vec::new();
        let mut ro_fds = Vec::new();
        for (p, c) in &self.children {
            if c.gen == gen {
                if let Some(s) = &c.slot {
                    add.push(slot_add(*p, c.kind, s.index));
                    ro_fds.push(s.ro_fd.as_raw_fd());
                }
            }
        }
        add.push(SlotAdd {
            pid: pid as u32,
            env: u32::MAX,
            index: reg as u32,
        });
        ro_fds.push(ro.as_raw_fd());
        for (chunk_add, chunk_fds) in add.chunks(200).zip(ro_fds.chunks(200)) {
            let msg = ToChild::Slots {
                add: chunk_add.to_vec(),
                remove: Vec::new(),
            };
            if let Err(e) = control::send(control.as_fd(), &msg, chunk_fds) {
                error!(pid, "sending slots: {e}");
            }
        }
        let kind = Kind::Multiplexer { index };
        self.announce(gen, pid, kind, reg, &ro, Some(pid));
        self.children.insert(
            pid,
            Child::new(
                kind,
                gen,
                control,
                Some(ChildSlot {
                    seg,
                    ro_fd: ro,
                    index: reg,
                }),
                None,
            ),
        );
        Ok(())
    }

    /// Tells the multiplexers of `gen` (but `except`) about a new slot.
    fn announce(&self, gen: u64, pid: i32, kind: Kind, index: usize, ro: &OwnedFd, except: Option<i32>) {
        let msg = ToChild::Slots {
            add: vec![slot_add(pid, kind, index)],
            remove: Vec::new(),
        };
        for (p, c) in &self.children {
            if c.gen == gen && matches!(c.kind, Kind::Multiplexer { .. }) && Some(*p) != except && !c.stopping
            {
                if let Err(e) = control::send(c.control.as_fd(), &msg, &[ro.as_raw_fd()]) {
                    warn!(pid = p, "announcing a slot: {e}");
                }
            }
        }
    }

    /// Starts a spare: exec'd, waiting for a bootstrap.
    pub(crate) fn start_spare(&mut self) -> Result<(), SupervisorError> {
        let (pid, control) = self.spawn_child("processor")?;
        self.children
            .insert(pid, Child::new(Kind::Spare, 0, control, None, None));
        Ok(())
    }

    /// Gives environment `env` of generation `gen` one more processor: a spare when one
    /// is waiting, else a fresh one.
    pub(crate) fn start_processor(&mut self, gen: u64, env: usize) -> Result<(), SupervisorError> {
        let spare = self
            .children
            .iter()
            .find(|(_, c)| matches!(c.kind, Kind::Spare))
            .map(|(p, _)| *p);
        let (pid, control) = match spare.and_then(|p| self.children.remove(&p).map(|c| (p, c.control))) {
            Some(pc) => pc,
            None => self.spawn_child("processor")?,
        };
        let Some(g) = self.gen(gen) else { return Ok(()) };
        let sites = g.cfg.vhosts.iter().filter(|v| v.environment == env).count();
        let (rw, ro) = scoreboard::create("bulkhead-slot", slot::words(sites))?;
        let seg = Segment::map(&ro, false)?;
        let g = self
            .gen_mut(gen)
            .ok_or(SupervisorError::Runtime(std::io::ErrorKind::NotFound.into()))?;
        let Some(reg) = g.register(pid as u32) else {
            error!("scoreboard registry full; processor not started");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return Ok(());
        };
        g.table.add(table::env_word(env, table::env::SPAWNS), 1);
        let g = self
            .gen(gen)
            .ok_or(SupervisorError::Runtime(std::io::ErrorKind::NotFound.into()))?;
        let (boot, fds) = bootstrap::processor(g, env, &rw, &g.logs, self.privileged);
        if let Err(e) = control::send(control.as_fd(), &ToChild::Bootstrap(Box::new(boot)), &fds) {
            error!(pid, "sending processor bootstrap: {e}");
        }
        drop(rw);
        let kind = Kind::Processor { env };
        self.announce(gen, pid, kind, reg, &ro, None);
        let slot = Some(ChildSlot {
            seg,
            ro_fd: ro,
            index: reg,
        });
        self.children
            .insert(pid, Child::new(kind, gen, control, slot, Some(Instant::now())));
        Ok(())
    }

    /// Runs until stopped; returns the exit code.
    pub async fn run(mut self) -> Result<i32, SupervisorError> {
        let mut sigterm = signal(SignalKind::terminate()).map_err(SupervisorError::Signal)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(SupervisorError::Signal)?;
        let mut sigchld = signal(SignalKind::child()).map_err(SupervisorError::Signal)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(SupervisorError::Signal)?;
        let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(SupervisorError::Signal)?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = sighup.recv() => self.reload(),
                _ = sigusr1.recv() => self.reopen_logs(),
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                _ = tokio::time::sleep_until(respawn_at.into()) => self.respawn_due(),
                _ = tokio::time::sleep_until(stop_at.into()) => self.stop_deadline(),
                _ = tick.tick() => if matches!(self.stopping, Stopping::No) { self.maintain() },
            }
            self.advance_generations();
            if let Some(code) = self.advance_stop() {
                if let Some(path) = self.gens.last().and_then(|g| g.cfg.server.pid_file.clone()) {
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
                let Some(c) = self.children.get_mut(&pid) else {
                    return;
                };
                c.ready = true;
                if let (Kind::Processor { env }, Some(t)) = (c.kind, c.assigned.take()) {
                    let us = t.elapsed().as_micros() as u64;
                    let gen = c.gen;
                    if let Some(g) = self.gen(gen) {
                        g.table.add(table::env_word(env, table::env::COLD_STARTS), 1);
                        g.table.add(table::env_word(env, table::env::COLD_START_US), us);
                    }
                }
                if !self.ready_logged && self.generation_ready(0) {
                    self.ready_logged = true;
                    let addrs: Vec<String> = self.listeners.http.iter().map(|(a, _)| a.to_string()).collect();
                    let metrics = match &self.listeners.metrics {
                        Some((a, _)) => format!("; metrics on {a}"),
                        None => String::new(),
                    };
                    info!(
                        pid = std::process::id(),
                        children = self.children.len(),
                        "ready: listening on {}{metrics}",
                        addrs.join(", ")
                    );
                    for _ in 0..SPARES {
                        if let Err(e) = self.start_spare() {
                            warn!("starting a spare processor: {e}");
                        }
                    }
                }
            }
            Event::Spawn { pid, env } => {
                let Some(c) = self.children.get(&pid) else { return };
                if !matches!(c.kind, Kind::Multiplexer { .. }) {
                    return;
                }
                let gen = c.gen;
                let envs = self.gen(gen).map(|g| g.cfg.environments.len()).unwrap_or(0);
                if env as usize >= envs {
                    error!(
                        pid,
                        env, "multiplexer asked for a processor of an unknown environment (a bug): refused"
                    );
                    return;
                }
                self.spawn_on_demand(gen, env as usize);
            }
            Event::Violation { pid, why } => {
                // Still in the table, so not reaped: the pid is still this child.
                let Some(c) = self.children.get(&pid) else { return };
                match c.kind {
                    Kind::Multiplexer { .. } => {
                        error!(
                            pid,
                            "multiplexer broke the control protocol (a bug): {why}; killing it"
                        )
                    }
                    _ => warn!(
                        pid,
                        "processor sent an invalid control message: {why}; killing it"
                    ),
                }
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// A multiplexer found no room in `env`: start a processor unless one is starting
    /// already or the pool is at its maximum.
    fn spawn_on_demand(&mut self, gen: u64, env: usize) {
        if !matches!(self.stopping, Stopping::No) || gen != self.current() {
            return;
        }
        let Some(max) = self
            .gen(gen)
            .and_then(|g| g.cfg.environments.get(env))
            .map(|e| e.max_processors)
        else {
            return;
        };
        let pool: Vec<&Child> = self
            .children
            .values()
            .filter(|c| c.gen == gen && c.kind == (Kind::Processor { env }) && !c.stopping)
            .collect();
        // One is starting, or a replacement is already scheduled (after a crash the
        // backoff decides, not the request rate).
        if pool.iter().any(|c| !c.ready)
            || self
                .pending
                .iter()
                .any(|(_, r)| *r == Restart::Processor { gen, env })
        {
            return;
        }
        if pool.len() as u32 >= max {
            return;
        }
        if self.under_limit() {
            if let Err(e) = self.start_processor(gen, env) {
                error!(env, "starting a processor on demand: {e}");
            }
        }
    }

    /// A generation's first children (multiplexers and start_processors) are all up.
    fn generation_ready(&self, gen: u64) -> bool {
        let Some(g) = self.gen(gen) else { return false };
        let muxes = self
            .children
            .values()
            .filter(|c| c.gen == gen && matches!(c.kind, Kind::Multiplexer { .. }) && c.ready)
            .count();
        if muxes < g.cfg.server.min_multiplexers.max(1) as usize {
            return false;
        }
        g.cfg.environments.iter().enumerate().all(|(env, e)| {
            let up = self
                .children
                .values()
                .filter(|c| c.gen == gen && c.kind == (Kind::Processor { env }) && c.ready)
                .count();
            up >= e.start_processors as usize
        })
    }

    fn reap(&mut self) -> Result<(), SupervisorError> {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(s) => s,
            };
            let (pid, how, clean) = match status {
                WaitStatus::Exited(p, code) => (p.as_raw(), format!("exit status {code}"), code == 0),
                WaitStatus::Signaled(p, sig, _) => (p.as_raw(), format!("signal {sig}"), false),
                _ => continue,
            };
            let Some(child) = self.children.remove(&pid) else {
                continue;
            };
            self.retire_slot(pid, &child);
            if !matches!(self.stopping, Stopping::No) {
                info!(pid, role = role_name(child.kind), "{how} while stopping");
                continue;
            }
            let retiring = self.gen(child.gen).map(|g| g.retiring).unwrap_or(true);
            let restart = match child.kind {
                // Multiplexers above the minimum were started for load: not replaced.
                Kind::Multiplexer { index } if !retiring && index < self.min_multiplexers(child.gen) => {
                    Some(Restart::Multiplexer {
                        gen: child.gen,
                        index,
                    })
                }
                Kind::Processor { env } if !retiring => {
                    let min = self
                        .gen(child.gen)
                        .and_then(|g| g.cfg.environments.get(env))
                        .map(|e| e.min_processors)
                        .unwrap_or(0);
                    let left = self
                        .children
                        .values()
                        .filter(|c| c.gen == child.gen && c.kind == (Kind::Processor { env }) && !c.stopping)
                        .count();
                    (left < min as usize).then_some(Restart::Processor { gen: child.gen, env })
                }
                _ => None,
            };
            if child.stopping || (clean && restart.is_none()) {
                info!(pid, role = role_name(child.kind), "{how}");
                continue;
            }
            let Some(restart) = restart else {
                if !clean {
                    warn!(
                        pid,
                        role = role_name(child.kind),
                        "child died ({how}); the pool starts another on demand"
                    );
                }
                continue;
            };
            let failures = self.backoff.entry(restart).or_default();
            if clean || child.started.elapsed() >= HEALTHY_AFTER {
                *failures = 0;
            } else {
                *failures += 1;
            }
            let failures = *failures;
            if !self.ready_logged && failures >= GIVE_UP_BEFORE_READY {
                self.kill_all(Signal::SIGKILL);
                return Err(SupervisorError::StartFailures {
                    role: format!("{restart:?}"),
                    failures,
                });
            }
            let delay = match failures {
                0 => Duration::ZERO,
                n => (Duration::from_millis(100) * 2u32.saturating_pow(n - 1)).min(MAX_BACKOFF),
            };
            if clean {
                info!(pid, role = role_name(child.kind), "{how}; replacing");
            } else {
                warn!(
                    pid,
                    role = role_name(child.kind),
                    "child died ({how}); replacing in {delay:?}"
                );
            }
            self.pending.push((Instant::now() + delay, restart));
        }
    }

    /// A child is gone: fold its counters into the retired totals and tell the
    /// multiplexers to drop its slot.
    fn retire_slot(&mut self, pid: i32, child: &Child) {
        let Some(s) = &child.slot else { return };
        let env = match child.kind {
            Kind::Processor { env } => Some(env),
            _ => None,
        };
        let gen = child.gen;
        if let Some(g) = self.gen_mut(gen) {
            g.retire(s.index, env, Some(&s.seg));
        }
        let msg = ToChild::Slots {
            add: Vec::new(),
            remove: vec![pid as u32],
        };
        for c in self.children.values() {
            if c.gen == gen && matches!(c.kind, Kind::Multiplexer { .. }) {
                let _ = control::send(c.control.as_fd(), &msg, &[]);
            }
        }
    }

    fn respawn_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| *t <= now);
        self.pending = later;
        for (_, restart) in due {
            let r = match restart {
                Restart::Multiplexer { gen, index } => self.start_multiplexer(gen, index),
                Restart::Processor { gen, env } => self.start_processor(gen, env),
            };
            if let Err(e) = r {
                error!(?restart, "restarting: {e}");
                self.pending.push((now + MAX_BACKOFF, restart));
            }
        }
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
        let timeout = self
            .gens
            .last()
            .map(|g| g.cfg.server.shutdown_timeout)
            .unwrap_or(Duration::from_secs(30));
        info!(?timeout, "SIGTERM: finishing in-flight requests, then stopping");
        // Stop accepting: the multiplexers close their listeners and finish their hand-offs.
        self.listeners.http.clear();
        self.listeners.metrics = None;
        let spares: Vec<i32> = self
            .children
            .iter()
            .filter(|(_, c)| matches!(c.kind, Kind::Spare))
            .map(|(p, _)| *p)
            .collect();
        for p in spares {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        self.tell(|c| matches!(c.kind, Kind::Multiplexer { .. }), &ToChild::Shutdown);
        self.stopping = Stopping::Multiplexers {
            deadline: Instant::now() + timeout,
        };
    }

    pub(crate) fn tell(&mut self, which: impl Fn(&Child) -> bool, msg: &ToChild) {
        for (pid, c) in self.children.iter_mut() {
            if which(c) {
                c.stopping = true;
                if let Err(e) = control::send(c.control.as_fd(), msg, &[]) {
                    warn!(pid, "sending {msg:?}: {e}");
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
                .any(|c| matches!(c.kind, Kind::Multiplexer { .. }))
            {
                // No multiplexer can hand off any more: close our ends so a processor that
                // drains its queue sees the end of it, then tell the processors.
                for g in &self.gens {
                    for (m, _) in &g.env_sockets {
                        let _ = nix::sys::socket::shutdown(m.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                    }
                }
                self.tell(|c| matches!(c.kind, Kind::Processor { .. }), &ToChild::Shutdown);
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

    pub(crate) fn kill_all(&self, sig: Signal) {
        for pid in self.children.keys() {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
    }
}

fn slot_add(pid: i32, kind: Kind, index: usize) -> SlotAdd {
    let env = match kind {
        Kind::Processor { env } => env as u32,
        _ => u32::MAX,
    };
    SlotAdd {
        pid: pid as u32,
        env,
        index: index as u32,
    }
}
