//! The control channel between the supervisor and one child: a SOCK_SEQPACKET pair,
//! the child's end at [`crate::fds::CONTROL_FD`].
//!
//! A message is JSON, split into fragments of at most [`FRAGMENT`] bytes, each
//! prefixed by one byte (1 = more fragments follow). Fds ride on the fragments, at
//! most [`seqpacket::MAX_FDS_PER_MESSAGE`] per fragment. The receiver checks the
//! total size against [`MAX_MESSAGE`] and the fd count against the caller's limit
//! before it keeps anything.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

use crate::bootfds::{MultiplexerLayout, ProcessorLayout};
use crate::privdrop::Credentials;
use crate::seqpacket::{self, PacketError, MAX_FDS_PER_MESSAGE};

/// Payload bytes per fragment.
pub const FRAGMENT: usize = 60 * 1024;
/// Largest whole message sent, and the default receive bound (a bootstrap with a big
/// config). A receiver that expects less passes its own bound ([`Receiver::with_max`]).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Errors on the control channel.
#[derive(Debug, Error)]
pub enum ControlError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("control message over {0} bytes")]
    TooLarge(usize),
    #[error("control message carried {got} fds, at most {max} allowed")]
    TooManyFds { got: usize, max: usize },
    #[error("control message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("control channel: timed out waiting for a message")]
    Timeout,
    #[error("control channel: poll: {0}")]
    Poll(nix::Error),
    #[error("control channel: empty fragment")]
    Empty,
}

/// What the supervisor tells a child.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// The first message: everything the child needs, with its fds attached as its
    /// role's bundle lays them out ([`crate::bootfds`]; the layout is in the boot).
    Bootstrap(Box<Bootstrap>),
    /// Before the bootstrap of a child of an environment with a private view: its
    /// mount and IPC namespaces (two fds attached: mnt, ipc), joined at once.
    Enter,
    /// To an environment's holder, after a reload that keeps its view and adds an
    /// environment: cover these paths (the new environments' trees) as its view's
    /// `Hide` steps do; it answers `Ready`, or exits (its error on stderr).
    Hide { paths: Vec<std::path::PathBuf> },
    /// To multiplexers: processor slots that appeared (one read-only scoreboard fd
    /// attached per entry, in order) and pids whose slots are gone.
    Slots { add: Vec<SlotAdd>, remove: Vec<u32> },
    /// To processors: fresh access log fds after SIGUSR1 (one attached per listed
    /// vhost, in order); the old ones are closed once the new ones are in place.
    Logs { vhosts: Vec<u32> },
    /// To every multiplexer after SIGUSR1: the reopened error log (one fd attached), to
    /// be put on fd 2. Never sent to a processor (its fds 1 and 2 are its environment's
    /// log pipe).
    ErrorLog,
    /// To a processor: stop taking connections now (the rest of the pool serves the
    /// queue), finish what is in flight, exit 0.
    Retire,
    /// To a multiplexer of a generation replaced by a reload: stop accepting (the new
    /// generation's multiplexers do), keep routing hand-backs until `Shutdown`.
    StopAccepting,
    /// To a processor of a generation replaced by a reload: keep taking connections
    /// (hand-backs still arrive), but answer each connection's next request with
    /// `Connection: close`.
    Graceful,
    /// To a processor of a generation replaced by a reload: serve what is queued (the
    /// supervisor closed the queue's writers), answer each connection's next request
    /// with `Connection: close`, exit 0.
    Drain,
    /// Stop taking new work, finish what is in flight, exit 0. A processor first
    /// serves what is already queued: the supervisor closed the queue's writers.
    Shutdown,
    /// To an fd keeper: keep the attached hand-off socket ends, after those it has,
    /// in environment order. On a multiplexer's `env_stream`: its ends, in order.
    Keep,
    /// To an fd keeper: answer [`FromChild::Given`] with a copy of environment
    /// `env`'s end attached.
    Give { env: u32 },
    /// To an fd keeper: send every end it keeps, in order, as `Keep` messages of at
    /// most [`crate::seqpacket::MAX_FDS_PER_MESSAGE`] fds on the attached socket (a
    /// new multiplexer's `env_stream`), then close it.
    Stream,
    /// To an fd keeper: answer [`FromChild::Pending`].
    Pending,
    /// To an fd keeper of multiplexer ends: shut every end down for writing, so the
    /// processors that drain their queue see its end.
    CloseQueues,
    /// To a processor: how many processors of its environment and generation run
    /// now, itself included. With more than one it keeps no FastCGI backend connection
    /// between requests (each processor may hold up to `max_backends` connections, so
    /// the others' would wait on the socket behind the ones it keeps), and one near its
    /// `max_requests_per_child` stops taking connections: its successor runs. Advice,
    /// sent without waiting ([`try_send`]).
    Peers { processors: u32 },
}

