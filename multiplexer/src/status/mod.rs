//! The server-status page: which format a request asked for, and the pure functions
//! that render a [`Snapshot`] as Peruser's HTML tables, Apache's `?auto` text, JSON or
//! Prometheus text. Nothing here does I/O except `?auto`'s read of `/proc/loadavg`.

mod auto;
mod html;
mod json;
mod metrics;
pub mod model;

use crate::status::model::{ChildRow, ChildState, Role, Snapshot};

pub use auto::read_loadavg;

/// Content-Type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Shortest and longest `refresh=N` accepted; values outside are clamped.
const REFRESH_MIN: u32 = 1;
const REFRESH_MAX: u32 = 3600;

/// What a server-status request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The status page with Peruser's child table, reloaded every `refresh` seconds.
    Html { refresh: Option<u32> },
    /// `?peruser_stats`: one row per environment.
    PeruserStats,
    /// `?auto`: Apache mod_status's machine-readable text.
    Auto,
    /// `?json`.
    Json,
}

/// Parses the query string of a server-status request (`refresh=N` (clamp 1..=3600),
/// `peruser_stats`, `auto`, `json`; Apache accepts them combined like `?auto&refresh=5`
/// — auto wins over html; unknown keys are ignored).
///
/// Precedence when several are given: `json`, then `auto`, then `peruser_stats`, then
/// the HTML page (Peruser's hook does nothing for `?auto`, so `auto` beats
/// `peruser_stats`). `refresh` without a number, or with one that does not parse, means
/// 1 second, as in Apache. Pairs are separated by `&` or `;`; keys are case-sensitive.
pub fn parse_query(query: Option<&str>) -> Format {
    let (mut json, mut auto, mut stats, mut refresh) = (false, false, false, None);
    for pair in query.unwrap_or("").split(['&', ';']) {
        let (key, value) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        match key {
            "json" => json = true,
            "auto" => auto = true,
            "peruser_stats" => stats = true,
            "refresh" => refresh = Some(parse_refresh(value)),
            _ => {}
        }
    }
    if json {
        Format::Json
    } else if auto {
        Format::Auto
    } else if stats {
        Format::PeruserStats
    } else {
        Format::Html { refresh }
    }
}

/// `refresh`'s value like Apache's `atol`: leading digits count, anything else is 1.
fn parse_refresh(value: Option<&str>) -> u32 {
    let value = value.unwrap_or("").trim_start();
    let (negative, digits) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    let end = digits.bytes().take_while(u8::is_ascii_digit).count();
    if negative || end == 0 {
        return REFRESH_MIN;
    }
    // Too many digits to parse is simply "very long".
    let n: u64 = digits[..end].parse().unwrap_or(u64::MAX);
    n.clamp(u64::from(REFRESH_MIN), u64::from(REFRESH_MAX)) as u32
}

/// Body and Content-Type for a server-status response.
pub fn render(snapshot: &Snapshot, format: &Format) -> (String, &'static str) {
    match *format {
        Format::Html { refresh } => (html::status_page(snapshot, refresh), HTML),
        Format::PeruserStats => (html::stats_page(snapshot), HTML),
        Format::Auto => (auto::render(snapshot, read_loadavg()), TEXT),
        Format::Json => (json::render(snapshot), JSON),
    }
}

/// Prometheus text exposition (Content-Type "text/plain; version=0.0.4; charset=utf-8",
/// [`PROMETHEUS_CONTENT_TYPE`]).
pub fn prometheus(snapshot: &Snapshot) -> String {
    metrics::render(snapshot)
}

/// Server-wide sums shared by the HTML page, `?auto` and JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    /// Requests served by all environments.
    requests: u64,
    bytes: u64,
    duration_us: u64,
    /// Connections open anywhere right now (each is held by one child at a time).
    active_conns: u64,
    dropped: u64,
    processes: u64,
    multiplexers: u64,
    /// Processors and spares in Busy.
    busy: u64,
    /// Children of any role in Stopping.
    stopping: u64,
    /// Processors and spares that are Ready or Starting, plus multiplexers not stopping.
    idle: u64,
}

impl Totals {
    fn of(s: &Snapshot) -> Totals {
        let mut t = Totals::default();
        for e in &s.environments {
            t.requests = t.requests.saturating_add(e.requests);
            t.bytes = t.bytes.saturating_add(e.bytes);
            t.duration_us = t.duration_us.saturating_add(e.duration_us);
            t.dropped = t.dropped.saturating_add(e.dropped());
        }
        for c in &s.children {
            t.processes += 1;
            t.active_conns = t.active_conns.saturating_add(c.active_conns);
            match (c.role, c.state) {
                (_, ChildState::Stopping) => t.stopping += 1,
                (Role::Multiplexer, _) => t.idle += 1,
                (_, ChildState::Busy) => t.busy += 1,
                (_, ChildState::Ready | ChildState::Starting) => t.idle += 1,
            }
            if c.role == Role::Multiplexer {
                t.multiplexers += 1;
            }
        }
        t
    }
}

/// The children in table order (by id).
fn children_by_id(s: &Snapshot) -> Vec<&ChildRow> {
    let mut v: Vec<&ChildRow> = s.children.iter().collect();
    v.sort_by_key(|c| c.id);
    v
}

