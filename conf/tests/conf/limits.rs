//! Children and processor pools: `[server]`'s limits, the per-environment directives
//! `[server]` sets as defaults, and every rule between them.

use std::time::Duration;

use crate::*;

/// `[server]` with extra lines, then two environments and one vhost.
fn with_server(server_lines: &str, envs: &str) -> String {
    cat(&[SERVER, server_lines, envs, VHOST])
}

const BOB: &str = "[environments.bob]\nuser = 2002\ngroup = 2002\n";

#[test]
fn defaults_when_nothing_is_set() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    let s = &config.server;
    assert_eq!(s.server_limit, 256);
    assert_eq!(s.max_clients, 4096);
    assert_eq!((s.min_multiplexers, s.max_multiplexers), (2, 20));
    assert_eq!(s.multiplexer_idle_timeout, Duration::ZERO);
    assert_eq!(s.processor_wait_timeout, Duration::from_secs(5));
    assert_eq!(s.processor_wait_steps, 10);
    assert_eq!(s.error_log, None);

    let e = &config.environments[0];
    assert_eq!((e.min_processors, e.max_processors), (1, 10));
    assert_eq!(e.max_connections_per_processor, 1024);
    assert_eq!(e.start_processors, 1);
    assert_eq!((e.min_spare_processors, e.max_spare_processors), (0, 0));
    assert_eq!(e.idle_timeout, Duration::from_secs(900));
    assert_eq!(e.expire_timeout, Duration::from_secs(1800));
    assert_eq!(e.max_requests_per_child, 10_000);
}

#[test]
fn server_values_are_read() {
    let text = with_server(
        "server_limit = 500\nmax_clients = 100\nmin_multiplexers = 3\nmax_multiplexers = 3\n\
         multiplexer_idle_timeout = 60\nprocessor_wait_timeout = [0, 100]\n\
         error_log = \"/var/log/bulkhead//error.log\"\n",
        ALICE,
    );
    let s = parse(&text).server;
    assert_eq!((s.server_limit, s.max_clients), (500, 100));
    assert_eq!((s.min_multiplexers, s.max_multiplexers), (3, 3));
    assert_eq!(s.multiplexer_idle_timeout, Duration::from_secs(60));
    assert_eq!(
        (s.processor_wait_timeout, s.processor_wait_steps),
        (Duration::ZERO, 100)
    );
    assert_eq!(
        s.error_log.as_deref(),
        Some(std::path::Path::new("/var/log/bulkhead/error.log"))
    );

    let text = with_server("processor_wait_timeout = [30, 1]\n", ALICE);
    let s = parse(&text).server;
    assert_eq!(
        (s.processor_wait_timeout, s.processor_wait_steps),
        (Duration::from_secs(30), 1)
    );
}

#[test]
fn server_defaults_are_inherited_and_overridden() {
    let text = with_server(
        "min_processors = 2\nmax_processors = 8\nmax_connections_per_processor = 32\n\
         start_processors = 3\nmin_spare_processors = 1\nmax_spare_processors = 4\n\
         idle_timeout = 60\nexpire_timeout = 0\nmax_requests_per_child = 0\n",
        &cat(&[
            ALICE,
            BOB,
            "min_processors = 0\nmax_processors = 30\nmax_connections_per_processor = 8\n",
            "start_processors = 0\nmin_spare_processors = 2\nmax_spare_processors = 0\n",
            "idle_timeout = 0\nexpire_timeout = 3600\nmax_requests_per_child = 123456789012\n",
        ]),
    );
    let config = parse(&text);
    let [alice, bob] = &config.environments[..] else {
        panic!("{:?}", config.environments)
    };
    // Everything from [server].
    assert_eq!((alice.min_processors, alice.max_processors), (2, 8));
    assert_eq!(alice.max_connections_per_processor, 32);
    assert_eq!(alice.start_processors, 3);
    assert_eq!((alice.min_spare_processors, alice.max_spare_processors), (1, 4));
    assert_eq!(alice.idle_timeout, Duration::from_secs(60));
    assert_eq!(alice.expire_timeout, Duration::ZERO);
    assert_eq!(alice.max_requests_per_child, 0);
    // Everything its own.
    assert_eq!((bob.min_processors, bob.max_processors), (0, 30));
    assert_eq!(bob.max_connections_per_processor, 8);
    assert_eq!(bob.start_processors, 0);
    assert_eq!((bob.min_spare_processors, bob.max_spare_processors), (2, 0));
    assert_eq!(bob.idle_timeout, Duration::ZERO);
    assert_eq!(bob.expire_timeout, Duration::from_secs(3600));
    assert_eq!(bob.max_requests_per_child, 123_456_789_012);
}

