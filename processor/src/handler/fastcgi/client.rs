//! One request to a FastCGI backend: connect to the backends' socket (bounded by
//! `fastcgi_timeout`), send `FCGI_BEGIN_REQUEST`, the params and the spooled body as
//! `FCGI_STDIN` while reading the answer, and hand out `FCGI_STDOUT` content as it
//! arrives ([`Backend::read`]). The request is written only while the answer is being
//! read, in the same `select!`, so a backend that answers before it has read its body
//! never deadlocks against us; one that stops reading its body stops only our writes.
//!
//! Bounds: 16 KiB of records read at a time, at most one record of body (64 KiB)
//! written at a time, the next read only when the previous bytes were taken (so a slow
//! client slows the backend instead of filling our memory), and `fastcgi_timeout`
//! between any two steps of progress (a byte read from the backend, or a write it
//! took): past it, 504 (or the connection closed, once the answer has begun). Each
//! `FCGI_STDERR` record is one log line of at most [`MAX_STDERR_LINE`] bytes.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::{sleep_until, Instant};

use super::record::{self, Decoder, Event, RecordError};
use super::FastcgiConf;
use crate::session::FastcgiFailure;

/// Bytes read from the backend at a time.
const READ: usize = 16 * 1024;

/// Longest `FCGI_STDERR` record logged whole; the rest of it is counted, not logged.
pub const MAX_STDERR_LINE: usize = 2048;

/// Why a backend gave no (complete) answer.
#[derive(Debug, Error)]
pub enum FcgiError {
    #[error("connecting to {socket}: {error}")]
    Connect { socket: String, error: io::Error },
    #[error("nothing from the backend for fastcgi_timeout ({0:?})")]
    Timeout(std::time::Duration),
    #[error("the backend closed the connection before FCGI_END_REQUEST")]
    Closed,
    #[error("the backend refused the request (FCGI_END_REQUEST protocol status {0})")]
    Refused(u8),
    #[error("broken FastCGI answer: {0}")]
    Record(#[from] RecordError),
    #[error("reading from the backend: {0}")]
    Io(io::Error),
}

impl FcgiError {
    /// 504 for a timeout, else 502.
    pub fn status(&self) -> u16 {
        match self {
            Self::Timeout(_) => 504,
            _ => 502,
        }
    }

    pub fn failure(&self) -> FastcgiFailure {
        match self {
            Self::Timeout(_) => FastcgiFailure::Timeout,
            _ => FastcgiFailure::BadGateway,
        }
    }
}

/// The request's bytes still to be written.
#[derive(Debug)]
struct Sender {
    /// `None` only while dropping (see the `Drop` of [`Sender`]).
    wr: Option<OwnedWriteHalf>,
    out: Vec<u8>,
    pos: usize,
    /// The rest of the spooled body (`None` once its empty record is queued).
    stdin: Option<File>,
    /// Everything written, or the backend stopped taking it.
    done: bool,
    /// Room for one record's content of body, allocated on first use.
    content: Vec<u8>,
}

impl Sender {
    /// One write of what is queued (refilled from the body file first). Cancel-safe:
    /// a write that did not complete wrote nothing.
    async fn step(&mut self) {
        if self.pos == self.out.len() {
            // Without a body the queue stays whole: a retry on a new connection
            // ([`Backend::redial`]) sends it again.
            if self.stdin.is_some() {
                self.out.clear();
                self.pos = 0;
            }
            match self.stdin.as_mut() {
                Some(file) => {
                    let content = &mut self.content;
                    content.resize(record::MAX_CONTENT, 0);
                    // A blocking read of a local file, like the spool's writes.
                    match file.read(content) {
                        Ok(0) => {
                            record::push_record(&mut self.out, record::STDIN, &[]);
                            self.stdin = None;
                        }
                        Ok(n) => record::push_record(&mut self.out, record::STDIN, &content[..n]),
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the spooled request body");
                            self.done = true;
                            return;
                        }
                    }
                }
                None => {
                    self.done = true;
                    return;
                }
            }
        }
        let Some(wr) = self.wr.as_mut() else {
            self.done = true;
            return;
        };
        match wr.write(&self.out[self.pos..]).await {
            Ok(n) if n > 0 => self.pos += n,
            // The backend stopped reading (it answered, or it died): what it says, or
            // its close, decides the response.
            _ => self.done = true,
        }
    }
}