/// Apache's `DEFAULT_TIME_FORMAT` (`%A, %d-%b-%Y %H:%M:%S %Z`), in UTC:
/// `Monday, 23-Nov-2026 01:13:34 UTC`.
fn apache_time(ms: u64) -> String {
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02}-{}-{} {:02}:{:02}:{:02} UTC",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month (1..=12), day (1..=31) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Apache's `show_time`: "1 day 2 hours 3 minutes 4 seconds", zero parts left out, and
/// the empty string for 0.
fn human_uptime(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "day"),
        (secs / 3600 % 24, "hour"),
        (secs / 60 % 60, "minute"),
        (secs % 60, "second"),
    ];
    let words: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    words.join(" ")
}

/// A float as APR's `%g` prints it: six significant digits, trailing zeros dropped,
/// exponent form below 1e-4 or from 1e6, and no "0" before the point (`.5`).
fn apache_g(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return "0".to_owned();
    }
    // Rounding to six significant digits first gives the exponent %g decides with.
    let sci = format!("{:.5e}", x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let out = if !(-4..6).contains(&exp) {
        format!(
            "{}e{}{:02}",
            strip_zeros(mantissa),
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        )
    } else {
        let decimals = (5 - exp) as usize;
        strip_zeros(&format!("{:.*}", decimals, x)).to_owned()
    };
    if let Some(rest) = out.strip_prefix("0.") {
        format!(".{rest}")
    } else if let Some(rest) = out.strip_prefix("-0.") {
        format!("-.{rest}")
    } else {
        out
    }
}

/// "1.500" → "1.5", "2.000" → "2"; strings without a point are returned as they are.
fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
pub(crate) mod sample;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_formats() {
        assert_eq!(parse_query(None), Format::Html { refresh: None });
        assert_eq!(parse_query(Some("")), Format::Html { refresh: None });
        assert_eq!(parse_query(Some("auto")), Format::Auto);
        assert_eq!(parse_query(Some("auto&refresh=5")), Format::Auto);
        assert_eq!(parse_query(Some("refresh=5&auto")), Format::Auto);
        assert_eq!(parse_query(Some("peruser_stats")), Format::PeruserStats);
        assert_eq!(parse_query(Some("peruser_stats&auto")), Format::Auto);
        assert_eq!(parse_query(Some("json")), Format::Json);
        assert_eq!(parse_query(Some("auto;json")), Format::Json);
        assert_eq!(parse_query(Some("nonsense=1&x")), Format::Html { refresh: None });
        assert_eq!(parse_query(Some("AUTO")), Format::Html { refresh: None });
    }

    #[test]
    fn query_refresh() {
        let r = |q| match parse_query(Some(q)) {
            Format::Html { refresh } => refresh,
            f => panic!("{q}: {f:?}"),
        };
        assert_eq!(r("refresh=5"), Some(5));
        assert_eq!(r("refresh=0"), Some(1));
        assert_eq!(r("refresh=-3"), Some(1));
        assert_eq!(r("refresh"), Some(1));
        assert_eq!(r("refresh="), Some(1));
        assert_eq!(r("refresh=abc"), Some(1));
        assert_eq!(r("refresh=7s"), Some(7));
        assert_eq!(r("refresh=3601"), Some(3600));
        assert_eq!(r("refresh=99999999999999999999999"), Some(3600));
        assert_eq!(r("x=1&refresh=10"), Some(10));
    }

    #[test]
    fn time_format() {
        // 2026-11-23 01:13:34 UTC, the reference capture.
        assert_eq!(apache_time(1_795_396_414_000), "Monday, 23-Nov-2026 01:13:34 UTC");
        assert_eq!(apache_time(0), "Thursday, 01-Jan-1970 00:00:00 UTC");
        assert_eq!(apache_time(951_782_400_999), "Tuesday, 29-Feb-2000 00:00:00 UTC");
    }

    #[test]
    fn uptime_words() {
        assert_eq!(human_uptime(0), "");
        assert_eq!(human_uptime(2), "2 seconds");
        assert_eq!(human_uptime(3723), "1 hour 2 minutes 3 seconds");
        assert_eq!(human_uptime(86_400 + 60), "1 day 1 minute");
        assert_eq!(
            human_uptime(3 * 86_400 + 14 * 3600 + 7 * 60 + 49),
            "3 days 14 hours 7 minutes 49 seconds"
        );
    }

    #[test]
    fn g_format() {
        assert_eq!(apache_g(0.0), "0");
        assert_eq!(apache_g(0.5), ".5");
        assert_eq!(apache_g(512.0), "512");
        assert_eq!(apache_g(1024.0), "1024");
        assert_eq!(apache_g(171.0391), "171.039");
        assert_eq!(apache_g(0.069678), ".069678");
        assert_eq!(apache_g(0.04499), ".04499");
        assert_eq!(apache_g(2.0 / 3.0), ".666667");
        assert_eq!(apache_g(999_999.4), "999999");
        assert_eq!(apache_g(999_999.6), "1e+06");
        assert_eq!(apache_g(1_234_567.0), "1.23457e+06");
        assert_eq!(apache_g(0.00001234), "1.234e-05");
        assert_eq!(apache_g(0.0001), ".0001");
        assert_eq!(apache_g(f64::NAN), "0");
    }

    #[test]
    fn totals_add_up() {
        let s = sample::snapshot();
        let t = Totals::of(&s);
        assert_eq!(t.processes, 5);
        assert_eq!(t.busy + t.idle + t.stopping, t.processes);
        assert_eq!(t.requests, s.environments.iter().map(|e| e.requests).sum::<u64>());
    }
}
