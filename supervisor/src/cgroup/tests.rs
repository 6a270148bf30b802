//! The decisions per limit (fallbacks, warnings, errors) and the v2 write sequence,
//! played on a directory tree that stands in for a delegated cgroup2 mount.

use std::path::Path;

use super::*;

fn hierarchy(version: Version, mount: &Path, own: &str, controllers: &[&str]) -> Hierarchy {
    Hierarchy {
        version,
        mount: mount.to_path_buf(),
        mount_root: PathBuf::from("/"),
        own: PathBuf::from(own),
        controllers: controllers.iter().map(|s| s.to_string()).collect(),
    }
}

fn config(alice: &str) -> Config {
    let text = format!(
        "[server]\nuser = 2000\ngroup = 2000\nlisten = [\"127.0.0.1:0\"]\n\
         [environments.alice]\nuser = 2001\ngroup = 2001\n{alice}\n\
         [[vhosts]]\nserver_name = \"a.test\"\nenvironment = \"alice\"\ndocument_root = \"/srv/a\"\n"
    );
    conf::parse_str(&text, Path::new("test.toml")).unwrap()
}

#[test]
fn without_a_controller_limits_fall_back_warn_or_fail() {
    let memory_only = Layout {
        used: vec![Used {
            h: hierarchy(Version::V1, Path::new("/m"), "/", &["memory"]),
            root_dir: PathBuf::from("/m/bulkhead"),
            controllers: vec![Controller::Memory],
        }],
        io: None,
    };
    let cfg = config("memory_max = \"64M\"\nmemory_high = \"32M\"\npids_max = 10\nio_weight = 5");
    let (fallback, warnings) = decide("alice", &cfg.environments[0].cgroup, &memory_only).unwrap();
    assert_eq!(
        fallback,
        Fallback {
            address_space: None,
            processes: Some(10)
        }
    );
    let all = warnings.join("\n");
    assert!(all.contains("memory_high needs cgroup v2"), "{all}");
    assert!(all.contains("RLIMIT_NPROC"), "{all}");
    assert!(all.contains("io_weight"), "{all}");

    let nothing = Layout {
        used: Vec::new(),
        io: None,
    };
    let (fallback, _) = decide("alice", &cfg.environments[0].cgroup, &nothing).unwrap();
    assert_eq!(fallback.address_space, Some(64 << 20));
    let cfg = config("cpu_max = 20");
    match decide("alice", &cfg.environments[0].cgroup, &nothing) {
        Err(CgroupError::Unavailable { key: "cpu_max", .. }) => {}
        other => panic!("{:?}", other.map(|r| r.1)),
    }
}

/// A delegated v2 subtree `/svc` whose own group must hand the controllers down: the
/// supervisor moves itself into `/svc/supervisor`, enables them in `/svc` and in the
/// tree's root, and writes the limits and the pids it places.
#[test]
fn v2_sequence_on_a_stand_in_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("cg");
    let touch = |rel: &str| {
        let p = mount.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "").unwrap();
    };
    for f in ["svc/cgroup.subtree_control", "svc/supervisor/cgroup.procs"] {
        touch(f);
    }
    touch("svc/bulkhead/cgroup.subtree_control");
    for f in [
        "memory.max",
        "memory.high",
        "pids.max",
        "cpu.max",
        "cpu.weight",
        "io.weight",
        "cgroup.procs",
    ] {
        touch(&format!("svc/bulkhead/alice/{f}"));
    }
    std::fs::write(
        mount.join("svc/bulkhead/alice/memory.events"),
        "low 0\noom 3\noom_kill 2\n",
    )
    .unwrap();
    std::fs::write(mount.join("svc/bulkhead/alice/pids.events"), "max 5\n").unwrap();
    let h = hierarchy(Version::V2, &mount, "/svc", &["cpu", "io", "memory", "pids"]);
    let used = Used {
        root_dir: h.dir_of(Path::new("/svc/bulkhead")).unwrap(),
        h,
        controllers: Controller::ALL.to_vec(),
    };
    prepare_root(&used).unwrap();
    let read = |rel: &str| std::fs::read_to_string(mount.join(rel)).unwrap();
    assert_eq!(
        read("svc/supervisor/cgroup.procs"),
        std::process::id().to_string()
    );
    assert_eq!(read("svc/cgroup.subtree_control"), "+memory +pids +cpu +io");
    assert_eq!(
        read("svc/bulkhead/cgroup.subtree_control"),
        "+memory +pids +cpu +io"
    );

    let mut groups = Groups::default();
    groups.layout = Some(Layout {
        used: vec![used],
        io: None,
    });
    let cfg = config("memory_max = \"64M\"\npids_max = 100\ncpu_max = 20\ncpu_weight = 300");
    groups.sync(&cfg).unwrap();
    assert_eq!(read("svc/bulkhead/alice/memory.max"), "67108864");
    assert_eq!(read("svc/bulkhead/alice/memory.high"), "max");
    assert_eq!(read("svc/bulkhead/alice/pids.max"), "100");
    assert_eq!(read("svc/bulkhead/alice/cpu.max"), "20000 100000");
    assert_eq!(read("svc/bulkhead/alice/cpu.weight"), "300");
    assert_eq!(read("svc/bulkhead/alice/io.weight"), "default 100");
    groups.attach("alice", 4242).unwrap();
    assert_eq!(read("svc/bulkhead/alice/cgroup.procs"), "4242");
    groups.attach("bob", 4243).unwrap();
    assert_eq!(groups.events(), vec![("alice", 2, 5)]);
}
