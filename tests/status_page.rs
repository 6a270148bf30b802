//! What the admin and their monitoring see: Debian's prometheus-apache-exporter reads
//! `?auto` and counts exactly the requests sent, `promtool` accepts `/metrics` and no
//! series appears twice, `?peruser_stats` counts each environment's requests and 503
//! drops, every format carries what the issue lists, and counters never go backwards
//! when a processor is replaced. Who may read them: `status_access`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::*;

const CAROL: u32 = 2003;

/// The standard sites and this module's own files.
fn files(w: &Path) {
    sites(w, 0o644);
    put(w, "carol/index.html", b"carol home", CAROL, 0o644);
}

/// alice and bob (pools of up to 4), plus carol: one processor taking one connection,
/// so holding one connection saturates it, and a busy pool is waited for 1 s in 2 steps.
fn three_env_config(root: &Path) -> String {
    format!(
        r#"{two}
[environments.carol]
user = {CAROL}
group = {CAROL}
min_processors = 1
max_processors = 1
max_connections_per_processor = 1

[[vhosts]]
server_name = "carol.test"
environment = "carol"
document_root = "{c}"
"#,
        two = two_env_config(root, "processor_wait_timeout = [1, 2]"),
        c = root.join("carol").display()
    )
}

/// `n` GETs of `/` to `host`, each on a fresh connection; every one must be a 200.
fn send(server: &TestServer, host: &str, n: usize) {
    for i in 0..n {
        let r = get(server.addr, host, "/");
        assert_eq!(
            r.status,
            200,
            "request {i} to {host}: {}\n{}",
            r.text(),
            server.log()
        );
    }
}

// ---- The Prometheus text format ----

fn metrics(server: &TestServer) -> String {
    let addr = server
        .metrics_addr
        .unwrap_or_else(|| panic!("no metrics address in the ready line:\n{}", server.log()));
    let r = get(addr, "localhost", "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

// ---- The status pages ----

fn status(server: &TestServer, query: &str) -> Response {
    let r = get(server.addr, "alice.test", &format!("/server-status{query}"));
    assert_eq!(
        r.status,
        200,
        "/server-status{query}: {}\n{}",
        r.text(),
        server.log()
    );
    r
}

/// The text of the cells of every row of the first table after `heading` in `html`
/// (`<th>` and `<td>` alike, tags inside cells stripped, entities left as they are).
fn table_after(html: &str, heading: &str) -> Vec<Vec<String>> {
    let start = html
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{html}"));
    let rest = &html[start..];
    let table = &rest[..rest.find("</table>").unwrap_or(rest.len())];
    table
        .split("<tr")
        .skip(1)
        .map(|row| {
            let mut cells = Vec::new();
            let mut r = row;
            while let Some(open) = r.find(['<']) {
                let tag = &r[open..];
                if !(tag.starts_with("<td") || tag.starts_with("<th")) {
                    r = &tag[1..];
                    continue;
                }
                let body_start = open + tag.find('>').unwrap() + 1;
                let end_tag = if tag.starts_with("<td") { "</td>" } else { "</th>" };
                let body_end = body_start + r[body_start..].find(end_tag).unwrap();
                cells.push(strip_tags(&r[body_start..body_end]).trim().to_string());
                r = &r[body_end + end_tag.len()..];
            }
            cells
        })
        .filter(|c| !c.is_empty())
        .collect()
}

fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// `?peruser_stats` as environment name → (Requests, Dropped (503)) by the header's
/// column names.
fn peruser_stats(server: &TestServer) -> (BTreeMap<String, (String, String)>, String) {
    let html = status(server, "?peruser_stats").text();
    let rows = table_after(&html, "<table");
    let header = &rows[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {header:?}"))
    };
    let (env, req, drop) = (col("Environment"), col("Requests"), col("Dropped (503)"));
    let map = rows[1..]
        .iter()
        .map(|r| (r[env].clone(), (r[req].clone(), r[drop].clone())))
        .collect();
    (map, html)
}

/// `?auto` as key → value (the first line, the server name, under "").
fn auto(server: &TestServer) -> (BTreeMap<String, String>, String) {
    let text = status(server, "?auto").text();
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            map.insert(String::new(), line.to_string());
        } else {
            let (k, v) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("?auto line {line:?} is not \"Key: value\":\n{text}"));
            map.insert(k.to_string(), v.to_string());
        }
    }
    (map, text)
}

