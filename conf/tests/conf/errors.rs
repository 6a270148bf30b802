//! Every error class, each with its file, line and key path; all errors at once.

use conf::load;

use crate::*;

#[test]
fn unknown_key() {
    let text = cat(&[SERVER, "lisen = [\"0.0.0.0:80\"]\n", ALICE, VHOST]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(&errs, line_of(&text, "lisen"), "server.lisen", "unknown key");
    assert!(errs[0].message.contains("did you mean 'listen'"));
}

#[test]
fn unknown_key_in_environment_and_vhost() {
    let text = cat(&[SERVER, ALICE, "colour = 1\n", VHOST, "srever_name = \"x\"\n"]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "colour"),
        "environments.alice.colour",
        "unknown key",
    );
    assert_has(
        &errs,
        line_of(&text, "srever_name"),
        "vhosts[0].srever_name",
        "unknown key",
    );
}

#[test]
fn unknown_top_level_table() {
    let text = cat(&[SERVER, ALICE, VHOST, "[servers]\nuser = 1\n"]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(&errs, line_of(&text, "[servers]"), "servers", "unknown table");
}

#[test]
fn wrong_type() {
    let text = cat(&[SERVER, ALICE, "min_processors = \"ten\"\n", VHOST]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "min_processors"),
        "environments.alice.min_processors",
        "expected an integer, found a string",
    );
}

#[test]
fn vhost_naming_unknown_environment() {
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "[[vhosts]]\nserver_name = \"c.example\"\nenvironment = \"carol\"\ndocument_root = \"/srv/c\"\n",
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "\"carol\""),
        "vhosts[1].environment",
        "unknown environment 'carol'",
    );
}

#[test]
fn environment_running_as_root() {
    let text = cat(&[
        SERVER,
        "[environments.alice]\nuser = 0\ngroup = 2001\n",
        "[environments.bob]\nuser = \"root\"\ngroup = \"0\"\n",
        VHOST,
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "user = 0"),
        "environments.alice.user",
        "runs as root (uid 0)",
    );
    assert_has(
        &errs,
        line_of(&text, "\"root\""),
        "environments.bob.user",
        "runs as root (uid 0)",
    );
    assert_has(
        &errs,
        line_of(&text, "\"0\""),
        "environments.bob.group",
        "(gid 0)",
    );
}

#[test]
fn host_name_claimed_twice() {
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "[[vhosts]]\nserver_name = \"b.example\"\nserver_alias = [\"ALICE.example\"]\n",
        "environment = \"alice\"\ndocument_root = \"/srv/b\"\n",
        "[[vhosts]]\nserver_name = \"B.Example\"\nenvironment = \"alice\"\ndocument_root = \"/srv/b\"\n",
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    let first = line_of(&text, "\"alice.example\"");
    assert_has(
        &errs,
        line_of(&text, "ALICE.example"),
        "vhosts[1].server_alias[0]",
        &format!("'alice.example' is already claimed by vhosts[0] (line {first})"),
    );
    assert_has(
        &errs,
        line_of(&text, "B.Example"),
        "vhosts[2].server_name",
        "already claimed by vhosts[1]",
    );
}

#[test]
fn document_root_outside_chroot_compares_components() {
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("alice");
    std::fs::create_dir(&jail).unwrap();
    let jail = jail.display();
    let vhost = |i: usize, root: &str| {
        format!(
            "[[vhosts]]\nserver_name = \"h{i}.example\"\nenvironment = \"alice\"\ndocument_root = \"{root}\"\n"
        )
    };
    let text = cat(&[
        SERVER,
        &format!("[environments.alice]\nuser = 2001\ngroup = 2001\nchroot = \"{jail}\"\n"),
        &vhost(0, &format!("{jail}/www")),
        &vhost(1, &format!("{jail}2/www")),
        &vhost(2, &format!("{jail}/../bob")),
        &vhost(3, &format!("{jail}")),
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, &format!("{jail}2/www")),
        "vhosts[1].document_root",
        &format!("outside the chroot '{jail}' of environment 'alice'"),
    );
    assert_has(
        &errs,
        line_of(&text, "/../bob"),
        "vhosts[2].document_root",
        "'..'",
    );
}

