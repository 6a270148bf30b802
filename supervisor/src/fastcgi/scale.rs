//! How many backends an environment runs: the decision of one moment as a pure
//! function of what is running, the limits and whether a connection waits unaccepted
//! on the socket, so the rules are unit-tested.
//!
//! - Below `min_backends`: start the missing ones.
//! - A connection pending and fewer than `max_backends`: start one, unless one is
//!   still starting (started less than [`HOLD_OFF`] ago, or younger than
//!   [`STARTING_MAX`] and not yet ready: neither seen in accept nor holding a
//!   connection it accepted): a burst against no backend starts them one after
//!   another, not one per waiting request, and a sustained load grows the set by one
//!   per [`HOLD_OFF`] (a loaded backend is rarely caught in accept, since a queue that
//!   never empties returns it from accept at once, so "in accept" alone held the
//!   growth to one per [`STARTING_MAX`]).
//! - A connection pending at `max_backends`: say so (once per episode, by the caller).
//! - No connection pending: a backend idle (in accept, no CPU used) for
//!   `idle_timeout` is stopped, longest idle first, down to `min_backends`.

use std::time::Duration;

/// Least time between two backends started for one environment.
pub const HOLD_OFF: Duration = Duration::from_millis(100);
/// A backend younger than this that is not yet in accept counts as starting.
pub const STARTING_MAX: Duration = Duration::from_secs(1);

/// One running backend (not told to stop) as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub pid: i32,
    /// Since it was started.
    pub age: Duration,
    /// Past its start: blocked in accept right now, or holding a connection it
    /// accepted.
    pub ready: bool,
    /// How long it has been idle (in accept, no CPU time used), if it is.
    pub idle_for: Option<Duration>,
}

/// An environment's backend limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min: u32,
    pub max: u32,
    pub idle_timeout: Duration,
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub start: u32,
    /// Idle backends to stop (SIGTERM to their process group).
    pub stop: Vec<i32>,
    /// A connection waits and `max_backends` run.
    pub at_max: bool,
}

/// One decision for one environment. `restart_scheduled`: a crashed backend's
/// replacement waits for its backoff, which decides instead.
pub fn decide(backends: &[Seen], l: &Limits, pending: bool, restart_scheduled: bool) -> Plan {
    let mut plan = Plan::default();
    let running = backends.len() as u32;
    let starting = backends
        .iter()
        .any(|b| b.age < HOLD_OFF || (b.age < STARTING_MAX && !b.ready));
    if !restart_scheduled {
        if running < l.min {
            plan.start = l.min - running;
        } else if pending && running < l.max && !starting {
            plan.start = 1;
        }
    }
    plan.at_max = pending && running >= l.max;
    if !pending {
        let mut idle: Vec<&Seen> = backends
            .iter()
            .filter(|b| b.idle_for.is_some_and(|d| d >= l.idle_timeout))
            .collect();
        idle.sort_by_key(|b| std::cmp::Reverse(b.idle_for));
        let removable = running.saturating_sub(l.min) as usize;
        plan.stop = idle.into_iter().take(removable).map(|b| b.pid).collect();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn limits(min: u32, max: u32) -> Limits {
        Limits {
            min,
            max,
            idle_timeout: 60 * S,
        }
    }

    fn up(pid: i32, idle: Option<u32>) -> Seen {
        Seen {
            pid,
            age: 100 * S,
            ready: idle.is_some(),
            idle_for: idle.map(|s| s * S),
        }
    }

    #[test]
    fn min_backends_are_started_at_once() {
        assert_eq!(decide(&[], &limits(2, 8), false, false).start, 2);
        assert_eq!(decide(&[up(1, None)], &limits(2, 8), false, false).start, 1);
        // A crash's replacement waits for its backoff.
        assert_eq!(decide(&[], &limits(2, 8), true, true).start, 0);
    }

    #[test]
    fn demand_starts_one_at_a_time() {
        let l = limits(0, 8);
        assert_eq!(decide(&[], &l, false, false).start, 0);
        assert_eq!(decide(&[], &l, true, false).start, 1);
        // One just started: wait for it.
        let young = Seen {
            pid: 1,
            age: Duration::from_millis(20),
            ready: true,
            idle_for: None,
        };
        assert_eq!(decide(&[young], &l, true, false).start, 0);
        // Older than the hold-off but not yet accepting: still starting.
        let loading = Seen {
            age: Duration::from_millis(500),
            ready: false,
            ..young
        };
        assert_eq!(decide(&[loading], &l, true, false).start, 0);
        // Ready (in accept, or serving a connection it accepted), yet a connection
        // still waits: all are busy, one more.
        let ready = Seen {
            ready: true,
            ..loading
        };
        assert_eq!(decide(&[ready], &l, true, false).start, 1);
        // Busy for long (serving a slow request): not starting.
        assert_eq!(decide(&[up(1, None)], &l, true, false).start, 1);
    }

    #[test]
    fn never_more_than_max_backends() {
        let l = limits(0, 2);
        let two = [up(1, None), up(2, None)];
        let p = decide(&two, &l, true, false);
        assert_eq!((p.start, p.at_max), (0, true));
        assert!(!decide(&two, &l, false, false).at_max);
        // min above what runs is bounded by the config rule min <= max; running above
        // max (a shrinking reload) starts nothing.
        let three = [up(1, None), up(2, None), up(3, None)];
        assert_eq!(decide(&three, &l, true, false).start, 0);
    }

    #[test]
    fn idle_ones_stop_down_to_min_longest_idle_first() {
        let l = limits(1, 8);
        let b = [up(1, Some(61)), up(2, Some(90)), up(3, Some(10)), up(4, None)];
        assert_eq!(decide(&b, &l, false, false).stop, vec![2, 1]);
        // Down to min only.
        let all_idle = [up(1, Some(61)), up(2, Some(90))];
        assert_eq!(decide(&all_idle, &l, false, false).stop, vec![2]);
        // A connection waits: nobody is idle.
        assert!(decide(&b, &l, true, false).stop.is_empty());
        let zero = limits(0, 8);
        assert_eq!(decide(&all_idle, &zero, false, false).stop, vec![2, 1]);
    }
}
