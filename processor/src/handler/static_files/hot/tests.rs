//! The cache against a real directory: every change that would change the resolver's
//! answer makes the entry stale; the bounds hold.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::*;
use crate::handler::static_files::target::{self, Target};
use crate::handler::{Headers, Method, Request, Response};

/// A clock far enough ahead that the files just written count as settled.
fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(60)
}

fn target(p: &str) -> PathTarget {
    match target::parse(p) {
        Ok(Target::Path(t)) => t,
        other => panic!("{p}: {other:?}"),
    }
}

/// Resolves `p` and caches its answer.
fn cache(site: &Site, p: &str) -> Result<Rc<Hot>, HotError> {
    let t = target(p);
    let found = match resolve::resolve(&site.document_root, &t.segments, t.trailing_slash, &site.index) {
        Ok(Resolved::File(found)) => found,
        other => panic!("{p}: {other:?}"),
    };
    load(site, &t, &found, later())
}

fn hit(site: &Site, p: &str) -> bool {
    lookup(site, &target(p)).is_some()
}

/// A file written with an mtime in the past, so that any later write changes it.
fn write_old(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    let past = TimeSpec::new(1_000_000_000, 0);
    utimensat(None, path, &past, &past, UtimensatFlags::NoFollowSymlink).unwrap();
}

fn get(site: &Site, p: &str, headers: Headers) -> Response {
    let req = Request {
        method: Method::Get,
        target: p.into(),
        host: None,
        headers,
    };
    crate::handler::respond(site, &req)
}

fn world() -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    write_old(&root.join("a.txt"), b"alpha");
    write_old(&root.join("d/e/index.html"), b"<p>index</p>");
    write_old(&root.join("d/b.css"), b"b{}");
    let site = Site::plain(1, "a.test", root.to_path_buf());
    (dir, site)
}

#[test]
fn a_cached_answer_is_the_files() {
    let (_dir, site) = world();
    let hot = cache(&site, "/a.txt").unwrap();
    assert_eq!(&hot.body[..], b"alpha");
    assert_eq!(hot.content_type, "text/plain; charset=utf-8");
    let fields = String::from_utf8(hot.h1_fields.to_vec()).unwrap();
    assert!(fields.starts_with("Content-Type: text/plain; charset=utf-8\r\nAccept-Ranges: bytes\r\nETag: \""));
    assert!(fields.contains("\r\nLast-Modified: Sun, 09 Sep 2001 01:46:40 GMT\r\n"));
    assert!(hit(&site, "/a.txt"));
    assert!(hit(&site, "/a.txt?x"), "the query is not part of the key");
    // Directories' index documents and deeper paths too.
    cache(&site, "/d/e/").unwrap();
    cache(&site, "/d/b.css").unwrap();
    assert!(hit(&site, "/d/e/") && hit(&site, "/d/b.css"));
    assert!(!hit(&site, "/d/e"), "another raw path is another entry");
    // Another vhost of the same root is another entry.
    let other = Site::plain(2, "b.test", site.document_root.clone());
    assert!(!hit(&other, "/a.txt"));
}

#[test]
fn a_fresh_file_is_not_cached() {
    let (dir, site) = world();
    std::fs::write(dir.path().join("new.txt"), b"new").unwrap();
    let t = target("/new.txt");
    let Ok(Resolved::File(found)) = resolve::resolve(&site.document_root, &t.segments, false, &site.index)
    else {
        panic!()
    };
    assert!(!may_cache(&found, SystemTime::now()));
    assert!(matches!(
        load(&site, &t, &found, SystemTime::now()),
        Err(HotError::Unsettled)
    ));
    assert!(!hit(&site, "/new.txt"));
}

