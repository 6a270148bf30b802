//! Stopping: SIGTERM (graceful: multiplexers first, then the environment sockets'
//! writers are closed and the processors drain, all within `shutdown_timeout`) and
//! SIGINT (SIGKILL at once). Where systemd's `STOPPING=1` will be sent: `begin_stop`.

use std::time::{Duration, Instant};

use common::control::ToChild;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::state::{Kind, Supervisor};

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

impl Stopping {
    /// When the current stage runs out of time.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Stopping::No => None,
            Stopping::Multiplexers { deadline }
            | Stopping::Processors { deadline }
            | Stopping::Killed { deadline } => Some(*deadline),
        }
    }
}

impl Supervisor {
    /// SIGTERM (`graceful`) or SIGINT.
    pub(crate) fn begin_stop(&mut self, graceful: bool) {
        self.pending.clear();
        if !graceful {
            info!("SIGINT: stopping now");
            self.notifier.stopping("stopping now (SIGINT)");
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
        self.notifier
            .stopping("stopping: finishing in-flight requests (SIGTERM)");
        // Stop accepting: the multiplexers close their listeners and finish their hand-offs.
        self.listeners.http.clear();
        self.listeners.slots.clear();
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

    /// Moves the stop along; returns the exit code once every child is gone.
    pub(crate) fn advance_stop(&mut self) -> Option<i32> {
        if let Stopping::Multiplexers { deadline } = self.stopping {
            if !self
                .children
                .values()
                .any(|c| matches!(c.kind, Kind::Multiplexer { .. }))
            {
                // No multiplexer can hand off any more: close our ends so a processor that
                // drains its queue sees the end of it, then tell the processors.
                for k in self.gens.iter().filter_map(|g| g.keepers.as_ref()) {
                    if let Err(e) = k.close_queues() {
                        tracing::warn!("closing the queues: {e}");
                    }
                }
                self.tell(|c| matches!(c.kind, Kind::Processor { .. }), &ToChild::Shutdown);
                self.stopping = Stopping::Processors { deadline };
            }
        }
        // Backends go once the processors that connect to them are gone.
        if matches!(self.stopping, Stopping::Processors { .. })
            && !self
                .children
                .values()
                .any(|c| matches!(c.kind, Kind::Processor { .. }))
        {
            self.stop_backends(|_| true);
        }
        (!matches!(self.stopping, Stopping::No) && self.children.is_empty()).then_some(0)
    }

    /// The current stage ran out of time: SIGKILL what is left, or give up on it.
    pub(crate) fn stop_deadline(&mut self) {
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
}
