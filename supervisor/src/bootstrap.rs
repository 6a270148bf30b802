//! Each child's bootstrap: the slice of the configuration and the typed bundle of fds
//! (`common::bootfds`) for one multiplexer or one processor of one environment. A
//! processor's slice names only its own environment's vhosts and carries only its own
//! environment's log pipe and socket, its own slot and its own vhosts' access logs.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use common::bootfds::{MultiplexerFds, ProcessorFds};
use common::control::{
    AccessLogFormat, Bootstrap, CgiBoot, EnvBoot, FastcgiBoot, MultiplexerBoot, ProcessorBoot, ProxyBoot,
    RoleBoot, SiteBoot, SiteTls, VhostBoot, FOREIGN_HOST,
};
use common::privdrop::Credentials;
use common::vhost::names_overlap;
use conf::{Config, EnvId, LogFormat};

use crate::generation::Generation;
use crate::logs::AccessLogs;

/// How long a multiplexer waits for room in a pool's queue before answering 503.
pub const HANDOFF_TIMEOUT_MS: u64 = 5000;

/// Listeners shared by every generation.
pub struct Listeners {
    pub http: Vec<(SocketAddr, OwnedFd)>,
    /// `listen_tls`: routed by the ClientHello's server name.
    pub tls: Vec<(SocketAddr, OwnedFd)>,
    pub metrics: Option<(SocketAddr, OwnedFd)>,
    /// Slots 1.. of `http` and `tls`: one socket per multiplexer slot (`reuseport.rs`).
    pub slots: crate::reuseport::SlotSockets,
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

/// Bootstrap and fds for multiplexer `index` of generation `g`, whose own slot is
/// `slot_fd`: for each address, the listening socket of its slot.
pub fn multiplexer(
    g: &Generation,
    listeners: &Listeners,
    index: u32,
    slot_fd: &OwnedFd,
    env_stream: &OwnedFd,
    privileged: bool,
) -> (Bootstrap, Vec<RawFd>) {
    let cfg = &g.cfg;
    let hosts = host_entries(cfg)
        .map(|(name, vhost)| (name.to_owned(), vhost as u32))
        .collect();
    let bundle = MultiplexerFds {
        listeners: listeners
            .http
            .iter()
            .map(|(a, fd)| listeners.slots.pick(*a, fd.as_fd(), index))
            .collect(),
        tls_listeners: listeners
            .tls
            .iter()
            .map(|(a, fd)| listeners.slots.pick(*a, fd.as_fd(), index))
            .collect(),
        metrics_listener: listeners.metrics.as_ref().map(|(_, fd)| fd.as_fd()),
        env_sockets: Vec::new(),
        env_stream: Some(env_stream.as_fd()),
        table: g.table_fd.as_fd(),
        slot: slot_fd.as_fd(),
    };
    let (fds, layout) = bundle.to_wire();
    let boot = MultiplexerBoot {
        fds: layout,
        listeners: listeners.http.iter().map(|(a, _)| *a).collect(),
        tls_listeners: listeners.tls.iter().map(|(a, _)| *a).collect(),
        tls_default: cfg.server.tls_default.map(|v| v as u32),
        tls_strict_sni: cfg.server.tls_strict_sni,
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
                tls: v.tls.is_some(),
            })
            .collect(),
        hosts,
        limit_request_head: cfg.server.limit_request_head,
        request_head_timeout_ms: cfg.server.request_head_timeout.as_millis() as u64,
        head_limits: Some(head_limits(cfg)),
        head_timeout: Some(rate(&cfg.server.request_head_rate)),
        handoff_timeout_ms: HANDOFF_TIMEOUT_MS,
        processor_wait_timeout_ms: cfg.server.processor_wait_timeout.as_millis() as u64,
        processor_wait_steps: cfg.server.processor_wait_steps,
        max_clients: cfg.server.max_clients,
        max_connections_per_ip: cfg.server.max_connections_per_ip,
        max_connections_per_ip_ipv6_prefix: cfg.server.max_connections_per_ip_ipv6_prefix,
        server_limit: cfg.server.server_limit,
        max_multiplexers: cfg.server.max_multiplexers,
        status_path: cfg.status.path.clone(),
        status_allow: cfg.status.allow.iter().map(|c| (c.addr, c.prefix)).collect(),
        status_allow_users: allow_users(cfg, privileged),
        generation: g.id,
        index: Some(index),
        proxy: proxy_boot(g),
    };
    let credentials = privileged.then_some(Credentials {
        uid: cfg.server.uid,
        gid: cfg.server.gid,
        chroot: None,
    });
    (
        Bootstrap {
            credentials,
            role: RoleBoot::Multiplexer(boot),
            sandbox: None,
        },
        fds,
    )
}

