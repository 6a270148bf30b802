//! Fuzz target for the request-target checks. Runs in `cargo test` and under
//! `cargo bolero test -p processor handler::static_files::fuzz::request_target --sanitizer none`.

use bolero::check;

use super::target;
const ITERATIONS: usize = 20_000;

#[test]
fn request_target() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        if let Ok(s) = std::str::from_utf8(input) {
            if let Ok(target::Target::Path(p)) = target::parse(s) {
                // A decoded path never climbs out of the document root.
                assert!(p
                    .segments
                    .iter()
                    .all(|seg| seg != b".." && !seg.contains(&b'/') && !seg.contains(&0)));
            }
        }
    });
}
