//! Each environment's files are served by processes running as that environment, and
//! nothing of one environment is reachable from another.

use std::time::Duration;

use crate::harness::*;

fn setup() -> (tempfile::TempDir, TestServer) {
    let w = world();
    put(w.path(), "alice/index.html", b"alice home", ALICE, 0o600);
    put(w.path(), "alice/secret.txt", b"alice secret", ALICE, 0o600);
    put(w.path(), "bob/index.html", b"bob home", BOB, 0o600);
    let server = TestServer::start(&two_env_config(w.path(), ""));
    (w, server)
}

#[test]
fn each_vhost_served_by_its_own_uid() {
    if !require_root() {
        return;
    }
    let (w, server) = setup();
    let r = get(server.addr, "alice.test", "/secret.txt");
    assert_eq!(r.status, 200, "{}", server.log());
    assert_eq!(r.text(), "alice secret");
    let r = get(server.addr, "bob.test", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "bob home");
    // bob's processor cannot read alice's 0600 file through a symlink in bob's root.
    std::os::unix::fs::symlink(w.path().join("alice/secret.txt"), w.path().join("bob/stolen.txt")).unwrap();
    chown(&w.path().join("bob/stolen.txt"), BOB);
    let r = get(server.addr, "bob.test", "/stolen.txt");
    assert_eq!(r.status, 403, "{}", r.text());

    for (uid, name) in [(ALICE, "alice"), (BOB, "bob")] {
        let pids = server.processors_of(uid);
        assert!(!pids.is_empty(), "no processor of {name}");
        for pid in pids {
            let u = status_field(pid, "Uid").unwrap();
            let g = status_field(pid, "Gid").unwrap();
            assert!(
                u.split_whitespace().all(|x| x == uid.to_string()),
                "{name} uid {u}"
            );
            assert!(
                g.split_whitespace().all(|x| x == uid.to_string()),
                "{name} gid {g}"
            );
            assert_eq!(status_field(pid, "Groups").unwrap(), uid.to_string());
            assert_eq!(status_field(pid, "CapEff").unwrap(), "0000000000000000");
            assert_eq!(status_field(pid, "CapPrm").unwrap(), "0000000000000000");
            assert_eq!(status_field(pid, "NoNewPrivs").unwrap(), "1");
        }
    }
    let muxes = server.children("multiplexer");
    assert_eq!(muxes.len(), 2);
    for pid in muxes {
        let u = status_field(pid, "Uid").unwrap();
        assert!(
            u.split_whitespace().all(|x| x == MUX_UID.to_string()),
            "multiplexer uid {u}"
        );
        assert_eq!(status_field(pid, "CapEff").unwrap(), "0000000000000000");
        assert_eq!(status_field(pid, "NoNewPrivs").unwrap(), "1");
    }
    let _ = Duration::from_secs(1);
}
