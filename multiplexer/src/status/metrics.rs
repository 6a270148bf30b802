//! Prometheus text exposition of a snapshot, and every `bulkhead_*` metric name.
//!
//! A fresh registry per scrape: the numbers live in the scoreboard, so each counter is
//! created at zero and raised once by the value read (`inc_by`), which keeps its type a
//! counter. The request-duration histogram already exists as bucket counts, which the
//! crate's `Histogram` cannot be set from, so it is built as a `proto::MetricFamily` and
//! encoded together with the registry's families.

use std::collections::BTreeMap;

use crate::status::model::{ChildState, Role, Snapshot, DURATION_BUCKETS_MS};
use prometheus::core::{Collector, GenericCounterVec, GenericGaugeVec};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    CounterVec, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub(crate) const REQUESTS: &str = "bulkhead_requests_total";
pub(crate) const SENT_BYTES: &str = "bulkhead_sent_bytes_total";
pub(crate) const REQUEST_DURATION: &str = "bulkhead_request_duration_seconds";
pub(crate) const PROCESSORS: &str = "bulkhead_processors";
pub(crate) const AVAILABILITY: &str = "bulkhead_availability";
pub(crate) const DROPPED: &str = "bulkhead_dropped_requests_total";
pub(crate) const HANDOFFS: &str = "bulkhead_handoffs_total";
pub(crate) const HANDBACKS: &str = "bulkhead_handbacks_total";
pub(crate) const SPAWNS: &str = "bulkhead_spawns_total";
pub(crate) const COLD_START_SECONDS: &str = "bulkhead_cold_start_seconds_total";
pub(crate) const COLD_STARTS: &str = "bulkhead_cold_starts_total";
pub(crate) const CONNECTIONS: &str = "bulkhead_connections_total";
pub(crate) const ACTIVE_CONNECTIONS: &str = "bulkhead_active_connections";
pub(crate) const MULTIPLEXER_ACCEPTED: &str = "bulkhead_multiplexer_accepted_connections_total";
pub(crate) const MULTIPLEXERS: &str = "bulkhead_multiplexers";
pub(crate) const UP: &str = "bulkhead_up";
pub(crate) const START_TIME: &str = "bulkhead_start_time_seconds";
pub(crate) const BUILD_INFO: &str = "bulkhead_build_info";
pub(crate) const FASTCGI_BACKENDS: &str = "bulkhead_fastcgi_backends";
pub(crate) const FASTCGI_MAX_BACKENDS: &str = "bulkhead_fastcgi_max_backends";
pub(crate) const FASTCGI_WAITING: &str = "bulkhead_fastcgi_waiting_requests";
pub(crate) const FASTCGI_REQUESTS: &str = "bulkhead_fastcgi_requests_total";
pub(crate) const FASTCGI_ERRORS: &str = "bulkhead_fastcgi_errors_total";
pub(crate) const FASTCGI_STARTS: &str = "bulkhead_fastcgi_backend_starts_total";
pub(crate) const FASTCGI_DEATHS: &str = "bulkhead_fastcgi_backend_deaths_total";
pub(crate) const TLS_HANDSHAKES: &str = "bulkhead_tls_handshakes_total";
pub(crate) const TLS_RESUMED: &str = "bulkhead_tls_resumed_handshakes_total";
pub(crate) const TLS_FAILURES: &str = "bulkhead_tls_handshake_failures_total";
pub(crate) const MISDIRECTED: &str = "bulkhead_misdirected_requests_total";
pub(crate) const OOM_KILLS: &str = "bulkhead_oom_kills_total";
pub(crate) const PIDS_MAX_HITS: &str = "bulkhead_pids_max_hits_total";

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The text exposition; on an internal error (a metric definition the registry
/// rejects), a comment saying so, logged too.
pub(super) fn render(s: &Snapshot) -> String {
    match encode(s) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!("prometheus metrics: {e}");
            format!("# bulkhead: metrics unavailable: {e}\n")
        }
    }
}

fn encode(s: &Snapshot) -> prometheus::Result<String> {
    let registry = Registry::new();
    register_all(&registry, s)?;
    let mut families = registry.gather();
    if let Some(h) = duration_histogram(s) {
        families.push(h);
    }
    families.sort_by(|a, b| a.get_name().cmp(b.get_name()));
    TextEncoder::new().encode_to_string(&families)
}

