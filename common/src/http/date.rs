//! The `Date` header value, formatted once per second per thread (as nginx caches its
//! time): both roles' runtimes are single-threaded.

use std::time::SystemTime;

/// The current time as an HTTP-date.
pub fn now() -> String {
    with_now(str::to_owned)
}

/// `f` with the current date as [`now`] formats it, without a copy.
pub fn with_now<T>(f: impl FnOnce(&str) -> T) -> T {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                *c = (secs, httpdate::fmt_http_date(now));
            }
        }
        f(&c.borrow().1)
    })
}
