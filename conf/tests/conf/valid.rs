//! Valid configurations: parsed values, defaults, id forms, lower-casing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::*;

#[test]
fn full_example_parses_with_values_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("alice");
    std::fs::create_dir(&jail).unwrap();
    let me = uzers::get_current_username().unwrap();
    let my_group = uzers::get_current_groupname().unwrap();
    let text = format!(
        r#"# bulkhead
[server]
user = "{user}"
group = "{group}"
listen = ["0.0.0.0:80", "[::]:8080"]
min_multiplexers = 4
request_head_timeout = 10
limit_request_head = 16384
keep_alive_timeout = 0
shutdown_timeout = 60
pid_file = "/run/bulkhead.pid"

[environments.alice]
user = 2001
group = "2001"
chroot = "{jail}"
min_processors = 2
max_processors = 20
max_connections_per_processor = 128

[environments.bob]
user = "2002"
group = 2002

[[vhosts]]
server_name = "Alice.Example"
server_alias = ["WWW.alice.example", "*.Alice.Example"]
environment = "alice"
document_root = "{jail}/www/"

[[vhosts]]
server_name = "bob.example"
environment = "bob"
document_root = "/srv/bob//www"
"#,
        user = me.to_str().unwrap(),
        group = my_group.to_str().unwrap(),
        jail = jail.display(),
    );
    let config = parse(&text);
    assert_eq!(config.path, PathBuf::from(FILE));

    let s = &config.server;
    assert_eq!(s.uid, uzers::get_current_uid());
    assert_eq!(s.gid, uzers::get_current_gid());
    assert_eq!(s.user_name, me.to_str().unwrap());
    let want: Vec<SocketAddr> = vec!["0.0.0.0:80".parse().unwrap(), "[::]:8080".parse().unwrap()];
    assert_eq!(s.listen, want);
    assert_eq!(s.min_multiplexers, 4);
    assert_eq!(s.request_head_timeout, Duration::from_secs(10));
    assert_eq!(s.limit_request_head, 16384);
    assert_eq!(s.keep_alive_timeout, Duration::ZERO);
    assert_eq!(s.shutdown_timeout, Duration::from_secs(60));
    assert_eq!(s.pid_file.as_deref(), Some(Path::new("/run/bulkhead.pid")));

    let [alice, bob] = &config.environments[..] else {
        panic!("two environments expected: {:?}", config.environments)
    };
    assert_eq!(alice.name, "alice");
    assert_eq!((alice.uid, alice.gid), (2001, 2001));
    assert_eq!(
        (alice.user_name.as_str(), alice.group_name.as_str()),
        ("2001", "2001")
    );
    assert_eq!(alice.chroot.as_deref(), Some(jail.as_path()));
    assert_eq!((alice.min_processors, alice.max_processors), (2, 20));
    assert_eq!(alice.max_connections_per_processor, 128);
    // Defaults.
    assert_eq!(bob.name, "bob");
    assert_eq!((bob.uid, bob.gid), (2002, 2002));
    assert_eq!(bob.chroot, None);
    assert_eq!((bob.min_processors, bob.max_processors), (1, 10));
    assert_eq!(bob.max_connections_per_processor, 1024);

    let [v0, v1] = &config.vhosts[..] else {
        panic!("two vhosts expected: {:?}", config.vhosts)
    };
    assert_eq!(v0.server_name, "alice.example");
    assert_eq!(v0.server_alias, ["www.alice.example", "*.alice.example"]);
    assert_eq!(v0.environment, 0);
    assert_eq!(v0.document_root, jail.join("www"));
    assert_eq!(alice.path_in_jail(&v0.document_root), Path::new("/www"));
    assert_eq!(v1.environment, 1);
    assert_eq!(v1.server_alias, Vec::<String>::new());
    assert_eq!(v1.document_root, Path::new("/srv/bob/www"));
}

#[test]
fn server_defaults() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    let s = &config.server;
    assert_eq!(s.min_multiplexers, 2);
    assert_eq!(s.request_head_timeout, Duration::from_secs(40));
    assert_eq!(s.limit_request_head, 8192);
    assert_eq!(s.keep_alive_timeout, Duration::from_secs(5));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.pid_file, None);
}

#[test]
fn inline_tables_are_accepted() {
    let text = r#"
server = { user = 2000, group = 2000, listen = ["127.0.0.1:0"] }
environments = { alice = { user = 2001, group = 2001 } }
vhosts = [{ server_name = "a.example", environment = "alice", document_root = "/srv/a" }]
"#;
    let config = parse(text);
    assert_eq!(config.vhosts[0].server_name, "a.example");
}

#[test]
fn numeric_ids_as_integer_and_string() {
    let text = cat(&[
        SERVER,
        "[environments.alice]\nuser = \"2001\"\ngroup = 2002\n",
        VHOST,
    ]);
    let env = &parse(&text).environments[0];
    assert_eq!((env.uid, env.gid), (2001, 2002));
    assert_eq!(
        (env.user_name.as_str(), env.group_name.as_str()),
        ("2001", "2002")
    );

    for bad in ["-1", "4294967295", "\"99999999999\""] {
        let text = cat(&[
            SERVER,
            &format!("[environments.alice]\nuser = {bad}\ngroup = 2001\n"),
            VHOST,
        ]);
        let errs = errors(&text);
        let line = line_of(&text, &format!("user = {bad}"));
        assert_has(&errs, line, "environments.alice.user", "out of range");
    }
}

#[test]
fn host_names_are_lower_cased() {
    let text = cat(&[
        SERVER,
        ALICE,
        "[[vhosts]]\nserver_name = \"MiXeD.Example\"\nserver_alias = [\"*.MIXED.example\"]\n",
        "environment = \"alice\"\ndocument_root = \"/srv/a\"\n",
    ]);
    let v = &parse(&text).vhosts[0];
    assert_eq!(v.server_name, "mixed.example");
    assert_eq!(v.server_alias, ["*.mixed.example"]);
}
