//! Walks the parsed document section by section, checking every key and building the
//! validated [`Config`]. Errors are recorded in the [`Report`] and the walk goes on, so
//! a single run reports everything that is wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::apart;
use crate::cgi;
use crate::cgroup;
use crate::error::{Report, Span};
use crate::fastcgi;
use crate::fsrules;
use crate::http2;
use crate::ids::{self, Kind};
use crate::index;
use crate::limits::{self, Limits, MAX_COUNT, MAX_TIMEOUT_SECS, POOL_KEYS};
use crate::model::{Config, Environment, LogFormat, Server, Vhost};
use crate::proxy;
use crate::request;
use crate::status;
use crate::tls;
use crate::tree::{is_bare_key, Entry, Table};

/// `max_connections_per_ip`'s default. Only connections inside a multiplexer count
/// (a real client's stay there for milliseconds, a browser opens about six), so this
/// hurts no office or carrier NAT while it caps a slowloris from one address.
const DEFAULT_PER_IP: i64 = 256;

const TOP_KEYS: &[&str] = &["server", "environments", "vhosts", "status"];
/// With [`POOL_KEYS`] and [`cgroup::KEYS`], the environments' defaults.
const SERVER_KEYS: &[&str] = &[
    "user",
    "group",
    "listen",
    "server_limit",
    "max_clients",
    "max_connections_per_ip",
    "max_connections_per_ip_ipv6_prefix",
    "min_multiplexers",
    "max_multiplexers",
    "multiplexer_idle_timeout",
    "processor_wait_timeout",
    "request_head_timeout",
    "limit_request_head",
    "keep_alive_timeout",
    "shutdown_timeout",
    "pid_file",
    "error_log",
    "cgi_timeout",
    "limit_request_body",
    "runtime_dir",
    "cgroup_root",
    "private_view",
];
/// With [`POOL_KEYS`] and [`cgroup::KEYS`].
const ENVIRONMENT_KEYS: &[&str] = &["user", "group", "chroot", "fastcgi", "private_view", "bind_ro"];
const VHOST_KEYS: &[&str] = &[
    "server_name",
    "server_alias",
    "environment",
    "document_root",
    "max_clients_vhost",
    "access_log",
    "access_log_format",
    "deny",
    "cgi",
    "cgi_dirs",
    "cgi_timeout",
    "limit_request_body",
    "index",
    "fallback",
];

/// Checks the whole document; `None` when anything was reported.
pub(crate) fn config(root: &Table, r: &mut Report, path: &Path) -> Option<Config> {
    root.check_keys(r, TOP_KEYS);
    let server_table = match root.get("server") {
        Some(entry) => entry.table(r),
        None => {
            r.error(&None, "server", "missing required table [server]");
            None
        }
    };
    let limits = Limits::server(server_table.as_ref(), r);
    let server = server_table.as_ref().and_then(|t| server(t, r, &limits));
    let environments = environments(root, r, &limits);
    let minimums: Vec<(&str, i64)> = environments
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.min_processors?)))
        .collect();
    limits.check_total(r, &minimums);
    let cgi_timeout = server
        .as_ref()
        .map_or(Duration::from_secs(cgi::DEFAULT_TIMEOUT_SECS as u64), |s| {
            s.cgi_timeout
        });
    let body_limit = server
        .as_ref()
        .map_or(cgi::DEFAULT_BODY_LIMIT, |s| s.limit_request_body);
    let mux = server.as_ref().map(|s| (s.uid, s.gid));
    let listen_tls = server.as_ref().is_some_and(|s| !s.listen_tls.is_empty());
    let vhosts = vhosts(
        root,
        r,
        &environments,
        (cgi_timeout, body_limit),
        (mux, listen_tls),
    );
    let mut server = server;
    if let (Some(s), Some(v), Some(t)) = (server.as_mut(), vhosts.as_deref(), server_table.as_ref()) {
        // `None`: reported.
        if let Some(chosen) = tls::default_vhost(t, r, !s.listen_tls.is_empty(), v) {
            s.tls_default = chosen;
        }
    }
    let env_uids: Vec<(&str, u32)> = environments
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.uid?)))
        .collect();
    let status = status::status(root, r, &env_uids);
    let valid_envs: Vec<Option<&Environment>> = environments.iter().map(|e| e.valid.as_ref()).collect();
    apart::check(root, r, server.as_ref(), &valid_envs, vhosts.as_deref());
    if r.has_errors() {
        return None;
    }
    Some(Config {
        path: path.to_path_buf(),
        server: server?,
        environments: environments.into_iter().map(|e| e.valid).collect::<Option<_>>()?,
        vhosts: vhosts?,
        status: status?,
        warnings: Vec::new(),
    })
}