/// A new connection to the backends of `conf`.
fn dial(conf: &FastcgiConf) -> Result<UnixStream, FcgiError> {
    connect_now(&conf.socket).map_err(|error| FcgiError::Connect {
        socket: conf.socket.display().to_string(),
        error,
    })
}

/// Connects to a Unix socket without waiting: a Unix stream connect completes at once
/// (or fails: no socket, refused, `EAGAIN` when the backlog is full), so there is no
/// connect to wait for and no `SO_ERROR` to ask afterwards.
fn connect_now(path: &std::path::Path) -> io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
}

impl Drop for Sender {
    /// The connection is closed whole when the read half goes; no `shutdown(SHUT_WR)`
    /// first (what tokio's write half does when dropped): a syscall per request that
    /// tells the backend nothing it will not learn from the close.
    fn drop(&mut self) {
        if let Some(wr) = self.wr.take() {
            wr.forget();
        }
    }
}

/// A request in progress with a backend.
#[derive(Debug)]
pub struct Backend {
    conf: Arc<FastcgiConf>,
    /// `None` once `FCGI_END_REQUEST` is decoded: see [`Self::hang_up`].
    rd: Option<OwnedReadHalf>,
    sender: Sender,
    rbuf: Vec<u8>,
    /// Undecoded bytes in `rbuf`.
    unread: Range<usize>,
    /// `FCGI_STDOUT` content decoded and not yet handed out, in `rbuf`.
    pending: Range<usize>,
    decoder: Decoder,
    stderr: Vec<u8>,
    stderr_cut: usize,
    /// Set on the first failure, for the processor's counters.
    pub failure: Rc<Cell<Option<FastcgiFailure>>>,
    /// Asked with `FCGI_KEEP_CONN`: the connection may go back to the pool.
    keep: bool,
    /// The connection came from the pool, and no byte of this answer arrived yet.
    reused: bool,
    /// Requests the connection carried before this one.
    uses: u32,
    /// Its connection slot, counted with the backends until the answer ends.
    in_flight: Option<super::pool::InFlight>,
}

impl Backend {
    /// Connects (or, with `keep`, takes a kept connection: [`super::pool`]) and queues
    /// the request: `params` (the whole `FCGI_PARAMS` stream) and the body (`None`: an
    /// empty `FCGI_STDIN`; `keep` only without one). Nothing is written until the first
    /// [`Self::read`].
    pub async fn connect(
        conf: Arc<FastcgiConf>,
        params: Vec<u8>,
        stdin: Option<File>,
        failure: Rc<Cell<Option<FastcgiFailure>>>,
        keep: bool,
    ) -> Result<Self, FcgiError> {
        // A connection slot first (a wait for one is part of what `fastcgi_timeout`
        // bounds; a free one arms no timer).
        let in_flight = match conf.pool.try_begin() {
            Some(f) => f,
            None => match tokio::time::timeout(conf.timeout, conf.pool.begin()).await {
                Ok(Some(f)) => f,
                Ok(None) => return Err(FcgiError::Closed),
                Err(_) => return Err(FcgiError::Timeout(conf.timeout)),
            },
        };
        // Kept connections only when the pool keeps them now (one lock for both).
        let kept = if keep && stdin.is_none() {
            conf.pool.keeping()
        } else {
            None
        };
        let keep = kept.is_some();
        let (stream, uses, reused) = match kept.flatten() {
            Some((stream, uses)) => (stream, uses, true),
            None => (dial(&conf)?, 0, false),
        };
        let (rd, wr) = stream.into_split();
        let mut out = Vec::with_capacity(16 + params.len() + 8);
        out.extend_from_slice(&record::begin_request(keep));
        out.extend_from_slice(&params);
        if stdin.is_none() {
            record::push_record(&mut out, record::STDIN, &[]);
        }
        Ok(Self {
            conf,
            rd: Some(rd),
            sender: Sender {
                wr: Some(wr),
                out,
                pos: 0,
                stdin,
                done: false,
                content: Vec::new(),
            },
            // Read into its spare capacity (`read_buf`): never zeroed first.
            rbuf: Vec::with_capacity(READ),
            unread: 0..0,
            pending: 0..0,
            decoder: Decoder::new(),
            stderr: Vec::new(),
            stderr_cut: 0,
            failure,
            keep,
            reused,
            uses,
            in_flight: Some(in_flight),
        })
    }