/// A processor slot a multiplexer should watch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotAdd {
    pub pid: u32,
    /// `u32::MAX` for a multiplexer's slot.
    pub env: u32,
    /// Its entry in the shared table's registry.
    pub index: u32,
}

/// What a child tells the supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromChild {
    /// Privileges are dropped and the runtime is serving.
    Ready,
    /// A multiplexer found environment `env` without room: start a processor now.
    Spawn { env: u32 },
    /// An fd keeper's answer to [`ToChild::Give`]: environment `env`'s end attached
    /// (none when the index was out of range).
    Given { env: u32 },
    /// An fd keeper's answer to [`ToChild::Pending`]: how many of its ends have a
    /// message waiting to be read (multiplexer ends: hand-backs not yet taken).
    Pending { ends: u32 },
    /// A processor expects to reach `max_requests_per_child` soon: its successor may
    /// start now, so its connections find a processor ready when it stops taking them.
    /// Honoured once per processor, for its own environment, within `max_processors`.
    Recycling,
}

/// A child's slice of the configuration.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bootstrap {
    /// `None` when the server runs unprivileged (isolation off).
    pub credentials: Option<Credentials>,
    pub role: RoleBoot,
    /// Landlock and seccomp after the drop (an environment's private view); when its
    /// `namespaces` is set, a [`ToChild::Enter`] came first.
    #[serde(default)]
    pub sandbox: Option<crate::sandbox::Sandbox>,
}

/// The role-specific part of a bootstrap.
#[derive(Debug, Serialize, Deserialize)]
pub enum RoleBoot {
    Multiplexer(MultiplexerBoot),
    Processor(ProcessorBoot),
    /// A FastCGI backend: exec's its environment's `command` once its privileges are
    /// dropped.
    Backend(BackendBoot),
    /// An environment's namespace holder (stays root, no fds).
    Holder(crate::sandbox::holder::HolderBoot),
    /// A generation's fd keeper (runs as the multiplexers' user, no fds in its
    /// bootstrap: its ends follow as `Keep` messages).
    Keeper(crate::keeper::KeeperBoot),
}

/// A FastCGI backend's slice. Its fds are a [`crate::bootfds::BackendFds`] (always
/// two: its environment's log pipe and its listening socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendBoot {
    pub environment: String,
    pub env_id: u32,
    /// The program (as the environment sees it) and its arguments.
    pub command: Vec<String>,
    /// The configuration's `env`, in file order (`PATH` and `PHP_FCGI_MAX_REQUESTS`
    /// are set by the backend itself).
    pub env: Vec<(String, String)>,
    /// `PHP_FCGI_MAX_REQUESTS`; 0: not set.
    pub max_requests: u64,
    pub generation: u64,
    /// `manager = "php-fpm"`: the command is php-fpm's master, run in the foreground
    /// on the supervisor's pool file, adopting the socket (fd 3, `FPM_SOCKETS`).
    pub php_fpm: Option<FpmBoot>,
}

/// What a php-fpm master is told (paths as the environment sees them, inside its
/// chroot when it has one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpmBoot {
    /// The pool file the supervisor wrote beside the socket (`-y`).
    pub config: String,
    /// The socket's path: the pool's `listen`, and the key of `FPM_SOCKETS`.
    pub socket: String,
}

