//! A point-in-time view of the whole server, built by a multiplexer from the
//! scoreboard, and rendered as Peruser's status table, `?peruser_stats`, Apache's
//! `?auto`, JSON and Prometheus text. Plain data: no process boundary is crossed.

use serde::Serialize;

/// Role of a child, as Peruser's "Type" column names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    Multiplexer,
    Processor,
    /// Started and waiting to be assigned to an environment (has read nothing yet).
    Spare,
}

/// A child's state: Peruser's STATUS column (STARTING, READY, ACTIVE) plus STOPPING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChildState {
    Starting,
    Ready,
    Busy,
    Stopping,
}

/// One row of the child table.
#[derive(Debug, Clone, Serialize)]
pub struct ChildRow {
    /// Position in the table (Peruser's ID).
    pub id: usize,
    pub pid: u32,
    pub role: Role,
    /// Environment name; `None` for multiplexers and spares.
    pub environment: Option<String>,
    pub state: ChildState,
    pub started_ms: u64,
    pub last_used_ms: u64,
    /// Connections taken (processor) or accepted (multiplexer).
    pub connections: u64,
    pub requests: u64,
    pub bytes: u64,
    pub active_conns: u64,
    /// Connections it may hold at once.
    pub capacity: u64,
    pub generation: u64,
}

/// One environment (Peruser's server environment), multiplexers not included.
#[derive(Debug, Clone, Serialize)]
pub struct EnvRow {
    pub id: usize,
    pub name: String,
    /// 0..=100.
    pub availability: u64,
    /// Live processes of the environment (busy or idle): Peruser's "alive".
    pub processors_alive: u64,
    /// Processors with room for another connection: Peruser's "idle".
    pub processors_idle: u64,
    pub max_processors: u64,
    /// Connections received by the environment's processors (ever).
    pub connections: u64,
    /// Requests served by them (ever).
    pub requests: u64,
    pub bytes: u64,
    pub active_conns: u64,
    /// Total request time, microseconds.
    pub duration_us: u64,
    pub dropped_saturated: u64,
    pub dropped_vhost_limit: u64,
    pub dropped_error: u64,
    pub handoffs: u64,
    pub handbacks: u64,
    pub spawns: u64,
    pub cold_starts: u64,
    pub cold_start_us: u64,
    /// Processes of the environment the kernel killed at its cgroup's memory limit
    /// (v1 kernels before 4.13: hits of the limit).
    pub oom_kills: u64,
    /// Forks and thread starts refused at its cgroup's `pids.max`.
    pub pids_max_hits: u64,
    /// Its FastCGI backends; `None` when it has none configured.
    pub fastcgi: Option<FastcgiRow>,
    /// Its TLS handshakes; `None` when none of its vhosts has a certificate.
    pub tls: Option<TlsRow>,
}

/// An environment's TLS handshakes and the requests refused on its TLS connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsRow {
    /// Handshakes completed (ever).
    pub handshakes: u64,
    /// Of those, sessions resumed.
    pub resumed: u64,
    /// Of those, with ALPN `http/1.1` (the others chose no protocol).
    pub alpn_http11: u64,
    /// Of those, with ALPN `h2` (HTTP/2).
    pub alpn_h2: u64,
    /// Handshakes that failed: not done within `request_head_timeout`, a server name
    /// that disagreed with the routing, anything else.
    pub failed_timeout: u64,
    pub failed_server_name: u64,
    pub failed_error: u64,
    /// Requests answered 421 (a host of another vhost on a TLS connection).
    pub misdirected: u64,
}

/// An environment's FastCGI backends and the requests its processors sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FastcgiRow {
    /// `max_backends`.
    pub max_backends: u64,
    /// Backend processes running now (the supervisor's count).
    pub running: u64,
    /// Running backends serving a request (requests in flight, at most `running`).
    pub busy: u64,
    /// Running backends waiting for a request.
    pub idle: u64,
    /// Requests in flight beyond the running backends: queued on the socket for a
    /// backend that is starting or busy.
    pub waiting: u64,
    /// Requests sent to the backends (ever).
    pub requests: u64,
    /// Requests answered 502: no backend, refused, a broken answer, a backend died.
    pub bad_gateway: u64,
    /// Requests answered 504: the backend was silent past `fastcgi_timeout`.
    pub timeouts: u64,
    /// Backend processes started (ever).
    pub starts: u64,
    /// Backend exits nobody asked for (a crash, a kill).
    pub deaths: u64,
}

