//! `[status]`, the per-vhost logging and connection limit, and [`Cidr::contains`].

use std::net::{IpAddr, SocketAddr};

use conf::{Cidr, LogFormat, Status};

use crate::*;

fn cidr(addr: &str, prefix: u8) -> Cidr {
    Cidr {
        addr: addr.parse().unwrap(),
        prefix,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn status_defaults() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    assert_eq!(config.status, Status::default());
    let s = &config.status;
    assert_eq!(s.path, "/server-status");
    // Local clients by uid (root only), nobody by address.
    assert_eq!(s.allow, []);
    assert_eq!(s.allow_users, [0]);
    assert_eq!(
        s.metrics_listen,
        Some("127.0.0.1:9180".parse::<SocketAddr>().unwrap())
    );
    // An empty table is the defaults too.
    let config = parse(&cat(&[SERVER, ALICE, VHOST, "[status]\n"]));
    assert_eq!(config.status, Status::default());
}

#[test]
fn status_values() {
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "[status]\npath = \"/_bulkhead/status\"\nallow = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\", \"::1\"]\n",
        "metrics_listen = \"[::1]:9100\"\n",
    ]);
    let s = parse(&text).status;
    assert_eq!(s.path, "/_bulkhead/status");
    let want = [
        cidr("10.0.0.0", 8),
        cidr("192.0.2.7", 32),
        cidr("2001:db8::", 32),
        cidr("::1", 128),
    ];
    assert_eq!(s.allow, want);
    assert_eq!(s.metrics_listen, Some("[::1]:9100".parse().unwrap()));

    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "[status]\nmetrics_listen = \"off\"\nallow = []\n",
    ]);
    let s = parse(&text).status;
    assert_eq!(s.metrics_listen, None);
    assert_eq!(s.allow, []);
}

#[test]
fn allow_users_names_and_ids() {
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "[status]\nallow_users = [\"root\", 2003, \"2004\"]\n",
    ]);
    assert_eq!(parse(&text).status.allow_users, [0, 2003, 2004]);
    let text = cat(&[SERVER, ALICE, VHOST, "[status]\nallow_users = []\n"]);
    assert_eq!(parse(&text).status.allow_users, Vec::<u32>::new());
    // The multiplexers' own user is no tenant.
    let text = cat(&[SERVER, ALICE, VHOST, "[status]\nallow_users = [2000]\n"]);
    assert_eq!(parse(&text).status.allow_users, [2000]);
}

#[test]
fn allow_users_never_names_an_environment() {
    let status = "[status]\nallow_users = [\n  \"root\",\n  2001,\n  \"no-such-user-here\",\n  -1,\n]\n";
    // Whichever comes first in the file, [status] or the environment.
    for text in [
        cat(&[SERVER, ALICE, VHOST, status]),
        cat(&[status, SERVER, ALICE, VHOST]),
    ] {
        let errs = errors(&text);
        let l = |n| line_of(&text, n);
        assert_has(
            &errs,
            l("  2001,"),
            "status.allow_users[1]",
            "user '2001' (uid 2001) runs environment 'alice'",
        );
        assert_has(
            &errs,
            l("no-such-user-here"),
            "status.allow_users[2]",
            "no such user 'no-such-user-here'",
        );
        assert_has(&errs, l("  -1,"), "status.allow_users[3]", "out of range");
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}

#[test]
fn bad_status_values() {
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "[status]\npath = \"/status?full\"\n",
        "allow = [\n  \"127.0.0.1/33\",\n  \"10.1.2.3/8\",\n  \"localhost\",\n  8,\n]\n",
        "metrics_listen = \"9180\"\nmetrics_listn = 1\n",
    ]);
    let errs = errors(&text);
    let l = |n| line_of(&text, n);
    assert_has(
        &errs,
        l("/status?full"),
        "status.path",
        "must not contain '?' or '#'",
    );
    assert_has(
        &errs,
        l("127.0.0.1/33"),
        "status.allow[0]",
        "invalid address block '127.0.0.1/33': prefix length must be between 0 and 32",
    );
    assert_has(
        &errs,
        l("10.1.2.3/8"),
        "status.allow[1]",
        "did you mean '10.0.0.0/8'?",
    );
    assert_has(&errs, l("localhost"), "status.allow[2]", "expected an IP address");
    assert_has(
        &errs,
        l("  8,"),
        "status.allow[3]",
        "expected a string, found an integer",
    );
    assert_has(
        &errs,
        l("\"9180\""),
        "status.metrics_listen",
        "invalid socket address '9180'",
    );
    assert_has(
        &errs,
        l("metrics_listn"),
        "status.metrics_listn",
        "did you mean 'metrics_listen'?",
    );
    assert_eq!(errs.len(), 7, "{errs:?}");

    for (path, fragment) in [
        ("server-status", "must start with '/'"),
        ("/server status", "must not contain spaces"),
        ("/a#b", "must not contain '?' or '#'"),
        ("", "must start with '/'"),
    ] {
        let text = cat(&[SERVER, ALICE, VHOST, &format!("[status]\npath = \"{path}\"\n")]);
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_has(&errs, line_of(&text, "path ="), "status.path", fragment);
    }

    let text = cat(&["status = \"on\"\n", SERVER, ALICE, VHOST]);
    assert_has(
        &errors(&text),
        line_of(&text, "status ="),
        "status",
        "expected a table",
    );
}