// ---- prometheus-apache-exporter ----

#[test]
fn apache_exporter_reads_auto_and_counts_every_request() {
    require_root!();
    let Some(bin) = require_tool("prometheus-apache-exporter", "prometheus-apache-exporter") else {
        return;
    };
    let w = Dir::new("apache_exporter_reads_auto_and_counts_every_request");
    files(w.path());
    let server = TestServer::start(&two_env_config(w.path(), ""));
    let exporter = Exporter::start(&bin, &format!("http://{}/server-status?auto", server.addr));

    // The exporter is up once it answers; bulkhead is up once it reports apache_up 1.
    let first = poll(Duration::from_secs(10), || {
        exporter.scrape().filter(|s| value_of(s, "apache_up").is_some())
    })
    .unwrap_or_else(|| panic!("the exporter never answered:\n{}", exporter.log()));
    assert_eq!(
        value_of(&first, "apache_up"),
        Some(1.0),
        "the exporter could not read ?auto:\n{}\n{}",
        exporter.log(),
        status(&server, "?auto").text()
    );
    let before = value_of(&first, "apache_accesses_total")
        .unwrap_or_else(|| panic!("no apache_accesses_total: {first:?}"));

    const SENT: f64 = 7.0;
    send(&server, "alice.test", 4);
    send(&server, "bob.test", 3);

    // A request is counted when its processor finishes it, which may be just after the
    // client has the response: wait for the count to arrive, then require it exact.
    let mut last = Vec::new();
    let after = poll(Duration::from_secs(5), || {
        last = exporter.scrape()?;
        value_of(&last, "apache_accesses_total").filter(|a| *a >= before + SENT)
    });
    assert_eq!(
        after,
        Some(before + SENT),
        "apache_accesses_total went from {before}; last scrape: {last:?}\n{}",
        exporter.log()
    );
    assert_eq!(value_of(&last, "apache_up"), Some(1.0), "{}", exporter.log());
    // The version line parsed (the exporter panics on a short one).
    assert!(
        last.iter().any(|s| s.name == "apache_version"),
        "no apache_version: {last:?}"
    );
    // Nothing more counted afterwards (status scrapes are not accesses).
    let again = exporter.scrape().expect("third scrape");
    assert_eq!(value_of(&again, "apache_accesses_total"), Some(before + SENT));
}

