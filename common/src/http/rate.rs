//! Read timeouts with a minimum rate, as Apache's mod_reqtimeout
//! (`header=20-40,MinRate=500`): a deadline `initial` after the start, pushed back by
//! one second per `min_rate` bytes received, never past `max` after the start. A
//! client that sends slower than the rate falls behind its deadline; one that keeps
//! above it is still cut at the maximum.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `request_head_timeout` / `request_body_timeout` as they travel to the children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateTimeout {
    pub initial_ms: u64,
    /// At least `initial_ms`; 0: no maximum (then only the rate bounds it).
    pub max_ms: u64,
    /// Bytes per second that extend the deadline; 0: no extension.
    pub min_rate: u64,
}

impl RateTimeout {
    /// A plain timeout: `d`, never extended.
    pub fn fixed(d: Duration) -> RateTimeout {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        RateTimeout {
            initial_ms: ms,
            max_ms: ms,
            min_rate: 0,
        }
    }

    /// The longest a read under it may take (`None`: no bound but the rate's).
    pub fn longest(&self) -> Option<Duration> {
        if self.min_rate == 0 {
            Some(Duration::from_millis(self.initial_ms))
        } else if self.max_ms == 0 {
            None
        } else {
            Some(Duration::from_millis(self.max_ms.max(self.initial_ms)))
        }
    }

    /// A deadline starting now.
    pub fn start(&self) -> Deadline {
        self.start_at(Instant::now())
    }

    pub fn start_at(&self, start: Instant) -> Deadline {
        Deadline {
            start,
            rule: *self,
            received: 0,
        }
    }
}

/// One read's deadline under a [`RateTimeout`].
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    rule: RateTimeout,
    received: u64,
}

impl Deadline {
    /// `n` more bytes arrived.
    pub fn received(&mut self, n: usize) {
        self.received = self.received.saturating_add(n as u64);
    }

    /// When the read must be over.
    pub fn at(&self) -> Instant {
        let r = &self.rule;
        let mut ms = r.initial_ms;
        if let Some(extra) = self.received.saturating_mul(1000).checked_div(r.min_rate) {
            ms = ms.saturating_add(extra);
            if r.max_ms > 0 {
                ms = ms.min(r.max_ms.max(r.initial_ms));
            }
        }
        // A deadline past what an Instant holds is, in effect, never.
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        self.start
            .checked_add(Duration::from_millis(ms).min(far))
            .unwrap_or(self.start + far)
    }

    /// [`Deadline::at`] as tokio's instant.
    pub fn tokio_at(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.at())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends_by_rate_up_to_max() {
        let t = RateTimeout {
            initial_ms: 20_000,
            max_ms: 40_000,
            min_rate: 500,
        };
        let now = Instant::now();
        let mut d = t.start_at(now);
        assert_eq!(d.at() - now, Duration::from_secs(20));
        d.received(500);
        assert_eq!(d.at() - now, Duration::from_secs(21));
        d.received(1_000_000);
        assert_eq!(d.at() - now, Duration::from_secs(40));
        assert_eq!(t.longest(), Some(Duration::from_secs(40)));
    }

    #[test]
    fn fixed_and_unbounded() {
        let now = Instant::now();
        let mut d = RateTimeout::fixed(Duration::from_secs(5)).start_at(now);
        d.received(1 << 20);
        assert_eq!(d.at() - now, Duration::from_secs(5));
        let open = RateTimeout {
            initial_ms: 1000,
            max_ms: 0,
            min_rate: 1,
        };
        let mut d = open.start_at(now);
        d.received(usize::MAX);
        assert!(d.at() > now + Duration::from_secs(3600));
        assert_eq!(open.longest(), None);
    }
}
