//! One configuration generation: its config, the fd keepers of its environments'
//! hand-off sockets (`keeper.rs`), its shared table, and the registry of child slots
//! in that table. A reload starts a new
//! generation beside the old one; listeners are not part of it (they outlive reloads).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use common::scoreboard::{self, slot, table, Segment};
use conf::Config;

use crate::logs::AccessLogs;
use crate::SupervisorError;

/// Largest value taken from one tenant-written counter: far above any real count,
/// and low enough that sums over every slot cannot overflow.
pub const TENANT_COUNTER_MAX: u64 = 1 << 48;

/// Per-environment pool bookkeeping (the supervisor's side only).
#[derive(Debug, Default, Clone)]
pub struct PoolState {
    /// Prefork's spawn rate: 1, 2, 4 … 32 per tick while spares are short.
    pub spawn_rate: u32,
}

/// Resources of one generation.
pub struct Generation {
    pub id: u64,
    pub cfg: Arc<Config>,
    /// The keepers of its environments' hand-off sockets (the supervisor holds
    /// neither end); `None` only in unit tests.
    pub keepers: Option<crate::keeper::Keepers>,
    /// Per environment: the write end of its log pipe (its processors' fds 1 and 2;
    /// `tenant_log` reads the other end).
    /// Each environment's log pipe, made when its first child is bootstrapped: an
    /// environment that never runs costs no fd and no reader task here.
    log_pipes: Vec<std::cell::OnceCell<OwnedFd>>,
    /// Read-write fd of the shared table, for this generation's multiplexers.
    pub table_fd: OwnedFd,
    /// The supervisor's own mapping of it.
    pub table: Segment,
    pub pools: Vec<PoolState>,
    /// Registry entries in use (index → pid).
    registry: Vec<Option<u32>>,
    /// Draining after a reload: no more spawns.
    pub retiring: bool,
    /// Where a retiring generation is: 0 waiting for the new multiplexers, 1 told to
    /// stop accepting and close connections gracefully (since the instant), 2 draining.
    pub retire_phase: u8,
    pub retire_started: Option<std::time::Instant>,
    /// This generation's access logs, by its own vhost indexes (a processor started
    /// for it, even after a reload, gets its own vhosts' files).
    pub logs: AccessLogs,
    /// Per environment with `fastcgi`: its listening socket (unlinked when this
    /// generation is dropped) and its watch.
    pub fastcgi: Vec<Option<crate::fastcgi::EnvBackends>>,
    /// Per environment with a certificate: its processors' TLS ticket seed (random, of
    /// this generation only).
    pub ticket_seeds: Vec<Option<common::control::TicketSeed>>,
    /// The multiplexers' hand-off tag key, when a listener reads PROXY headers.
    pub proxy_key: Option<common::control::TicketSeed>,
    /// Per environment with `private_view`: its namespaces and their holder, shared
    /// with the generations before and after it that keep the view's settings (the
    /// holder exits when the last of them is dropped).
    pub views: Vec<Option<Arc<crate::namespace::View>>>,
    /// Running as root (private views are on where configured).
    privileged: bool,
}

