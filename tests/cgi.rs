//! CGI/1.1 scripts run by alice's processor: the environment's uid, the RFC 3875
//! meta-variables and nothing of the server's environment (no `HTTP_PROXY`), fds 0–2
//! only; request bodies of 1 MiB intact with Content-Length and chunked; `Status:`,
//! client and local redirects, a malformed header block (502), a non-executable script
//! (403), a body over `limit_request_body` (413), stderr in the error log; a script in a chroot
//! with its body spooled to the jail's `/tmp`; `cgi_timeout` killing a sleeping script
//! and a forking one, children included.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

/// Alice's site with `cgi = [".cgi"]`, `cgi_dirs = ["/cgi-bin/"]` and a 2 s timeout.
fn config(root: &Path) -> String {
    let vhost = format!(
        r#"
[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{a}"
cgi = [".cgi"]
cgi_dirs = ["/cgi-bin/"]
cgi_timeout = 2
"#,
        a = root.join("alice").display()
    );
    alice_config("cgi_timeout = 30", &vhost)
}

/// A script at `alice/rel`, alice's, mode 0755.
fn script(root: &Path, rel: &str, body: &str) {
    put(root, rel, format!("#!/bin/sh\n{body}").as_bytes(), ALICE, 0o755);
}

/// Sends `request` and reads until the server closes: (status, headers, decoded body).
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let raw = &out[end + 4..];
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked && !raw.is_empty() {
        dechunk(raw)
    } else {
        raw.to_vec()
    };
    (status, head, body)
}

/// The data of a complete chunked body; panics if the last chunk is missing.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap(), 16).unwrap();
        raw = &raw[eol + 2..];
        if size == 0 {
            assert_eq!(raw, b"\r\n", "bytes after the last chunk");
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n");
        raw = &raw[size + 2..];
    }
}

fn get_close(addr: SocketAddr, target: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: alice.test\r\n{extra}Connection: close\r\n\r\n");
    exchange(addr, req.as_bytes())
}

