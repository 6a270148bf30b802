//! Fuzz target for the `.htaccess` parser. Runs in `cargo test` and under
//! `cargo bolero test -p processor handler::access::fuzz::htaccess --sanitizer none`.

use bolero::check;

use super::parse;
const ITERATIONS: usize = 20_000;

#[test]
fn htaccess() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        let text = String::from_utf8_lossy(input);
        if let Ok(h) = parse::parse(&text) {
            // A section never has more notes than the bound, and matching never panics.
            assert!(h.notes.len() <= 33);
            for f in &h.files {
                let _ = f.matches(input);
            }
        }
    });
}