impl Generation {
    pub fn new(
        id: u64,
        cfg: Arc<Config>,
        started_ms: u64,
        logs: AccessLogs,
        privileged: bool,
        previous: Option<&Generation>,
    ) -> Result<Generation, SupervisorError> {
        // First: a socket that cannot be made refuses the generation before anything
        // else is built.
        let fastcgi = crate::fastcgi::sockets(&cfg, id, privileged)?;
        // After the sockets: a jail's `.bulkhead` exists when its view is built. The
        // views `previous` has with the same settings are kept.
        let views = crate::namespace::views(&cfg, id, privileged, previous)?;
        let log_pipes = (0..cfg.environments.len())
            .map(|_| std::cell::OnceCell::new())
            .collect();
        let envs = cfg.environments.len();
        let vhosts = cfg.vhosts.len();
        // Room for every child server_limit allows, plus spares and the multiplexers
        // of a reload overlapping this generation.
        let reg_len = cfg.server.server_limit as usize + 64;
        let (rw, _ro) = scoreboard::create("bulkhead-table", table::words(envs, vhosts, reg_len))?;
        let seg = Segment::map(&rw, true)?;
        seg.set(table::ENVS, envs as u64);
        seg.set(table::VHOSTS, vhosts as u64);
        seg.set(table::REGISTRY_LEN, reg_len as u64);
        seg.set(table::STARTED_MS, started_ms);
        seg.set(table::GENERATION, id);
        for (e, env) in cfg.environments.iter().enumerate() {
            seg.set(table::env_word(e, table::env::AVAILABILITY), 100);
            let max = env.fastcgi.as_ref().map_or(0, |f| f.max_backends);
            seg.set(table::env_word(e, table::env::MAX_BACKENDS), u64::from(max));
        }
        // The per-address hash key: an attacker who cannot guess it cannot aim a
        // client's bucket.
        let key = random_seed().map_err(SupervisorError::Random)?;
        let base = table::per_ip_base(envs, vhosts, reg_len);
        for w in 0..table::per_ip::KEY_WORDS {
            let mut b = [0u8; 8];
            b.copy_from_slice(&key.0[w * 8..w * 8 + 8]);
            seg.set(base + w, u64::from_le_bytes(b));
        }
        seg.set(table::MAGIC, slot::MAGIC_VALUE);
        let ticket_seeds = (0..envs)
            .map(|e| {
                let tls = cfg.vhosts.iter().any(|v| v.environment == e && v.tls.is_some());
                tls.then(random_seed).transpose()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(SupervisorError::Random)?;
        let proxy_key = (!cfg.server.proxy_protocol.is_empty())
            .then(random_seed)
            .transpose()
            .map_err(SupervisorError::Random)?;
        Ok(Generation {
            id,
            cfg: cfg.clone(),
            keepers: None,
            log_pipes,
            table_fd: rw,
            table: seg,
            pools: vec![PoolState { spawn_rate: 1 }; envs],
            registry: vec![None; reg_len],
            retiring: false,
            retire_phase: 0,
            retire_started: None,
            logs,
            fastcgi,
            ticket_seeds,
            proxy_key,
            views,
            privileged,
        })
    }

    /// Environment `env`'s log pipe (the write end its children get on fds 1 and 2),
    /// opened on first use.
    pub fn log_pipe(&self, env: usize) -> Result<BorrowedFd<'_>, crate::tenant_log::TenantLogError> {
        let cell = &self.log_pipes[env];
        if cell.get().is_none() {
            let _ = cell.set(crate::tenant_log::open(&self.cfg.environments[env].name)?);
        }
        cell.get()
            .map(|fd| fd.as_fd())
            .ok_or_else(|| crate::tenant_log::TenantLogError {
                env: self.cfg.environments[env].name.clone(),
                source: std::io::Error::other("log pipe not kept"),
            })
    }

    /// The generation's fd keepers.
    pub fn keepers(&self) -> Result<&crate::keeper::Keepers, SupervisorError> {
        self.keepers
            .as_ref()
            .ok_or(SupervisorError::Runtime(std::io::Error::other(
                "generation without fd keepers",
            )))
    }

    /// Environment `env`'s private view, if it has one built.
    pub fn view(&self, env: usize) -> Option<&crate::namespace::View> {
        self.views.get(env)?.as_deref()
    }

    /// Whether environment `env`'s children run in a private view (built or not yet).
    pub fn viewed(&self, env: usize) -> bool {
        self.privileged && self.cfg.environments.get(env).is_some_and(|e| e.private_view)
    }

    /// Environment `env`'s private view, built now if it has none yet (its first
    /// child is about to start); `None` for an environment without one.
    pub fn ensure_view(&mut self, env: usize) -> Result<Option<&crate::namespace::View>, SupervisorError> {
        if !self.viewed(env) {
            return Ok(None);
        }
        if self.views.get(env).is_some_and(Option::is_none) {
            let v = crate::namespace::build(&self.cfg, env, self.id)?;
            self.views[env] = Some(v);
        }
        Ok(self.view(env))
    }

    /// Takes a registry entry for `pid`; `None` when the registry is full.
    pub fn register(&mut self, pid: u32) -> Option<usize> {
        let i = self.registry.iter().position(Option::is_none)?;
        self.registry[i] = Some(pid);
        let (envs, vhosts) = (self.cfg.environments.len(), self.cfg.vhosts.len());
        self.table.set(
            table::registry_word(envs, vhosts, i, table::registry::PID),
            pid as u64,
        );
        self.table
            .set(table::registry_word(envs, vhosts, i, table::registry::LIVE), 1);
        Some(i)
    }

    /// A child is gone: move its counters into the retired totals and clear its
    /// registry entry, under the seqlock, so readers never count it twice or lose it.
    pub fn retire(&mut self, index: usize, env: Option<usize>, slot_seg: Option<&Segment>) {
        let (envs, vhosts) = (self.cfg.environments.len(), self.cfg.vhosts.len());
        let t = &self.table;
        t.seq_write_begin(table::SEQ);
        if let (Some(env), Some(s)) = (env, slot_seg) {
            let w = |i| table::env_word(env, i);
            // Counters are tenant-written: take them, but bound each one, and add
            // saturating (a slot retired again and again cannot wrap a total).
            let get = |x| s.get(x).min(TENANT_COUNTER_MAX);
            t.add_saturating(w(table::env::RETIRED_TAKEN), get(slot::TAKEN));
            t.add_saturating(w(table::env::RETIRED_REQUESTS), get(slot::REQUESTS));
            t.add_saturating(w(table::env::RETIRED_BYTES), get(slot::BYTES));
            t.add_saturating(w(table::env::RETIRED_HANDBACKS), get(slot::HANDBACKS));
            t.add_saturating(w(table::env::RETIRED_DURATION_US), get(slot::DURATION_US));
            t.add_saturating(w(table::env::RETIRED_FCGI_REQUESTS), get(slot::FCGI_REQUESTS));
            t.add_saturating(
                w(table::env::RETIRED_FCGI_BAD_GATEWAY),
                get(slot::FCGI_BAD_GATEWAY),
            );
            t.add_saturating(w(table::env::RETIRED_FCGI_TIMEOUTS), get(slot::FCGI_TIMEOUTS));
            for (total, word) in table::TLS_RETIRED {
                t.add_saturating(w(total), get(word));
            }
            let sites = (s.get(slot::SITES) as usize).min(vhosts);
            for i in 0..sites {
                let vhost = s.get(slot::site_word(i, slot::site::VHOST)) as usize;
                if vhost >= vhosts || self.cfg.vhosts[vhost].environment != env {
                    continue;
                }
                for word in slot::site::CLASS..slot::site::WORDS {
                    t.add_saturating(
                        table::vhost_word(envs, vhost, word),
                        get(slot::site_word(i, word)),
                    );
                }
            }
        }
        if let Some(entry) = self.registry.get_mut(index) {
            *entry = None;
            t.set(
                table::registry_word(envs, vhosts, index, table::registry::LIVE),
                0,
            );
        }
        t.seq_write_end(table::SEQ);
    }
}

/// 32 bytes from the kernel's random source (`getrandom(2)`, blocking only before the
/// pool is first initialised at boot).
fn random_seed() -> std::io::Result<common::control::TicketSeed> {
    let mut seed = [0u8; 32];
    let mut filled = 0;
    while filled < seed.len() {
        // SAFETY: the pointer and length describe the unfilled rest of `seed`.
        let n = unsafe { libc::getrandom(seed[filled..].as_mut_ptr().cast(), seed.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(common::control::TicketSeed(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation() -> Generation {
        let text = r#"
[server]
user = 2000
group = 2000
listen = ["127.0.0.1:0"]

[environments.alice]
user = 2001
group = 2001

[[vhosts]]
server_name = "alice.example"
environment = "alice"
document_root = "/tmp"
"#;
        let cfg = conf::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        Generation::new(0, Arc::new(cfg), 0, AccessLogs::default(), false, None).unwrap()
    }

    /// A slot whose every word is `u64::MAX`, retired twice: each counter is bounded,
    /// the totals saturate (no wrap, no debug panic), and the seqlock ends even.
    #[test]
    fn retiring_a_scribbled_slot_twice_keeps_totals_finite() {
        // A generation's log pipes register with the reactor.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = rt.enter();
        let mut g = generation();
        let (rw, _ro) = scoreboard::create("t", slot::words(1)).unwrap();
        let s = Segment::map(&rw, true).unwrap();
        for i in 0..s.words() {
            s.set(i, u64::MAX);
        }
        s.set(slot::SITES, 1);
        s.set(slot::site_word(0, slot::site::VHOST), 0);
        for _ in 0..2 {
            let i = g.register(1).unwrap();
            g.retire(i, Some(0), Some(&s));
        }
        let t = &g.table;
        let req = t.get(table::env_word(0, table::env::RETIRED_REQUESTS));
        assert_eq!(req, 2 * TENANT_COUNTER_MAX);
        for w in [
            table::env::RETIRED_FCGI_REQUESTS,
            table::env::RETIRED_FCGI_BAD_GATEWAY,
            table::env::RETIRED_FCGI_TIMEOUTS,
            table::env::RETIRED_TLS_HANDSHAKES,
            table::env::RETIRED_TLS_MISDIRECTED,
        ] {
            assert_eq!(
                t.get(table::env_word(0, w)),
                2 * TENANT_COUNTER_MAX,
                "env word {w}"
            );
        }
        for w in slot::site::CLASS..slot::site::WORDS {
            assert_eq!(
                t.get(table::vhost_word(1, 0, w)),
                2 * TENANT_COUNTER_MAX,
                "vhost word {w}"
            );
        }
        assert_eq!(t.get(table::SEQ) % 2, 0);
        // Totals near the top saturate instead of wrapping.
        t.set(table::env_word(0, table::env::RETIRED_BYTES), u64::MAX - 1);
        t.set(table::vhost_word(1, 0, slot::site::BYTES), u64::MAX - 1);
        let i = g.register(1).unwrap();
        g.retire(i, Some(0), Some(&s));
        assert_eq!(
            g.table.get(table::env_word(0, table::env::RETIRED_BYTES)),
            u64::MAX
        );
        assert_eq!(g.table.get(table::vhost_word(1, 0, slot::site::BYTES)), u64::MAX);
    }
}