#[test]
fn start_processors_defaults_to_the_environments_min_processors() {
    let text = with_server(
        "min_processors = 2\n",
        &cat(&[
            ALICE,
            BOB,
            "min_processors = 5\n",
            "[environments.carol]\nuser = 2003\ngroup = 2003\n",
        ]),
    );
    let envs = parse(&text).environments;
    let starts: Vec<_> = envs
        .iter()
        .map(|e| (e.min_processors, e.start_processors))
        .collect();
    assert_eq!(starts, [(2, 2), (5, 5), (2, 2)]);
}

#[test]
fn processor_wait_timeout_shape_and_steps() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[5, 0]",
            "server.processor_wait_timeout[1]",
            "steps must be between 1 and 100, got 0",
        ),
        (
            "[5, 101]",
            "server.processor_wait_timeout[1]",
            "got 101 (more steps make each step zero",
        ),
        (
            "[-1, 10]",
            "server.processor_wait_timeout[0]",
            "between 0 and 86400, got -1",
        ),
        (
            "[5, \"x\"]",
            "server.processor_wait_timeout[1]",
            "expected an integer, found a string",
        ),
        (
            "[5]",
            "server.processor_wait_timeout",
            "expected an array [seconds, steps], e.g. [5, 10], found 1 element(s)",
        ),
        (
            "[5, 10, 1]",
            "server.processor_wait_timeout",
            "found 3 element(s)",
        ),
        (
            "\"5\"",
            "server.processor_wait_timeout",
            "expected an array [seconds, steps], e.g. [5, 10], found a string",
        ),
        ("5", "server.processor_wait_timeout", "found an integer"),
    ];
    for &(value, key, fragment) in cases {
        let text = with_server(&format!("processor_wait_timeout = {value}\n"), ALICE);
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{value}: {errs:?}");
        assert_has(&errs, line_of(&text, "processor_wait_timeout"), key, fragment);
    }
}

#[test]
fn start_processors_outside_min_and_max() {
    let text = with_server(
        "",
        &cat(&[
            ALICE,
            "min_processors = 2\nmax_processors = 4\nstart_processors = 1\n",
            BOB,
            "max_processors = 4\nstart_processors = 5\n",
        ]),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "start_processors = 1"),
        "environments.alice.start_processors",
        "start_processors (1) is less than min_processors (2); it must be between min_processors and max_processors",
    );
    assert_has(
        &errs,
        line_of(&text, "start_processors = 5"),
        "environments.bob.start_processors",
        "start_processors (5) is greater than max_processors (4)",
    );
}

#[test]
fn start_processors_from_server_against_an_environments_own_limits() {
    let text = with_server(
        "start_processors = 3\n",
        &cat(&[ALICE, "max_processors = 2\n", BOB]),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let server_line = line_of(&text, "start_processors = 3");
    assert_has(
        &errs,
        line_of(&text, "max_processors = 2"),
        "environments.alice.max_processors",
        &format!(
            "max_processors (2) is less than start_processors (3, set in [server] at line {server_line})"
        ),
    );
}

#[test]
fn max_spare_below_min_spare() {
    let text = with_server(
        "",
        &cat(&[
            ALICE,
            "min_spare_processors = 3\nmax_spare_processors = 2\n",
            BOB,
            // 0 is "off": no error.
            "min_spare_processors = 3\nmax_spare_processors = 0\n",
        ]),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "max_spare_processors = 2"),
        "environments.alice.max_spare_processors",
        "max_spare_processors (2) is less than min_spare_processors (3) (0 turns max_spare_processors off)",
    );
}

#[test]
fn max_processors_above_server_limit() {
    let text = with_server(
        "server_limit = 50\n",
        &cat(&[ALICE, "max_processors = 51\n", BOB]),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let limit_line = line_of(&text, "server_limit");
    assert_has(
        &errs,
        line_of(&text, "max_processors = 51"),
        "environments.alice.max_processors",
        &format!(
            "max_processors (51) is greater than server_limit (50, set in [server] at line {limit_line})"
        ),
    );

    // Against the built-in max_processors (10), the server_limit written is at fault.
    let text = with_server("server_limit = 5\nmin_multiplexers = 1\n", ALICE);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "server_limit"),
        "server.server_limit",
        "server_limit (5) is less than max_processors (10, the default)",
    );
}

