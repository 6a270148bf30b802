//! A vhost's `index` (directory index documents, in order; one may be a CGI script) and
//! `fallback` (what answers a path that resolves to nothing: a CGI front controller
//! with the original REQUEST_URI, or a static file), and the denials (`.ht*`, `deny`,
//! `.htaccess`) that are never turned into the fallback.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::util::*;

/// Three vhosts of alice: `order.test` (`index = ["index.php", "index.html"]`, no CGI),
/// `cgi.test` (`.cgi` scripts, `index = ["index.cgi", "index.html"]`, `fallback =
/// "/index.cgi"`) and `static.test` (`fallback = "/app.html"`); the last two with
/// `deny = ["/private/"]`.
fn config(w: &Path) -> String {
    let vhosts = format!(
        r#"
[[vhosts]]
server_name = "order.test"
environment = "alice"
document_root = "{w}/order"
index = ["index.php", "index.html"]

[[vhosts]]
server_name = "cgi.test"
environment = "alice"
document_root = "{w}/cgi"
cgi = [".cgi"]
index = ["index.cgi", "index.html"]
fallback = "/index.cgi"
deny = ["/private/"]

[[vhosts]]
server_name = "static.test"
environment = "alice"
document_root = "{w}/static"
fallback = "/app.html"
deny = ["/private/"]
"#,
        w = w.display()
    );
    alice_config("", &vhosts)
}

/// A script that prints the variables these tests look at.
const SCRIPT: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
    echo \"SCRIPT_NAME=$SCRIPT_NAME\"\necho \"REQUEST_URI=$REQUEST_URI\"\n\
    echo \"PATH_INFO=${PATH_INFO-unset}\"\necho \"QUERY_STRING=$QUERY_STRING\"\n\
    echo \"REQUEST_METHOD=$REQUEST_METHOD\"\n";

/// An HTTP/1.0 request (no chunked answer) for `host`, read until the server closes:
/// (status, body).
fn ask(addr: SocketAddr, method: &str, host: &str, target: &str) -> (u16, String) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = if method == "POST" {
        "Content-Length: 3\r\n\r\nabc"
    } else {
        "\r\n"
    };
    write!(s, "{method} {target} HTTP/1.0\r\nHost: {host}\r\n{body}").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

fn get(addr: SocketAddr, host: &str, target: &str) -> (u16, String) {
    ask(addr, "GET", host, target)
}

#[test]
fn index_in_order_and_files_sections_match_the_served_name() {
    require_root!();
    let dir = Dir::new("index_in_order_and_files_sections_match_the_served_name");
    let w = dir.path();
    put(w, "order/a/index.html", b"a html", ALICE, 0o644);
    put(w, "order/b/index.html", b"b html", ALICE, 0o644);
    put(w, "order/b/index.php", b"b php", ALICE, 0o644);
    put(w, "order/c/other.html", b"c", ALICE, 0o644);
    put(w, "order/d/index.html", b"d html", ALICE, 0o644);
    put(
        w,
        "order/d/.htaccess",
        b"<Files \"index.html\">\nRequire all denied\n</Files>\n",
        ALICE,
        0o644,
    );
    put(w, "order/e/index.html", b"e html", ALICE, 0o644);
    put(
        w,
        "order/e/.htaccess",
        b"<Files \"index.php\">\nRequire all denied\n</Files>\n",
        ALICE,
        0o644,
    );
    let server = TestServer::start(&config(w));
    let a = server.addr;
    // index.php absent, index.html present: index.html.
    assert_eq!(get(a, "order.test", "/a/"), (200, "a html".into()));
    // Both: the first listed.
    assert_eq!(get(a, "order.test", "/b/"), (200, "b php".into()));
    // None of them: 403, no listing.
    assert_eq!(get(a, "order.test", "/c/").0, 403);
    // `<Files>` sections match the index actually served.
    assert_eq!(get(a, "order.test", "/d/").0, 403);
    assert_eq!(get(a, "order.test", "/e/"), (200, "e html".into()));
}

