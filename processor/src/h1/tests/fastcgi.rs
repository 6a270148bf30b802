//! FastCGI through the connection: a real `/usr/bin/php-cgi` on a Unix socket of the
//! test's own (scripts, bodies, headers, streaming, framing, keep-alive), and fake
//! backends written here for what a real one does not do on demand (silence, a close
//! in the middle, garbage, records at their size limit, an answer before the body).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use super::*;
use crate::handler::cgi::CgiConf;
use crate::handler::fastcgi::record::{self, END_REQUEST, STDERR, STDOUT};
use crate::handler::fastcgi::FastcgiConf;

const PHP: &str = "/usr/bin/php-cgi";

/// A site whose `.php` files go to the backend at `socket`.
fn php_site(root: &Path, socket: &Path, timeout: Duration) -> Site {
    let mut site = Site::plain(1, "a.test", root.to_path_buf());
    let conf = FastcgiConf {
        socket: socket.to_path_buf(),
        extensions: vec![".php".into()],
        timeout,
        program: "test-backend".into(),
        environment: "alice".into(),
    };
    site.cgi = CgiConf::default().with_fastcgi(Some(Arc::new(conf)));
    site
}

/// A php-cgi serving FastCGI on its own listening socket (fd 0), killed on drop.
struct Php {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Php {
    fn start() -> Option<Php> {
        if !Path::new(PHP).exists() {
            eprintln!("{PHP} not installed: skipping");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("php.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let child = Command::new(PHP)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PHP_FCGI_MAX_REQUESTS", "0")
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Some(Php {
            child,
            socket,
            _dir: dir,
        })
    }
}

impl Drop for Php {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn php_root() -> tempfile::TempDir {
    let root = docroot();
    let w = |name: &str, text: &str| std::fs::write(root.path().join(name), text).unwrap();
    w("x.php", "<?php echo \"x\";");
    w("len.php", "<?php header('Content-Length: 2'); echo 'ab';");
    w("md5.php", "<?php $b = file_get_contents('php://input'); echo strlen($b), ' ', md5($b), ' ', $_SERVER['CONTENT_LENGTH'];");
    w(
        "status.php",
        "<?php header('Status: 404'); header('X-From: php'); echo 'missing';",
    );
    w("location.php", "<?php header('Location: /other'); ");
    w(
        "big.php",
        "<?php $s = str_repeat('abcdefgh', 1024); for ($i = 0; $i < 384; $i++) echo $s;",
    );
    w("vars.php", "<?php foreach (['SCRIPT_NAME','PATH_INFO','QUERY_STRING','REQUEST_METHOD','REDIRECT_STATUS','HTTP_X_A','HTTP_PROXY','REQUEST_URI'] as $k) echo $k, '=', $_SERVER[$k] ?? '-', \"\\n\";");
    root
}

impl Client {
    /// A chunked body after [`Client::response`]: `Ok` when its last chunk came,
    /// `Err(what came)` when the connection closed first.
    async fn chunked(&mut self) -> Result<Vec<u8>, Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let Some(eol) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                if self.fill().await == 0 {
                    return Err(body);
                }
                continue;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..eol]).unwrap(), 16).unwrap();
            while self.buf.len() < eol + 2 + size + 2 {
                if self.fill().await == 0 {
                    let have = self.buf.len().min(eol + 2 + size);
                    body.extend_from_slice(&self.buf[eol + 2..have]);
                    return Err(body);
                }
            }
            assert_eq!(&self.buf[eol + 2 + size..eol + 4 + size], b"\r\n");
            body.extend_from_slice(&self.buf[eol + 2..eol + 2 + size]);
            self.buf.drain(..eol + 4 + size);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

fn md5_hex(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

#[tokio::test]
async fn php_scripts_keep_alive_and_framing() {
    let Some(php) = Php::start() else { return };
    let root = php_root();
    let site = php_site(root.path(), &php.socket, Duration::from_secs(10));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let r = c.get("/x.php").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
        assert!(r.header("Content-Type").unwrap().starts_with("text/html"));
        assert_eq!(c.chunked().await.unwrap(), b"x");
        // Keep-alive: a static file, then pipelined scripts, on the same connection.
        assert_eq!(c.get("/a.txt").await.body, b"alpha");
        c.send(b"GET /status.php HTTP/1.1\r\nHost: a.test\r\n\r\nGET /location.php HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("X-From")), (404, Some("php")));
        assert_eq!(c.chunked().await.unwrap(), b"missing");
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Location")), (302, Some("/other")));
        let _ = c.chunked().await.unwrap();
        c.send(b"GET /vars.php/p/i?q=1 HTTP/1.1\r\nHost: a.test\r\nX-A: b\r\nProxy: http://evil\r\n\r\n")
            .await;
        assert_eq!(c.response(false).await.status, 200);
        let vars = String::from_utf8(c.chunked().await.unwrap()).unwrap();
        for want in [
            "SCRIPT_NAME=/vars.php\n",
            "PATH_INFO=/p/i\n",
            "QUERY_STRING=q=1\n",
            "REQUEST_METHOD=GET\n",
            "REDIRECT_STATUS=200\n",
            "HTTP_X_A=b\n",
            "HTTP_PROXY=-\n",
            "REQUEST_URI=/vars.php/p/i?q=1\n",
        ] {
            assert!(vars.contains(want), "{want:?} in {vars}");
        }
        // 3 MiB streamed through 64 KiB socket buffers.
        let r = c.get("/big.php").await;
        assert_eq!(r.status, 200);
        let body = c.chunked().await.unwrap();
        assert_eq!(body.len(), 3 << 20);
        assert!(body.starts_with(b"abcdefghabcdefgh"));
        // A Content-Length from PHP frames the body, for HTTP/1.1 and a keep-alive 1.0.
        let r = c.get("/len.php").await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ab"[..]));
        assert!(r.header("Transfer-Encoding").is_none());
        c.send(b"GET /len.php HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!((r.body.as_slice(), r.header("Connection")), (&b"ab"[..], Some("keep-alive")));
        // HTTP/1.0: delimited by the close.
        c.send(b"GET /x.php HTTP/1.0\r\nHost: a.test\r\n\r\n").await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
        assert!(r.header("Transfer-Encoding").is_none());
        assert_eq!(c.rest().await, b"x");
    })
    .await;
}

#[tokio::test]
async fn php_reads_a_spooled_body() {
    let Some(php) = Php::start() else { return };
    let root = php_root();
    let site = php_site(root.path(), &php.socket, Duration::from_secs(10));
    let body: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let want = format!("1048576 {} 1048576", md5_hex(&body));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let mut req = b"POST /md5.php HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        req.extend_from_slice(&body);
        c.send(&req).await;
        assert_eq!(c.response(false).await.status, 200);
        assert_eq!(String::from_utf8(c.chunked().await.unwrap()).unwrap(), want);
        // Chunked, after 100 Continue.
        c.send(b"POST /md5.php HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
            .await;
        assert_eq!(c.response(false).await.status, 100);
        let mut chunked = Vec::new();
        for piece in body.chunks(100_000) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        c.send(&chunked).await;
        assert_eq!(c.response(false).await.status, 200);
        assert_eq!(String::from_utf8(c.chunked().await.unwrap()).unwrap(), want);
    })
    .await;
}

#[tokio::test]
async fn body_limit_is_413() {
    let root = php_root();
    let mut site = php_site(
        root.path(),
        Path::new("/nonexistent.sock"),
        Duration::from_secs(1),
    );
    site.cgi.body_limit = 10;
    run_site(site, cfg(), true, |mut c, _tx| async move {
        c.send(b"POST /x.php HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\nhello world")
            .await;
        assert_eq!(c.response(false).await.status, 413);
    })
    .await;
}

/// What a fake backend received: its params and its body.
struct Received {
    params: Vec<(Vec<u8>, Vec<u8>)>,
    stdin: Vec<u8>,
}

fn read_record(s: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).ok()?;
    let len = u16::from_be_bytes([h[4], h[5]]) as usize + h[6] as usize;
    let mut c = vec![0u8; len];
    s.read_exact(&mut c).ok()?;
    c.truncate(u16::from_be_bytes([h[4], h[5]]) as usize);
    Some((h[1], c))
}

