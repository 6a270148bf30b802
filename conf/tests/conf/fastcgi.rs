//! `[environments.NAME.fastcgi]` and `[server] runtime_dir`.

use std::path::Path;
use std::time::Duration;

use crate::*;

#[test]
fn fastcgi_defaults_and_values() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    assert!(config.environments[0].fastcgi.is_none());
    assert_eq!(config.server.runtime_dir, Path::new("/run/bulkhead"));
    let text = cat(&[
        SERVER,
        "runtime_dir = \"/run/bh\"\n",
        ALICE,
        "[environments.alice.fastcgi]\ncommand = [\"/usr/bin/php-cgi\", \"-d\", \"x=1\"]\nextensions = [\".php\"]\n",
        VHOST,
    ]);
    let config = parse(&text);
    assert_eq!(config.server.runtime_dir, Path::new("/run/bh"));
    let f = config.environments[0].fastcgi.as_ref().expect("fastcgi");
    assert_eq!(f.command, ["/usr/bin/php-cgi", "-d", "x=1"]);
    assert_eq!(f.extensions, [".php"]);
    assert_eq!((f.min_backends, f.max_backends, f.max_requests), (0, 8, 10_000));
    assert_eq!(f.idle_timeout, Duration::from_secs(60));
    assert_eq!(f.timeout, Duration::from_secs(60));
    assert_eq!(f.requests_per_connection, 100);
    assert!(f.env.is_empty());
    let text = cat(&[
        SERVER,
        ALICE,
        r#"[environments.alice.fastcgi]
command = ["/usr/bin/php-cgi"]
extensions = [".php", ".phtml"]
min_backends = 2
max_backends = 4
max_requests = 0
idle_timeout = 10
fastcgi_timeout = 5
requests_per_connection = 1
env = { PHP_INI_SCAN_DIR = "/srv/alice/php.d", TZ = "UTC" }
"#,
        VHOST,
    ]);
    let config = parse(&text);
    let f = config.environments[0].fastcgi.as_ref().expect("fastcgi");
    assert_eq!(f.extensions, [".php", ".phtml"]);
    assert_eq!((f.min_backends, f.max_backends, f.max_requests), (2, 4, 0));
    assert_eq!(f.idle_timeout, Duration::from_secs(10));
    assert_eq!(f.timeout, Duration::from_secs(5));
    assert_eq!(f.requests_per_connection, 1);
    assert_eq!(
        f.env,
        [
            ("PHP_INI_SCAN_DIR".to_string(), "/srv/alice/php.d".to_string()),
            ("TZ".to_string(), "UTC".to_string())
        ]
    );
}

#[test]
fn fastcgi_errors() {
    let text = cat(&[
        SERVER,
        "runtime_dir = \"run\"\n",
        ALICE,
        r#"[environments.alice.fastcgi]
command = ["php-cgi"]
extensions = ["php"]
min_backends = 9
max_backends = 4
fastcgi_timeout = 0
requests_per_connection = 0
env = { PHP_FCGI_CHILDREN = "4", "1X" = "y" }
colour = "blue"
"#,
        VHOST,
        "cgi = [\".cgi\"]\n",
    ]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "runtime_dir"),
        "server.runtime_dir",
        "absolute",
    );
    assert_has(
        &errs,
        line_of(&text, "command = [\"php-cgi\"]"),
        "environments.alice.fastcgi.command[0]",
        "absolute path",
    );
    assert_has(
        &errs,
        line_of(&text, "extensions = [\"php\"]"),
        "environments.alice.fastcgi.extensions[0]",
        "starts with '.'",
    );
    assert_has(
        &errs,
        line_of(&text, "fastcgi_timeout = 0"),
        "environments.alice.fastcgi.fastcgi_timeout",
        "between 1 and",
    );
    assert_has(
        &errs,
        line_of(&text, "requests_per_connection = 0"),
        "environments.alice.fastcgi.requests_per_connection",
        "between 1 and",
    );
    let env = line_of(&text, "env = {");
    assert_has(
        &errs,
        env,
        "environments.alice.fastcgi.env.PHP_FCGI_CHILDREN",
        "set by bulkhead",
    );
    assert_has(
        &errs,
        env,
        "environments.alice.fastcgi.env.1X",
        "not an environment variable name",
    );
    assert_has(
        &errs,
        line_of(&text, "colour"),
        "environments.alice.fastcgi.colour",
        "unknown key",
    );
}

