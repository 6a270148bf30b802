//! The FastCGI record layer (FastCGI 1.0, §3): encoding what a web server sends
//! (`FCGI_BEGIN_REQUEST`, the `FCGI_PARAMS` and `FCGI_STDIN` streams, name-value pairs
//! with 1- or 4-byte lengths) and a push decoder ([`Decoder`]) for what a responder
//! sends back (`FCGI_STDOUT`, `FCGI_STDERR`, `FCGI_END_REQUEST`), fed any split of the
//! byte stream and handing out stream content as it arrives, without buffering a
//! record.
//!
//! A backend is untrusted: a version other than 1, a request id other than ours, a
//! record type a responder does not send to a web server, or an `FCGI_END_REQUEST`
//! that is not 8 bytes is a [`RecordError`], never a panic.

use thiserror::Error;

/// The only protocol version.
pub const VERSION: u8 = 1;
/// Every record starts with this many bytes.
pub const HEADER_LEN: usize = 8;
/// Most content bytes in one record.
pub const MAX_CONTENT: usize = 65_535;
/// The one request id this client uses (one request per connection).
pub const REQUEST_ID: u16 = 1;

pub const BEGIN_REQUEST: u8 = 1;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;

/// `FCGI_RESPONDER`.
pub const ROLE_RESPONDER: u16 = 1;
/// `FCGI_BEGIN_REQUEST` flag: keep the connection open after the request.
pub const KEEP_CONN: u8 = 1;

/// `protocolStatus` values of `FCGI_END_REQUEST`.
pub const REQUEST_COMPLETE: u8 = 0;

/// Why a backend's byte stream is not a valid answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record version {0}, not 1")]
    Version(u8),
    #[error("record for request id {0}, not {REQUEST_ID}")]
    RequestId(u16),
    #[error("record type {0} is not one a responder sends")]
    Type(u8),
    #[error("FCGI_END_REQUEST with {0} content bytes, not 8")]
    EndLength(u16),
    #[error("data after FCGI_END_REQUEST")]
    AfterEnd,
}

/// One record header.
fn header(kind: u8, content_len: usize, padding: u8) -> [u8; HEADER_LEN] {
    debug_assert!(content_len <= MAX_CONTENT);
    let len = (content_len as u16).to_be_bytes();
    let id = REQUEST_ID.to_be_bytes();
    [VERSION, kind, id[0], id[1], len[0], len[1], padding, 0]
}

/// `FCGI_BEGIN_REQUEST` for a responder; `keep`: `FCGI_KEEP_CONN` (the backend leaves
/// the connection open after the request, for the next one), else flags 0 (it closes
/// the connection after the request).
pub fn begin_request(keep: bool) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&header(BEGIN_REQUEST, 8, 0));
    out[8..10].copy_from_slice(&ROLE_RESPONDER.to_be_bytes());
    out[10] = u8::from(keep) * KEEP_CONN;
    out
}

/// Appends one record of `kind` holding `content` (at most [`MAX_CONTENT`] bytes),
/// unpadded (padding is optional, and php-cgi refuses content + padding over 65,535).
pub fn push_record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    out.extend_from_slice(&header(kind, content.len(), 0));
    out.extend_from_slice(content);
}

/// Appends the length of a name or value: one byte below 128, else four with the high
/// bit set. `None` for a length over 2^31 - 1.
fn push_len(out: &mut Vec<u8>, len: usize) -> Option<()> {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len = u32::try_from(len).ok().filter(|l| *l <= 0x7fff_ffff)?;
        out.extend_from_slice(&(len | 0x8000_0000).to_be_bytes());
    }
    Some(())
}

/// One name-value pair as it travels (§3.4). `None` if a part is over 2^31 - 1 bytes.
pub fn pair(name: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 8);
    push_len(&mut out, name.len())?;
    push_len(&mut out, value.len())?;
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    Some(out)
}