/// Which listeners read a PROXY header (by their place in `listen` / `listen_tls`, the
/// order of [`Listeners`]), from whom, and the generation's tag key.
fn proxy_boot(g: &Generation) -> Option<ProxyBoot> {
    let s = &g.cfg.server;
    let key = g.proxy_key.clone()?;
    let flags = |addrs: &[SocketAddr]| addrs.iter().map(|a| s.proxy_protocol.contains(a)).collect();
    Some(ProxyBoot {
        plain: flags(&s.listen),
        tls: flags(&s.listen_tls),
        from: s.proxy_protocol_from.iter().map(|c| (c.addr, c.prefix)).collect(),
        key,
    })
}

/// The host table's entries, (name or `*.`wildcard, vhost index), in the order the
/// multiplexers insert them.
fn host_entries(cfg: &Config) -> impl Iterator<Item = (&str, usize)> {
    cfg.vhosts.iter().enumerate().flat_map(|(i, v)| {
        std::iter::once(v.server_name.as_str())
            .chain(v.server_alias.iter().map(String::as_str))
            .map(move |name| (name, i))
    })
}

/// A processor's cut of the host table: its own entries (as indexes of its sites, in
/// vhost order) and, as [`FOREIGN_HOST`], every other environment's entry that could
/// match one of its hosts. Lookups in it agree with the multiplexers' full table for
/// every host this environment serves (an exact name wins over a wildcard, the first
/// wildcard wins: the entries that can change that answer are exactly the overlapping
/// ones, and their order is kept).
pub fn processor_hosts(cfg: &Config, env: EnvId) -> Vec<(String, u32)> {
    let own: Vec<(&str, usize)> = host_entries(cfg)
        .filter(|(_, v)| cfg.vhosts[*v].environment == env)
        .collect();
    let site_of = |vhost: usize| {
        cfg.vhosts[..vhost]
            .iter()
            .filter(|v| v.environment == env)
            .count() as u32
    };
    host_entries(cfg)
        .filter_map(|(name, vhost)| {
            if cfg.vhosts[vhost].environment == env {
                Some((name.to_owned(), site_of(vhost)))
            } else if own.iter().any(|(o, _)| names_overlap(o, name)) {
                Some((name.to_owned(), FOREIGN_HOST))
            } else {
                None
            }
        })
        .collect()
}