#[test]
fn cgi_environment_uid_and_fds() {
    require_root!();
    let dir = Dir::new("cgi_environment_uid_and_fds");
    let w = dir.path();
    sites(w, 0o644);
    script(
        w,
        "alice/cgi-bin/env.cgi",
        "printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"uid=$(id -u)\"\necho \"limits=$(ulimit -n) $(ulimit -c)\"\necho \"pid=$$ stat=$(cat /proc/$$/stat)\"\nenv\necho fds:\nls -l /proc/self/fd\n",
    );
    let server = TestServer::start(&config(w));
    let (status, head, body) = get_close(
        server.addr,
        "/cgi-bin/env.cgi/extra/path?x=1&y=2",
        "Proxy: http://evil\r\nX-Custom-Thing: hello\r\nUser-Agent: cgi-test\r\n",
    );
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{head}\n{text}");
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert!(text.contains(&format!("uid={ALICE}\n")), "{text}");
    // Its own session (it leads it), no controlling terminal, the rlimits.
    assert!(text.contains("limits=1024 0\n"), "{text}");
    let stat_line = text.lines().find(|l| l.starts_with("pid=")).unwrap();
    let (pid, stat) = stat_line
        .strip_prefix("pid=")
        .unwrap()
        .split_once(" stat=")
        .unwrap();
    let after_comm: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // Fields after the command: state ppid pgrp session tty_nr.
    assert_eq!(
        (after_comm[2], after_comm[3], after_comm[4]),
        (pid, pid, "0"),
        "{stat}"
    );
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let port = server.addr.port().to_string();
    for (name, want) in [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "alice.test"),
        ("SERVER_PORT", port.as_str()),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/cgi-bin/env.cgi"),
        ("PATH_INFO", "/extra/path"),
        ("QUERY_STRING", "x=1&y=2"),
        ("REQUEST_URI", "/cgi-bin/env.cgi/extra/path?x=1&y=2"),
        ("HTTP_HOST", "alice.test"),
        ("HTTP_X_CUSTOM_THING", "hello"),
        ("HTTP_USER_AGENT", "cgi-test"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ] {
        assert_eq!(var(name).as_deref(), Some(want), "{name} in\n{text}");
    }
    let root = w.join("alice");
    assert_eq!(var("DOCUMENT_ROOT"), Some(root.display().to_string()));
    let filename = root.join("cgi-bin/env.cgi");
    assert_eq!(var("SCRIPT_FILENAME"), Some(filename.display().to_string()));
    assert_eq!(
        var("PATH_TRANSLATED"),
        Some(format!("{}/extra/path", root.display()))
    );
    assert!(
        var("REMOTE_PORT").is_some_and(|p| p.parse::<u16>().is_ok()),
        "{text}"
    );
    assert!(
        var("SERVER_SOFTWARE").is_some_and(|s| s.starts_with("bulkhead/")),
        "{text}"
    );
    assert_eq!(var("HTTP_PROXY"), None, "httpoxy: {text}");
    assert_eq!(var("CONTENT_LENGTH"), None, "{text}");
    assert_eq!(var("HTTPS"), None, "{text}");
    // Nothing of the server's own environment.
    let names: Vec<&str> = text
        .lines()
        .take_while(|l| *l != "fds:")
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    for n in &names {
        let known = n.starts_with("HTTP_")
            || [
                "GATEWAY_INTERFACE",
                "SERVER_SOFTWARE",
                "SERVER_PROTOCOL",
                "SERVER_NAME",
                "SERVER_ADDR",
                "SERVER_PORT",
                "REMOTE_ADDR",
                "REMOTE_PORT",
                "REQUEST_SCHEME",
                "REQUEST_METHOD",
                "REQUEST_URI",
                "QUERY_STRING",
                "DOCUMENT_ROOT",
                "SCRIPT_NAME",
                "SCRIPT_FILENAME",
                "PATH_INFO",
                "PATH_TRANSLATED",
                "PATH",
                "PWD",
                "uid",
                "limits",
                "pid",
            ]
            .contains(n);
        assert!(known, "unexpected variable {n} in\n{text}");
    }
    // fds 0, 1, 2 and nothing else, but the directory `ls` itself is reading.
    let fds: Vec<(u32, String)> = text
        .lines()
        .skip_while(|l| *l != "fds:")
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.to_string()))
        })
        .collect();
    let inherited: Vec<u32> = fds
        .iter()
        .filter(|(_, t)| !(t.starts_with("/proc/") && t.ends_with("/fd")))
        .map(|(fd, _)| *fd)
        .collect();
    assert_eq!(inherited, [0, 1, 2], "{fds:?}");
    // The script's stderr is the environment's log pipe.
    assert!(
        fds.iter().any(|(fd, t)| *fd == 2 && t.starts_with("pipe:")),
        "{fds:?}"
    );
}

#[test]
fn cgi_post_bodies_intact() {
    require_root!();
    let dir = Dir::new("cgi_post_bodies_intact");
    let w = dir.path();
    sites(w, 0o644);
    script(
        w,
        "alice/post.cgi",
        "printf 'Content-Type: text/plain\\n\\n'\necho \"len=$CONTENT_LENGTH type=$CONTENT_TYPE method=$REQUEST_METHOD\"\nsha256sum\n",
    );
    let server = TestServer::start(&config(w));
    let body: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let data = w.join("body.bin");
    std::fs::write(&data, &body).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&data)
        .output()
        .unwrap();
    let want = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let expected = format!("len=1048576 type=application/octet-stream method=POST\n{want}  -\n");
    let mut req = format!(
        "POST /post.cgi HTTP/1.1\r\nHost: alice.test\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let (status, head, got) = exchange(server.addr, &req);
    assert_eq!(
        (status, String::from_utf8_lossy(&got).into_owned()),
        (200, expected.clone()),
        "{head}"
    );
    // Chunked, in uneven chunks.
    let mut req = b"PUT /post.cgi HTTP/1.1\r\nHost: alice.test\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for piece in body.chunks(65_000) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, head, got) = exchange(server.addr, &req);
    let expected = expected.replace("POST", "PUT");
    assert_eq!(
        (status, String::from_utf8_lossy(&got).into_owned()),
        (200, expected),
        "{head}"
    );
}

