//! A script's output: its CGI header block (RFC 3875 §6) read within [`MAX_HEAD`] bytes
//! and the deadline, and then its body as a stream ([`Output`]) the protocol frames.
//! The output comes from a CGI script's stdout or a FastCGI backend's `FCGI_STDOUT`
//! ([`Source`]); both get the same header rules.
//!
//! - `Status: NNN reason` sets the status (100–199 are refused: 502).
//! - `Location: /local?q` without a `Status` is a local redirect (§6.2.2): served as a
//!   new GET by the connection, the script's body ignored. An absolute URL is a client
//!   redirect: 302 unless `Status` says otherwise.
//! - Other fields pass through, except hop-by-hop ones and the framing we own
//!   (`Connection`, `Keep-Alive`, `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`,
//!   `Proxy-Connection`, `Content-Length`, `Date`, `Server`).
//! - A FastCGI backend's `Content-Length` frames the body (at most that many bytes are
//!   sent; fewer is a failure that closes the connection); a CGI script's is dropped
//!   and its body chunked or delimited by the close, as before.
//! - A block that is not `name: value` lines (LF or CRLF) ending in an empty line, that
//!   has none of `Content-Type`, `Location`, `Status`, or that is over [`MAX_HEAD`] is
//!   malformed: 502.

use thiserror::Error;
use tokio::io::AsyncReadExt;

use super::spawn::Running;
use crate::handler::fastcgi::{Backend, FcgiError};
use crate::session::FastcgiFailure;
use common::head::is_tchar;

/// The longest header block read from a script.
pub const MAX_HEAD: usize = 16 * 1024;

/// Bytes read from a script's stdout at a time.
const READ: usize = 16 * 1024;

/// Why a script's output cannot become (or finish) a response.
#[derive(Debug, Error)]
pub enum OutputError {
    #[error("{0} ended before its header block was complete")]
    Early(&'static str),
    #[error("malformed CGI header block: {0}")]
    Malformed(String),
    #[error("CGI header block longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("CGI script ran past its cgi_timeout")]
    Timeout,
    #[error("reading the CGI script's output: {0}")]
    Io(std::io::Error),
    #[error("body ended after {got} of its Content-Length {length} bytes")]
    Short { length: u64, got: u64 },
    #[error("FastCGI backend: {0}")]
    Fastcgi(#[from] FcgiError),
}

impl OutputError {
    /// 504 for a timeout, else 502.
    pub fn status(&self) -> u16 {
        match self {
            Self::Timeout => 504,
            Self::Fastcgi(e) => e.status(),
            _ => 502,
        }
    }
}

/// A parsed header block.
#[derive(Debug, PartialEq, Eq)]
pub enum CgiHead {
    /// A local redirect: the path (and query) to serve instead.
    LocalRedirect(String),
    Response {
        status: u16,
        fields: Vec<(String, String)>,
    },
}

/// Dropped from a script's header block.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "content-length",
    "date",
    "server",
];

/// The end of the header block in `buf` (the index after its empty line).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let line = &buf[i..i + nl];
        i += nl + 1;
        if line.is_empty() || line == b"\r" {
            return Some(i);
        }
    }
    None
}

/// Parses a complete header block (its empty line included).
pub fn parse(block: &[u8]) -> Result<CgiHead, OutputError> {
    let bad = |why: &str| OutputError::Malformed(why.to_string());
    let mut status: Option<u16> = None;
    let mut location: Option<String> = None;
    let mut content_type = false;
    let mut fields = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad("a line without ':'"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(bad("an invalid field name"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(bad("a control character in a field value"));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).trim().to_string();
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "status" => {
                let code = value.get(..3).and_then(|c| c.parse::<u16>().ok());
                let rest_ok = value.len() == 3 || value.as_bytes().get(3) == Some(&b' ');
                match code {
                    Some(c) if (200..=599).contains(&c) && rest_ok && status.is_none() => status = Some(c),
                    _ => return Err(bad("an invalid Status")),
                }
            }
            "location" => {
                if location.is_some() || value.is_empty() {
                    return Err(bad("an invalid Location"));
                }
                location = Some(value);
            }
            _ if DROPPED.contains(&lower.as_str()) => {}
            _ => {
                content_type |= lower == "content-type";
                fields.push((name, value));
            }
        }
    }
    if status.is_none() && location.is_none() && !content_type {
        return Err(bad("none of Content-Type, Location or Status"));
    }
    if let Some(loc) = location {
        if loc.starts_with('/') && !loc.starts_with("//") && status.is_none() {
            return Ok(CgiHead::LocalRedirect(loc));
        }
        fields.push(("Location".to_string(), loc));
        return Ok(CgiHead::Response {
            status: status.unwrap_or(302),
            fields,
        });
    }
    Ok(CgiHead::Response {
        status: status.unwrap_or(200),
        fields,
    })
}

