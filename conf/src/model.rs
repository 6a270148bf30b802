//! The validated configuration: what the rest of bulkhead reads.
//!
//! These types are produced by [`crate::load`] / [`crate::parse_str`] only after every
//! check has passed; nothing downstream re-validates them. They are not wire types:
//! the supervisor copies the slice each child needs into `common::control` messages.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    /// `[status]`; its defaults when the table is absent.
    pub status: Status,
    /// What `check` warns about (tenants that can signal each other, overlapping host
    /// names across environments), in line order; `serve` logs them.
    pub warnings: Vec<crate::ConfigWarning>,
}

/// `[server] http2*`: whether TLS offers `h2` (ALPN) and hyper's limits per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2 {
    /// `http2` (true): offer `h2` before `http/1.1`.
    pub enabled: bool,
    /// Streams open at once per connection (128).
    pub max_concurrent_streams: u32,
    /// Bytes of one request's header list, decoded (default `limit_request_head`).
    pub max_header_list_size: u32,
    /// Initial flow-control window per stream and per connection (1 MiB, 4 MiB).
    pub stream_window: u32,
    pub connection_window: u32,
    /// Streams the client reset before we accepted them, at once (20): rapid reset.
    pub max_pending_accept_reset_streams: usize,
    /// Streams we reset for a protocol error, per connection (1024).
    pub max_local_error_reset_streams: usize,
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
    /// `listen_tls`: where HTTPS is served (routed by the ClientHello's server name);
    /// empty: none.
    pub listen_tls: Vec<SocketAddr>,
    /// The vhost a ClientHello without a server name, or with one that matches
    /// nothing, goes to: `tls_default`, else the first vhost with a certificate;
    /// `None` when no vhost has one.
    pub tls_default: Option<VhostId>,
    /// `tls_strict_sni`: such a hello gets an `unrecognized_name` alert instead.
    pub tls_strict_sni: bool,
    /// `proxy_protocol`: the listeners (addresses as in `listen` / `listen_tls`) whose
    /// connections start with a PROXY protocol header; empty: none.
    pub proxy_protocol: Vec<SocketAddr>,
    /// `proxy_protocol_from`: the only address blocks such a connection may come from
    /// (required when `proxy_protocol` names any listener).
    pub proxy_protocol_from: Vec<Cidr>,
    pub min_multiplexers: u32,
    /// The longest a request head may take: `request_head_rate`'s maximum (its
    /// initial timeout when it has no rate).
    pub request_head_timeout: Duration,
    /// `request_head_timeout` as written: `[initial, maximum, min_rate]`.
    pub request_head_rate: ReadTimeout,
    pub limit_request_head: usize,
    /// `limit_request_line`, `limit_request_fields`, `limit_request_field_size`.
    pub head_limits: HeadLimits,
    /// `request_body_timeout`: every vhost's default.
    pub request_body_timeout: ReadTimeout,
    /// `keep_alive_max_requests` (MaxKeepAliveRequests; 0: unlimited): every vhost's
    /// default.
    pub keep_alive_max_requests: u64,
    pub keep_alive_timeout: Duration,
    /// `http2*`: HTTP/2 over TLS and its limits.
    pub http2: Http2,
    /// How long SIGTERM waits for in-flight requests before killing what is left.
    pub shutdown_timeout: Duration,
    /// Written by `serve`, read by `reload`/`stop`.
    pub pid_file: Option<PathBuf>,
    /// Peruser's `ServerLimit`: hard cap on children, multiplexers and processors
    /// together. At least `min_multiplexers` plus every environment's
    /// `min_processors`, and at least every environment's `max_processors`.
    pub server_limit: u32,
    /// Connections held by processors at once, server-wide.
    pub max_clients: u32,
    /// `max_connections_per_ip`: connections one client address may have in a
    /// multiplexer at once (reading its head, waiting for room); 0 = no cap.
    pub max_connections_per_ip: u32,
    /// `max_connections_per_ip_ipv6_prefix`: IPv6 clients are counted per prefix of
    /// this length (64: one /64 is one client).
    pub max_connections_per_ip_ipv6_prefix: u8,
    /// At least `min_multiplexers`.
    pub max_multiplexers: u32,
    /// Peruser's `MultiplexerIdleTimeout`; zero: off.
    pub multiplexer_idle_timeout: Duration,
    /// Peruser's `ProcessorWaitTimeout`: how long a multiplexer waits for a busy
    /// environment's processor before dropping the connection, checked in
    /// `processor_wait_steps` steps. Zero: never wait (and never drop).
    pub processor_wait_timeout: Duration,
    /// `1..=100`.
    pub processor_wait_steps: u32,
    /// Absolute; `None`: standard error.
    pub error_log: Option<PathBuf>,
    /// The default of every vhost's `cgi_timeout` (60 s).
    pub cgi_timeout: Duration,
    /// The default of every vhost's `limit_request_body` (100 MiB; 0: none of its own).
    pub limit_request_body: u64,
    /// `runtime_dir` (absolute; default `/run/bulkhead`): where the FastCGI sockets of
    /// environments without a chroot live (`fastcgi/` below it, made by the supervisor).
    pub runtime_dir: PathBuf,
    /// `cgroup_root`: bulkhead's tree inside every cgroup hierarchy, as a cgroup path
    /// (`/bulkhead`) or relative to the supervisor's own group in each (`bulkhead`);
    /// `None`: `bulkhead`, relative. Read at start only (a reload keeps the tree).
    pub cgroup_root: Option<PathBuf>,
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
    /// Processors started with the server; `min_processors..=max_processors`.
    pub start_processors: u32,
    /// Idle processors kept ready beyond the busy ones.
    pub min_spare_processors: u32,
    /// Idle processors above this are stopped; zero: no limit. When not zero, at least
    /// `min_spare_processors`.
    pub max_spare_processors: u32,
    /// Peruser's `IdleTimeout`; zero: off.
    pub idle_timeout: Duration,
    /// Peruser's `ExpireTimeout`; zero: off.
    pub expire_timeout: Duration,
    /// A processor is replaced after this many requests; zero: never.
    pub max_requests_per_child: u64,
    /// `[environments.NAME.fastcgi]`: the FastCGI backends run for it, if any.
    pub fastcgi: Option<Fastcgi>,
    /// Its cgroup limits (its own, else `[server]`'s); all unset: no cgroup.
    pub cgroup: CgroupLimits,
    /// `private_view` (its own, else `[server]`'s; default on; off when the
    /// server does not run as root): its own mount, PID and
    /// IPC namespaces, Landlock and the seccomp deny list.
    pub private_view: bool,
    /// `bind_ro`: more host paths its private view shows read-only (absolute, existing).
    pub bind_ro: Vec<PathBuf>,
}