#[test]
fn fastcgi_min_above_max_and_cgi_overlap() {
    let text = cat(&[
        SERVER,
        ALICE,
        "[environments.alice.fastcgi]\ncommand = [\"/usr/bin/php-cgi\"]\nextensions = [\".php\"]\nmin_backends = 9\nmax_backends = 4\n",
        VHOST,
        "cgi = [\".php\"]\n",
    ]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "min_backends = 9"),
        "environments.alice.fastcgi.min_backends",
        "above max_backends",
    );
    let text = cat(&[
        SERVER,
        ALICE,
        "[environments.alice.fastcgi]\ncommand = [\"/usr/bin/php-cgi\"]\nextensions = [\".php\"]\n",
        VHOST,
        "cgi = [\".php\"]\n",
    ]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "cgi = [\".php\"]"),
        "vhosts[0].cgi",
        "also a FastCGI extension",
    );
}

#[test]
fn fastcgi_manager_defaults_to_bulkhead_and_takes_php_fpm() {
    let plain = cat(&[
        SERVER,
        ALICE,
        "[environments.alice.fastcgi]\ncommand = [\"/usr/bin/php-cgi\"]\nextensions = [\".php\"]\n",
        VHOST,
    ]);
    let f = parse(&plain).environments[0].fastcgi.clone().expect("fastcgi");
    assert_eq!(f.manager, conf::Manager::Bulkhead);
    let text = cat(&[
        SERVER,
        ALICE,
        "[environments.alice.fastcgi]\nmanager = \"php-fpm\"\ncommand = [\"/usr/sbin/php-fpm8.2\"]\nextensions = [\".php\"]\nmin_backends = 2\nenv = { PHP_INI_SCAN_DIR = \":/srv/a\" }\n",
        VHOST,
    ]);
    let config = parse(&text);
    let f = config.environments[0].fastcgi.as_ref().expect("fastcgi");
    assert_eq!(f.manager, conf::Manager::PhpFpm);
    assert_eq!(f.command, ["/usr/sbin/php-fpm8.2"]);
    // min_backends means nothing to an ondemand pool: said, not refused.
    let w: Vec<_> = config
        .warnings
        .iter()
        .filter(|w| w.key == "environments.alice.fastcgi.min_backends")
        .collect();
    assert_eq!(w.len(), 1, "{:?}", config.warnings);
    assert_eq!(w[0].line, line_of(&text, "min_backends = 2"));
    assert!(w[0].message.contains("ignored"), "{}", w[0].message);
}

#[test]
fn fastcgi_manager_errors() {
    let text = cat(&[
        SERVER,
        ALICE,
        "[environments.alice.fastcgi]\nmanager = \"apache\"\ncommand = [\"/usr/sbin/php-fpm8.2\"]\nextensions = [\".php\"]\n",
        VHOST,
    ]);
    assert_has(
        &errors(&text),
        line_of(&text, "manager"),
        "environments.alice.fastcgi.manager",
        "\"bulkhead\" or \"php-fpm\"",
    );
    // A value php-fpm's pool file cannot hold on one single-quoted line, and
    // FPM_SOCKETS, which bulkhead sets.
    let text = cat(&[
        SERVER,
        ALICE,
        "[environments.alice.fastcgi]\nmanager = \"php-fpm\"\ncommand = [\"/usr/sbin/php-fpm8.2\"]\nextensions = [\".php\"]\nenv = { A = \"it's\", FPM_SOCKETS = \"/x=3\" }\n",
        VHOST,
    ]);
    let env = line_of(&text, "env = {");
    assert_has(
        &errors(&text),
        env,
        "environments.alice.fastcgi.env.FPM_SOCKETS",
        "set by bulkhead",
    );
    let quote = text.replace(", FPM_SOCKETS = \"/x=3\"", "");
    assert_has(
        &errors(&quote),
        env,
        "environments.alice.fastcgi.env.A",
        "cannot hold '",
    );
    // The same quote is fine for php-cgi, which gets it as a variable.
    parse(&quote.replace("manager = \"php-fpm\"\n", ""));
}
