//! Decoding a request body (RFC 9112 §6, §7.1): a push decoder fed from the
//! connection's read buffer, so that no body byte is ever parsed as a request head and
//! no line or trailer section is buffered beyond its limit. It discards the data
//! ([`Discard::feed`]) or hands it out ([`Discard::feed_into`], for a CGI script).

use thiserror::Error;

use super::request::{is_tchar, Framing};

/// Total body bytes we are willing to read and throw away; past this the connection
/// is closed after the response instead.
pub const MAX_DISCARD: u64 = 1 << 30;

/// Longest chunk-size line (extensions included) we buffer.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a body cannot be framed; answered with 400 and close (except `TooLarge`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("malformed chunk size")]
    BadChunkSize,
    #[error("malformed chunk extension")]
    BadChunkExtension,
    #[error("chunk line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("malformed trailer section")]
    BadTrailer,
    #[error("trailer section larger than {0} bytes")]
    TrailerTooLarge(usize),
    #[error("body larger than {MAX_DISCARD} bytes")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content-Length body, or the data of the current chunk.
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Done,
}

/// Consumes one body from successive buffer contents.
#[derive(Debug)]
pub struct Discard {
    state: State,
    line_limit: usize,
    trailer_limit: usize,
    total: u64,
}

impl Discard {
    /// `head_limit` bounds the trailer section (and chunk lines, if smaller).
    pub fn new(framing: Framing, head_limit: usize) -> Result<Self, BodyError> {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) if n > MAX_DISCARD => return Err(BodyError::TooLarge),
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
        };
        Ok(Self {
            state,
            line_limit: MAX_CHUNK_LINE.min(head_limit.max(64)),
            trailer_limit: head_limit,
            total: 0,
        })
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes of a chunked body so far (chunk sizes as declared); 0 for a
    /// Content-Length body, whose length is known before it is read.
    pub fn received(&self) -> u64 {
        self.total
    }

    /// Consume what can be consumed from the start of `buf`; returns how many bytes.
    /// Once [`Self::is_done`], the rest of `buf` belongs to the next request.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, BodyError> {
        self.feed_into(buf, &mut |_| {})
    }

    /// Like [`Self::feed`], handing every decoded data byte to `sink` in order.
    pub fn feed_into(&mut self, buf: &[u8], sink: &mut impl FnMut(&[u8])) -> Result<usize, BodyError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Done => return Ok(pos),
                State::Length(n) | State::ChunkData(n) => {
                    let take = n.min(rest.len() as u64);
                    if take > 0 {
                        sink(&rest[..take as usize]);
                    }
                    pos += take as usize;
                    let left = n - take;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::ChunkDataEnd,
                        _ => State::ChunkData(left),
                    };
                    if left > 0 {
                        return Ok(pos);
                    }
                }
                State::ChunkSize => {
                    let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() >= self.line_limit {
                            return Err(BodyError::LineTooLong(self.line_limit));
                        }
                        return Ok(pos);
                    };
                    if eol >= self.line_limit {
                        return Err(BodyError::LineTooLong(self.line_limit));
                    }
                    let line = rest[..eol].strip_suffix(b"\r").ok_or(BodyError::MissingCrlf)?;
                    let size = chunk_size(line)?;
                    self.total = self.total.saturating_add(size);
                    if self.total > MAX_DISCARD {
                        return Err(BodyError::TooLarge);
                    }
                    pos += eol + 1;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkDataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok(pos),
                    _ => return Err(BodyError::MissingCrlf),
                },
                State::Trailers => {
                    if rest.starts_with(b"\r\n") {
                        self.state = State::Done;
                        return Ok(pos + 2);
                    }
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    // Not `head_end`: a trailer section has no leading blank lines to skip.
                    let Some(end) = common::head::head_end_from(rest, 0, 0) else {
                        if rest.len() > self.trailer_limit {
                            return Err(BodyError::TrailerTooLarge(self.trailer_limit));
                        }
                        return Ok(pos);
                    };
                    if end > self.trailer_limit {
                        return Err(BodyError::TrailerTooLarge(self.trailer_limit));
                    }
                    let mut fields = [httparse::EMPTY_HEADER; common::head::MAX_HEADERS];
                    match httparse::parse_headers(&rest[..end], &mut fields) {
                        Ok(httparse::Status::Complete((n, _))) if n == end => {}
                        _ => return Err(BodyError::BadTrailer),
                    }
                    self.state = State::Done;
                    return Ok(pos + end);
                }
            }
        }
    }
}

