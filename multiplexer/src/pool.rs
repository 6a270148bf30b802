//! What a multiplexer knows of the pools: the processors' slots (read-only), the
//! shared table, and from them whether an environment has room. Availability decays
//! and recovers here, as Peruser's `wait_for_workers` does, without its defects: the
//! wait never blocks other connections, a wait that succeeds costs no availability,
//! and the step is never zero.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::control::{EnvBoot, SlotAdd, VhostBoot};
use common::scoreboard::{slot, table, Segment};
use tracing::{info, warn};

/// A slot the multiplexer watches.
pub struct Watched {
    pub pid: u32,
    /// `None` for a multiplexer.
    pub env: Option<usize>,
    pub index: usize,
    pub seg: Segment,
}

/// Why a request is refused with 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Saturated,
    VhostLimit,
}

/// Pools as this multiplexer sees them.
pub struct Pools {
    pub envs: Vec<EnvBoot>,
    pub vhosts: Vec<VhostBoot>,
    pub table: Rc<Segment>,
    pub slots: RefCell<Vec<Watched>>,
    pub wait_timeout: Duration,
    pub wait_steps: u32,
    pub max_clients: u32,
    /// Last spawn request per environment (rate limit).
    last_spawn: RefCell<Vec<Option<Instant>>>,
    max_clients_warned: Cell<bool>,
    /// Environments that want a processor: the multiplexer's control loop sends them.
    pub spawn_wanted: RefCell<Vec<u32>>,
    /// Wakes the control loop when `spawn_wanted` gains an entry.
    pub spawn_notify: tokio::sync::Notify,
}

/// Room in one environment, from the slots and the hand-off counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct View {
    /// Processors not stopping.
    pub live: u32,
    /// Connections the live processors can still take, minus those already queued.
    pub room: i64,
}

/// How often one multiplexer may ask for another processor of one environment.
const SPAWN_INTERVAL: Duration = Duration::from_millis(200);

impl Pools {
    pub fn new(
        envs: Vec<EnvBoot>,
        vhosts: Vec<VhostBoot>,
        table: Rc<Segment>,
        wait_timeout: Duration,
        wait_steps: u32,
        max_clients: u32,
    ) -> Pools {
        let n = envs.len();
        Pools {
            envs,
            vhosts,
            table,
            slots: RefCell::new(Vec::new()),
            wait_timeout,
            wait_steps: wait_steps.clamp(1, 100),
            max_clients,
            last_spawn: RefCell::new(vec![None; n]),
            max_clients_warned: Cell::new(false),
            spawn_wanted: RefCell::new(Vec::new()),
            spawn_notify: tokio::sync::Notify::new(),
        }
    }

    pub fn env_word(&self, env: usize, w: usize) -> usize {
        table::env_word(env, w)
    }

    fn live_in_registry(&self, index: usize, pid: u32) -> bool {
        let (e, v) = (self.envs.len(), self.vhosts.len());
        self.table
            .get(table::registry_word(e, v, index, table::registry::LIVE))
            == 1
            && self
                .table
                .get(table::registry_word(e, v, index, table::registry::PID))
                == pid as u64
    }

    /// Applies a `Slots` message.
    pub fn update(&self, add: Vec<SlotAdd>, fds: Vec<std::os::fd::OwnedFd>, remove: Vec<u32>) {
        let mut slots = self.slots.borrow_mut();
        slots.retain(|w| !remove.contains(&w.pid));
        for (a, fd) in add.into_iter().zip(fds) {
            match Segment::map(&fd, false) {
                Ok(seg) => {
                    let env =
                        (a.env != u32::MAX && (a.env as usize) < self.envs.len()).then_some(a.env as usize);
                    slots.retain(|w| w.pid != a.pid);
                    slots.push(Watched {
                        pid: a.pid,
                        env,
                        index: a.index as usize,
                        seg,
                    });
                }
                Err(e) => warn!(pid = a.pid, "mapping a slot: {e}"),
            }
        }
    }

    /// Room in environment `env` now.
    pub fn view(&self, env: usize) -> View {
        let Some(e) = self.envs.get(env) else {
            return View::default();
        };
        let cap = e.capacity.max(1) as i64;
        let mut live = 0u32;
        let mut free = 0i64;
        let mut taken = 0u64;
        for w in self.slots.borrow().iter() {
            if w.env != Some(env) || !self.live_in_registry(w.index, w.pid) {
                continue;
            }
            // Tenant-written values: clamp before use.
            taken = taken.saturating_add(w.seg.get(slot::TAKEN));
            let state = w.seg.get(slot::STATE);
            if state == slot::STOPPING {
                continue;
            }
            live += 1;
            let active = (w.seg.get(slot::ACTIVE_CONNS) as i64).clamp(0, cap);
            free = free.saturating_add(cap - active);
        }
        let handed = self.table.get(table::env_word(env, table::env::HANDOFFS));
        let retired = self.table.get(table::env_word(env, table::env::RETIRED_TAKEN));
        let queued = handed
            .saturating_sub(taken.saturating_add(retired))
            .min(i64::MAX as u64) as i64;
        View {
            live,
            room: free.saturating_sub(queued),
        }
    }

    /// Connections processors hold for `vhost` now.
    pub fn vhost_active(&self, vhost: usize) -> u64 {
        let Some(v) = self.vhosts.get(vhost) else { return 0 };
        let env = v.env as usize;
        let cap = self.envs.get(env).map(|e| e.capacity.max(1) as u64).unwrap_or(1);
        let mut n = 0u64;
        for w in self.slots.borrow().iter() {
            if w.env != Some(env) || !self.live_in_registry(w.index, w.pid) {
                continue;
            }
            let sites = (w.seg.get(slot::SITES) as usize).min(self.vhosts.len());
            for i in 0..sites {
                if w.seg.get(slot::site_word(i, slot::site::VHOST)) as usize == vhost {
                    n = n.saturating_add(w.seg.get(slot::site_word(i, slot::site::ACTIVE_CONNS)).min(cap));
                }
            }
        }
        n
    }