/// A limit that may be written as `"max"`: no limit, but a group is still made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Max,
    At(u64),
}

/// An environment's cgroup limits (`memory_max` …). `None`: not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Bytes: `memory.max` (v2), `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes` (v1).
    pub memory_max: Option<Bound>,
    /// Bytes: `memory.high`, v2 only; at most `memory_max`.
    pub memory_high: Option<Bound>,
    /// Processes and threads: `pids.max`.
    pub pids_max: Option<Bound>,
    /// Percent of one CPU: `cpu.max` (v2), `cpu.cfs_quota_us` (v1).
    pub cpu_max: Option<Bound>,
    /// `1..=10000`, 100 the default share: `cpu.weight` (v2), `cpu.shares` (v1).
    pub cpu_weight: Option<u32>,
    /// `1..=10000`: `io.weight` (v2), `blkio.weight` (v1), where the controller exists.
    pub io_weight: Option<u32>,
}

impl CgroupLimits {
    /// Whether no limit is set: the environment then gets no cgroup.
    pub fn is_empty(&self) -> bool {
        *self == CgroupLimits::default()
    }
}

/// `[environments.NAME.fastcgi]`: FastCGI backends the supervisor runs as the
/// environment (each one process serving one request at a time, all accepting on the
/// environment's one listening socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fastcgi {
    /// Who runs the backend processes: bulkhead itself (default) or php-fpm's master.
    pub manager: Manager,
    /// The program (absolute, as the environment sees it) and its arguments; with
    /// [`Manager::PhpFpm`], the php-fpm binary.
    pub command: Vec<String>,
    /// File extensions served through the backends (`.php`), each starting with `.`.
    pub extensions: Vec<String>,
    /// Backends kept running; 0: started on the first request (php-fpm's ondemand).
    pub min_backends: u32,
    /// At least 1, at least `min_backends`.
    pub max_backends: u32,
    /// Requests per backend process before it exits and is replaced
    /// (`PHP_FCGI_MAX_REQUESTS`; default 10,000); 0: never.
    pub max_requests: u64,
    /// A backend idle this long is stopped (down to `min_backends`).
    pub idle_timeout: Duration,
    /// `fastcgi_timeout`: a request whose backend sends nothing for this long gets 504.
    pub timeout: Duration,
    /// Requests one connection to a backend carries (`FCGI_KEEP_CONN`) before the
    /// processor closes it; 1: a new connection per request.
    pub requests_per_connection: u32,
    /// Extra environment variables of every backend, in file order.
    pub env: Vec<(String, String)>,
}