fn pairs(mut b: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let len = |b: &mut &[u8]| {
        if b[0] < 0x80 {
            let n = b[0] as usize;
            *b = &b[1..];
            n
        } else {
            let n = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
            *b = &b[4..];
            n
        }
    };
    let mut out = Vec::new();
    while !b.is_empty() {
        let (n, v) = (len(&mut b), len(&mut b));
        out.push((b[..n].to_vec(), b[n..n + v].to_vec()));
        b = &b[n + v..];
    }
    out
}

/// Reads a request up to the end of its params (and its body, with `body`).
fn receive(s: &mut UnixStream, body: bool) -> Received {
    let mut params = Vec::new();
    let mut stdin = Vec::new();
    let (kind, _) = read_record(s).unwrap();
    assert_eq!(kind, record::BEGIN_REQUEST);
    loop {
        let (kind, c) = read_record(s).unwrap();
        assert_eq!(kind, record::PARAMS);
        assert!(c.len() <= record::MAX_CONTENT);
        if c.is_empty() {
            break;
        }
        params.extend(pairs(&c));
    }
    if body {
        loop {
            let (kind, c) = read_record(s).unwrap();
            assert_eq!(kind, record::STDIN);
            if c.is_empty() {
                break;
            }
            stdin.extend(c);
        }
    }
    Received { params, stdin }
}