#[test]
fn content_size_and_mtime_changes_are_seen() {
    let (dir, site) = world();
    let a = dir.path().join("a.txt");
    cache(&site, "/a.txt").unwrap();
    std::fs::write(&a, b"ALPHA").unwrap(); // same size, new mtime
    assert!(!hit(&site, "/a.txt"));
    let Response {
        body: crate::handler::Body::File { .. },
        ..
    } = get(&site, "/a.txt", Headers::default())
    else {
        panic!("a changed file is read again")
    };
    write_old(&a, b"alpha");
    cache(&site, "/a.txt").unwrap();
    let f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
    f.set_len(3).unwrap(); // size
    assert!(!hit(&site, "/a.txt"));
    write_old(&a, b"alpha");
    cache(&site, "/a.txt").unwrap();
    let t = TimeSpec::new(1_000_000_001, 0); // mtime alone
    utimensat(None, &a, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    assert!(!hit(&site, "/a.txt"));
}

#[test]
fn permission_and_owner_changes_are_seen() {
    let (dir, site) = world();
    let a = dir.path().join("a.txt");
    cache(&site, "/a.txt").unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o000)).unwrap();
    assert!(!hit(&site, "/a.txt"));
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
    cache(&site, "/a.txt").unwrap();
    // A directory on the way.
    cache(&site, "/d/e/").unwrap();
    std::fs::set_permissions(dir.path().join("d"), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(!hit(&site, "/d/e/"));
    if nix::unistd::geteuid().is_root() {
        cache(&site, "/a.txt").unwrap();
        nix::unistd::chown(&a, Some(nix::unistd::Uid::from_raw(12345)), None).unwrap();
        assert!(!hit(&site, "/a.txt"));
    }
}

#[test]
fn a_file_replaced_by_a_link_or_a_directory_is_seen() {
    let (dir, site) = world();
    let root = dir.path();
    cache(&site, "/a.txt").unwrap();
    write_old(&root.join("other.txt"), b"other");
    std::fs::remove_file(root.join("a.txt")).unwrap();
    symlink("other.txt", root.join("a.txt")).unwrap();
    assert!(!hit(&site, "/a.txt"));
    // Through a link: served by the resolver, never cached.
    let t = target("/a.txt");
    let Ok(Resolved::File(found)) = resolve::resolve(root, &t.segments, false, &site.index) else {
        panic!()
    };
    assert!(matches!(
        load(&site, &t, &found, later()),
        Err(HotError::NotPlain(_))
    ));
    std::fs::remove_file(root.join("a.txt")).unwrap();
    std::fs::create_dir(root.join("a.txt")).unwrap();
    assert!(!hit(&site, "/a.txt"));
    assert_eq!(get(&site, "/a.txt", Headers::default()).status, 301);
    // A directory on the way replaced by a link to a copy of it.
    cache(&site, "/d/b.css").unwrap();
    std::fs::rename(root.join("d"), root.join("d2")).unwrap();
    symlink("d2", root.join("d")).unwrap();
    assert!(!hit(&site, "/d/b.css"));
}

#[test]
fn a_deleted_file_is_404() {
    let (dir, site) = world();
    cache(&site, "/d/b.css").unwrap();
    std::fs::remove_file(dir.path().join("d/b.css")).unwrap();
    assert!(!hit(&site, "/d/b.css"));
    assert_eq!(get(&site, "/d/b.css", Headers::default()).status, 404);
}

#[test]
fn htaccess_changes_are_seen() {
    let (dir, site) = world();
    let root = dir.path();
    cache(&site, "/d/e/").unwrap();
    // Created in a directory on the way.
    write_old(&root.join("d/.htaccess"), b"Require all granted\n");
    assert!(!hit(&site, "/d/e/"));
    // Present: cached with it, and edited in place.
    cache(&site, "/d/e/").unwrap();
    assert!(hit(&site, "/d/e/"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("d/.htaccess"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"Require all denied\n").unwrap();
    drop(f);
    assert!(!hit(&site, "/d/e/"));
    assert_eq!(get(&site, "/d/e/", Headers::default()).status, 403);
    // In the root too.
    cache(&site, "/a.txt").unwrap();
    write_old(&root.join(".htaccess"), b"Require all denied\n");
    assert!(!hit(&site, "/a.txt"));
    assert_eq!(get(&site, "/a.txt", Headers::default()).status, 403);
}

#[test]
fn answers_from_the_cache_are_conditional_and_ranged() {
    let (_dir, site) = world();
    let hot = cache(&site, "/a.txt").unwrap();
    let etag = hot.validators.etag.clone();
    let r = get(&site, "/a.txt", Headers::default());
    assert!(matches!(r.body, crate::handler::Body::Hot(_)) && r.status == 200);
    let r = get(
        &site,
        "/a.txt",
        Headers {
            if_none_match: Some(etag.clone()),
            ..Headers::default()
        },
    );
    assert_eq!(r.status, 304);
    assert!(r.headers.iter().any(|(n, v)| *n == "ETag" && *v == etag));
    let r = get(
        &site,
        "/a.txt",
        Headers {
            if_modified_since: hot.last_modified.clone(),
            ..Headers::default()
        },
    );
    assert_eq!(r.status, 304);
    let r = get(
        &site,
        "/a.txt",
        Headers {
            range: Some("bytes=1-3".into()),
            ..Headers::default()
        },
    );
    assert_eq!(r.status, 206);
    assert!(matches!(&r.body, crate::handler::Body::Bytes(b) if b == b"lph"));
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| *n == "Content-Range" && v == "bytes 1-3/5"));
    let r = get(
        &site,
        "/a.txt",
        Headers {
            range: Some("bytes=9-".into()),
            ..Headers::default()
        },
    );
    assert_eq!(r.status, 416);
    let r = get(
        &site,
        "/a.txt",
        Headers {
            if_match: Some("\"nope\"".into()),
            ..Headers::default()
        },
    );
    assert_eq!(r.status, 412);
}