/// A multiplexer's slice. Its fds are a [`crate::bootfds::MultiplexerFds`].
#[derive(Debug, Serialize, Deserialize)]
pub struct MultiplexerBoot {
    /// How many fds each field of the bundle has.
    pub fds: MultiplexerLayout,
    pub listeners: Vec<std::net::SocketAddr>,
    /// `listen_tls`: listeners whose connections are routed by the ClientHello.
    pub tls_listeners: Vec<std::net::SocketAddr>,
    /// The vhost a hello without a known server name goes to; `None`: no vhost has a
    /// certificate.
    pub tls_default: Option<u32>,
    /// `tls_strict_sni`: such a hello gets an `unrecognized_name` alert instead.
    pub tls_strict_sni: bool,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub environments: Vec<EnvBoot>,
    pub vhosts: Vec<VhostBoot>,
    /// Host table: (name or `*.`wildcard, vhost index).
    pub hosts: Vec<(String, u32)>,
    pub limit_request_head: usize,
    pub request_head_timeout_ms: u64,
    /// `limit_request_line`, `limit_request_fields`, `limit_request_field_size` (with
    /// `limit_request_head`); `None`: Apache's defaults.
    #[serde(default)]
    pub head_limits: Option<crate::head::Limits>,
    /// `request_head_timeout` with its rate; `None`: `request_head_timeout_ms`, fixed.
    #[serde(default)]
    pub head_timeout: Option<crate::http::rate::RateTimeout>,
    /// How long to wait for room in a pool's queue before answering 503.
    pub handoff_timeout_ms: u64,
    /// `processor_wait_timeout = [seconds, steps]`.
    pub processor_wait_timeout_ms: u64,
    pub processor_wait_steps: u32,
    pub max_clients: u32,
    /// `max_connections_per_ip` (0 = off) and the IPv6 prefix length it counts by.
    pub max_connections_per_ip: u32,
    pub max_connections_per_ip_ipv6_prefix: u8,
    pub server_limit: u32,
    pub max_multiplexers: u32,
    pub status_path: String,
    /// CIDRs whose non-local clients may see the status page: (address, prefix length).
    pub status_allow: Vec<(std::net::IpAddr, u8)>,
    /// Uids whose local connections may see the status page and the metrics.
    pub status_allow_users: Vec<u32>,
    pub generation: u64,
    /// This multiplexer's index among its generation's (a replacement keeps it): its
    /// column of the shared `max_connections_per_ip` counts.
    #[serde(default)]
    pub index: Option<u32>,
    /// `proxy_protocol`: `None` when no listener expects a PROXY header.
    #[serde(default)]
    pub proxy: Option<ProxyBoot>,
}

/// The PROXY protocol listeners of a multiplexer (`[server] proxy_protocol`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyBoot {
    /// Per listener of `listeners`, in order: whether its connections start with a header.
    pub plain: Vec<bool>,
    /// The same for `tls_listeners`.
    pub tls: Vec<bool>,
    /// `proxy_protocol_from`: (address, prefix length).
    pub from: Vec<(std::net::IpAddr, u8)>,
    /// The generation's key of the hand-off tags (32 random bytes, the same for every
    /// multiplexer of the generation, never sent to any other process).
    pub key: TicketSeed,
}

/// What a multiplexer knows of an environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvBoot {
    pub name: String,
    pub max_processors: u32,
    /// `max_connections_per_processor`.
    pub capacity: u32,
}

/// What a multiplexer knows of a vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VhostBoot {
    pub server_name: String,
    pub env: u32,
    /// `max_clients_vhost`, 0 = unlimited.
    pub max_clients: u32,
    /// Whether it has a certificate (a ClientHello may be routed to it).
    #[serde(default)]
    pub tls: bool,
}

/// A processor's slice. Its fds are a [`crate::bootfds::ProcessorFds`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessorBoot {
    /// How many fds each field of the bundle has.
    pub fds: ProcessorLayout,
    pub environment: String,
    pub env_id: u32,
    pub sites: Vec<SiteBoot>,
    /// The multiplexers' host table (name or `*.`wildcard, in their order) cut down to
    /// this environment's entries (value: index into `sites`) and the entries of other
    /// environments that overlap one of them ([`FOREIGN_HOST`]): enough to reach the
    /// multiplexers' answer for every host this environment could serve, without the
    /// names of every other tenant.
    pub hosts: Vec<(String, u32)>,
    pub limit_request_head: usize,
    pub request_head_timeout_ms: u64,
    /// As [`MultiplexerBoot::head_limits`], for the later heads of a connection.
    #[serde(default)]
    pub head_limits: Option<crate::head::Limits>,
    /// As [`MultiplexerBoot::head_timeout`], for the later heads of a connection.
    #[serde(default)]
    pub head_timeout: Option<crate::http::rate::RateTimeout>,
    pub keep_alive_timeout_ms: u64,
    pub max_connections: u32,
    /// 0 = unlimited.
    pub max_requests_per_child: u64,
    pub generation: u64,
    /// The environment's FastCGI backends, when it has them.
    #[serde(default)]
    pub fastcgi: Option<FastcgiBoot>,
    /// The secret this generation's processors of this environment derive their TLS
    /// session-ticket keys from (so a session resumes on any of them); `None` when it
    /// has no certificate. No other environment's processors get it.
    #[serde(default)]
    pub tls_ticket_seed: Option<TicketSeed>,
    /// HTTP/2 over TLS and its limits; `None`: TLS offers only `http/1.1`.
    #[serde(default)]
    pub http2: Option<Http2Boot>,
}

