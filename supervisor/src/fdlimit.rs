//! How many open files each role may need under a configuration, against the
//! open-files limit (`RLIMIT_NOFILE`) it will run under, for `bulkhead check`. The
//! supervisor raises its soft limit to the hard one at start and every child inherits
//! that, so the hard limit is what must be large enough: under systemd, the unit's
//! `LimitNOFILE=`.
//!
//! The figures are upper estimates from the configuration, not measurements:
//! - the supervisor: per environment its hand-off socket pair, its log pipe and a
//!   spare; per child (at most `server_limit` multiplexers and processors, plus every
//!   environment's `max_backends`) its control channel and pidfd; every access log;
//!   every listener;
//! - a multiplexer: every listener, a hand-off socket per environment, and a socket
//!   per connection it may hold (`max_clients`);
//! - a processor: two per connection (the socket and the file or pipe it answers
//!   from, `max_connections_per_processor`) and its environment's access logs.
//!
//! Each adds [`BASE`] for what every process holds (stdio, the runtime, the
//! scoreboard, the error log, libraries).

use conf::Config;

/// Fds every process holds whatever the configuration.
const BASE: u64 = 64;

/// The estimated need of each role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdNeed {
    pub supervisor: u64,
    pub multiplexer: u64,
    pub processor: u64,
}

impl FdNeed {
    /// The largest of the three: what the shared limit must allow.
    pub fn max(&self) -> u64 {
        self.supervisor.max(self.multiplexer).max(self.processor)
    }
}

/// The estimate for `cfg` (see the module's documentation).
pub fn need(cfg: &Config) -> FdNeed {
    let envs = cfg.environments.len() as u64;
    let listeners = (cfg.server.listen.len() + cfg.server.listen_tls.len()) as u64
        + u64::from(cfg.status.metrics_listen.is_some());
    let logs = cfg.vhosts.iter().filter(|v| v.access_log.is_some()).count() as u64;
    let backends: u64 = cfg
        .environments
        .iter()
        .filter_map(|e| e.fastcgi.as_ref())
        .map(|f| u64::from(f.max_backends))
        .sum();
    let children = u64::from(cfg.server.server_limit) + backends;
    let supervisor = BASE + 4 * envs + 2 * children + logs + listeners;
    let multiplexer = BASE + listeners + envs + u64::from(cfg.server.max_clients);
    let processor = cfg
        .environments
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let own_logs = cfg
                .vhosts
                .iter()
                .filter(|v| v.environment == i && v.access_log.is_some())
                .count() as u64;
            BASE + 2 * u64::from(e.max_connections_per_processor) + own_logs
        })
        .max()
        .unwrap_or(BASE);
    FdNeed {
        supervisor,
        multiplexer,
        processor,
    }
}

/// `bulkhead check`'s lines about the limit: one warning when the hard limit is below
/// the estimate, saying what to raise; nothing otherwise.
pub fn describe(cfg: &Config, soft: u64, hard: u64) -> Vec<String> {
    let n = need(cfg);
    let want = n.max();
    if hard >= want {
        return Vec::new();
    }
    // A round figure above the need, as an admin would write it.
    let suggest = want.next_power_of_two().max(1024);
    vec![format!(
        "warning: {}: open files limit (RLIMIT_NOFILE) soft {soft}, hard {hard}, is below \
         the {want} this configuration may need ({} environments, up to {} children: \
         supervisor ~{}, a multiplexer ~{}, a processor ~{}); raise LimitNOFILE= in the \
         systemd unit (e.g. LimitNOFILE={suggest}) or the hard limit (ulimit -Hn {suggest}) \
         where bulkhead is started",
        cfg.path.display(),
        cfg.environments.len(),
        cfg.server.server_limit,
        n.supervisor,
        n.multiplexer,
        n.processor,
    )]
}

/// The limit this process runs under, `(soft, hard)`; `None` if it cannot be read.
pub fn current() -> Option<(u64, u64)> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(envs: usize) -> Config {
        let mut text = String::from(
            "[server]\nuser = 2000\ngroup = 2000\nlisten = [\"127.0.0.1:8080\"]\nserver_limit = 4096\n",
        );
        for i in 0..envs {
            text.push_str(&format!(
                "[environments.e{i}]\nuser = {u}\ngroup = {u}\n[[vhosts]]\nserver_name = \"e{i}.test\"\n\
                 environment = \"e{i}\"\ndocument_root = \"/srv\"\n",
                u = 3000 + i
            ));
        }
        conf::parse_str(&text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn more_environments_need_more() {
        let (a, b) = (need(&cfg(1)), need(&cfg(500)));
        assert!(b.supervisor > a.supervisor + 1000, "{a:?} {b:?}");
        assert!(b.multiplexer > a.multiplexer + 400, "{a:?} {b:?}");
    }

    #[test]
    fn warns_only_below_the_need() {
        let c = cfg(500);
        let want = need(&c).max();
        assert!(describe(&c, want, want).is_empty());
        let w = describe(&c, 256, want - 1);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("LimitNOFILE="), "{}", w[0]);
        assert!(
            w[0].contains("hard ") && w[0].contains("500 environments"),
            "{}",
            w[0]
        );
    }
}
