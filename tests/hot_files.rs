//! Small hot files answered from memory (`handler/static_files/hot.rs`), through the
//! real binary: the answers are the resolver's, byte for byte but the Date; HEAD, 304s
//! and ranges from the cache; and every change is seen on the next request — new
//! content, a file made unreadable to the tenant (403), replaced by a directory (301),
//! deleted (404), a new `.htaccess` (403), written through a hard link elsewhere,
//! replaced by a rename — over HTTP/1.1 and HTTP/2 (the watches' inotify events, with no
//! stat between them and the next request).
//!
//! The cache takes only files whose timestamps are two seconds old, so each test waits
//! once for its files to age (wall-clock time, not a synchronisation with the server).

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::*;

/// Waits until every one of `paths` changed more than the cache's settle time ago.
fn aged(paths: &[&Path]) {
    let newest = paths
        .iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(p).unwrap();
            m.ctime().max(m.mtime())
        })
        .max()
        .unwrap();
    let ready = UNIX_EPOCH + Duration::from_secs(u64::try_from(newest).unwrap() + 3);
    while SystemTime::now() < ready {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request(s: &mut TcpStream, method: &str, path: &str, extra: &str) -> Response {
    write!(s, "{method} {path} HTTP/1.1\r\nHost: alice.test\r\n{extra}\r\n").unwrap();
    read_response(s, method == "HEAD").expect("a response")
}

/// The header fields but Date.
fn fields(r: &Response) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
        .cloned()
        .collect()
}

/// As the tenant would make a file unreadable to itself: root's, mode 000.
fn unreadable(p: &Path) {
    chown(p, 0);
    chmod(p, 0o000);
}

