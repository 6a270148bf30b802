//! Tenant output: an environment's processors have one pipe (per generation) on their
//! fds 1 and 2; the supervisor reads it here and logs each line inside a
//! `tenant{environment=NAME}` span at WARN, so no tenant line can pose as a server
//! line. Lines are cut at [`MAX_LINE`] bytes, control characters and escapes are made
//! visible, at most [`RATE`] lines a second (bursts of [`BURST`]) are logged per pipe
//! with one summary a second of what was dropped, and at most [`BYTES_PER_SEC`] are
//! read: a flood fills the pipe, and the processor's writes (non-blocking) fail.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tracing::warn;

/// Longest line logged; the rest of a longer one is counted and cut.
pub const MAX_LINE: usize = 2048;
/// Lines per second logged per pipe, after a burst of [`BURST`].
pub const RATE: f64 = 50.0;
pub const BURST: f64 = 200.0;
/// Bytes read per second per pipe; what is not read stays in the pipe (64 KiB), and
/// then the processors' writes fail with EAGAIN.
pub const BYTES_PER_SEC: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
/// How often a pending "lines dropped" summary is written.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// Why a log pipe could not be set up.
#[derive(Debug, Error)]
#[error("log pipe for environment {env}: {source}")]
pub struct TenantLogError {
    pub env: String,
    pub source: std::io::Error,
}

/// Creates environment `env`'s log pipe and starts reading it in the current runtime.
/// Returns the write end (close-on-exec, non-blocking: a processor whose pipe is full
/// loses the line instead of hanging), to be attached to each processor's bootstrap.
/// The reader ends when every write end is closed.
pub fn open(env: &str) -> Result<OwnedFd, TenantLogError> {
    let err = |e: nix::Error| TenantLogError {
        env: env.to_string(),
        source: e.into(),
    };
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(err)?;
    let read = common::fds::async_fd(read).map_err(|source| TenantLogError {
        env: env.to_string(),
        source,
    })?;
    tokio::spawn(pump(read, env.to_string()));
    Ok(write)
}

/// What [`Lines`] asks to be logged.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// A tenant line, already escaped.
    Line(String),
    /// This many lines were dropped by the rate limit since the last summary.
    Dropped(u64),
}

async fn pump(fd: AsyncFd<OwnedFd>, env: String) {
    let span = tracing::error_span!("tenant", environment = %env);
    let mut lines = Lines::new(Instant::now());
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    let mut window = Instant::now();
    let mut window_bytes = 0usize;
    loop {
        if window.elapsed() >= Duration::from_secs(1) {
            window = Instant::now();
            window_bytes = 0;
        }
        if window_bytes >= BYTES_PER_SEC {
            tokio::time::sleep_until((window + Duration::from_secs(1)).into()).await;
            continue;
        }
        let n = match tokio::time::timeout(SUMMARY_EVERY, fd.readable()).await {
            Err(_) => None,
            Ok(Err(_)) => break,
            Ok(Ok(mut guard)) => match guard
                .try_io(|inner| nix::unistd::read(inner.as_raw_fd(), &mut buf).map_err(std::io::Error::from))
            {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => Some(n),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => None,
                Ok(Err(e)) => {
                    warn!(environment = %env, "reading the log pipe: {e}");
                    break;
                }
                Err(_would_block) => None,
            },
        };
        let now = Instant::now();
        if let Some(n) = n {
            window_bytes += n;
            lines.feed(&buf[..n], now, &mut out);
        }
        lines.summary(now, false, &mut out);
        emit(&span, &env, &mut out);
    }
    lines.finish(Instant::now(), &mut out);
    emit(&span, &env, &mut out);
}

fn emit(span: &tracing::Span, env: &str, out: &mut Vec<Out>) {
    for o in out.drain(..) {
        match o {
            Out::Line(l) => span.in_scope(|| warn!("{l}")),
            Out::Dropped(n) => warn!(
                environment = %env,
                dropped = n,
                "environment {env}: {n} lines of processor output dropped (over {RATE} lines/s)"
            ),
        }
    }
}

/// Splits a byte stream into bounded, escaped, rate-limited lines.
pub struct Lines {
    cur: Vec<u8>,
    /// Bytes of the current line beyond [`MAX_LINE`].
    cut: u64,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    /// When the pending drops began or were last summarised.
    since: Instant,
}

impl Lines {
    pub fn new(now: Instant) -> Lines {
        Lines {
            cur: Vec::with_capacity(MAX_LINE),
            cut: 0,
            tokens: BURST,
            refilled: now,
            dropped: 0,
            since: now,
        }
    }

