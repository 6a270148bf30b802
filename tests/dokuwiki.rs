//! DokuWiki end to end (Debian's package, copied into alice's document root as real
//! files, `util::php::dokuwiki`) through bulkhead's php-cgi backends: the start page,
//! a login through the real form with its cookies, a page saved through the edit form
//! (on disk, alice's), a forged `sectok` refused, the `data/` and `conf/` files never
//! served (DokuWiki's own `.htaccess`, and a vhost's `deny` too), and bob's PHP unable
//! to read alice's saved page. The same recipe is first checked without bulkhead
//! (`php -S` as alice), so that a failure of the bulkhead test is bulkhead's.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::php::*;
use crate::util::*;

/// The page the tests create.
const PAGE: &str = "bulkhead_test";
const TEXT: &str = "Saved through bulkhead by the integration test.";

/// Skips (or fails under CI) without php-cgi, the php CLI or the dokuwiki package.
pub(crate) fn have_dokuwiki() -> bool {
    if !have_php_cgi() || require_tool("php", "php-cli").is_none() {
        return false;
    }
    if !Path::new("/usr/share/dokuwiki/doku.php").exists() {
        if std::env::var_os("CI").is_some() {
            panic!("Debian's dokuwiki is missing: CI must install it (scripts/test)");
        }
        eprintln!("skipping: dokuwiki is not installed (apt-get install dokuwiki)");
        return false;
    }
    true
}

/// A page of the wiki is DokuWiki's markup: its layout div (`class="site dokuwiki
/// mode_show …"`) and its title.
fn is_dokuwiki(a: &Answer) -> bool {
    let t = a.text();
    t.contains(" dokuwiki mode_") && t.contains("bulkhead test wiki")
}

/// The walk through the wiki a user makes, asserted step by step, against whatever
/// serves `host` at `addr`; `wiki` is the copy on disk. Returns the saved file.
pub(crate) fn login_edit_save(
    addr: SocketAddr,
    host: &str,
    wiki: &Path,
    log: &dyn Fn() -> String,
) -> std::path::PathBuf {
    let mut b = Browser::new(addr, host);
    let start = b.get("/doku.php");
    assert_eq!(
        start.status,
        200,
        "start page: {}\n{}\n{}",
        start.head,
        start.text(),
        log()
    );
    assert!(
        is_dokuwiki(&start),
        "not DokuWiki's start page:\n{}",
        start.text()
    );

    // The login form, as a browser fills it.
    let page = b.get("/doku.php?id=start&do=login");
    assert_eq!(page.status, 200, "login page: {}\n{}", page.head, log());
    let mut form =
        Form::by_id(&page.text(), "dw__login").unwrap_or_else(|| panic!("no login form in\n{}", page.text()));
    form.set("u", WIKI_USER);
    form.set("p", WIKI_PASSWORD);
    let done = b.post(&form.action, &form.fields);
    assert!(
        done.status == 302 || done.status == 303 || done.status == 200,
        "login: {}\n{}\n{}",
        done.head,
        done.text(),
        log()
    );
    assert!(
        b.cookies.keys().any(|k| k.starts_with("DW")),
        "no DokuWiki auth cookie after the login: {:?}\n{}",
        b.cookies,
        done.head
    );
    let home = b.get("/doku.php?id=start");
    assert!(
        home.text().contains("do=logout"),
        "not logged in:\n{}",
        home.text()
    );

    // The edit form of a new page, saved with its sectok.
    let edit = b.get(&format!("/doku.php?id={PAGE}&do=edit"));
    assert_eq!(edit.status, 200, "edit page: {}\n{}", edit.head, log());
    let form = Form::by_id(&edit.text(), "dw__editform")
        .unwrap_or_else(|| panic!("no edit form in\n{}", edit.text()));
    let sectok = form.get("sectok").unwrap_or_default().to_string();
    assert_eq!(sectok.len(), 32, "sectok {sectok:?}");
    let mut save = form.clone();
    save.set("wikitext", TEXT);
    save.set("summary", "bulkhead test");
    save.fields.push(("do[save]".into(), "1".into()));
    let saved = b.post(&form.action, &save.fields);
    assert!(
        saved.status == 302 || saved.status == 303 || saved.status == 200,
        "save: {}\n{}\n{}",
        saved.head,
        saved.text(),
        log()
    );
    let file = wiki.join(format!("data/pages/{PAGE}.txt"));
    let on_disk = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} after the save\n{}\n{}",
            file.display(),
            saved.head,
            log()
        )
    });
    assert_eq!(on_disk.trim_end(), TEXT);
    assert_eq!(
        std::fs::metadata(&file).unwrap().uid(),
        ALICE,
        "{} not alice's",
        file.display()
    );
    let shown = b.get(&format!("/doku.php?id={PAGE}"));
    assert!(
        shown.text().contains(TEXT),
        "the saved page does not show it:\n{}",
        shown.text()
    );

    // The same save with a forged sectok: refused, the file unchanged.
    let mut forged = save.clone();
    forged.set_all("sectok", "0123456789abcdef0123456789abcdef");
    forged.set("wikitext", "FORGED");
    let refused = b.post(&form.action, &forged.fields);
    assert!(refused.status < 500, "forged save: {}\n{}", refused.head, log());
    assert!(
        refused.text().contains("Security Token did not match"),
        "no CSRF refusal:\n{}",
        refused.text()
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim_end(),
        TEXT,
        "the forged save changed the page"
    );
    file
}

