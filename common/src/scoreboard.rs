//! The scoreboard: what every child is doing, in shared memory, without Peruser's
//! defect of one read-write segment every tenant could rewrite.
//!
//! - Each child has its **own slot**, a sealed memfd (it cannot shrink or grow, so no
//!   reader can be made to fault). The child maps it read-write; the supervisor and the
//!   multiplexers get a read-only fd (reopened `O_RDONLY`) and map it read-only. A
//!   processor can therefore write its own slot and nothing else.
//! - The **shared table** holds per-environment and per-vhost state that the
//!   multiplexers and the supervisor write (availability, drops, hand-offs, spawn
//!   requests, and the counters of children that are gone, so no counter ever goes
//!   backwards). Processors never get it.
//!
//! Everything is an `AtomicU64` word at a fixed index; values read from a slot are
//! tenant-written and are treated as untrusted numbers (clamped by their readers).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Errors creating or mapping a segment.
#[derive(Debug, Error)]
pub enum ScoreboardError {
    #[error("scoreboard {what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("scoreboard segment of {got} bytes, expected at least {want}")]
    TooSmall { got: usize, want: usize },
}

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> ScoreboardError {
    move |source| ScoreboardError::Sys { what, source }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A mapped segment of `AtomicU64` words.
pub struct Segment {
    ptr: *mut AtomicU64,
    words: usize,
}

// SAFETY: the mapping is only accessed through atomics, which are Sync.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    /// Maps `fd` (shared); `writable` needs an fd opened for writing.
    pub fn map(fd: &OwnedFd, writable: bool) -> Result<Segment, ScoreboardError> {
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| ScoreboardError::Sys {
            what: "fstat",
            source: std::io::Error::from_raw_os_error(e as i32),
        })?;
        let len = st.st_size as usize;
        if len < 8 {
            return Err(ScoreboardError::TooSmall { got: len, want: 8 });
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of a whole sealed memfd; the pointer is only
        // used through atomics within `words`, and unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(sys("mmap")(std::io::Error::last_os_error()));
        }
        Ok(Segment {
            ptr: p.cast(),
            words: len / 8,
        })
    }

    pub fn words(&self) -> usize {
        self.words
    }

    /// Word `i`, or `None` past the end.
    pub fn word(&self, i: usize) -> Option<&AtomicU64> {
        // SAFETY: in bounds of the mapping, aligned (mmap is page-aligned), and only
        // accessed atomically.
        (i < self.words).then(|| unsafe { &*self.ptr.add(i) })
    }

    /// Reads word `i` (0 past the end).
    pub fn get(&self, i: usize) -> u64 {
        self.word(i).map(|w| w.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Writes word `i` (ignored past the end, and on a read-only mapping's caller bug).
    pub fn set(&self, i: usize, v: u64) {
        if let Some(w) = self.word(i) {
            w.store(v, Ordering::Relaxed);
        }
    }

    pub fn add(&self, i: usize, v: u64) {
        if let Some(w) = self.word(i) {
            w.fetch_add(v, Ordering::Relaxed);
        }
    }

    /// Adds `v`, stopping at `u64::MAX` (for sums of tenant-written numbers).
    pub fn add_saturating(&self, i: usize, v: u64) {
        if let Some(w) = self.word(i) {
            let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
                Some(x.saturating_add(v))
            });
        }
    }

    /// Seqlock writer, start: word `i` becomes odd; the writes that follow cannot be
    /// seen before it (release fence).
    pub fn seq_write_begin(&self, i: usize) {
        if let Some(w) = self.word(i) {
            w.fetch_add(1, Ordering::Relaxed);
            fence(Ordering::Release);
        }
    }

    /// Seqlock writer, end: word `i` becomes even again, after every write before it.
    pub fn seq_write_end(&self, i: usize) {
        if let Some(w) = self.word(i) {
            w.fetch_add(1, Ordering::Release);
        }
    }

    /// Seqlock reader, start: the sequence, to pass to [`Segment::seq_read_valid`].
    /// Odd means a write is under way.
    pub fn seq_read_begin(&self, i: usize) -> u64 {
        self.word(i).map(|w| w.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Seqlock reader, end: whether the reads since [`Segment::seq_read_begin`]
    /// returned `before` saw no write (acquire fence, then the sequence again).
    pub fn seq_read_valid(&self, i: usize, before: u64) -> bool {
        fence(Ordering::Acquire);
        before.is_multiple_of(2) && self.word(i).map(|w| w.load(Ordering::Relaxed)).unwrap_or(0) == before
    }

    pub fn sub(&self, i: usize, v: u64) {
        if let Some(w) = self.word(i) {
            let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
                Some(x.saturating_sub(v))
            });
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in `map`.
        unsafe { libc::munmap(self.ptr.cast(), self.words * 8) };
    }
}

/// Creates a sealed memfd of `words` zeroed words. Returns (read-write fd, read-only fd).
pub fn create(name: &str, words: usize) -> Result<(OwnedFd, OwnedFd), ScoreboardError> {
    let cname = CString::new(name).unwrap_or_else(|_| CString::from(c"bulkhead"));
    // SAFETY: a valid C string; flags are constants.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(sys("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this fd to us.
    let rw = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = (words.max(1) * 8) as libc::off_t;
    // SAFETY: plain syscalls on an fd we own.
    unsafe {
        if libc::ftruncate(rw.as_raw_fd(), len) < 0 {
            return Err(sys("ftruncate")(std::io::Error::last_os_error()));
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if libc::fcntl(rw.as_raw_fd(), libc::F_ADD_SEALS, seals) < 0 {
            return Err(sys("F_ADD_SEALS")(std::io::Error::last_os_error()));
        }
    }
    let ro = reopen_read_only(rw.as_raw_fd())?;
    Ok((rw, ro))
}

fn reopen_read_only(fd: RawFd) -> Result<OwnedFd, ScoreboardError> {
    let path = CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|_| ScoreboardError::TooSmall { got: 0, want: 0 })?;
    // SAFETY: a valid C string path.
    let ro = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if ro < 0 {
        return Err(sys("reopen read-only")(std::io::Error::last_os_error()));
    }
    // SAFETY: open just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(ro) })
}

/// Word indexes of a child's slot.
pub mod slot {
    pub const MAGIC: usize = 0;
    pub const PID: usize = 1;
    pub const ROLE: usize = 2;
    pub const ENV: usize = 3;
    pub const STATE: usize = 4;
    pub const STARTED_MS: usize = 5;
    pub const LAST_USED_MS: usize = 6;
    /// When the oldest request in flight started, or 0.
    pub const BUSY_SINCE_MS: usize = 7;
    pub const ACTIVE_CONNS: usize = 8;
    pub const CAPACITY: usize = 9;
    /// Connections received (processor) or accepted (multiplexer).
    pub const TAKEN: usize = 10;
    pub const REQUESTS: usize = 11;
    pub const BYTES: usize = 12;
    pub const HANDBACKS: usize = 13;
    pub const GENERATION: usize = 14;
    pub const SITES: usize = 15;
    /// Duration of all requests, microseconds.
    pub const DURATION_US: usize = 16;
    /// A multiplexer told to stop accepting (a reload) sets this to 1 once its accept
    /// loops have ended and no connection it took from a listener is still being read
    /// or handed off: from then on it hands nothing more to its generation's pools.
    pub const QUIESCED: usize = 17;
    /// A processor's FastCGI requests: sent to a backend (each counted once, when its
    /// connection to the backend is made or refused).
    pub const FCGI_REQUESTS: usize = 18;
    /// FastCGI requests in flight now (connected, answer not finished).
    pub const FCGI_ACTIVE: usize = 19;
    /// FastCGI requests answered 502 (no backend, refused, broken answer, died).
    pub const FCGI_BAD_GATEWAY: usize = 20;
    /// FastCGI requests answered 504 (`fastcgi_timeout`).
    pub const FCGI_TIMEOUTS: usize = 21;
    /// A processor's TLS handshakes completed, and of those resumed and with ALPN
    /// `http/1.1` (the rest chose none).
    pub const TLS_HANDSHAKES: usize = 22;
    pub const TLS_RESUMED: usize = 23;
    pub const TLS_ALPN_HTTP11: usize = 24;
    /// Handshakes that failed: no hello or no handshake in time, a server name that
    /// disagrees with the routing, anything else (a protocol error, a client gone, no
    /// certificate loaded).
    pub const TLS_FAIL_TIMEOUT: usize = 25;
    pub const TLS_FAIL_SERVER_NAME: usize = 26;
    pub const TLS_FAIL_ERROR: usize = 27;
    /// Requests answered 421 on a TLS connection (another vhost's host).
    pub const TLS_MISDIRECTED: usize = 28;
    /// Handshakes that chose ALPN `h2` (served with HTTP/2).
    pub const TLS_ALPN_H2: usize = 29;
    pub const HEADER: usize = 32;

    pub const MAGIC_VALUE: u64 = 0x6268_736c_6f74_0001;

    /// Roles.
    pub const ROLE_MULTIPLEXER: u64 = 1;
    pub const ROLE_PROCESSOR: u64 = 2;

    /// States (Peruser's STARTING / READY / ACTIVE, plus stopping).
    pub const STARTING: u64 = 0;
    pub const READY: u64 = 1;
    pub const BUSY: u64 = 2;
    pub const STOPPING: u64 = 3;

    /// Per-site block after the header, one per vhost of the processor's environment.
    pub mod site {
        pub const VHOST: usize = 0;
        pub const ACTIVE_CONNS: usize = 1;
        /// Requests by status class 1xx..5xx: `CLASS + (status / 100 - 1)`.
        pub const CLASS: usize = 2;
        pub const BYTES: usize = 7;
        pub const DURATION_US: usize = 8;
        /// Request-duration histogram: counts per bucket of [`BUCKETS_MS`], then +Inf.
        pub const HIST: usize = 9;
        pub const WORDS: usize = HIST + BUCKETS_MS.len() + 1;
        pub const BUCKETS_MS: [u64; 10] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];
    }

    /// Words of a slot with `sites` per-site blocks.
    pub fn words(sites: usize) -> usize {
        HEADER + sites * site::WORDS
    }

    /// Index of word `w` of site block `i`.
    pub fn site_word(i: usize, w: usize) -> usize {
        HEADER + i * site::WORDS + w
    }
}