#[test]
fn chroot_must_exist_and_be_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let missing = dir.path().join("missing");
    let text = cat(&[
        SERVER,
        &format!(
            "[environments.alice]\nuser = 2001\ngroup = 2001\nchroot = \"{}\"\n",
            file.display()
        ),
        &format!(
            "[environments.bob]\nuser = 2002\ngroup = 2002\nchroot = \"{}\"\n",
            missing.display()
        ),
        "[environments.carol]\nuser = 2003\ngroup = 2003\nchroot = \"srv/carol\"\n",
        VHOST,
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    let line = line_of(&text, &file.display().to_string());
    assert_has(&errs, line, "environments.alice.chroot", "is not a directory");
    let line = line_of(&text, &missing.display().to_string());
    assert_has(&errs, line, "environments.bob.chroot", "No such file");
    let line = line_of(&text, "srv/carol");
    assert_has(
        &errs,
        line,
        "environments.carol.chroot",
        "must be an absolute path",
    );
}

#[test]
fn missing_user_and_group() {
    let text = cat(&[
        "[server]\nuser = \"no-such-user-bulkhead\"\ngroup = \"no-such-group-bulkhead\"\n",
        "listen = [\"127.0.0.1:0\"]\n",
        "[environments.alice]\nuser = \"bob-bulkhead-missing\"\ngroup = 2001\n",
        VHOST,
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_has(&errs, 2, "server.user", "no such user 'no-such-user-bulkhead'");
    assert_has(&errs, 3, "server.group", "no such group 'no-such-group-bulkhead'");
    assert_has(
        &errs,
        line_of(&text, "bob-bulkhead-missing"),
        "environments.alice.user",
        "no such user 'bob-bulkhead-missing'",
    );
}

#[test]
fn relative_paths() {
    let text = cat(&[
        SERVER,
        "pid_file = \"run/bulkhead.pid\"\n",
        ALICE,
        "[[vhosts]]\nserver_name = \"a.example\"\nenvironment = \"alice\"\ndocument_root = \"www\"\n",
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "pid_file"),
        "server.pid_file",
        "absolute path",
    );
    assert_has(
        &errs,
        line_of(&text, "\"www\""),
        "vhosts[0].document_root",
        "absolute path",
    );
}

#[test]
fn bad_listen_addresses() {
    let text = cat(&[
        "[server]\nuser = 2000\ngroup = 2000\nlisten = [\n  \"127.0.0.1:80\",\n",
        "  \"localhost:80\",\n  \"10.0.0.1\",\n  80,\n  \"127.0.0.1:80\",\n]\n",
        ALICE,
        VHOST,
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 4, "{errs:?}");
    let l = |n| line_of(&text, n);
    assert_has(
        &errs,
        l("localhost:80"),
        "server.listen[1]",
        "invalid socket address 'localhost:80'",
    );
    assert_has(
        &errs,
        l("10.0.0.1"),
        "server.listen[2]",
        "invalid socket address '10.0.0.1'",
    );
    assert_has(
        &errs,
        l("  80,"),
        "server.listen[3]",
        "expected a string, found an integer",
    );
    assert_has(&errs, l("  80,") + 1, "server.listen[4]", "listed twice");

    let text = cat(&["[server]\nuser = 2000\ngroup = 2000\nlisten = []\n", ALICE, VHOST]);
    assert_has(&errors(&text), 4, "server.listen", "at least one address");
    let text = cat(&[
        "[server]\nuser = 2000\ngroup = 2000\nlisten = \"[::]:80\"\n",
        ALICE,
        VHOST,
    ]);
    assert_has(
        &errors(&text),
        4,
        "server.listen",
        "expected an array, found a string",
    );
}

#[test]
fn max_processors_below_min_processors() {
    let text = cat(&[SERVER, ALICE, "min_processors = 5\nmax_processors = 2\n", VHOST]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "max_processors"),
        "environments.alice.max_processors",
        "max_processors (2) is less than min_processors (5)",
    );
}

#[test]
fn zero_and_out_of_range_values() {
    let text = cat(&[
        SERVER,
        "min_multiplexers = 0\nrequest_head_timeout = 0\nlimit_request_head = 100\n",
        "keep_alive_timeout = -1\nshutdown_timeout = 0\n",
        ALICE,
        "max_processors = 0\nmax_connections_per_processor = 0\nmin_processors = 0\n",
        VHOST,
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 6, "{errs:?}");
    let l = |n| line_of(&text, n);
    assert_has(
        &errs,
        l("min_multiplexers"),
        "server.min_multiplexers",
        "at least 1, got 0",
    );
    assert_has(
        &errs,
        l("request_head_timeout"),
        "server.request_head_timeout",
        "between 1 and",
    );
    assert_has(
        &errs,
        l("limit_request_head"),
        "server.limit_request_head",
        "between 256 and 65536",
    );
    assert_has(
        &errs,
        l("keep_alive_timeout"),
        "server.keep_alive_timeout",
        "got -1",
    );
    assert_has(
        &errs,
        l("max_processors"),
        "environments.alice.max_processors",
        "at least 1",
    );
    assert_has(
        &errs,
        l("max_connections_per_processor"),
        "environments.alice.max_connections_per_processor",
        "at least 1",
    );
}

#[test]
fn missing_required_keys_point_at_the_header() {
    let text = cat(&[
        "[server]\ngroup = 2000\n",
        "[environments.alice]\nuser = 2001\n",
        "[[vhosts]]\nserver_name = \"a.example\"\n",
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 5, "{errs:?}");
    assert_has(&errs, 1, "server.user", "missing required key");
    assert_has(&errs, 1, "server.listen", "missing required key");
    assert_has(&errs, 3, "environments.alice.group", "missing required key");
    assert_has(&errs, 5, "vhosts[0].environment", "missing required key");
    assert_has(&errs, 5, "vhosts[0].document_root", "missing required key");
}

#[test]
fn missing_sections() {
    let errs = errors("");
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["server", "environments", "vhosts"]);
    assert!(errs.iter().all(|e| e.line == 0));
    assert_eq!(
        errs[0].to_string(),
        format!("{FILE}: server: missing required table [server]")
    );

    let text = cat(&["vhosts = []\n", SERVER, "[environments]\n"]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "[environments]"),
        "environments",
        "at least one environment",
    );
    assert_has(&errs, line_of(&text, "vhosts ="), "vhosts", "at least one vhost");
}

#[test]
fn host_name_wildcards() {
    let vhost = |name: &str, alias: &str| {
        format!(
            "[[vhosts]]\nserver_name = \"{name}\"\nserver_alias = [\"{alias}\"]\nenvironment = \"alice\"\ndocument_root = \"/srv/a\"\n"
        )
    };
    let text = cat(&[
        SERVER,
        ALICE,
        &vhost("a.example", "*.a.example"),
        &vhost("*.b.example", "b.example"),
        &vhost("c.example", "www.*.c.example"),
        &vhost("d..example", "e_x.example"),
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "*.b.example"),
        "vhosts[1].server_name",
        "may not contain '*'",
    );
    assert_has(
        &errs,
        line_of(&text, "www.*"),
        "vhosts[2].server_alias[0]",
        "leading '*.'",
    );
    assert_has(
        &errs,
        line_of(&text, "d..example"),
        "vhosts[3].server_name",
        "invalid host name",
    );
}

#[test]
fn invalid_environment_name() {
    let text = cat(&[
        SERVER,
        "[environments.\"a b\"]\nuser = 2001\ngroup = 2001\n",
        "[[vhosts]]\nserver_name = \"a.example\"\nenvironment = \"a b\"\ndocument_root = \"/srv/a\"\n",
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_has(
        &errs,
        line_of(&text, "a b\"]"),
        "environments.\"a b\"",
        "[A-Za-z0-9_-]+",
    );
}

#[test]
fn many_errors_are_all_reported() {
    let text = cat(&[
        SERVER,
        "lisen = [\"0.0.0.0:80\"]\n",
        ALICE,
        "min_processors = \"ten\"\n",
        VHOST,
        "[[vhosts]]\nserver_name = \"alice.example\"\nenvironment = \"carol\"\ndocument_root = \"rel\"\n",
    ]);
    let errs = errors(&text);
    let l = |n| line_of(&text, n);
    assert_has(&errs, l("lisen"), "server.lisen", "unknown key");
    assert_has(
        &errs,
        l("\"ten\""),
        "environments.alice.min_processors",
        "expected an integer",
    );
    assert_has(
        &errs,
        l("carol"),
        "vhosts[1].environment",
        "unknown environment 'carol'",
    );
    let dup = l("environment = \"carol\"") - 1;
    assert_has(
        &errs,
        dup,
        "vhosts[1].server_name",
        "already claimed by vhosts[0]",
    );
    assert_has(&errs, l("\"rel\""), "vhosts[1].document_root", "absolute path");
    assert_eq!(errs.len(), 5, "{errs:?}");
    // In line order, one per line of the Display.
    assert!(errs.windows(2).all(|w| w[0].line <= w[1].line));
    let shown = conf::ConfigErrors { errors: errs.clone() }.to_string();
    assert_eq!(shown.lines().count(), 5);
}

#[test]
fn syntax_error_is_one_error_with_its_line() {
    let text = cat(&[SERVER, ALICE, "max_processors = = 3\n", VHOST]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, line_of(&text, "= = 3"));
    let shown = errs[0].to_string();
    assert!(shown.starts_with(&format!("{FILE}:{}: invalid TOML", errs[0].line)));
    assert_eq!(shown.lines().count(), 1, "{shown:?}");

    let text = cat(&[SERVER, SERVER, ALICE, VHOST]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("invalid TOML"), "{errs:?}");
}

#[test]
fn load_reads_the_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bulkhead.toml");
    std::fs::write(&path, cat(&[SERVER, ALICE, VHOST])).unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.path, path);

    let missing = dir.path().join("missing.toml");
    let err = load(&missing).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    let shown = err.to_string();
    assert!(shown.starts_with(&format!("{}: ", missing.display())), "{shown}");
    assert!(shown.contains("cannot read configuration file"), "{shown}");
    assert!(shown.contains("No such file"), "{shown}");
}

#[test]
fn deny_entries_are_absolute_decoded_url_paths() {
    let text = cat(&[
        SERVER,
        ALICE,
        VHOST,
        "deny = [\"/data/\", \"conf/\", \"/a/../b\", \"/%2e\", 7]\n",
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 4, "{errs:?}");
    let line = line_of(&text, "deny =");
    assert_has(&errs, line, "vhosts[0].deny[1]", "must start with '/'");
    assert_has(&errs, line, "vhosts[0].deny[2]", "'..'");
    assert_has(&errs, line, "vhosts[0].deny[3]", "no '%'");
    assert_has(&errs, line, "vhosts[0].deny[4]", "expected a string");
    let ok = cat(&[SERVER, ALICE, VHOST, "deny = [\"/data/\", \"/conf\"]\n"]);
    let cfg = parse(&ok);
    assert_eq!(cfg.vhosts[0].deny, ["/data/", "/conf"]);
}
