//! The HTML status pages: Peruser's child table (`ID | PID | STATUS | SB STATUS | Type |
//! Processor | Pss | AVAIL`) followed by the per-environment summary, and the
//! `?peruser_stats` page with the summary alone. Every name is HTML-escaped.

use std::collections::HashMap;
use std::fmt::Write;

use crate::status::model::{ChildRow, ChildState, EnvRow, Role, Snapshot};

use super::{apache_g, apache_time, children_by_id, human_uptime, Totals};

const TITLE: &str = "bulkhead server status";

const STYLE: &str = "body{font-family:sans-serif;margin:1em 2em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}\
dl{margin:0}dt{margin:.15em 0}\
table{border-collapse:collapse;margin-top:.5em}\
th,td{border:1px solid #bbb;padding:.2em .6em;white-space:nowrap}\
th{background:#e8e8e8;text-align:left}td.n{text-align:right}\
tbody tr:nth-child(even){background:#f6f6f6}";

/// The full page: header, child table, environment summary.
pub(super) fn status_page(s: &Snapshot, refresh: Option<u32>) -> String {
    let mut o = String::with_capacity(4096);
    open(&mut o, s, refresh);
    o.push_str("<h2>Children</h2>\n");
    child_table(&mut o, s);
    o.push_str("<h2>Environments</h2>\n");
    stats_table(&mut o, s);
    fastcgi_table(&mut o, s);
    close(&mut o);
    o
}

/// `?peruser_stats`: header and the environment summary.
pub(super) fn stats_page(s: &Snapshot) -> String {
    let mut o = String::with_capacity(2048);
    open(&mut o, s, None);
    o.push_str("<h2>Environments</h2>\n");
    stats_table(&mut o, s);
    fastcgi_table(&mut o, s);
    close(&mut o);
    o
}

/// The FastCGI backends of the environments that have them (nothing when none does).
fn fastcgi_table(o: &mut String, s: &Snapshot) {
    let rows: Vec<_> = s
        .environments
        .iter()
        .filter_map(|e| Some((e, e.fastcgi.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    o.push_str(
        "<h2>FastCGI backends</h2>\n<table>\n<thead><tr><th>Environment</th><th>Running</th>\
         <th>Busy</th><th>Idle</th><th>Waiting</th><th>Max</th><th>Requests</th><th>502</th>\
         <th>504</th><th>Started</th><th>Died</th></tr></thead>\n<tbody>\n",
    );
    for (e, f) in rows {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.name),
            f.running,
            f.busy,
            f.idle,
            f.waiting,
            f.max_backends,
            f.requests,
            f.bad_gateway,
            f.timeouts,
            f.starts,
            f.deaths
        );
    }
    o.push_str("</tbody>\n</table>\n");
}

/// Escapes text for an HTML element or a quoted attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Apache's `format_byte_out`: "512 B", "12.3 kB", "4.5 MB", "1.2 GB".
fn bytes_human(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if b < 5 * 1024 {
        format!("{b} B")
    } else if f < K * K / 2.0 {
        format!("{:.1} kB", f / K)
    } else if f < K * K * K / 2.0 {
        format!("{:.1} MB", f / (K * K))
    } else {
        format!("{:.1} GB", f / (K * K * K))
    }
}

fn open(o: &mut String, s: &Snapshot, refresh: Option<u32>) {
    let t = Totals::of(s);
    let uptime = s.uptime_seconds();
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
    let human = human_uptime(uptime);

    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    if let Some(n) = refresh {
        let _ = writeln!(o, "<meta http-equiv=\"refresh\" content=\"{n}\">");
    }
    let _ = writeln!(
        o,
        "<title>{TITLE}</title>\n<style>{STYLE}</style>\n</head>\n<body>"
    );
    let _ = writeln!(o, "<h1>{TITLE} for {}</h1>\n<dl>", esc(&s.server_name));
    let mut dt = |text: String| {
        let _ = writeln!(o, "<dt>{text}</dt>");
    };
    dt(format!("Server Version: {}", esc(&s.server_version)));
    dt("Server MPM: peruser".to_owned());
    dt(format!("Current Time: {}", apache_time(s.now_ms)));
    dt(format!("Restart Time: {}", apache_time(s.started_ms)));
    dt(format!(
        "Parent Server Config. Generation: {}",
        s.generation.saturating_add(1)
    ));
    dt(format!("Parent Server MPM Generation: {}", s.generation));
    dt(format!(
        "Server uptime: {}",
        if human.is_empty() { "0 seconds" } else { &human }
    ));
    dt(format!(
        "Total accesses: {} - Total Traffic: {} - Total Duration: {} ms",
        t.requests,
        bytes_human(t.bytes),
        t.duration_us / 1000
    ));
    dt(format!(
        "{} requests/sec - {} B/second - {} B/request - {} ms/request",
        apache_g(per_sec(t.requests)),
        apache_g(per_sec(t.bytes)),
        apache_g(per_req(t.bytes as f64)),
        apache_g(per_req(t.duration_us as f64 / 1000.0))
    ));
    dt(format!(
        "{} busy processors, {} idle children, {} stopping, {} open connections, {} dropped (503)",
        t.busy, t.idle, t.stopping, t.active_conns, t.dropped
    ));
    dt(format!("Connections accepted by multiplexers: {}", s.accepted));
    o.push_str("</dl>\n");
}

fn close(o: &mut String) {
    o.push_str("</body>\n</html>\n");
}

/// One pool's Pss (alive/idle/max) and availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pool {
    alive: u64,
    idle: u64,
    max: u64,
    availability: u64,
}

