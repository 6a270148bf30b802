//! Fuzz target for the HTTP/1.1 request body decoder (chunked and Content-Length
//! framing). Runs in `cargo test` and under
//! `cargo bolero test -p processor h1::fuzz::chunked_decoder --sanitizer none`.

use bolero::check;

use super::body::Discard;
use super::request::Framing;

const ITERATIONS: usize = 20_000;

/// Pieces of chunked bodies; a random byte below `TOKENS.len()` stands for one.
const TOKENS: &[&[u8]] = &[
    b"0\r\n",
    b"5\r\n",
    b"a;ext=1\r\n",
    b"ffffffffffffffff\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"hello",
    b"X: y\r\n",
    b";",
    b"=",
    b"\"q\"",
    b" ",
    b"\t",
    b"1\r\nz\r\n",
];

fn assemble(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        match TOKENS.get(b as usize) {
            Some(t) => out.extend_from_slice(t),
            None => out.push(b),
        }
    }
    out
}

/// Feeds `input` in pieces of `step` bytes as a connection would (consumed bytes are
/// dropped, the rest waits for more); returns what the decoder concluded and where.
fn decode(framing: Framing, input: &[u8], step: usize) -> (Result<bool, String>, usize) {
    let mut d = match Discard::new(framing, 8192) {
        Ok(d) => d,
        Err(e) => return (Err(e.to_string()), 0),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut consumed = 0;
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.feed(&buf) {
                Ok(n) => {
                    assert!(n <= buf.len(), "consumed more than it was given");
                    buf.drain(..n);
                    consumed += n;
                    if n == 0 || d.is_done() {
                        break;
                    }
                }
                Err(e) => return (Err(e.to_string()), consumed),
            }
        }
        if d.is_done() {
            return (Ok(true), consumed);
        }
    }
    (Ok(d.is_done()), consumed)
}

#[test]
fn chunked_decoder() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        for bytes in [input.to_vec(), assemble(input)] {
            // However the bytes arrive, the decoder reaches the same verdict at the
            // same place: no body byte is ever taken for the next request.
            let whole = decode(Framing::Chunked, &bytes, bytes.len());
            for step in [1, 3, 64] {
                let split = decode(Framing::Chunked, &bytes, step);
                // The same verdict; and where the body ends when it does (after an
                // error the connection closes, so where it stopped does not matter).
                assert_eq!(whole.0, split.0, "step {step}");
                if whole.0 == Ok(true) {
                    assert_eq!(whole.1, split.1, "step {step}");
                }
            }
            let _ = decode(Framing::Length(bytes.len() as u64 / 2), &bytes, 5);
        }
    });
}