/// Word indexes of the shared table (supervisor and multiplexers only).
pub mod table {
    pub const MAGIC: usize = 0;
    pub const ENVS: usize = 1;
    pub const VHOSTS: usize = 2;
    pub const STARTED_MS: usize = 3;
    pub const GENERATION: usize = 4;
    /// Connections accepted by all multiplexers.
    pub const ACCEPTED: usize = 5;
    /// Seqlock over retirements: odd while the supervisor moves a dead child's
    /// counters into the retired totals and clears its registry entry.
    pub const SEQ: usize = 6;
    /// Number of registry entries.
    pub const REGISTRY_LEN: usize = 7;
    pub const HEADER: usize = 8;

    /// Per environment.
    pub mod env {
        pub const AVAILABILITY: usize = 0;
        pub const DROPPED_SATURATED: usize = 1;
        pub const DROPPED_VHOST_LIMIT: usize = 2;
        pub const DROPPED_ERROR: usize = 3;
        pub const HANDOFFS: usize = 4;
        pub const HANDBACKS: usize = 5;
        /// Incremented by a multiplexer that wants one more processor now.
        pub const SPAWN_REQUESTS: usize = 6;
        pub const SPAWNS: usize = 7;
        pub const COLD_STARTS: usize = 8;
        pub const COLD_START_US: usize = 9;
        /// Counters of processors that are gone (slot TAKEN / REQUESTS / BYTES / HANDBACKS / DURATION_US).
        pub const RETIRED_TAKEN: usize = 10;
        pub const RETIRED_REQUESTS: usize = 11;
        pub const RETIRED_BYTES: usize = 12;
        pub const RETIRED_HANDBACKS: usize = 13;
        pub const RETIRED_DURATION_US: usize = 14;
        /// 1 while a "saturated" warning is outstanding (logged once until recovery).
        pub const WARNED: usize = 15;
        /// FastCGI backends (written by the supervisor): running now, started in
        /// total, and exits that were not asked for (a crash, a kill).
        pub const BACKENDS: usize = 16;
        pub const BACKEND_STARTS: usize = 17;
        pub const BACKEND_DEATHS: usize = 18;
        /// The FastCGI counters of processors that are gone (slot `FCGI_REQUESTS`,
        /// `FCGI_BAD_GATEWAY`, `FCGI_TIMEOUTS`).
        pub const RETIRED_FCGI_REQUESTS: usize = 19;
        pub const RETIRED_FCGI_BAD_GATEWAY: usize = 20;
        pub const RETIRED_FCGI_TIMEOUTS: usize = 21;
        /// `max_backends` (0: the environment has no FastCGI backends).
        pub const MAX_BACKENDS: usize = 22;
        /// The environment's cgroup counters (written by the supervisor's tick from
        /// `memory.events`/`memory.oom_control` and `pids.events`): OOM kills and
        /// forks refused at `pids.max`.
        pub const OOM_KILLS: usize = 23;
        pub const PIDS_MAX_HITS: usize = 24;
        /// The TLS counters of processors that are gone ([`super::TLS_RETIRED`]).
        pub const RETIRED_TLS_HANDSHAKES: usize = 25;
        pub const RETIRED_TLS_RESUMED: usize = 26;
        pub const RETIRED_TLS_ALPN_HTTP11: usize = 27;
        pub const RETIRED_TLS_FAIL_TIMEOUT: usize = 28;
        pub const RETIRED_TLS_FAIL_SERVER_NAME: usize = 29;
        pub const RETIRED_TLS_FAIL_ERROR: usize = 30;
        pub const RETIRED_TLS_MISDIRECTED: usize = 31;
        pub const RETIRED_TLS_ALPN_H2: usize = 32;
        pub const WORDS: usize = 33;
    }

