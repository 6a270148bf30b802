//! Fuzz target for the FastCGI record decoder (a backend's bytes, which tenant code
//! writes). Runs in `cargo test` and under `cargo bolero test -p processor
//! handler::fastcgi::fuzz::fastcgi_records --sanitizer none`.

use bolero::check;

use super::record::{Decoder, Event};

const ITERATIONS: usize = 20_000;

#[test]
fn fastcgi_records() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        // The first byte picks how the stream is cut, so splits are fuzzed too.
        let Some((&step, stream)) = input.split_first() else {
            return;
        };
        let step = usize::from(step.max(1));
        let mut d = Decoder::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut stdout = 0usize;
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match d.next(&buf) {
                    Err(_) => return,
                    Ok((used, event)) => {
                        assert!(used <= buf.len());
                        if let Some(Event::Stdout(data)) = &event {
                            assert!(!data.is_empty());
                            stdout += data.len();
                        }
                        let done = used == 0 && event.is_none();
                        buf.drain(..used);
                        if done {
                            break;
                        }
                    }
                }
            }
        }
        // A record header is never held back, so nothing is left unconsumed.
        assert!(buf.is_empty());
        assert!(stdout <= stream.len());
    });
}
