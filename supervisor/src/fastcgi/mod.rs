//! FastCGI backends, supervised as their environment: per generation and environment
//! with `fastcgi`, one listening Unix socket made by the supervisor ([`socket`]),
//! watched for a connection nobody accepted ([`watch`]), and backends (our binary as
//! `fastcgi-backend`, which drops to the environment and exec's `command` with the
//! socket on fd 0) started and stopped by [`scale::decide`] from what `/proc` says
//! ([`procfs`]). The supervisor never accepts on the socket: a connection queued
//! while no backend runs waits in its backlog until one does.
//!
//! With `manager = "php-fpm"` there is exactly one backend per environment and
//! generation, always: php-fpm's master on a pool file written beside the socket
//! ([`fpm`]), adopting the socket and forking its own children (`pm = ondemand`); it
//! is not scaled nor idle-stopped, replaced with backoff when it dies, and its
//! children are counted from `/proc` at each tick as the environment's `BACKENDS`.

pub mod fpm;
pub mod procfs;
pub mod scale;
pub mod socket;
pub mod watch;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::control::{self, BackendBoot, Bootstrap, RoleBoot, ToChild};
use common::privdrop::Credentials;
use common::scoreboard::{slot, table};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::reap::{backoff, Restart};
use crate::state::{Child, Kind, Supervisor};
use crate::stop::Stopping;
use crate::SupervisorError;

/// A backend told to stop (idle, or its generation gone) that is still there after
/// this long gets SIGKILL (its process group).
const TERM_GRACE: Duration = Duration::from_secs(10);
/// A backend that exits cleanly sooner than this after its start is backed off like a
/// crash (without counting a death): `/bin/true` as a command cannot make a loop.
const QUICK_EXIT: Duration = Duration::from_millis(500);

/// An environment's FastCGI side in one generation: its socket and its watch.
#[derive(Debug)]
pub struct EnvBackends {
    pub socket: socket::Socket,
    watch: Option<tokio::task::AbortHandle>,
    /// The max_backends warning of this episode was logged.
    pub at_max_warned: bool,
    /// Backends that died (not a clean exit) soon after their start, in a row.
    pub early_deaths: u32,
    /// When the waiting requests were last refused ([`watch::refuse_waiting`]'s
    /// child forked), and when that was last logged.
    refused_at: Option<Instant>,
    refusal_logged_at: Option<Instant>,
    /// `manager = "php-fpm"`: the master's pool file.
    pub pool: Option<fpm::PoolFile>,
}

impl Drop for EnvBackends {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}

/// What the supervisor tracks of one backend between ticks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Track {
    cpu: Option<u64>,
    idle_since: Option<Instant>,
    in_accept: bool,
    /// When it was sent SIGTERM.
    term_at: Option<Instant>,
    /// The environment's FastCGI requests ([`Supervisor::fastcgi_requests`]) when it
    /// started.
    requests_at_start: u64,
}

/// Makes the sockets of a generation being built: `None` for an environment without
/// `fastcgi`. Any error refuses the generation (a reload keeps the old one serving).
pub fn sockets(
    cfg: &conf::Config,
    gen: u64,
    privileged: bool,
) -> Result<Vec<Option<EnvBackends>>, SupervisorError> {
    cfg.environments
        .iter()
        .enumerate()
        .map(|(env, e)| {
            if e.fastcgi.is_none() {
                return Ok(None);
            }
            let (host, inner) = crate::bootstrap::fastcgi_socket(cfg, env, gen);
            let spec = socket::Spec {
                env: &e.name,
                host: &host,
                inner: &inner,
                jail: e.chroot.as_deref(),
                owner: privileged.then_some((e.uid, e.gid)),
            };
            let socket = socket::create(&spec)?;
            let pool = match e.fastcgi.as_ref() {
                Some(f) if f.manager == conf::Manager::PhpFpm => {
                    let text = fpm::pool_text(&fpm::Pool {
                        env: &e.name,
                        generation: gen,
                        socket: &inner,
                        fastcgi: f,
                    });
                    Some(fpm::write(
                        &e.name,
                        socket.dir(),
                        &host.with_extension("conf"),
                        inner.with_extension("conf"),
                        inner.clone(),
                        &text,
                        spec.owner,
                    )?)
                }
                _ => None,
            };
            Ok(Some(EnvBackends {
                socket,
                watch: None,
                at_max_warned: false,
                early_deaths: 0,
                refused_at: None,
                refusal_logged_at: None,
                pool,
            }))
        })
        .collect()
}