impl Pool {
    fn of(e: &EnvRow) -> Pool {
        Pool {
            alive: e.processors_alive,
            idle: e.processors_idle,
            max: e.max_processors,
            availability: e.availability.min(100),
        }
    }

    /// The multiplexers' pool, as Peruser's "Multiplexer" environment: every one alive
    /// and idle, always available.
    fn multiplexers(s: &Snapshot) -> Pool {
        let n = s.children.iter().filter(|c| c.role == Role::Multiplexer).count() as u64;
        Pool {
            alive: n,
            idle: n,
            max: s.max_multiplexers,
            availability: 100,
        }
    }

    fn pss(&self) -> String {
        format!("{}/{}/{}", self.alive, self.idle, self.max)
    }
}

/// Peruser's STATUS column.
fn peruser_status(state: ChildState) -> &'static str {
    match state {
        ChildState::Starting => "STARTING",
        ChildState::Ready => "READY",
        ChildState::Busy => "ACTIVE",
        // Peruser's STANDBY means "dying or dead".
        ChildState::Stopping => "STANDBY",
    }
}

/// Apache's scoreboard name for the state (SB STATUS).
fn scoreboard_status(state: ChildState) -> &'static str {
    match state {
        ChildState::Starting => "STARTING",
        ChildState::Ready => "READY",
        ChildState::Busy => "BUSY_WRITE",
        ChildState::Stopping => "GRACEFUL",
    }
}

/// The Type column: per environment, the processor with the lowest id is Peruser's
/// PROCESSOR and the others are WORKERs; spares are RESERVED.
fn child_type(c: &ChildRow, first: &HashMap<Option<&str>, usize>) -> &'static str {
    match c.role {
        Role::Multiplexer => "MULTIPLEXER",
        Role::Spare => "RESERVED",
        Role::Processor if first.get(&c.environment.as_deref()) == Some(&c.id) => "PROCESSOR",
        Role::Processor => "WORKER",
    }
}

fn child_table(o: &mut String, s: &Snapshot) {
    let envs: HashMap<&str, &EnvRow> = s.environments.iter().map(|e| (e.name.as_str(), e)).collect();
    let children = children_by_id(s);
    let mut first: HashMap<Option<&str>, usize> = HashMap::new();
    for c in children.iter().filter(|c| c.role == Role::Processor) {
        // Sorted by id, so the first one seen is the lowest.
        first.entry(c.environment.as_deref()).or_insert(c.id);
    }
    let mux = Pool::multiplexers(s);

    o.push_str(
        "<table>\n<thead><tr><th>ID</th><th>PID</th><th>STATUS</th><th>SB STATUS</th>\
         <th>Type</th><th>Processor</th><th>Pss</th><th>AVAIL</th></tr></thead>\n<tbody>\n",
    );
    for c in children {
        let (processor, pool) = match (c.role, c.environment.as_deref()) {
            (Role::Multiplexer, _) => ("Multiplexer".to_owned(), Some(mux)),
            (_, Some(name)) => (esc(name), envs.get(name).map(|e| Pool::of(e))),
            (_, None) => ("-".to_owned(), None),
        };
        let (pss, avail) = match pool {
            Some(p) => (p.pss(), format!("{}%", p.availability)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            o,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            c.id,
            c.pid,
            peruser_status(c.state),
            scoreboard_status(c.state),
            child_type(c, &first),
            processor,
            pss,
            avail
        );
    }
    o.push_str("</tbody>\n</table>\n");
}

/// One row of the `?peruser_stats` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatRow<'a> {
    /// `None` for the multiplexers.
    id: Option<usize>,
    name: &'a str,
    pool: Pool,
    connections: u64,
    requests: u64,
    /// `None` for the multiplexers: drops are counted against environments.
    dropped: Option<u64>,
}