fn server(t: &Table, r: &mut Report, limits: &Limits) -> Option<Server> {
    t.check_keys(
        r,
        &[
            SERVER_KEYS,
            POOL_KEYS,
            cgroup::KEYS,
            tls::SERVER_KEYS,
            http2::SERVER_KEYS,
            request::SERVER_KEYS,
            proxy::KEYS,
        ]
        .concat(),
    );
    let user = t.require(r, "user").and_then(|e| ids::resolve(&e, r, Kind::User));
    let group = t
        .require(r, "group")
        .and_then(|e| ids::resolve(&e, r, Kind::Group));
    let listen = t.require(r, "listen").and_then(|e| addresses(&e, r));
    let listen_tls = match t.get("listen_tls") {
        None => Some(Vec::new()),
        Some(e) => addresses(&e, r).and_then(|addrs| {
            let plain = listen_ok_or_empty(&listen);
            // Port 0 (a free port each) never collides.
            if let Some(a) = addrs.iter().find(|a| a.port() != 0 && plain.contains(a)) {
                e.error(
                    r,
                    format!("address '{a}' is also in listen: one port serves HTTP or HTTPS"),
                );
                return None;
            }
            Some(addrs)
        }),
    };
    let tls_strict_sni = tls::strict_sni(t, r);
    let proxy = proxy::proxy(t, r, listen.as_deref(), listen_tls.as_deref());
    let max_clients = t.int_or(r, "max_clients", 4096, 1, MAX_COUNT);
    let per_ip = t.int_or(r, "max_connections_per_ip", DEFAULT_PER_IP, 0, MAX_COUNT);
    let per_ip_prefix = t.int_or(r, "max_connections_per_ip_ipv6_prefix", 64, 1, 128);
    let multiplexer_idle_timeout = seconds(t, r, "multiplexer_idle_timeout", 0, 0);
    let processor_wait = match t.get("processor_wait_timeout") {
        Some(e) => processor_wait(&e, r),
        None => Some((Duration::from_secs(5), 10)),
    };
    let head_rate = request::read_timeout(t, r, "request_head_timeout", 1);
    let head_limits = request::head_limits(t, r);
    let body_timeout = request::read_timeout(t, r, "request_body_timeout", 1);
    let max_requests = request::max_requests(t, r);
    let limit_request_head = t.int_or(r, "limit_request_head", 8192, 256, 65536);
    let keep_alive_timeout = seconds(t, r, "keep_alive_timeout", 5, 0);
    let http2 = http2::server(t, r, limit_request_head.and_then(|n| usize::try_from(n).ok()));
    let shutdown_timeout = seconds(t, r, "shutdown_timeout", 30, 0);
    let pid_file = optional_path(t, r, "pid_file");
    let error_log = optional_path(t, r, "error_log");
    let cgi_timeout = cgi::timeout(t, r);
    let limit_request_body = cgi::body_limit(t, r);
    let runtime_dir = fastcgi::runtime_dir(t, r);
    let cgroup_root = cgroup::root(t, r);
    let ((uid, user_name), (gid, group_name)) = (user?, group?);
    if uid == 0 {
        tracing::warn!("multiplexers will run as root (server.user = {user_name:?})");
    }
    Some(Server {
        uid,
        gid,
        user_name,
        group_name,
        listen: listen?,
        listen_tls: listen_tls?,
        // Resolved once the vhosts are known.
        tls_default: None,
        tls_strict_sni: tls_strict_sni?,
        proxy_protocol: proxy.clone()?.0,
        proxy_protocol_from: proxy?.1,
        min_multiplexers: limits::to_u32(&limits.min_multiplexers)?,
        // Without a maximum, the rate alone bounds a head: reloads wait a day at most.
        request_head_timeout: head_rate?
            .unwrap_or(request::DEFAULT_TIMEOUT)
            .longest()
            .unwrap_or(Duration::from_secs(MAX_TIMEOUT_SECS as u64)),
        request_head_rate: head_rate?.unwrap_or(request::DEFAULT_TIMEOUT),
        head_limits: head_limits?,
        request_body_timeout: body_timeout?.unwrap_or(request::DEFAULT_BODY_TIMEOUT),
        keep_alive_max_requests: max_requests?.unwrap_or(request::DEFAULT_MAX_REQUESTS),
        limit_request_head: usize::try_from(limit_request_head?).ok()?,
        keep_alive_timeout: keep_alive_timeout?,
        http2: http2?,
        shutdown_timeout: shutdown_timeout?,
        pid_file: pid_file?,
        server_limit: limits::to_u32(&limits.server_limit)?,
        max_clients: u32::try_from(max_clients?).ok()?,
        max_connections_per_ip: u32::try_from(per_ip?).ok()?,
        max_connections_per_ip_ipv6_prefix: u8::try_from(per_ip_prefix?).ok()?,
        max_multiplexers: limits::to_u32(&limits.max_multiplexers)?,
        multiplexer_idle_timeout: multiplexer_idle_timeout?,
        processor_wait_timeout: processor_wait?.0,
        processor_wait_steps: processor_wait?.1,
        error_log: error_log?,
        cgi_timeout: cgi_timeout?.unwrap_or(Duration::from_secs(cgi::DEFAULT_TIMEOUT_SECS as u64)),
        limit_request_body: limit_request_body?.unwrap_or(cgi::DEFAULT_BODY_LIMIT),
        runtime_dir: runtime_dir?,
        cgroup_root: cgroup_root?,
    })
}

