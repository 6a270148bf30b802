//! Request smuggling: every CL/TE variant sent with a second request hidden in its
//! body, on a keep-alive connection, first and later in it. The hidden request asks
//! for a path of its own (`/hidden-N`) whose hit would show in the access log and in
//! an answer's body: it is never answered. Ambiguous framing gets one 400 and a close
//! (RFC 9112 §6.3, §11.2); a well-framed body that holds a request is read as a body.

use std::time::Duration;

use crate::util::wire::*;

const GOOD: &str = "GET / HTTP/1.1\r\nHost: alice.test\r\n\r\n";

/// (name, head fields after Host, body with `{hidden}` for the hidden request,
/// expected statuses).
fn variants() -> Vec<(&'static str, String, String, Vec<u16>)> {
    let v = |name, fields: &str, body: &str, statuses: &[u16]| {
        (name, fields.to_owned(), body.to_owned(), statuses.to_vec())
    };
    vec![
        // The front reads CL, a back end TE (or the other way round).
        v(
            "CL.TE",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "TE.CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            "5c\r\n{hidden}0\r\n\r\n",
            &[400],
        ),
        v(
            "TE: xchunked",
            "Transfer-Encoding: xchunked\r\n",
            "0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "TE: chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
            "0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "TE: identity",
            "Transfer-Encoding: identity\r\n",
            "{hidden}",
            &[400],
        ),
        v(
            "TE twice, last not chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
            "0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "TE with a space before the colon",
            "Transfer-Encoding : chunked\r\n",
            "0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "TE folded onto a second line",
            "Transfer-Encoding:\r\n chunked\r\n",
            "0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "TE: chunked with a vertical tab",
            "Transfer-Encoding: \x0bchunked\r\n",
            "0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "TE in quotes",
            "Transfer-Encoding: \"chunked\"\r\n",
            "0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "duplicate Content-Length, differing",
            "Content-Length: 0\r\nContent-Length: 44\r\n",
            "{hidden}",
            &[400],
        ),
        v(
            "duplicate Content-Length, same",
            "Content-Length: 44\r\nContent-Length: 44\r\n",
            "{hidden}",
            &[400],
        ),
        v(
            "Content-Length: +44",
            "Content-Length: +44\r\n",
            "{hidden}",
            &[400],
        ),
        v("Content-Length: -0", "Content-Length: -0\r\n", "{hidden}", &[400]),
        v(
            "Content-Length: 4 4",
            "Content-Length: 4 4\r\n",
            "{hidden}",
            &[400],
        ),
        v(
            "Content-Length: 44, 44",
            "Content-Length: 44, 44\r\n",
            "{hidden}",
            &[400],
        ),
        v(
            "Content-Length: 0x2c",
            "Content-Length: 0x2c\r\n",
            "{hidden}",
            &[400],
        ),
        v(
            "chunk size overflow",
            "Transfer-Encoding: chunked\r\n",
            "10000000000000000000002\r\nab\r\n0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "chunk size with a sign",
            "Transfer-Encoding: chunked\r\n",
            "+2\r\nab\r\n0\r\n\r\n{hidden}",
            &[400],
        ),
        v(
            "LF-only chunk lines",
            "Transfer-Encoding: chunked\r\n",
            "2\nab\n0\n\n{hidden}",
            &[400],
        ),
        v(
            "chunk data longer than its size",
            "Transfer-Encoding: chunked\r\n",
            "1\r\nab\r\n0\r\n\r\n{hidden}",
            &[400],
        ),
        // Well framed: the hidden request is a body, read and dropped.
        v(
            "a body of exactly the hidden request",
            "Content-Length: {len}\r\nConnection: close\r\n",
            "{hidden}",
            &[200],
        ),
        v(
            "a chunked body holding it",
            "Transfer-Encoding: chunked\r\nConnection: close\r\n",
            "{chunk}\r\n{hidden}\r\n0\r\n\r\n",
            &[200],
        ),
    ]
}

#[test]
fn hidden_requests_are_never_answered() {
    require_root!();
    let s = strict("smuggling");
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, fields, body, statuses) in variants() {
        for later in [false, true] {
            n += 1;
            let hidden = format!("GET /hidden-{n} HTTP/1.1\r\nHost: alice.test\r\n\r\n");
            let body = body
                .replace("{hidden}", &hidden)
                .replace("{chunk}", &format!("{:x}", hidden.len()));
            let fields = fields.replace("{len}", &hidden.len().to_string());
            let request = format!("GET / HTTP/1.1\r\nHost: alice.test\r\n{fields}\r\n{body}");
            let before: &[&str] = if later { &[GOOD] } else { &[] };
            let (responses, closed) = exchange(s.addr(), before, request.as_bytes(), Duration::from_secs(2));
            let got: Vec<u16> = responses.iter().map(|r| r.status).collect();
            let served_hidden = responses.iter().any(|r| r.text().contains(HIDDEN));
            if got != statuses || served_hidden || !closed {
                failures.push(format!(
                    "{name} (later: {later}): answered {got:?} (expected {statuses:?}), hidden served: {served_hidden}, closed: {closed}"
                ));
            }
        }
    }
    let hits = s.hidden_hits();
    assert!(
        failures.is_empty() && hits.is_empty(),
        "{}\nhidden paths in the access log: {hits:?}",
        failures.join("\n")
    );
}
