//! How many open files each role may need under a configuration, against the
//! open-files limit (`RLIMIT_NOFILE`) it will run under, for `bulkhead check`. The
//! supervisor raises its soft limit to the hard one at start (`lib.rs`) and every
//! child inherits that, so the hard limit is what must be large enough: under
//! systemd, the unit's `LimitNOFILE=`.
//!
//! The figures are upper estimates from the configuration, not measurements. No
//! process holds more than one fd per environment at start (issue 15 item 6):
//! - an fd keeper (two per generation, `keeper.rs`): one hand-off socket end per
//!   environment;
//! - a multiplexer: every listener and one end per environment; then a socket per
//!   connection it may hold (`max_clients`);
//! - the supervisor: no end at all; at start one batch of pairs on their way to the
//!   keepers; per child (at start the first ones; at most `server_limit`
//!   multiplexers and processors, plus every environment's `max_backends`) its
//!   control channel, the copy its reader holds and its slot; every access log and listener. Once an environment has run,
//!   its log pipe (two fds, for the generation's life) and, with a private view, its
//!   holder's channel and three namespace fds: up to six per environment that ran;
//! - a processor: two per connection (the socket and the file, pipe or FastCGI
//!   connection it answers from, `max_connections_per_processor`), its environment's
//!   access logs and up to `max_backends` idle kept FastCGI connections.
//!
//! Each adds [`BASE`] for what every process holds (stdio, the runtime, the
//! scoreboard, the error log, libraries). A reload runs two generations side by side,
//! each with its own keepers and multiplexers: no process holds both.

use conf::Config;

/// Fds every process holds whatever the configuration.
const BASE: u64 = 64;

/// The estimated need of each role, in fds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdNeed {
    /// The supervisor at start and while no environment has run.
    pub supervisor_idle: u64,
    /// The supervisor once every environment has run (log pipes, views).
    pub supervisor: u64,
    /// An fd keeper.
    pub keeper: u64,
    /// A multiplexer at start (listeners and ends).
    pub multiplexer_idle: u64,
    /// A multiplexer holding `max_clients` connections.
    pub multiplexer: u64,
    pub processor: u64,
}

impl FdNeed {
    /// What any process needs to start: the hard limit must allow it.
    pub fn start(&self) -> u64 {
        self.supervisor_idle.max(self.keeper).max(self.multiplexer_idle)
    }

    /// The largest of all: what the limit should allow under full load.
    pub fn max(&self) -> u64 {
        self.supervisor
            .max(self.keeper)
            .max(self.multiplexer)
            .max(self.processor)
    }
}

/// The estimate for `cfg` (see the module's documentation), in one pass over the
/// environments and one over the vhosts.
pub fn need(cfg: &Config) -> FdNeed {
    let envs = cfg.environments.len() as u64;
    let listeners = (cfg.server.listen.len() + cfg.server.listen_tls.len()) as u64
        + u64::from(cfg.status.metrics_listen.is_some());
    let mut logs_of = vec![0u64; cfg.environments.len()];
    for v in cfg.vhosts.iter().filter(|v| v.access_log.is_some()) {
        if let Some(n) = logs_of.get_mut(v.environment) {
            *n += 1;
        }
    }
    let logs: u64 = logs_of.iter().sum();
    let backends: u64 = cfg
        .environments
        .iter()
        .filter_map(|e| e.fastcgi.as_ref())
        .map(|f| u64::from(f.max_backends))
        .sum();
    let viewed = cfg.environments.iter().filter(|e| e.private_view).count() as u64;
    let children = u64::from(cfg.server.server_limit) + backends;
    // The children a start makes: multiplexers, spares, `start_processors`.
    let first = u64::from(cfg.server.min_multiplexers.max(1))
        + crate::state::SPARES as u64
        + cfg
            .environments
            .iter()
            .map(|e| u64::from(e.start_processors))
            .sum::<u64>();
    // Keepers' channels, one batch of pairs (both ends) on its way to them.
    let fixed = BASE + listeners + logs + 2 + 2 * crate::keeper::PAIR_BATCH as u64;
    // Environments started at once have their log pipe and view already.
    let running: u64 = cfg
        .environments
        .iter()
        .filter(|e| e.start_processors > 0)
        .map(|e| 2 + 4 * u64::from(e.private_view))
        .sum();
    let supervisor_idle = fixed + 3 * first.min(children) + running;
    let supervisor = fixed + 3 * children + 2 * envs + 4 * viewed;
    let keeper = BASE + envs;
    let multiplexer_idle = BASE + listeners + envs;
    let multiplexer = multiplexer_idle + u64::from(cfg.server.max_clients);
    let processor = cfg
        .environments
        .iter()
        .zip(&logs_of)
        .map(|(e, own_logs)| {
            // Idle kept connections to its FastCGI backends, beside the one a request holds.
            let kept = e.fastcgi.as_ref().map_or(0, |f| u64::from(f.max_backends));
            BASE + 2 * u64::from(e.max_connections_per_processor) + own_logs + kept
        })
        .max()
        .unwrap_or(BASE);
    FdNeed {
        supervisor_idle,
        supervisor,
        keeper,
        multiplexer_idle,
        multiplexer,
        processor,
    }
}