/// The rows, most active first: processors alive descending, then requests
/// descending, then name, then the multiplexers after an environment of the same name,
/// then id. A total order, unlike Peruser's comparator.
fn stat_rows(s: &Snapshot) -> Vec<StatRow<'_>> {
    let mut rows: Vec<StatRow> = s
        .environments
        .iter()
        .map(|e| StatRow {
            id: Some(e.id),
            name: &e.name,
            pool: Pool::of(e),
            connections: e.connections,
            requests: e.requests,
            dropped: Some(e.dropped()),
        })
        .collect();
    rows.push(StatRow {
        id: None,
        name: "Multiplexer",
        pool: Pool::multiplexers(s),
        connections: s.accepted,
        requests: s
            .children
            .iter()
            .filter(|c| c.role == Role::Multiplexer)
            .fold(0u64, |sum, c| sum.saturating_add(c.requests)),
        dropped: None,
    });
    rows.sort_by(|a, b| {
        b.pool
            .alive
            .cmp(&a.pool.alive)
            .then(b.requests.cmp(&a.requests))
            .then(a.name.cmp(b.name))
            .then(a.id.is_none().cmp(&b.id.is_none()))
            .then(a.id.cmp(&b.id))
    });
    rows
}

fn stats_table(o: &mut String, s: &Snapshot) {
    o.push_str(
        "<table>\n<thead><tr><th>ID</th><th>Environment</th><th>Pss</th>\
         <th>Connections</th><th>Requests</th><th>Dropped (503)</th><th>Avail</th>\
         </tr></thead>\n<tbody>\n",
    );
    let dash = || "-".to_owned();
    for r in stat_rows(s) {
        let _ = writeln!(
            o,
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}%</td></tr>",
            r.id.map_or_else(dash, |i| i.to_string()),
            esc(r.name),
            r.pool.pss(),
            r.connections,
            r.requests,
            r.dropped.map_or_else(dash, |d| d.to_string()),
            r.pool.availability
        );
    }
    o.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::super::sample;
    use super::*;

    const CHILD_HEADER: &str = "<th>ID</th><th>PID</th><th>STATUS</th><th>SB STATUS</th>\
        <th>Type</th><th>Processor</th><th>Pss</th><th>AVAIL</th>";
    const STATS_HEADER: &str = "<th>ID</th><th>Environment</th><th>Pss</th>\
        <th>Connections</th><th>Requests</th><th>Dropped (503)</th><th>Avail</th>";

    /// The cells of every body row of the page's `n`th table, tags stripped.
    fn rows(page: &str, n: usize) -> Vec<Vec<String>> {
        let table = page.split("<tbody>").nth(n + 1).expect("table");
        let table = &table[..table.find("</tbody>").expect("end")];
        table
            .lines()
            .filter(|l| l.starts_with("<tr>"))
            .map(|l| {
                let mut cells: Vec<String> = l
                    .split("</td>")
                    .map(|cell| cell.rsplit_once('>').map_or("", |(_, text)| text).to_owned())
                    .collect();
                cells.pop(); // what follows the last cell: "</tr>"
                cells
            })
            .collect()
    }

    #[test]
    fn status_page_child_table() {
        let page = status_page(&sample::snapshot(), None);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<title>bulkhead server status</title>"));
        assert!(!page.contains("http-equiv"));
        assert!(page.contains(CHILD_HEADER));
        assert!(page.contains(STATS_HEADER));
        assert!(page.contains("<h2>FastCGI backends</h2>"));
        assert!(page.contains(
            "<tr><td>shop</td><td>3</td><td>2</td><td>1</td><td>1</td><td>8</td><td>1200</td><td>3</td><td>1</td><td>5</td><td>1</td></tr>"
        ));
        assert!(!page.contains("<tr><td>blog</td><td>3</td>"));
        assert!(page.contains("<dt>Server Version: bulkhead/0.1.0</dt>"));
        assert!(page.contains("<dt>Current Time: Monday, 23-Nov-2026 01:13:34 UTC</dt>"));
        assert!(page.contains("<dt>Server uptime: 1 hour 2 minutes 3 seconds</dt>"));
        assert!(page.contains("<dt>Parent Server MPM Generation: 0</dt>"));
        assert!(page.contains("Total accesses: 1510 - Total Traffic: 2.2 MB"));
        let want = [
            [
                "0",
                "1000",
                "READY",
                "READY",
                "MULTIPLEXER",
                "Multiplexer",
                "1/1/4",
                "100%",
            ],
            [
                "1",
                "1001",
                "ACTIVE",
                "BUSY_WRITE",
                "PROCESSOR",
                "shop",
                "2/0/4",
                "70%",
            ],
            [
                "2",
                "1002",
                "READY",
                "READY",
                "PROCESSOR",
                "blog",
                "1/1/3",
                "100%",
            ],
            [
                "3", "1003", "STANDBY", "GRACEFUL", "WORKER", "shop", "2/0/4", "70%",
            ],
            ["4", "1004", "STARTING", "STARTING", "RESERVED", "-", "-", "-"],
        ];
        assert_eq!(
            rows(&page, 0),
            want.map(|r| r.map(str::to_owned).to_vec()).to_vec()
        );
    }

    #[test]
    fn refresh_meta() {
        let page = status_page(&sample::snapshot(), Some(5));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    }

    #[test]
    fn stats_page_order() {
        let page = stats_page(&sample::snapshot());
        assert!(page.contains(STATS_HEADER));
        assert!(!page.contains(CHILD_HEADER));
        let want = [
            ["1", "shop", "2/0/4", "900", "1500", "35", "70%"],
            // blog and the multiplexers both have one process: more requests first.
            ["0", "blog", "1/1/3", "8", "10", "0", "100%"],
            ["-", "Multiplexer", "1/1/4", "1000", "0", "-", "100%"],
        ];
        let want = want.map(|r| r.map(str::to_owned).to_vec()).to_vec();
        assert_eq!(rows(&page, 0), want);
        // The status page's summary is the same table.
        let full = status_page(&sample::snapshot(), None);
        assert_eq!(rows(&full, 1), want);
    }

    #[test]
    fn stat_order_is_total() {
        let mut s = sample::snapshot();
        // Ties everywhere: equal alive and requests, names decide; a same-named
        // environment comes before the multiplexers.
        for e in &mut s.environments {
            e.processors_alive = 1;
            e.requests = 0;
        }
        s.environments[1].name = "Multiplexer".to_owned();
        let order = |s: &Snapshot| -> Vec<(Option<usize>, String)> {
            stat_rows(s).iter().map(|r| (r.id, r.name.to_owned())).collect()
        };
        let names = order(&s);
        let want = [(Some(1), "Multiplexer"), (None, "Multiplexer"), (Some(0), "blog")];
        assert_eq!(names, want.map(|(id, n)| (id, n.to_owned())));
        // Any input order gives the same output.
        s.environments.reverse();
        assert_eq!(order(&s), names);
    }

    #[test]
    fn names_are_escaped() {
        let mut s = sample::snapshot();
        let evil = "<script>alert(\"x&y\")</script>'";
        s.server_name = evil.to_owned();
        s.server_version = evil.to_owned();
        s.environments[0].name = evil.to_owned();
        s.children[3].environment = Some(evil.to_owned());
        for page in [status_page(&s, Some(2)), stats_page(&s)] {
            assert!(!page.contains("<script>"), "{page}");
            assert!(!page.contains("x&y"));
            assert!(page.contains("&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"));
        }
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes_human(0), "0 B");
        assert_eq!(bytes_human(5119), "5119 B");
        assert_eq!(bytes_human(5120), "5.0 kB");
        assert_eq!(bytes_human(2_265_000), "2.2 MB");
        assert_eq!(bytes_human(3 << 30), "3.0 GB");
    }
}
