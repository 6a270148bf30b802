//! Unprivileged mode (README, ARCHITECTURE "Decisions"): started by a normal user,
//! bulkhead runs every process as that user, without uid switches or chroot, warns
//! that isolation is off, and serves every vhost.

use std::os::unix::process::CommandExt;

use crate::util::*;

/// The normal user the server runs as here (no passwd entry needed).
const OWNER: u32 = 2011;

#[test]
fn a_normal_user_serves_both_vhosts_with_isolation_off() {
    require_root!();
    let w = Dir::new("a_normal_user_serves_both_vhosts_with_isolation_off");
    // 0600 and the owner's: only a process running as OWNER can serve them.
    put(w.path(), "alice/index.html", b"alice home", OWNER, 0o600);
    put(w.path(), "bob/index.html", b"bob home", OWNER, 0o600);
    // The config still names alice's and bob's uids; unprivileged, they cannot apply.
    let server = TestServer::try_start_with(&two_env_config(w.path(), ""), |cmd| {
        // Readable by the user the server runs as.
        let path = cmd.get_args().nth(2).map(std::path::PathBuf::from).unwrap();
        chmod(path.parent().unwrap(), 0o755);
        chmod(&path, 0o644);
        cmd.uid(OWNER).gid(OWNER);
    })
    .unwrap_or_else(|log| panic!("unprivileged server did not start:\n{log}"));
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("isolation between environments is OFF")),
        "no isolation-off warning:\n{}",
        server.log()
    );
    server.all_ok(3, "unprivileged");
    // Every process, the supervisor included, is OWNER's, real, effective and saved.
    let children = server.all_children();
    assert_eq!(server.children("multiplexer").len(), 2, "{children:?}");
    assert!(server.children("processor").len() >= 2, "{children:?}");
    for p in std::iter::once(server.pid()).chain(children) {
        for key in ["Uid", "Gid"] {
            let ids = status_field(p, key).unwrap_or_default();
            assert!(
                ids.split_whitespace().all(|x| x == OWNER.to_string()),
                "{:?} {p}: {key} {ids}",
                cmdline(p)
            );
        }
        assert_eq!(
            std::fs::read_link(format!("/proc/{p}/root")).unwrap(),
            std::path::Path::new("/"),
            "{p} is chrooted"
        );
    }
}
