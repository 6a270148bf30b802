//! What the PHP tests share: configs with FastCGI backends (`php-cgi`, or a small
//! Python responder that misbehaves on purpose), the backends of a running server from
//! `/proc`, a form client with cookies over the raw HTTP client (chunked answers
//! decoded), and Debian's DokuWiki copied into a tenant's document root as real files.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::fs::{chmod, chown, put};
use super::http::connect;
use super::processes::{children_of, cmdline, uid_of};
use super::require_tool;
use super::server::TestServer;

/// Debian's php-cgi (package php-cgi), the backend every PHP test runs.
pub const PHP_CGI: &str = "/usr/bin/php-cgi";
/// The interpreter of [`RESPONDER`]: an absolute path, since a backend's PATH is
/// `/usr/local/bin:/usr/bin:/bin` and nothing else of ours (no pyenv shims).
pub const PYTHON: &str = "/usr/bin/python3";

/// True when php-cgi is installed; otherwise the test is skipped (or fails under CI).
pub fn have_php_cgi() -> bool {
    require_tool("php-cgi", "php-cgi").is_some() && Path::new(PHP_CGI).exists()
}

/// True when `/usr/bin/python3` exists (a backend cannot use another one).
pub fn have_python() -> bool {
    if Path::new(PYTHON).exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{PYTHON} is missing: CI must install Debian's python3 (scripts/test)");
    }
    eprintln!("skipping: {PYTHON} is not installed (apt-get install python3)");
    false
}

/// `[environments.ENV.fastcgi]` running php-cgi for `.php`, with `extra` keys
/// (`min_backends = 1`, `max_requests = 3`, …).
pub fn php_table(env: &str, extra: &str) -> String {
    format!("\n[environments.{env}.fastcgi]\ncommand = [\"{PHP_CGI}\"]\nextensions = [\".php\"]\n{extra}\n")
}

/// `[environments.ENV.fastcgi]` with any `command` (TOML array text) for `.php`.
pub fn command_table(env: &str, command: &str, extra: &str) -> String {
    format!("\n[environments.{env}.fastcgi]\ncommand = {command}\nextensions = [\".php\"]\n{extra}\n")
}

/// The standard two-environment config (`two_env_config`: alice.test, bob.test) with
/// the sockets under [`runtime_dir`] (each test its own) and `tables` appended (the
/// `fastcgi` tables, more vhosts). `server_extra` goes into `[server]`.
pub fn php_config(root: &Path, server_extra: &str, tables: &str) -> String {
    let run = runtime_dir(root);
    let server = format!("runtime_dir = \"{}\"\n{server_extra}", run.display());
    format!("{}\n{tables}", super::server::two_env_config(root, &server))
}

/// `root/r`: a root-owned 0755 directory for the test's `runtime_dir` (short: a
/// socket's path, `r/fastcgi/<pid>-<generation>-<index>.sock`, must fit `sun_path`).
pub fn runtime_dir(root: &Path) -> PathBuf {
    let run = root.join("r");
    if !run.exists() {
        std::fs::create_dir(&run).unwrap();
        chmod(&run, 0o755);
    }
    let longest = run.join("fastcgi/4194304-99-99.sock");
    assert!(
        longest.as_os_str().len() < 108,
        "{} is too long for a Unix socket's path (TMPDIR?)",
        longest.display()
    );
    run
}

/// A PHP script at `dir/rel`, owned by `uid`, mode 0644.
pub fn php(dir: &Path, rel: &str, code: &str, uid: u32) -> PathBuf {
    put(dir, rel, code.as_bytes(), uid, 0o644)
}

/// The FastCGI backends of `server` running as `uid`: the supervisor's children whose
/// program (after the `fastcgi-backend` role exec'd it) is `program` (its basename,
/// e.g. `php-cgi` or `python3`).
pub fn backends(server: &TestServer, uid: u32, program: &str) -> Vec<i32> {
    children_of(server.pid())
        .into_iter()
        .filter(|p| {
            let args = cmdline(*p);
            let first = args
                .first()
                .map(|a| a.rsplit('/').next().unwrap_or(a).to_string());
            first.is_some_and(|f| f == program || f.starts_with(&format!("{program}.")))
                && uid_of(*p) == Some(uid)
        })
        .collect()
}

/// php-cgi backends of `server` running as `uid`.
pub fn php_backends(server: &TestServer, uid: u32) -> Vec<i32> {
    backends(server, uid, "php-cgi")
}