fn group_signal(pid: i32, sig: Signal) {
    // The backend leads its own process group (setsid at spawn): PHP's own children
    // go too. Its pid is still its own while it is unreaped, as it is here.
    let _ = kill(Pid::from_raw(-pid), sig);
    let _ = kill(Pid::from_raw(pid), sig);
}

impl Supervisor {
    /// A new generation's backends: the socket watches, then `min_backends` each.
    pub(crate) fn start_backends(&mut self, gen: u64) -> Result<(), SupervisorError> {
        let tx = self.events_tx.clone();
        let Some(g) = self.gen_mut(gen) else { return Ok(()) };
        let mut mins = Vec::new();
        for (env, slot) in g.fastcgi.iter_mut().enumerate() {
            let Some(b) = slot else { continue };
            let e = &g.cfg.environments[env];
            if b.pool.is_some() {
                // php-fpm's master watches the socket itself.
                info!(environment = %e.name, generation = gen, socket = %b.socket.path.display(), "fastcgi socket listening (php-fpm)");
                mins.push((env, 1));
                continue;
            }
            let handle =
                watch::spawn(&b.socket.listener, gen, env, tx.clone()).map_err(SupervisorError::Runtime)?;
            b.watch = Some(handle);
            info!(environment = %e.name, generation = gen, socket = %b.socket.path.display(), "fastcgi socket listening");
            let min = e.fastcgi.as_ref().map_or(0, |f| f.min_backends);
            mins.push((env, min));
        }
        for (env, min) in mins {
            for _ in 0..min {
                self.start_backend(gen, env)?;
            }
        }
        Ok(())
    }

    /// Starts one backend of `env` in generation `gen`.
    pub(crate) fn start_backend(&mut self, gen: u64, env: usize) -> Result<(), SupervisorError> {
        let privileged = self.privileged;
        // The environment's view, built now when this is its first child.
        if let Some(g) = self.gen_mut(gen) {
            g.ensure_view(env)?;
        }
        let Some(g) = self.gen(gen) else { return Ok(()) };
        let Some((e, f, b)) = g.cfg.environments.get(env).and_then(|e| {
            let f = e.fastcgi.as_ref()?;
            let b = g.fastcgi.get(env)?.as_ref()?;
            Some((e, f, b))
        }) else {
            return Ok(());
        };
        let boot = Bootstrap {
            credentials: privileged.then(|| Credentials {
                uid: e.uid,
                gid: e.gid,
                chroot: e.chroot.clone(),
            }),
            role: RoleBoot::Backend(BackendBoot {
                environment: e.name.clone(),
                env_id: env as u32,
                command: f.command.clone(),
                env: f.env.clone(),
                max_requests: f.max_requests,
                generation: gen,
                php_fpm: b.pool.as_ref().map(|p| control::FpmBoot {
                    config: p.inner.to_string_lossy().into_owned(),
                    socket: p.socket.to_string_lossy().into_owned(),
                }),
            }),
            sandbox: g.view(env).map(|v| v.sandbox.clone()),
        };
        let fds = common::bootfds::BackendFds {
            log_pipe: g.log_pipe(env)?,
            listener: b.socket.listener.as_fd(),
        }
        .to_wire();
        let name = e.name.clone();
        let s = match g.view(env) {
            Some(v) => v.spawn(&self.exe, "fastcgi-backend")?,
            None => crate::spawn::spawn(&self.exe, "fastcgi-backend")?,
        };
        // Into its environment's cgroup before its bootstrap: it runs no tenant code yet.
        if let Err(err) = self.cgroups.attach(&name, s.pid) {
            let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
            return Err(err.into());
        }
        let reader = s.control.try_clone().map_err(SupervisorError::Runtime)?;
        crate::watch::spawn(s.pid, reader, "fastcgi-backend", self.events_tx.clone());
        if let Err(err) = control::send(s.control.as_fd(), &ToChild::Bootstrap(Box::new(boot)), &fds) {
            error!(pid = s.pid, "sending a fastcgi backend its bootstrap: {err}");
        }
        let pid = s.pid;
        self.children
            .insert(pid, Child::new(Kind::Backend { env }, gen, s.control, None, None));
        let requests_at_start = self.fastcgi_requests(gen, env);
        self.backends.insert(
            pid,
            Track {
                requests_at_start,
                ..Track::default()
            },
        );
        if let Some(g) = self.gen(gen) {
            g.table.add(table::env_word(env, table::env::BACKEND_STARTS), 1);
        }
        self.count_backends(gen, env);
        info!(environment = %name, pid, "fastcgi backend started");
        Ok(())
    }

