//! `?json`: the snapshot as it is, plus the server-wide totals the other formats derive
//! (`uptime_seconds`, `totals`), for scripts that would rather not parse HTML.

use crate::status::model::Snapshot;
use serde_json::{json, Value};

use super::Totals;

pub(super) fn render(s: &Snapshot) -> String {
    let t = Totals::of(s);
    // Serializing plain structs of numbers and strings cannot fail; if it ever did,
    // the page says so instead of panicking.
    let mut v = serde_json::to_value(s).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    if let Value::Object(map) = &mut v {
        map.insert("uptime_seconds".to_owned(), json!(s.uptime_seconds()));
        map.insert(
            "totals".to_owned(),
            json!({
                "requests": t.requests,
                "bytes": t.bytes,
                "duration_us": t.duration_us,
                "dropped": t.dropped,
                "active_conns": t.active_conns,
                "processes": t.processes,
                "multiplexers": t.multiplexers,
                "busy": t.busy,
                "idle": t.idle,
                "stopping": t.stopping,
            }),
        );
    }
    let mut out = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".to_owned());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::super::sample;
    use super::*;

    #[test]
    fn snapshot_and_totals() {
        let body = render(&sample::snapshot());
        let v: Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(v["server_version"], "bulkhead/0.1.0");
        assert_eq!(v["uptime_seconds"], sample::UPTIME_S);
        assert_eq!(v["children"].as_array().map(Vec::len), Some(5));
        assert_eq!(v["environments"][1]["name"], "shop");
        assert_eq!(v["vhosts"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["totals"]["requests"], 1510);
        assert_eq!(v["totals"]["dropped"], 35);
        assert_eq!(v["totals"]["processes"], 5);
        assert_eq!(v["children"][0]["state"], "Stopping");
    }
}