/// An answer read whole: status, head (as text), body with a chunked encoding
/// removed, and whether the body was complete (a chunked body's last chunk seen, a
/// Content-Length met, or a close-delimited body).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    pub complete: bool,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("set-cookie")
                    .then(|| v.trim().to_string())
            })
            .collect()
    }

    /// `name=value` pairs of the body read as a PHP script's `KEY=value` lines.
    pub fn vars(&self) -> BTreeMap<String, String> {
        self.text()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }
}

/// Sends `request` (which should ask `Connection: close`) and reads until the server
/// closes, within `timeout`.
pub fn exchange_for(addr: SocketAddr, request: &[u8], timeout: Duration) -> Answer {
    let mut s = connect(addr);
    s.set_read_timeout(Some(timeout)).unwrap();
    // A big request the server refuses early may meet a reset: read what came anyway.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    parse_answer(&out)
}

/// [`exchange_for`] with 30 s.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    exchange_for(addr, request, Duration::from_secs(30))
}

/// A GET with `Connection: close` and `extra` header lines (each ending in `\r\n`).
pub fn get_close(addr: SocketAddr, host: &str, target: &str, extra: &str) -> Answer {
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    exchange(addr, req.as_bytes())
}

/// The bytes of one whole answer on a closed connection, taken apart.
pub fn parse_answer(out: &[u8]) -> Answer {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Answer {
            status: 0,
            head: String::from_utf8_lossy(out).into_owned(),
            body: Vec::new(),
            complete: false,
        };
    };
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let raw = &out[end + 4..];
    let lower = head.to_ascii_lowercase();
    let mut answer = Answer {
        status,
        head,
        body: Vec::new(),
        complete: true,
    };
    if lower.contains("\r\ntransfer-encoding: chunked") {
        let (body, complete) = dechunk(raw);
        answer.body = body;
        answer.complete = complete;
    } else if let Some(len) = answer
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        answer.complete = raw.len() >= len;
        answer.body = raw[..raw.len().min(len)].to_vec();
    } else {
        answer.body = raw.to_vec();
    }
    answer
}

/// The data of a chunked body and whether its last chunk arrived.
pub fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let line = String::from_utf8_lossy(&raw[..eol]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16) else {
            return (out, false);
        };
        raw = &raw[eol + 2..];
        if size == 0 {
            return (out, raw.starts_with(b"\r\n"));
        }
        if raw.len() < size + 2 {
            out.extend_from_slice(&raw[..raw.len().min(size)]);
            return (out, false);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// `body` in chunks of `piece` bytes, with the last chunk.
pub fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / piece * 12 + 16);
    for p in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// `application/x-www-form-urlencoded` of `fields`, in order.
pub fn form_encode(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encoding for a form field (space as `+`).
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The few entities DokuWiki's forms use, decoded.
pub fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#039;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A browser's worth of HTTP for form tests: one host, a cookie jar (names and values
/// only: every cookie is sent on every request), `Connection: close` per request.
pub struct Browser {
    pub addr: SocketAddr,
    pub host: String,
    pub cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(addr: SocketAddr, host: &str) -> Browser {
        Browser {
            addr,
            host: host.to_string(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        if self.cookies.is_empty() {
            return String::new();
        }
        let c: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("Cookie: {}\r\n", c.join("; "))
    }

    fn keep_cookies(&mut self, a: &Answer) {
        for c in a.set_cookies() {
            let pair = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                let (k, v) = (k.trim().to_string(), v.trim().to_string());
                if v.is_empty() || v == "deleted" {
                    self.cookies.remove(&k);
                } else {
                    self.cookies.insert(k, v);
                }
            }
        }
    }

    pub fn get(&mut self, target: &str) -> Answer {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\n{}Connection: close\r\n\r\n",
            self.host,
            self.cookie_header()
        );
        let a = exchange(self.addr, req.as_bytes());
        self.keep_cookies(&a);
        a
    }

    /// POSTs `fields` form-encoded to `target`.
    pub fn post(&mut self, target: &str, fields: &[(String, String)]) -> Answer {
        let body = form_encode(fields);
        let req = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host,
            self.cookie_header(),
            body.len()
        );
        let a = exchange(self.addr, req.as_bytes());
        self.keep_cookies(&a);
        a
    }
}

/// The `attr="value"` of one tag's text, decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(html_unescape(&tag[start..start + len]))
}