fn listen_ok_or_empty(listen: &Option<Vec<SocketAddr>>) -> &[SocketAddr] {
    listen.as_deref().unwrap_or(&[])
}

/// Most steps `processor_wait_timeout` may be checked in. The wait is split into steps
/// by integer division (Peruser's), so with more steps than that a step rounds down to
/// nothing and the wait never ends.
const MAX_WAIT_STEPS: i64 = 100;

/// `processor_wait_timeout = [seconds, steps]`.
fn processor_wait(entry: &Entry, r: &mut Report) -> Option<(Duration, u32)> {
    let shape = "an array [seconds, steps], e.g. [5, 10]";
    let elements = entry.array_shaped(r, shape)?;
    let [secs, steps] = &elements[..] else {
        let message = format!("expected {shape}, found {} element(s)", elements.len());
        entry.error(r, message);
        return None;
    };
    let secs = secs.int_in(r, 0, MAX_TIMEOUT_SECS);
    let steps = steps.int(r).and_then(|n| {
        if (1..=MAX_WAIT_STEPS).contains(&n) {
            return Some(n);
        }
        let why = if n > MAX_WAIT_STEPS {
            " (more steps make each step zero and the wait endless)"
        } else {
            ""
        };
        steps.error(
            r,
            format!("steps must be between 1 and {MAX_WAIT_STEPS}, got {n}{why}"),
        );
        None
    });
    Some((
        Duration::from_secs(u64::try_from(secs?).ok()?),
        u32::try_from(steps?).ok()?,
    ))
}

/// `Some(None)` when `key` is absent, `None` when its value is invalid.
fn optional_path(t: &Table, r: &mut Report, key: &str) -> Option<Option<PathBuf>> {
    match t.get(key) {
        None => Some(None),
        Some(e) => e.abs_path(r).map(Some),
    }
}