fn rec(kind: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    record::push_record(&mut out, kind, content);
    out
}

fn end() -> Vec<u8> {
    rec(END_REQUEST, &[0, 0, 0, 0, 0, 0, 0, 0])
}

/// A fake backend on its own socket: each connection is answered by `answer` (on a
/// thread of its own), for as many connections as come.
fn fake<F>(answer: F) -> (tempfile::TempDir, PathBuf)
where
    F: Fn(UnixStream) + Send + Sync + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            let answer = answer.clone();
            std::thread::spawn(move || answer(s));
        }
    });
    (dir, socket)
}

#[tokio::test]
async fn params_records_and_large_stdout() {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let sent = big.clone();
    let (_dir, socket) = fake(move |mut s| {
        let got = receive(&mut s, true);
        let get = |k: &str| {
            got.params
                .iter()
                .find(|(n, _)| n == k.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let mut out = rec(STDERR, b"a warning\nover two lines\n");
        let head = format!(
            "Content-Type: text/plain\r\nX-Script: {}\r\nX-Redirect: {}\r\nX-Length: {}\r\nX-Path: {}\r\n\r\n",
            get("SCRIPT_FILENAME").unwrap_or_default(),
            get("REDIRECT_STATUS").unwrap_or_default(),
            get("CONTENT_LENGTH").unwrap_or_default(),
            get("PATH").is_some(),
        );
        out.extend(rec(STDOUT, head.as_bytes()));
        out.extend(rec(STDOUT, &got.stdin));
        // A full record and the rest, as a backend must split 70,000 bytes.
        for piece in sent.chunks(record::MAX_CONTENT) {
            out.extend(rec(STDOUT, piece));
        }
        out.extend(rec(STDOUT, b""));
        out.extend(end());
        let _ = s.write_all(&out);
    });
    let root = php_root();
    let script = root.path().join("x.php");
    let site = php_site(root.path(), &socket, Duration::from_secs(10));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        c.send(b"POST /x.php HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello")
            .await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-Script"), Some(script.to_str().unwrap()));
        assert_eq!(r.header("X-Redirect"), Some("200"));
        assert_eq!(r.header("X-Length"), Some("5"));
        assert_eq!(r.header("X-Path"), Some("false"));
        let body = c.chunked().await.unwrap();
        assert_eq!(&body[..5], b"hello");
        assert!(body[5..] == big[..]);
        // Still alive.
        assert_eq!(c.get("/a.txt").await.body, b"alpha");
    })
    .await;
}