    /// Takes `data`, pushing every completed line that the rate limit lets through.
    pub fn feed(&mut self, mut data: &[u8], now: Instant, out: &mut Vec<Out>) {
        while !data.is_empty() {
            let (part, rest, complete) = match data.iter().position(|b| *b == b'\n') {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            let room = MAX_LINE - self.cur.len();
            let keep = part.len().min(room);
            self.cur.extend_from_slice(&part[..keep]);
            self.cut += (part.len() - keep) as u64;
            if complete {
                self.end_line(now, out);
            }
            data = rest;
        }
    }

    /// Writes a pending "dropped" summary once [`SUMMARY_EVERY`] has passed since the
    /// drops began (or at once with `force`).
    pub fn summary(&mut self, now: Instant, force: bool, out: &mut Vec<Out>) {
        if self.dropped > 0 && (force || now.duration_since(self.since) >= SUMMARY_EVERY) {
            out.push(Out::Dropped(self.dropped));
            self.dropped = 0;
            self.since = now;
        }
    }

    /// The pipe is closed: the last partial line and any pending summary.
    pub fn finish(&mut self, now: Instant, out: &mut Vec<Out>) {
        if !self.cur.is_empty() || self.cut > 0 {
            self.end_line(now, out);
        }
        self.summary(now, true, out);
    }

    fn end_line(&mut self, now: Instant, out: &mut Vec<Out>) {
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE).min(BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            let mut s = escape(&self.cur);
            if self.cut > 0 {
                s.push_str(&format!(" [line cut: {} more bytes]", self.cut));
            }
            out.push(Out::Line(s));
        } else {
            if self.dropped == 0 {
                self.since = now;
            }
            self.dropped += 1;
        }
        self.cur.clear();
        self.cut = 0;
    }
}

/// `bytes` with everything a terminal or a log reader could take for something else
/// made visible: control characters (ESC, CR, …), backslashes, Unicode format and
/// bidirectional controls as Rust escapes, invalid UTF-8 as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' | '\'' => out.push(c),
                c => out.extend(c.escape_debug()),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[Out]) -> Vec<&str> {
        out.iter()
            .filter_map(|o| match o {
                Out::Line(l) => Some(l.as_str()),
                Out::Dropped(_) => None,
            })
            .collect()
    }

    #[test]
    fn control_characters_and_escapes_are_made_visible() {
        assert_eq!(
            escape(b"\x1b[31mred\r\tx\\y \"q\""),
            "\\u{1b}[31mred\\r\\tx\\\\y \"q\""
        );
        assert_eq!(escape("a\u{202e}b é".as_bytes()), "a\\u{202e}b é");
        assert_eq!(escape(b"\xff\x00"), "\\xff\\0");
    }

    #[test]
    fn lines_split_across_reads_and_long_ones_are_cut() {
        let now = Instant::now();
        let mut l = Lines::new(now);
        let mut out = Vec::new();
        l.feed(b"hel", now, &mut out);
        l.feed(b"lo\nwor", now, &mut out);
        assert_eq!(lines(&out), ["hello"]);
        let long = vec![b'x'; MAX_LINE + 10];
        l.feed(&long, now, &mut out);
        l.feed(b"\n", now, &mut out);
        let last = lines(&out)[1].to_string();
        assert!(last.starts_with("wor") && last.ends_with(" [line cut: 13 more bytes]"));
        assert_eq!(last.len(), MAX_LINE + " [line cut: 13 more bytes]".len());
        l.feed(b"tail", now, &mut out);
        l.finish(now, &mut out);
        assert_eq!(lines(&out)[2], "tail");
    }

    #[test]
    fn a_flood_is_rate_limited_with_one_summary() {
        let now = Instant::now();
        let mut l = Lines::new(now);
        let mut out = Vec::new();
        l.feed(&b"x\n".repeat(1000), now, &mut out);
        l.summary(now, false, &mut out);
        assert_eq!(lines(&out).len(), BURST as usize);
        assert!(!out.iter().any(|o| matches!(o, Out::Dropped(_))));
        let later = now + Duration::from_secs(1);
        l.summary(later, false, &mut out);
        assert_eq!(out.last(), Some(&Out::Dropped(800)));
        // A second later the bucket has refilled by RATE lines.
        l.feed(&b"y\n".repeat(100), later, &mut out);
        assert_eq!(lines(&out).len(), BURST as usize + RATE as usize);
    }
}