/// The `FCGI_PARAMS` stream for `pairs`, closed by its empty record. Pairs are packed
/// whole into records of at most [`MAX_CONTENT`] bytes (php-cgi decodes each record's
/// content on its own); only a pair longer than a record spans records, as the
/// protocol allows. Encoded in place: a record's header is reserved, its pairs
/// appended after it and its length filled in when it is closed.
pub fn params<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    // Where the open record's header is.
    let mut open = out.len();
    out.extend_from_slice(&header(PARAMS, 0, 0));
    for (name, value) in pairs {
        let Some(size) = pair_len(name.len(), value.len()) else {
            continue;
        };
        let content = out.len() - open - HEADER_LEN;
        if content + size > MAX_CONTENT && content > 0 {
            close_record(&mut out, open);
            open = out.len();
            out.extend_from_slice(&header(PARAMS, 0, 0));
        }
        if size > MAX_CONTENT {
            // Alone in records of its own (the open one is empty here).
            out.truncate(open);
            if let Some(p) = pair(name, value) {
                for piece in p.chunks(MAX_CONTENT) {
                    push_record(&mut out, PARAMS, piece);
                }
            }
            open = out.len();
            out.extend_from_slice(&header(PARAMS, 0, 0));
            continue;
        }
        let _ = push_len(&mut out, name.len());
        let _ = push_len(&mut out, value.len());
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    if out.len() - open - HEADER_LEN > 0 {
        close_record(&mut out, open);
        push_record(&mut out, PARAMS, &[]);
    }
    // Else the open record, empty, is the stream's end.
    out
}

/// Bytes of a name-value pair as it travels; `None` if a part is over 2^31 - 1.
fn pair_len(name: usize, value: usize) -> Option<usize> {
    let len = |n: usize| match n {
        0..0x80 => Some(1),
        _ if n <= 0x7fff_ffff => Some(4),
        _ => None,
    };
    Some(len(name)? + len(value)? + name + value)
}