/// Registers a collector and hands it back.
fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> prometheus::Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    reg(r, GenericCounterVec::new(Opts::new(name, help), labels)?)
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    reg(r, GenericGaugeVec::new(Opts::new(name, help), labels)?)
}

/// A u64 count as an `IntGauge` value.
fn int(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn register_all(r: &Registry, s: &Snapshot) -> prometheus::Result<()> {
    // Per vhost.
    let requests = counters(
        r,
        REQUESTS,
        "Requests served, by vhost and status class.",
        &["environment", "vhost", "code_class"],
    )?;
    let sent = counters(
        r,
        SENT_BYTES,
        "Response bytes sent, by vhost.",
        &["environment", "vhost"],
    )?;
    for v in &s.vhosts {
        for (class, n) in CODE_CLASSES.iter().zip(v.requests_by_class) {
            requests
                .with_label_values(&[&v.environment, &v.server_name, class])
                .inc_by(n);
        }
        sent.with_label_values(&[&v.environment, &v.server_name])
            .inc_by(v.bytes);
    }

    // Per environment.
    let env = &["environment"];
    let processors = gauges(
        r,
        PROCESSORS,
        "Processors of the environment, by state.",
        &["environment", "state"],
    )?;
    let availability = gauges(
        r,
        AVAILABILITY,
        "Availability of the environment's pool, 0-100 (Peruser's AVAIL).",
        env,
    )?;
    let dropped = counters(
        r,
        DROPPED,
        "Requests refused with 503, by reason.",
        &["environment", "reason"],
    )?;
    let handoffs = counters(
        r,
        HANDOFFS,
        "Connections passed by multiplexers to the environment.",
        env,
    )?;
    let handbacks = counters(
        r,
        HANDBACKS,
        "Connections the environment's processors handed back to a multiplexer.",
        env,
    )?;
    let spawns = counters(r, SPAWNS, "Processors started for the environment.", env)?;
    let cold_starts = counters(
        r,
        COLD_STARTS,
        "Processors assigned to the environment that became ready (cold starts).",
        env,
    )?;
    let cold_secs = reg(
        r,
        CounterVec::new(
            Opts::new(
                COLD_START_SECONDS,
                "Time from assigning a processor to the environment until it was ready.",
            ),
            env,
        )?,
    )?;
    let conns = counters(
        r,
        CONNECTIONS,
        "Connections received by the environment's processors.",
        env,
    )?;
    let active = gauges(
        r,
        ACTIVE_CONNECTIONS,
        "Connections the environment's processors hold now.",
        env,
    )?;
    let oom_kills = counters(
        r,
        OOM_KILLS,
        "Processes of the environment killed by the kernel at its cgroup's memory limit.",
        env,
    )?;
    let pids_max_hits = counters(
        r,
        PIDS_MAX_HITS,
        "Forks refused at the environment's cgroup pids.max.",
        env,
    )?;
    for e in &s.environments {
        let name: &str = &e.name;
        oom_kills.with_label_values(&[name]).inc_by(e.oom_kills);
        pids_max_hits.with_label_values(&[name]).inc_by(e.pids_max_hits);
        for state in ["busy", "idle", "starting", "stopping"] {
            processors.with_label_values(&[name, state]).set(0);
        }
        availability
            .with_label_values(&[name])
            .set(int(e.availability.min(100)));
        for (reason, n) in [
            ("saturated", e.dropped_saturated),
            ("vhost_limit", e.dropped_vhost_limit),
            ("error", e.dropped_error),
        ] {
            dropped.with_label_values(&[name, reason]).inc_by(n);
        }
        handoffs.with_label_values(&[name]).inc_by(e.handoffs);
        handbacks.with_label_values(&[name]).inc_by(e.handbacks);
        spawns.with_label_values(&[name]).inc_by(e.spawns);
        cold_starts.with_label_values(&[name]).inc_by(e.cold_starts);
        cold_secs
            .with_label_values(&[name])
            .inc_by(e.cold_start_us as f64 / 1e6);
        conns.with_label_values(&[name]).inc_by(e.connections);
        active.with_label_values(&[name]).set(int(e.active_conns));
    }
    for c in s.children.iter().filter(|c| c.role == Role::Processor) {
        if let Some(name) = &c.environment {
            let state = match c.state {
                ChildState::Busy => "busy",
                ChildState::Ready => "idle",
                ChildState::Starting => "starting",
                ChildState::Stopping => "stopping",
            };
            processors.with_label_values(&[name, state]).inc();
        }
    }

    fastcgi(r, s)?;
    tls(r, s)?;

    // Server-wide.
    let accepted = reg(
        r,
        IntCounter::new(MULTIPLEXER_ACCEPTED, "Connections accepted by the multiplexers.")?,
    )?;
    accepted.inc_by(s.accepted);
    let multiplexers = reg(r, IntGauge::new(MULTIPLEXERS, "Multiplexers running.")?)?;
    let n = s.children.iter().filter(|c| c.role == Role::Multiplexer).count();
    multiplexers.set(int(n as u64));
    reg(r, IntGauge::new(UP, "1 when the server answers.")?)?.set(1);
    let start = reg(
        r,
        Gauge::new(
            START_TIME,
            "When the supervisor started, seconds since the Unix epoch.",
        )?,
    )?;
    start.set(s.started_ms as f64 / 1000.0);
    let build = gauges(r, BUILD_INFO, "Always 1; the version is the label.", &["version"])?;
    let version = s
        .server_version
        .split_once('/')
        .map_or(&*s.server_version, |(_, v)| v);
    build.with_label_values(&[version]).set(1);
    Ok(())
}

/// The TLS handshakes of every environment with a certificate.
fn tls(r: &Registry, s: &Snapshot) -> prometheus::Result<()> {
    let env = &["environment"];
    let handshakes = counters(
        r,
        TLS_HANDSHAKES,
        "TLS handshakes completed by the environment's processors, by ALPN protocol chosen.",
        &["environment", "alpn"],
    )?;
    let resumed = counters(r, TLS_RESUMED, "TLS handshakes that resumed a session.", env)?;
    let failures = counters(
        r,
        TLS_FAILURES,
        "TLS handshakes that failed, by reason (timeout, server_name: disagreed with the routing, error).",
        &["environment", "reason"],
    )?;
    let misdirected = counters(
        r,
        MISDIRECTED,
        "Requests answered 421 on a TLS connection (a host of another vhost).",
        env,
    )?;
    for e in &s.environments {
        let Some(t) = &e.tls else { continue };
        let name: &str = &e.name;
        let http11 = t.alpn_http11.min(t.handshakes);
        let h2 = t.alpn_h2.min(t.handshakes - http11);
        handshakes.with_label_values(&[name, "http/1.1"]).inc_by(http11);
        handshakes.with_label_values(&[name, "h2"]).inc_by(h2);
        handshakes
            .with_label_values(&[name, "none"])
            .inc_by(t.handshakes - http11 - h2);
        resumed.with_label_values(&[name]).inc_by(t.resumed);
        failures
            .with_label_values(&[name, "timeout"])
            .inc_by(t.failed_timeout);
        failures
            .with_label_values(&[name, "server_name"])
            .inc_by(t.failed_server_name);
        failures
            .with_label_values(&[name, "error"])
            .inc_by(t.failed_error);
        misdirected.with_label_values(&[name]).inc_by(t.misdirected);
    }
    Ok(())
}

/// The FastCGI backends of every environment that has them.
fn fastcgi(r: &Registry, s: &Snapshot) -> prometheus::Result<()> {
    let env = &["environment"];
    let backends = gauges(
        r,
        FASTCGI_BACKENDS,
        "FastCGI backend processes running, by state (busy: serving a request).",
        &["environment", "state"],
    )?;
    let max = gauges(r, FASTCGI_MAX_BACKENDS, "The environment's max_backends.", env)?;
    let waiting = gauges(
        r,
        FASTCGI_WAITING,
        "FastCGI requests waiting for a backend (all running ones busy, or starting).",
        env,
    )?;
    let requests = counters(r, FASTCGI_REQUESTS, "Requests sent to the FastCGI backends.", env)?;
    let errors = counters(
        r,
        FASTCGI_ERRORS,
        "FastCGI requests answered 502 (no backend, refused, broken answer) or 504 (fastcgi_timeout).",
        &["environment", "status"],
    )?;
    let starts = counters(r, FASTCGI_STARTS, "FastCGI backend processes started.", env)?;
    let deaths = counters(
        r,
        FASTCGI_DEATHS,
        "FastCGI backend exits nobody asked for (a crash, a kill).",
        env,
    )?;
    for e in &s.environments {
        let Some(f) = &e.fastcgi else { continue };
        let name: &str = &e.name;
        backends.with_label_values(&[name, "busy"]).set(int(f.busy));
        backends.with_label_values(&[name, "idle"]).set(int(f.idle));
        max.with_label_values(&[name]).set(int(f.max_backends));
        waiting.with_label_values(&[name]).set(int(f.waiting));
        requests.with_label_values(&[name]).inc_by(f.requests);
        errors.with_label_values(&[name, "502"]).inc_by(f.bad_gateway);
        errors.with_label_values(&[name, "504"]).inc_by(f.timeouts);
        starts.with_label_values(&[name]).inc_by(f.starts);
        deaths.with_label_values(&[name]).inc_by(f.deaths);
    }
    Ok(())
}

/// `bulkhead_request_duration_seconds` from the vhosts' bucket counts; `None` when there
/// is no vhost (an empty family is an encoding error). Rows with the same environment
/// and name are summed, so no series appears twice.
fn duration_histogram(s: &Snapshot) -> Option<MetricFamily> {
    const BUCKETS: usize = DURATION_BUCKETS_MS.len() + 1;
    let mut merged: BTreeMap<(&str, &str), ([u64; BUCKETS], u64)> = BTreeMap::new();
    for v in &s.vhosts {
        let (counts, sum_us) = merged
            .entry((&v.environment, &v.server_name))
            .or_insert(([0; BUCKETS], 0));
        for (i, n) in v.histogram.iter().enumerate() {
            // Anything past the known buckets can only be in +Inf.
            let slot = &mut counts[i.min(BUCKETS - 1)];
            *slot = slot.saturating_add(*n);
        }
        *sum_us = sum_us.saturating_add(v.duration_us);
    }
    if merged.is_empty() {
        return None;
    }
    let mut family = MetricFamily::default();
    family.set_name(REQUEST_DURATION.to_owned());
    family.set_help("Request duration, by vhost.".to_owned());
    family.set_field_type(MetricType::HISTOGRAM);
    for ((environment, vhost), (counts, sum_us)) in merged {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0u64;
        for (bound_ms, n) in DURATION_BUCKETS_MS.iter().zip(counts) {
            cumulative = cumulative.saturating_add(n);
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound_ms as f64 / 1000.0);
            b.set_cumulative_count(cumulative);
            h.mut_bucket().push(b);
        }
        // The encoder writes the +Inf bucket from the count.
        h.set_sample_count(cumulative.saturating_add(counts[BUCKETS - 1]));
        h.set_sample_sum(sum_us as f64 / 1e6);
        let mut m = proto::Metric::default();
        for (name, value) in [("environment", environment), ("vhost", vhost)] {
            let mut l = proto::LabelPair::default();
            l.set_name(name.to_owned());
            l.set_value(value.to_owned());
            m.mut_label().push(l);
        }
        m.set_histogram(h);
        family.mut_metric().push(m);
    }
    Some(family)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::super::sample;
    use super::*;

    /// Every sample line as (series, value), series being name plus labels.
    fn samples(text: &str) -> Vec<(&str, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("series value");
                (series, value.parse().expect("number"))
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> f64 {
        samples(text)
            .into_iter()
            .find(|(s, _)| *s == series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .1
    }

    #[test]
    fn unique_series_and_one_type_per_family() {
        let mut s = sample::snapshot();
        // A vhost listed twice (two listeners) must not make a duplicate series.
        let twin = s.vhosts[0].clone();
        s.vhosts.push(twin);
        let text = render(&s);
        let mut seen = HashSet::new();
        for (series, _) in samples(&text) {
            assert!(seen.insert(series), "duplicate series {series}");
        }
        let mut types: HashMap<&str, &str> = HashMap::new();
        let mut helps = HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(types.insert(name, kind).is_none(), "TYPE {name} twice");
            } else if let Some(rest) = l.strip_prefix("# HELP ") {
                let name = rest.split_once(' ').expect("HELP name text").0;
                assert!(helps.insert(name), "HELP {name} twice");
            }
        }
        assert_eq!(types.len(), helps.len());
        // Every sample belongs to a declared family.
        for (series, _) in samples(&text) {
            let name = series.split('{').next().unwrap_or(series);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| types.get(f) == Some(&"histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "{series} has no TYPE");
        }
        for name in [
            REQUESTS,
            SENT_BYTES,
            REQUEST_DURATION,
            PROCESSORS,
            AVAILABILITY,
            DROPPED,
            HANDOFFS,
            HANDBACKS,
            SPAWNS,
            COLD_START_SECONDS,
            COLD_STARTS,
            OOM_KILLS,
            PIDS_MAX_HITS,
            CONNECTIONS,
            ACTIVE_CONNECTIONS,
            MULTIPLEXER_ACCEPTED,
            MULTIPLEXERS,
            UP,
            START_TIME,
            BUILD_INFO,
        ] {
            assert!(types.contains_key(name), "{name} missing");
        }
        assert_eq!(types[REQUEST_DURATION], "histogram");
        assert_eq!(types[REQUESTS], "counter");
        assert_eq!(types[PROCESSORS], "gauge");
        // The twin's counts were added, not listed again.
        assert_eq!(
            value(
                &text,
                r#"bulkhead_requests_total{code_class="2xx",environment="blog",vhost="blog.example"}"#
            ),
            18.0
        );
    }

    #[test]
    fn values() {
        let text = render(&sample::snapshot());
        let v = |series| value(&text, series);
        assert_eq!(
            v(r#"bulkhead_requests_total{code_class="1xx",environment="shop",vhost="shop.example"}"#),
            0.0
        );
        assert_eq!(
            v(r#"bulkhead_requests_total{code_class="5xx",environment="shop",vhost="shop.example"}"#),
            50.0
        );
        assert_eq!(
            v(r#"bulkhead_sent_bytes_total{environment="shop",vhost="www.shop.example"}"#),
            450_000.0
        );
        assert_eq!(
            v(
                r#"bulkhead_request_duration_seconds_bucket{environment="shop",vhost="shop.example",le="0.001"}"#
            ),
            100.0
        );
        assert_eq!(
            v(r#"bulkhead_request_duration_seconds_bucket{environment="shop",vhost="shop.example",le="5"}"#),
            1195.0
        );
        assert_eq!(
            v(
                r#"bulkhead_request_duration_seconds_bucket{environment="shop",vhost="shop.example",le="+Inf"}"#
            ),
            1200.0
        );
        assert_eq!(
            v(r#"bulkhead_request_duration_seconds_count{environment="shop",vhost="shop.example"}"#),
            1200.0
        );
        assert_eq!(
            v(r#"bulkhead_request_duration_seconds_sum{environment="shop",vhost="shop.example"}"#),
            8.4
        );
        assert_eq!(v(r#"bulkhead_processors{environment="shop",state="busy"}"#), 1.0);
        assert_eq!(
            v(r#"bulkhead_processors{environment="shop",state="stopping"}"#),
            1.0
        );
        assert_eq!(v(r#"bulkhead_processors{environment="shop",state="idle"}"#), 0.0);
        assert_eq!(v(r#"bulkhead_processors{environment="blog",state="idle"}"#), 1.0);
        assert_eq!(v(r#"bulkhead_availability{environment="shop"}"#), 70.0);
        assert_eq!(
            v(r#"bulkhead_dropped_requests_total{environment="shop",reason="saturated"}"#),
            30.0
        );
        assert_eq!(
            v(r#"bulkhead_dropped_requests_total{environment="shop",reason="vhost_limit"}"#),
            4.0
        );
        assert_eq!(
            v(r#"bulkhead_dropped_requests_total{environment="blog",reason="error"}"#),
            0.0
        );
        assert_eq!(v(r#"bulkhead_handoffs_total{environment="shop"}"#), 950.0);
        assert_eq!(v(r#"bulkhead_handbacks_total{environment="shop"}"#), 50.0);
        assert_eq!(v(r#"bulkhead_spawns_total{environment="shop"}"#), 6.0);
        assert_eq!(v(r#"bulkhead_cold_starts_total{environment="shop"}"#), 5.0);
        assert_eq!(v(r#"bulkhead_oom_kills_total{environment="shop"}"#), 3.0);
        assert_eq!(v(r#"bulkhead_pids_max_hits_total{environment="shop"}"#), 7.0);
        assert_eq!(v(r#"bulkhead_oom_kills_total{environment="blog"}"#), 0.0);
        assert_eq!(
            v(r#"bulkhead_cold_start_seconds_total{environment="shop"}"#),
            1.25
        );
        assert_eq!(v(r#"bulkhead_connections_total{environment="shop"}"#), 900.0);
        assert_eq!(v(r#"bulkhead_active_connections{environment="shop"}"#), 2.0);
        assert_eq!(v("bulkhead_multiplexer_accepted_connections_total"), 1000.0);
        assert_eq!(v("bulkhead_multiplexers"), 1.0);
        assert_eq!(v("bulkhead_up"), 1.0);
        assert_eq!(
            v("bulkhead_start_time_seconds"),
            ((sample::NOW_MS / 1000) - sample::UPTIME_S) as f64
        );
        assert_eq!(v(r#"bulkhead_build_info{version="0.1.0"}"#), 1.0);
        assert_eq!(
            v(r#"bulkhead_fastcgi_backends{environment="shop",state="busy"}"#),
            2.0
        );
        assert_eq!(
            v(r#"bulkhead_fastcgi_backends{environment="shop",state="idle"}"#),
            1.0
        );
        assert_eq!(v(r#"bulkhead_fastcgi_max_backends{environment="shop"}"#), 8.0);
        assert_eq!(v(r#"bulkhead_fastcgi_waiting_requests{environment="shop"}"#), 1.0);
        assert_eq!(
            v(r#"bulkhead_fastcgi_requests_total{environment="shop"}"#),
            1200.0
        );
        assert_eq!(
            v(r#"bulkhead_fastcgi_errors_total{environment="shop",status="502"}"#),
            3.0
        );
        assert_eq!(
            v(r#"bulkhead_fastcgi_errors_total{environment="shop",status="504"}"#),
            1.0
        );
        assert_eq!(
            v(r#"bulkhead_fastcgi_backend_starts_total{environment="shop"}"#),
            5.0
        );
        assert_eq!(
            v(r#"bulkhead_fastcgi_backend_deaths_total{environment="shop"}"#),
            1.0
        );
        // An environment without backends has no FastCGI series.
        assert!(!text.contains(r#"bulkhead_fastcgi_requests_total{environment="blog"}"#));
        let tls = [
            (
                r#"bulkhead_tls_handshakes_total{alpn="http/1.1",environment="shop"}"#,
                30.0,
            ),
            (
                r#"bulkhead_tls_handshakes_total{alpn="h2",environment="shop"}"#,
                8.0,
            ),
            (
                r#"bulkhead_tls_handshakes_total{alpn="none",environment="shop"}"#,
                2.0,
            ),
            (
                r#"bulkhead_tls_resumed_handshakes_total{environment="shop"}"#,
                12.0,
            ),
            (
                r#"bulkhead_tls_handshake_failures_total{environment="shop",reason="timeout"}"#,
                2.0,
            ),
            (
                r#"bulkhead_tls_handshake_failures_total{environment="shop",reason="server_name"}"#,
                1.0,
            ),
            (
                r#"bulkhead_tls_handshake_failures_total{environment="shop",reason="error"}"#,
                5.0,
            ),
            (r#"bulkhead_misdirected_requests_total{environment="shop"}"#, 3.0),
        ];
        for (series, want) in tls {
            assert_eq!(v(series), want, "{series}");
        }
        assert!(!text.contains(r#"bulkhead_tls_handshakes_total{alpn="none",environment="blog"}"#));
    }

    #[test]
    fn empty_server_still_encodes() {
        let mut s = sample::snapshot();
        s.children.clear();
        s.environments.clear();
        s.vhosts.clear();
        let text = render(&s);
        assert!(!text.starts_with("# bulkhead: metrics unavailable"), "{text}");
        assert!(!text.contains(REQUEST_DURATION));
        assert_eq!(value(&text, "bulkhead_up"), 1.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = sample::snapshot();
        s.vhosts[0].server_name = "a\"b\\c\nd".to_owned();
        let text = render(&s);
        assert!(text.contains(r#"vhost="a\"b\\c\nd""#), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with('d')).count(), 0);
    }

    /// `promtool check metrics` (Debian package `prometheus`) on the sample output.
    #[test]
    fn promtool_accepts() {
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                // Under CI a missing tool is a failure, never a silent skip (scripts/test
                // installs Debian's prometheus, which has promtool).
                assert!(
                    std::env::var_os("CI").is_none(),
                    "promtool not runnable under CI ({e}): install Debian's prometheus"
                );
                eprintln!("skipped: promtool not runnable ({e}); apt-get install prometheus");
                return;
            }
        };
        let text = render(&sample::snapshot());
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).expect("write to promtool");
        }
        let out = child.wait_with_output().expect("promtool");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool: {report}\n{text}");
        // Lint remarks (not errors) would also be printed; there should be none.
        assert!(report.trim().is_empty(), "promtool: {report}");
    }
}
