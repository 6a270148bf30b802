//! Who may read `/server-status` and `/metrics`: a local client by the uid that owns
//! its socket (`[status] allow_users`, default root), whatever loopback address it uses;
//! a tenant's processes get 403, Debian's prometheus-apache-exporter running as an
//! allowed user reads `apache_up 1`; a connection handed back by a processor never
//! gets the page; unprivileged, the user running bulkhead may. (Non-local clients by
//! `[status] allow`: unit-tested in the multiplexer's `access`.)

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A user of this host that is no tenant: the monitoring's.
const MONITOR: u32 = 2003;
/// Another local user, in no list.
const STRANGER: u32 = 2005;

fn config(w: &Path, status: &str) -> String {
    format!(
        "{}\n[status]\nmetrics_listen = \"127.0.0.1:0\"\n{status}",
        two_env_config(w, "")
    )
}

/// `curl` as `uid` (and that gid) for `url` with this Host, from `source` when given:
/// the status code and the body.
fn curl_as(curl: &Path, uid: u32, url: &str, host: &str, source: Option<Ipv4Addr>) -> (u16, String) {
    let mut cmd = Command::new(curl);
    cmd.uid(uid).gid(uid).args([
        "-sS",
        "--max-time",
        "10",
        "-H",
        &format!("Host: {host}"),
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(ip) = source {
        cmd.args(["--interface", &ip.to_string()]);
    }
    let out = run_bounded(cmd.arg(url), None, Duration::from_secs(15)).expect("curl timed out");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl as uid {uid} {url}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, body.to_string())
}

/// Every status format and the metrics, as `uid`, from `source`.
fn all_as(
    curl: &Path,
    server: &TestServer,
    uid: u32,
    source: Option<Ipv4Addr>,
) -> Vec<(String, u16, String)> {
    let metrics = server.metrics_addr.expect("no metrics address");
    let mut out = Vec::new();
    for q in ["", "?auto", "?json", "?peruser_stats"] {
        let url = format!("http://{}/server-status{q}", server.addr);
        let (code, body) = curl_as(curl, uid, &url, "alice.test", source);
        out.push((url, code, body));
    }
    let url = format!("http://{metrics}/metrics");
    let (code, body) = curl_as(curl, uid, &url, "localhost", source);
    out.push((url, code, body));
    out
}

#[track_caller]
fn assert_all(results: &[(String, u16, String)], want: u16, who: &str, server: &TestServer) {
    for (url, code, body) in results {
        assert_eq!(*code, want, "{url} as {who}: {body}\n{}", server.log());
        if want == 403 {
            for secret in ["Total Accesses", "alice", "bob", "bulkhead_"] {
                assert!(!body.contains(secret), "{url} as {who} leaked {secret:?}: {body}");
            }
        }
    }
}

#[test]
fn status_and_metrics_are_refused_to_a_tenants_uid() {
    require_root!();
    let Some(curl) = require_tool("curl", "curl") else {
        return;
    };
    let w = Dir::new("status_and_metrics_are_refused_to_a_tenants_uid");
    sites(w.path(), 0o644);
    let server = TestServer::start(&config(w.path(), ""));
    let other = Some(Ipv4Addr::new(127, 0, 0, 2));
    for (uid, who) in [(ALICE, "alice"), (BOB, "bob"), (STRANGER, "a user not allowed")] {
        assert_all(&all_as(&curl, &server, uid, None), 403, who, &server);
        // Another loopback address changes nothing: the uid decides.
        assert_all(&all_as(&curl, &server, uid, other), 403, who, &server);
    }
    assert!(
        server
            .wait_for_log(
                &format!("is uid {ALICE}, not in [status] allow_users"),
                Duration::from_secs(5)
            )
            .is_some(),
        "no log line naming the uid:\n{}",
        server.log()
    );
    // Root, the default allow_users, from any loopback address.
    assert_all(&all_as(&curl, &server, 0, None), 200, "root", &server);
    assert_all(&all_as(&curl, &server, 0, other), 200, "root", &server);
    // The tenant's own site is still served to it: only the status page is guarded.
    let url = format!("http://{}/", server.addr);
    assert_eq!(
        curl_as(&curl, ALICE, &url, "alice.test", None),
        (200, "alice home".to_string())
    );
}

#[test]
fn an_allowed_user_reads_status_and_metrics_and_the_exporter_is_up() {
    require_root!();
    let Some(curl) = require_tool("curl", "curl") else {
        return;
    };
    let Some(exporter_bin) = require_tool("prometheus-apache-exporter", "prometheus-apache-exporter") else {
        return;
    };
    let w = Dir::new("an_allowed_user_reads_status_and_metrics_and_the_exporter_is_up");
    sites(w.path(), 0o644);
    let server = TestServer::start(&config(
        w.path(),
        &format!("allow_users = [\"root\", {MONITOR}]\n"),
    ));
    assert_all(
        &all_as(&curl, &server, MONITOR, None),
        200,
        "the monitor",
        &server,
    );
    assert_all(&all_as(&curl, &server, 0, None), 200, "root", &server);
    assert_all(&all_as(&curl, &server, ALICE, None), 403, "alice", &server);

    let uri = format!("http://{}/server-status?auto", server.addr);
    let scrape = |uid: u32| {
        let exporter = Exporter::start_as(&exporter_bin, &uri, Some(uid));
        let samples = poll(Duration::from_secs(10), || {
            exporter.scrape().filter(|s| value_of(s, "apache_up").is_some())
        })
        .unwrap_or_else(|| panic!("the exporter as uid {uid} never answered:\n{}", exporter.log()));
        (samples, exporter.log())
    };
    let (samples, log) = scrape(MONITOR);
    assert_eq!(
        value_of(&samples, "apache_up"),
        Some(1.0),
        "exporter as uid {MONITOR}:\n{log}\n{}",
        server.log()
    );
    assert!(
        value_of(&samples, "apache_accesses_total").is_some(),
        "{samples:?}"
    );
    assert!(!log.contains("Error scraping"), "{log}");
    // The same exporter run by a tenant reads nothing (this exporter still says
    // apache_up 1 after a 403; the counters are what it could not read).
    let (samples, log) = scrape(ALICE);
    assert!(log.contains("403 Forbidden"), "exporter as uid {ALICE}:\n{log}");
    assert_eq!(value_of(&samples, "apache_accesses_total"), None, "{samples:?}");
}

#[test]
fn status_on_a_connection_handed_back_is_refused() {
    require_root!();
    let w = Dir::new("status_on_a_connection_handed_back_is_refused");
    sites(w.path(), 0o644);
    let server = TestServer::start(&config(w.path(), ""));
    // Root's own keep-alive connection: alice's processor serves the first request and
    // hands the connection back for the second, whose host is bob's.
    let mut s = connect(server.addr);
    let first = get_on(&mut s, "alice.test", "/").expect("first response");
    assert_eq!((first.status, first.text().as_str()), (200, "alice home"));
    write!(
        s,
        "GET /server-status?auto HTTP/1.1\r\nHost: bob.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s, false).expect("second response");
    assert_eq!(r.status, 403, "{}\n{}", r.text(), server.log());
    assert!(!r.text().contains("Total Accesses"), "{}", r.text());
    assert!(server
        .wait_for_log("handed back by a processor", Duration::from_secs(5))
        .is_some());
    // A fresh connection from root is served.
    let r = get(server.addr, "bob.test", "/server-status?auto");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn unprivileged_the_user_running_bulkhead_reads_its_status_page() {
    require_root!();
    let Some(curl) = require_tool("curl", "curl") else {
        return;
    };
    const OWNER: u32 = 2010;
    let w = Dir::new("unprivileged_the_user_running_bulkhead_reads_its_status_page");
    put(w.path(), "alice/index.html", b"alice home", OWNER, 0o644);
    put(w.path(), "bob/index.html", b"bob home", OWNER, 0o644);
    let server = TestServer::try_start_with(&config(w.path(), ""), |cmd| {
        // Readable by the user the server runs as.
        let path = cmd.get_args().nth(2).map(std::path::PathBuf::from).unwrap();
        chmod(path.parent().unwrap(), 0o755);
        chmod(&path, 0o644);
        cmd.uid(OWNER).gid(OWNER);
    })
    .unwrap_or_else(|log| panic!("unprivileged server did not start:\n{log}"));
    assert_all(&all_as(&curl, &server, OWNER, None), 200, "the owner", &server);
    assert_all(
        &all_as(&curl, &server, STRANGER, None),
        403,
        "another user",
        &server,
    );
}