/// `[server] http2*` for a processor: hyper's limits on each HTTP/2 connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Boot {
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
}

/// 32 random bytes made by the supervisor per environment and generation (a ticket
/// seed) or per generation (the multiplexers' hand-off tag key); never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketSeed(pub [u8; 32]);

impl std::fmt::Debug for TicketSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSeed(..)")
    }
}

/// What a processor knows of its environment's FastCGI backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastcgiBoot {
    /// The backends' listening Unix socket, as the processor (and the backends, which
    /// share its chroot) see it.
    pub socket: std::path::PathBuf,
    /// File extensions served through the backends, each starting with `.`.
    pub extensions: Vec<String>,
    /// `fastcgi_timeout`: seconds without a byte from the backend before a 504.
    pub timeout_secs: u64,
    /// The backend program, for log lines (`command[0]`).
    pub program: String,
    /// `requests_per_connection` (1: a new connection per request).
    #[serde(default = "one")]
    pub requests_per_connection: u32,
    /// `max_backends`: idle kept connections at most.
    #[serde(default = "one")]
    pub max_backends: u32,
}

fn one() -> u32 {
    1
}

/// In [`ProcessorBoot::hosts`]: an entry of another environment.
pub const FOREIGN_HOST: u32 = u32::MAX;

/// One vhost of a processor's environment.
#[derive(Debug, Serialize, Deserialize)]
pub struct SiteBoot {
    pub vhost_id: u32,
    pub server_name: String,
    /// As the processor sees it (inside its chroot).
    pub document_root: std::path::PathBuf,
    /// Whether an access log fd is attached for this site, and its format.
    pub access_log: Option<AccessLogFormat>,
    /// The vhost's `deny`: URL path prefixes answered 403.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Which of its requests run a CGI script (none by default).
    #[serde(default)]
    pub cgi: CgiBoot,
    /// The vhost's `index`: directory index file names, in order (absent:
    /// `["index.html"]`).
    #[serde(default = "default_index")]
    pub index: Vec<String>,
    /// The vhost's `fallback`: the URL path answering what resolves to nothing.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Its certificate chain and key, as the processor sees them (inside its chroot):
    /// opened by the processor itself, as the environment.
    #[serde(default)]
    pub tls: Option<SiteTls>,
    /// `redirect_to_https`: the port plain-HTTP requests are sent to (the first
    /// `listen_tls` address's; 443 and 0 are left out of the URL).
    #[serde(default)]
    pub redirect_to_https: Option<u16>,
    /// `hsts_max_age`, sent on answers over TLS.
    #[serde(default)]
    pub hsts_max_age: Option<u64>,
    /// `request_body_timeout` (its own, else `[server]`'s); `None`: the built-in one.
    #[serde(default)]
    pub body_timeout: Option<crate::http::rate::RateTimeout>,
    /// `keep_alive_max_requests` (its own, else `[server]`'s; 0: unlimited); `None`:
    /// Apache's 100.
    #[serde(default)]
    pub keep_alive_max_requests: Option<u64>,
}

/// Where a site's certificate chain and key are (paths only: no key crosses a
/// process boundary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteTls {
    pub certificate: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// [`SiteBoot::index`] when absent.
fn default_index() -> Vec<String> {
    vec!["index.html".into()]
}

/// A site's CGI settings (`cgi`, `cgi_dirs`, `cgi_timeout`), validated by `conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgiBoot {
    /// File extensions, each starting with `.`.
    pub extensions: Vec<String>,
    /// URL path prefixes starting and ending with `/`.
    pub dirs: Vec<String>,
    /// Seconds before the script's process group is killed (at least 1).
    pub timeout_secs: u64,
    /// `limit_request_body`: bytes of a body a script is given; 0: no limit of its own.
    pub body_limit: u64,
}

/// Access log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessLogFormat {
    Combined,
    Json,
}