/// Bootstrap and fds for a processor of environment `env` in generation `g`.
pub fn processor(
    g: &Generation,
    env: EnvId,
    log_pipe: BorrowedFd<'_>,
    env_socket: BorrowedFd<'_>,
    slot_fd: &OwnedFd,
    logs: &AccessLogs,
    privileged: bool,
) -> (Bootstrap, Vec<RawFd>) {
    let cfg = &g.cfg;
    let e = &cfg.environments[env];
    let mut access_logs = Vec::new();
    let sites = cfg
        .vhosts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.environment == env)
        .map(|(i, v)| {
            let access_log = logs.files.get(&i).map(|f| {
                access_logs.push(f.as_fd());
                match v.access_log_format {
                    LogFormat::Combined => AccessLogFormat::Combined,
                    LogFormat::Json => AccessLogFormat::Json,
                }
            });
            SiteBoot {
                vhost_id: i as u32,
                server_name: v.server_name.clone(),
                document_root: if privileged {
                    e.path_in_jail(&v.document_root)
                } else {
                    v.document_root.clone()
                },
                access_log,
                deny: v.deny.clone(),
                cgi: CgiBoot {
                    extensions: v.cgi.extensions.clone(),
                    dirs: v.cgi.dirs.clone(),
                    timeout_secs: v.cgi.timeout.as_secs(),
                    body_limit: v.cgi.body_limit,
                },
                index: v.index.clone(),
                fallback: v.fallback.clone(),
                redirect_to_https: v
                    .redirect_to_https
                    .then(|| cfg.server.listen_tls.first().map_or(443, |a| a.port())),
                hsts_max_age: v.hsts_max_age,
                body_timeout: Some(rate(
                    v.request_body_timeout
                        .as_ref()
                        .unwrap_or(&cfg.server.request_body_timeout),
                )),
                keep_alive_max_requests: Some(
                    v.keep_alive_max_requests
                        .unwrap_or(cfg.server.keep_alive_max_requests),
                ),
                tls: v.tls.as_ref().map(|t| {
                    let jailed = |p: &std::path::Path| {
                        if privileged {
                            e.path_in_jail(p)
                        } else {
                            p.to_path_buf()
                        }
                    };
                    SiteTls {
                        certificate: jailed(&t.certificate),
                        key: jailed(&t.key),
                    }
                }),
            }
        })
        .collect();
    let bundle = ProcessorFds {
        log_pipe,
        env_socket,
        slot: slot_fd.as_fd(),
        access_logs,
    };
    let (fds, layout) = bundle.to_wire();
    let boot = ProcessorBoot {
        fds: layout,
        environment: e.name.clone(),
        env_id: env as u32,
        sites,
        hosts: processor_hosts(cfg, env),
        limit_request_head: cfg.server.limit_request_head,
        request_head_timeout_ms: cfg.server.request_head_timeout.as_millis() as u64,
        head_limits: Some(head_limits(cfg)),
        head_timeout: Some(rate(&cfg.server.request_head_rate)),
        keep_alive_timeout_ms: cfg.server.keep_alive_timeout.as_millis() as u64,
        max_connections: e.max_connections_per_processor,
        max_requests_per_child: e.max_requests_per_child,
        generation: g.id,
        fastcgi: e.fastcgi.as_ref().map(|f| FastcgiBoot {
            socket: fastcgi_socket(cfg, env, g.id).1,
            extensions: f.extensions.clone(),
            timeout_secs: f.timeout.as_secs(),
            program: f.command[0].clone(),
            requests_per_connection: f.requests_per_connection,
            max_backends: f.max_backends,
        }),
        tls_ticket_seed: g.ticket_seeds.get(env).cloned().flatten(),
        http2: http2_boot(&cfg.server.http2),
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
            sandbox: g.view(env).map(|v| v.sandbox.clone()),
        },
        fds,
    )
}

/// Name of the root-owned directory, directly inside an environment's chroot, that
/// holds its FastCGI socket (`/.bulkhead` as the environment sees it).
pub(crate) const JAIL_SOCKET_DIR: &str = ".bulkhead";

/// The directory below `[server] runtime_dir` that holds the FastCGI sockets of
/// environments without a chroot.
pub(crate) const RUNTIME_SOCKET_DIR: &str = "fastcgi";

/// Where environment `env`'s FastCGI listening socket of generation `gen` is bound:
/// (the host path the supervisor binds, the path its processors and backends use).
/// With a chroot: `<chroot>/.bulkhead/`, a directory of root's directly inside the
/// root-owned jail; without: `<runtime_dir>/fastcgi/`. The name carries the
/// supervisor's pid, the generation and the environment's index, so two servers
/// sharing a runtime directory and two generations never meet, and its length stays
/// within `sun_path` whatever the environment is called.
pub(crate) fn fastcgi_socket(cfg: &Config, env: usize, gen: u64) -> (PathBuf, PathBuf) {
    let name = format!("{}-{gen}-{env}.sock", std::process::id());
    match &cfg.environments[env].chroot {
        Some(root) => (
            root.join(JAIL_SOCKET_DIR).join(&name),
            PathBuf::from("/").join(JAIL_SOCKET_DIR).join(&name),
        ),
        None => {
            let p = cfg.server.runtime_dir.join(RUNTIME_SOCKET_DIR).join(&name);
            (p.clone(), p)
        }
    }
}