#[test]
fn index_script_path_info_and_cgi_fallback() {
    require_root!();
    let dir = Dir::new("index_script_path_info_and_cgi_fallback");
    let w = dir.path();
    put(w, "cgi/index.cgi", SCRIPT.as_bytes(), ALICE, 0o755);
    put(w, "cgi/sub/index.cgi", SCRIPT.as_bytes(), ALICE, 0o755);
    put(w, "cgi/sub/index.html", b"not this", ALICE, 0o644);
    put(w, "cgi/plain/index.html", b"plain html", ALICE, 0o644);
    put(w, "cgi/style.css", b"body{}", ALICE, 0o644);
    put(w, "cgi/private/x.txt", b"x", ALICE, 0o644);
    put(w, "cgi/locked/.htaccess", b"Require all denied\n", ALICE, 0o644);
    let server = TestServer::start(&config(w));
    let a = server.addr;
    let var = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    // A directory whose index is a script runs it.
    let (status, text) = get(a, "cgi.test", "/?q=2");
    assert_eq!(status, 200, "{text}");
    assert_eq!(var(&text, "SCRIPT_NAME"), "/index.cgi");
    assert_eq!(var(&text, "REQUEST_URI"), "/?q=2");
    assert_eq!(var(&text, "QUERY_STRING"), "q=2");
    assert_eq!(var(&text, "PATH_INFO"), "unset");
    let (status, text) = get(a, "cgi.test", "/sub/");
    assert_eq!(status, 200, "{text}");
    assert_eq!(var(&text, "SCRIPT_NAME"), "/sub/index.cgi");
    assert_eq!(var(&text, "REQUEST_URI"), "/sub/");
    // The next name when the script is absent.
    assert_eq!(get(a, "cgi.test", "/plain/"), (200, "plain html".into()));
    // PATH_INFO after the index script named in the path.
    let (status, text) = get(a, "cgi.test", "/index.cgi/some/path");
    assert_eq!(status, 200, "{text}");
    assert_eq!(var(&text, "SCRIPT_NAME"), "/index.cgi");
    assert_eq!(var(&text, "PATH_INFO"), "/some/path");
    // A front controller: the original REQUEST_URI, no PATH_INFO, any method.
    for path in ["/pretty/url?x=1", "/missing.cgi?x=1", "/style.css/x?x=1"] {
        let (status, text) = get(a, "cgi.test", path);
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(var(&text, "SCRIPT_NAME"), "/index.cgi", "{path}");
        assert_eq!(var(&text, "REQUEST_URI"), path);
        assert_eq!(var(&text, "QUERY_STRING"), "x=1", "{path}");
        assert_eq!(var(&text, "PATH_INFO"), "unset", "{path}");
    }
    let (status, text) = ask(a, "POST", "cgi.test", "/wp-json/x");
    assert_eq!(status, 200, "{text}");
    assert_eq!(var(&text, "REQUEST_METHOD"), "POST");
    assert_eq!(var(&text, "REQUEST_URI"), "/wp-json/x");
    // What exists is still itself.
    assert_eq!(get(a, "cgi.test", "/style.css"), (200, "body{}".into()));
    // Denials are never the fallback's: `.ht*`, `deny`, a `.htaccess`.
    for path in [
        "/.htpasswd",
        "/private/missing",
        "/private/x.txt",
        "/locked/missing",
        "/locked/",
    ] {
        assert_eq!(get(a, "cgi.test", path).0, 403, "{path}");
    }
}

#[test]
fn static_fallback() {
    require_root!();
    let dir = Dir::new("static_fallback");
    let w = dir.path();
    put(w, "static/app.html", b"the app", ALICE, 0o644);
    put(w, "static/index.html", b"home", ALICE, 0o644);
    put(w, "static/nodir/x.txt", b"x", ALICE, 0o644);
    put(
        w,
        "static/locked/.htaccess",
        b"Require all denied\n",
        ALICE,
        0o644,
    );
    let server = TestServer::start(&config(w));
    let a = server.addr;
    assert_eq!(get(a, "static.test", "/"), (200, "home".into()));
    assert_eq!(get(a, "static.test", "/some/route?x=1"), (200, "the app".into()));
    assert_eq!(get(a, "static.test", "/nodir/missing"), (200, "the app".into()));
    // A directory without an index stays 403 (it exists).
    assert_eq!(get(a, "static.test", "/nodir/").0, 403);
    for path in [
        "/.htaccess",
        "/.htnope",
        "/private/missing",
        "/locked/missing",
        "/locked/",
    ] {
        assert_eq!(get(a, "static.test", path).0, 403, "{path}");
    }
    // The order site has no fallback: 404.
    assert_eq!(get(a, "order.test", "/missing").0, 404);
}