/// Sends `msg` with `fds` attached.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> Result<(), ControlError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_MESSAGE {
        return Err(ControlError::TooLarge(MAX_MESSAGE));
    }
    let chunks: Vec<&[u8]> = body.chunks(FRAGMENT).collect();
    let fd_chunks: Vec<&[RawFd]> = fds.chunks(MAX_FDS_PER_MESSAGE).collect();
    let n = chunks.len().max(fd_chunks.len()).max(1);
    for i in 0..n {
        let more = [u8::from(i + 1 < n)];
        let part = chunks.get(i).copied().unwrap_or(&[]);
        let f = fd_chunks.get(i).copied().unwrap_or(&[]);
        loop {
            match seqpacket::send(sock, &[&more, part], f) {
                Ok(_) => break,
                Err(e) if e.is_would_block() => wait(sock, libc::POLLOUT, Some(Duration::from_secs(10)))?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Sends `msg` (one fragment, no fds) only if the channel has room now: for advice a
/// child that does not read its channel may miss, so that it cannot hold the sender.
pub fn try_send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T) -> Result<(), ControlError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > FRAGMENT {
        return Err(ControlError::TooLarge(FRAGMENT));
    }
    seqpacket::send(sock, &[&[0], &body], &[])?;
    Ok(())
}

fn wait(sock: BorrowedFd<'_>, events: libc::c_short, timeout: Option<Duration>) -> Result<(), ControlError> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = timeout
        .map(|d| d.as_millis().min(i32::MAX as u128) as libc::c_int)
        .unwrap_or(-1);
    loop {
        // SAFETY: one valid pollfd on the stack for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = nix::Error::last();
            if e == nix::Error::EINTR {
                continue;
            }
            return Err(ControlError::Poll(e));
        }
        if r == 0 {
            return Err(ControlError::Timeout);
        }
        return Ok(());
    }
}

/// Reassembles fragments into one message of at most `max` bytes: nothing beyond
/// that bound (plus one fragment buffer of at most [`FRAGMENT`]) is ever held.
pub struct Receiver {
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
    buf: Vec<u8>,
    max: usize,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver::new()
    }
}

impl Receiver {
    /// A receiver for messages up to [`MAX_MESSAGE`].
    pub fn new() -> Self {
        Receiver::with_max(MAX_MESSAGE)
    }

    /// A receiver for messages up to `max` bytes; a longer message (or a fragment
    /// longer than `max`) is an error.
    pub fn with_max(max: usize) -> Self {
        let max = max.clamp(1, MAX_MESSAGE);
        Receiver {
            body: Vec::new(),
            fds: Vec::new(),
            buf: vec![0u8; FRAGMENT.min(max) + 1],
            max,
        }
    }

    /// Reads whatever fragments are available without blocking. Returns a complete
    /// message when one has arrived; `Ok(None)` when more must be waited for.
    pub fn poll_message<T: DeserializeOwned>(
        &mut self,
        sock: BorrowedFd<'_>,
        max_fds: usize,
    ) -> Result<Option<(T, Vec<OwnedFd>)>, ControlError> {
        loop {
            let (n, fds) = match seqpacket::recv(sock, &mut self.buf, MAX_FDS_PER_MESSAGE) {
                Ok(r) => r,
                Err(e) if e.is_would_block() => return Ok(None),
                Err(e) => {
                    self.fds.clear();
                    self.body = Vec::new();
                    return Err(e.into());
                }
            };
            if n == 0 {
                return Err(ControlError::Empty);
            }
            if self.fds.len() + fds.len() > max_fds {
                let got = self.fds.len() + fds.len();
                self.fds.clear();
                self.body = Vec::new();
                return Err(ControlError::TooManyFds { got, max: max_fds });
            }
            self.fds.extend(fds);
            if self.body.len() + n - 1 > self.max {
                self.fds.clear();
                self.body = Vec::new();
                return Err(ControlError::TooLarge(self.max));
            }
            self.body.extend_from_slice(&self.buf[1..n]);
            if self.buf[0] == 0 {
                let body = std::mem::take(&mut self.body);
                let fds = std::mem::take(&mut self.fds);
                let msg = serde_json::from_slice(&body)?;
                return Ok(Some((msg, fds)));
            }
        }
    }

