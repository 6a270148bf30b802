//! The maintenance tick (1 s, as Apache's): keep each environment's pool between its
//! limits. Spares below `min_spare_processors` are started at prefork's rate (1, 2,
//! 4 … 32 per tick, reset when satisfied); idle processors above
//! `max_spare_processors`, or idle longer than `idle_timeout` above `min_processors`,
//! are retired gracefully (never a busy one: Peruser's defect 7); a processor busy
//! without progress for longer than `expire_timeout` is killed and its slot freed.

use std::time::Duration;

use common::control::ToChild;
use common::scoreboard::{now_ms, slot};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::reap::Restart;
use crate::state::{Kind, Supervisor, SPARES};

/// Largest number of processors started for one environment in one tick.
const MAX_SPAWN_RATE: u32 = 32;

/// What the tick decided for one environment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub spawn: u32,
    pub retire: Vec<i32>,
    pub kill: Vec<i32>,
    /// The spawn rate for the next tick.
    pub next_rate: u32,
}

/// One processor as the tick sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub pid: i32,
    pub ready: bool,
    pub active: u64,
    pub last_used_ms: u64,
    pub busy_since_ms: u64,
}

/// The pool limits of an environment.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min: u32,
    pub max: u32,
    pub min_spare: u32,
    pub max_spare: u32,
    pub idle_timeout: Duration,
    pub expire_timeout: Duration,
}

/// Decides one tick for one environment (pure, so the rules are unit-tested).
pub fn decide(procs: &[Seen], l: &Limits, rate: u32, now_ms: u64) -> Plan {
    let mut plan = Plan {
        next_rate: 1,
        ..Plan::default()
    };
    let expire_ms = l.expire_timeout.as_millis() as u64;
    let mut alive: Vec<Seen> = Vec::new();
    for p in procs {
        if expire_ms > 0 && p.busy_since_ms != 0 && now_ms.saturating_sub(p.busy_since_ms) > expire_ms {
            plan.kill.push(p.pid);
        } else {
            alive.push(*p);
        }
    }
    let n = alive.len() as u32;
    // A starting processor counts as idle, as in Peruser.
    let idle: Vec<&Seen> = alive.iter().filter(|p| p.active == 0).collect();
    let mut total = n;
    if total < l.min {
        plan.spawn = l.min - total;
        total = l.min;
    }
    let idle_n = idle.len() as u32 + plan.spawn;
    if idle_n < l.min_spare && total < l.max {
        let want = (l.min_spare - idle_n).min(l.max - total).min(rate.max(1));
        plan.spawn += want;
        plan.next_rate = (rate.max(1) * 2).min(MAX_SPAWN_RATE);
        return plan;
    }
    let mut removable = n.saturating_sub(l.min);
    let mut spare_excess = if l.max_spare > 0 {
        (idle.len() as u32).saturating_sub(l.max_spare)
    } else {
        0
    };
    let idle_ms = l.idle_timeout.as_millis() as u64;
    // Oldest-idle first.
    let mut candidates: Vec<&&Seen> = idle.iter().filter(|p| p.ready).collect();
    candidates.sort_by_key(|p| p.last_used_ms);
    for p in candidates {
        if removable == 0 {
            break;
        }
        let timed_out = idle_ms > 0 && now_ms.saturating_sub(p.last_used_ms) > idle_ms;
        if spare_excess > 0 || timed_out {
            plan.retire.push(p.pid);
            removable -= 1;
            spare_excess = spare_excess.saturating_sub(1);
        }
    }
    plan
}