    /// The same request again on a new connection, after a kept one gave nothing: the
    /// backend closed it (its `max_requests`, or it died) before it read the request,
    /// or it never got to answer it; either way, a request without a body and with a
    /// safe method ([`FastcgiConf::may_keep`]) may be sent once more.
    fn redial(&mut self) -> Result<(), FcgiError> {
        let (rd, wr) = dial(&self.conf)?.into_split();
        self.rd = Some(rd);
        if let Some(old) = self.sender.wr.replace(wr) {
            old.forget();
        }
        self.sender.pos = 0;
        self.sender.done = false;
        self.reused = false;
        self.uses = 0;
        self.rbuf.clear();
        Ok(())
    }

    /// The backends this request went to.
    pub fn conf(&self) -> &FastcgiConf {
        &self.conf
    }

    /// The next `FCGI_STDOUT` bytes into `buf`; `Ok(0)` after `FCGI_END_REQUEST`.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, FcgiError> {
        let range = self.next_stdout(buf.len()).await?;
        let n = range.len();
        buf[..n].copy_from_slice(&self.rbuf[range]);
        Ok(n)
    }

    /// As [`Self::read`], appending at most `max` bytes to `out`.
    pub async fn read_into(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize, FcgiError> {
        let range = self.next_stdout(max).await?;
        out.extend_from_slice(&self.rbuf[range.clone()]);
        Ok(range.len())
    }

    /// Where the next at most `max` `FCGI_STDOUT` bytes are in `rbuf` (handed out);
    /// empty after `FCGI_END_REQUEST`. A failure is counted.
    async fn next_stdout(&mut self, max: usize) -> Result<Range<usize>, FcgiError> {
        let r = self.next_inner(max).await;
        if let Err(e) = &r {
            if self.failure.get().is_none() {
                self.failure.set(Some(e.failure()));
            }
        }
        r
    }

    /// Whether the answer is over without another read: what is buffered decodes to
    /// `FCGI_END_REQUEST` (complete) with no `FCGI_STDOUT` content left. No I/O; a
    /// record that does not decode, or a refusal, says no and is left for
    /// [`Self::read`] to report. Lets the last chunk go out with the last bytes.
    pub fn drained(&mut self) -> bool {
        loop {
            if !self.pending.is_empty() {
                return false;
            }
            if self.decoder.is_done() {
                self.hang_up();
                return true;
            }
            if self.unread.is_empty() {
                return false;
            }
            let Ok((used, event)) = self.decoder.next(&self.rbuf[self.unread.clone()]) else {
                return false;
            };
            match event {
                Some(Event::End { protocol_status, .. }) if protocol_status != record::REQUEST_COMPLETE => {
                    return false;
                }
                None if used == 0 => return false,
                _ => {}
            }
            let end = self.unread.start + used;
            self.unread.start = end;
            match event {
                Some(Event::Stdout(data)) => self.pending = end - data.len()..end,
                Some(Event::Stderr { data, end }) => {
                    stderr(&self.conf, &mut self.stderr, &mut self.stderr_cut, data, end)
                }
                _ => {}
            }
        }
    }

    async fn next_inner(&mut self, max: usize) -> Result<Range<usize>, FcgiError> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(max);
                let start = self.pending.start;
                self.pending.start += n;
                return Ok(start..start + n);
            }
            if self.decoder.is_done() {
                self.hang_up();
                return Ok(0..0);
            }
            if !self.unread.is_empty() {
                let (used, event) = self.decoder.next(&self.rbuf[self.unread.clone()])?;
                let end = self.unread.start + used;
                self.unread.start = end;
                match event {
                    Some(Event::Stdout(data)) => self.pending = end - data.len()..end,
                    Some(Event::Stderr { data, end }) => {
                        stderr(&self.conf, &mut self.stderr, &mut self.stderr_cut, data, end)
                    }
                    Some(Event::End { protocol_status, .. })
                        if protocol_status != record::REQUEST_COMPLETE =>
                    {
                        return Err(FcgiError::Refused(protocol_status));
                    }
                    Some(Event::End { .. }) => self.hang_up(),
                    None if used == 0 => self.unread = 0..0,
                    None => {}
                }
                continue;
            }
            self.fill().await?;
        }
    }

    /// Lets the connection go once the answer is complete, before its bytes are written
    /// to the client: back to the pool when it was kept, another request is with the
    /// backends, it ended cleanly (the whole request written, nothing after
    /// `FCGI_END_REQUEST`) and it may carry more, else
    /// closed (php-cgi and php-fpm read until EOF after their `FCGI_END_REQUEST`): the
    /// backend is free for the next request now, not after a slow client.
    fn hang_up(&mut self) {
        let rd = self.rd.take();
        let wr = self.sender.wr.take();
        let sent = self.sender.pos == self.sender.out.len() && self.sender.stdin.is_none();
        self.sender.done = true;
        let uses = self.uses.saturating_add(1);
        let busy = self.in_flight.take().is_some_and(|f| f.may_keep());
        let clean = self.keep && busy && sent && self.unread.is_empty();
        match (rd, wr) {
            (Some(rd), Some(wr)) if clean && uses < self.conf.requests_per_connection => {
                if let Ok(stream) = rd.reunite(wr) {
                    self.conf.pool.put(stream, uses);
                }
            }
            (_, Some(wr)) => wr.forget(),
            _ => {}
        }
    }

    /// Reads more records into the empty buffer, writing the request meanwhile.
    async fn fill(&mut self) -> Result<(), FcgiError> {
        enum Got {
            Read(io::Result<usize>),
            Wrote,
            Timeout,
        }
        let timeout = self.conf.timeout;
        let mut deadline = Instant::now() + timeout;
        // Empty: everything decoded and handed out (the callers' condition).
        self.rbuf.clear();
        loop {
            let Some(rd) = self.rd.as_mut() else {
                return Err(FcgiError::Closed);
            };
            let writing = !self.sender.done;
            let got = tokio::select! {
                // Cancel-safe: a read that did not complete appended nothing.
                r = rd.read_buf(&mut self.rbuf) => Got::Read(r),
                () = self.sender.step(), if writing => Got::Wrote,
                () = sleep_until(deadline) => Got::Timeout,
            };
            match got {
                Got::Read(Ok(n)) if n > 0 => {
                    self.reused = false;
                    self.unread = 0..n;
                    return Ok(());
                }
                Got::Read(_) if self.reused => {
                    self.redial()?;
                    deadline = Instant::now() + timeout;
                }
                Got::Read(Ok(_)) => return Err(FcgiError::Closed),
                Got::Read(Err(e)) => return Err(FcgiError::Io(e)),
                Got::Wrote => deadline = Instant::now() + timeout,
                Got::Timeout => return Err(FcgiError::Timeout(timeout)),
            }
        }
    }
}