    /// Blocks (with `timeout`) until one whole message arrives.
    pub fn recv_blocking<T: DeserializeOwned>(
        &mut self,
        sock: BorrowedFd<'_>,
        max_fds: usize,
        timeout: Duration,
    ) -> Result<(T, Vec<OwnedFd>), ControlError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.poll_message(sock, max_fds)? {
                return Ok(m);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ControlError::Timeout);
            }
            wait(sock, libc::POLLIN, Some(left))?;
        }
    }
}

/// Async wrapper for use inside a tokio runtime.
pub struct AsyncChannel {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
    rx: Receiver,
}

impl AsyncChannel {
    /// `fd` must be non-blocking. Receives messages up to [`MAX_MESSAGE`].
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        Self::with_max(fd, MAX_MESSAGE)
    }

    /// As [`AsyncChannel::new`], receiving messages up to `max` bytes.
    pub fn with_max(fd: OwnedFd, max: usize) -> std::io::Result<Self> {
        Ok(AsyncChannel {
            fd: crate::fds::async_fd(fd)?,
            rx: Receiver::with_max(max),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Waits for the next message.
    pub async fn recv<T: DeserializeOwned>(
        &mut self,
        max_fds: usize,
    ) -> Result<(T, Vec<OwnedFd>), ControlError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(|e| {
                ControlError::Poll(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
            })?;
            match self.rx.poll_message(guard.get_inner().as_fd(), max_fds)? {
                Some(m) => return Ok(m),
                None => guard.clear_ready(),
            }
        }
    }

    /// Sends a message (fragments rarely block; a bounded poll covers that case).
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[RawFd]) -> Result<(), ControlError> {
        send(self.fd(), msg, fds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn large_message_with_many_fds() {
        let (a, b) = seqpacket::seqpacket_pair().unwrap();
        let names: Vec<String> = (0..20_000).map(|i| format!("env{i}")).collect();
        let (x, _y) = seqpacket::seqpacket_pair().unwrap();
        let raw: Vec<RawFd> = (0..600).map(|_| x.as_raw_fd()).collect();
        let sender = std::thread::spawn(move || send(a.as_fd(), &names, &raw).unwrap());
        let mut rx = Receiver::new();
        let (got, fds): (Vec<String>, _) = rx.recv_blocking(b.as_fd(), 1000, Duration::from_secs(5)).unwrap();
        sender.join().unwrap();
        assert_eq!(got.len(), 20_000);
        assert_eq!(fds.len(), 600);
    }

    #[test]
    fn too_many_fds_refused() {
        let (a, b) = seqpacket::seqpacket_pair().unwrap();
        let (x, _y) = seqpacket::seqpacket_pair().unwrap();
        send(a.as_fd(), &ToChild::Shutdown, &[x.as_raw_fd(), x.as_raw_fd()]).unwrap();
        let mut rx = Receiver::new();
        let r: Result<(ToChild, _), _> = rx.recv_blocking(b.as_fd(), 1, Duration::from_secs(1));
        assert!(matches!(r, Err(ControlError::TooManyFds { .. })));
    }

    /// Many 60 KiB "more" fragments to a receiver bounded at 4 KiB: refused at the
    /// first fragment, nothing kept.
    #[test]
    fn bounded_receiver_refuses_big_messages_and_keeps_nothing() {
        let (a, b) = seqpacket::seqpacket_pair().unwrap();
        let big = vec![b'x'; FRAGMENT];
        let mut rx = Receiver::with_max(4096);
        for _ in 0..3 {
            seqpacket::send(a.as_fd(), &[&[1u8], &big], &[]).unwrap();
            let r: Result<Option<(FromChild, _)>, _> = rx.poll_message(b.as_fd(), 0);
            assert!(r.is_err(), "a fragment over the bound must be refused");
            assert_eq!(rx.body.capacity(), 0);
        }
        // Small fragments adding up past the bound.
        let part = vec![b' '; 1000];
        for i in 0..5 {
            seqpacket::send(a.as_fd(), &[&[1u8], &part], &[]).unwrap();
            let r: Result<Option<(FromChild, _)>, _> = rx.poll_message(b.as_fd(), 0);
            if i < 4 {
                assert!(matches!(r, Ok(None)));
            } else {
                assert!(matches!(r, Err(ControlError::TooLarge(4096))), "{r:?}");
            }
        }
        send(a.as_fd(), &FromChild::Ready, &[]).unwrap();
        let r: Option<(FromChild, _)> = rx.poll_message(b.as_fd(), 0).unwrap();
        assert!(matches!(r, Some((FromChild::Ready, _))));
    }
}