    /// Per vhost: the retired per-site counters (same layout as a slot's site block).
    pub mod vhost {
        pub const WORDS: usize = super::super::slot::site::WORDS;
    }

    /// The registry: one entry per child slot, `[pid, live]`, so readers count a
    /// child's slot or its retired totals, never both.
    pub mod registry {
        pub const PID: usize = 0;
        pub const LIVE: usize = 1;
        pub const WORDS: usize = 2;
    }

    /// (retired total per environment, processor slot word) of the TLS counters.
    pub const TLS_RETIRED: [(usize, usize); 8] = [
        (env::RETIRED_TLS_HANDSHAKES, super::slot::TLS_HANDSHAKES),
        (env::RETIRED_TLS_RESUMED, super::slot::TLS_RESUMED),
        (env::RETIRED_TLS_ALPN_HTTP11, super::slot::TLS_ALPN_HTTP11),
        (env::RETIRED_TLS_FAIL_TIMEOUT, super::slot::TLS_FAIL_TIMEOUT),
        (
            env::RETIRED_TLS_FAIL_SERVER_NAME,
            super::slot::TLS_FAIL_SERVER_NAME,
        ),
        (env::RETIRED_TLS_FAIL_ERROR, super::slot::TLS_FAIL_ERROR),
        (env::RETIRED_TLS_MISDIRECTED, super::slot::TLS_MISDIRECTED),
        (env::RETIRED_TLS_ALPN_H2, super::slot::TLS_ALPN_H2),
    ];