impl Supervisor {
    /// One maintenance tick over the current generation.
    pub(crate) fn maintain(&mut self) {
        self.count_cgroup_events();
        let gen = self.current();
        let Some(g) = self.gen(gen) else { return };
        if g.retiring {
            return;
        }
        let cfg = g.cfg.clone();
        let now = now_ms();
        // One pass over the children and the pending restarts, then per environment
        // what is its: a tick costs environments + children, not their product.
        let mut seen: std::collections::HashMap<usize, Vec<Seen>> = std::collections::HashMap::new();
        for (pid, c) in &self.children {
            let Kind::Processor { env } = c.kind else { continue };
            if c.gen != gen || c.stopping {
                continue;
            }
            let s = c.slot.as_ref().map(|s| &s.seg);
            let get = |w| s.map(|s| s.get(w)).unwrap_or(0);
            let state = get(slot::STATE);
            seen.entry(env).or_default().push(Seen {
                pid: *pid,
                ready: c.ready && state != slot::STARTING,
                active: get(slot::ACTIVE_CONNS),
                last_used_ms: get(slot::LAST_USED_MS).min(now),
                busy_since_ms: get(slot::BUSY_SINCE_MS).min(now),
            });
        }
        let restarting: std::collections::HashSet<usize> = self
            .pending
            .iter()
            .filter_map(|(_, r)| match *r {
                Restart::Processor { gen: g, env } if g == gen => Some(env),
                _ => None,
            })
            .collect();
        for (env, e) in cfg.environments.iter().enumerate() {
            // A crashed processor's replacement is scheduled: its backoff decides.
            if restarting.contains(&env) {
                continue;
            }
            let procs: Vec<Seen> = seen.remove(&env).unwrap_or_default();
            // Nothing running and nothing wanted: the common idle case, decided here.
            if procs.is_empty() && e.min_processors == 0 && e.min_spare_processors == 0 {
                if let Some(g) = self.gen_mut(gen) {
                    g.pools[env].spawn_rate = 1;
                }
                continue;
            }
            let limits = Limits {
                min: e.min_processors,
                max: e.max_processors,
                min_spare: e.min_spare_processors,
                max_spare: e.max_spare_processors,
                idle_timeout: e.idle_timeout,
                expire_timeout: e.expire_timeout,
            };
            let rate = self.gen(gen).map(|g| g.pools[env].spawn_rate).unwrap_or(1);
            let plan = decide(&procs, &limits, rate, now);
            for pid in &plan.kill {
                warn!(
                    pid,
                    environment = %e.name,
                    expire_timeout = e.expire_timeout.as_secs(),
                    "processor busy on one request longer than expire_timeout: killed"
                );
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                if let Some(c) = self.children.get_mut(pid) {
                    c.stopping = true;
                }
            }
            for pid in &plan.retire {
                if let Some(c) = self.children.get_mut(pid) {
                    c.stopping = true;
                    if let Err(err) =
                        common::control::send(std::os::fd::AsFd::as_fd(&c.control), &ToChild::Retire, &[])
                    {
                        warn!(pid, "retiring: {err}");
                    }
                }
            }
            if !plan.retire.is_empty() {
                info!(environment = %e.name, retired = plan.retire.len(), "retiring idle processors");
            }
            if plan.spawn > 0 {
                info!(environment = %e.name, spawned = plan.spawn, rate, "spawning processors");
            }
            for _ in 0..plan.spawn {
                if !self.under_limit() {
                    break;
                }
                if let Err(err) = self.start_processor(gen, env) {
                    error!(environment = %e.name, "starting a processor: {err}");
                    break;
                }
            }
            if let Some(g) = self.gen_mut(gen) {
                g.pools[env].spawn_rate = plan.next_rate;
            }
        }
        self.size_multiplexers(gen);
        let spares = self
            .children
            .values()
            .filter(|c| matches!(c.kind, Kind::Spare))
            .count();
        if self.ready_logged {
            for _ in spares..SPARES {
                if let Err(e) = self.start_spare() {
                    warn!("starting a spare processor: {e}");
                    break;
                }
            }
        }
    }
}

/// Connections a multiplexer works on at once (reading heads, waiting for room) above
/// which it counts as loaded.
const MULTIPLEXER_LOADED: u64 = 256;

