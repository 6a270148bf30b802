//! `?auto`: Apache mod_status's machine-readable "Key: value" text, in Apache's order,
//! so that tools written for Apache (Debian's prometheus-apache-exporter, collectd,
//! telegraf) read bulkhead too.
//!
//! Differences from Apache, each deliberate:
//! - `Server Built` and the `CPU*` lines are left out: bulkhead has no build date, and
//!   the multiplexer's own CPU time is not the server's (the exporter reads missing keys
//!   as absent, while zeros would be reported as real).
//! - `ReqPerSec`, `BytesPerSec`, `BytesPerReq` and `DurationPerReq` are always printed
//!   (0 when there is nothing to divide by) where Apache omits them.
//! - The scoreboard has one character per child, not per thread, padded with `.` up to
//!   `server_limit`.

use std::fmt::Write;

use crate::status::model::{ChildState, Snapshot};

use super::{apache_g, apache_time, children_by_id, human_uptime, Totals};

/// Longest scoreboard line padded with open slots: `server_limit` may be configured up
/// to `u32::MAX`, and one request must not allocate gigabytes.
const MAX_SCOREBOARD: u64 = 65_536;

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`; `None` where it cannot be
/// read (a chroot without `/proc`).
pub fn read_loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<f64>);
    Some([fields.next()?.ok()?, fields.next()?.ok()?, fields.next()?.ok()?])
}

/// Apache's scoreboard character for a child's state.
fn scoreboard_char(state: ChildState) -> char {
    match state {
        ChildState::Starting => 'S',
        ChildState::Ready => '_',
        ChildState::Busy => 'W',
        ChildState::Stopping => 'G',
    }
}

/// The `?auto` body; `load` is what [`read_loadavg`] returned (0.00 when `None`).
pub(super) fn render(s: &Snapshot, load: Option<[f64; 3]>) -> String {
    let t = Totals::of(s);
    let uptime = s.uptime_seconds();
    let load = load.unwrap_or([0.0; 3]);
    let per_sec = |x: u64| {
        if uptime == 0 {
            0.0
        } else {
            x as f64 / uptime as f64
        }
    };
    let per_req = |x: f64| {
        if t.requests == 0 {
            0.0
        } else {
            x / t.requests as f64
        }
    };

    let mut o = String::with_capacity(1024);
    // Writing to a String cannot fail.
    let _ = writeln!(o, "{}", one_line(&s.server_name));
    let _ = writeln!(o, "ServerVersion: {}", one_line(&s.server_version));
    let _ = writeln!(o, "ServerMPM: peruser");
    let _ = writeln!(o, "CurrentTime: {}", apache_time(s.now_ms));
    let _ = writeln!(o, "RestartTime: {}", apache_time(s.started_ms));
    let _ = writeln!(
        o,
        "ParentServerConfigGeneration: {}",
        s.generation.saturating_add(1)
    );
    let _ = writeln!(o, "ParentServerMPMGeneration: {}", s.generation);
    let _ = writeln!(o, "ServerUptimeSeconds: {uptime}");
    let _ = writeln!(o, "ServerUptime: {}", human_uptime(uptime));
    let _ = writeln!(o, "Load1: {:.2}", load[0]);
    let _ = writeln!(o, "Load5: {:.2}", load[1]);
    let _ = writeln!(o, "Load15: {:.2}", load[2]);
    let _ = writeln!(o, "Total Accesses: {}", t.requests);
    let _ = writeln!(o, "Total kBytes: {}", t.bytes / 1024);
    let _ = writeln!(o, "Total Duration: {}", t.duration_us / 1000);
    let _ = writeln!(o, "Uptime: {uptime}");
    let _ = writeln!(o, "ReqPerSec: {}", apache_g(per_sec(t.requests)));
    let _ = writeln!(o, "BytesPerSec: {}", apache_g(per_sec(t.bytes)));
    let _ = writeln!(o, "BytesPerReq: {}", apache_g(per_req(t.bytes as f64)));
    let _ = writeln!(
        o,
        "DurationPerReq: {}",
        apache_g(per_req(t.duration_us as f64 / 1000.0))
    );
    let _ = writeln!(o, "BusyWorkers: {}", t.busy);
    let _ = writeln!(o, "GracefulWorkers: {}", t.stopping);
    let _ = writeln!(o, "IdleWorkers: {}", t.idle);
    let _ = writeln!(o, "Processes: {}", t.processes);
    let _ = writeln!(o, "Stopping: {}", t.stopping);
    let _ = writeln!(o, "ConnsTotal: {}", t.active_conns);
    let _ = writeln!(o, "ConnsAsyncWaitIO: 0");
    let _ = writeln!(o, "ConnsAsyncWriting: 0");
    let _ = writeln!(o, "ConnsAsyncKeepAlive: 0");
    let _ = writeln!(o, "ConnsAsyncClosing: 0");
    o.push_str("Scoreboard: ");
    let children = children_by_id(s);
    o.extend(children.iter().map(|c| scoreboard_char(c.state)));
    let slots = s.server_limit.min(MAX_SCOREBOARD) as usize;
    o.extend(std::iter::repeat_n('.', slots.saturating_sub(children.len())));
    o.push('\n');
    o
}

/// A value on one line: a Host header or name can't break the "Key: value" framing.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::super::sample::{self, NOW_MS, UPTIME_S};
    use super::*;

    /// The keys, in order, after the first line (the server name).
    const KEYS: [&str; 30] = [
        "ServerVersion",
        "ServerMPM",
        "CurrentTime",
        "RestartTime",
        "ParentServerConfigGeneration",
        "ParentServerMPMGeneration",
        "ServerUptimeSeconds",
        "ServerUptime",
        "Load1",
        "Load5",
        "Load15",
        "Total Accesses",
        "Total kBytes",
        "Total Duration",
        "Uptime",
        "ReqPerSec",
        "BytesPerSec",
        "BytesPerReq",
        "DurationPerReq",
        "BusyWorkers",
        "GracefulWorkers",
        "IdleWorkers",
        "Processes",
        "Stopping",
        "ConnsTotal",
        "ConnsAsyncWaitIO",
        "ConnsAsyncWriting",
        "ConnsAsyncKeepAlive",
        "ConnsAsyncClosing",
        "Scoreboard",
    ];

    fn pairs(body: &str) -> Vec<(&str, &str)> {
        body.lines()
            .skip(1)
            .map(|l| {
                l.split_once(": ")
                    .unwrap_or_else(|| panic!("not Key: value: {l:?}"))
            })
            .collect()
    }

    fn value<'a>(body: &'a str, key: &str) -> &'a str {
        pairs(body)
            .into_iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
    }

    #[test]
    fn keys_in_apache_order() {
        let body = render(&sample::snapshot(), Some([0.47, 0.53, 0.23]));
        assert!(body.ends_with('\n'));
        assert_eq!(body.lines().next(), Some("status.example"));
        let keys: Vec<&str> = pairs(&body).iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, KEYS);
    }

    #[test]
    fn values() {
        let body = render(&sample::snapshot(), Some([0.47, 0.53, 0.23]));
        assert!(body.contains("\nServerVersion: bulkhead/0.1.0\n"), "{body}");
        assert_eq!(value(&body, "ServerMPM"), "peruser");
        assert_eq!(value(&body, "CurrentTime"), "Monday, 23-Nov-2026 01:13:34 UTC");
        assert_eq!(value(&body, "RestartTime"), apache_time(NOW_MS - UPTIME_S * 1000));
        assert_eq!(value(&body, "ParentServerConfigGeneration"), "1");
        assert_eq!(value(&body, "ParentServerMPMGeneration"), "0");
        assert_eq!(value(&body, "ServerUptimeSeconds"), "3723");
        assert_eq!(value(&body, "ServerUptime"), "1 hour 2 minutes 3 seconds");
        assert_eq!(value(&body, "Load1"), "0.47");
        assert_eq!(value(&body, "Load15"), "0.23");
        // blog 10 + shop 1500 requests, 2_265_000 bytes, 10_570 ms.
        assert_eq!(value(&body, "Total Accesses"), "1510");
        assert_eq!(value(&body, "Total kBytes"), "2211");
        assert_eq!(value(&body, "Total Duration"), "10570");
        assert_eq!(value(&body, "Uptime"), "3723");
        assert_eq!(value(&body, "ReqPerSec"), ".405587");
        assert_eq!(value(&body, "BytesPerSec"), "608.38");
        assert_eq!(value(&body, "BytesPerReq"), "1500");
        assert_eq!(value(&body, "DurationPerReq"), "7");
        assert_eq!(value(&body, "BusyWorkers"), "1");
        assert_eq!(value(&body, "GracefulWorkers"), "1");
        assert_eq!(value(&body, "IdleWorkers"), "3");
        assert_eq!(value(&body, "Processes"), "5");
        assert_eq!(value(&body, "Stopping"), "1");
        // active_conns of children 0..=4 are id % 3.
        assert_eq!(value(&body, "ConnsTotal"), "4");
        assert_eq!(value(&body, "Scoreboard"), "_W_GS...........");
    }

    #[test]
    fn scoreboard_is_server_limit_long() {
        let mut s = sample::snapshot();
        for limit in [5, 16, 256] {
            s.server_limit = limit;
            let body = render(&s, None);
            assert_eq!(value(&body, "Scoreboard").len() as u64, limit);
        }
        // More children than slots: every child is still shown.
        s.server_limit = 2;
        assert_eq!(value(&render(&s, None), "Scoreboard"), "_W_GS");
        // A huge limit is capped.
        s.server_limit = u64::from(u32::MAX);
        assert_eq!(
            value(&render(&s, None), "Scoreboard").len() as u64,
            MAX_SCOREBOARD
        );
    }

    #[test]
    fn empty_server() {
        let mut s = sample::snapshot();
        s.children.clear();
        s.environments.clear();
        s.vhosts.clear();
        s.started_ms = s.now_ms;
        let body = render(&s, None);
        assert_eq!(value(&body, "Load1"), "0.00");
        assert_eq!(value(&body, "ReqPerSec"), "0");
        assert_eq!(value(&body, "DurationPerReq"), "0");
        assert!(body.contains("\nServerUptime: \n"), "{body}");
        // Every numeric value parses as a float (the exporter's ParseFloat).
        for (k, v) in pairs(&body) {
            if !matches!(
                k,
                "ServerVersion" | "ServerMPM" | "CurrentTime" | "RestartTime" | "ServerUptime" | "Scoreboard"
            ) {
                assert!(v.parse::<f64>().is_ok(), "{k}: {v}");
            }
        }
    }

    #[test]
    fn name_cannot_add_lines() {
        let mut s = sample::snapshot();
        s.server_name = "evil\r\nBusyWorkers: 999".to_owned();
        let body = render(&s, None);
        assert_eq!(body.lines().filter(|l| l.starts_with("BusyWorkers")).count(), 1);
    }

    #[test]
    fn loadavg_parsing() {
        assert_eq!(
            parse_loadavg("0.47 0.53 0.23 1/123 4567\n"),
            Some([0.47, 0.53, 0.23])
        );
        assert_eq!(parse_loadavg("0.47 x 0.23"), None);
        assert_eq!(parse_loadavg(""), None);
    }
}