/// `php -S` as `uid` (through `setpriv`, which execs it: the pid is php's) serving `root` on a free port; killed when dropped.
struct PhpServer(Child, SocketAddr);

impl PhpServer {
    fn start(root: &Path, uid: u32) -> PhpServer {
        let port = free_port();
        let id = uid.to_string();
        let child = Command::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "php", "-S"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-t")
            .arg(root)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("php -S");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let up = poll(Duration::from_secs(10), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        assert!(up.is_some(), "php -S did not listen on {addr}");
        PhpServer(child, addr)
    }
}

impl Drop for PhpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The recipe without bulkhead: the copy, the config, the form client and the flow
/// all work under PHP's own server running as alice.
#[test]
fn dokuwiki_recipe_works_without_bulkhead() {
    require_root!();
    if !have_dokuwiki() {
        return;
    }
    let dir = Dir::new("dokuwiki_recipe_works_without_bulkhead");
    let wiki = dir.path().join("wiki");
    dokuwiki(&wiki, ALICE);
    let php = PhpServer::start(&wiki, ALICE);
    login_edit_save(php.1, "alice.test", &wiki, &|| "(php -S)".to_string());
}

/// alice's vhost `wiki.test` (the wiki at its root; DokuWiki's `.htaccess` files
/// only) and `deny.test` (the same tree, with `deny = ["/data/", "/conf/"]`), alice
/// and bob with php-cgi; bob's `read.php` tries to read a file by path.
fn config(w: &Path, wiki: &Path) -> String {
    let more = format!(
        r#"
[[vhosts]]
server_name = "wiki.test"
environment = "alice"
document_root = "{d}"
index = ["doku.php"]

[[vhosts]]
server_name = "deny.test"
environment = "alice"
document_root = "{d}"
index = ["doku.php"]
deny = ["/data/", "/conf/"]
"#,
        d = wiki.display()
    );
    php_config(
        w,
        "",
        &format!("{}{}{more}", php_table("alice", ""), php_table("bob", "")),
    )
}

#[test]
fn dokuwiki_login_edit_save_through_bulkhead() {
    require_root!();
    if !have_dokuwiki() {
        return;
    }
    let dir = Dir::new("dokuwiki_login_edit_save_through_bulkhead");
    let w = dir.path();
    sites(w, 0o644);
    let wiki = w.join("wiki");
    dokuwiki(&wiki, ALICE);
    php(
        w,
        "bob/read.php",
        "<?php $r = @file_get_contents($_GET['f']); echo $r === false ? 'refused' : 'read:' . $r;",
        BOB,
    );
    let server = TestServer::start(&config(w, &wiki));
    let log = || server.log();
    // The directory index is doku.php.
    let first = get_close(server.addr, "wiki.test", "/", "");
    assert_eq!(
        first.status,
        200,
        "{}\n{}\n{}",
        first.head,
        first.text(),
        server.log()
    );
    assert!(is_dokuwiki(&first), "{}", first.text());
    let file = login_edit_save(server.addr, "wiki.test", &wiki, &log);

    // What DokuWiki's .htaccess files deny, on both vhosts; the vhost's deny on deny.test.
    for host in ["wiki.test", "deny.test"] {
        for target in [
            format!("/data/pages/{PAGE}.txt"),
            "/conf/users.auth.php".to_string(),
            "/conf/local.php".to_string(),
            "/conf/acl.auth.php".to_string(),
            "/data/".to_string(),
            "/inc/init.php".to_string(),
        ] {
            let a = get_close(server.addr, host, &target, "");
            assert_ne!(a.status, 200, "{host}{target} answered 200:\n{}", a.text());
            assert!(
                !a.text().contains(TEXT) && !a.text().contains("$2y$"),
                "{host}{target} leaked:\n{}",
                a.text()
            );
        }
    }
    for target in [
        format!("/data/pages/{PAGE}.txt"),
        "/conf/users.auth.php".to_string(),
    ] {
        assert_eq!(
            get_close(server.addr, "deny.test", &target, "").status,
            403,
            "deny.test{target}"
        );
    }

    // Bob's PHP, another uid, cannot read alice's page (data/ is 0700, the file 0600).
    let target = format!("/read.php?f={}", url_encode(&file.display().to_string()));
    let a = get_close(server.addr, "bob.test", &target, "");
    assert_eq!((a.status, a.text()), (200, "refused".into()), "{}", server.log());
}