#[test]
fn the_bounds_hold() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let site = Site::plain(1, "a.test", root.to_path_buf());
    let big = vec![b'x'; MAX_FILE as usize];
    write_old(&root.join("too-big"), &[big.as_slice(), b"!"].concat());
    let t = target("/too-big");
    let Ok(Resolved::File(found)) = resolve::resolve(root, &t.segments, false, &site.index) else {
        panic!()
    };
    assert!(!may_cache(&found, later()));
    assert!(matches!(
        load(&site, &t, &found, later()),
        Err(HotError::TooLarge)
    ));
    // By bytes: more largest files than the budget holds.
    let n = BUDGET / MAX_FILE as usize + 4;
    for i in 0..n {
        write_old(&root.join(format!("f{i}")), &big);
        cache(&site, &format!("/f{i}")).unwrap();
        let (entries, bytes) = usage();
        assert!(bytes <= BUDGET && entries <= MAX_ENTRIES, "{entries} {bytes}");
    }
    assert!(usage().0 < n);
    // By entries: more small files than the entry bound.
    for i in 0..MAX_ENTRIES + 10 {
        write_old(&root.join(format!("s{i}")), b"s");
        cache(&site, &format!("/s{i}")).unwrap();
    }
    let (entries, bytes) = usage();
    assert!(entries <= MAX_ENTRIES && bytes <= BUDGET, "{entries} {bytes}");
}

fn stat_checks() -> u64 {
    STAT_CHECKS.with(|n| n.get())
}

#[test]
fn a_watched_entry_is_answered_without_a_stat_and_sees_every_change() {
    let (dir, site) = world();
    let hot = cache(&site, "/d/b.css").unwrap();
    assert!(hot.watched.is_some(), "the root, d and d/b.css are watched");
    drop(hot);
    let before = stat_checks();
    for _ in 0..100 {
        assert!(hit(&site, "/d/b.css"));
    }
    assert_eq!(stat_checks(), before, "no stat within REVALIDATE");
    // Each kind of change, seen at once through the watches alone.
    let b = dir.path().join("d/b.css");
    let changes: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| std::fs::write(&b, b"B{}").unwrap()),
        Box::new(|| std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o600)).unwrap()),
        Box::new(|| std::fs::write(dir.path().join("d/.htaccess"), b"Require all denied\n").unwrap()),
        Box::new(|| {
            std::fs::set_permissions(dir.path().join("d"), std::fs::Permissions::from_mode(0o700)).unwrap()
        }),
        Box::new(|| {
            write_old(&dir.path().join("d/c.css"), b"c{}");
            std::fs::rename(dir.path().join("d/c.css"), &b).unwrap();
        }),
        Box::new(|| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap()),
    ];
    for (i, change) in changes.iter().enumerate() {
        let _ = std::fs::remove_file(dir.path().join("d/.htaccess"));
        write_old(&b, b"b{}");
        let settle = TimeSpec::new(1_000_000_000, 0);
        for d in [dir.path().to_path_buf(), dir.path().join("d")] {
            utimensat(None, &d, &settle, &settle, UtimensatFlags::NoFollowSymlink).unwrap();
        }
        cache(&site, "/d/b.css").unwrap();
        assert!(hit(&site, "/d/b.css"), "change {i}: cached again");
        let before = stat_checks();
        change();
        assert!(!hit(&site, "/d/b.css"), "change {i} seen");
        assert_eq!(stat_checks(), before, "change {i}: seen without a stat");
    }
}

