//! TLS session tickets an environment's processors share, so that a session made on one
//! of them resumes on any other, and on no other environment's: every key is derived
//! (HKDF-SHA256) from the seed the supervisor made for this environment and generation
//! (`ProcessorBoot::tls_ticket_seed`) and the current period. A key seals new tickets
//! for [`PERIOD_SECS`]; a ticket of the period before still opens, older ones do not
//! (a full handshake follows). ChaCha20-Poly1305 from ring, the period as associated
//! data: `period (8) | nonce (12) | sealed state | tag (16)`.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// How long one key seals new tickets.
pub const PERIOD_SECS: u64 = 6 * 3600;

const PERIOD_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// What HKDF expands a period's key with, before the period.
const INFO: &[u8] = b"bulkhead tls session ticket key";

/// The ticketer of one environment's processors.
pub struct Tickets {
    prk: hkdf::Prk,
    rng: SystemRandom,
    /// Seconds since the epoch (a parameter for tests).
    clock: fn() -> u64,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tickets(..)")
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tickets {
    pub fn new(seed: &[u8; 32]) -> Tickets {
        Tickets::with_clock(seed, now)
    }

    fn with_clock(seed: &[u8; 32], clock: fn() -> u64) -> Tickets {
        Tickets {
            prk: hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, seed),
            rng: SystemRandom::new(),
            clock,
        }
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let period = period.to_be_bytes();
        let info = [INFO, &period[..]];
        let okm = self.prk.expand(&info, &CHACHA20_POLY1305).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn period(&self) -> u64 {
        (self.clock)() / PERIOD_SECS
    }
}

impl rustls::server::ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let period = self.period();
        let key = self.key(period)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        let aad = Aad::from(period.to_be_bytes());
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad, &mut sealed)
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// `cipher` is the client's: every length and the period are checked first.
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < PERIOD_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (period, rest) = cipher.split_at(PERIOD_LEN);
        let period = u64::from_be_bytes(period.try_into().ok()?);
        let current = self.period();
        if period != current && period.checked_add(1) != Some(current) {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let key = self.key(period)?;
        let mut buf = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(period.to_be_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use rustls::server::ProducesTickets;

    use super::*;

    fn at(secs: u64) -> fn() -> u64 {
        // A fixed clock per test value (fn pointers cannot capture).
        match secs {
            0 => || PERIOD_SECS * 100,
            1 => || PERIOD_SECS * 101 + 5,
            _ => || PERIOD_SECS * 102 + 5,
        }
    }

    #[test]
    fn a_ticket_opens_in_the_environment_it_was_made_for_only() {
        let seed = [7u8; 32];
        let a = Tickets::with_clock(&seed, at(0));
        let same_env = Tickets::with_clock(&seed, at(0));
        let other_env = Tickets::with_clock(&[8u8; 32], at(0));
        let t = a.encrypt(b"session state").unwrap();
        assert_eq!(same_env.decrypt(&t).as_deref(), Some(&b"session state"[..]));
        assert_eq!(other_env.decrypt(&t), None);
        // Any changed byte (the period included) is refused.
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert_eq!(a.decrypt(&bad), None, "byte {i}");
        }
        assert_eq!(a.decrypt(&t[..20]), None);
        assert_eq!(a.decrypt(&[]), None);
    }

    #[test]
    fn keys_rotate_and_the_previous_period_still_opens() {
        let seed = [7u8; 32];
        let t = Tickets::with_clock(&seed, at(0)).encrypt(b"x").unwrap();
        assert!(Tickets::with_clock(&seed, at(1)).decrypt(&t).is_some());
        assert!(Tickets::with_clock(&seed, at(2)).decrypt(&t).is_none());
        let later = Tickets::with_clock(&seed, at(2)).encrypt(b"x").unwrap();
        assert_ne!(later[..8], t[..8]);
        // A ticket from the future is refused too.
        assert!(Tickets::with_clock(&seed, at(0)).decrypt(&later).is_none());
    }
}
