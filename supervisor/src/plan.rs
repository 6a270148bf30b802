//! What each child is told: the slice of the configuration and the fds for one
//! multiplexer or one processor of one environment. A processor's slice names only
//! its own environment's vhosts and carries only its own environment's socket.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use common::control::{Bootstrap, MultiplexerBoot, ProcessorBoot, RoleBoot, SiteBoot};
use common::privdrop::Credentials;
use conf::{Config, EnvId};

/// How long a multiplexer waits for a full pool's queue before answering 503.
pub const HANDOFF_TIMEOUT_MS: u64 = 5000;

/// The supervisor's fixed resources: listeners and one hand-off socketpair per environment.
pub struct Resources {
    pub listeners: Vec<(SocketAddr, OwnedFd)>,
    /// Per environment: (multiplexer end, processor end).
    pub env_sockets: Vec<(OwnedFd, OwnedFd)>,
}

/// Bootstrap and fds for a multiplexer.
pub fn multiplexer(cfg: &Config, res: &Resources, privileged: bool) -> (Bootstrap, Vec<RawFd>) {
    let mut hosts = Vec::new();
    for (i, v) in cfg.vhosts.iter().enumerate() {
        hosts.push((v.server_name.clone(), i as u32));
        for a in &v.server_alias {
            hosts.push((a.clone(), i as u32));
        }
    }
    let boot = MultiplexerBoot {
        listeners: res.listeners.iter().map(|(a, _)| *a).collect(),
        environments: cfg.environments.iter().map(|e| e.name.clone()).collect(),
        hosts,
        vhost_env: cfg.vhosts.iter().map(|v| v.environment as u32).collect(),
        limit_request_head: cfg.server.limit_request_head,
        request_head_timeout_ms: cfg.server.request_head_timeout.as_millis() as u64,
        handoff_timeout_ms: HANDOFF_TIMEOUT_MS,
    };
    let mut fds: Vec<RawFd> = res.listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    fds.extend(res.env_sockets.iter().map(|(m, _)| m.as_raw_fd()));
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

/// Bootstrap and fd for a processor of environment `env`.
pub fn processor(cfg: &Config, res: &Resources, env: EnvId, privileged: bool) -> (Bootstrap, Vec<RawFd>) {
    let e = &cfg.environments[env];
    let sites = cfg
        .vhosts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.environment == env)
        .map(|(i, v)| SiteBoot {
            vhost_id: i as u32,
            server_name: v.server_name.clone(),
            aliases: v.server_alias.clone(),
            document_root: if privileged {
                e.path_in_jail(&v.document_root)
            } else {
                v.document_root.clone()
            },
        })
        .collect();
    let boot = ProcessorBoot {
        environment: e.name.clone(),
        sites,
        limit_request_head: cfg.server.limit_request_head,
        request_head_timeout_ms: cfg.server.request_head_timeout.as_millis() as u64,
        keep_alive_timeout_ms: cfg.server.keep_alive_timeout.as_millis() as u64,
        max_connections: e.max_connections_per_processor,
    };
    let credentials = privileged.then_some(Credentials {
        uid: e.uid,
        gid: e.gid,
        chroot: e.chroot.clone(),
    });
    (
        Bootstrap {
            credentials,
            role: RoleBoot::Processor(boot),
        },
        vec![res.env_sockets[env].1.as_raw_fd()],
    )
}