#[test]
fn cgi_answers_status_redirects_and_errors() {
    require_root!();
    let dir = Dir::new("cgi_answers_status_redirects_and_errors");
    let w = dir.path();
    sites(w, 0o644);
    script(
        w,
        "alice/status.cgi",
        "printf 'Status: 404 Not Found\\nContent-Type: text/plain\\n\\nnope'\n",
    );
    script(
        w,
        "alice/away.cgi",
        "printf 'Location: http://example.com/x\\n\\n'\n",
    );
    script(w, "alice/local.cgi", "printf 'Location: /index.html\\n\\n'\n");
    script(w, "alice/bad.cgi", "echo 'this is not a header block'\n");
    script(w, "alice/silent.cgi", "exit 0\n");
    script(
        w,
        "alice/empty.cgi",
        "printf 'Status: 204 No Content\\n\\nignored'\n",
    );
    script(
        w,
        "alice/ten.cgi",
        "printf 'Content-Type: text/plain\\n\\n'\nseq 1 10\n",
    );
    script(
        w,
        "alice/stderr.cgi",
        "echo 'cgi says hello on stderr' >&2\nprintf 'Content-Type: text/plain\\n\\nok'\n",
    );
    put(w, "alice/plain.cgi", b"#!/bin/sh\necho source\n", ALICE, 0o644);
    let server = TestServer::start(&config(w));
    // stderr reaches the error log through the environment's log pipe, marked.
    assert_eq!(get_close(server.addr, "/stderr.cgi", "").2, b"ok");
    let line = server.wait_for_log("cgi says hello on stderr", Duration::from_secs(5));
    assert!(
        line.is_some_and(|l| l.contains("environment=alice")),
        "{}",
        server.log()
    );
    // A body over the spool's bound: 413 before any byte of it is read.
    let big = b"POST /status.cgi HTTP/1.1\r\nHost: alice.test\r\nContent-Length: 209715200\r\n\r\n";
    assert_eq!(exchange(server.addr, big).0, 413);
    let (status, _, body) = get_close(server.addr, "/status.cgi", "");
    assert_eq!((status, body.as_slice()), (404, &b"nope"[..]));
    let (status, head, _) = get_close(server.addr, "/away.cgi", "");
    assert_eq!(status, 302, "{head}");
    assert!(head.contains("\r\nLocation: http://example.com/x"), "{head}");
    let (status, _, body) = get_close(server.addr, "/local.cgi", "");
    assert_eq!((status, body.as_slice()), (200, &b"alice home"[..]));
    assert_eq!(get_close(server.addr, "/bad.cgi", "").0, 502);
    assert_eq!(get_close(server.addr, "/silent.cgi", "").0, 502);
    let (status, head, body) = get_close(server.addr, "/empty.cgi", "");
    assert_eq!((status, body.len()), (204, 0), "{head}");
    assert!(!head.contains("chunked"), "{head}");
    let (status, _, body) = get_close(server.addr, "/plain.cgi", "");
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    // HTTP/1.0: delimited by the close; HEAD: the header block alone.
    let (status, head, body) = exchange(server.addr, b"GET /ten.cgi HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert!(!head.contains("chunked"), "{head}");
    assert_eq!(String::from_utf8_lossy(&body).lines().count(), 10);
    let (status, _, body) = exchange(
        server.addr,
        b"HEAD /ten.cgi HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.len()), (200, 0));
    // Keep-alive: a chunked answer, then the next request on the same connection.
    let mut s = connect(server.addr);
    for _ in 0..2 {
        s.write_all(b"GET /ten.cgi HTTP/1.1\r\nHost: alice.test\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1);
            head.push(b[0]);
        }
        let mut body = Vec::new();
        while !body.ends_with(b"\r\n0\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1);
            body.push(b[0]);
        }
        assert_eq!(
            dechunk(&body),
            (1..=10).map(|i| format!("{i}\n")).collect::<String>().as_bytes()
        );
    }
}

#[test]
fn cgi_timeout_kills_the_process_group() {
    require_root!();
    let dir = Dir::new("cgi_timeout_kills_the_process_group");
    let w = dir.path();
    sites(w, 0o644);
    let pids = put(w, "alice/pids.txt", b"", ALICE, 0o644);
    let p = pids.display();
    script(w, "alice/sleep.cgi", &format!("echo $$ >> {p}\nsleep 1000\n"));
    script(
        w,
        "alice/fork.cgi",
        &format!("sleep 1000 &\necho $! >> {p}\necho $$ >> {p}\nprintf 'Content-Type: text/plain\\n\\nstarted\\n'\nwait\n"),
    );
    let server = TestServer::start(&config(w));
    let t0 = Instant::now();
    let (status, _, _) = get_close(server.addr, "/sleep.cgi", "");
    let waited = t0.elapsed();
    assert_eq!(status, 504);
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // The forking one has sent its header block: the body is cut, no last chunk.
    let mut s = connect(server.addr);
    s.write_all(b"GET /fork.cgi HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("started") && !text.ends_with("0\r\n\r\n"), "{text}");
    let recorded: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    // Pids as the scripts' PID namespace (alice's private view) numbers them.
    let gone = poll(Duration::from_secs(5), || {
        recorded.iter().all(|&pid| !alive_as(ALICE, pid)).then_some(())
    });
    let left: Vec<i32> = recorded
        .iter()
        .copied()
        .filter(|&pid| alive_as(ALICE, pid))
        .collect();
    assert!(gone.is_some(), "still running: {left:?}");
}

/// Copies the host's `/bin/sh` and the libraries `ldd` names into `jail`, root's.
fn shell_into(jail: &Path) {
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let ldd = std::process::Command::new("ldd").arg(&sh).output().unwrap();
    let mut files = vec![sh.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line.split_whitespace().find(|w| w.starts_with('/'));
        files.extend(path.map(std::path::PathBuf::from));
    }
    for f in files {
        let to = jail.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    let bin = jail.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(&sh, bin.join("sh")).unwrap();
    let tmp = jail.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    chmod(&tmp, 0o1777);
}

#[test]
fn cgi_runs_inside_the_chroot() {
    require_root!();
    let dir = Dir::new("cgi_runs_inside_the_chroot");
    let w = dir.path();
    let jail = w.join("alice");
    script(
        w,
        "alice/www/in.cgi",
        "printf 'Content-Type: text/plain\\n\\n'\necho \"root=$DOCUMENT_ROOT file=$SCRIPT_FILENAME pwd=$(pwd)\"\nread line\necho \"got=$line\"\n",
    );
    chown(&jail, 0);
    shell_into(&jail);
    let text = config(w)
        .replace(
            "group = 2001\n",
            &format!("group = 2001\nchroot = \"{}\"\n", jail.display()),
        )
        .replace(
            &format!("document_root = \"{}\"", jail.display()),
            &format!("document_root = \"{}\"", jail.join("www").display()),
        );
    let server = TestServer::start(&text);
    let req =
        b"POST /in.cgi HTTP/1.1\r\nHost: alice.test\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";
    let (status, head, body) = exchange(server.addr, req);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{head}\n{body}\n{}", server.log());
    assert_eq!(body, "root=/www file=/www/in.cgi pwd=/www\ngot=hello\n");
}

/// The access rules an application ships apply to its scripts as to its files: a
/// script in a directory its `.htaccess` denies, one matched by a `<FilesMatch>`, one
/// under the vhost's `deny`, and one named `.ht*` are refused with 403 and never run.
#[test]
fn cgi_scripts_obey_the_access_rules() {
    require_root!();
    let w = Dir::new("cgi_scripts_obey_the_access_rules");
    // In alice's own tree: her private view shows her nothing else of the host's /tmp.
    let ran = w.path().join("alice/ran");
    std::fs::create_dir_all(&ran).unwrap();
    chown(&w.path().join("alice"), ALICE);
    chown(&ran, ALICE);
    let mark = |name: &str| {
        format!(
            "touch {}/{name}\nprintf 'Content-Type: text/plain\\n\\nran\\n'\n",
            ran.display()
        )
    };
    script(w.path(), "alice/ok.cgi", &mark("ok"));
    script(w.path(), "alice/private/hidden.cgi", &mark("hidden"));
    put(
        w.path(),
        "alice/private/.htaccess",
        b"Require all denied\n",
        ALICE,
        0o644,
    );
    script(w.path(), "alice/tools/x.bak.cgi", &mark("bak"));
    put(
        w.path(),
        "alice/tools/.htaccess",
        b"<FilesMatch \"\\.bak\\.cgi$\">\n  Require all denied\n</FilesMatch>\n",
        ALICE,
        0o644,
    );
    script(w.path(), "alice/data/d.cgi", &mark("data"));
    script(w.path(), "alice/.htsecret.cgi", &mark("ht"));
    let config = config(w.path()).replace("cgi_timeout = 2\n", "cgi_timeout = 2\ndeny = [\"/data/\"]\n");
    let server = TestServer::start(&config);
    assert_eq!(get_close(server.addr, "/ok.cgi", "").0, 200, "{}", server.log());
    for target in [
        "/private/hidden.cgi",
        "/tools/x.bak.cgi",
        "/data/d.cgi",
        "/.htsecret.cgi",
        "/private/hidden.cgi/x",
    ] {
        assert_eq!(
            get_close(server.addr, target, "").0,
            403,
            "{target}\n{}",
            server.log()
        );
    }
    let names: Vec<String> = std::fs::read_dir(&ran)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["ok".to_string()], "scripts that ran");
}

/// `limit_request_body` (per vhost, `[server]` the default) bounds what a script is
/// given: a declared length over it is 413 before a byte is read, a chunked body is
/// cut at it with 413, and a body within it arrives.
#[test]
fn cgi_limit_request_body() {
    require_root!();
    let w = Dir::new("cgi_limit_request_body");
    sites(w.path(), 0o644);
    script(
        w.path(),
        "alice/len.cgi",
        "printf 'Content-Type: text/plain\\n\\n'\nwc -c\n",
    );
    let config = config(w.path()).replace(
        "cgi_timeout = 2\n",
        "cgi_timeout = 2\nlimit_request_body = 1000\n",
    );
    let server = TestServer::start(&config);
    let post = |body: &[u8], chunked: bool| {
        let mut req = if chunked {
            b"POST /len.cgi HTTP/1.1\r\nHost: alice.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec()
        } else {
            format!(
                "POST /len.cgi HTTP/1.1\r\nHost: alice.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes()
        };
        if chunked {
            for piece in body.chunks(300) {
                req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                req.extend_from_slice(piece);
                req.extend_from_slice(b"\r\n");
            }
            req.extend_from_slice(b"0\r\n\r\n");
        } else {
            req.extend_from_slice(body);
        }
        let (status, _, got) = exchange(server.addr, &req);
        (status, String::from_utf8_lossy(&got).trim().to_string())
    };
    assert_eq!(post(&[b'x'; 1000], false), (200, "1000".to_string()));
    assert_eq!(post(&[b'x'; 1000], true), (200, "1000".to_string()));
    assert_eq!(post(&[b'x'; 1001], false).0, 413);
    assert_eq!(post(&[b'x'; 5000], true).0, 413);
}

/// A script whose processor dies (here: SIGKILL, as `expire_timeout` does) dies with it
/// (parent-death signal) instead of running on unsupervised.
#[test]
fn cgi_script_dies_with_its_processor() {
    require_root!();
    let dir = Dir::new("cgi_script_dies_with_its_processor");
    let w = dir.path();
    sites(w, 0o644);
    let pids = put(w, "alice/pids.txt", b"", ALICE, 0o644);
    script(
        w,
        "alice/sleep.cgi",
        &format!("echo $$ >> {}\nexec sleep 1000\n", pids.display()),
    );
    let config = config(w).replace("cgi_timeout = 2\n", "cgi_timeout = 300\n");
    let server = TestServer::start(&config);
    let mut s = connect(server.addr);
    s.write_all(b"GET /sleep.cgi HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let script_pid = poll(Duration::from_secs(5), || {
        std::fs::read_to_string(&pids).ok()?.trim().parse::<i32>().ok()
    })
    .expect("the script never started");
    // `$$` as the script's PID namespace (alice's private view) numbers it.
    assert!(alive_as(ALICE, script_pid));
    for p in server.processors_of(ALICE) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
    }
    let gone = poll(Duration::from_secs(5), || {
        (!alive_as(ALICE, script_pid)).then_some(())
    });
    assert!(gone.is_some(), "script {script_pid} outlived its processor");
}
