//! The validated configuration: what the rest of bulkhead reads.
//!
//! These types are produced by [`crate::load`] / [`crate::parse_str`] only after every
//! check has passed; nothing downstream re-validates them. They are not wire types:
//! the supervisor copies the slice each child needs into `common::control` messages.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Index of an environment in [`Config::environments`].
pub type EnvId = usize;
/// Index of a vhost in [`Config::vhosts`]; `0` is the default vhost of every listener.
pub type VhostId = usize;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages and reloads).
    pub path: PathBuf,
    pub server: Server,
    /// In file order.
    pub environments: Vec<Environment>,
    /// In file order; the first is the default for a missing or unknown Host.
    pub vhosts: Vec<Vhost>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Multiplexers run as this uid/gid (resolved at load time).
    pub uid: u32,
    pub gid: u32,
    /// As written, for messages.
    pub user_name: String,
    pub group_name: String,
    pub listen: Vec<SocketAddr>,
    pub min_multiplexers: u32,
    pub request_head_timeout: Duration,
    pub limit_request_head: usize,
    pub keep_alive_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests before killing what is left.
    pub shutdown_timeout: Duration,
    /// Written by `serve`, read by `reload`/`stop`.
    pub pid_file: Option<PathBuf>,
}

/// `[environments.NAME]`: Peruser's `<Processor NAME>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub user_name: String,
    pub group_name: String,
    pub chroot: Option<PathBuf>,
    pub min_processors: u32,
    pub max_processors: u32,
    pub max_connections_per_processor: u32,
}

/// `[[vhosts]]`: Peruser's `<VirtualHost>` with its `ServerEnvironment`.
#[derive(Debug, Clone, PartialEq)]
pub struct Vhost {
    /// Lower-cased.
    pub server_name: String,
    /// Lower-cased; entries may start with `*.`.
    pub server_alias: Vec<String>,
    pub environment: EnvId,
    /// A host path (inside the environment's chroot when it has one).
    pub document_root: PathBuf,
}

impl Environment {
    /// The document root as the environment's processes see it: the host path with the
    /// chroot prefix removed (validation guarantees the prefix is there).
    pub fn path_in_jail(&self, host_path: &std::path::Path) -> PathBuf {
        match &self.chroot {
            Some(root) => match host_path.strip_prefix(root) {
                Ok(rest) => PathBuf::from("/").join(rest),
                Err(_) => host_path.to_path_buf(),
            },
            None => host_path.to_path_buf(),
        }
    }
}