#[test]
fn promtool_accepts_metrics_after_traffic() {
    require_root!();
    let Some(promtool) = require_tool("promtool", "prometheus") else {
        return;
    };
    let w = Dir::new("promtool_accepts_metrics_after_traffic");
    files(w.path());
    let server = TestServer::start(&three_env_config(w.path()));
    send(&server, "alice.test", 5);
    send(&server, "bob.test", 2);
    let r = get(server.addr, "www.alice.test", "/missing");
    assert_eq!(r.status, 404);
    let _ = status(&server, "");
    // Let the requests be counted so the exposition carries them.
    assert!(
        poll(Duration::from_secs(5), || {
            let s = parse_samples(&metrics(&server)).ok()?;
            (env_sum(&s, "bulkhead_requests_total", "alice") >= 6.0).then_some(())
        })
        .is_some(),
        "{}",
        metrics(&server)
    );
    let text = metrics(&server);
    let out = run_bounded(
        Command::new(&promtool).args(["check", "metrics"]),
        Some(text.as_bytes()),
        Duration::from_secs(10),
    )
    .expect("promtool check metrics timed out");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_series_are_unique_and_typed() {
    require_root!();
    let w = Dir::new("metrics_series_are_unique_and_typed");
    files(w.path());
    let server = TestServer::start(&three_env_config(w.path()));
    send(&server, "alice.test", 3);
    send(&server, "www.alice.test", 2);
    send(&server, "bob.test", 2);
    let _ = get(server.addr, "bob.test", "/missing");
    let text = metrics(&server);
    let samples = parse_samples(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(samples.len() > 20, "{text}");
    let dups = duplicates(&samples);
    assert!(dups.is_empty(), "series appearing twice: {dups:?}\n{text}");

    // Every sample belongs to a family with a # TYPE (a histogram's _bucket, _sum and
    // _count to its family), and each family is typed once.
    let types = types(&text);
    let typed = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(typed, types.len(), "a family typed twice:\n{text}");
    for s in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suf| s.name.strip_suffix(suf))
            .find(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            .unwrap_or(&s.name);
        assert!(types.contains_key(family), "{} has no # TYPE\n{text}", s.name);
    }
    // The series the issue lists, per environment.
    for name in [
        "bulkhead_requests_total",
        "bulkhead_sent_bytes_total",
        "bulkhead_request_duration_seconds_bucket",
        "bulkhead_processors",
        "bulkhead_availability",
        "bulkhead_dropped_requests_total",
        "bulkhead_handoffs_total",
        "bulkhead_handbacks_total",
        "bulkhead_spawns_total",
    ] {
        for env in ["alice", "bob", "carol"] {
            assert!(
                samples
                    .iter()
                    .any(|s| s.name == name && s.label("environment") == Some(env)),
                "no {name} for {env}\n{text}"
            );
        }
    }
    assert!(samples
        .iter()
        .any(|s| s.name == "bulkhead_multiplexer_accepted_connections_total"));
}

#[test]
fn peruser_stats_count_requests_and_503_drops() {
    require_root!();
    let w = Dir::new("peruser_stats_count_requests_and_503_drops");
    files(w.path());
    let server = TestServer::start(&three_env_config(w.path()));
    assert_eq!(server.processors_of(CAROL).len(), 1, "{}", server.log());

    // carol's only processor takes one connection: hold it (a keep-alive connection
    // the processor keeps open), then K more requests wait 1 s and get 503.
    let mut held = connect(server.addr);
    let r = get_on(&mut held, "carol.test", "/").expect("carol's first response");
    assert_eq!((r.status, r.text().as_str()), (200, "carol home"));
    const K: usize = 3;
    let refused: Vec<_> = (0..K)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || get(addr, "carol.test", "/"))
        })
        .collect();
    for t in refused {
        let r = t.join().unwrap();
        assert_eq!(r.status, 503, "{}\n{}", r.text(), server.log());
    }
    drop(held);

    const N: usize = 5;
    const M: usize = 3;
    send(&server, "alice.test", N);
    send(&server, "bob.test", M);

    let want = |stats: &BTreeMap<String, (String, String)>| {
        let get = |e: &str| stats.get(e).cloned().unwrap_or_default();
        get("alice") == (N.to_string(), "0".into())
            && get("bob") == (M.to_string(), "0".into())
            && get("carol") == ("1".into(), K.to_string())
    };
    let mut last = (BTreeMap::new(), String::new());
    let ok = poll(Duration::from_secs(5), || {
        last = peruser_stats(&server);
        want(&last.0).then_some(())
    });
    assert!(
        ok.is_some(),
        "?peruser_stats (Requests, Dropped) {:?}, want alice ({N}, 0), bob ({M}, 0), carol (1, {K}):\n{}",
        last.0,
        last.1
    );

    // ?json says the same.
    let body = status(&server, "?json").text();
    let json =
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("?json: {e}\n{body}"));
    let envs = json["environments"].as_array().expect("environments");
    let by_name = |n: &str| {
        envs.iter()
            .find(|e| e["name"].as_str() == Some(n))
            .unwrap_or_else(|| panic!("no {n} in ?json:\n{body}"))
    };
    for (env, requests, dropped) in [("alice", N, 0), ("bob", M, 0), ("carol", 1, K)] {
        let e = by_name(env);
        assert_eq!(e["requests"].as_u64(), Some(requests as u64), "{env}: {body}");
        assert_eq!(
            e["dropped_saturated"].as_u64(),
            Some(dropped as u64),
            "{env}: {body}"
        );
    }
    // And the metrics count the drops by reason.
    let samples = parse_samples(&metrics(&server)).unwrap();
    let saturated: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "bulkhead_dropped_requests_total"
                && s.label("environment") == Some("carol")
                && s.label("reason") == Some("saturated")
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(saturated, K as f64);
}