    /// Writes `BACKENDS` (running now) of `env` in generation `gen`: the backends, or
    /// with php-fpm its master's children (the processes that serve; the master never
    /// does, and `?json`'s idle is running minus busy).
    pub(crate) fn count_backends(&self, gen: u64, env: usize) {
        let fpm = self.is_fpm(gen, env);
        let n = self
            .children
            .iter()
            .filter(|(_, c)| c.gen == gen && c.kind == (Kind::Backend { env }))
            .map(|(pid, c)| match fpm {
                false => 1,
                true if c.stopping => 0,
                true => procfs::children(*pid).unwrap_or(0),
            })
            .fold(0usize, usize::saturating_add);
        if let Some(g) = self.gen(gen) {
            g.table.set(table::env_word(env, table::env::BACKENDS), n as u64);
        }
    }

    /// Whether (`gen`, `env`)'s backend is a php-fpm master.
    fn is_fpm(&self, gen: u64, env: usize) -> bool {
        self.gen(gen)
            .and_then(|g| g.fastcgi.get(env)?.as_ref())
            .is_some_and(|b| b.pool.is_some())
    }

    /// php-fpm: one master, always (while the generation has processors to serve,
    /// when it is retiring); a dead one is replaced once its backoff is over, and
    /// while none can run, what waits is refused as for php-cgi. Its children are
    /// counted at each `tick`.
    fn keep_fpm_master(&mut self, gen: u64, env: usize, retiring: bool, tick: bool) {
        if retiring && !self.gen_has_processors(gen) {
            self.stop_backends(|c| c.gen == gen && c.kind == (Kind::Backend { env }));
            return;
        }
        if tick {
            self.count_backends(gen, env);
        }
        let running = self
            .children
            .values()
            .any(|c| c.gen == gen && c.kind == (Kind::Backend { env }) && !c.stopping);
        if running {
            return;
        }
        let scheduled = self
            .pending
            .iter()
            .any(|(_, r)| *r == (Restart::Backend { gen, env }));
        if scheduled {
            if self.fastcgi_pending(gen, env) && self.failing(gen, env) {
                self.refuse_waiting(gen, env);
            }
            return;
        }
        if let Err(err) = self.start_backend(gen, env) {
            error!(environment = %self.env_name(gen, env), "starting php-fpm: {err}");
        }
    }

    fn env_name(&self, gen: u64, env: usize) -> String {
        self.gen(gen)
            .and_then(|g| g.cfg.environments.get(env))
            .map(|e| e.name.clone())
            .unwrap_or_default()
    }

    /// Whether a connection waits, unaccepted, on `env`'s socket in `gen`.
    fn fastcgi_pending(&self, gen: u64, env: usize) -> bool {
        self.gen(gen)
            .and_then(|g| g.fastcgi.get(env)?.as_ref())
            .is_some_and(|b| watch::pending(b.socket.listener.as_fd()))
    }

    /// Whether the generation's processors are all gone (its backends serve nobody).
    fn gen_has_processors(&self, gen: u64) -> bool {
        self.children
            .values()
            .any(|c| c.gen == gen && matches!(c.kind, Kind::Processor { .. }))
    }

