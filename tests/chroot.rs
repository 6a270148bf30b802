//! A chrooted environment: its processors run inside the chroot, serve its files, and
//! cannot reach a host file outside it, not even through a symlink whose owner matches
//! its target (which the same link in an unchrooted environment would serve).

use std::path::{Path, PathBuf};

use crate::harness::*;

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

[environments.alice]
user = {ALICE}
group = {ALICE}

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

fn symlink_owned(target: &Path, link: &Path, uid: u32) {
    std::os::unix::fs::symlink(target, link).unwrap();
    chown(link, uid);
}

fn canonical(p: impl AsRef<Path>) -> PathBuf {
    p.as_ref().canonicalize().unwrap()
}

#[test]
fn chrooted_environment_serves_its_files_and_nothing_outside() {
    if !require_root() {
        return;
    }
    let w = world();
    let root = w.path();
    put(root, "alice/index.html", b"alice home", ALICE, 0o600);
    put(root, "bob/www/index.html", b"bob jailed", BOB, 0o600);
    put(root, "bob/www/sub/page.html", b"bob page", BOB, 0o600);
    // Inside the chroot but outside the document root: reachable by a relative link.
    put(root, "bob/private.txt", b"bob private", BOB, 0o600);
    // Host files outside the chroot, each owned by the uid whose link points at it, so
    // SymLinksIfOwnerMatch lets the link through and only the chroot stands in the way.
    put(root, "outside-bob.txt", b"outside for bob", BOB, 0o644);
    put(root, "outside-alice.txt", b"outside for alice", ALICE, 0o644);
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

    // Control: in alice's unchrooted environment an owner-matched absolute link to a
    // host file is served.
    symlink_owned(
        &root.join("outside-alice.txt"),
        &root.join("alice/out.txt"),
        ALICE,
    );
    let r = get(server.addr, "alice.test", "/out.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "outside for alice"));

    // The same in bob's: the absolute host path names nothing inside the chroot.
    symlink_owned(&root.join("outside-bob.txt"), &root.join("bob/www/out.txt"), BOB);
    // A relative one climbing above the chroot's root stays at its root.
    symlink_owned(
        Path::new("../../../../../../../../outside-bob.txt"),
        &root.join("bob/www/up.txt"),
        BOB,
    );
    // A directory link to the host directory above the chroot.
    symlink_owned(root, &root.join("bob/www/world"), BOB);
    for path in [
        "/out.txt",
        "/up.txt",
        "/world/outside-bob.txt",
        "/world/alice/index.html",
    ] {
        let r = get(server.addr, "bob.test", path);
        assert!(
            r.status == 404 || r.status == 403,
            "{path}: {} {:?}",
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
    if !require_root() {
        return;
    }
    let w = world();
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
