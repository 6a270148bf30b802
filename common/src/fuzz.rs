//! Fuzz targets for the parsers a client or a tenant's process can reach in `common`:
//! the request-head parser with its Host/authority rules and with Apache's limits
//! (`head_limits`), the hand-off codec and the control-channel codec. They
//! run in `cargo test` (bolero's random engine, plus the seed corpus under
//! `src/__fuzz__/<target>/corpus/`) and, unchanged, under a coverage-guided engine:
//! `cargo bolero test -p common fuzz::head_parser --sanitizer none` (stable Rust;
//! sanitizers need nightly). Any panic found is a bug to fix, never a case to skip.

use bolero::check;

use crate::handoff;
use crate::head::{self, MAX_HEADERS};

/// Random iterations per target in `cargo test` (a coverage-guided run has no bound).
const ITERATIONS: usize = 20_000;

/// Pieces of request heads: a random input byte below `TOKENS.len()` stands for one, so
/// random inputs look like heads often enough to reach the host and target rules.
const TOKENS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"G ET ",
    b"/",
    b"/aaaaa",
    b"http://",
    b"HTTPS://",
    b"user:pw@",
    b"?q",
    b"#",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2.0",
    b" FOO/1.1",
    b"\r\n",
    b"\n",
    b"\r",
    b"Host: ",
    b"host:",
    b"alice.test",
    b"[::1]",
    b"::1",
    b"[",
    b"]",
    b":80",
    b":",
    b"@",
    b"%",
    b"%41",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"\t",
    b" ",
    b"Content-Length: 5",
    b"Transfer-Encoding: chunked",
    b"[v1.x]",
    b"*.",
    b"\0",
];

/// Expands token bytes (see [`TOKENS`]); other bytes stand for themselves.
fn assemble(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    for &b in bytes {
        match TOKENS.get(b as usize) {
            Some(t) => out.extend_from_slice(t),
            None => out.push(b),
        }
    }
    out
}

/// [`head::parse_with`] under small random limits (the first three input bytes): what
/// it accepts is within every limit and is accepted alike without them; what it
/// refuses for a limit is over it.
#[test]
fn head_limits() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        let [a, b, c, rest @ ..] = input else { return };
        let limits = head::Limits {
            head: 8192,
            line: usize::from(*a) + 1,
            fields: usize::from(*b % 16) + 1,
            field_size: usize::from(*c) + 1,
        };
        for bytes in [rest.to_vec(), assemble(rest)] {
            check_limits(&bytes, &limits);
        }
    });
}

fn check_limits(bytes: &[u8], limits: &head::Limits) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let start = head::leading_blank(bytes);
    let lines = || {
        bytes[start..]
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
    };
    match head::parse_with(bytes, &mut headers, limits) {
        Ok(Some(h)) => {
            assert!(h.headers.len() <= limits.fields);
            let mut n = lines();
            assert!(n.next().unwrap_or(0) <= limits.line);
            let len = h.len;
            let mut loose = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let again = head::parse(bytes, &mut loose, 8192);
            assert!(matches!(again, Ok(Some(ref g)) if g.len == len), "{again:?}");
        }
        Err(head::HeadError::UriTooLong { limit }) if limit == limits.line => {
            assert!(lines().next().unwrap_or(0) > limits.line);
        }
        Err(head::HeadError::FieldTooLarge { limit }) => {
            assert_eq!(limit, limits.field_size);
            assert!(lines().skip(1).any(|l| l > limits.field_size));
        }
        _ => {}
    }
}

#[test]
fn head_parser() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        check_head(input);
        check_head(&assemble(input));
    });
}

fn check_head(bytes: &[u8]) {
    {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        if let Ok(Some(h)) = head::parse(bytes, &mut headers, 8192) {
            assert!(h.len <= bytes.len());
            if let Some(host) = h.host {
                assert!(!host.is_empty());
            }
            let _ = head::path_and_query(h.target);
        }
        // The end of a head is found the same way whatever the reads were.
        let whole = head::head_end(bytes);
        let start = head::leading_blank(bytes);
        let mut scanned = start;
        let mut found = None;
        for n in (start..=bytes.len()).step_by(7).chain([bytes.len()]) {
            if found.is_none() {
                found = head::head_end_from(&bytes[..n], start, scanned);
                scanned = n;
            }
        }
        assert_eq!(found, whole);
        // Any string as a target: the authority split never slices inside a character.
        if let Ok(s) = std::str::from_utf8(bytes) {
            if let Some(f) = head::absolute_form(s) {
                assert!(s.ends_with(f.rest));
            }
        }
    }
}

#[test]
fn handoff_codec() {
    check!().with_iterations(ITERATIONS).for_each(|bytes: &[u8]| {
        if let Ok((meta, payload)) = handoff::decode(bytes) {
            // What decodes encodes back to the same bytes.
            let mut again = handoff::encode_header(&meta, payload.len()).to_vec();
            again.extend_from_slice(payload);
            assert_eq!(
                handoff::decode(&again).ok().map(|(m, p)| (m, p.to_vec())),
                Some((meta, payload.to_vec()))
            );
        }
    });
}

#[test]
fn handoff_round_trip() {
    check!()
        .with_iterations(ITERATIONS)
        .with_type::<(u8, u32, [u8; 16], u16, bool, Vec<u8>)>()
        .for_each(|(flags, vhost, ip, port, v4, payload)| {
            let peer = if *v4 {
                std::net::SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], *port))
            } else {
                std::net::SocketAddr::from((std::net::Ipv6Addr::from(*ip), *port))
            };
            let meta = handoff::Meta {
                flags: *flags,
                vhost: *vhost,
                peer,
                local: peer,
            };
            let payload = &payload[..payload.len().min(handoff::MAX_PAYLOAD)];
            let mut msg = handoff::encode_header(&meta, payload.len()).to_vec();
            msg.extend_from_slice(payload);
            let (got, body) = handoff::decode(&msg).expect("what was encoded decodes");
            assert_eq!((got, body), (meta, payload));
        });
}

/// The control channel as a child's end sees it from a hostile peer: any fragments, in
/// any order of "more" flags, reassembled by a bounded receiver (alternately as either
/// message type the channel carries). Nothing panics; the size bound itself is checked
/// by `control`'s own tests.
#[test]
fn control_codec() {
    use crate::control::{FromChild, Receiver, ToChild};
    use crate::seqpacket;
    use std::os::fd::AsFd;

    const MAX: usize = 512;
    check!()
        .with_iterations(ITERATIONS / 10)
        .with_type::<Vec<(bool, Vec<u8>)>>()
        .for_each(|fragments| {
            let (a, b) = seqpacket::seqpacket_pair().expect("socketpair");
            let mut to_child = Receiver::with_max(MAX);
            let mut from_child = Receiver::with_max(MAX);
            for (i, (more, body)) in fragments.iter().take(16).enumerate() {
                let body = &body[..body.len().min(300)];
                let flag = [u8::from(*more)];
                if seqpacket::send(a.as_fd(), &[&flag, body], &[]).is_err() {
                    break;
                }
                // Alternate the two message types the channel carries.
                let got = if i % 2 == 0 {
                    to_child
                        .poll_message::<ToChild>(b.as_fd(), 0)
                        .map(|m| m.map(|(m, _)| format!("{m:?}")))
                } else {
                    from_child
                        .poll_message::<FromChild>(b.as_fd(), 0)
                        .map(|m| m.map(|(m, _)| format!("{m:?}")))
                };
                if let Ok(Some(text)) = got {
                    assert!(!text.is_empty());
                }
            }
        });
}
