//! Fuzz target for the ClientHello peek ([`super::examine`]): the bytes any client
//! sends to a `listen_tls` port. Runs in `cargo test` (bolero's random engine and the
//! seeds in `__fuzz__/`) and under `cargo bolero test -p multiplexer
//! tls::fuzz::client_hello --engine libfuzzer --sanitizer none`.

use std::mem::discriminant;

use bolero::check;

use super::{examine, Peeked, MAX_HELLO};

const ITERATIONS: usize = 20_000;

#[test]
fn client_hello() {
    check!().with_iterations(ITERATIONS).for_each(|input: &[u8]| {
        let whole = examine(input);
        check_one(input, &whole);
        // The multiplexer acts on what it has peeked so far: a verdict on a prefix
        // must be the verdict on the whole.
        let step = input.first().map_or(1, |&b| usize::from(b % 61) + 1);
        for n in (0..input.len()).step_by(step) {
            let part = examine(&input[..n]);
            check_one(&input[..n], &part);
            if !matches!(part, Peeked::Need(_)) {
                assert_eq!(
                    discriminant(&part),
                    discriminant(&whole),
                    "{n}: {part:?} then {whole:?}"
                );
                break;
            }
        }
    });
}

fn check_one(buf: &[u8], p: &Peeked) {
    match p {
        Peeked::Need(n) => assert!(*n > buf.len() && *n <= MAX_HELLO, "need {n} with {}", buf.len()),
        Peeked::Hello(Some(name)) => assert_eq!(*name, name.to_ascii_lowercase()),
        _ => {}
    }
}
