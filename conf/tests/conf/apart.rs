//! Rules that keep tenants apart: no environment with the multiplexers' uid or gid,
//! warnings for shared uids and for host names two environments can both match, and
//! the ownership rules for chroots and access logs (who may change what they name).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use conf::ConfigWarning;

use crate::*;

fn warnings(text: &str) -> Vec<ConfigWarning> {
    parse(text).warnings
}

/// Asserts exactly one warning for `key`, at `line`, containing every fragment.
#[track_caller]
fn assert_warns(warnings: &[ConfigWarning], line: usize, key: &str, fragments: &[&str]) {
    let all = warnings.iter().map(|w| format!("  {w}\n")).collect::<String>();
    let found: Vec<_> = warnings.iter().filter(|w| w.key == key).collect();
    assert_eq!(found.len(), 1, "want one warning for {key}, got:\n{all}");
    let shown = found[0].to_string();
    assert!(
        shown.starts_with(&format!("{FILE}:{line}: {key}: ")),
        "bad place {shown:?}"
    );
    for f in fragments {
        assert!(shown.contains(f), "{shown:?} does not contain {f:?}");
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Root, or a skip (a failure under `CI`): the test needs to give files away.
fn root() -> bool {
    if uzers::get_effective_uid() == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "this test needs root under CI");
    eprintln!("skipping: needs root to chown");
    false
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

fn env(name: &str, uid: u32, gid: u32) -> String {
    format!("\n[environments.{name}]\nuser = {uid}\ngroup = {gid}\n")
}

fn vhost(name: &str, aliases: &str, env: &str, extra: &str) -> String {
    format!(
        "\n[[vhosts]]\nserver_name = \"{name}\"\nserver_alias = [{aliases}]\nenvironment = \"{env}\"\ndocument_root = \"/srv/{name}\"\n{extra}"
    )
}

#[test]
fn an_environment_with_the_multiplexers_uid_or_gid_is_refused() {
    // SERVER runs the multiplexers as 2000:2000.
    let text = cat(&[
        SERVER,
        &env("alice", 2000, 2001),
        &env("bob", 2002, 2000),
        &vhost("a.example", "", "alice", ""),
    ]);
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    let bob_group = line_of(&text, "[environments.bob]") + 2;
    assert_has(
        &errs,
        line_of(&text, "[environments.alice]") + 1,
        "environments.alice.user",
        "multiplexers'",
    );
    assert_has(&errs, bob_group, "environments.bob.group", "multiplexers'");
    assert!(errs.iter().any(|e| e.message.contains("SIGSTOP")), "{errs:?}");
}

#[test]
fn two_environments_with_one_uid_warn_naming_both() {
    let text = cat(&[
        SERVER,
        &env("alice", 2001, 2001),
        &env("bob", 2002, 2002),
        &env("carol", 2001, 2003),
        &vhost("a.example", "", "alice", ""),
    ]);
    let w = warnings(&text);
    assert_eq!(w.len(), 1, "{w:?}");
    let line = line_of(&text, "[environments.carol]") + 1;
    assert_warns(
        &w,
        line,
        "environments.carol.user",
        &["'alice'", "'carol'", "uid 2001", "signal"],
    );
    // Distinct uids: no warning.
    assert!(warnings(&cat(&[SERVER, ALICE, &env("bob", 2002, 2002), VHOST])).is_empty());
}

#[test]
fn names_two_environments_can_both_match_warn_naming_both() {
    let text = cat(&[
        SERVER,
        ALICE,
        &env("bob", 2002, 2002),
        &vhost("alice.test", "\"*.alice.test\"", "alice", ""),
        // alice's own overlap: no warning.
        &vhost("www.alice.test", "", "alice", ""),
        &vhost("bob.test", "\"shop.alice.test\", \"*.test\"", "bob", ""),
    ]);
    let w = warnings(&text);
    // shop.alice.test vs *.alice.test; *.test vs alice.test, *.alice.test, www.alice.test.
    assert_eq!(w.len(), 4, "{w:#?}");
    let line = line_of(&text, "shop.alice.test");
    let shop: Vec<_> = w
        .iter()
        .filter(|w| w.message.starts_with("'shop.alice.test'"))
        .collect();
    assert_eq!(shop.len(), 1, "{w:#?}");
    let shown = shop[0].to_string();
    assert!(
        shown.starts_with(&format!("{FILE}:{line}: vhosts[2].server_alias[0]: ")),
        "{shown}"
    );
    for f in [
        "(vhosts[2], environment 'bob')",
        "'*.alice.test' (vhosts[0], environment 'alice', line",
    ] {
        assert!(shown.contains(f), "{shown:?} lacks {f:?}");
    }
    // No overlap, no warning.
    let text = cat(&[
        SERVER,
        ALICE,
        &env("bob", 2002, 2002),
        &vhost("alice.test", "\"*.alice.test\"", "alice", ""),
        &vhost("bob.test", "\"*.bob.test\", \"alice.test.example\"", "bob", ""),
    ]);
    assert!(warnings(&text).is_empty(), "{:?}", warnings(&text));
}

fn log_at(path: &Path) -> String {
    format!("access_log = \"{}\"\n", path.display())
}

/// One vhost of alice's with `access_log = path`; the errors.
fn log_errors(path: &Path) -> (String, Vec<conf::ConfigError>) {
    let text = cat(&[SERVER, ALICE, VHOST, &log_at(path)]);
    let errs = errors(&text);
    (text, errs)
}

#[test]
fn access_log_directory_must_exist_and_be_writable_by_no_group_or_other() {
    let dir = tempfile::tempdir().unwrap();
    // Fine: an existing directory only its owner writes.
    let ok = dir.path().join("ok");
    std::fs::create_dir(&ok).unwrap();
    chmod(&ok, 0o755);
    parse(&cat(&[SERVER, ALICE, VHOST, &log_at(&ok.join("a.log"))]));

    let (text, errs) = log_errors(&dir.path().join("missing/a.log"));
    assert_has(
        &errs,
        line_of(&text, "access_log"),
        "vhosts[0].access_log",
        "does not exist (it must exist",
    );

    for mode in [0o777, 0o775, 0o1777] {
        let open = dir.path().join(format!("open{mode:o}"));
        std::fs::create_dir(&open).unwrap();
        chmod(&open, mode);
        let (text, errs) = log_errors(&open.join("a.log"));
        assert_has(
            &errs,
            line_of(&text, "access_log"),
            "vhosts[0].access_log",
            &format!(
                "'{}' is writable by its group or others (mode {mode:04o})",
                open.display()
            ),
        );
        assert!(
            errs[0].message.contains("environment 'alice' (uid 2001)"),
            "{errs:?}"
        );
    }

    // Above the log's own directory, a sticky one (like /tmp) is allowed.
    let sticky = dir.path().join("sticky");
    std::fs::create_dir_all(sticky.join("logs")).unwrap();
    chmod(&sticky, 0o1777);
    chmod(&sticky.join("logs"), 0o755);
    parse(&cat(&[SERVER, ALICE, VHOST, &log_at(&sticky.join("logs/a.log"))]));
}

#[test]
fn access_log_path_with_a_symlink_a_directory_or_a_hard_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    let (text, errs) = log_errors(&link.join("a.log"));
    let want = format!("'{}' is a symbolic link", link.display());
    assert_has(&errs, line_of(&text, "access_log"), "vhosts[0].access_log", &want);

    let canary = dir.path().join("canary");
    symlink(&canary, real.join("linked.log")).unwrap();
    let (text, errs) = log_errors(&real.join("linked.log"));
    assert_has(
        &errs,
        line_of(&text, "access_log"),
        "vhosts[0].access_log",
        "it is a symbolic link",
    );

    std::fs::write(real.join("other"), "").unwrap();
    std::fs::hard_link(real.join("other"), real.join("hard.log")).unwrap();
    let (text, errs) = log_errors(&real.join("hard.log"));
    assert_has(
        &errs,
        line_of(&text, "access_log"),
        "vhosts[0].access_log",
        "2 hard links",
    );

    std::fs::create_dir(real.join("dir.log")).unwrap();
    let (text, errs) = log_errors(&real.join("dir.log"));
    assert_has(
        &errs,
        line_of(&text, "access_log"),
        "vhosts[0].access_log",
        "not a regular file",
    );
}

#[test]
fn access_log_directory_of_another_uid_is_refused_the_environments_own_is_not() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let bobs = dir.path().join("bob-logs");
    std::fs::create_dir(&bobs).unwrap();
    chown(&bobs, 2002);
    let (text, errs) = log_errors(&bobs.join("alice.log"));
    let want = format!(
        "'{}' is owned by uid 2002; it must be owned by root or uid 2001",
        bobs.display()
    );
    assert_has(&errs, line_of(&text, "access_log"), "vhosts[0].access_log", &want);

    // An ancestor of another uid is refused as well.
    std::fs::create_dir(bobs.join("inner")).unwrap();
    let (text, errs) = log_errors(&bobs.join("inner/alice.log"));
    assert_has(
        &errs,
        line_of(&text, "access_log"),
        "vhosts[0].access_log",
        "owned by uid 2002",
    );

    // alice's own directory (she may write it; the supervisor opens it without links).
    let alices = dir.path().join("alice-logs");
    std::fs::create_dir(&alices).unwrap();
    chown(&alices, 2001);
    let text = cat(&[SERVER, ALICE, VHOST, &log_at(&alices.join("alice.log"))]);
    assert!(warnings(&text).is_empty(), "{:?}", warnings(&text));

    // What alice can change herself in her own directory (a planted link, a chmod, a
    // missing subdirectory) is only a warning: an error would let her stop the whole
    // server from starting or reloading. The supervisor refuses such a file anyway.
    let line = line_of(&text, "access_log");
    let key = "vhosts[0].access_log";
    symlink("/etc/cron.d/x", alices.join("alice.log")).unwrap();
    let w = warnings(&text);
    assert_warns(
        &w,
        line,
        key,
        &["it is a symbolic link", "this vhost logs nothing"],
    );
    std::fs::remove_file(alices.join("alice.log")).unwrap();
    chmod(&alices, 0o777);
    let w = warnings(&text);
    assert_warns(&w, line, key, &["writable by its group or others (mode 0777)"]);
    chmod(&alices, 0o755);
    let text = cat(&[SERVER, ALICE, VHOST, &log_at(&alices.join("gone/alice.log"))]);
    assert_warns(&warnings(&text), line, key, &["gone' does not exist"]);
}