#[test]
fn auto_json_and_html_carry_what_consumers_read() {
    require_root!();
    let w = Dir::new("auto_json_and_html_carry_what_consumers_read");
    files(w.path());
    let server = TestServer::start(&two_env_config(w.path(), ""));
    send(&server, "alice.test", 2);
    send(&server, "bob.test", 1);

    // ?auto: every key, once counted.
    let mut last = (BTreeMap::new(), String::new());
    let counted = poll(Duration::from_secs(5), || {
        last = auto(&server);
        (last.0.get("Total Accesses").map(String::as_str) == Some("3")).then_some(())
    });
    let (keys, text) = last;
    assert!(counted.is_some(), "Total Accesses is not 3:\n{text}");
    assert_eq!(keys[""], "alice.test", "the first line names the server:\n{text}");
    assert_eq!(
        keys["ServerVersion"],
        format!("bulkhead/{}", env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    let version = keys["ServerVersion"].strip_prefix("bulkhead/").unwrap();
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "not X.Y.Z: {version}"
    );
    for key in [
        "ServerMPM",
        "Uptime",
        "ServerUptimeSeconds",
        "Total Accesses",
        "Total kBytes",
        "Total Duration",
        "ReqPerSec",
        "BytesPerSec",
        "BytesPerReq",
        "BusyWorkers",
        "IdleWorkers",
        "Processes",
        "Stopping",
        "ConnsTotal",
        "ConnsAsyncWaitIO",
        "ConnsAsyncWriting",
        "ConnsAsyncKeepAlive",
        "ConnsAsyncClosing",
        "Scoreboard",
    ] {
        let v = keys
            .get(key)
            .unwrap_or_else(|| panic!("?auto has no {key}:\n{text}"));
        if !matches!(key, "ServerMPM" | "Scoreboard") {
            assert!(v.parse::<f64>().is_ok(), "{key}: {v:?} is not a number\n{text}");
        }
    }
    let board = &keys["Scoreboard"];
    assert!(
        board.chars().all(|c| "_SRWKDCLGI.".contains(c)),
        "Scoreboard uses a character Apache does not: {board}"
    );
    let processes: usize = keys["Processes"].parse().unwrap();
    assert_eq!(board.chars().filter(|c| *c != '.').count(), processes, "{text}");
    assert!(
        processes >= 4,
        "2 multiplexers and 2 processors at least:\n{text}"
    );

    // ?json parses and agrees.
    let body = status(&server, "?json").text();
    let json = serde_json::from_str::<serde_json::Value>(&body)
        .unwrap_or_else(|e| panic!("?json is not JSON ({e}):\n{body}"));
    assert_eq!(json["totals"]["requests"].as_u64(), Some(3), "{body}");
    assert!(json["children"].as_array().is_some_and(|c| c.len() == processes));
    let r = status(&server, "?json");
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{:?}",
        r.headers
    );

    // HTML: refresh, and Peruser's child table.
    let html = status(&server, "?refresh=5").text();
    assert!(
        html.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
        "{html}"
    );
    let plain = status(&server, "").text();
    assert!(!plain.contains("http-equiv=\"refresh\""), "{plain}");
    let rows = table_after(&plain, "<table");
    let header = &rows[0];
    let mut at = 0;
    for col in ["ID", "PID", "STATUS", "SB STATUS", "Type", "Processor", "AVAIL"] {
        let i = header[at..]
            .iter()
            .position(|h| h == col)
            .unwrap_or_else(|| panic!("no column {col:?} (in order) in {header:?}"));
        at += i + 1;
    }
    // One row per child, with its real pid.
    let pid_col = header.iter().position(|h| h == "PID").unwrap();
    let pids: HashSet<i32> = rows[1..].iter().map(|r| r[pid_col].parse().unwrap()).collect();
    for p in server.serving_children() {
        assert!(pids.contains(&p), "child {p} missing from the table:\n{plain}");
    }
    for env in ["alice", "bob", "Multiplexer"] {
        assert!(plain.contains(&format!("<td>{env}</td>")), "{env}:\n{plain}");
    }
}