impl Supervisor {
    /// Multiplexers are asynchronous, so `min_multiplexers` serve most loads; when every
    /// one is loaded, another is started, up to `max_multiplexers`, and an extra one
    /// that accepted nothing for `multiplexer_idle_timeout` is stopped.
    fn size_multiplexers(&mut self, gen: u64) {
        let Some(g) = self.gen(gen) else { return };
        let (min, max, idle) = (
            g.cfg.server.min_multiplexers.max(1),
            g.cfg.server.max_multiplexers.max(1),
            g.cfg.server.multiplexer_idle_timeout,
        );
        let muxes: Vec<(i32, u32, u64, u64)> = self
            .children
            .iter()
            .filter(|(_, c)| c.gen == gen && !c.stopping)
            .filter_map(|(pid, c)| match c.kind {
                Kind::Multiplexer { index } => {
                    let s = c.slot.as_ref()?;
                    Some((*pid, index, s.seg.get(slot::ACTIVE_CONNS), s.seg.get(slot::TAKEN)))
                }
                _ => None,
            })
            .collect();
        let all_loaded = !muxes.is_empty() && muxes.iter().all(|m| m.2 >= MULTIPLEXER_LOADED);
        if all_loaded && muxes.len() >= max as usize && !self.mux_limit_warned {
            self.mux_limit_warned = true;
            warn!(
                max_multiplexers = max,
                "every multiplexer is loaded and max_multiplexers is reached; raise max_multiplexers"
            );
        }
        if all_loaded && muxes.len() < max as usize {
            let index = (0..).find(|i| !muxes.iter().any(|m| m.1 == *i)).unwrap_or(max);
            if self.under_limit() {
                info!(
                    multiplexers = muxes.len() + 1,
                    "every multiplexer is loaded: starting another"
                );
                if let Err(e) = self.start_multiplexer(gen, index) {
                    error!("starting a multiplexer: {e}");
                }
            }
        }
        if idle.is_zero() {
            return;
        }
        let now = std::time::Instant::now();
        self.mux_seen.retain(|pid, _| muxes.iter().any(|m| m.0 == *pid));
        for (pid, index, active, taken) in muxes {
            if index < min {
                continue;
            }
            let seen = self.mux_seen.entry(pid).or_insert((taken, now));
            if seen.0 != taken || active > 0 {
                *seen = (taken, now);
            } else if now.duration_since(seen.1) > idle {
                info!(
                    pid,
                    "multiplexer idle longer than multiplexer_idle_timeout: stopping it"
                );
                if let Some(c) = self.children.get_mut(&pid) {
                    c.stopping = true;
                    let _ =
                        common::control::send(std::os::fd::AsFd::as_fd(&c.control), &ToChild::Shutdown, &[]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            min: 0,
            max: 100,
            min_spare: 0,
            max_spare: 0,
            idle_timeout: Duration::ZERO,
            expire_timeout: Duration::ZERO,
        }
    }

    fn busy(pid: i32) -> Seen {
        Seen {
            pid,
            ready: true,
            active: 1,
            last_used_ms: 1000,
            busy_since_ms: 1000,
        }
    }

    fn idle(pid: i32, last: u64) -> Seen {
        Seen {
            pid,
            ready: true,
            active: 0,
            last_used_ms: last,
            busy_since_ms: 0,
        }
    }

    #[test]
    fn spare_spawn_rate_doubles_to_32() {
        let l = Limits {
            min_spare: 100,
            max: 200,
            ..limits()
        };
        let mut rate = 1;
        let mut seen = Vec::new();
        let mut procs = Vec::new();
        for _ in 0..7 {
            let p = decide(&procs, &l, rate, 2000);
            seen.push(p.spawn);
            for i in 0..p.spawn {
                procs.push(idle(procs.len() as i32 + i as i32, 2000));
            }
            rate = p.next_rate;
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 32, 32]);
        // Satisfied: the rate resets.
        let l = Limits { min_spare: 1, ..l };
        assert_eq!(decide(&procs, &l, 32, 2000).next_rate, 1);
    }

    #[test]
    fn min_processors_and_max_respected() {
        let l = Limits {
            min: 3,
            max: 4,
            min_spare: 10,
            ..limits()
        };
        let p = decide(&[], &l, 1, 0);
        assert_eq!(p.spawn, 4, "3 for the minimum, then 1 spare up to max");
    }

    #[test]
    fn idle_timeout_retires_only_idle_above_min() {
        let l = Limits {
            min: 1,
            idle_timeout: Duration::from_secs(10),
            ..limits()
        };
        let procs = [idle(1, 0), idle(2, 0), busy(3)];
        let p = decide(&procs, &l, 1, 60_000);
        assert_eq!(p.retire.len(), 2);
        assert!(!p.retire.contains(&3));
        let l = Limits { min: 3, ..l };
        assert!(decide(&procs, &l, 1, 60_000).retire.is_empty());
    }

    #[test]
    fn max_spare_never_retires_busy() {
        let l = Limits {
            max_spare: 1,
            ..limits()
        };
        let procs = [idle(1, 5), idle(2, 6), idle(3, 7), busy(4)];
        let p = decide(&procs, &l, 1, 10);
        assert_eq!(p.retire, vec![1, 2]);
    }

    #[test]
    fn expire_timeout_kills_stuck() {
        let l = Limits {
            expire_timeout: Duration::from_secs(5),
            min: 1,
            ..limits()
        };
        let procs = [
            Seen {
                busy_since_ms: 1_000,
                ..busy(7)
            },
            busy(8),
            // Spared: busy for 2 s only, and idle for long.
            Seen {
                busy_since_ms: 5_000,
                ..busy(9)
            },
            idle(10, 0),
        ];
        let p = decide(&procs, &l, 1, 1_000 + 6_000);
        assert_eq!(p.kill, vec![7, 8]);
        let p = decide(&procs, &l, 1, 1_000 + 4_000);
        assert!(p.kill.is_empty());
    }
}
