//! The cgroup limits (`memory_max` … `io_weight`, per environment, their defaults in
//! `[server]`) and `[server] cgroup_root`.

use crate::*;
use conf::Bound;

const BOB: &str = "[environments.bob]\nuser = 2002\ngroup = 2002\n";

#[test]
fn no_limits_no_cgroup() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    assert!(config.environments[0].cgroup.is_empty());
    assert_eq!(config.server.cgroup_root, None);
}

#[test]
fn values_and_server_defaults() {
    let text = cat(&[
        SERVER,
        "pids_max = 50\ncpu_max = 100\ncgroup_root = \"/bulkhead//test/\"\n",
        ALICE,
        "memory_max = \"512M\"\nmemory_high = \"384M\"\npids_max = 100\ncpu_max = 20\ncpu_weight = 200\nio_weight = 10\n",
        BOB,
        "memory_max = 1048576\ncpu_max = \"max\"\n",
        VHOST,
    ]);
    let config = parse(&text);
    assert_eq!(
        config.server.cgroup_root.as_deref(),
        Some(std::path::Path::new("/bulkhead/test"))
    );
    let relative = cat(&[SERVER, "cgroup_root = \"tests/./x\"\n", ALICE, VHOST]);
    assert_eq!(
        parse(&relative).server.cgroup_root.as_deref(),
        Some(std::path::Path::new("tests/x"))
    );
    let up = cat(&[SERVER, "cgroup_root = \"a/../b\"\n", ALICE, VHOST]);
    assert_has(
        &errors(&up),
        line_of(&up, "cgroup_root"),
        "server.cgroup_root",
        "'..'",
    );
    let a = &config.environments[0].cgroup;
    assert_eq!(a.memory_max, Some(Bound::At(512 << 20)));
    assert_eq!(a.memory_high, Some(Bound::At(384 << 20)));
    assert_eq!(a.pids_max, Some(Bound::At(100)));
    assert_eq!(a.cpu_max, Some(Bound::At(20)));
    assert_eq!((a.cpu_weight, a.io_weight), (Some(200), Some(10)));
    let b = &config.environments[1].cgroup;
    assert_eq!(b.memory_max, Some(Bound::At(1 << 20)));
    assert_eq!(b.memory_high, None);
    assert_eq!(b.pids_max, Some(Bound::At(50)), "from [server]");
    assert_eq!(b.cpu_max, Some(Bound::Max), "its own over [server]'s");
    assert_eq!(b.cpu_weight, None);
}

#[test]
fn errors_name_line_and_key() {
    let text = cat(&[
        SERVER,
        "memory_max = \"lots\"\ncgroup_root = \"/\"\n",
        ALICE,
        "memory_high = \"2G\"\nmemory_max = \"1G\"\npids_max = 0\ncpu_max = \"half\"\ncpu_weight = 10001\nio_weight = true\n",
        BOB,
        "memory_max = 4096\nmemroy_max = 1\n",
        VHOST,
    ]);
    let errors = errors(&text);
    assert_has(
        &errors,
        line_of(&text, "\"lots\""),
        "server.memory_max",
        "expected a size",
    );
    assert_has(
        &errors,
        line_of(&text, "cgroup_root"),
        "server.cgroup_root",
        "below the hierarchy's root",
    );
    assert_has(
        &errors,
        line_of(&text, "memory_high"),
        "environments.alice.memory_high",
        "above memory_max",
    );
    assert_has(
        &errors,
        line_of(&text, "pids_max"),
        "environments.alice.pids_max",
        "between 1 and 4194304",
    );
    assert_has(
        &errors,
        line_of(&text, "\"half\""),
        "environments.alice.cpu_max",
        "or \"max\"",
    );
    assert_has(
        &errors,
        line_of(&text, "cpu_weight"),
        "environments.alice.cpu_weight",
        "between 1 and 10000",
    );
    assert_has(
        &errors,
        line_of(&text, "io_weight"),
        "environments.alice.io_weight",
        "expected an integer",
    );
    assert_has(
        &errors,
        line_of(&text, "= 4096"),
        "environments.bob.memory_max",
        "at least 1M",
    );
    assert_has(
        &errors,
        line_of(&text, "memroy_max"),
        "environments.bob.memroy_max",
        "memory_max",
    );
}

#[test]
fn memory_high_against_an_inherited_max() {
    let text = cat(&[
        SERVER,
        "memory_max = \"100M\"\n",
        ALICE,
        "memory_high = \"200M\"\n",
        VHOST,
    ]);
    let errors = errors(&text);
    assert_has(
        &errors,
        line_of(&text, "memory_high"),
        "environments.alice.memory_high",
        "above memory_max",
    );
    let text = cat(&[
        SERVER,
        "memory_max = \"100M\"\n",
        ALICE,
        "memory_high = \"max\"\n",
        VHOST,
    ]);
    assert_eq!(parse(&text).environments[0].cgroup.memory_high, Some(Bound::Max));
}