    pub fn words(envs: usize, vhosts: usize, registry_len: usize) -> usize {
        per_ip_base(envs, vhosts, registry_len) + per_ip::WORDS
    }

    /// `max_connections_per_ip` across multiplexers: after the registry, the hash key
    /// ([`per_ip::KEY_WORDS`], random, written by the supervisor) and then
    /// [`per_ip::BUCKETS`] rows of [`per_ip::COLUMNS`] counts, one column per
    /// multiplexer index: what that multiplexer holds of the addresses hashed to the
    /// bucket. Each multiplexer writes only its own column; a column is cleared when
    /// its multiplexer dies (by the supervisor) and when one starts.
    pub mod per_ip {
        pub const KEY_WORDS: usize = 2;
        pub const BUCKETS: usize = 2048;
        /// Multiplexers with an index at or above this count on their own only.
        pub const COLUMNS: usize = 32;
        pub const WORDS: usize = KEY_WORDS + BUCKETS * COLUMNS;
    }

    /// First word of the per-address region (its key).
    pub fn per_ip_base(envs: usize, vhosts: usize, registry_len: usize) -> usize {
        HEADER + envs * env::WORDS + vhosts * vhost::WORDS + registry_len * registry::WORDS
    }

    /// Word of multiplexer `column`'s count in `bucket`, from [`per_ip_base`].
    pub fn per_ip_word(base: usize, bucket: usize, column: usize) -> usize {
        base + per_ip::KEY_WORDS + bucket * per_ip::COLUMNS + column
    }