#[tokio::test]
async fn an_answer_before_the_body_is_read() {
    // The backend never reads the 4 MiB body: it answers after the params and closes.
    let (_dir, socket) = fake(|mut s| {
        receive(&mut s, false);
        let mut out = rec(STDOUT, b"Status: 403\r\nContent-Type: text/plain\r\n\r\nno");
        out.extend(end());
        let _ = s.write_all(&out);
    });
    let root = php_root();
    let site = php_site(root.path(), &socket, Duration::from_secs(10));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let mut req = b"POST /x.php HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4194304\r\n\r\n".to_vec();
        req.resize(req.len() + (4 << 20), b'b');
        c.send(&req).await;
        assert_eq!(c.response(false).await.status, 403);
        assert_eq!(c.chunked().await.unwrap(), b"no");
    })
    .await;
}

#[tokio::test]
async fn unreachable_backends_are_502() {
    let root = php_root();
    // ENOENT.
    let site = php_site(
        root.path(),
        Path::new("/nonexistent/fcgi.sock"),
        Duration::from_secs(1),
    );
    run_site(site, cfg(), true, |mut c, _tx| async move {
        assert_eq!(c.get("/x.php").await.status, 502);
    })
    .await;
    // ECONNREFUSED: a socket file nobody listens on.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gone.sock");
    drop(UnixListener::bind(&socket).unwrap());
    let site = php_site(root.path(), &socket, Duration::from_secs(1));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        assert_eq!(c.get("/x.php").await.status, 502);
    })
    .await;
}

#[tokio::test]
async fn broken_backends() {
    let root = php_root();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("closed before anything", Vec::new()),
        (
            "closed in the header block",
            rec(STDOUT, b"Content-Type: text/pl"),
        ),
        ("bad version", {
            let mut r = rec(STDOUT, b"Content-Type: text/plain\r\n\r\nx");
            r[0] = 9;
            r
        }),
        ("wrong request id", {
            let mut r = rec(STDOUT, b"Content-Type: text/plain\r\n\r\nx");
            r[3] = 2;
            r
        }),
        ("unknown type", rec(11, b"\x01\0\0\0\0\0\0\0")),
        (
            "malformed header block",
            [rec(STDOUT, b"no colon here\r\n\r\n"), end()].concat(),
        ),
        (
            "ended before its header block",
            [rec(STDOUT, b"A: b\r\n"), end()].concat(),
        ),
        ("overloaded", rec(END_REQUEST, &[0, 0, 0, 0, 2, 0, 0, 0])),
    ];
    for (what, answer) in cases {
        let (_dir, socket) = fake(move |mut s| {
            receive(&mut s, true);
            let _ = s.write_all(&answer);
        });
        let site = php_site(root.path(), &socket, Duration::from_secs(5));
        run_site(site, cfg(), true, |mut c, _tx| async move {
            let r = c.get("/x.php").await;
            assert_eq!(r.status, 502, "{what}");
            assert_eq!(r.header("Connection"), Some("close"), "{what}");
        })
        .await;
    }
}

#[tokio::test]
async fn silence_is_504_and_a_close_mid_answer_cuts_the_connection() {
    let root = php_root();
    let (_dir, socket) = fake(|mut s| {
        receive(&mut s, true);
        // Hold the connection open, saying nothing, until the processor gives up.
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
    });
    let site = php_site(root.path(), &socket, Duration::from_millis(300));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let t = std::time::Instant::now();
        assert_eq!(c.get("/x.php").await.status, 504);
        assert!(t.elapsed() < Duration::from_secs(5));
    })
    .await;
    // Headers and some body, then a close (or silence) before FCGI_END_REQUEST: the
    // client's connection is closed without the last chunk.
    for silent in [false, true] {
        let (_dir, socket) = fake(move |mut s| {
            receive(&mut s, true);
            let out = rec(STDOUT, b"Content-Type: text/plain\r\n\r\npartial");
            let _ = s.write_all(&out);
            if silent {
                let mut b = [0u8; 1];
                let _ = s.read(&mut b);
            }
        });
        let site = php_site(root.path(), &socket, Duration::from_millis(300));
        run_site(site, cfg(), true, |mut c, _tx| async move {
            let r = c.get("/x.php").await;
            assert_eq!(r.status, 200);
            assert_eq!(c.chunked().await, Err(b"partial".to_vec()), "silent: {silent}");
        })
        .await;
    }
}