#[test]
fn hot_files_over_http1_follow_every_change() {
    require_root!();
    let w = Dir::new("hot_files_over_http1_follow_every_change");
    sites(w.path(), 0o644);
    let css = put(w.path(), "alice/s/hot.css", b"body{color:red}", ALICE, 0o644);
    let secret = put(w.path(), "alice/s/secret.txt", b"not for long", ALICE, 0o644);
    let gone = put(w.path(), "alice/gone.txt", b"gone soon", ALICE, 0o644);
    let dir_soon = put(w.path(), "alice/dir-soon", b"a file for now", ALICE, 0o644);
    let deep = put(w.path(), "alice/t/u/deep.txt", b"deep", ALICE, 0o644);
    let server = TestServer::start(&two_env_config(w.path(), ""));
    let a = w.path().join("alice");
    aged(&[
        &css,
        &secret,
        &gone,
        &dir_soon,
        &deep,
        &a.join("s"),
        &a.join("t/u"),
        &a,
    ]);
    let mut s = connect(server.addr);

    // The same answer twice (the second from memory), HEAD's the same head.
    let first = request(&mut s, "GET", "/s/hot.css", "");
    assert_eq!((first.status, first.text().as_str()), (200, "body{color:red}"));
    let second = request(&mut s, "GET", "/s/hot.css", "");
    assert_eq!(second.body, first.body);
    assert_eq!(fields(&second), fields(&first));
    for name in ["ETag", "Last-Modified", "Accept-Ranges", "Content-Type", "Server"] {
        assert!(first.header(name).is_some(), "{name}: {first:?}");
    }
    assert_eq!(first.header("Content-Type"), Some("text/css; charset=utf-8"));
    assert_eq!(first.header("Content-Length"), Some("15"));
    let head = request(&mut s, "HEAD", "/s/hot.css", "");
    assert_eq!((head.status, fields(&head)), (200, fields(&first)));
    // Nothing followed the HEAD's head: the next answer starts where it should.
    assert_eq!(request(&mut s, "GET", "/s/hot.css", "").body, first.body);

    // Conditional requests and ranges.
    let etag = first.header("ETag").unwrap().to_string();
    let lm = first.header("Last-Modified").unwrap().to_string();
    let r = request(&mut s, "GET", "/s/hot.css", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((r.status, r.header("ETag")), (304, Some(etag.as_str())));
    assert!(r.body.is_empty() && r.header("Content-Length").is_none());
    let r = request(
        &mut s,
        "GET",
        "/s/hot.css",
        &format!("If-Modified-Since: {lm}\r\n"),
    );
    assert_eq!(r.status, 304);
    let r = request(&mut s, "GET", "/s/hot.css", "If-None-Match: \"other\"\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "body{color:red}"));
    let r = request(&mut s, "GET", "/s/hot.css", "Range: bytes=5-9\r\n");
    assert_eq!((r.status, r.text().as_str()), (206, "color"));
    assert_eq!(r.header("Content-Range"), Some("bytes 5-9/15"));
    let r = request(
        &mut s,
        "GET",
        "/s/hot.css",
        &format!("Range: bytes=-3\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.text().as_str()), (206, "ed}"));
    let r = request(
        &mut s,
        "GET",
        "/s/hot.css",
        "If-Range: \"old\"\r\nRange: bytes=0-0\r\n",
    );
    assert_eq!(r.status, 200);
    let r = request(&mut s, "GET", "/s/hot.css", "Range: bytes=99-\r\n");
    assert_eq!((r.status, r.header("Content-Range")), (416, Some("bytes */15")));
    let r = request(&mut s, "HEAD", "/s/hot.css", "Range: bytes=0-1\r\n");
    assert_eq!((r.status, r.header("Content-Length")), (200, Some("15")));
    let r = request(&mut s, "GET", "/s/hot.css", "If-Match: \"other\"\r\n");
    assert_eq!(r.status, 412);

    // New content, the same size and then another, on the next request each time.
    std::fs::write(&css, b"body{color:RED}").unwrap();
    assert_eq!(request(&mut s, "GET", "/s/hot.css", "").text(), "body{color:RED}");
    std::fs::write(&css, b"p{}").unwrap();
    let r = request(&mut s, "GET", "/s/hot.css", "");
    assert_eq!(
        (r.text().as_str(), r.header("Content-Length")),
        ("p{}", Some("3"))
    );
    assert_ne!(r.header("ETag"), Some(etag.as_str()));
    // Written through a hard link outside the document root (the file's own watch sees
    // it, not a directory's), then replaced by a rename (the directory's watch).
    let link = w.path().join("hot-link.css");
    std::fs::hard_link(&css, &link).unwrap();
    aged(&[&css]);
    assert_eq!(request(&mut s, "GET", "/s/hot.css", "").text(), "p{}");
    assert_eq!(request(&mut s, "GET", "/s/hot.css", "").text(), "p{}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&link)
        .unwrap()
        .write_all(b"q")
        .unwrap();
    assert_eq!(request(&mut s, "GET", "/s/hot.css", "").text(), "q{}");
    let next = put(w.path(), "alice/s/next.css", b"renamed{}", ALICE, 0o644);
    aged(&[&css, &next, &a.join("s")]);
    assert_eq!(request(&mut s, "GET", "/s/hot.css", "").text(), "q{}");
    assert_eq!(request(&mut s, "GET", "/s/hot.css", "").text(), "q{}");
    std::fs::rename(&next, &css).unwrap();
    assert_eq!(request(&mut s, "GET", "/s/hot.css", "").text(), "renamed{}");

    // Cached, then unreadable to the tenant: refused by the kernel, so 403.
    for _ in 0..2 {
        assert_eq!(request(&mut s, "GET", "/s/secret.txt", "").text(), "not for long");
    }
    unreadable(&secret);
    let r = request(&mut s, "GET", "/s/secret.txt", "");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(!r.text().contains("not for long"));
    // Cached, then a .htaccess that denies appears on the way.
    for _ in 0..2 {
        assert_eq!(request(&mut s, "GET", "/t/u/deep.txt", "").text(), "deep");
    }
    put(
        w.path(),
        "alice/t/.htaccess",
        b"Require all denied\n",
        ALICE,
        0o644,
    );
    assert_eq!(request(&mut s, "GET", "/t/u/deep.txt", "").status, 403);
    // Deleted: 404; replaced by a directory: the directory's redirect.
    for _ in 0..2 {
        assert_eq!(request(&mut s, "GET", "/gone.txt", "").status, 200);
        assert_eq!(request(&mut s, "GET", "/dir-soon", "").status, 200);
    }
    std::fs::remove_file(&gone).unwrap();
    assert_eq!(request(&mut s, "GET", "/gone.txt", "").status, 404);
    std::fs::remove_file(&dir_soon).unwrap();
    std::fs::create_dir(&dir_soon).unwrap();
    assert_eq!(request(&mut s, "GET", "/dir-soon", "").status, 301);
}

#[test]
fn hot_files_over_http2_follow_every_change() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() || require_tool("curl", "curl").is_none() {
        return;
    }
    let s = crate::tls::setup("hot_files_h2");
    let file = put(&s.root, "alice/hot.txt", b"hot over h2", ALICE, 0o644);
    let server = TestServer::start(&crate::tls::config(&s, ""));
    let addr = crate::tls::tls_addr(&server);
    aged(&[&file, &s.root.join("alice")]);
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--http2", "--max-time", "20", "--resolve"])
            .arg(format!("alice.test:{}:127.0.0.1", addr.port()))
            .args(args)
            .arg(format!("https://alice.test:{}/hot.txt", addr.port()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Two GETs on one connection (the second from memory), a HEAD, a range.
    let url = format!("https://alice.test:{}/hot.txt", addr.port());
    let twice = curl(&["-w", "|%{http_code} %{http_version}\n", &url]);
    assert_eq!(twice, "hot over h2|200 2\nhot over h2|200 2\n");
    let head = curl(&["-I"]).to_ascii_lowercase();
    assert!(head.starts_with("http/2 200"), "{head}");
    for field in [
        "content-length: 11",
        "accept-ranges: bytes",
        "etag: ",
        "last-modified: ",
        "server: bulkhead",
    ] {
        assert!(head.contains(field), "{field}: {head}");
    }
    assert!(head.contains("content-type: text/plain; charset=utf-8"), "{head}");
    assert_eq!(curl(&["-r", "4-7"]), "over");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        curl(&["-H", &format!("If-None-Match: {etag}"), "-w", "%{http_code}"]),
        "304"
    );
    // New content on the next request; then unreadable to the tenant: 403.
    std::fs::write(&file, b"HOT OVER H2").unwrap();
    assert_eq!(curl(&[]), "HOT OVER H2");
    unreadable(&file);
    assert_eq!(curl(&["-o", "/dev/null", "-w", "%{http_code}"]), "403");
}