    /// Connections in all processors, each slot's tenant-written count clamped to
    /// what its environment allows one processor.
    fn total_active(&self) -> u64 {
        self.slots
            .borrow()
            .iter()
            .filter(|w| self.live_in_registry(w.index, w.pid))
            .filter_map(|w| {
                let cap = self.envs.get(w.env?)?.capacity.max(1) as u64;
                Some(w.seg.get(slot::ACTIVE_CONNS).min(cap))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// No processor has room and none may be added (or the server-wide limit is hit).
    pub fn saturated(&self, env: usize) -> bool {
        if self.max_clients > 0 && self.total_active() >= self.max_clients as u64 {
            if !self.max_clients_warned.replace(true) {
                warn!(
                    max_clients = self.max_clients,
                    "max_clients reached: new connections wait; raise max_clients"
                );
            }
            return true;
        }
        let v = self.view(env);
        let max = self.envs.get(env).map(|e| e.max_processors).unwrap_or(0);
        if v.room > 0 {
            return false;
        }
        if v.live < max {
            self.want_processor(env);
            return false;
        }
        true
    }

    /// Asks the supervisor for another processor (at most every [`SPAWN_INTERVAL`]).
    fn want_processor(&self, env: usize) {
        let mut last = self.last_spawn.borrow_mut();
        let Some(l) = last.get_mut(env) else { return };
        if l.is_some_and(|t| t.elapsed() < SPAWN_INTERVAL) {
            return;
        }
        *l = Some(Instant::now());
        self.table
            .add(table::env_word(env, table::env::SPAWN_REQUESTS), 1);
        self.spawn_wanted.borrow_mut().push(env as u32);
        self.spawn_notify.notify_one();
    }

    /// The quick check of the fast path: room, and the vhost under its cap.
    pub fn has_room(&self, env: usize, vhost: usize) -> bool {
        if self.vhosts.get(vhost).is_some_and(|v| v.max_clients > 0) {
            return false;
        }
        self.view(env).room > 0 && (self.max_clients == 0 || self.total_active() < self.max_clients as u64)
    }

    fn step(&self) -> u64 {
        (100 / self.wait_steps.max(1) as u64).max(1)
    }

    fn availability(&self, env: usize) -> u64 {
        self.table
            .get(table::env_word(env, table::env::AVAILABILITY))
            .min(100)
    }

    /// An unsaturated pass: availability one step back towards 100.
    pub fn raise(&self, env: usize) {
        let a = self.availability(env);
        if a < 100 {
            let new = (a + self.step()).min(100);
            self.table
                .set(table::env_word(env, table::env::AVAILABILITY), new);
            if new == 100 && self.table.get(table::env_word(env, table::env::WARNED)) == 1 {
                self.table.set(table::env_word(env, table::env::WARNED), 0);
                info!(environment = %self.envs[env].name, "availability back to 100%");
            }
        }
    }

    fn lower(&self, env: usize) {
        let step = self.step();
        if let Some(w) = self.table.word(table::env_word(env, table::env::AVAILABILITY)) {
            let _ = w.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |a| Some(a.min(100).saturating_sub(step)),
            );
        }
    }

    /// Decides whether a request for `vhost` of `env` may go to the pool: at once, after
    /// a bounded wait for room, or not at all (503). Waits in slices of
    /// `timeout / steps`, up to `availability / 100 × timeout`.
    pub async fn admit(&self, env: usize, vhost: usize) -> Result<(), Refusal> {
        if let Some(v) = self.vhosts.get(vhost) {
            if v.max_clients > 0 && self.vhost_active(vhost) >= v.max_clients as u64 {
                self.count_drop(env, Refusal::VhostLimit);
                return Err(Refusal::VhostLimit);
            }
        }
        if self.wait_timeout.is_zero() {
            // processor_wait_timeout 0: never wait and never drop (requests queue).
            let _ = self.saturated(env);
            return Ok(());
        }
        if !self.saturated(env) {
            self.raise(env);
            return Ok(());
        }
        let a = self.availability(env);
        // Up to availability/100 × timeout, in slices of timeout/steps: at A = 100 and
        // [5, 10], ten waits of 0.5 s.
        let polls = (a * self.wait_steps.max(1) as u64).div_ceil(100);
        let slice = self.wait_timeout / self.wait_steps.max(1);
        for _ in 0..polls {
            tokio::time::sleep(slice).await;
            if !self.saturated(env) {
                return Ok(());
            }
        }
        self.lower(env);
        self.count_drop(env, Refusal::Saturated);
        Err(Refusal::Saturated)
    }

    fn count_drop(&self, env: usize, why: Refusal) {
        let w = match why {
            Refusal::Saturated => table::env::DROPPED_SATURATED,
            Refusal::VhostLimit => table::env::DROPPED_VHOST_LIMIT,
        };
        self.table.add(table::env_word(env, w), 1);
        if why == Refusal::Saturated {
            let warned = self.table.word(table::env_word(env, table::env::WARNED));
            if warned.is_some_and(|w| w.swap(1, std::sync::atomic::Ordering::Relaxed) == 0) {
                let e = &self.envs[env];
                warn!(
                    environment = %e.name,
                    max_processors = e.max_processors,
                    availability = self.availability(env),
                    "environment saturated: dropping requests with 503; raise max_processors"
                );
            }
        }
    }
}
