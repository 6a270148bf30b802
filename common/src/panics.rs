//! What a panic leaves: one error line naming the role and the environment, and
//! counters released by drop guards ([`Release`]) rather than paired calls, so a
//! connection task that panics gives back what it took. A panic is a bug; input must
//! never cause one, but when it does the process neither goes quiet nor leaks.

use std::sync::OnceLock;

static WHO: OnceLock<(String, String)> = OnceLock::new();

/// Replaces the default hook (which prints to stderr without context) by one error line
/// through `tracing`, with the role and, for a processor, its environment.
pub fn log_panics(role: &str, environment: Option<&str>) {
    let _ = WHO.set((role.to_owned(), environment.unwrap_or("-").to_owned()));
    std::panic::set_hook(Box::new(|info| {
        let (role, environment) = WHO
            .get()
            .map(|(r, e)| (r.as_str(), e.as_str()))
            .unwrap_or(("?", "-"));
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(role, environment, "panicked at {location}: {message}");
    }));
}

/// Runs `release` when dropped: on return, on `?`, and while a panic unwinds.
pub struct Release<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Release<F> {
    pub fn new(release: F) -> Self {
        Release(Some(release))
    }
}

impl<F: FnOnce()> Drop for Release<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn released_on_panic() {
        let count = Cell::new(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = Release::new(|| count.set(count.get() - 1));
            panic!("boom");
        }));
        assert!(r.is_err());
        assert_eq!(count.get(), 0);
    }
}
