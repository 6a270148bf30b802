//! What each child is told: the slice of the configuration and the fds for one
//! multiplexer or one processor of one environment. A processor's slice names only
//! its own environment's vhosts and carries only its own environment's socket, its own
//! slot and its own vhosts' access logs.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use common::control::{
    AccessLogFormat, Bootstrap, EnvBoot, MultiplexerBoot, ProcessorBoot, RoleBoot, SiteBoot, VhostBoot,
};
use common::privdrop::Credentials;
use conf::{EnvId, LogFormat};

use crate::generation::Generation;
use crate::logs::AccessLogs;

/// How long a multiplexer waits for room in a pool's queue before answering 503.
pub const HANDOFF_TIMEOUT_MS: u64 = 5000;

/// Listeners shared by every generation.
pub struct Listeners {
    pub http: Vec<(SocketAddr, OwnedFd)>,
    pub metrics: Option<(SocketAddr, OwnedFd)>,
}

/// `[status] allow_users`; unprivileged, every process is the user running bulkhead
/// (isolation is off), so that user may read its own status page too.
fn allow_users(cfg: &conf::Config, privileged: bool) -> Vec<u32> {
    let mut users = cfg.status.allow_users.clone();
    if !privileged {
        users.push(nix::unistd::geteuid().as_raw());
    }
    users
}

/// Bootstrap and fds for a multiplexer of generation `g`, whose own slot is `slot_fd`.
pub fn multiplexer(
    g: &Generation,
    listeners: &Listeners,
    slot_fd: &OwnedFd,
    privileged: bool,
) -> (Bootstrap, Vec<RawFd>) {
    let cfg = &g.cfg;
    let mut hosts = Vec::new();
    for (i, v) in cfg.vhosts.iter().enumerate() {
        hosts.push((v.server_name.clone(), i as u32));
        for a in &v.server_alias {
            hosts.push((a.clone(), i as u32));
        }
    }
    let boot = MultiplexerBoot {
        listeners: listeners.http.iter().map(|(a, _)| *a).collect(),
        metrics_listen: listeners.metrics.as_ref().map(|(a, _)| *a),
        environments: cfg
            .environments
            .iter()
            .map(|e| EnvBoot {
                name: e.name.clone(),
                max_processors: e.max_processors,
                capacity: e.max_connections_per_processor,
            })
            .collect(),
        vhosts: cfg
            .vhosts
            .iter()
            .map(|v| VhostBoot {
                server_name: v.server_name.clone(),
                env: v.environment as u32,
                max_clients: v.max_clients_vhost,
            })
            .collect(),
        hosts,
        limit_request_head: cfg.server.limit_request_head,
        request_head_timeout_ms: cfg.server.request_head_timeout.as_millis() as u64,
        handoff_timeout_ms: HANDOFF_TIMEOUT_MS,
        processor_wait_timeout_ms: cfg.server.processor_wait_timeout.as_millis() as u64,
        processor_wait_steps: cfg.server.processor_wait_steps,
        max_clients: cfg.server.max_clients,
        server_limit: cfg.server.server_limit,
        max_multiplexers: cfg.server.max_multiplexers,
        status_path: cfg.status.path.clone(),
        status_allow: cfg.status.allow.iter().map(|c| (c.addr, c.prefix)).collect(),
        status_allow_users: allow_users(cfg, privileged),
        generation: g.id,
    };
    let mut fds: Vec<RawFd> = listeners.http.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    if let Some((_, fd)) = &listeners.metrics {
        fds.push(fd.as_raw_fd());
    }
    fds.extend(g.env_sockets.iter().map(|(m, _)| m.as_raw_fd()));
    fds.push(g.table_fd.as_raw_fd());
    fds.push(slot_fd.as_raw_fd());
    let credentials = privileged.then_some(Credentials {
        uid: cfg.server.uid,
        gid: cfg.server.gid,
        chroot: None,
    });
    (
        Bootstrap {
            credentials,
            role: RoleBoot::Multiplexer(boot),
        },
        fds,
    )
}

/// Bootstrap and fds for a processor of environment `env` in generation `g`.
pub fn processor(
    g: &Generation,
    env: EnvId,
    slot_fd: &OwnedFd,
    logs: &AccessLogs,
    privileged: bool,
) -> (Bootstrap, Vec<RawFd>) {
    let cfg = &g.cfg;
    let e = &cfg.environments[env];
    let mut log_fds = Vec::new();
    let sites = cfg
        .vhosts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.environment == env)
        .map(|(i, v)| {
            let access_log = logs.files.get(&i).map(|f| {
                log_fds.push(f.as_raw_fd());
                match v.access_log_format {
                    LogFormat::Combined => AccessLogFormat::Combined,
                    LogFormat::Json => AccessLogFormat::Json,
                }
            });
            SiteBoot {
                vhost_id: i as u32,
                server_name: v.server_name.clone(),
                aliases: v.server_alias.clone(),
                document_root: if privileged {
                    e.path_in_jail(&v.document_root)
                } else {
                    v.document_root.clone()
                },
                access_log,
            }
        })
        .collect();
    let boot = ProcessorBoot {
        environment: e.name.clone(),
        env_id: env as u32,
        sites,
        limit_request_head: cfg.server.limit_request_head,
        request_head_timeout_ms: cfg.server.request_head_timeout.as_millis() as u64,
        keep_alive_timeout_ms: cfg.server.keep_alive_timeout.as_millis() as u64,
        max_connections: e.max_connections_per_processor,
        max_requests_per_child: e.max_requests_per_child,
        generation: g.id,
    };
    let credentials = privileged.then_some(Credentials {
        uid: e.uid,
        gid: e.gid,
        chroot: e.chroot.clone(),
    });
    let mut fds = vec![g.env_sockets[env].1.as_raw_fd(), slot_fd.as_raw_fd()];
    fds.extend(log_fds);
    (
        Bootstrap {
            credentials,
            role: RoleBoot::Processor(boot),
        },
        fds,
    )
}