/// `bulkhead check`'s lines about the limit: what each process needs, then an
/// `error: ` line when the hard limit is below what the server needs to start (it
/// would fail with EMFILE), or a `warning: ` line when it is below the need under full
/// load, saying what to raise.
pub fn describe(cfg: &Config, soft: u64, hard: u64) -> Vec<String> {
    let n = need(cfg);
    let mut lines = vec![format!(
        "open files (fds) per process for {} environments: supervisor {} at start, up to {} once \
         every environment has run; fd keeper {} (2 per generation); multiplexer {} at start, up \
         to {} with max_clients connections; processor up to {}; limit (RLIMIT_NOFILE) soft {soft}, \
         hard {hard} (the soft limit is raised to the hard one at start)",
        cfg.environments.len(),
        n.supervisor_idle,
        n.supervisor,
        n.keeper,
        n.multiplexer_idle,
        n.multiplexer,
        n.processor,
    )];
    let (want, level) = if hard < n.start() {
        (n.start(), "error")
    } else if hard < n.max() {
        (n.max(), "warning")
    } else {
        return lines;
    };
    // A round figure above the need, as an admin would write it.
    let suggest = want.next_power_of_two().max(1024);
    lines.push(format!(
        "{level}: {}: open files limit (RLIMIT_NOFILE) soft {soft}, hard {hard}, is below \
         the {want} this configuration {} ({} environments, up to {} children); raise \
         LimitNOFILE= in the systemd unit (e.g. LimitNOFILE={suggest}) or the hard limit \
         (ulimit -Hn {suggest}) where bulkhead is started",
        cfg.path.display(),
        if level == "error" {
            "needs to start (it would fail with EMFILE)"
        } else {
            "may need under full load"
        },
        cfg.environments.len(),
        cfg.server.server_limit,
    ));
    lines
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
                "[environments.e{i}]\nuser = {u}\ngroup = {u}\nmin_processors = 0\n[[vhosts]]\nserver_name = \"e{i}.test\"\n\
                 environment = \"e{i}\"\ndocument_root = \"/srv\"\n",
                u = 3000 + i
            ));
        }
        conf::parse_str(&text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn a_processor_counts_its_idle_kept_fastcgi_connections() {
        let plain = cfg(1);
        let mut with = plain.clone();
        let text = "[server]\nuser = 2000\ngroup = 2000\nlisten = [\"127.0.0.1:8080\"]\n\
                    [environments.e0]\nuser = 3000\ngroup = 3000\n\
                    [environments.e0.fastcgi]\ncommand = [\"/usr/bin/php-cgi\"]\nextensions = [\".php\"]\nmax_backends = 6\n\
                    [[vhosts]]\nserver_name = \"e0.test\"\nenvironment = \"e0\"\ndocument_root = \"/srv\"\n";
        let fastcgi = conf::parse_str(text, std::path::Path::new("t.toml")).expect("config");
        with.environments[0].fastcgi = fastcgi.environments[0].fastcgi.clone();
        assert_eq!(need(&with).processor - need(&plain).processor, 6);
    }

    #[test]
    fn more_environments_need_more_but_one_fd_each_to_start() {
        let (a, b) = (need(&cfg(1)), need(&cfg(500)));
        assert!(b.supervisor > a.supervisor + 1000, "{a:?} {b:?}");
        assert_eq!(b.multiplexer_idle - a.multiplexer_idle, 499, "{a:?} {b:?}");
        assert_eq!(b.keeper - a.keeper, 499, "{a:?} {b:?}");
        // The supervisor holds no hand-off end: its start need does not grow.
        assert_eq!(b.supervisor_idle, a.supervisor_idle, "{a:?} {b:?}");
    }

    #[test]
    fn errors_below_the_start_need_and_warns_below_the_full_one() {
        let c = cfg(500);
        let n = need(&c);
        let only =
            |lines: Vec<String>, level: &str| lines.into_iter().filter(|l| l.starts_with(level)).count();
        assert_eq!(describe(&c, n.max(), n.max()).len(), 1, "the figures only");
        assert_eq!(only(describe(&c, 256, n.max() - 1), "warning: "), 1);
        assert_eq!(only(describe(&c, 256, n.max() - 1), "error: "), 0);
        let e = describe(&c, 256, n.start() - 1);
        assert_eq!(only(e.clone(), "error: "), 1, "{e:?}");
        let e = e.last().unwrap();
        assert!(
            e.contains("LimitNOFILE=") && e.contains("500 environments"),
            "{e}"
        );
    }
}
