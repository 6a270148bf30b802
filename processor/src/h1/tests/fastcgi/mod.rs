//! FastCGI through the connection: a real `/usr/bin/php-cgi` on a Unix socket of the
//! test's own (scripts, bodies, headers, streaming, framing, keep-alive) here, and fake
//! backends in [`fake`] for what a real one does not do on demand (silence, a close
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

mod fake;

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
        requests_per_connection: 100,
        pool: crate::handler::fastcgi::pool::Pool::new(8),
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