#[test]
fn counters_do_not_go_back_when_a_processor_is_replaced() {
    require_root!();
    let w = Dir::new("counters_do_not_go_back_when_a_processor_is_replaced");
    files(w.path());
    let server = TestServer::start(&two_env_config(w.path(), ""));
    send(&server, "alice.test", 6);
    send(&server, "bob.test", 2);
    let mut before = Vec::new();
    let counted = poll(Duration::from_secs(5), || {
        before = parse_samples(&metrics(&server)).ok()?;
        (env_sum(&before, "bulkhead_requests_total", "alice") == 6.0).then_some(())
    });
    assert!(counted.is_some(), "alice's requests never reached 6: {before:?}");
    let types = types(&metrics(&server));
    let is_counter = |s: &Sample| {
        types.get(&s.name).map(String::as_str) == Some("counter")
            || ["_bucket", "_sum", "_count"].iter().any(|suf| {
                s.name
                    .strip_suffix(suf)
                    .is_some_and(|f| types.get(f).map(String::as_str) == Some("histogram"))
            })
    };

    let procs = server.processors_of(ALICE);
    assert_eq!(procs.len(), 1, "{procs:?}");
    let victim = procs[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    assert!(
        server
            .wait_for_log_line(Duration::from_secs(5), |l| l.contains("child died")
                && l.contains(&format!("pid={victim} ")))
            .is_some(),
        "{}",
        server.log()
    );
    let replaced = server.wait_until(Duration::from_secs(5), || {
        let now = server.processors_of(ALICE);
        !now.is_empty() && !now.contains(&victim)
    });
    assert!(replaced, "alice's processor was not replaced\n{}", server.log());

    let after = parse_samples(&metrics(&server)).unwrap();
    let key = |s: &Sample| format!("{}{:?}", s.name, s.labels);
    let now: BTreeMap<String, f64> = after.iter().map(|s| (key(s), s.value)).collect();
    for s in before.iter().filter(|s| is_counter(s)) {
        let v = now
            .get(&key(s))
            .unwrap_or_else(|| panic!("{} disappeared after the replacement", key(s)));
        assert!(*v >= s.value, "{} went back from {} to {v}", key(s), s.value);
    }
    assert_eq!(env_sum(&after, "bulkhead_requests_total", "alice"), 6.0);

    // The new processor's requests add to the old ones.
    send(&server, "alice.test", 2);
    let mut last = 0.0;
    let sum = poll(Duration::from_secs(5), || {
        last = env_sum(
            &parse_samples(&metrics(&server)).ok()?,
            "bulkhead_requests_total",
            "alice",
        );
        (last >= 8.0).then_some(last)
    });
    assert_eq!(sum, Some(8.0), "alice's requests after the replacement: {last}");
}
