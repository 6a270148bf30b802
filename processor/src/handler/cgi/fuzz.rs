//! Fuzz target for a CGI script's header block (a tenant's output). Runs in `cargo
//! test` and under `cargo bolero test -p processor handler::cgi::fuzz::cgi_header_block
//! --sanitizer none`.

use bolero::check;

use super::output::{parse, CgiHead};

const ITERATIONS: usize = 20_000;

#[test]
fn cgi_header_block() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        if let Ok(CgiHead::Response { status, fields }) = parse(input) {
            // What passes through can be written as a header line as it is.
            assert!((200..=599).contains(&status));
            for (name, value) in fields {
                assert!(!name.is_empty() && name.bytes().all(common::head::is_tchar));
                assert!(!value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0));
            }
        }
    });
}
