//! Reaping and replacement: which dead child is started again, after how long (the
//! backoff, a pure function), and the rule that gives up before `ready` rather than
//! spin. A FastCGI backend's restart policy joins [`Restart`] and `restart_for`.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::control::{self, ToChild};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::state::{role_name, Child, Kind, Supervisor};
use crate::stop::Stopping;
use crate::SupervisorError;

/// A child that lived less than this counts as failing at start.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// The first delay after a failure at start; each further one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Consecutive start failures of one slot before `ready` that make the supervisor give up.
const GIVE_UP_BEFORE_READY: u32 = 5;

/// After a death of a child that had failed `failures` times in a row: its new count
/// of consecutive failures (reset by a clean exit or a healthy life, else one more)
/// and how long to wait before starting it again (at once after a reset, then
/// 100 ms, 200 ms … 30 s).
pub(crate) fn backoff(failures: u32, lived: Duration, clean: bool) -> (u32, Duration) {
    if clean || lived >= HEALTHY_AFTER {
        return (0, Duration::ZERO);
    }
    let failures = failures.saturating_add(1);
    let delay = FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(failures - 1))
        .min(MAX_BACKOFF);
    (failures, delay)
}

/// Before `ready`, a slot failing this often stops the server instead of spinning.
pub(crate) fn gives_up(failures: u32, ready: bool) -> bool {
    !ready && failures >= GIVE_UP_BEFORE_READY
}

/// Something to start again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Restart {
    Multiplexer {
        gen: u64,
        index: u32,
    },
    Processor {
        gen: u64,
        env: usize,
    },
    /// A FastCGI backend that died: started again if still needed when its backoff ends.
    Backend {
        gen: u64,
        env: usize,
    },
}

impl Supervisor {
    /// Reaps every dead child; an error when one keeps failing before `ready`.
    pub(crate) fn reap(&mut self) -> Result<(), SupervisorError> {
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
                crate::namespace::holder_died(&mut self.gens, pid);
                self.keeper_died(pid, &how);
                continue;
            };
            self.retire_slot(pid, &child);
            if let Kind::Processor { env } = child.kind {
                self.tell_peers(child.gen, env);
            }
            if let Kind::Multiplexer { index } = child.kind {
                // Its connections died with it: so do their per-address counts.
                if let Some(g) = self.gen(child.gen) {
                    common::scoreboard::table::per_ip_clear(&g.table, index as usize);
                }
            }
            if let Kind::Backend { env } = child.kind {
                // Never a processor's death, never a reason to give up the server.
                self.backend_exited(pid, &child, env, clean, &how);
                continue;
            }
            if !matches!(self.stopping, Stopping::No) {
                info!(pid, role = role_name(child.kind), "{how} while stopping");
                continue;
            }
            let restart = self.restart_for(&child);
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
            let count = self.backoff.entry(restart).or_default();
            let (failures, delay) = backoff(*count, child.started.elapsed(), clean);
            *count = failures;
            if gives_up(failures, self.ready_logged) {
                self.kill_all(Signal::SIGKILL);
                return Err(SupervisorError::StartFailures {
                    role: format!("{restart:?}"),
                    failures,
                });
            }
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

    /// A generation's fd keeper died: its environments' queues lost one end, so that
    /// generation can start no processor or multiplexer any more. The current one is
    /// replaced by a reload of the configuration (a new generation, new keepers);
    /// an old one is already on its way out.
    fn keeper_died(&mut self, pid: i32, how: &str) {
        let Some(g) = self
            .gens
            .iter_mut()
            .find(|g| g.keepers.as_ref().is_some_and(|k| k.owns(pid)))
        else {
            return;
        };
        g.keepers = None;
        let (id, current) = (g.id, g.id == self.current());
        if !matches!(self.stopping, Stopping::No) {
            return;
        }
        error!(pid, generation = id, "fd keeper died ({how})");
        if current {
            error!(
                generation = id,
                "reloading to replace the generation that lost its fd keeper"
            );
            self.reload();
        }
    }

    /// Whether a dead child (not told to stop, not stopping the server) is started
    /// again: a multiplexer up to `min_multiplexers` (those above were started for
    /// load), a processor while its pool is below `min_processors` (above it, demand
    /// starts the next one); nothing of a generation being retired, and no spare.
    fn restart_for(&self, child: &Child) -> Option<Restart> {
        let gen = child.gen;
        if self.gen(gen).map(|g| g.retiring).unwrap_or(true) {
            return None;
        }
        match child.kind {
            Kind::Multiplexer { index } if index < self.min_multiplexers(gen) => {
                Some(Restart::Multiplexer { gen, index })
            }
            Kind::Processor { env } => {
                let min = self
                    .gen(gen)
                    .and_then(|g| g.cfg.environments.get(env))
                    .map(|e| e.min_processors)
                    .unwrap_or(0);
                let left = self
                    .children
                    .values()
                    .filter(|c| c.gen == gen && c.kind == (Kind::Processor { env }) && !c.stopping)
                    .count();
                (left < min as usize).then_some(Restart::Processor { gen, env })
            }
            _ => None,
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

    /// Starts the restarts whose backoff is over.
    pub(crate) fn respawn_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| *t <= now);
        self.pending = later;
        for (_, restart) in due {
            let r = match restart {
                Restart::Multiplexer { gen, index } => self.start_multiplexer(gen, index),
                Restart::Processor { gen, env } => self.start_processor(gen, env),
                Restart::Backend { gen, env } => {
                    self.backend_restart_due(gen, env);
                    Ok(())
                }
            };
            if let Err(e) = r {
                error!(?restart, "restarting: {e}");
                self.pending.push((now + MAX_BACKOFF, restart));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_from_100ms_to_30s() {
        let mut failures = 0;
        let mut delays = Vec::new();
        for _ in 0..12 {
            let (f, d) = backoff(failures, 50 * MS, false);
            assert_eq!(f, failures + 1);
            failures = f;
            delays.push(d.as_millis());
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        // No overflow however long it goes on.
        assert_eq!(backoff(u32::MAX, MS, false), (u32::MAX, MAX_BACKOFF));
    }

    #[test]
    fn a_clean_exit_or_a_healthy_life_resets_the_backoff() {
        assert_eq!(backoff(7, MS, true), (0, Duration::ZERO));
        assert_eq!(backoff(7, HEALTHY_AFTER, false), (0, Duration::ZERO));
        assert_eq!(backoff(7, HEALTHY_AFTER - MS, false).0, 8);
        assert_eq!(backoff(0, Duration::ZERO, false), (1, 100 * MS));
    }

    #[test]
    fn gives_up_only_before_ready() {
        assert!(!gives_up(GIVE_UP_BEFORE_READY - 1, false));
        assert!(gives_up(GIVE_UP_BEFORE_READY, false));
        assert!(!gives_up(GIVE_UP_BEFORE_READY, true));
        assert!(!gives_up(u32::MAX, true));
    }
}
