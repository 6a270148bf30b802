//! systemd's notification protocol (`sd_notify(3)`, through the `sd-notify` crate):
//! `READY=1` once the listeners are bound and every first child is up, `RELOADING=1`
//! with `MONOTONIC_USEC` then `READY=1` around a reload, `STOPPING=1`, a `STATUS=`
//! line a person can read whenever what it says changes, and `WATCHDOG=1` at half the
//! unit's `WatchdogSec` from the event loop (so a wedged loop is what the watchdog
//! catches). Without `NOTIFY_SOCKET` every call does nothing.
//!
//! `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` stay in the supervisor's own
//! environment (it notifies until it exits) and never reach a child: `spawn.rs`
//! clears every child's environment, and a backend's is built from nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::debug;

/// What the supervisor last told the service manager.
#[derive(Debug)]
pub(crate) struct Notifier {
    status: String,
    /// Half of `WatchdogSec`, when the unit has one for this process.
    watchdog: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    pub(crate) fn new() -> Notifier {
        Notifier {
            status: String::new(),
            watchdog: sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(100))),
            last_ping: Instant::now(),
        }
    }

    /// How often the event loop must call [`Self::tick`] (`None`: no watchdog).
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Startup is finished (or a reload is).
    pub(crate) fn ready(&mut self, status: String) {
        self.status = status;
        send(&[NotifyState::Ready, NotifyState::Status(&self.status)]);
    }

    /// A reload begins.
    pub(crate) fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading the configuration"),
            ]),
            Err(e) => debug!("sd_notify: CLOCK_MONOTONIC: {e}"),
        }
    }

    /// A stop begins.
    pub(crate) fn stopping(&mut self, status: &str) {
        send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// The status line, sent only when it changed.
    pub(crate) fn status(&mut self, status: String) {
        if status != self.status {
            self.status = status;
            send(&[NotifyState::Status(&self.status)]);
        }
    }

    /// The watchdog's keep-alive, at most once per interval.
    pub(crate) fn tick(&mut self) {
        if let Some(every) = self.watchdog {
            if self.last_ping.elapsed() >= every {
                self.last_ping = Instant::now();
                send(&[NotifyState::Watchdog]);
            }
        }
    }
}

/// One datagram to `NOTIFY_SOCKET`; a failure is logged at debug level only (the
/// service manager may be gone while we stop, and serving matters more).
fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        debug!("sd_notify: {e}");
    }
}

/// The `STATUS=` line: environments, processors, FastCGI backends and the generation.
pub(crate) fn status_line(
    environments: usize,
    processors: usize,
    backends: usize,
    generation: u64,
) -> String {
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut s = format!(
        "serving {}, {}",
        plural(environments, "environment", "environments"),
        plural(processors, "processor", "processors"),
    );
    if backends > 0 {
        s.push_str(&format!(
            ", {}",
            plural(backends, "FastCGI backend", "FastCGI backends")
        ));
    }
    s.push_str(&format!("; configuration generation {generation}"));
    s
}

#[cfg(test)]
mod tests {
    use super::status_line;

    #[test]
    fn status_reads_as_a_sentence() {
        assert_eq!(
            status_line(2, 3, 0, 0),
            "serving 2 environments, 3 processors; configuration generation 0"
        );
        assert_eq!(
            status_line(1, 1, 1, 4),
            "serving 1 environment, 1 processor, 1 FastCGI backend; configuration generation 4"
        );
    }
}