fn seconds(t: &Table, r: &mut Report, key: &str, default: i64, min: i64) -> Option<Duration> {
    let secs = t.int_or(r, key, default, min, MAX_TIMEOUT_SECS)?;
    Some(Duration::from_secs(u64::try_from(secs).ok()?))
}

/// `listen` and `listen_tls`: at least one address, none twice.
fn addresses(entry: &Entry, r: &mut Report) -> Option<Vec<SocketAddr>> {
    let elements = entry.array(r)?;
    if elements.is_empty() {
        entry.error(r, "must list at least one address");
        return None;
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut ok = true;
    for element in &elements {
        let Some(s) = element.str(r) else {
            ok = false;
            continue;
        };
        match s.parse::<SocketAddr>() {
            Ok(addr) if addrs.contains(&addr) => {
                element.error(r, format!("address '{s}' is listed twice"));
                ok = false;
            }
            Ok(addr) => addrs.push(addr),
            Err(_) => {
                let message = format!(
                    "invalid socket address '{s}' (expected ip:port, e.g. \"0.0.0.0:80\" or \"[::]:80\")"
                );
                element.error(r, message);
                ok = false;
            }
        }
    }
    ok.then_some(addrs)
}

/// One `[environments.NAME]` as far as it could be checked.
struct EnvState {
    name: String,
    /// `None` when its chroot value was invalid, so document roots cannot be checked
    /// against it; `Some(None)` when it has no chroot.
    chroot: Option<Option<PathBuf>>,
    /// Its uid, when valid (for the access log and status rules).
    uid: Option<u32>,
    /// Resolved (own, `[server]`'s or built-in); `None` when invalid.
    min_processors: Option<i64>,
    valid: Option<Environment>,
}

/// Every declared environment, in file order, even those with errors (so that vhosts
/// naming them are not reported as naming an unknown environment).
fn environments(root: &Table, r: &mut Report, limits: &Limits) -> Vec<EnvState> {
    let Some(entry) = root.get("environments") else {
        r.error(
            &None,
            "environments",
            "at least one environment is required ([environments.NAME])",
        );
        return Vec::new();
    };
    let Some(table) = entry.table(r) else {
        // Reported; do not also report every vhost's environment as unknown.
        return Vec::new();
    };
    let entries = table.entries();
    if entries.is_empty() {
        r.error(
            &table.span,
            &table.path,
            "at least one environment is required ([environments.NAME])",
        );
    }
    entries
        .into_iter()
        .map(|(name, entry)| environment(name, &entry, r, limits))
        .collect()
}

fn environment(name: &str, entry: &Entry, r: &mut Report, limits: &Limits) -> EnvState {
    let mut state = EnvState {
        name: name.to_string(),
        chroot: None,
        uid: None,
        min_processors: None,
        valid: None,
    };
    let Some(t) = entry.table(r) else {
        return state;
    };
    let name_ok = is_bare_key(name);
    if !name_ok {
        r.error(&t.span, &t.path, "environment name must match [A-Za-z0-9_-]+");
    }
    t.check_keys(r, &[ENVIRONMENT_KEYS, POOL_KEYS, cgroup::KEYS].concat());
    let user = t.require(r, "user").and_then(|e| {
        let (uid, written) = ids::resolve(&e, r, Kind::User)?;
        if uid == 0 {
            e.error(r, "runs as root (uid 0); an environment must never run as root");
            return None;
        }
        Some((uid, written))
    });
    state.uid = user.as_ref().map(|(uid, _)| *uid);
    let group = t.require(r, "group").and_then(|e| {
        let (gid, written) = ids::resolve(&e, r, Kind::Group)?;
        if gid == 0 {
            e.error(
                r,
                "runs as group root (gid 0); an environment must never run as root",
            );
            return None;
        }
        Some((gid, written))
    });
    state.chroot = match t.get("chroot") {
        None => Some(None),
        Some(e) => chroot(&e, r).map(Some),
    };
    let (pool, pool_ok) = limits.environment(&t, r);
    let fastcgi = fastcgi::environment(&t, r, state.chroot.clone().flatten().as_deref());
    let cgroup = cgroup::limits(&t, r, &limits.cgroup.unwrap_or_default());
    let private_view = crate::view::flag(&t, r, limits.private_view.unwrap_or(crate::view::DEFAULT));
    let bind_ro = crate::view::bind_ro(&t, r);
    state.min_processors = pool.min_processors.as_ref().map(|s| s.value);

    state.valid = (|| {
        let ((uid, user_name), (gid, group_name)) = (user?, group?);
        if !name_ok || !pool_ok {
            return None;
        }
        Some(Environment {
            name: name.to_string(),
            uid,
            gid,
            user_name,
            group_name,
            chroot: state.chroot.clone()?,
            min_processors: limits::to_u32(&pool.min_processors)?,
            max_processors: limits::to_u32(&pool.max_processors)?,
            max_connections_per_processor: limits::to_u32(&pool.max_connections_per_processor)?,
            start_processors: limits::to_u32(&pool.start_processors)?,
            min_spare_processors: limits::to_u32(&pool.min_spare_processors)?,
            max_spare_processors: limits::to_u32(&pool.max_spare_processors)?,
            idle_timeout: limits::to_duration(&pool.idle_timeout)?,
            expire_timeout: limits::to_duration(&pool.expire_timeout)?,
            max_requests_per_child: limits::to_u64(&pool.max_requests_per_child)?,
            fastcgi: fastcgi?,
            cgroup: cgroup?,
            private_view: private_view?,
            bind_ro: bind_ro?,
        })
    })();
    state
}

/// An absolute path to an existing directory that only root can change
/// ([`fsrules::chroot`]).
fn chroot(entry: &Entry, r: &mut Report) -> Option<PathBuf> {
    let path = entry.abs_path(r)?;
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => match fsrules::chroot(&path) {
            Ok(()) => Some(path),
            Err(message) => {
                entry.error(r, message);
                None
            }
        },
        Ok(_) => {
            entry.error(r, format!("chroot '{}' is not a directory", path.display()));
            None
        }
        Err(e) => {
            let message = format!("chroot '{}' cannot be used: {e}", path.display());
            entry.error(r, message);
            None
        }
    }
}

