//! The request keys with Apache's names: `limit_request_line`, `limit_request_fields`,
//! `limit_request_field_size` (`[server]` only: the multiplexers parse the first head
//! before any vhost is known, as Apache allows them only server-wide for the same
//! reason), `keep_alive_max_requests` (MaxKeepAliveRequests) and the read timeouts with
//! a minimum rate, `request_head_timeout` and `request_body_timeout` (mod_reqtimeout's
//! `header=20-40,MinRate=500 body=20,MinRate=500`), the last two `[server]`'s
//! defaults and a vhost's own.

use std::time::Duration;

use crate::error::Report;
use crate::limits::MAX_TIMEOUT_SECS;
use crate::model::{HeadLimits, ReadTimeout};
use crate::tree::{Entry, IntOrStr, Table};

/// The `[server]` keys of this module.
pub(crate) const SERVER_KEYS: &[&str] = &[
    "limit_request_line",
    "limit_request_fields",
    "limit_request_field_size",
    "keep_alive_max_requests",
    "request_body_timeout",
];
/// The vhost keys of this module.
pub(crate) const VHOST_KEYS: &[&str] = &["keep_alive_max_requests", "request_body_timeout"];

/// The most `limit_request_fields` may be (the parser's header slots).
const MAX_FIELDS: i64 = common::head::MAX_HEADERS as i64;

/// What a read timeout is written as.
const SHAPE: &str = "seconds or an array [initial, maximum, min_rate]";

/// mod_reqtimeout's default for a head: 20 s, up to 40 s at 500 bytes/s.
pub(crate) const DEFAULT_TIMEOUT: ReadTimeout = ReadTimeout {
    initial: Duration::from_secs(20),
    max: Duration::from_secs(40),
    min_rate: 500,
};

/// mod_reqtimeout's default for a body: 20 s, extended at 500 bytes/s with no maximum
/// (`body=20,MinRate=500`), so an upload of any size at a sane rate completes.
pub(crate) const DEFAULT_BODY_TIMEOUT: ReadTimeout = ReadTimeout {
    initial: Duration::from_secs(20),
    max: Duration::ZERO,
    min_rate: 500,
};

/// Apache's MaxKeepAliveRequests default.
pub(crate) const DEFAULT_MAX_REQUESTS: u64 = 100;

/// `[server]`'s head limits; `head` is `limit_request_head` (for the messages).
pub(crate) fn head_limits(t: &Table, r: &mut Report) -> Option<HeadLimits> {
    let line = t.int_or(r, "limit_request_line", 8190, 64, 65536);
    let fields = t.int_or(r, "limit_request_fields", 100, 1, MAX_FIELDS);
    let field_size = t.int_or(r, "limit_request_field_size", 8190, 64, 65536);
    Some(HeadLimits {
        line: usize::try_from(line?).ok()?,
        fields: usize::try_from(fields?).ok()?,
        field_size: usize::try_from(field_size?).ok()?,
    })
}

/// `keep_alive_max_requests` in `t`: `Some(None)` when absent, `None` when invalid.
pub(crate) fn max_requests(t: &Table, r: &mut Report) -> Option<Option<u64>> {
    match t.get("keep_alive_max_requests") {
        None => Some(None),
        Some(e) => Some(Some(u64::try_from(e.int_in(r, 0, i64::from(u32::MAX))?).ok()?)),
    }
}

/// A read timeout key in `t`: `Some(None)` when absent, `None` when invalid.
/// `N` (seconds, at least `min_secs`) or `[initial, maximum, min_rate]`.
pub(crate) fn read_timeout(
    t: &Table,
    r: &mut Report,
    key: &str,
    min_secs: i64,
) -> Option<Option<ReadTimeout>> {
    match t.get(key) {
        None => Some(None),
        Some(e) => Some(Some(parse(&e, r, min_secs)?)),
    }
}

fn parse(e: &Entry, r: &mut Report, min_secs: i64) -> Option<ReadTimeout> {
    if e.is_array() {
        return parse_array(e, r, min_secs);
    }
    if let IntOrStr::Str(_) = e.int_or_str_as(r, SHAPE)? {
        e.error(r, format!("expected {SHAPE}, found a string"));
        return None;
    }
    let initial = Duration::from_secs(u64::try_from(e.int_in(r, min_secs, MAX_TIMEOUT_SECS)?).ok()?);
    Some(ReadTimeout {
        initial,
        max: initial,
        min_rate: 0,
    })
}

/// `[initial, maximum, min_rate]`: the array form, reported with each element's path.
fn parse_array(e: &Entry, r: &mut Report, min_secs: i64) -> Option<ReadTimeout> {
    let elements = e.array_shaped(r, SHAPE)?;
    let [initial, max, rate] = &elements[..] else {
        e.error(
            r,
            format!(
                "expected [initial seconds, maximum seconds, bytes per second], got {} values",
                elements.len()
            ),
        );
        return None;
    };
    let i = initial.int_in(r, min_secs, MAX_TIMEOUT_SECS);
    let m = max.int_in(r, 0, MAX_TIMEOUT_SECS);
    let rate = rate.int_in(r, 0, i64::from(u32::MAX));
    let (i, m, rate) = (i?, m?, rate?);
    if m != 0 && m < i {
        max.error(
            r,
            format!("the maximum ({m} s) is below the initial timeout ({i} s); 0 means none"),
        );
        return None;
    }
    let secs = |v: i64| Duration::from_secs(u64::try_from(v).unwrap_or(0));
    Some(ReadTimeout {
        initial: secs(i),
        max: secs(m),
        min_rate: u64::try_from(rate).ok()?,
    })
}
