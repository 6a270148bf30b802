//! Static files through the protocol: validators, ranges, directories, permissions,
//! symbolic links and traversal.

use std::os::unix::fs::PermissionsExt;

use super::*;

#[tokio::test]
async fn validators_and_ranges() {
    let root = docroot();
    let big = std::fs::read(root.path().join("big.bin")).unwrap();
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        let full = c.get("/a.txt").await;
        let etag = full.header("ETag").unwrap().to_owned();
        let lm = full.header("Last-Modified").unwrap().to_owned();
        let req = |extra: String| format!("GET /a.txt HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n");
        c.send(req(format!("If-None-Match: \"x\", W/{etag}\r\n")).as_bytes())
            .await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status, r.header("ETag"), r.header("Content-Length")),
            (304, Some(etag.as_str()), None)
        );
        c.send(req(format!("If-Modified-Since: {lm}\r\n")).as_bytes())
            .await;
        assert_eq!(c.response(false).await.status, 304);
        // If-None-Match present and not matching: If-Modified-Since is ignored.
        c.send(req(format!("If-None-Match: \"nope\"\r\nIf-Modified-Since: {lm}\r\n")).as_bytes())
            .await;
        assert_eq!(c.response(false).await.status, 200);
        c.send(req("If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n".into()).as_bytes())
            .await;
        assert_eq!(c.response(false).await.status, 200);

        c.send(req("Range: bytes=1-3\r\n".into()).as_bytes()).await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("Content-Range")),
            (206, &b"lph"[..], Some("bytes 1-3/5"))
        );
        c.send(req("Range: bytes=-2\r\n".into()).as_bytes()).await;
        assert_eq!(c.response(false).await.body, b"ha");
        c.send(req("Range: bytes=9-\r\n".into()).as_bytes()).await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Content-Range")), (416, Some("bytes */5")));
        c.send(req("Range: bytes=0-1,3-4\r\n".into()).as_bytes()).await;
        assert_eq!(c.response(false).await.status, 200);
        c.send(req(format!("Range: bytes=0-0\r\nIf-Range: {etag}\r\n")).as_bytes())
            .await;
        assert_eq!(c.response(false).await.status, 206);
        c.send(req("Range: bytes=0-0\r\nIf-Range: \"old\"\r\n".into()).as_bytes())
            .await;
        assert_eq!(c.response(false).await.status, 200);
        c.send(req(format!("Range: bytes=0-0\r\nIf-Range: {lm}\r\n")).as_bytes())
            .await;
        assert_eq!(c.response(false).await.status, 206);
        // A range of a large file goes through sendfile with an offset.
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: a.test\r\nRange: bytes=100000-2999999\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.body.len()), (206, 2_900_000));
        assert!(r.body == big[100_000..]);
    })
    .await;
}

#[tokio::test]
async fn directories_and_missing_files() {
    let root = docroot();
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        let r = c.get("/d?x=1").await;
        assert_eq!((r.status, r.header("Location")), (301, Some("/d/?x=1")));
        let r = c.get("/d/").await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"<p>index</p>"[..]));
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        assert_eq!(c.get("/empty/").await.status, 403);
        assert_eq!(c.get("/d/sub/").await.status, 403);
        let r = c.get("/missing.txt").await;
        assert_eq!(
            (r.status, r.header("Content-Type")),
            (404, Some("text/html; charset=utf-8"))
        );
        assert!(String::from_utf8_lossy(&r.body).contains("Not Found"));
        assert_eq!(c.get("/a.txt/").await.status, 404);
        assert_eq!(c.get("http://a.test/b.txt").await.body, b"bravo");
    })
    .await;
}

#[tokio::test]
async fn unreadable_file_is_forbidden() {
    let root = docroot();
    let secret = root.path().join("secret.txt");
    std::fs::write(&secret, "s").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads a mode-000 file through CAP_DAC_OVERRIDE; without those capabilities
    // (dropped for this thread only: capabilities are per thread, and the server and
    // client below run on it) root meets EACCES like a tenant would.
    drop_dac_capabilities_of_this_thread();
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        let r = c.get("/secret.txt").await;
        assert_eq!(r.status, 403);
    })
    .await;
}

/// Clears CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from this thread's effective set
/// (a no-op for a user without them).
fn drop_dac_capabilities_of_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a valid header and room for the two data words version 3 uses.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) };
    assert_eq!(r, 0, "capget");
    // linux/capability.h: CAP_DAC_OVERRIDE 1, CAP_DAC_READ_SEARCH 2.
    let dac = (1u32 << 1) | (1u32 << 2);
    data[0].effective &= !dac;
    // SAFETY: capset with the header and data capget just filled; pid 0 is this thread.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    assert_eq!(r, 0, "capset");
}

#[tokio::test]
async fn symlinks_need_matching_owners() {
    let root = docroot();
    std::os::unix::fs::symlink("a.txt", root.path().join("mine")).unwrap();
    std::os::unix::fs::symlink("a.txt", root.path().join("theirs")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.path().join("escape")).unwrap();
    let as_root = nix::unistd::geteuid().is_root();
    if as_root {
        std::os::unix::fs::lchown(root.path().join("theirs"), Some(2001), None).unwrap();
        std::os::unix::fs::lchown(root.path().join("escape"), Some(2001), None).unwrap();
    }
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        assert_eq!(c.get("/mine").await.body, b"alpha");
        if as_root {
            assert_eq!(c.get("/theirs").await.status, 403);
            assert_eq!(c.get("/escape").await.status, 403);
        } else {
            println!("skipping the owner-mismatch symlink checks: changing a link's owner needs root");
        }
    })
    .await;
}

#[tokio::test]
async fn traversal_is_refused() {
    let root = docroot();
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        for path in [
            "/../etc/passwd",
            "/%2e%2e/x",
            "/.%2E/a.txt",
            "/a%2fb",
            "/d%2Findex.html",
            "/a%00b",
            "/a%5cb",
        ] {
            let r = c.get(path).await;
            assert_eq!(r.status, 403, "{path}");
            assert!(!String::from_utf8_lossy(&r.body).contains("root:"));
        }
        assert_eq!(c.get("/%61.txt").await.body, b"alpha");
        c.send(b"GET /a%zz HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        assert_eq!(c.response(false).await.status, 400);
    })
    .await;
}