/// Fills in the content length of the record whose header is at `at` (its content is
/// everything after it, at most [`MAX_CONTENT`] bytes).
fn close_record(out: &mut [u8], at: usize) {
    let len = out.len() - at - HEADER_LEN;
    out[at..at + HEADER_LEN].copy_from_slice(&header(PARAMS, len, 0));
}

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Content of an `FCGI_STDOUT` record (possibly part of one); never empty.
    Stdout(&'a [u8]),
    /// Content of an `FCGI_STDERR` record, possibly part of one; `end` on its last
    /// piece (an empty record gives one empty piece with `end`).
    Stderr { data: &'a [u8], end: bool },
    /// `FCGI_END_REQUEST`.
    End { app_status: u32, protocol_status: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a header: this many bytes of it so far.
    Header(usize),
    /// Inside a stream record's content.
    Content { kind: u8, left: usize, padding: u8 },
    /// Collecting `FCGI_END_REQUEST`'s 8 bytes.
    End { have: usize, padding: u8 },
    /// Skipping padding.
    Padding(usize),
    /// Skipping the padding of `FCGI_END_REQUEST`.
    EndPadding(usize),
    /// `FCGI_END_REQUEST` was decoded.
    Done,
}

/// A push decoder of a responder's records.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    head: [u8; HEADER_LEN],
    end: [u8; 8],
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            state: State::Header(0),
            head: [0; HEADER_LEN],
            end: [0; 8],
        }
    }

    /// Whether `FCGI_END_REQUEST` was decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `buf`: the bytes consumed and at most one event. Call
    /// again with the rest until it consumes nothing and gives no event.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Result<(usize, Option<Event<'a>>), RecordError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Done if rest.is_empty() => return Ok((pos, None)),
                State::Done => return Err(RecordError::AfterEnd),
                State::Header(have) => {
                    let take = (HEADER_LEN - have).min(rest.len());
                    self.head[have..have + take].copy_from_slice(&rest[..take]);
                    pos += take;
                    if have + take < HEADER_LEN {
                        self.state = State::Header(have + take);
                        return Ok((pos, None));
                    }
                    if let Some(event) = self.start_record()? {
                        return Ok((pos, Some(event)));
                    }
                }
                State::Content { kind, left, padding } => {
                    if rest.is_empty() {
                        return Ok((pos, None));
                    }
                    let take = left.min(rest.len());
                    let data = &rest[..take];
                    pos += take;
                    let left = left - take;
                    self.state = if left > 0 {
                        State::Content { kind, left, padding }
                    } else {
                        self.after_content(padding)
                    };
                    let event = if kind == STDOUT {
                        Event::Stdout(data)
                    } else {
                        Event::Stderr { data, end: left == 0 }
                    };
                    return Ok((pos, Some(event)));
                }
                State::End { have, padding } => {
                    let take = (8 - have).min(rest.len());
                    self.end[have..have + take].copy_from_slice(&rest[..take]);
                    pos += take;
                    if have + take < 8 {
                        self.state = State::End {
                            have: have + take,
                            padding,
                        };
                        return Ok((pos, None));
                    }
                    let e = self.end;
                    let app_status = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
                    // Padding after the last record is skipped before `Done`.
                    self.state = if padding > 0 {
                        State::EndPadding(padding as usize)
                    } else {
                        State::Done
                    };
                    let event = Event::End {
                        app_status,
                        protocol_status: e[4],
                    };
                    return Ok((pos, Some(event)));
                }
                State::Padding(left) | State::EndPadding(left) => {
                    let take = left.min(rest.len());
                    pos += take;
                    let end = matches!(self.state, State::EndPadding(_));
                    self.state = match (left - take, end) {
                        (0, true) => State::Done,
                        (0, false) => State::Header(0),
                        (n, true) => State::EndPadding(n),
                        (n, false) => State::Padding(n),
                    };
                    if take < left {
                        return Ok((pos, None));
                    }
                }
            }
        }
    }

    /// A complete header is in `self.head`: check it and move on.
    fn start_record(&mut self) -> Result<Option<Event<'static>>, RecordError> {
        let h = self.head;
        if h[0] != VERSION {
            return Err(RecordError::Version(h[0]));
        }
        let id = u16::from_be_bytes([h[2], h[3]]);
        if id != REQUEST_ID {
            return Err(RecordError::RequestId(id));
        }
        let len = u16::from_be_bytes([h[4], h[5]]);
        let padding = h[6];
        match h[1] {
            kind @ (STDOUT | STDERR) if len > 0 => {
                self.state = State::Content {
                    kind,
                    left: len as usize,
                    padding,
                };
                Ok(None)
            }
            kind @ (STDOUT | STDERR) => {
                // An empty record: the end of that stream.
                self.state = self.after_content(padding);
                Ok((kind == STDERR).then_some(Event::Stderr { data: &[], end: true }))
            }
            END_REQUEST if len == 8 => {
                self.state = State::End { have: 0, padding };
                Ok(None)
            }
            END_REQUEST => Err(RecordError::EndLength(len)),
            other => Err(RecordError::Type(other)),
        }
    }

    fn after_content(&self, padding: u8) -> State {
        if padding > 0 {
            State::Padding(padding as usize)
        } else {
            State::Header(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stdout, each stderr record, and the end's statuses.
    type Decoded = (Vec<u8>, Vec<Vec<u8>>, Option<(u32, u8)>);

    /// Every event of `stream` fed in pieces of `step` bytes, stream content merged.
    fn decode(stream: &[u8], step: usize) -> Result<Decoded, RecordError> {
        let mut d = Decoder::new();
        let (mut out, mut err, mut end) = (Vec::new(), vec![Vec::new()], None);
        let mut fed = 0;
        let mut buf: Vec<u8> = Vec::new();
        while fed < stream.len() || !buf.is_empty() {
            let add = step.min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + add]);
            fed += add;
            loop {
                let (used, event) = d.next(&buf)?;
                let none = event.is_none();
                match event {
                    Some(Event::Stdout(data)) => out.extend_from_slice(data),
                    Some(Event::Stderr { data, end }) => {
                        err.last_mut().unwrap().extend_from_slice(data);
                        if end {
                            err.push(Vec::new());
                        }
                    }
                    Some(Event::End {
                        app_status,
                        protocol_status,
                    }) => end = Some((app_status, protocol_status)),
                    None => {}
                }
                buf.drain(..used);
                if used == 0 && none {
                    break;
                }
            }
            if add == 0 {
                break;
            }
        }
        err.pop();
        Ok((out, err, end))
    }

    fn record(kind: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
        let mut v = vec![VERSION, kind];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&(content.len() as u16).to_be_bytes());
        v.extend_from_slice(&[padding, 0]);
        v.extend_from_slice(content);
        v.extend(std::iter::repeat_n(0xee, padding as usize));
        v
    }

    fn end_record(app: u32, padding: u8) -> Vec<u8> {
        let mut c = app.to_be_bytes().to_vec();
        c.extend_from_slice(&[REQUEST_COMPLETE, 0, 0, 0]);
        record(END_REQUEST, REQUEST_ID, &c, padding)
    }

    #[test]
    fn name_value_lengths() {
        assert_eq!(pair(b"A", b"b").unwrap(), b"\x01\x01Ab");
        let long = vec![b'v'; 127];
        assert_eq!(&pair(b"N", &long).unwrap()[..2], b"\x01\x7f");
        let long = vec![b'v'; 128];
        assert_eq!(&pair(b"N", &long).unwrap()[..5], b"\x01\x80\x00\x00\x80");
        let long = vec![b'v'; 70_000];
        let p = pair(&long, b"").unwrap();
        assert_eq!(&p[..5], &[0x80, 0x01, 0x11, 0x70, 0x00]);
        assert_eq!(p.len(), 5 + 70_000);
    }

    /// The content of each record of `stream` (all of `kind`).
    fn contents(stream: &[u8], kind: u8) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < stream.len() {
            assert_eq!(stream[i + 1], kind);
            let len = u16::from_be_bytes([stream[i + 4], stream[i + 5]]) as usize;
            let pad = stream[i + 6] as usize;
            out.push(stream[i + 8..i + 8 + len].to_vec());
            i += 8 + len + pad;
        }
        out
    }

    #[test]
    fn params_split_on_pair_boundaries() {
        let value = vec![b'x'; 40_000];
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"A", &value), (b"B", &value), (b"C", b"c")];
        let recs = contents(&params(pairs), PARAMS);
        assert_eq!(recs.len(), 3, "two records and the empty one");
        assert!(recs.iter().all(|r| r.len() <= MAX_CONTENT));
        assert_eq!(recs[0], pair(b"A", &value).unwrap());
        let mut second = pair(b"B", &value).unwrap();
        second.extend_from_slice(&pair(b"C", b"c").unwrap());
        assert_eq!(recs[1], second);
        assert!(recs[2].is_empty());
        // A pair longer than a record spans records of 65,535 bytes.
        let huge = vec![b'y'; 100_000];
        let recs = contents(&params([(&b"H"[..], &huge[..])]), PARAMS);
        assert_eq!(
            recs.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![65_535, 100_006 - 65_535, 0]
        );
        assert_eq!(recs.concat(), pair(b"H", &huge).unwrap());
    }

    #[test]
    fn stdin_records_and_begin() {
        let b = begin_request(false);
        assert_eq!(b, [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(begin_request(true)[10], KEEP_CONN);
        let mut out = Vec::new();
        push_record(&mut out, STDIN, &[7u8; 10]);
        assert_eq!(&out[..8], &[1, STDIN, 0, 1, 0, 10, 0, 0]);
    }

    #[test]
    fn decoding_at_every_split() {
        let mut stream = record(STDOUT, REQUEST_ID, b"Content-Type: text/plain\r\n\r\n", 3);
        stream.extend(record(STDERR, REQUEST_ID, b"warning one", 0));
        stream.extend(record(STDOUT, REQUEST_ID, &[], 0));
        stream.extend(record(STDOUT, REQUEST_ID, b"hello", 7));
        stream.extend(record(STDERR, REQUEST_ID, b"two", 1));
        stream.extend(record(STDERR, REQUEST_ID, &[], 0));
        stream.extend(end_record(3, 2));
        for step in 1..=stream.len() {
            let (out, err, end) = decode(&stream, step).unwrap();
            assert_eq!(out, b"Content-Type: text/plain\r\n\r\nhello", "step {step}");
            assert_eq!(err, vec![b"warning one".to_vec(), b"two".to_vec(), Vec::new()]);
            assert_eq!(end, Some((3, REQUEST_COMPLETE)));
        }
    }

    #[test]
    fn a_full_record_of_stdout() {
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut stream = Vec::new();
        for piece in big.chunks(MAX_CONTENT) {
            push_record(&mut stream, STDOUT, piece);
        }
        stream.extend(end_record(0, 0));
        let (out, _, end) = decode(&stream, 4096).unwrap();
        assert_eq!((out, end), (big, Some((0, 0))));
    }

    #[test]
    fn broken_streams() {
        let mut bad_version = record(STDOUT, REQUEST_ID, b"x", 0);
        bad_version[0] = 2;
        assert_eq!(decode(&bad_version, 3), Err(RecordError::Version(2)));
        assert_eq!(
            decode(&record(STDOUT, 2, b"x", 0), 1),
            Err(RecordError::RequestId(2))
        );
        assert_eq!(
            decode(&record(STDOUT, 0, b"", 0), 8),
            Err(RecordError::RequestId(0))
        );
        for kind in [0, BEGIN_REQUEST, 2, PARAMS, STDIN, 8, 9, 10, 11, 200] {
            assert_eq!(
                decode(&record(kind, REQUEST_ID, b"", 0), 8),
                Err(RecordError::Type(kind))
            );
        }
        assert_eq!(
            decode(&record(END_REQUEST, REQUEST_ID, b"1234", 0), 100),
            Err(RecordError::EndLength(4))
        );
        let mut after = end_record(0, 0);
        after.extend(record(STDOUT, REQUEST_ID, b"late", 0));
        assert_eq!(decode(&after, 100), Err(RecordError::AfterEnd));
        // A stream cut short decodes what came, without an end.
        let cut = record(STDOUT, REQUEST_ID, b"abcdef", 0);
        let (out, _, end) = decode(&cut[..11], 2).unwrap();
        assert_eq!((out, end), (b"abc".to_vec(), None));
    }
}