/// Where a script's output comes from.
#[derive(Debug)]
pub enum Source {
    /// A CGI script's stdout, within its deadline.
    Script(Running),
    /// A FastCGI backend's `FCGI_STDOUT`.
    Fastcgi(Backend),
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Self::Script(_) => "CGI script",
            Self::Fastcgi(_) => "FastCGI backend",
        }
    }

    /// The next bytes (at most `dest`'s room); `Ok(0)` at the end (a script reaped, a
    /// backend's `FCGI_END_REQUEST`). Past a script's deadline its group is killed and
    /// this is an error.
    async fn read(&mut self, dest: Dest<'_>) -> Result<usize, OutputError> {
        let running = match self {
            Self::Fastcgi(backend) => {
                return Ok(match dest {
                    Dest::Slice(buf) => backend.read(buf).await?,
                    Dest::Vec(out, max) => backend.read_into(out, max).await?,
                })
            }
            Self::Script(running) => running,
        };
        let deadline = running.deadline;
        let read = async {
            match dest {
                Dest::Slice(buf) => running.stdout.read(buf).await,
                Dest::Vec(out, max) => {
                    out.reserve(max);
                    (&mut running.stdout).take(max as u64).read_buf(out).await
                }
            }
        };
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => {
                running.expire().await;
                Err(OutputError::Timeout)
            }
            Ok(Ok(0)) => {
                running.finish().await;
                Ok(0)
            }
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(OutputError::Io(e)),
        }
    }
}

/// Where read bytes go: a slice, or appended to a vector (at most this many, never
/// zeroed first).
enum Dest<'a> {
    Slice(&'a mut [u8]),
    Vec(&'a mut Vec<u8>, usize),
}

impl Dest<'_> {
    fn room(&self) -> usize {
        match self {
            Self::Slice(b) => b.len(),
            Self::Vec(_, max) => *max,
        }
    }

    /// At most `room` bytes.
    fn limit(self, room: usize) -> Self {
        match self {
            Self::Slice(b) => {
                let n = room.min(b.len());
                Self::Slice(&mut b[..n])
            }
            Self::Vec(v, max) => Self::Vec(v, room.min(max)),
        }
    }

    fn put(self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        match self {
            Self::Slice(b) => b[..n].copy_from_slice(&data[..n]),
            Self::Vec(v, _) => v.extend_from_slice(&data[..n]),
        }
        n
    }
}

/// The `Content-Length` of a complete header block: `None` without one; two that
/// differ, or one that is not digits, are malformed.
fn content_length(block: &[u8]) -> Result<Option<u64>, OutputError> {
    let mut found: Option<u64> = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        let n = std::str::from_utf8(value)
            .ok()
            .filter(|v| !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| OutputError::Malformed("an invalid Content-Length".into()))?;
        if found.is_some_and(|f| f != n) {
            return Err(OutputError::Malformed("two different Content-Length".into()));
        }
        found = Some(n);
    }
    Ok(found)
}

/// A script's output after its header block: what the protocol writes as the body.
#[derive(Debug)]
pub struct Output {
    source: Source,
    /// A FastCGI backend's `Content-Length`: the body bytes still to come. Set to
    /// `None` by the protocol when it does not frame the body with it.
    pub length: Option<u64>,
    /// Body bytes handed out, checked against `length`.
    given: u64,
    /// Body bytes read with the header block: `head_buf[pending..]`.
    head_buf: Vec<u8>,
    pending: usize,
    /// The script's header fields, written by the protocol with its own.
    pub fields: Vec<(String, String)>,
    /// Set by the protocol: frame the body with chunked transfer coding (HTTP/1.1);
    /// otherwise it is delimited by closing the connection.
    pub chunked: bool,
}

/// What a script's header block asks for.
#[derive(Debug)]
pub enum Answer {
    /// Serve this path (and query) instead, as a GET.
    LocalRedirect(String),
    /// This status, then the script's body.
    Response { status: u16, output: Box<Output> },
}

/// Reads the header block of `source` within its bounds.
pub async fn read_head(mut source: Source) -> Result<Answer, OutputError> {
    // Read into its spare capacity: never zeroed first.
    let mut buf = Vec::with_capacity(READ);
    loop {
        if let Some(end) = head_end(&buf) {
            return Ok(match parse(&buf[..end])? {
                CgiHead::LocalRedirect(path) => Answer::LocalRedirect(path),
                CgiHead::Response { status, fields } => {
                    let length = match source {
                        Source::Fastcgi(_) => content_length(&buf[..end])?,
                        Source::Script(_) => None,
                    };
                    let output = Output {
                        source,
                        length,
                        given: 0,
                        head_buf: buf,
                        pending: end,
                        fields,
                        chunked: false,
                    };
                    Answer::Response {
                        status,
                        output: Box::new(output),
                    }
                }
            });
        }
        if buf.len() >= MAX_HEAD {
            return Err(OutputError::TooLong);
        }
        let room = MAX_HEAD.min(buf.len() + READ) - buf.len();
        if source.read(Dest::Vec(&mut buf, room)).await? == 0 {
            return Err(OutputError::Early(source.name()));
        }
    }
}