impl FastcgiRow {
    /// Splits the requests in flight (`active`, summed from processors' slots) over
    /// the running backends: busy ones, idle ones, and what waits in the queue.
    pub fn split(&mut self, active: u64) {
        self.busy = active.min(self.running);
        self.idle = self.running - self.busy;
        self.waiting = active - self.busy;
    }
}

impl TlsRow {
    /// Adds `other`'s counters, saturating.
    pub fn add(&mut self, other: &TlsRow) {
        let pairs = [
            (&mut self.handshakes, other.handshakes),
            (&mut self.resumed, other.resumed),
            (&mut self.alpn_http11, other.alpn_http11),
            (&mut self.alpn_h2, other.alpn_h2),
            (&mut self.failed_timeout, other.failed_timeout),
            (&mut self.failed_server_name, other.failed_server_name),
            (&mut self.failed_error, other.failed_error),
            (&mut self.misdirected, other.misdirected),
        ];
        for (mine, theirs) in pairs {
            *mine = mine.saturating_add(theirs);
        }
    }
}

impl EnvRow {
    /// All 503 drops, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_saturated
            .saturating_add(self.dropped_vhost_limit)
            .saturating_add(self.dropped_error)
    }
}

/// Upper bounds (milliseconds) of the request-duration histogram buckets; one more
/// bucket, +Inf, follows.
pub const DURATION_BUCKETS_MS: [u64; 10] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

/// One vhost.
#[derive(Debug, Clone, Serialize)]
pub struct VhostRow {
    pub id: usize,
    pub server_name: String,
    pub environment: String,
    /// Requests by status class: index 0 = 1xx … 4 = 5xx.
    pub requests_by_class: [u64; 5],
    pub bytes: u64,
    pub duration_us: u64,
    /// Request counts per bucket of [`DURATION_BUCKETS_MS`] (not cumulative), then +Inf.
    pub histogram: Vec<u64>,
    pub active_conns: u64,
}

impl VhostRow {
    pub fn requests(&self) -> u64 {
        // Sums of tenant-written counters: saturating.
        self.requests_by_class
            .iter()
            .fold(0u64, |a, n| a.saturating_add(*n))
    }
}

/// The whole view.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The host name the page was asked for (Apache prints it as the first `?auto` line).
    pub server_name: String,
    /// `bulkhead/X.Y.Z`.
    pub server_version: String,
    pub now_ms: u64,
    /// When the supervisor started (restart time).
    pub started_ms: u64,
    /// Reload generation (0 at start).
    pub generation: u64,
    pub server_limit: u64,
    pub max_clients: u64,
    pub max_multiplexers: u64,
    /// Connections accepted by all multiplexers (ever).
    pub accepted: u64,
    pub children: Vec<ChildRow>,
    pub environments: Vec<EnvRow>,
    pub vhosts: Vec<VhostRow>,
}

impl Snapshot {
    pub fn uptime_seconds(&self) -> u64 {
        self.now_ms.saturating_sub(self.started_ms) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::FastcgiRow;

    /// Requests in flight fill the running backends first; the rest wait.
    #[test]
    fn fastcgi_split() {
        let mut f = FastcgiRow {
            running: 3,
            ..FastcgiRow::default()
        };
        f.split(0);
        assert_eq!((f.busy, f.idle, f.waiting), (0, 3, 0));
        f.split(2);
        assert_eq!((f.busy, f.idle, f.waiting), (2, 1, 0));
        f.split(5);
        assert_eq!((f.busy, f.idle, f.waiting), (3, 0, 2));
        f.running = 0;
        f.split(u64::MAX);
        assert_eq!((f.busy, f.idle, f.waiting), (0, 0, u64::MAX));
    }
}