#[test]
fn a_watched_entry_is_still_revalidated_by_stat_now_and_then() {
    let (_dir, site) = world();
    let hot = cache(&site, "/a.txt").unwrap();
    hot.checked.set(Instant::now() - REVALIDATE);
    let before = stat_checks();
    assert!(hit(&site, "/a.txt"));
    assert_eq!(stat_checks(), before + 1);
    assert!(hit(&site, "/a.txt"));
    assert_eq!(stat_checks(), before + 1, "checked again only after REVALIDATE");
}

#[test]
fn watches_are_released_with_their_entries() {
    let (_dir, site) = world();
    let base = watch::held();
    cache(&site, "/a.txt").unwrap();
    cache(&site, "/d/b.css").unwrap();
    // The root, a.txt, d and d/b.css.
    assert_eq!(watch::held(), base + 4);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let keys: Vec<u64> = c.map.keys().copied().collect();
        for k in keys {
            c.remove(k);
        }
    });
    assert_eq!(watch::held(), 0);
}

#[test]
fn a_busy_file_beside_a_cached_one_does_not_drop_it() {
    use std::io::Write as _;
    let (dir, site) = world();
    // A log in the root and one in d, as an application would keep.
    let logs = [dir.path().join("app.log"), dir.path().join("d/app.log")];
    for log in &logs {
        write_old(log, b"x");
    }
    let past = TimeSpec::new(1_000_000_000, 0);
    for d in [dir.path().to_path_buf(), dir.path().join("d")] {
        utimensat(None, &d, &past, &past, UtimensatFlags::NoFollowSymlink).unwrap();
    }
    let before = stat_checks();
    cache(&site, "/d/b.css").unwrap();
    cache(&site, "/d/e/").unwrap();
    for log in &logs {
        for _ in 0..3 {
            let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
            f.write_all(b"line\n").unwrap();
            std::fs::set_permissions(log, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(hit(&site, "/d/b.css") && hit(&site, "/d/e/"), "{log:?}");
        }
    }
    assert_eq!(stat_checks() - before, 2, "only the loads stat, no lookup");
    // The file itself written: dropped.
    std::fs::write(dir.path().join("d/b.css"), b"B{}").unwrap();
    assert!(!hit(&site, "/d/b.css"));
}

#[test]
fn without_inotify_an_entry_is_stat_ed_on_every_request() {
    let (dir, site) = world();
    watch::disable();
    let hot = cache(&site, "/a.txt").unwrap();
    assert!(hot.watched.is_none());
    let before = stat_checks();
    for _ in 0..3 {
        assert!(hit(&site, "/a.txt"));
    }
    assert_eq!(stat_checks() - before, 3);
    std::fs::write(dir.path().join("a.txt"), b"ALPHA").unwrap();
    assert!(!hit(&site, "/a.txt"), "a change is still seen");
}

#[test]
fn an_overflowed_queue_drops_every_entry() {
    use std::io::Write as _;
    let (dir, site) = world();
    let logs = [dir.path().join("one.log"), dir.path().join("two.log")];
    for log in &logs {
        write_old(log, b"");
    }
    let past = TimeSpec::new(1_000_000_000, 0);
    utimensat(None, dir.path(), &past, &past, UtimensatFlags::NoFollowSymlink).unwrap();
    cache(&site, "/a.txt").unwrap();
    assert!(hit(&site, "/a.txt"));
    // Writes beside it, ignored one by one, but more than the queue holds (alternating
    // names: the kernel merges an event equal to the one before).
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut files: Vec<std::fs::File> = logs
        .iter()
        .map(|l| std::fs::OpenOptions::new().append(true).open(l).unwrap())
        .collect();
    for i in 0..max + 16 {
        files[i % 2].write_all(b"x").unwrap();
    }
    let before = stat_checks();
    assert!(!hit(&site, "/a.txt"), "IN_Q_OVERFLOW: stale");
    assert_eq!(stat_checks(), before, "dropped without a stat");
}