/// A form of an HTML page: its `action` and the fields a browser would submit
/// (hidden and text inputs, checked checkboxes, textareas; no buttons).
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// The form whose `id` is `id` in `html`.
    pub fn by_id(html: &str, id: &str) -> Option<Form> {
        let start = html.find(&format!("<form id=\"{id}\""))?;
        let end = start + html[start..].find("</form>")?;
        let text = &html[start..end];
        let open = &text[..text.find('>')?];
        let action = attr(open, "action").unwrap_or_default();
        let mut fields = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find('<') {
            rest = &rest[i..];
            let Some(close) = rest.find('>') else { break };
            let tag = &rest[..close];
            if tag.starts_with("<input") {
                let kind = attr(tag, "type").unwrap_or_else(|| "text".into());
                let checked = tag.contains(" checked");
                let submit = matches!(kind.as_str(), "submit" | "button" | "image" | "reset");
                if let Some(name) = attr(tag, "name") {
                    if !submit && (!matches!(kind.as_str(), "checkbox" | "radio") || checked) {
                        fields.push((name, attr(tag, "value").unwrap_or_default()));
                    }
                }
            } else if tag.starts_with("<textarea") {
                let body_end = rest.find("</textarea>").unwrap_or(close);
                let content = rest[close + 1..body_end].trim_start_matches('\n');
                if let Some(name) = attr(tag, "name") {
                    fields.push((name, html_unescape(content)));
                }
            }
            rest = &rest[close..];
        }
        Some(Form { action, fields })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` (the first field of that name, else a new one).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some(f) => f.1 = value.to_string(),
            None => self.fields.push((name.to_string(), value.to_string())),
        }
    }

    /// Sets every field named `name`.
    pub fn set_all(&mut self, name: &str, value: &str) {
        for f in self.fields.iter_mut().filter(|(k, _)| k == name) {
            f.1 = value.to_string();
        }
    }
}

/// The DokuWiki test user.
pub const WIKI_USER: &str = "admin";
pub const WIKI_PASSWORD: &str = "bulkhead-wiki-s3cret";

/// Debian's DokuWiki (package dokuwiki) as one self-contained tree at `dest`, owned by
/// `uid`: `/usr/share/dokuwiki` with every symbolic link resolved (its `lib/tpl` and
/// `lib/plugins` point into `/var/lib/dokuwiki`, its `.htaccess` into `/etc`), Debian's
/// `inc/preload.php` (which points the config at `/etc/dokuwiki`) removed so the
/// config is `dest/conf`, `/etc/dokuwiki` copied there, `/var/lib/dokuwiki/data` copied
/// to `dest/data`; `install.php` removed. The config: ACL on, [`WIKI_USER`] the
/// superuser with [`WIKI_PASSWORD`] (bcrypt, made by `php -r password_hash`), files
/// created 0600 and directories 0700, `data/` and `conf/` mode 0700, so no other uid
/// can read a page. Needs `php` (CLI) for the hash.
pub fn dokuwiki(dest: &Path, uid: u32) {
    let src = Path::new("/usr/share/dokuwiki");
    copy_resolved(src, dest);
    let _ = std::fs::remove_file(dest.join("inc/preload.php"));
    let _ = std::fs::remove_file(dest.join("install.php"));
    let conf = dest.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    for e in std::fs::read_dir("/etc/dokuwiki").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Web server snippets, and the two ACL files written below.
        if [
            "apache.conf",
            "lighttpd.conf",
            "acl.auth.php",
            "users.auth.php",
            "local.php",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        let from = e.path();
        if from.is_dir() {
            copy_resolved(&from, &conf.join(&name));
        } else if from.exists() {
            std::fs::copy(&from, conf.join(&name)).unwrap();
        }
    }
    copy_resolved(Path::new("/var/lib/dokuwiki/data"), &dest.join("data"));
    let hash = password_hash(WIKI_PASSWORD);
    std::fs::write(
        conf.join("users.auth.php"),
        format!(
            "# users.auth.php\n# <?php exit()?>\n# Don't modify the lines above\n{WIKI_USER}:{hash}:Wiki Admin:admin@example.test:admin,user\n"
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("acl.auth.php"),
        "# acl.auth.php\n# <?php exit()?>\n# Don't modify the lines above\n*\t@ALL\t1\n*\t@user\t8\n",
    )
    .unwrap();
    std::fs::write(
        conf.join("local.php"),
        "<?php\n$conf['title'] = 'bulkhead test wiki';\n$conf['savedir'] = './data';\n\
         $conf['useacl'] = 1;\n$conf['superuser'] = 'admin';\n\
         $conf['fmode'] = 0600;\n$conf['dmode'] = 0700;\n",
    )
    .unwrap();
    chown_tree(dest, uid);
    chmod(&dest.join("data"), 0o700);
    chmod(&dest.join("conf"), 0o700);
}

/// `php -r 'echo password_hash(…, PASSWORD_BCRYPT);'`.
fn password_hash(password: &str) -> String {
    let out = Command::new("php")
        .args(["-r", "echo password_hash($argv[1], PASSWORD_BCRYPT);", password])
        .output()
        .expect("php (the CLI, package php-cli) to hash the wiki password");
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$2y$"), "php -r password_hash gave {hash:?}");
    hash
}

/// `cp -rL`: `src` copied to `dest` with every link followed, modes kept.
pub fn copy_resolved(src: &Path, dest: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    if meta.is_dir() {
        std::fs::create_dir_all(dest).unwrap();
        chmod(dest, meta.permissions().mode() & 0o7777);
        for e in std::fs::read_dir(src).unwrap().flatten() {
            copy_resolved(&e.path(), &dest.join(e.file_name()));
        }
    } else if meta.is_file() {
        std::fs::copy(src, dest).unwrap_or_else(|e| panic!("{} -> {}: {e}", src.display(), dest.display()));
    }
}

/// Every file and directory under `root` (and itself) owned by `uid`.
pub fn chown_tree(root: &Path, uid: u32) {
    chown(root, uid);
    if std::fs::symlink_metadata(root)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        for e in std::fs::read_dir(root).unwrap().flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

/// `md5sum` of `data`, as hex (no md5 crate among the dev-dependencies).
pub fn md5_hex(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum (coreutils)");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A FastCGI responder in Python for the error tests, run as a backend's `command`
/// (`[PYTHON, path, MODE]`): it accepts on fd 0 (the listening socket bulkhead gives a
/// backend), reads one request's records up to the empty FCGI_STDIN, then in MODE
/// `bad-headers` answers a header block that is not one, in `ok` a valid small answer
/// (`responder ok`), each followed by FCGI_END_REQUEST.
pub const RESPONDER: &str = r#"import os, socket, struct, sys
mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
lsock = socket.socket(fileno=0)
def rec(kind, rid, data):
    pad = (8 - len(data) % 8) % 8
    return struct.pack(">BBHHBB", 1, kind, rid, len(data), pad, 0) + data + b"\0" * pad
def read_exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b
while True:
    c, _ = lsock.accept()
    try:
        rid = 1
        while True:
            v, kind, rid, clen, plen, _ = struct.unpack(">BBHHBB", read_exact(c, 8))
            data = read_exact(c, clen + plen)[:clen]
            if kind == 5 and clen == 0:
                break
        if mode == "bad-headers":
            out = b"this is not a header block\r\nno colon here either\r\n\r\nbody\n"
        else:
            out = b"Content-Type: text/plain\r\n\r\nresponder ok\n"
        c.sendall(rec(6, rid, out) + rec(6, rid, b"") + rec(3, rid, struct.pack(">IB3x", 0, 0)))
    except (EOFError, OSError):
        pass
    c.close()
"#;

/// Writes [`RESPONDER`] at `dir/env/responder.py` (root's, 0644), in environment
/// `env`'s own tree: its private view shows it nothing else of the host's `/tmp`.
pub fn responder(dir: &Path, env: &str) -> PathBuf {
    put(
        dir,
        &format!("{env}/responder.py"),
        RESPONDER.as_bytes(),
        0,
        0o644,
    )
}

/// The path of the listening Unix socket whose inode is `inode` (from
/// `/proc/net/unix`: flags `00010000` is `__SO_ACCEPTCON`), if it is one.
pub fn unix_listener_path(inode: u64) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/unix").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let listening = f.get(3).and_then(|x| u32::from_str_radix(x, 16).ok())? & 0x0001_0000 != 0;
        (f.get(6)?.parse::<u64>().ok()? == inode && listening).then(|| f.get(7).unwrap_or(&"").to_string())
    })
}

/// `(dev, inode)` of every writable shared mapping (`rw-s`) of `pid` with an inode.
pub fn shared_writable_maps(pid: i32) -> std::collections::HashSet<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = f.get(4)?.parse().ok()?;
            (f.get(1) == Some(&"rw-s") && inode != 0).then(|| (f[3].to_string(), inode))
        })
        .collect()
}