    /// Clears multiplexer `column`'s counts in the table `seg` (no-op past the columns).
    pub fn per_ip_clear(seg: &super::Segment, column: usize) {
        if column >= per_ip::COLUMNS {
            return;
        }
        let base = per_ip_base(
            seg.get(ENVS) as usize,
            seg.get(VHOSTS) as usize,
            seg.get(REGISTRY_LEN) as usize,
        );
        for b in 0..per_ip::BUCKETS {
            seg.set(per_ip_word(base, b, column), 0);
        }
    }

    pub fn registry_word(envs: usize, vhosts: usize, index: usize, w: usize) -> usize {
        HEADER + envs * env::WORDS + vhosts * vhost::WORDS + index * registry::WORDS + w
    }

    pub fn env_word(env: usize, w: usize) -> usize {
        HEADER + env * env::WORDS + w
    }

    pub fn vhost_word(envs: usize, vhost: usize, w: usize) -> usize {
        HEADER + envs * env::WORDS + vhost * vhost::WORDS + w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_fd_cannot_be_mapped_writable_or_shrunk() {
        let (rw, ro) = create("t", slot::words(2)).unwrap();
        let w = Segment::map(&rw, true).unwrap();
        let r = Segment::map(&ro, false).unwrap();
        w.set(slot::PID, 42);
        assert_eq!(r.get(slot::PID), 42);
        assert!(
            Segment::map(&ro, true).is_err(),
            "a read-only fd must not map writable"
        );
        // SAFETY: plain syscall on an fd we own.
        let shrink = unsafe { libc::ftruncate(rw.as_raw_fd(), 0) };
        assert!(shrink < 0, "sealed segment must not shrink");
        assert_eq!(r.get(10_000), 0);
    }

    #[test]
    fn add_saturating_stops_at_max() {
        let (rw, _ro) = create("t", 4).unwrap();
        let w = Segment::map(&rw, true).unwrap();
        w.add_saturating(1, u64::MAX - 1);
        w.add_saturating(1, 5);
        assert_eq!(w.get(1), u64::MAX);
        let before = w.seq_read_begin(0);
        assert!(w.seq_read_valid(0, before));
        w.seq_write_begin(0);
        assert!(!w.seq_read_valid(0, w.seq_read_begin(0)));
        w.seq_write_end(0);
        assert!(!w.seq_read_valid(0, before));
    }
}