/// Collects one `FCGI_STDERR` record and logs it as one line when it ends.
fn stderr(conf: &FastcgiConf, line: &mut Vec<u8>, cut: &mut usize, data: &[u8], end: bool) {
    if let Some(text) = stderr_line(line, cut, data, end) {
        tracing::warn!(environment = %conf.environment, program = %conf.program, "FastCGI stderr: {text}");
    }
}

/// The line of a record whose last piece `data` is (`end`), else `None` while it is
/// collected: at most [`MAX_STDERR_LINE`] bytes kept (the rest counted), the final
/// newline dropped and newlines inside escaped (the supervisor escapes the rest of
/// what reaches the environment's log). An empty record gives no line.
fn stderr_line(line: &mut Vec<u8>, cut: &mut usize, data: &[u8], end: bool) -> Option<String> {
    let room = MAX_STDERR_LINE.saturating_sub(line.len());
    line.extend_from_slice(&data[..room.min(data.len())]);
    *cut += data.len().saturating_sub(room);
    if !end {
        return None;
    }
    let text = String::from_utf8_lossy(line);
    let mut text = text.trim_end_matches(['\n', '\r']).replace('\n', "\\n");
    if *cut > 0 {
        text.push_str(&format!(" [line cut: {cut} more bytes]"));
    }
    line.clear();
    *cut = 0;
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_bounded() {
        let (mut line, mut cut) = (Vec::new(), 0);
        assert_eq!(stderr_line(&mut line, &mut cut, b"PHP Warning: ", false), None);
        let got = stderr_line(&mut line, &mut cut, b"a\nb\n", true);
        assert_eq!(got.as_deref(), Some("PHP Warning: a\\nb"));
        assert_eq!(stderr_line(&mut line, &mut cut, b"", true), None);
        let big = vec![b'x'; MAX_STDERR_LINE + 10];
        let got = stderr_line(&mut line, &mut cut, &big, false);
        assert_eq!(got, None);
        let got = stderr_line(&mut line, &mut cut, b"yyyyy", true).unwrap();
        assert!(got.ends_with("x [line cut: 15 more bytes]"), "{got}");
        assert_eq!(got.len(), MAX_STDERR_LINE + " [line cut: 15 more bytes]".len());
        assert!(line.is_empty() && cut == 0);
    }
}