#[tokio::test]
async fn index_fallback_and_local_redirects() {
    // Echoes SCRIPT_NAME and REQUEST_URI; `/go.php` redirects locally to `?to=`.
    let (_dir, socket) = fake(|mut s| {
        let got = receive(&mut s, true);
        let get = |k: &str| {
            got.params
                .iter()
                .find(|(n, _)| n == k.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let (name, query) = (get("SCRIPT_NAME"), get("QUERY_STRING"));
        let head = match query.strip_prefix("to=") {
            Some(to) if name == "/go.php" => format!("Location: {to}\r\n\r\n"),
            _ => "Content-Type: text/plain\r\n\r\n".to_string(),
        };
        let body = format!("{name} {}", get("REQUEST_URI"));
        let out = [rec(STDOUT, head.as_bytes()), rec(STDOUT, body.as_bytes()), end()].concat();
        let _ = s.write_all(&out);
    });
    let root = php_root();
    std::fs::write(root.path().join("index.php"), "").unwrap();
    std::fs::write(root.path().join("go.php"), "").unwrap();
    let mut site = php_site(root.path(), &socket, Duration::from_secs(5));
    site.index = vec!["index.php".into(), "index.html".into()];
    site.fallback = Some(crate::handler::Fallback::new("/index.php"));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let script = async |c: &mut Client, path: &str| {
            let r = c.get(path).await;
            assert_eq!(r.status, 200, "{path}");
            String::from_utf8(c.chunked().await.unwrap()).unwrap()
        };
        assert_eq!(script(&mut c, "/").await, "/index.php /");
        assert_eq!(script(&mut c, "/no/such/page").await, "/index.php /no/such/page");
        assert_eq!(script(&mut c, "/go.php?to=/x.php").await, "/x.php /x.php");
        // A local redirect to a static file; the directory with index.html keeps it.
        assert_eq!(c.get("/go.php?to=/a.txt").await.body, b"alpha");
        assert_eq!(c.get("/d/").await.body, b"<p>index</p>");
    })
    .await;
}

#[tokio::test]
async fn a_backends_content_length_frames_the_body() {
    // `/x.php?N` answers `Content-Length: N` and the body `hello`.
    let (_dir, socket) = fake(|mut s| {
        let got = receive(&mut s, true);
        let query = got
            .params
            .iter()
            .find(|(n, _)| n == b"QUERY_STRING")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let head = format!("Content-Type: text/plain\r\nContent-Length: {query}\r\n\r\n");
        let out = [rec(STDOUT, head.as_bytes()), rec(STDOUT, b"hello"), end()].concat();
        let _ = s.write_all(&out);
    });
    let root = php_root();
    let site = php_site(root.path(), &socket, Duration::from_secs(5));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let r = c.get("/x.php?5").await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert!(r.header("Transfer-Encoding").is_none());
        // More than announced: only what was announced, and the connection lives on.
        assert_eq!(c.get("/x.php?3").await.body, b"hel");
        c.send(b"HEAD /x.php?5 HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        assert_eq!(c.response(true).await.header("Content-Length"), Some("5"));
        assert_eq!(c.get("/a.txt").await.body, b"alpha");
        // Fewer: the bytes that came, then the close, never a next response.
        c.send(b"GET /x.php?10 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        let mut rest = c.rest().await;
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(rest[..head_end].starts_with(b"HTTP/1.1 200"));
        assert_eq!(rest.split_off(head_end), b"hello");
    })
    .await;
}
