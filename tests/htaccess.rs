//! The access rules applications ship, through the real binary: `.htaccess` denials
//! (`Require`, Order/Allow/Deny, `<Files>`, `<FilesMatch>`, `<IfModule>`), a deeper
//! `Require all granted`, `.ht*` names, the vhost's `deny` list, and an edited
//! `.htaccess` taking effect on the next request.

use std::time::{Duration, SystemTime};

use crate::util::*;

/// DokuWiki's `data/.htaccess` (also its `conf/`, `bin/` and `inc/`), from Debian's
/// dokuwiki 0.0.20220731: each branch of the `<IfModule>` pair denies.
const DOKUWIKI: &str = "<IfModule mod_authz_core.c>\n    Require all denied\n</IfModule>\n<IfModule !mod_authz_core.c>\n    Order allow,deny\n    Deny from all\n</IfModule>\n";

fn config(w: &std::path::Path) -> String {
    two_env_config(w, "").replace(
        "environment = \"alice\"\n",
        "environment = \"alice\"\ndeny = [\"/data/\", \"/conf\"]\n",
    )
}

fn status(server: &TestServer, path: &str) -> u16 {
    get(server.addr, "alice.test", path).status
}

#[test]
fn htaccess_denials_deny_list_and_ht_names() {
    require_root!();
    let w = Dir::new("htaccess_denials_deny_list_and_ht_names");
    let a = |rel: &str, text: &str| {
        put(w.path(), &format!("alice/{rel}"), text.as_bytes(), ALICE, 0o644);
    };
    sites(w.path(), 0o644);
    a(
        ".htaccess",
        "# the site's own\nFooBarUnknown on\n<FilesMatch \"\\.bak$\">\n  Require all denied\n</FilesMatch>\n",
    );
    a(".htpasswd", "alice:$apr1$x$y\n");
    a("hello.txt", "hello");
    a("config.bak", "secret backup");
    a("sub/old.bak", "secret backup");
    a("sub/index.html", "sub index");
    a("private/.htaccess", "Require all denied\n");
    a("private/index.html", "private index");
    a("private/x.txt", "private");
    a("private/open/.htaccess", "Require all granted\n");
    a("private/open/y.txt", "open again");
    a("dw/data/.htaccess", DOKUWIKI);
    a("dw/data/pages/start.txt", "wiki page");
    a("dw/doku.txt", "wiki entry");
    a("data/index.html", "data index");
    a("data/x.txt", "data");
    a("database.txt", "not under /data/");
    a("conf/local.txt", "conf");
    let server = TestServer::try_start_with(&config(w.path()), |cmd| {
        cmd.env("RUST_LOG", "info,processor=debug");
    })
    .unwrap_or_else(|log| panic!("server did not become ready:\n{log}"));

    for (path, want) in [
        // A `Require all denied` directory: its files, its index, the directory named
        // without its slash, and a missing file under it.
        ("/private/x.txt", 403),
        ("/private/", 403),
        ("/private", 403),
        ("/private/missing.txt", 403),
        // A deeper `Require all granted` grants again.
        ("/private/open/y.txt", 200),
        // DokuWiki's shipped file.
        ("/dw/data/pages/start.txt", 403),
        ("/dw/data/", 403),
        ("/dw/doku.txt", 200),
        // `<FilesMatch "\.bak$">` in the root's .htaccess, here and below; the unknown
        // directive beside it is ignored.
        ("/config.bak", 403),
        ("/sub/old.bak", 403),
        ("/sub/", 200),
        ("/hello.txt", 200),
        // `.ht*` files are never served.
        ("/.htaccess", 403),
        ("/.htpasswd", 403),
        ("/private/.htaccess", 403),
        ("/dw/data/.htaccess", 403),
        // The vhost's `deny`: the directory, with and without its slash, a file under
        // it; segment-wise, so `/database.txt` is not under `/data/`.
        ("/data/", 403),
        ("/data", 403),
        ("/data/x.txt", 403),
        ("/conf/local.txt", 403),
        ("/database.txt", 200),
        ("/", 200),
    ] {
        let r = get(server.addr, "alice.test", path);
        assert_eq!(r.status, want, "{path}: {r:?}");
        if want == 403 {
            assert!(
                !r.text().contains("secret") && !r.text().contains("alice:"),
                "{path}: {r:?}"
            );
        }
    }
    // The unknown directive is logged at debug level, once for the file.
    let line = server.wait_for_log("FooBarUnknown", Duration::from_secs(5));
    assert!(line.is_some_and(|l| l.contains("htaccess")), "{}", server.log());
    assert_eq!(
        server.log().matches("FooBarUnknown").count(),
        1,
        "{}",
        server.log()
    );
}

/// Writes `text` into `path` and moves its mtime `secs` forward (a rewrite within the
/// same second might keep the mtime).
fn rewrite(path: &std::path::Path, text: &str, secs: u64) {
    std::fs::write(path, text).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn edited_htaccess_takes_effect_on_the_next_request() {
    require_root!();
    let w = Dir::new("edited_htaccess_takes_effect_on_the_next_request");
    sites(w.path(), 0o644);
    let file = put(
        w.path(),
        "alice/d/.htaccess",
        b"Require all granted\n",
        ALICE,
        0o644,
    );
    put(w.path(), "alice/d/x.txt", b"x", ALICE, 0o644);
    put(w.path(), "alice/e/x.txt", b"x", ALICE, 0o644);
    let server = TestServer::start(&config(w.path()));
    assert_eq!(status(&server, "/d/x.txt"), 200);
    assert_eq!(status(&server, "/d/x.txt"), 200);
    rewrite(&file, "Require all denied\n", 10);
    assert_eq!(status(&server, "/d/x.txt"), 403);
    rewrite(&file, "Require all granted\n", 20);
    assert_eq!(status(&server, "/d/x.txt"), 200);
    // A .htaccess appearing where there was none is seen at once (the directory's mtime).
    assert_eq!(status(&server, "/e/x.txt"), 200);
    put(w.path(), "alice/e/.htaccess", b"Deny from all\n", ALICE, 0o644);
    assert_eq!(status(&server, "/e/x.txt"), 403);
    std::fs::remove_file(w.path().join("alice/e/.htaccess")).unwrap();
    assert_eq!(status(&server, "/e/x.txt"), 200);
    // Too large: the directory is refused (fail closed).
    rewrite(&file, &"# padding\n".repeat(7000), 30);
    assert_eq!(status(&server, "/d/x.txt"), 500);
}