    /// The backends of (`gen`, `env`) not told to stop, as [`scale::decide`] sees them.
    fn seen_backends(&self, gen: u64, env: usize, now: Instant) -> Vec<scale::Seen> {
        self.children
            .iter()
            .filter(|(_, c)| c.gen == gen && c.kind == (Kind::Backend { env }) && !c.stopping)
            .map(|(pid, c)| {
                let t = self.backends.get(pid).copied().unwrap_or_default();
                let age = now.saturating_duration_since(c.started);
                scale::Seen {
                    pid: *pid,
                    age,
                    // Only a young backend's fds are looked at: an older one is past
                    // its start whatever it holds.
                    ready: t.in_accept
                        || procfs::in_accept(*pid) == Some(true)
                        || (age < scale::STARTING_MAX && procfs::holds_connection(*pid)),
                    idle_for: t.idle_since.map(|s| now.saturating_duration_since(s)),
                }
            })
            .collect()
    }

    /// Decides and acts for one environment of one generation (`tick`: also stop the
    /// idle ones).
    fn scale_backends(&mut self, gen: u64, env: usize, tick: bool) {
        if !matches!(self.stopping, Stopping::No) {
            return;
        }
        let Some(g) = self.gen(gen) else { return };
        let (Some(e), true) = (
            g.cfg.environments.get(env),
            g.fastcgi.get(env).is_some_and(Option::is_some),
        ) else {
            return;
        };
        let Some(f) = &e.fastcgi else { return };
        let name = e.name.clone();
        let retiring = g.retiring;
        if f.manager == conf::Manager::PhpFpm {
            self.keep_fpm_master(gen, env, retiring, tick);
            return;
        }
        let limits = scale::Limits {
            min: f.min_backends,
            max: f.max_backends,
            idle_timeout: f.idle_timeout,
        };
        // A retiring generation keeps backends only while its processors still serve.
        if retiring && !self.gen_has_processors(gen) {
            self.stop_backends(|c| c.gen == gen && c.kind == (Kind::Backend { env }));
            return;
        }
        let now = Instant::now();
        let seen = self.seen_backends(gen, env, now);
        let pending = self.fastcgi_pending(gen, env);
        let scheduled = self
            .pending
            .iter()
            .any(|(_, r)| *r == (Restart::Backend { gen, env }));
        if seen.is_empty() && scheduled && pending && self.failing(gen, env) {
            // Every backend died at once, again and again, and the next start waits
            // for its backoff.
            self.refuse_waiting(gen, env);
            return;
        }
        let mut plan = scale::decide(&seen, &limits, pending, scheduled);
        if retiring {
            // Serves its draining processors on demand, keeps no minimum.
            plan.start = plan.start.min(u32::from(pending));
        }
        if !tick {
            plan.stop.clear();
        }
        let warned = self
            .gen_mut(gen)
            .and_then(|g| g.fastcgi.get_mut(env)?.as_mut())
            .map(|b| std::mem::replace(&mut b.at_max_warned, plan.at_max));
        if plan.at_max && warned == Some(false) {
            warn!(
                "environment {name}: max_backends ({}) reached; requests wait in the socket's backlog",
                limits.max
            );
        }
        for pid in &plan.stop {
            info!(environment = %name, pid, "fastcgi backend idle for idle_timeout: stopping it");
        }
        let stop = plan.stop;
        self.stop_backends(|c| stop.contains(&c.pid_hint()));
        for _ in 0..plan.start {
            if let Err(err) = self.start_backend(gen, env) {
                error!(environment = %name, "starting a fastcgi backend: {err}");
                break;
            }
        }
    }

    /// A connection waits on a socket (its watch's event).
    pub(crate) fn backend_demand(&mut self, gen: u64, env: usize) {
        self.scale_backends(gen, env, false);
    }

    /// A crashed backend's backoff is over.
    pub(crate) fn backend_restart_due(&mut self, gen: u64, env: usize) {
        self.scale_backends(gen, env, false);
    }

