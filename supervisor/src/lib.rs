//! The supervisor: runs as root, reads the configuration, binds the listeners, starts
//! every multiplexer and processor by fork+exec, replaces those that die, and stops
//! them on SIGTERM/SIGINT. It never reads a byte from a client.

mod activation;
mod bootstrap;
mod cgroup;
mod errlog;
mod fastcgi;
mod fdlimit;
mod generation;
mod keeper;
mod listen;
mod logs;
mod maintain;
mod namespace;
mod notify;
mod reap;
mod reload;
mod reuseport;
mod run;
mod safe_open;
mod spawn;
mod start;
mod state;
mod stop;
mod tenant_log;
mod watch;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use cgroup::{describe as describe_cgroups, CgroupError};
pub use fdlimit::{current as fd_limit, describe as describe_fd_limit};
pub use namespace::plan::describe as describe_views;
pub use state::Supervisor;

/// Errors that stop the supervisor.
#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Config(#[from] conf::ConfigErrors),
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    #[error(transparent)]
    Activation(#[from] activation::ActivationError),
    #[error(transparent)]
    Spawn(#[from] spawn::SpawnError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("pid file {path}: {source}")]
    PidFile { path: PathBuf, source: std::io::Error },
    #[error("{role} keeps failing at start ({failures} times in a row); giving up")]
    StartFailures { role: String, failures: u32 },
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Scoreboard(#[from] common::scoreboard::ScoreboardError),
    #[error(transparent)]
    Log(#[from] logs::LogError),
    #[error(transparent)]
    TenantLog(#[from] tenant_log::TenantLogError),
    #[error(transparent)]
    Fastcgi(#[from] fastcgi::socket::SocketError),
    #[error(transparent)]
    Fpm(#[from] fastcgi::fpm::FpmError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("random TLS ticket seed: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    Namespace(#[from] namespace::NamespaceError),
    #[error(transparent)]
    Keeper(#[from] keeper::KeeperError),
}

/// Runs the server in the foreground until it is stopped. Returns the exit code.
pub fn run(config_path: &Path) -> Result<i32, SupervisorError> {
    let cfg = conf::load(config_path)?;
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    raise_fd_limit();
    if let Some((soft, hard)) = fdlimit::current() {
        for line in fdlimit::describe(&cfg, soft, hard).iter().skip(1) {
            tracing::warn!("{line}");
        }
    }
    // Before anything is spawned: the passed sockets become close-on-exec here.
    let mut addrs = cfg.server.listen.clone();
    addrs.extend(&cfg.server.listen_tls);
    addrs.extend(cfg.status.metrics_listen);
    activation::take(&addrs)?;
    let exe = std::env::current_exe().map_err(SupervisorError::Runtime)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SupervisorError::Runtime)?;
    rt.block_on(async move {
        let sup = Supervisor::start(cfg, exe)?;
        sup.run().await
    })
}

/// Raises the soft fd limit to the hard one: each multiplexer and fd keeper holds one
/// fd per environment (a thousand tenants need more than the usual 1024). Children
/// inherit the limit; `fdlimit.rs` says what a configuration needs.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, "raising the fd limit: {e}");
            }
        }
    }
}
