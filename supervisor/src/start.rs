//! Starting children: the supervisor itself (listeners, pid file, the first
//! generation), a generation's first children, multiplexers, processors (a spare
//! assigned when one waits, else a fresh exec), spares, and the slot announcements
//! to the multiplexers. Where a child is put into its environment's cgroup, it is
//! here, between its exec and its bootstrap.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use common::control::{self, SlotAdd, ToChild};
use common::scoreboard::{self, slot, table, Segment};
use conf::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::bootstrap::{self, Listeners};
use crate::generation::Generation;
use crate::logs::AccessLogs;
use crate::reap::Restart;
use crate::state::{Child, ChildSlot, Kind, Supervisor};
use crate::stop::Stopping;
use crate::{spawn, SupervisorError};

/// Room for events from the children's control channels.
const EVENT_QUEUE: usize = 1024;

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
        let cgroups = crate::cgroup::Groups::setup(&cfg)?;
        let mut http = Vec::new();
        for addr in &cfg.server.listen {
            http.push(crate::activation::listener(*addr)?);
        }
        let mut tls = Vec::new();
        for addr in &cfg.server.listen_tls {
            tls.push(crate::activation::listener(*addr)?);
        }
        let metrics = match cfg.status.metrics_listen {
            Some(addr) => Some(crate::activation::listener(addr)?),
            None => None,
        };
        let slots = crate::reuseport::SlotSockets::build(
            http.iter().chain(&tls),
            cfg.server.min_multiplexers,
            &Default::default(),
        );
        if let Some(path) = &cfg.server.pid_file {
            write_pid_file(path)?;
        }
        // A refused access log (a link planted by a tenant) must not keep everyone
        // else's sites down: that vhost logs nothing, the error says why.
        let (logs, errors) = AccessLogs::open_all(&cfg);
        for e in errors {
            error!("{e}; this vhost's requests are not logged");
        }
        let started_ms = scoreboard::now_ms();
        let config_path = cfg.path.clone();
        let mut gen = Generation::new(0, Arc::new(cfg), started_ms, logs, privileged, None)?;
        gen.keepers = Some(crate::keeper::Keepers::start(&exe, &gen.cfg, 0, privileged)?);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut sup = Supervisor {
            exe,
            config_path,
            privileged,
            listeners: Listeners {
                http,
                tls,
                metrics,
                slots,
            },
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
            backends: HashMap::new(),
            notifier: crate::notify::Notifier::new(),
            cgroups,
        };
        sup.start_generation(0)?;
        release_freed_memory();
        Ok(sup)
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
        self.start_backends(id)?;
        Ok(())
    }

    fn watch(&mut self, pid: i32, control: &OwnedFd, role: &'static str) -> Result<(), SupervisorError> {
        let reader = control.try_clone().map_err(SupervisorError::Runtime)?;
        crate::watch::spawn(pid, reader, role, self.events_tx.clone());
        Ok(())
    }

    fn spawn_child(&mut self, role: &'static str) -> Result<(i32, OwnedFd), SupervisorError> {
        let s = spawn::spawn(&self.exe, role)?;
        self.watch(s.pid, &s.control, role)?;
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
        // Its environments' ends come from the generation's keeper, on this socket.
        let stream = g.keepers()?.multiplexer_stream()?;
        let (boot, fds) = bootstrap::multiplexer(g, &self.listeners, index, &rw, &stream, self.privileged);
        if let Err(e) = control::send(control.as_fd(), &ToChild::Bootstrap(Box::new(boot)), &fds) {
            error!(pid, "sending multiplexer bootstrap: {e}");
        }
        drop(rw);
        drop(stream);
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
        // A private view: a fresh exec forked into its PID namespace (a spare was
        // forked into ours and cannot move).
        let viewed = self.gen(gen).is_some_and(|g| g.viewed(env));
        // Its log pipe before any child exists (the first processor of an
        // environment makes it).
        self.gen(gen).map(|g| g.log_pipe(env).map(drop)).transpose()?;
        let spare = self
            .children
            .iter()
            .find(|(_, c)| matches!(c.kind, Kind::Spare) && !viewed)
            .map(|(p, _)| *p);
        let (pid, control) = match spare.and_then(|p| self.children.remove(&p).map(|c| (p, c.control))) {
            Some(pc) => pc,
            None if viewed => {
                let exe = self.exe.clone();
                let g = self
                    .gen_mut(gen)
                    .ok_or(SupervisorError::Runtime(std::io::ErrorKind::NotFound.into()))?;
                // The environment's first child builds its view.
                let s = match g.ensure_view(env)? {
                    Some(v) => v.spawn(&exe, "processor")?,
                    None => spawn::spawn(&exe, "processor")?,
                };
                self.watch(s.pid, &s.control, "processor")?;
                (s.pid, s.control)
            }
            None => self.spawn_child("processor")?,
        };
        let Some(g) = self.gen(gen) else { return Ok(()) };
        // Into its environment's cgroup before its bootstrap: it runs no tenant code yet.
        if let Err(e) = self.cgroups.attach(&g.cfg.environments[env].name, pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(e.into());
        }
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
        // Its environment's end, from the keeper: the supervisor's copy lives only
        // until the bootstrap is sent.
        let end = match g.keepers().and_then(|k| Ok(k.processor_end(env)?)) {
            Ok(end) => end,
            Err(e) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(e);
            }
        };
        let (boot, fds) = bootstrap::processor(
            g,
            env,
            g.log_pipe(env)?,
            end.as_fd(),
            &rw,
            &g.logs,
            self.privileged,
        );
        if let Err(e) = control::send(control.as_fd(), &ToChild::Bootstrap(Box::new(boot)), &fds) {
            error!(pid, "sending processor bootstrap: {e}");
        }
        drop(rw);
        drop(end);
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

    /// Tells every ready processor of environment `env` of generation `gen` how many
    /// there are (`ToChild::Peers`): with more than one, none keeps a FastCGI backend
    /// connection, and one near `max_requests_per_child` hands over to its successor.
    /// Without waiting: a processor that does not read its channel misses the advice
    /// and harms only its own environment.
    pub(crate) fn tell_peers(&self, gen: u64, env: usize) {
        let pool: Vec<&Child> = self
            .children
            .values()
            .filter(|c| c.gen == gen && c.kind == (Kind::Processor { env }) && c.ready)
            .collect();
        let msg = ToChild::Peers {
            processors: pool.len() as u32,
        };
        for c in pool {
            let _ = control::try_send(c.control.as_fd(), &msg);
        }
    }

    /// A multiplexer found no room in `env`: start a processor unless one is starting
    /// already or the pool is at its maximum.
    pub(crate) fn spawn_on_demand(&mut self, gen: u64, env: usize) {
        if !matches!(self.stopping, Stopping::No) {
            return;
        }
        // A generation a reload replaces may still have a connection queued for an
        // environment none of its processors serves (taken just before its
        // multiplexers stopped accepting, or a hand-back): only its own processors
        // can take it, so until its queues close it gets one, told at once to close
        // each connection after its answer.
        let old_phase = match self.gen(gen) {
            Some(g) if g.id == self.current() => None,
            Some(g) if g.retiring && g.retire_phase < 2 => Some(g.retire_phase),
            _ => return,
        };
        if old_phase.is_some()
            && self
                .children
                .values()
                .any(|c| c.gen == gen && c.kind == (Kind::Processor { env }) && !c.stopping)
        {
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
                return;
            }
            if old_phase.is_some_and(|p| p >= 1) {
                let newest = self
                    .children
                    .iter()
                    .filter(|(_, c)| c.gen == gen && c.kind == (Kind::Processor { env }))
                    .max_by_key(|(_, c)| c.started)
                    .map(|(p, _)| *p);
                if let Some(c) = newest.and_then(|p| self.children.get(&p)) {
                    let _ = control::send(c.control.as_fd(), &ToChild::Graceful, &[]);
                }
            }
        }
    }
}

/// Gives the allocator's free pages back to the kernel: loading a configuration of
/// 10,000 environments frees about as much as it keeps (the TOML document, the
/// validation's tables), which glibc would otherwise hold for the process's life.
pub(crate) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
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

/// Writes our pid to `path` the way root opens every file: no symlink followed, only a
/// regular single-link file (a pid file left in a directory someone else can write
/// cannot be turned into a write to another file), then truncated and rewritten.
fn write_pid_file(path: &std::path::Path) -> Result<(), SupervisorError> {
    use std::io::Write;
    let err = |source: std::io::Error| SupervisorError::PidFile {
        path: path.to_path_buf(),
        source,
    };
    let mut f = crate::safe_open::open_append(path).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    f.set_len(0).map_err(err)?;
    f.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(err)
}