/// `[server] http2*` as a processor gets it; `None` when `http2 = false`.
fn http2_boot(h: &conf::model::Http2) -> Option<common::control::Http2Boot> {
    h.enabled.then_some(common::control::Http2Boot {
        max_concurrent_streams: h.max_concurrent_streams,
        max_header_list_size: h.max_header_list_size,
        stream_window: h.stream_window,
        connection_window: h.connection_window,
        max_pending_accept_reset_streams: h.max_pending_accept_reset_streams,
        max_local_error_reset_streams: h.max_local_error_reset_streams,
    })
}

/// The request-head limits the children enforce (both roles: one head, one answer).
fn head_limits(cfg: &Config) -> common::head::Limits {
    let l = &cfg.server.head_limits;
    common::head::Limits {
        head: cfg.server.limit_request_head,
        line: l.line,
        fields: l.fields,
        field_size: l.field_size,
    }
}

/// A read timeout as it travels.
fn rate(t: &conf::model::ReadTimeout) -> common::http::rate::RateTimeout {
    common::http::rate::RateTimeout {
        initial_ms: t.initial.as_millis() as u64,
        max_ms: t.max.as_millis() as u64,
        min_rate: t.min_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::vhost::HostTable;

    const CONFIG: &str = r#"
[server]
user = 2000
group = 2000
listen = ["127.0.0.1:0"]
[environments.alice]
user = 2001
group = 2001
[environments.bob]
user = 2002
group = 2002
[environments.carol]
user = 2003
group = 2003
[[vhosts]]
server_name = "alice.test"
server_alias = ["*.alice.test", "*.shared.test"]
environment = "alice"
document_root = "/tmp"
[[vhosts]]
server_name = "shop.alice.test"
server_alias = ["*.x.shared.test"]
environment = "bob"
document_root = "/tmp"
[[vhosts]]
server_name = "carol.test"
server_alias = ["*.test"]
environment = "carol"
document_root = "/tmp"
[[vhosts]]
server_name = "blog.alice.test"
environment = "alice"
document_root = "/tmp"
"#;

    /// For every host, the processor's cut agrees with the multiplexers' full table:
    /// its own site when the full table picks a vhost of its environment, and never one
    /// of its sites when the full table picks another environment's.
    #[test]
    fn processor_cut_agrees_with_the_full_table() {
        let cfg = conf::parse_str(CONFIG, std::path::Path::new("test.toml")).unwrap();
        let mut full = HostTable::new();
        for (name, v) in host_entries(&cfg) {
            full.insert(name, v);
        }
        let hosts = [
            "alice.test",
            "shop.alice.test",
            "SHOP.alice.test.",
            "www.alice.test",
            "blog.alice.test",
            "a.shared.test",
            "y.x.shared.test",
            "carol.test",
            "other.test",
            "x.test",
            "unknown.example",
        ];
        for env in 0..cfg.environments.len() {
            let own: Vec<usize> = (0..cfg.vhosts.len())
                .filter(|v| cfg.vhosts[*v].environment == env)
                .collect();
            let mut cut = HostTable::new();
            for (name, site) in processor_hosts(&cfg, env) {
                cut.insert(&name, site as usize);
            }
            for h in hosts {
                let want = full.lookup(h).filter(|v| cfg.vhosts[*v].environment == env);
                let got = cut
                    .lookup(h)
                    .filter(|s| *s != FOREIGN_HOST as usize)
                    .map(|s| own[s]);
                assert_eq!(got, want, "environment {env}, host {h}");
            }
        }
        // The cut names no host of another tenant that cannot decide one of ours.
        let alice = cfg.environments.iter().position(|e| e.name == "alice").unwrap();
        let names: Vec<String> = processor_hosts(&cfg, alice).into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"shop.alice.test".to_owned()));
        assert!(!names.contains(&"carol.test".to_owned()));
    }
}