/// `chunk-size [ chunk-ext ]` without the CRLF (RFC 9112 §7.1, §7.1.1).
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 {
        return Err(BodyError::BadChunkSize);
    }
    let hex = &line[..digits];
    let significant = &hex[hex.iter().position(|&b| b != b'0').unwrap_or(hex.len())..];
    if significant.len() > 15 {
        return Err(BodyError::BadChunkSize);
    }
    let size = significant.iter().fold(0u64, |acc, &b| {
        // Cannot overflow: at most 15 hex digits.
        let d = (b as char).to_digit(16).map_or(0, u64::from);
        acc * 16 + d
    });
    let mut rest = &line[digits..];
    // *( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] )
    while !rest.is_empty() {
        let Some(after_semi) = skip_bws(rest).strip_prefix(b";") else {
            // Only an extension may follow the size, and only after ";".
            return Err(if rest.len() == line.len() - digits {
                BodyError::BadChunkSize
            } else {
                BodyError::BadChunkExtension
            });
        };
        rest = skip_bws(after_semi);
        rest = take_token(rest).ok_or(BodyError::BadChunkExtension)?;
        let after_ws = skip_bws(rest);
        if let Some(after_eq) = after_ws.strip_prefix(b"=") {
            let value = skip_bws(after_eq);
            rest = if value.first() == Some(&b'"') {
                take_quoted(value).ok_or(BodyError::BadChunkExtension)?
            } else {
                take_token(value).ok_or(BodyError::BadChunkExtension)?
            };
        }
    }
    Ok(size)
}

fn skip_bws(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    &s[n..]
}

/// Skip a non-empty token; `None` if there is none.
fn take_token(s: &[u8]) -> Option<&[u8]> {
    let n = s.iter().position(|&b| !is_tchar(b)).unwrap_or(s.len());
    (n > 0).then_some(&s[n..])
}

/// Skip a quoted-string starting at `s[0] == '"'`; `None` if unterminated or invalid.
fn take_quoted(s: &[u8]) -> Option<&[u8]> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(&s[i + 1..]),
            b'\\' => {
                let next = *s.get(i + 1)?;
                if next != b'\t' && !(0x20..=0x7e).contains(&next) && next < 0x80 {
                    return None;
                }
                i += 2;
            }
            b'\t' | 0x20..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in pieces of `step` bytes the way the connection does (keeping what
    /// was not consumed); returns the bytes left after the body.
    fn run(input: &[u8], step: usize) -> Result<Vec<u8>, BodyError> {
        let mut d = Discard::new(Framing::Chunked, 8192)?;
        let mut buf = Vec::new();
        let mut fed = 0;
        loop {
            let n = d.feed(&buf)?;
            buf.drain(..n);
            if d.is_done() {
                buf.extend_from_slice(&input[fed..]);
                return Ok(buf);
            }
            if fed == input.len() {
                panic!("body not complete; state {:?}", d.state);
            }
            let end = (fed + step).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
        }
    }

    #[test]
    fn chunked_bodies_in_any_split() {
        let body = b"5\r\nhello\r\n1;a=b ; c=\"x\\\"y\"\r\n!\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\nNEXT";
        for step in 1..body.len() {
            assert_eq!(run(body, step).unwrap(), b"NEXT", "step {step}");
        }
        assert_eq!(run(b"000\r\n\r\nGET", 3).unwrap(), b"GET");
        assert_eq!(run(b"A\r\n0123456789\r\n0\r\n\r\n", 4).unwrap(), b"");
    }

    #[test]
    fn chunked_errors() {
        for (bad, err) in [
            (&b"x\r\n"[..], BodyError::BadChunkSize),
            (b"\r\n", BodyError::BadChunkSize),
            (b"-1\r\n", BodyError::BadChunkSize),
            (b"1 \r\n", BodyError::BadChunkSize),
            (b"1\n", BodyError::MissingCrlf),
            (b"1;\r\n", BodyError::BadChunkExtension),
            (b"1;a=\r\n", BodyError::BadChunkExtension),
            (b"1;a=\"x\r\n", BodyError::BadChunkExtension),
            (b"1x\r\n", BodyError::BadChunkSize),
            (b"1;a=b x\r\n", BodyError::BadChunkExtension),
            (b"1\r\nab", BodyError::MissingCrlf),
            (b"1\r\na\n", BodyError::MissingCrlf),
            (b"0\r\nbad trailer\r\n\r\n", BodyError::BadTrailer),
            (b"1000000000000000\r\n", BodyError::BadChunkSize),
            (b"40000001\r\n", BodyError::TooLarge),
        ] {
            assert_eq!(run(bad, 64), Err(err), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"1;a=".as_slice(), &[b'b'; 5000]].concat();
        assert_eq!(run(&long, 64), Err(BodyError::LineTooLong(4096)));
    }

    #[test]
    fn data_handed_out() {
        let mut d = Discard::new(Framing::Chunked, 8192).unwrap();
        let mut got = Vec::new();
        let body = b"5\r\nhello\r\n3\r\n, w\r\n0\r\n\r\nNEXT";
        let used = d
            .feed_into(body, &mut |data| got.extend_from_slice(data))
            .unwrap();
        assert_eq!((got.as_slice(), &body[used..]), (&b"hello, w"[..], &b"NEXT"[..]));
    }

    #[test]
    fn length_bodies() {
        let mut d = Discard::new(Framing::Length(5), 100).unwrap();
        assert_eq!(d.feed(b"abc").unwrap(), 3);
        assert_eq!(d.feed(b"deGET").unwrap(), 2);
        assert!(d.is_done());
        assert!(Discard::new(Framing::Length(0), 100).unwrap().is_done());
        assert_eq!(
            Discard::new(Framing::Length(MAX_DISCARD + 1), 100).unwrap_err(),
            BodyError::TooLarge
        );
    }
}
