//! The CGI keys: `cgi`, `cgi_dirs`, `cgi_timeout` (per vhost, its default in `[server]`).

use std::time::Duration;

use crate::*;

#[test]
fn cgi_defaults_and_values() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    let cgi = &config.vhosts[0].cgi;
    assert!(cgi.is_off());
    assert_eq!(cgi.timeout, Duration::from_secs(60));
    assert_eq!(config.server.cgi_timeout, Duration::from_secs(60));
    let text = cat(&[
        SERVER,
        "cgi_timeout = 30\n",
        ALICE,
        VHOST,
        "cgi = [\".cgi\", \".pl\"]\ncgi_dirs = [\"/cgi-bin/\", \"/a/b/\"]\n",
        VHOST.replace("alice.example", "b.example").as_str(),
        "cgi_timeout = 5\n",
    ]);
    let config = parse(&text);
    let (a, b) = (&config.vhosts[0].cgi, &config.vhosts[1].cgi);
    assert_eq!(a.extensions, [".cgi", ".pl"]);
    assert_eq!(a.dirs, ["/cgi-bin/", "/a/b/"]);
    assert_eq!(a.timeout, Duration::from_secs(30));
    assert!(b.is_off());
    assert_eq!(b.timeout, Duration::from_secs(5));
}

#[test]
fn cgi_errors() {
    let text = cat(&[
        SERVER,
        "cgi_timeout = 0\n",
        ALICE,
        VHOST,
        "cgi = [\"cgi\", \".a.b\", \".x\", \".x\"]\n",
        "cgi_dirs = [\"/\", \"cgi-bin/\", \"/x\", \"/a/../b/\", \"/ok/\"]\n",
        "cgi_timeout = \"long\"\n",
    ]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "cgi_timeout = 0"),
        "server.cgi_timeout",
        "between 1 and",
    );
    let cgi = line_of(&text, "cgi = [");
    assert_has(&errs, cgi, "vhosts[0].cgi[0]", "starts with '.'");
    assert_has(&errs, cgi, "vhosts[0].cgi[1]", "no other '.'");
    assert_has(&errs, cgi, "vhosts[0].cgi[3]", "listed twice");
    let dirs = line_of(&text, "cgi_dirs");
    for i in 0..4 {
        assert_has(
            &errs,
            dirs,
            &format!("vhosts[0].cgi_dirs[{i}]"),
            "starting and ending with '/'",
        );
    }
    assert_has(
        &errs,
        line_of(&text, "cgi_timeout = \"long\""),
        "vhosts[0].cgi_timeout",
        "expected an integer",
    );
    assert_eq!(errs.len(), 9, "{errs:?}");
}

#[test]
fn limit_request_body_defaults_values_and_errors() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    assert_eq!(config.server.limit_request_body, 100 << 20);
    assert_eq!(config.vhosts[0].cgi.body_limit, 100 << 20);
    let text = cat(&[
        SERVER,
        "limit_request_body = 0\n",
        ALICE,
        VHOST,
        VHOST.replace("alice.example", "b.example").as_str(),
        "limit_request_body = 4096\n",
    ]);
    let config = parse(&text);
    assert_eq!(
        config.vhosts[0].cgi.body_limit, 0,
        "0: no limit of its own, inherited"
    );
    assert_eq!(config.vhosts[1].cgi.body_limit, 4096);
    let text = cat(&[SERVER, ALICE, VHOST, "limit_request_body = -1\n"]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "limit_request_body = -1"),
        "vhosts[0].limit_request_body",
        "must be at least 0",
    );
}
