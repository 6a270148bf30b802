//! Each environment's files are served by processes running as that environment, and
//! nothing of one environment is reachable from another.

use std::time::Duration;

use crate::util::*;

fn setup(test: &str, extra_server: &str) -> (Dir, TestServer) {
    let w = Dir::new(test);
    put(w.path(), "alice/index.html", b"alice home", ALICE, 0o600);
    put(w.path(), "alice/secret.txt", b"alice secret", ALICE, 0o600);
    put(w.path(), "bob/index.html", b"bob home", BOB, 0o600);
    let server = TestServer::start(&two_env_config(w.path(), extra_server));
    (w, server)
}

#[test]
fn each_vhost_served_by_its_own_uid() {
    require_root!();
    // No private views: this shows that bob's uid alone refuses alice's file, which
    // bob's view would hide before his uid is asked (alice's tree is not in it).
    let (w, server) = setup("each_vhost_served_by_its_own_uid", "private_view = false");
    let r = get(server.addr, "alice.test", "/secret.txt");
    assert_eq!(r.status, 200, "{}", server.log());
    assert_eq!(r.text(), "alice secret");
    let r = get(server.addr, "bob.test", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "bob home");
    // bob's processor cannot read alice's 0600 file when nothing but the file's mode
    // stands in the way: a hard link in bob's root (same inode, alice's) and a symlink
    // owned by alice (so SymLinksIfOwnerMatch lets it through). Only the processor's
    // uid refuses them: a processor running as root would serve both.
    let secret = w.path().join("alice/secret.txt");
    std::fs::hard_link(&secret, w.path().join("bob/hard.txt")).unwrap();
    symlink_owned(&secret, &w.path().join("bob/link.txt"), ALICE);
    for name in ["hard.txt", "link.txt"] {
        let r = get(server.addr, "bob.test", &format!("/{name}"));
        assert_eq!(r.status, 403, "/{name}: {}", r.text());
        assert!(!r.text().contains("alice secret"), "/{name}: {}", r.text());
        // The reason is the kernel's refusal to bob's uid, not the link rule.
        let line = server.wait_for_log_line(Duration::from_secs(5), |l| {
            l.contains("request refused") && l.contains(&format!("bob/{name}: EACCES"))
        });
        assert!(
            line.is_some(),
            "/{name}: no EACCES refusal logged:\n{}",
            server.log()
        );
    }

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
}
