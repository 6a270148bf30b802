//! Graceful reload (SIGHUP) and log reopening (SIGUSR1).
//!
//! A reload re-reads and checks the configuration. If it is broken, every error is
//! logged and the running generation keeps serving. If it is good, a new generation
//! (new multiplexers, new pools, new hand-off sockets; the same listeners) starts; once
//! its multiplexers are up, the old multiplexers stop accepting and finish their
//! hand-offs, then the old processors serve what is queued and their in-flight
//! requests, and exit. Listeners are never closed for an address that stays.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use common::control::{self, ToChild};
use tracing::{error, info, warn};

use std::time::{Duration, Instant};

use crate::generation::Generation;
use crate::logs::AccessLogs;
use crate::state::{Child, Kind, Supervisor};
use crate::stop::Stopping;

impl Supervisor {
    pub(crate) fn reload(&mut self) {
        if !matches!(self.stopping, Stopping::No) {
            return;
        }
        info!(config = %self.config_path.display(), "SIGHUP: reloading");
        let cfg = match conf::load(&self.config_path) {
            Ok(cfg) => cfg,
            Err(errors) => {
                for e in &errors.errors {
                    error!("{e}");
                }
                error!(
                    errors = errors.errors.len(),
                    "reload refused: the running configuration keeps serving"
                );
                return;
            }
        };
        // Everything is built before anything is changed, so a refused reload (a
        // listener that cannot be bound, an access log that cannot be opened, a
        // generation that cannot be created) changes nothing.
        // Listeners: keep every address that stays (port 0: the port bound at start;
        // a dup of our copy), bind the new ones.
        let http = match keep_or_bind(&self.listeners.http, &cfg.server.listen) {
            Ok(l) => l,
            Err(e) => {
                error!("reload refused: {e}");
                return;
            }
        };
        let tls = match keep_or_bind(&self.listeners.tls, &cfg.server.listen_tls) {
            Ok(l) => l,
            Err(e) => {
                error!("reload refused: {e}");
                return;
            }
        };
        // One socket per multiplexer slot; those past the new `min_multiplexers` close
        // with the old multiplexers' copies, their queues moving to the others.
        let slots = crate::reuseport::SlotSockets::build(
            http.iter().chain(&tls),
            cfg.server.min_multiplexers,
            &self.listeners.slots,
        );
        for w in &cfg.warnings {
            warn!("config: {w}");
        }
        // A log that cannot be opened does not refuse the reload: its file is the
        // tenant's to break (a link planted in its own directory), and one tenant must
        // not hold every other's reload hostage. That vhost is not logged by the new
        // generation, and says so.
        let (logs, errors) = AccessLogs::open_all(&cfg);
        for e in errors {
            error!("{e}; this vhost's requests are not logged by the new generation");
        }
        // Past every generation a child still names (a refused reload's children may
        // not be reaped yet), so an id is never reused.
        let id = self
            .children
            .values()
            .map(|c| c.gen)
            .chain([self.current()])
            .max()
            .unwrap_or(0)
            + 1;
        let mut gen = match Generation::new(
            id,
            Arc::new(cfg),
            self.started_ms,
            logs,
            self.privileged,
            self.gens.last(),
        ) {
            Ok(g) => g,
            Err(e) => {
                error!("reload refused: {e}");
                return;
            }
        };
        match crate::keeper::Keepers::start(&self.exe, &gen.cfg, id, self.privileged) {
            Ok(k) => gen.keepers = Some(k),
            Err(e) => {
                error!("reload refused: {e}");
                return;
            }
        }
        if let Err(e) = self.cgroups.sync(&gen.cfg) {
            error!("reload refused: {e}");
            return;
        }
        let metrics = match (
            gen.cfg.status.metrics_listen,
            self.listeners.metrics.as_ref().map(|(a, _)| *a),
        ) {
            // Port 0 as for the HTTP listeners: the port bound at start stays.
            (Some(new), Some(old)) if new == old || (new.port() == 0 && new.ip() == old.ip()) => None,
            (Some(new), _) => match crate::activation::listener(new) {
                Ok(l) => Some(Some(l)),
                Err(e) => {
                    warn!("metrics listener: {e}; keeping the old one");
                    None
                }
            },
            (None, _) => Some(None),
        };
        // Commit. Addresses no longer configured: our copy closes now; the old
        // multiplexers' copies close when they exit.
        let old_http = std::mem::replace(&mut self.listeners.http, http);
        let old_tls = std::mem::replace(&mut self.listeners.tls, tls);
        let old_slots = std::mem::replace(&mut self.listeners.slots, slots);
        let old_metrics = metrics.map(|m| std::mem::replace(&mut self.listeners.metrics, m));
        self.carry_counters(&gen);
        let was_retiring: Vec<bool> = self.gens.iter().map(|g| g.retiring).collect();
        for old in &mut self.gens {
            old.retiring = true;
        }
        let pending = std::mem::take(&mut self.pending);
        // Spares were exec'd for the old configuration's binary state; they hold
        // nothing, so they may serve the new one too.
        self.gens.push(gen);
        if let Err(e) = self.start_generation(id) {
            // Undo: the new generation's children go, the old state comes back.
            error!("reload refused: starting generation {id}: {e}");
            for (pid, c) in &self.children {
                if c.gen == id {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            self.gens.retain(|g| g.id != id);
            if let Some(cfg) = self.gens.last().map(|g| g.cfg.clone()) {
                if let Err(e) = self.cgroups.sync(&cfg) {
                    error!("restoring the cgroups: {e}");
                }
            }
            for (g, r) in self.gens.iter_mut().zip(was_retiring) {
                g.retiring = r;
            }
            self.pending = pending;
            self.listeners.http = old_http;
            self.listeners.tls = old_tls;
            self.listeners.slots = old_slots;
            if let Some(m) = old_metrics {
                self.listeners.metrics = m;
            }
            return;
        }
        info!(generation = id, "reload: new generation starting");
        crate::start::release_freed_memory();
    }

    /// Starts the new table's counters where the old one's are, per environment and
    /// vhost name, so no counter goes backwards across a reload.
    fn carry_counters(&self, new: &Generation) {
        use common::scoreboard::{slot, table};
        let Some(old) = self.gens.last() else { return };
        let (oe, ov) = (old.cfg.environments.len(), old.cfg.vhosts.len());
        let (ne, _nv) = (new.cfg.environments.len(), new.cfg.vhosts.len());
        // By name and by environment once: a reload of 10,000 environments costs
        // environments + vhosts + children, not their products.
        let old_env: std::collections::HashMap<&str, usize> = old
            .cfg
            .environments
            .iter()
            .enumerate()
            .map(|(i, o)| (o.name.as_str(), i))
            .collect();
        let old_vhost: std::collections::HashMap<&str, usize> = old
            .cfg
            .vhosts
            .iter()
            .enumerate()
            .map(|(i, o)| (o.server_name.as_str(), i))
            .collect();
        let mut slots_of: std::collections::HashMap<usize, Vec<&common::scoreboard::Segment>> =
            std::collections::HashMap::new();
        for c in self.children.values() {
            if let (true, Kind::Processor { env }, Some(s)) = (c.gen == old.id, c.kind, &c.slot) {
                slots_of.entry(env).or_default().push(&s.seg);
            }
        }
        for (ni, e) in new.cfg.environments.iter().enumerate() {
            let Some(&oi) = old_env.get(e.name.as_str()) else {
                continue;
            };
            let live: &[&common::scoreboard::Segment] = slots_of.get(&oi).map_or(&[], Vec::as_slice);
            let cap = crate::generation::TENANT_COUNTER_MAX;
            let sum = |w: usize| {
                live.iter()
                    .fold(0u64, |acc, s| acc.saturating_add(s.get(w).min(cap)))
            };
            let pairs = table::TLS_RETIRED.into_iter().chain([
                (table::env::RETIRED_FCGI_REQUESTS, slot::FCGI_REQUESTS),
                (table::env::RETIRED_FCGI_BAD_GATEWAY, slot::FCGI_BAD_GATEWAY),
                (table::env::RETIRED_FCGI_TIMEOUTS, slot::FCGI_TIMEOUTS),
                (table::env::RETIRED_TAKEN, slot::TAKEN),
                (table::env::RETIRED_REQUESTS, slot::REQUESTS),
                (table::env::RETIRED_BYTES, slot::BYTES),
                (table::env::RETIRED_HANDBACKS, slot::HANDBACKS),
                (table::env::RETIRED_DURATION_US, slot::DURATION_US),
            ]);
            for (tw, sw) in pairs {
                new.table.set(
                    table::env_word(ni, tw),
                    old.table.get(table::env_word(oi, tw)).saturating_add(sum(sw)),
                );
            }
            for w in [
                table::env::DROPPED_SATURATED,
                table::env::DROPPED_VHOST_LIMIT,
                table::env::DROPPED_ERROR,
                table::env::HANDOFFS,
                table::env::HANDBACKS,
                table::env::SPAWNS,
                table::env::COLD_STARTS,
                table::env::COLD_START_US,
                table::env::BACKEND_STARTS,
                table::env::BACKEND_DEATHS,
            ] {
                new.table
                    .set(table::env_word(ni, w), old.table.get(table::env_word(oi, w)));
            }
        }
        for (nv_i, v) in new.cfg.vhosts.iter().enumerate() {
            let Some(&ov_i) = old_vhost.get(v.server_name.as_str()) else {
                continue;
            };
            let env = old.cfg.vhosts[ov_i].environment;
            for w in slot::site::CLASS..slot::site::WORDS {
                let mut total = old.table.get(table::vhost_word(oe, ov_i, w));
                for s in slots_of.get(&env).map_or(&[][..], Vec::as_slice) {
                    let sites = (s.get(slot::SITES) as usize).min(ov);
                    for i in 0..sites {
                        if s.get(slot::site_word(i, slot::site::VHOST)) as usize == ov_i {
                            let v = s
                                .get(slot::site_word(i, w))
                                .min(crate::generation::TENANT_COUNTER_MAX);
                            total = total.saturating_add(v);
                        }
                    }
                }
                new.table.set(table::vhost_word(ne, nv_i, w), total);
            }
        }
        new.table.set(table::ACCEPTED, old.table.get(table::ACCEPTED));
    }

    /// Moves retiring generations along. Once the current generation's multiplexers
    /// are up, the old multiplexers stop accepting (but keep routing hand-backs) and the
    /// old processors answer each connection's next request with `Connection: close`.
    /// When the old processors hold no connection (or a bound passes), their queues
    /// are closed, they serve what is queued and exit, and the old multiplexers stop.
    /// An empty generation is forgotten.
    pub(crate) fn advance_generations(&mut self) {
        if !matches!(self.stopping, Stopping::No) {
            return;
        }
        let current = self.current();
        let new_ready = self
            .children
            .values()
            .filter(|c| c.gen == current && matches!(c.kind, Kind::Multiplexer { .. }) && c.ready)
            .count();
        let want = self
            .gen(current)
            .map(|g| g.cfg.server.min_multiplexers.max(1) as usize)
            .unwrap_or(1);
        let old_ids: Vec<u64> = self.gens.iter().filter(|g| g.retiring).map(|g| g.id).collect();
        for id in old_ids {
            let Some(g) = self.gen(id) else { continue };
            let (phase, started) = (g.retire_phase, g.retire_started);
            let bound =
                g.cfg.server.keep_alive_timeout + g.cfg.server.request_head_timeout + Duration::from_secs(1);
            let is_mux = |c: &Child| c.gen == id && matches!(c.kind, Kind::Multiplexer { .. });
            let is_proc = |c: &Child| c.gen == id && matches!(c.kind, Kind::Processor { .. });
            if phase == 0 && new_ready >= want {
                info!(
                    generation = id,
                    "reload: new multiplexers are up; old ones stop accepting"
                );
                self.tell_keep(is_mux, &ToChild::StopAccepting);
                self.tell_keep(is_proc, &ToChild::Graceful);
                if let Some(g) = self.gen_mut(id) {
                    g.retire_phase = 1;
                    g.retire_started = Some(Instant::now());
                }
                continue;
            }
            if phase == 1 {
                let busy = self.children.values().filter(|c| is_proc(c)).any(|c| {
                    c.slot
                        .as_ref()
                        .is_some_and(|s| s.seg.get(common::scoreboard::slot::ACTIVE_CONNS) > 0)
                });
                if busy && started.is_some_and(|t| t.elapsed() < bound) {
                    continue;
                }
                // The old multiplexers may have accepted a connection just before they
                // read StopAccepting: close the old pools only once each says it holds
                // none from a listener any more (its slot's QUIESCED), or after the
                // longest such a connection can take (head, wait for room, hand-off).
                let mux_bound = g.cfg.server.request_head_timeout
                    + g.cfg.server.processor_wait_timeout
                    + Duration::from_millis(crate::bootstrap::HANDOFF_TIMEOUT_MS)
                    + Duration::from_secs(1);
                // ... and none is still routing a connection (a hand-back included),
                // and no hand-back waits in a queue towards them.
                let quiesced = self.children.values().filter(|c| is_mux(c)).all(|c| {
                    c.slot.as_ref().is_none_or(|s| {
                        s.seg.get(common::scoreboard::slot::QUIESCED) == 1
                            && s.seg.get(common::scoreboard::slot::ACTIVE_CONNS) == 0
                    })
                }) && self
                    .gen(id)
                    .and_then(|g| g.keepers.as_ref())
                    .is_some_and(|k| k.pending_handbacks().is_ok_and(|n| n == 0));
                if !quiesced && started.is_some_and(|t| t.elapsed() < mux_bound) {
                    continue;
                }
                if let Some(k) = self.gen(id).and_then(|g| g.keepers.as_ref()) {
                    if let Err(e) = k.close_queues() {
                        warn!(generation = id, "closing the old queues: {e}");
                    }
                }
                self.tell(is_proc, &ToChild::Drain);
                self.tell(is_mux, &ToChild::Shutdown);
                if let Some(g) = self.gen_mut(id) {
                    g.retire_phase = 2;
                }
            }
            // Its processors are gone: nobody connects to its FastCGI socket any more.
            if !self
                .children
                .values()
                .any(|c| c.gen == id && matches!(c.kind, Kind::Processor { .. }))
            {
                self.stop_backends(|c| c.gen == id);
            }
            if !self
                .children
                .values()
                .any(|c| c.gen == id && !matches!(c.kind, Kind::Spare))
            {
                // Dropped first (its FastCGI sockets unlinked, its table unmapped), so
                // that the line says what is done.
                self.gens.retain(|g| g.id != id);
                info!(generation = id, "reload: old generation finished");
            }
        }
    }

    /// Sends `msg` to the children `which` selects without marking them stopping.
    fn tell_keep(&self, which: impl Fn(&Child) -> bool, msg: &ToChild) {
        for (pid, c) in &self.children {
            if which(c) {
                if let Err(e) = control::send(c.control.as_fd(), msg, &[]) {
                    warn!(pid, "sending {msg:?}: {e}");
                }
            }
        }
    }

    /// SIGUSR1: reopen the error log and every access log, and hand the new files to
    /// the children that write them: the error log to the multiplexers (processors
    /// write their log pipe; spares inherit the supervisor's new fd 2 when exec'd).
    pub(crate) fn reopen_logs(&mut self) {
        info!("SIGUSR1: reopening logs");
        let Some(cfg) = self.gens.last().map(|g| g.cfg.clone()) else {
            return;
        };
        match crate::errlog::install(&cfg) {
            Ok(Some(fd)) => {
                for (pid, c) in &self.children {
                    if matches!(c.kind, Kind::Multiplexer { .. }) {
                        if let Err(e) =
                            control::send(c.control.as_fd(), &ToChild::ErrorLog, &[fd.as_raw_fd()])
                        {
                            warn!(pid, "sending the error log: {e}");
                        }
                    }
                }
                // Spares exec'd before now keep the old file until they are assigned a
                // pipe: they are our own fresh exec and log nothing meanwhile.
                self.errlog = Some(fd);
            }
            Ok(None) => {}
            Err(e) => error!("reopening the error log: {e}"),
        }
        let (mut logs, errors) = AccessLogs::open_all(&cfg);
        for e in errors {
            error!("{e}; the vhost keeps its current log file");
        }
        let current = self.current();
        let Some(g) = self.gens.iter_mut().find(|g| g.id == current) else {
            return;
        };
        logs.keep_from(std::mem::take(&mut g.logs));
        g.logs = logs;
        let g = &*g;
        for (pid, c) in &self.children {
            let Kind::Processor { env } = c.kind else { continue };
            if c.gen != current {
                continue;
            }
            let vhosts: Vec<u32> = cfg
                .vhosts
                .iter()
                .enumerate()
                .filter(|(i, v)| v.environment == env && g.logs.files.contains_key(i))
                .map(|(i, _)| i as u32)
                .collect();
            if vhosts.is_empty() {
                continue;
            }
            let fds: Vec<i32> = vhosts
                .iter()
                .filter_map(|i| g.logs.files.get(&(*i as usize)))
                .map(|f| f.as_raw_fd())
                .collect();
            if let Err(e) = control::send(c.control.as_fd(), &ToChild::Logs { vhosts }, &fds) {
                warn!(pid, "sending reopened access logs: {e}");
            }
        }
        let _: Option<OwnedFd> = None;
    }
}

/// The listeners for `addrs`: every address that stays is kept (port 0: the port bound
/// at start; a dup of our copy), the new ones are bound.
fn keep_or_bind(
    current: &[(std::net::SocketAddr, std::os::fd::OwnedFd)],
    addrs: &[std::net::SocketAddr],
) -> Result<Vec<(std::net::SocketAddr, std::os::fd::OwnedFd)>, String> {
    let mut out = Vec::new();
    for addr in addrs {
        let kept = current
            .iter()
            .find(|(a, _)| a == addr || (addr.port() == 0 && a.ip() == addr.ip()));
        let l = match kept {
            Some((a, fd)) => fd.try_clone().map(|fd| (*a, fd)).map_err(|e| e.to_string()),
            None => crate::activation::listener(*addr).map_err(|e| e.to_string()),
        };
        out.push(l?);
    }
    Ok(out)
}
