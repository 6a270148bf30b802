//! The supervisor's state: what a child is, the child table, the `Supervisor` struct,
//! and the look-ups and messages every part uses. Starting children is `start.rs`,
//! the event loop `run.rs`, reaping and replacement `reap.rs`, stopping `stop.rs`.
//! A new kind of child (a FastCGI backend) is a new [`Kind`] here.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use common::control::{self, ToChild};
use common::scoreboard::Segment;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tracing::warn;

use crate::bootstrap::Listeners;
use crate::generation::Generation;
use crate::reap::Restart;
use crate::run::Event;
use crate::stop::Stopping;

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
    /// A FastCGI backend of an environment: our exec until its bootstrap, then the
    /// environment's `command`, leading its own process group. No slot.
    Backend {
        env: usize,
    },
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
    pub(crate) fn new(
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

/// Pre-started processors awaiting an environment, for fast cold starts.
pub(crate) const SPARES: usize = 2;

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
    pub(crate) events_rx: mpsc::Receiver<Event>,
    pub(crate) started_ms: u64,
    pub(crate) limit_warned: bool,
    /// A `max_multiplexers` warning was logged.
    pub(crate) mux_limit_warned: bool,
    /// Per extra multiplexer: its accepted count and when that last changed.
    pub(crate) mux_seen: HashMap<i32, (u64, Instant)>,
    /// The error log file when `error_log` is set (also on the supervisor's fd 2, which
    /// multiplexers and spares inherit; processors log through their log pipe).
    pub(crate) errlog: Option<OwnedFd>,
    /// Per FastCGI backend pid: what the tick saw of it.
    pub(crate) backends: HashMap<i32, crate::fastcgi::Track>,
    /// systemd's notification socket (a no-op without one).
    pub(crate) notifier: crate::notify::Notifier,
    /// The environments' cgroups (`cgroup/`); empty when no environment has limits.
    pub(crate) cgroups: crate::cgroup::Groups,
}

pub(crate) fn role_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Multiplexer { .. } => "multiplexer",
        Kind::Processor { .. } | Kind::Spare => "processor",
        Kind::Backend { .. } => "fastcgi-backend",
    }
}

impl Supervisor {
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
            .filter(|c| !matches!(c.kind, Kind::Spare | Kind::Backend { .. }))
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

    /// Sends `msg` to every child `which` picks and marks it stopping.
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

    pub(crate) fn kill_all(&self, sig: Signal) {
        for (pid, c) in &self.children {
            if matches!(c.kind, Kind::Backend { .. }) {
                // Its process group: what the tenant's program forked goes too.
                let _ = kill(Pid::from_raw(-*pid), sig);
            }
            let _ = kill(Pid::from_raw(*pid), sig);
        }
    }
}