impl Output {
    /// The next body bytes into `buf`; `Ok(0)` at the end (the script reaped). Past the
    /// deadline the group is killed and this is an error.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, OutputError> {
        self.read_dest(Dest::Slice(buf)).await
    }

    /// As [`Self::read`], appending at most `max` bytes to `out` (no copy through a
    /// buffer of the caller's, none of it zeroed).
    pub async fn read_into(&mut self, out: &mut Vec<u8>, max: usize) -> Result<usize, OutputError> {
        self.read_dest(Dest::Vec(out, max)).await
    }

    async fn read_dest(&mut self, dest: Dest<'_>) -> Result<usize, OutputError> {
        let read = self.read_framed(dest).await;
        if let (Err(e), Source::Fastcgi(backend)) = (&read, &self.source) {
            // The answer has begun: the connection is closed without its end.
            backend
                .failure
                .set(backend.failure.get().or(Some(FastcgiFailure::BadGateway)));
            let conf = backend.conf();
            tracing::warn!(environment = %conf.environment, program = %conf.program, "FastCGI answer cut short: {e}");
        }
        read
    }

    /// At most `length` bytes when it is set; what a backend sends past them is never
    /// read, and an end before them is an error.
    async fn read_framed(&mut self, dest: Dest<'_>) -> Result<usize, OutputError> {
        let Some(length) = self.length else {
            return self.read_any(dest).await;
        };
        let left = length.saturating_sub(self.given);
        if left == 0 {
            return Ok(0);
        }
        let room = usize::try_from(left).unwrap_or(usize::MAX);
        match self.read_any(dest.limit(room)).await? {
            0 => Err(OutputError::Short {
                length,
                got: self.given,
            }),
            n => {
                self.given += n as u64;
                Ok(n)
            }
        }
    }

    /// Whether the body is known to be over without waiting (a FastCGI answer whose
    /// end is already buffered, or a length fully given); `false` when unsure. The
    /// next [`Self::read`] still says so (and reports any error).
    pub fn finished(&mut self) -> bool {
        if self.pending < self.head_buf.len() {
            return false;
        }
        if self.length.is_some_and(|l| self.given >= l) {
            return true;
        }
        match &mut self.source {
            Source::Fastcgi(backend) => self.length.is_none() && backend.drained(),
            Source::Script(_) => false,
        }
    }

    async fn read_any(&mut self, dest: Dest<'_>) -> Result<usize, OutputError> {
        if dest.room() == 0 {
            return Ok(0);
        }
        if self.pending < self.head_buf.len() {
            let n = dest.put(&self.head_buf[self.pending..]);
            self.pending += n;
            if self.pending == self.head_buf.len() {
                // Handed out: its memory goes now, not with the answer.
                self.head_buf = Vec::new();
                self.pending = 0;
            }
            return Ok(n);
        }
        self.source.read(dest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(block: &str) -> (u16, Vec<(String, String)>) {
        match parse(block.as_bytes()) {
            Ok(CgiHead::Response { status, fields }) => (status, fields),
            other => panic!("{block:?}: {other:?}"),
        }
    }

    #[test]
    fn header_blocks() {
        let (s, f) = response("Content-Type: text/plain\nX-A: b\nConnection: x\n\n");
        assert_eq!(s, 200);
        assert_eq!(
            f,
            vec![
                ("Content-Type".into(), "text/plain".into()),
                ("X-A".into(), "b".into())
            ]
        );
        assert_eq!(response("Status: 404 Not Found\r\n\r\n").0, 404);
        assert_eq!(
            response("Location: http://x/\n\n"),
            (302, vec![("Location".into(), "http://x/".into())])
        );
        assert_eq!(response("Status: 301\nLocation: /y\n\n").0, 301);
        assert_eq!(
            parse(b"Location: /x?q\n\n").unwrap(),
            CgiHead::LocalRedirect("/x?q".into())
        );
        for bad in [
            "hello\n\n",
            "X-A: b\n\n",
            "Status: 99\n\n",
            "Status: 100\n\n",
            "Status: abc\n\n",
            ": x\n\n",
            "A\x01: b\n\n",
            "Content-Type: a\x01b\n\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(
            content_length(b"Content-Type: a\ncontent-length:  12 \n\n").unwrap(),
            Some(12)
        );
        assert_eq!(
            content_length(b"Content-Length: 1\r\nContent-Length: 1\r\n\r\n").unwrap(),
            Some(1)
        );
        assert_eq!(content_length(b"X: 1\n\n").unwrap(), None);
        for bad in [
            "Content-Length: 1\nContent-Length: 2\n\n",
            "Content-Length: -1\n\n",
            "Content-Length: 1 2\n\n",
            "Content-Length:\n\n",
            "Content-Length: 99999999999999999999\n\n",
        ] {
            assert!(content_length(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(head_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(head_end(b"A: b\n"), None);
    }
}