/// Where a host name was first claimed, for duplicate reports.
struct Claim {
    vhost: usize,
    span: Span,
}

/// `[server]`'s `cgi_timeout` and `limit_request_body`: every vhost's defaults.
type CgiDefaults = (Duration, u64);

/// The multiplexers' uid and gid, when valid, and whether `listen_tls` is set.
type MuxIds = (Option<(u32, u32)>, bool);

fn vhosts(
    root: &Table,
    r: &mut Report,
    envs: &[EnvState],
    cgi_defaults: CgiDefaults,
    mux: MuxIds,
) -> Option<Vec<Vhost>> {
    let Some(entry) = root.get("vhosts") else {
        r.error(&None, "vhosts", "at least one vhost is required ([[vhosts]])");
        return None;
    };
    let tables = entry.tables(r)?;
    if tables.is_empty() {
        entry.error(r, "at least one vhost is required ([[vhosts]])");
    }
    let mut claims: HashMap<String, Claim> = HashMap::new();
    // Environments by name, once (10,000 vhosts each looking up 10,000 names was
    // most of loading such a configuration).
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, env) in envs.iter().enumerate() {
        by_name.entry(env.name.as_str()).or_insert(i);
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (index, t) in tables.iter().enumerate() {
        match vhost(index, t, r, (envs, &by_name), &mut claims, cgi_defaults, mux) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn vhost(
    index: usize,
    t: &Table,
    r: &mut Report,
    (envs, by_name): (&[EnvState], &HashMap<&str, usize>),
    claims: &mut HashMap<String, Claim>,
    cgi_defaults: CgiDefaults,
    mux: MuxIds,
) -> Option<Vhost> {
    t.check_keys(r, &[VHOST_KEYS, tls::VHOST_KEYS, request::VHOST_KEYS].concat());
    let server_name = t
        .require(r, "server_name")
        .and_then(|e| host_name(index, &e, r, claims, false));
    let server_alias = match t.get("server_alias") {
        None => Some(Vec::new()),
        Some(e) => e.array(r).and_then(|elements| {
            let names: Vec<_> = elements
                .iter()
                .map(|a| host_name(index, a, r, claims, true))
                .collect();
            names.into_iter().collect::<Option<Vec<_>>>()
        }),
    };
    let environment = t.require(r, "environment").and_then(|e| {
        let name = e.str(r)?;
        let found = by_name.get(name).copied();
        if found.is_none() {
            let known: Vec<&str> = envs.iter().map(|env| env.name.as_str()).collect();
            let message = if known.is_empty() {
                format!("unknown environment '{name}' (none are defined)")
            } else {
                format!("unknown environment '{name}' (defined: {})", known.join(", "))
            };
            e.error(r, message);
        }
        found
    });
    let document_root = t
        .require(r, "document_root")
        .and_then(|e| document_root(&e, r, environment.map(|i| &envs[i])));
    let max_clients_vhost = t.int_or(r, "max_clients_vhost", 0, 0, MAX_COUNT);
    let access_log = optional_path(t, r, "access_log");
    if let (Some(Some(path)), Some(env)) = (&access_log, environment.map(|i| &envs[i])) {
        if let Some(uid) = env.uid {
            match (fsrules::access_log(path, &env.name, uid), t.get("access_log")) {
                (Err(fsrules::Finding::Error(message)), Some(e)) => e.error(r, message),
                (Err(fsrules::Finding::Warning(message)), Some(e)) => r.warn(&e.span, &e.path, message),
                _ => {}
            }
        }
    }
    let access_log_format = match t.get("access_log_format") {
        None => Some(LogFormat::default()),
        Some(e) => log_format(&e, r),
    };
    let deny = match t.get("deny") {
        None => Some(Vec::new()),
        Some(e) => e.array(r).and_then(|elements| {
            let prefixes: Vec<_> = elements.iter().map(|a| deny_prefix(a, r)).collect();
            prefixes.into_iter().collect::<Option<Vec<_>>>()
        }),
    };
    let cgi = cgi::vhost(t, r, cgi_defaults.0, cgi_defaults.1);
    if let (Some(cgi), Some(Some(env))) = (&cgi, environment.map(|i| envs[i].valid.as_ref())) {
        if let (Some(fcgi), Some(e)) = (&env.fastcgi, t.get("cgi")) {
            for x in cgi.extensions.iter().filter(|x| fcgi.extensions.contains(x)) {
                e.error(
                    r,
                    format!(
                        "'{x}' is also a FastCGI extension of environment '{}'; a file runs one way",
                        env.name
                    ),
                );
            }
        }
    }
    let tls = {
        let mut names: Vec<&str> = server_name.iter().map(String::as_str).collect();
        names.extend(server_alias.iter().flatten().map(String::as_str));
        let env = environment.map(|i| &envs[i]);
        let chroot = env.and_then(|e| e.chroot.clone().flatten());
        let who = match (mux.0, env.and_then(|e| e.valid.as_ref())) {
            (Some(mux), Some(e)) => Some(tls::Readers {
                mux,
                env: (e.uid, e.gid),
            }),
            _ => None,
        };
        tls::vhost(t, r, &names, chroot.as_deref(), who)
    };
    let has_tls = matches!(tls, Some(Some(_))) || t.get("tls_certificate").is_some();
    let policy = tls::policy(t, r, has_tls, mux.1);
    let index_names = index::index(t, r);
    let fallback = index::fallback(t, r);
    let body_timeout = request::read_timeout(t, r, "request_body_timeout", 1);
    let max_requests = request::max_requests(t, r);
    Some(Vhost {
        server_name: server_name?,
        server_alias: server_alias?,
        environment: environment?,
        document_root: document_root?,
        max_clients_vhost: u32::try_from(max_clients_vhost?).ok()?,
        access_log: access_log?,
        access_log_format: access_log_format?,
        deny: deny?,
        cgi: cgi?,
        index: index_names?,
        fallback: fallback?,
        tls: tls?,
        redirect_to_https: policy?.0,
        hsts_max_age: policy?.1,
        request_body_timeout: body_timeout?,
        keep_alive_max_requests: max_requests?,
    })
}

/// One `deny` entry: a URL path prefix, decoded, starting with `/`, without `.`, `..`
/// or NUL (a request path never has them once checked, so such an entry would never
/// match).
fn deny_prefix(entry: &Entry, r: &mut Report) -> Option<String> {
    let s = entry.str(r)?;
    let message = if !s.starts_with('/') {
        "must start with '/'"
    } else if s.split('/').any(|seg| seg == "." || seg == "..") {
        "must not have '.' or '..' segments"
    } else if s.contains('\0') || s.contains('%') {
        "is a decoded path: no NUL and no '%'"
    } else {
        return Some(s.to_owned());
    };
    entry.error(r, format!("deny entry {s:?} {message}"));
    None
}

fn log_format(entry: &Entry, r: &mut Report) -> Option<LogFormat> {
    match entry.str(r)? {
        "combined" => Some(LogFormat::Combined),
        "json" => Some(LogFormat::Json),
        other => {
            entry.error(
                r,
                format!("unknown log format '{other}' (expected \"combined\" or \"json\")"),
            );
            None
        }
    }
}

/// A host path inside the environment's chroot, compared component by component.
fn document_root(entry: &Entry, r: &mut Report, env: Option<&EnvState>) -> Option<PathBuf> {
    let path = entry.abs_path(r)?;
    if let Some(EnvState {
        name,
        chroot: Some(Some(root)),
        ..
    }) = env
    {
        if !path.starts_with(root) {
            let message = format!(
                "document root '{}' is outside the chroot '{}' of environment '{name}'",
                path.display(),
                root.display()
            );
            entry.error(r, message);
            return None;
        }
    }
    Some(path)
}

/// A lower-cased host name not claimed before; `*.` is allowed as a prefix of aliases.
fn host_name(
    index: usize,
    entry: &Entry,
    r: &mut Report,
    claims: &mut HashMap<String, Claim>,
    alias: bool,
) -> Option<String> {
    let name = entry.str(r)?.to_ascii_lowercase();
    let bare = match name.strip_prefix("*.") {
        Some(rest) if alias => rest,
        _ => &name,
    };
    let problem = if name.is_empty() {
        Some("host name must not be empty".to_string())
    } else if bare.contains('*') {
        Some(if alias {
            format!("invalid host name '{name}': '*' is allowed only as a leading '*.'")
        } else {
            format!("invalid host name '{name}': server_name may not contain '*' (use server_alias = [\"*.example\"])")
        })
    } else if !valid_host(bare) {
        Some(format!(
            "invalid host name '{name}': expected letters, digits, '-', '_' and '.'-separated labels"
        ))
    } else {
        None
    };
    if let Some(message) = problem {
        entry.error(r, message);
        return None;
    }
    if let Some(first) = claims.get(&name) {
        let message = if first.vhost == index {
            format!(
                "host name '{name}' is listed twice in this vhost (first at line {})",
                r.line(&first.span)
            )
        } else {
            format!(
                "host name '{name}' is already claimed by vhosts[{}] (line {})",
                first.vhost,
                r.line(&first.span)
            )
        };
        entry.error(r, message);
        return None;
    }
    let claim = Claim {
        vhost: index,
        span: entry.span.clone(),
    };
    claims.insert(name.clone(), claim);
    Some(name)
}

/// Non-empty labels of `[a-z0-9_-]` separated by single dots.
fn valid_host(name: &str) -> bool {
    name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    })
}
