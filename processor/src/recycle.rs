//! When a processor stops taking connections (`max_requests_per_child`), and when it
//! asks for its successor beforehand.
//!
//! A recycled processor's keep-alive clients reconnect at once; if the next processor
//! only starts then (a multiplexer finds no room and asks for one), every connection
//! waits for its cold start. So from half its life on, a processor estimates when it
//! will reach its limit from the rate since then, and once that is within
//! [`SUCCESSOR_LEAD`] it says [`Recycle::Soon`]: the serve loop tells the supervisor
//! (`FromChild::Recycling`, once), which starts the successor within `max_processors`,
//! and once the supervisor says another processor of the environment runs
//! (`ToChild::Peers`) it stops taking connections as at the limit.
//! At a low rate the estimate never comes within the lead and nothing is asked early:
//! a successor idle for minutes would cost memory and save nothing.

use std::cell::Cell;
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

/// How long before its last request a processor asks for its successor: a cold start
/// (a spare's bootstrap, about 0.3 ms idle, or a fresh exec into a private view) with
/// room to spare under load. Not longer: once the successor runs the processor stops
/// taking connections (the rest of its requests, at most this long at its rate, go to
/// the successor: a shorter life), and while both run neither keeps FastCGI
/// connections (`handler::fastcgi::pool`).
pub const SUCCESSOR_LEAD: Duration = Duration::from_millis(25);

/// Where a processor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycle {
    /// Serving.
    No,
    /// Its limit is expected within [`SUCCESSOR_LEAD`]: start the successor.
    Soon,
    /// Its limit is reached: stop taking connections.
    Now,
}

/// Counts requests against `max_requests_per_child` and says when to recycle.
pub struct Recycler {
    max: u64,
    requests: Cell<u64>,
    /// Requests done and the time (ms) when half the limit was reached.
    half: Cell<Option<(u64, u64)>>,
    state: watch::Sender<Recycle>,
}

impl Recycler {
    /// `max` 0: never.
    pub fn new(max: u64) -> (Recycler, watch::Receiver<Recycle>) {
        let (state, rx) = watch::channel(Recycle::No);
        let r = Recycler {
            max,
            requests: Cell::new(0),
            half: Cell::new(None),
            state,
        };
        (r, rx)
    }

    /// One request done at `now_ms` (a monotonic or wall clock in ms).
    pub fn request_done(&self, now_ms: u64) {
        let total = self.requests.get() + 1;
        self.requests.set(total);
        if self.max == 0 {
            return;
        }
        let state = *self.state.borrow();
        if state == Recycle::Now {
            return;
        }
        if total >= self.max {
            info!(
                requests = total,
                "max_requests_per_child reached: finishing and exiting"
            );
            self.state.send_replace(Recycle::Now);
            return;
        }
        if state == Recycle::Soon {
            return;
        }
        match self.half.get() {
            None if total >= self.max / 2 => self.half.set(Some((total, now_ms))),
            Some((n0, t0)) if due(self.max - total, total - n0, now_ms.saturating_sub(t0)) => {
                self.state.send_replace(Recycle::Soon);
            }
            _ => {}
        }
    }
}

/// The shortest time a rate is measured over: with a clock in ms, requests that end
/// together (many connections) would otherwise look infinitely fast.
const RATE_WINDOW_MS: u64 = 10;

/// Whether `left` more requests, at the rate of `done` in `elapsed_ms` (at least
/// [`RATE_WINDOW_MS`]), take at most [`SUCCESSOR_LEAD`].
fn due(left: u64, done: u64, elapsed_ms: u64) -> bool {
    let lead = SUCCESSOR_LEAD.as_millis() as u64;
    elapsed_ms >= RATE_WINDOW_MS && left.saturating_mul(elapsed_ms) <= lead.saturating_mul(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(max: u64, gap_ms: u64, n: u64) -> Vec<Recycle> {
        let (r, rx) = Recycler::new(max);
        (0..n)
            .map(|i| {
                r.request_done(i * gap_ms);
                *rx.borrow()
            })
            .collect()
    }

    #[test]
    fn requests_ending_together_do_not_look_infinitely_fast() {
        // All within one ms: no rate to go by, so nothing early.
        let s = states(10_000, 0, 10_000);
        assert!(!s.contains(&Recycle::Soon));
        assert_eq!(s[9_999], Recycle::Now);
        // 15 per ms (15K/s), several ending in the same ms: Soon about 25 ms (375
        // requests) before the end, not at half.
        let (r, rx) = Recycler::new(10_000);
        let mut soon = None;
        for i in 0..10_000u64 {
            r.request_done(i / 15);
            if soon.is_none() && *rx.borrow() == Recycle::Soon {
                soon = Some(i);
            }
        }
        let soon = soon.expect("Soon before the end");
        assert!((9_600..=9_640).contains(&soon), "Soon at request {soon}");
        assert_eq!(*rx.borrow(), Recycle::Now);
    }

    #[test]
    fn the_successor_is_asked_for_about_the_lead_before_the_end() {
        // One request per ms: Soon when at most 25 requests are left.
        let s = states(10_000, 1, 10_000);
        let soon = s.iter().position(|x| *x == Recycle::Soon).unwrap();
        assert!((9_965..=9_975).contains(&soon), "Soon at request {soon}");
        assert_eq!(s[9_999], Recycle::Now);
    }

    #[test]
    fn a_slow_processor_asks_for_nothing_early() {
        // One request per second: the end is never within 25 ms until it is reached.
        let s = states(100, 1_000, 100);
        assert!(!s.contains(&Recycle::Soon));
        assert_eq!(s[99], Recycle::Now);
    }

    #[test]
    fn no_limit_never_recycles_and_tiny_limits_stop_on_time() {
        assert!(states(0, 0, 50_000).iter().all(|x| *x == Recycle::No));
        assert_eq!(states(1, 0, 1), vec![Recycle::Now]);
        assert_eq!(states(2, 0, 2), vec![Recycle::No, Recycle::Now]);
        assert_eq!(states(3, 0, 3), vec![Recycle::No, Recycle::No, Recycle::Now]);
        assert_eq!(states(3, 20, 3), vec![Recycle::No, Recycle::Soon, Recycle::Now]);
    }

    #[test]
    fn a_clock_going_back_asks_nothing_early_and_never_panics() {
        let (r, rx) = Recycler::new(1_000);
        for _ in 0..500 {
            r.request_done(5_000);
        }
        r.request_done(0);
        assert_eq!(*rx.borrow(), Recycle::No);
        assert!(!due(u64::MAX, 1, u64::MAX));
        assert!(due(0, 1, u64::MAX));
        assert!(!due(1, u64::MAX, RATE_WINDOW_MS - 1));
    }
}