    /// The 1 s tick: idle tracking from `/proc`, then each environment's decision in
    /// every generation; stopped backends that outlive [`TERM_GRACE`] are killed.
    pub(crate) fn maintain_backends(&mut self) {
        let now = Instant::now();
        for (pid, c) in &self.children {
            if !matches!(c.kind, Kind::Backend { .. }) {
                continue;
            }
            let t = self.backends.entry(*pid).or_default();
            if let Some(at) = t.term_at {
                if now.saturating_duration_since(at) > TERM_GRACE {
                    group_signal(*pid, Signal::SIGKILL);
                }
                continue;
            }
            let cpu = procfs::cpu(*pid);
            t.in_accept = procfs::in_accept(*pid) == Some(true);
            if t.in_accept && cpu.is_some() && cpu == t.cpu {
                t.idle_since.get_or_insert(now);
            } else {
                t.idle_since = None;
            }
            t.cpu = cpu;
        }
        let which: Vec<(u64, usize)> = self
            .gens
            .iter()
            .flat_map(|g| {
                g.fastcgi
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.is_some())
                    .map(move |(env, _)| (g.id, env))
            })
            .collect();
        for (gen, env) in which {
            self.scale_backends(gen, env, true);
        }
    }

    /// SIGTERM to the process group of every backend `which` picks (once).
    pub(crate) fn stop_backends(&mut self, which: impl Fn(&BackendRef) -> bool) {
        let now = Instant::now();
        for (pid, c) in self.children.iter_mut() {
            if !matches!(c.kind, Kind::Backend { .. }) || c.stopping {
                continue;
            }
            if !which(&BackendRef { pid: *pid, child: c }) {
                continue;
            }
            c.stopping = true;
            group_signal(*pid, Signal::SIGTERM);
            self.backends.entry(*pid).or_default().term_at = Some(now);
        }
    }

    /// A backend was reaped. Asked to stop (idle, shutdown, its generation gone): a
    /// line. Exit status 0 (`max_requests` served, or its own choice): replaced at once
    /// when `min_backends` or a waiting connection needs it, not a death. Anything
    /// else: a death, counted, and its replacement waits for the backoff.
    pub(crate) fn backend_exited(&mut self, pid: i32, child: &Child, env: usize, clean: bool, how: &str) {
        let track = self.backends.remove(&pid).unwrap_or_default();
        // What it forked and left behind in its group goes with it. The group id
        // cannot be a new process's pid while any member lives.
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let gen = child.gen;
        self.count_backends(gen, env);
        let name = self
            .gen(gen)
            .and_then(|g| g.cfg.environments.get(env))
            .map(|e| e.name.clone())
            .unwrap_or_default();
        if child.stopping || !matches!(self.stopping, Stopping::No) {
            info!(environment = %name, pid, "fastcgi backend exited ({how})");
            return;
        }
        let restart = Restart::Backend { gen, env };
        let lived = child.started.elapsed();
        if let Some(b) = self.gen_mut(gen).and_then(|g| g.fastcgi.get_mut(env)?.as_mut()) {
            b.early_deaths = if !clean && lived < EARLY_DEATH {
                b.early_deaths.saturating_add(1)
            } else {
                0
            };
        }
        // A quick clean exit is `max_requests` served by a fast backend when the
        // environment's processors sent requests meanwhile; a program that exits at
        // once (`/bin/true`) serves none.
        let served = self.fastcgi_requests(gen, env) > track.requests_at_start;
        // A php-fpm master has no max_requests of its own: any exit is backed off.
        if clean && !self.is_fpm(gen, env) && (lived >= QUICK_EXIT || served) {
            info!(environment = %name, pid, "fastcgi backend exited ({how}; max_requests served or its own choice)");
            self.backoff.remove(&restart);
            self.scale_backends(gen, env, false);
            return;
        }
        // A clean exit at once is no death, but a program doing it in a loop must not
        // make root fork and exec in a loop: it backs off as a crash does.
        let count = self.backoff.entry(restart).or_default();
        let (failures, delay) = backoff(*count, lived, false);
        *count = failures;
        if clean {
            info!(
                environment = %name,
                pid,
                "fastcgi backend exited ({how}) {} ms after it started; a replacement may start in {delay:?}",
                lived.as_millis()
            );
        } else {
            if let Some(g) = self.gen(gen) {
                g.table.add(table::env_word(env, table::env::BACKEND_DEATHS), 1);
            }
            warn!(
                environment = %name,
                pid,
                "fastcgi backend died ({how}); a replacement may start in {delay:?}"
            );
        }
        if !self.pending.iter().any(|(_, r)| *r == restart) {
            self.pending.push((Instant::now() + delay, restart));
        }
        let running = self
            .children
            .values()
            .any(|c| c.gen == gen && c.kind == (Kind::Backend { env }) && !c.stopping);
        if !running && !delay.is_zero() && self.failing(gen, env) {
            self.refuse_waiting(gen, env);
        }
    }

    /// The FastCGI requests the live processors of (`gen`, `env`) have sent (their
    /// slots' `FCGI_REQUESTS`, tenant-written, so clamped and summed saturating, plus those
    /// of processors gone; only
    /// ever compared with itself, to tell a backend that served from one that did not).
    fn fastcgi_requests(&self, gen: u64, env: usize) -> u64 {
        // With the retired processors' counts, so a processor that exits meanwhile
        // takes nothing away.
        let retired = self
            .gen(gen)
            .map(|g| {
                g.table
                    .get(table::env_word(env, table::env::RETIRED_FCGI_REQUESTS))
            })
            .unwrap_or(0);
        let live = self
            .children
            .values()
            .filter(|c| c.gen == gen && c.kind == (Kind::Processor { env }))
            .filter_map(|c| c.slot.as_ref())
            .fold(0u64, |n, s| {
                n.saturating_add(s.seg.get(slot::FCGI_REQUESTS).min(1 << 48))
            });
        live.saturating_add(retired)
    }

    /// Whether (`gen`, `env`)'s backends keep dying soon after they start: at least
    /// [`FAILING_AFTER`] deaths within [`EARLY_DEATH`] of their start in a row (a
    /// clean exit, `max_requests` served, resets it). One death (a kill -9, a crash)
    /// is not that: its replacement is coming, and what waits is served by it.
    fn failing(&self, gen: u64, env: usize) -> bool {
        self.gen(gen)
            .and_then(|g| g.fastcgi.get(env)?.as_ref())
            .is_some_and(|b| b.early_deaths >= FAILING_AFTER)
    }

    /// No backend of (`gen`, `env`) runs and none may start before its backoff: the
    /// requests waiting on its socket are refused now (their processors answer 502)
    /// rather than left to time out; one line per refusal batch.
    ///
    /// A refusal forks a short-lived child (see [`watch::refuse_waiting`]), at most one
    /// per [`scale::HOLD_OFF`] per environment, logged at most once per
    /// [`REFUSAL_LOG_EVERY`].
    fn refuse_waiting(&mut self, gen: u64, env: usize) {
        let now = Instant::now();
        let name = self.env_name(gen, env);
        let Some(b) = self.gen_mut(gen).and_then(|g| g.fastcgi.get_mut(env)?.as_mut()) else {
            return;
        };
        if b.refused_at
            .is_some_and(|t| now.saturating_duration_since(t) < scale::HOLD_OFF)
        {
            return;
        }
        b.refused_at = Some(now);
        let log = b
            .refusal_logged_at
            .is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_LOG_EVERY);
        match watch::refuse_waiting(b.socket.listener.as_fd(), REFUSE_BATCH) {
            Some(pid) if log => {
                b.refusal_logged_at = Some(now);
                warn!(
                    environment = %name,
                    refuser = pid,
                    "no fastcgi backend can run now (each one died at once; the next start waits for its backoff): the waiting requests are refused with 502"
                );
            }
            Some(_) => {}
            None => error!(environment = %name, "refusing the waiting requests: fork failed"),
        }
    }
}

/// Consecutive early deaths after which waiting requests are refused.
const FAILING_AFTER: u32 = 3;
/// A death this soon after the start counts towards [`FAILING_AFTER`].
const EARLY_DEATH: Duration = Duration::from_secs(10);

/// Most waiting connections refused at once (the backlog is 511).
const REFUSE_BATCH: usize = 1024;
/// One refusal line per environment at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// A backend as [`Supervisor::stop_backends`]'s filter sees it.
pub(crate) struct BackendRef<'a> {
    pid: i32,
    child: &'a Child,
}

impl BackendRef<'_> {
    pub(crate) fn pid_hint(&self) -> i32 {
        self.pid
    }
}

impl std::ops::Deref for BackendRef<'_> {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.child
    }
}
