//! `limit_request_line`, `limit_request_fields`, `limit_request_field_size`,
//! `keep_alive_max_requests`, `request_head_timeout` and `request_body_timeout`.

use std::time::Duration;

use conf::model::ReadTimeout;

use crate::{assert_has, cat, errors, line_of, parse, ALICE, SERVER, VHOST};

fn rt(initial: u64, max: u64, min_rate: u64) -> ReadTimeout {
    ReadTimeout {
        initial: Duration::from_secs(initial),
        max: Duration::from_secs(max),
        min_rate,
    }
}

#[test]
fn apache_defaults() {
    let c = parse(&cat(&[SERVER, ALICE, VHOST]));
    let s = &c.server;
    assert_eq!(
        (s.head_limits.line, s.head_limits.fields, s.head_limits.field_size),
        (8190, 100, 8190)
    );
    assert_eq!(s.keep_alive_max_requests, 100);
    assert_eq!(s.request_head_rate, rt(20, 40, 500));
    assert_eq!(s.request_body_timeout, rt(20, 0, 500));
    assert_eq!(s.request_head_timeout, Duration::from_secs(40));
    assert_eq!(c.vhosts[0].request_body_timeout, None);
    assert_eq!(c.vhosts[0].keep_alive_max_requests, None);
}

#[test]
fn values_and_vhost_overrides() {
    let c = parse(&cat(&[
        SERVER,
        "limit_request_line = 1000\nlimit_request_fields = 20\nlimit_request_field_size = 500\n",
        "keep_alive_max_requests = 0\nrequest_head_timeout = [1, 3, 500]\nrequest_body_timeout = 7\n",
        ALICE,
        VHOST,
        "keep_alive_max_requests = 3\nrequest_body_timeout = [2, 0, 100]\n",
    ]));
    let s = &c.server;
    assert_eq!(
        (s.head_limits.line, s.head_limits.fields, s.head_limits.field_size),
        (1000, 20, 500)
    );
    assert_eq!(s.keep_alive_max_requests, 0);
    assert_eq!(s.request_head_rate, rt(1, 3, 500));
    assert_eq!(s.request_head_timeout, Duration::from_secs(3));
    assert_eq!(s.request_body_timeout, rt(7, 7, 0));
    assert_eq!(c.vhosts[0].keep_alive_max_requests, Some(3));
    assert_eq!(c.vhosts[0].request_body_timeout, Some(rt(2, 0, 100)));
}

#[test]
fn every_error_with_its_line_and_key() {
    let text = cat(&[
        SERVER,
        "limit_request_line = 10\nlimit_request_fields = 0\nlimit_request_field_size = 1000000\n",
        "keep_alive_max_requests = -1\nrequest_head_timeout = [20, 10, 500]\nrequest_body_timeout = [1, 2]\n",
        ALICE,
        VHOST,
        "request_body_timeout = \"fast\"\n",
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 7, "{errs:?}");
    let l = |n| line_of(&text, n);
    assert_has(
        &errs,
        l("limit_request_line"),
        "server.limit_request_line",
        "between 64 and 65536",
    );
    assert_has(
        &errs,
        l("limit_request_fields"),
        "server.limit_request_fields",
        "between 1 and 500",
    );
    assert_has(
        &errs,
        l("limit_request_field_size"),
        "server.limit_request_field_size",
        "got 1000000",
    );
    assert_has(
        &errs,
        l("keep_alive_max_requests"),
        "server.keep_alive_max_requests",
        "got -1",
    );
    assert_has(
        &errs,
        l("request_head_timeout"),
        "server.request_head_timeout[1]",
        "below the initial",
    );
    assert_has(
        &errs,
        l("request_body_timeout = [1"),
        "server.request_body_timeout",
        "got 2 values",
    );
    assert_has(
        &errs,
        l("\"fast\""),
        "vhosts[0].request_body_timeout",
        "seconds or an array",
    );
}
