//! The event loop: signals, the children's control events, due restarts, the stop
//! deadline and the maintenance tick, one at a time; readiness (the `ready` line, and
//! where systemd's `READY=1` will be sent) and multiplexers' requests for processors.

use std::time::{Duration, Instant};

use common::scoreboard::table;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

use crate::state::{Kind, Supervisor, SPARES};
use crate::stop::Stopping;
use crate::SupervisorError;

/// What a child's control channel brought (`watch.rs`).
pub(crate) enum Event {
    Ready(i32),
    /// A processor will reach `max_requests_per_child` soon: start its successor.
    Recycling(i32),
    Spawn {
        pid: i32,
        env: u32,
    },
    /// The child broke the control protocol (see `watch.rs`): it is killed.
    Violation {
        pid: i32,
        why: String,
    },
    /// A connection waits unaccepted on an environment's FastCGI socket
    /// (`fastcgi/watch.rs`).
    FastcgiPending {
        gen: u64,
        env: usize,
    },
}

/// The maintenance tick (as Apache's).
const TICK: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Runs until stopped; returns the exit code.
    pub async fn run(mut self) -> Result<i32, SupervisorError> {
        let mut sigterm = signal(SignalKind::terminate()).map_err(SupervisorError::Signal)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(SupervisorError::Signal)?;
        let mut sigchld = signal(SignalKind::child()).map_err(SupervisorError::Signal)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(SupervisorError::Signal)?;
        let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(SupervisorError::Signal)?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // systemd's watchdog, pinged from this loop (an hour apart when there is none).
        let mut watchdog = tokio::time::interval(
            self.notifier
                .watchdog_interval()
                .unwrap_or(Duration::from_secs(3600)),
        );
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A child may have died before the handler was installed.
        self.reap()?;
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            let respawn_at = self.pending.iter().map(|(t, _)| *t).min().unwrap_or(far);
            let stop_at = self.stopping.deadline().unwrap_or(far);
            tokio::select! {
                _ = sigterm.recv() => self.begin_stop(true),
                _ = sigint.recv() => self.begin_stop(false),
                _ = sigchld.recv() => self.reap()?,
                _ = sighup.recv() => {
                    self.notifier.reloading();
                    self.reload();
                    let status = self.status_line();
                    self.notifier.ready(status);
                }
                _ = sigusr1.recv() => self.reopen_logs(),
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                _ = tokio::time::sleep_until(respawn_at.into()) => self.respawn_due(),
                _ = tokio::time::sleep_until(stop_at.into()) => self.stop_deadline(),
                _ = tick.tick() => if matches!(self.stopping, Stopping::No) {
                    self.maintain();
                    self.maintain_backends();
                    if self.ready_logged {
                        let status = self.status_line();
                        self.notifier.status(status);
                    }
                },
                _ = watchdog.tick() => self.notifier.tick(),
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
                let (kind, gen) = (c.kind, c.gen);
                if let (Kind::Processor { env }, Some(t)) = (kind, c.assigned.take()) {
                    let us = t.elapsed().as_micros() as u64;
                    if let Some(g) = self.gen(gen) {
                        g.table.add(table::env_word(env, table::env::COLD_STARTS), 1);
                        g.table.add(table::env_word(env, table::env::COLD_START_US), us);
                    }
                }
                if let Kind::Processor { env } = kind {
                    self.tell_peers(gen, env);
                }
                if !self.ready_logged && self.generation_ready(0) {
                    self.server_ready();
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
            Event::Recycling(pid) => {
                let Some(c) = self.children.get(&pid) else { return };
                let Kind::Processor { env } = c.kind else { return };
                if c.stopping || !c.ready || c.gen != self.current() {
                    return;
                }
                debug!(
                    pid,
                    env, "processor near max_requests_per_child: starting its successor"
                );
                let gen = c.gen;
                self.spawn_on_demand(gen, env);
            }
            Event::FastcgiPending { gen, env } => self.backend_demand(gen, env),
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
                    Kind::Backend { .. } => {
                        warn!(
                            pid,
                            "fastcgi backend sent a control message (it may say nothing): {why}; killing it"
                        );
                        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
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

    /// Every first child is up: the `ready` line (what the tests and systemd's
    /// `READY=1` wait for), then the spares.
    fn server_ready(&mut self) {
        self.ready_logged = true;
        let addrs: Vec<String> = self.listeners.http.iter().map(|(a, _)| a.to_string()).collect();
        let mut metrics = match &self.listeners.metrics {
            Some((a, _)) => format!("; metrics on {a}"),
            None => String::new(),
        };
        if !self.listeners.tls.is_empty() {
            let tls: Vec<String> = self.listeners.tls.iter().map(|(a, _)| a.to_string()).collect();
            metrics = format!("; tls on {}{metrics}", tls.join(", "));
        }
        info!(
            pid = std::process::id(),
            children = self.children.len(),
            "ready: listening on {}{metrics}",
            addrs.join(", ")
        );
        let status = self.status_line();
        self.notifier.ready(status);
        for _ in 0..SPARES {
            if let Err(e) = self.start_spare() {
                warn!("starting a spare processor: {e}");
            }
        }
    }

    /// The `STATUS=` line for systemd: the newest generation's environments, the
    /// processors and FastCGI backends running.
    fn status_line(&self) -> String {
        let count = |f: fn(&Kind) -> bool| {
            self.children
                .values()
                .filter(|c| f(&c.kind) && !c.stopping)
                .count()
        };
        let processors = count(|k| matches!(k, Kind::Processor { .. }));
        let backends = count(|k| matches!(k, Kind::Backend { .. }));
        let (envs, gen) = self
            .gens
            .last()
            .map(|g| (g.cfg.environments.len(), g.id))
            .unwrap_or((0, 0));
        crate::notify::status_line(envs, processors, backends, gen)
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
}