/// `manager` of `[environments.NAME.fastcgi]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Manager {
    /// `"bulkhead"`: the supervisor starts each backend (one request at a time) on
    /// demand, up to `max_backends`, and stops idle ones.
    #[default]
    Bulkhead,
    /// `"php-fpm"`: the supervisor runs one php-fpm master per environment and
    /// generation (`-F`, a generated `pm = ondemand` pool adopting the socket), which
    /// forks its own children up to `max_backends`.
    PhpFpm,
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
    /// mpm-itk's `MaxClientsVHost`: connections to this vhost at once; zero: no limit.
    pub max_clients_vhost: u32,
    /// Absolute; `None`: no access log for this vhost.
    pub access_log: Option<PathBuf>,
    pub access_log_format: LogFormat,
    /// URL path prefixes answered 403 (`deny`), each starting with `/`.
    pub deny: Vec<String>,
    /// Which requests run a CGI script.
    pub cgi: Cgi,
    /// `index`: the file names a directory is answered with, tried in order
    /// (`["index.html"]` by default).
    pub index: Vec<String>,
    /// `fallback`: the URL path (starting with `/`) that answers a request whose path
    /// is neither a file nor a directory (a front controller); `None`: 404.
    pub fallback: Option<String>,
    /// `tls_certificate` and `tls_key`, when HTTPS is served for it.
    pub tls: Option<VhostTls>,
    /// `redirect_to_https`: plain-HTTP requests get 301 (GET, HEAD) or 308 to HTTPS,
    /// except those under `/.well-known/acme-challenge/`.
    pub redirect_to_https: bool,
    /// `hsts_max_age`: `Strict-Transport-Security: max-age=N` on answers over TLS.
    pub hsts_max_age: Option<u64>,
    /// Its own `request_body_timeout`; `None`: `[server]`'s.
    pub request_body_timeout: Option<ReadTimeout>,
    /// Its own `keep_alive_max_requests`; `None`: `[server]`'s.
    pub keep_alive_max_requests: Option<u64>,
}

/// A read timeout with a minimum rate (mod_reqtimeout's `header=20-40,MinRate=500`):
/// `initial` after the start, one second more per `min_rate` bytes received, never
/// past `max` (0: no maximum). A plain `N` is `[N, N, 0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTimeout {
    pub initial: Duration,
    pub max: Duration,
    pub min_rate: u64,
}

impl ReadTimeout {
    /// The longest a read under it may take; `None`: only the rate bounds it.
    pub fn longest(&self) -> Option<Duration> {
        if self.min_rate == 0 {
            Some(self.initial)
        } else if self.max.is_zero() {
            None
        } else {
            Some(self.max.max(self.initial))
        }
    }
}

/// Apache's request-head limits, server-wide (the multiplexers parse a head before
/// any vhost is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// `limit_request_line` (LimitRequestLine, 8190): longer is 414.
    pub line: usize,
    /// `limit_request_fields` (LimitRequestFields, 100): more is 431.
    pub fields: usize,
    /// `limit_request_field_size` (LimitRequestFieldSize, 8190): a longer field line
    /// is 431.
    pub field_size: usize,
}

/// A vhost's certificate chain and key: host paths (inside the environment's chroot
/// when it has one), opened by its processors as the environment, never by root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostTls {
    /// A PEM chain, leaf first; checked to cover every name of the vhost.
    pub certificate: PathBuf,
    /// A PEM private key (PKCS#8, SEC1 or PKCS#1); only ever `stat`ed by root.
    pub key: PathBuf,
}

/// A vhost's CGI/1.1 settings (RFC 3875).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgi {
    /// `cgi`: file extensions (`.cgi`), each starting with `.`.
    pub extensions: Vec<String>,
    /// `cgi_dirs`: URL path prefixes (`/cgi-bin/`) under which every file is a script.
    pub dirs: Vec<String>,
    /// `cgi_timeout`: a script's whole process group is killed after this.
    pub timeout: Duration,
    /// `limit_request_body`: bytes of a request body a script is given (413 over it);
    /// 0: no limit of its own (the 1 GiB any body decoder stops at still applies).
    pub body_limit: u64,
}

impl Cgi {
    /// Whether no request of the vhost runs a script.
    pub fn is_off(&self) -> bool {
        self.extensions.is_empty() && self.dirs.is_empty()
    }
}

/// `access_log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Apache's combined log format.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// `[status]`: the status page and the metrics listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Request path of the status page on every vhost; starts with `/`, no `?`, `#`
    /// or whitespace.
    pub path: String,
    /// Non-local clients allowed to read the status page and the metrics (default none).
    pub allow: Vec<Cidr>,
    /// Uids whose local (same host) connections may read them (default root only). A
    /// local connection is judged by the uid owning the client socket, never its address.
    pub allow_users: Vec<u32>,
    /// Where metrics are served; `None` when written as `"off"`.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Status {
    /// `/server-status`, root's local connections only, metrics on `127.0.0.1:9180`.
    fn default() -> Self {
        Status {
            path: "/server-status".to_string(),
            allow: Vec::new(),
            allow_users: vec![0],
            metrics_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9180))),
        }
    }
}

/// An address block, `addr/prefix`. Validated ones have no host bits set and a
/// prefix of at most 32 (IPv4) or 128 (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// what a dual-stack socket reports for an IPv4 client) is matched as the IPv4
    /// address, and an IPv4 address as its mapped form against an IPv6 block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V4(net), IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(ip) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
                None => false,
            },
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.to_ipv6_mapped().octets(), self.prefix)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether the first `prefix` bits of `a` and `b` agree (a longer prefix compares all).
fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let bits = usize::from(prefix).min(a.len() * 8);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
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