#[test]
fn vhost_logs_and_limit() {
    // The log's directory must exist (and be root's or alice's): a temp dir of ours.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        &format!(
            "max_clients_vhost = 25\naccess_log = \"{}\"\naccess_log_format = \"json\"\n",
            log.display()
        ),
        "[[vhosts]]\nserver_name = \"b.example\"\nenvironment = \"alice\"\ndocument_root = \"/srv/b\"\n",
        "access_log_format = \"combined\"\n",
    ]);
    let config = parse(&text);
    let [a, b] = &config.vhosts[..] else {
        panic!("{:?}", config.vhosts)
    };
    assert_eq!(a.max_clients_vhost, 25);
    assert_eq!(a.access_log.as_deref(), Some(log.as_path()));
    assert_eq!(a.access_log_format, LogFormat::Json);
    assert_eq!(b.access_log_format, LogFormat::Combined);

    let v = &parse(&cat(&[SERVER, ALICE, VHOST])).vhosts[0];
    assert_eq!(v.max_clients_vhost, 0);
    assert_eq!(v.access_log, None);
    assert_eq!(v.access_log_format, LogFormat::Combined);
    assert_eq!(LogFormat::default(), LogFormat::Combined);
}

#[test]
fn bad_vhost_logs_and_limit() {
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "max_clients_vhost = -5\naccess_log = \"logs/access.log\"\naccess_log_format = \"common\"\n",
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    let l = |n| line_of(&text, n);
    assert_has(
        &errs,
        l("max_clients_vhost"),
        "vhosts[0].max_clients_vhost",
        "at least 0, got -5",
    );
    assert_has(
        &errs,
        l("access_log ="),
        "vhosts[0].access_log",
        "must be an absolute path, got 'logs/access.log'",
    );
    assert_has(
        &errs,
        l("access_log_format"),
        "vhosts[0].access_log_format",
        "unknown log format 'common' (expected \"combined\" or \"json\")",
    );
}

#[test]
fn cidr_contains_v4() {
    let net = cidr("10.1.0.0", 16);
    assert!(net.contains(ip("10.1.0.0")));
    assert!(net.contains(ip("10.1.255.255")));
    assert!(!net.contains(ip("10.2.0.0")));
    assert!(!net.contains(ip("::a01:1"))); // IPv4-compatible, not mapped
    let odd = cidr("192.168.0.128", 25);
    assert!(odd.contains(ip("192.168.0.200")));
    assert!(!odd.contains(ip("192.168.0.127")));
    assert!(cidr("0.0.0.0", 0).contains(ip("203.0.113.9")));
    assert!(cidr("192.0.2.7", 32).contains(ip("192.0.2.7")));
    assert!(!cidr("192.0.2.7", 32).contains(ip("192.0.2.8")));
}

#[test]
fn cidr_contains_v6() {
    let net = cidr("2001:db8::", 32);
    assert!(net.contains(ip("2001:db8:ffff::1")));
    assert!(!net.contains(ip("2001:db9::1")));
    assert!(!net.contains(ip("32.1.13.184"))); // the same first bytes, as IPv4
    assert!(cidr("::1", 128).contains(ip("::1")));
    assert!(!cidr("::1", 128).contains(ip("127.0.0.1")));
    assert!(cidr("::", 0).contains(ip("fe80::1")));
    assert!(cidr("fe80::", 10).contains(ip("febf::1")));
    assert!(!cidr("fe80::", 10).contains(ip("fec0::1")));
}

#[test]
fn cidr_contains_v4_mapped() {
    let loopback = cidr("127.0.0.0", 8);
    assert!(loopback.contains(ip("::ffff:127.0.0.1")));
    assert!(loopback.contains(ip("::ffff:7f00:2")));
    assert!(!loopback.contains(ip("::ffff:128.0.0.1")));
    assert!(cidr("0.0.0.0", 0).contains(ip("::ffff:1.2.3.4")));
    assert!(!cidr("0.0.0.0", 0).contains(ip("2001:db8::1")));
    // And the other way round: an IPv4 client against a mapped IPv6 block.
    assert!(cidr("::ffff:10.0.0.0", 104).contains(ip("10.9.8.7")));
    assert!(!cidr("::ffff:10.0.0.0", 104).contains(ip("11.0.0.1")));
    assert_eq!(cidr("::ffff:10.0.0.0", 104).to_string(), "::ffff:10.0.0.0/104");
}