fn chroot_env(path: &Path) -> String {
    format!(
        "\n[environments.alice]\nuser = 2001\ngroup = 2001\nchroot = \"{}\"\n",
        path.display()
    )
}

fn vhost_in(jail: &Path) -> String {
    format!(
        "\n[[vhosts]]\nserver_name = \"a.example\"\nenvironment = \"alice\"\ndocument_root = \"{}\"\n",
        jail.join("www").display()
    )
}

#[track_caller]
fn assert_chroot_refused(jail: &Path, fragment: &str) {
    let text = cat(&[SERVER, &chroot_env(jail), &vhost_in(jail)]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "chroot ="),
        "environments.alice.chroot",
        fragment,
    );
    assert!(errs[0].message.contains("could be swapped"), "{errs:?}");
}

#[test]
fn chroot_and_its_parents_must_be_writable_by_no_group_or_other() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("parent");
    let jail = parent.join("jail");
    std::fs::create_dir_all(&jail).unwrap();
    chmod(&parent, 0o755);
    chmod(&jail, 0o755);
    parse(&cat(&[SERVER, &chroot_env(&jail), &vhost_in(&jail)]));

    chmod(&jail, 0o777);
    assert_chroot_refused(
        &jail,
        &format!(
            "'{}' is writable by its group or others (mode 0777)",
            jail.display()
        ),
    );
    // The chroot itself may not be sticky-writable either.
    chmod(&jail, 0o1777);
    assert_chroot_refused(&jail, "(mode 1777)");
    chmod(&jail, 0o755);
    chmod(&parent, 0o775);
    assert_chroot_refused(
        &jail,
        &format!(
            "'{}' is writable by its group or others (mode 0775)",
            parent.display()
        ),
    );
    // A sticky parent (like /tmp) is fine.
    chmod(&parent, 0o1777);
    parse(&cat(&[SERVER, &chroot_env(&jail), &vhost_in(&jail)]));

    // A symlink on the way.
    chmod(&parent, 0o755);
    let link = dir.path().join("link");
    symlink(&parent, &link).unwrap();
    assert_chroot_refused(
        &link.join("jail"),
        &format!("'{}' is a symbolic link", link.display()),
    );
}

#[test]
fn chroot_and_its_parents_must_be_owned_by_root() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let parent = dir.path().join("parent");
    let jail = parent.join("jail");
    std::fs::create_dir_all(&jail).unwrap();
    chown(&jail, 2001);
    assert_chroot_refused(
        &jail,
        &format!(
            "'{}' is owned by uid 2001; it must be owned by root",
            jail.display()
        ),
    );
    chown(&jail, 0);
    chown(&parent, 2001);
    assert_chroot_refused(&jail, &format!("'{}' is owned by uid 2001", parent.display()));
    chown(&parent, 0);
    parse(&cat(&[SERVER, &chroot_env(&jail), &vhost_in(&jail)]));
}