#[test]
fn min_processors_of_every_environment_must_fit_in_server_limit() {
    let text = with_server(
        "server_limit = 20\nmin_multiplexers = 4\n",
        &cat(&[ALICE, "min_processors = 8\n", BOB, "min_processors = 9\n"]),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "server_limit"),
        "server.server_limit",
        "min_multiplexers (4) plus every environment's min_processors (alice 8, bob 9) is 21, \
         more than server_limit (20)",
    );

    // The built-in server_limit: reported at the [server] header, with the sum alone
    // when there are many environments.
    let envs: String = (0..8)
        .map(|i| {
            format!(
                "[environments.e{i}]\nuser = 2001\ngroup = 2001\nmin_processors = 32\nmax_processors = 32\n"
            )
        })
        .collect();
    let text = with_server(
        "",
        &cat(&[&envs, "[environments.alice]\nuser = 2001\ngroup = 2001\n"]),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "[server]"),
        "server.server_limit",
        "min_multiplexers (2) plus every environment's min_processors (257 over 9 environments) is 259, \
         more than server_limit (256, the default)",
    );
}

#[test]
fn max_multiplexers_below_min_multiplexers() {
    let text = with_server("max_multiplexers = 1\n", ALICE);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "max_multiplexers"),
        "server.max_multiplexers",
        "max_multiplexers (1) is less than min_multiplexers (2, the default)",
    );
}

#[test]
fn broken_server_defaults_are_reported_once_at_server() {
    // Both environments inherit the pair: one error, at [server].
    let text = with_server("min_processors = 5\nmax_processors = 2\n", &cat(&[ALICE, BOB]));
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "max_processors"),
        "server.max_processors",
        "max_processors (2) is less than min_processors (5)",
    );

    // Against a built-in default, the value written is at fault.
    let text = with_server("min_processors = 11\n", ALICE);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "min_processors"),
        "server.min_processors",
        "min_processors (11) is greater than max_processors (10, the default)",
    );
}

#[test]
fn environment_value_against_a_server_default() {
    let text = with_server(
        "max_processors = 4\n",
        &cat(&[ALICE, "min_processors = 6\n", BOB]),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let server_line = line_of(&text, "max_processors = 4");
    assert_has(
        &errs,
        line_of(&text, "min_processors = 6"),
        "environments.alice.min_processors",
        &format!(
            "min_processors (6) is greater than max_processors (4, set in [server] at line {server_line})"
        ),
    );
}

#[test]
fn out_of_range_server_and_pool_values() {
    let text = with_server(
        "server_limit = 0\nmax_clients = 0\nmax_multiplexers = 0\nmultiplexer_idle_timeout = -1\n\
         idle_timeout = 86401\nerror_log = \"log/error.log\"\nmax_connections_per_processor = 0\n",
        &cat(&[
            ALICE,
            "start_processors = -1\nmax_requests_per_child = -1\nexpire_timeout = \"1h\"\n",
        ]),
    );
    let errs = errors(&text);
    let l = |n| line_of(&text, n);
    assert_has(
        &errs,
        l("server_limit"),
        "server.server_limit",
        "at least 1, got 0",
    );
    assert_has(&errs, l("max_clients"), "server.max_clients", "at least 1, got 0");
    assert_has(
        &errs,
        l("max_multiplexers"),
        "server.max_multiplexers",
        "at least 1, got 0",
    );
    assert_has(
        &errs,
        l("multiplexer_idle_timeout"),
        "server.multiplexer_idle_timeout",
        "between 0 and 86400, got -1",
    );
    assert_has(
        &errs,
        l("idle_timeout = 86401"),
        "server.idle_timeout",
        "got 86401",
    );
    assert_has(
        &errs,
        l("error_log"),
        "server.error_log",
        "must be an absolute path",
    );
    assert_has(
        &errs,
        l("max_connections_per_processor"),
        "server.max_connections_per_processor",
        "at least 1",
    );
    assert_has(
        &errs,
        l("start_processors"),
        "environments.alice.start_processors",
        "got -1",
    );
    assert_has(
        &errs,
        l("max_requests_per_child"),
        "environments.alice.max_requests_per_child",
        "at least 0, got -1",
    );
    assert_has(
        &errs,
        l("expire_timeout"),
        "environments.alice.expire_timeout",
        "expected an integer, found a string",
    );
    assert_eq!(errs.len(), 10, "{errs:?}");
}

#[test]
fn pool_keys_are_known_in_server_and_environments_only() {
    let text = cat(&[
        SERVER,
        "max_proccessors = 3\n",
        ALICE,
        "server_limit = 3\n",
        VHOST,
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "max_proccessors"),
        "server.max_proccessors",
        "did you mean 'max_processors'?",
    );
    assert_has(
        &errs,
        line_of(&text, "server_limit"),
        "environments.alice.server_limit",
        "unknown key",
    );
}
