//! A chrooted environment: its processors run inside the chroot, serve its files, and
//! cannot reach a host file outside it, not even through a symlink whose owner matches
//! its target (which the same link in an unchrooted environment would serve).

use std::path::{Path, PathBuf};

use crate::util::*;

/// alice without a chroot, bob chrooted to `<world>/bob` with its site in `www`.
fn chroot_config(w: &Path) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 2
request_head_timeout = 2
keep_alive_timeout = 5

# alice is the comparison: without a chroot a host file outside its tree is served,
# so that nothing but bob's chroot refuses it. Its private view would refuse it too
# (the files are in the host's /tmp, which the view replaces): off for alice only.
[environments.alice]
user = {ALICE}
group = {ALICE}
private_view = false

[environments.bob]
user = {BOB}
group = {BOB}
chroot = "{jail}"
min_processors = 2

[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{a}"

[[vhosts]]
server_name = "bob.test"
environment = "bob"
document_root = "{b}"
"#,
        jail = w.join("bob").display(),
        a = w.join("alice").display(),
        b = w.join("bob/www").display(),
    )
}

/// `put` gives bob the directories it creates; the chroot itself must stay root's
/// (`check` refuses a chroot its tenant could swap).
fn root_owned_jail(w: &Path) {
    chown(&w.join("bob"), 0);
}

fn canonical(p: impl AsRef<Path>) -> PathBuf {
    p.as_ref().canonicalize().unwrap()
}

#[test]
fn chrooted_environment_serves_its_files_and_nothing_outside() {
    require_root!();
    let w = Dir::new("chrooted_environment_serves_its_files_and_nothing_outside");
    let root = w.path();
    put(root, "alice/index.html", b"alice home", ALICE, 0o600);
    put(root, "bob/www/index.html", b"bob jailed", BOB, 0o600);
    put(root, "bob/www/sub/page.html", b"bob page", BOB, 0o600);
    // Inside the chroot but outside the document root: reachable by a relative link.
    put(root, "bob/private.txt", b"bob private", BOB, 0o600);
    // Host files outside the chroot, each owned by the uid whose link points at it, so
    // SymLinksIfOwnerMatch lets the link through and only the chroot stands in the way.
    put(root, "outside-bob.txt", b"outside for bob", BOB, 0o644);
    put(root, "outside-bob-dir/file.txt", b"outside for bob", BOB, 0o644);
    put(root, "outside-alice.txt", b"outside for alice", ALICE, 0o644);
    put(
        root,
        "outside-alice-dir/file.txt",
        b"outside for alice",
        ALICE,
        0o644,
    );
    root_owned_jail(root);
    let server = TestServer::start(&chroot_config(root));

    let r = get(server.addr, "bob.test", "/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "bob jailed"),
        "{}",
        server.log()
    );
    let r = get(server.addr, "bob.test", "/sub/page.html");
    assert_eq!((r.status, r.text().as_str()), (200, "bob page"));
    let r = get(server.addr, "bob.test", "/sub");
    assert_eq!(r.status, 301, "directory without its slash");

    // Four ways out, each made twice: in alice's unchrooted environment, where it must
    // be served (so nothing but a chroot can refuse it), and in bob's, where it must
    // not. Every link and its target have one owner, and each relative link climbs
    // exactly to the world directory (alice's root is one level below it, bob's two).
    let cases = [
        // An absolute link to a host file.
        ("/out.txt", "out.txt", "{world}/outside-{who}.txt"),
        // A relative link climbing out of the document root.
        ("/up.txt", "up.txt", "{up}outside-{who}.txt"),
        // An absolute link to a host directory.
        ("/dir/file.txt", "dir", "{world}/outside-{who}-dir"),
        // A relative link to a host directory.
        ("/updir/file.txt", "updir", "{up}outside-{who}-dir"),
    ];
    for (path, link, target) in cases {
        for (who, uid, docroot, up) in [
            ("alice", ALICE, "alice", "../"),
            ("bob", BOB, "bob/www", "../../"),
        ] {
            let target = target
                .replace("{world}", &root.display().to_string())
                .replace("{up}", up)
                .replace("{who}", who);
            symlink_owned(Path::new(&target), &root.join(docroot).join(link), uid);
        }
        let r = get(server.addr, "alice.test", path);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "outside for alice"),
            "{path} without a chroot\n{}",
            server.log()
        );
        let r = get(server.addr, "bob.test", path);
        assert!(
            r.status == 404 || r.status == 403,
            "{path} in the chroot: {} {:?}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("outside for"), "{path}: {}", r.text());
    }
    // Links that stay inside the chroot work: relative, and absolute in chroot terms.
    symlink_owned(Path::new("../private.txt"), &root.join("bob/www/rel.txt"), BOB);
    symlink_owned(Path::new("/private.txt"), &root.join("bob/www/abs.txt"), BOB);
    for path in ["/rel.txt", "/abs.txt"] {
        let r = get(server.addr, "bob.test", path);
        assert_eq!((r.status, r.text().as_str()), (200, "bob private"), "{path}");
    }

    // bob's processors are rooted in the chroot (and their cwd is its root); alice's
    // and the multiplexers are not.
    let jail = canonical(root.join("bob"));
    let bob = server.processors_of(BOB);
    assert_eq!(bob.len(), 2, "{bob:?}");
    for p in bob {
        assert_eq!(canonical(format!("/proc/{p}/root")), jail, "bob's processor {p}");
        assert_eq!(std::fs::read_link(format!("/proc/{p}/root")).unwrap(), jail);
        assert_eq!(std::fs::read_link(format!("/proc/{p}/cwd")).unwrap(), jail);
    }
    for p in server.processors_of(ALICE) {
        assert_eq!(
            std::fs::read_link(format!("/proc/{p}/root")).unwrap(),
            Path::new("/")
        );
    }
    for p in server.children("multiplexer") {
        assert_eq!(
            std::fs::read_link(format!("/proc/{p}/root")).unwrap(),
            Path::new("/")
        );
    }
}

#[test]
fn hand_back_between_a_chrooted_and_a_plain_environment() {
    require_root!();
    let w = Dir::new("hand_back_between_a_chrooted_and_a_plain_environment");
    let root = w.path();
    put(root, "alice/index.html", b"alice home", ALICE, 0o600);
    put(root, "bob/www/index.html", b"bob jailed", BOB, 0o600);
    root_owned_jail(root);
    let server = TestServer::start(&chroot_config(root));
    let mut s = connect(server.addr);
    for (host, body) in [
        ("bob.test", "bob jailed"),
        ("alice.test", "alice home"),
        ("bob.test", "bob jailed"),
    ] {
        let r = get_on(&mut s, host, "/").unwrap_or_else(|| panic!("{host}: no response\n{}", server.log()));
        assert_eq!((r.status, r.text().as_str()), (200, body), "{host}");
    }
}
