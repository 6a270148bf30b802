//! Fake FastCGI backends (a Unix listener and a thread per connection in the test):
//! what they receive, and answers a real backend does not give on demand.

use super::*;

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

/// A listener at `path` that never accepts, with its backlog filled: the listener and
/// the connections that filled it.
fn full_backlog(path: &Path) -> Vec<OwnedFd> {
    use nix::sys::socket::{
        bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let addr = UnixAddr::new(path).unwrap();
    let listener = socket(AddressFamily::Unix, SockType::Stream, SockFlag::empty(), None).unwrap();
    bind(std::os::fd::AsRawFd::as_raw_fd(&listener), &addr).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let mut held = vec![listener];
    loop {
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match connect(std::os::fd::AsRawFd::as_raw_fd(&s), &addr) {
            Ok(()) => held.push(s),
            Err(nix::errno::Errno::EAGAIN) => return held,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(held.len() < 1000, "the backlog never filled");
    }
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
    // EAGAIN: a listener whose backlog is full.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("full.sock");
    let _full = full_backlog(&socket);
    let site = php_site(root.path(), &socket, Duration::from_secs(5));
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let t = std::time::Instant::now();
        assert_eq!(c.get("/x.php").await.status, 502);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "refused at once, not waited for"
        );
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

/// Counts what a connection reports of its FastCGI requests.
#[derive(Default)]
struct Counts {
    started: std::cell::Cell<u32>,
    active: std::cell::Cell<i32>,
    bad_gateway: std::cell::Cell<u32>,
    timeouts: std::cell::Cell<u32>,
}

impl crate::session::Observer for Counts {
    fn started(&self, _: &Site) {}
    fn completed(&self, _: &crate::session::Completed<'_>) {}
    fn fastcgi_started(&self) {
        self.started.set(self.started.get() + 1);
        self.active.set(self.active.get() + 1);
    }
    fn fastcgi_done(&self, failure: Option<crate::session::FastcgiFailure>) {
        use crate::session::FastcgiFailure::*;
        self.active.set(self.active.get() - 1);
        match failure {
            Some(BadGateway) => self.bad_gateway.set(self.bad_gateway.get() + 1),
            Some(Timeout) => self.timeouts.set(self.timeouts.get() + 1),
            None => {}
        }
    }
}

#[tokio::test]
async fn requests_are_counted() {
    // `?ok`: an answer; `?cut`: headers, then a close; `?slow`: headers, then silence;
    // `?garbage`: a bad record.
    let (_dir, socket) = fake(|mut s| {
        let got = receive(&mut s, true);
        let query = got
            .params
            .iter()
            .find(|(n, _)| n == b"QUERY_STRING")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let head = rec(STDOUT, b"Content-Type: text/plain\r\n\r\nbody");
        let out = match query.as_str() {
            "ok" => [head, end()].concat(),
            "garbage" => vec![9; 8],
            _ => head,
        };
        let _ = s.write_all(&out);
        if query == "slow" {
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        }
    });
    let root = php_root();
    let counts = Counts::default();
    let counted = |path: &'static str| {
        let site = php_site(root.path(), &socket, Duration::from_millis(300));
        run_observed(site, cfg(), true, &counts, move |mut c, _tx| async move {
            let r = c.get(path).await;
            let _ = c.chunked().await;
            r.status
        })
    };
    assert_eq!(counted("/x.php?ok").await.1, 200);
    assert_eq!(counted("/x.php?cut").await.1, 200);
    assert_eq!(counted("/x.php?slow").await.1, 200);
    assert_eq!(counted("/x.php?garbage").await.1, 502);
    let missing = php_site(
        root.path(),
        Path::new("/nonexistent.sock"),
        Duration::from_secs(1),
    );
    let (_, status) = run_observed(missing, cfg(), true, &counts, |mut c, _tx| async move {
        c.get("/x.php").await.status
    })
    .await;
    assert_eq!(status, 502);
    assert_eq!(
        (
            counts.started.get(),
            counts.active.get(),
            counts.bad_gateway.get(),
            counts.timeouts.get()
        ),
        (5, 0, 3, 1)
    );
}

/// What a keeping fake backend saw of each request: its connection's number, the
/// `FCGI_BEGIN_REQUEST` flags and the method.
type Seen = Arc<std::sync::Mutex<Vec<(usize, u8, String)>>>;

/// A fake backend that serves requests on a connection until it closes, or after each
/// one when not asked to keep it (and always after `per_connection` of them); answers
/// with its connection's number. Sets `closed` when a connection ends at our side.
fn keeping_backend(
    per_connection: usize,
) -> (
    tempfile::TempDir,
    PathBuf,
    Seen,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen: Seen = Default::default();
    let closed = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (seen.clone(), closed.clone());
    let (dir, socket) = fake(move |mut s| {
        let id = conns.fetch_add(1, Ordering::SeqCst);
        for _ in 0..per_connection {
            let Some((kind, begin)) = read_record(&mut s) else {
                c2.fetch_add(1, Ordering::SeqCst);
                return;
            };
            assert_eq!(kind, record::BEGIN_REQUEST);
            let mut params = Vec::new();
            loop {
                let (kind, c) = read_record(&mut s).unwrap();
                assert_eq!(kind, record::PARAMS);
                if c.is_empty() {
                    break;
                }
                params.extend(pairs(&c));
            }
            while !read_record(&mut s).unwrap().1.is_empty() {}
            let method = params
                .iter()
                .find(|(k, _)| k == b"REQUEST_METHOD")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            s2.lock().unwrap().push((id, begin[2], method));
            let mut out = rec(STDOUT, format!("Content-Type: text/plain\r\n\r\n{id}").as_bytes());
            out.extend(end());
            s.write_all(&out).unwrap();
            if begin[2] & record::KEEP_CONN == 0 {
                return;
            }
        }
    });
    (dir, socket, seen, closed)
}

/// The connection numbers of the answers of `requests` (a method and whether it has a
/// body), asked one after the other on one client connection.
async fn answers(c: &mut Client, requests: &[(&str, bool)]) -> Vec<String> {
    let mut got = Vec::new();
    for (method, body) in requests {
        let req = if *body {
            format!("{method} /x.php HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhi")
        } else {
            format!("{method} /x.php HTTP/1.1\r\nHost: a.test\r\n\r\n")
        };
        c.send(req.as_bytes()).await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{method}");
        got.push(String::from_utf8(c.chunked().await.unwrap()).unwrap());
    }
    got
}

/// Waits (at most `limit`) until the backend saw `n` connections end at our side: how
/// many it saw.
async fn closed_within(closed: &std::sync::atomic::AtomicUsize, n: usize, limit: Duration) -> usize {
    let t = std::time::Instant::now();
    let count = || closed.load(std::sync::atomic::Ordering::SeqCst);
    while count() < n && t.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    count()
}

fn with_per_connection(site: Site, n: u32) -> Site {
    let mut conf = (*site.cgi.fastcgi.clone().unwrap()).clone();
    conf.requests_per_connection = n;
    let mut site = site;
    site.cgi = site.cgi.clone().with_fastcgi(Some(Arc::new(conf)));
    site
}

#[tokio::test]
async fn safe_requests_without_a_body_share_a_kept_connection() {
    let (_dir, socket, seen, _closed) = keeping_backend(usize::MAX);
    let root = php_root();
    let site = php_site(root.path(), &socket, Duration::from_secs(10));
    // Another request with the backends throughout, as under load.
    let _busy = site.cgi.fastcgi.as_ref().unwrap().pool.begin().await.unwrap();
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let got = answers(
            &mut c,
            &[("GET", false), ("GET", false), ("POST", true), ("GET", false)],
        )
        .await;
        // The POST went over a connection of its own, not asked to be kept; the last
        // GET took the kept one again.
        assert_eq!(got, ["0", "0", "1", "0"]);
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let flags: Vec<u8> = seen.iter().map(|s| s.1).collect();
    let k = record::KEEP_CONN;
    assert_eq!(flags, [k, k, 0, k]);
}

#[tokio::test]
async fn a_kept_connection_the_backend_closed_is_retried_on_a_new_one() {
    // As php-cgi after its max_requests: one answer per connection, then the close,
    // whatever FCGI_KEEP_CONN said.
    let (_dir, socket, seen, _closed) = keeping_backend(1);
    let root = php_root();
    let site = php_site(root.path(), &socket, Duration::from_secs(10));
    let _busy = site.cgi.fastcgi.as_ref().unwrap().pool.begin().await.unwrap();
    run_site(site, cfg(), true, |mut c, _tx| async move {
        for round in 0..3 {
            let got = answers(&mut c, &[("GET", false), ("OPTIONS", false)]).await;
            assert_eq!(got.len(), 2, "round {round}");
            // Let the close arrive before the next request takes the connection, and
            // also not: both orders must answer.
            if round == 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
    assert_eq!(seen.lock().unwrap().len(), 6, "each request ran once");
}

#[tokio::test]
async fn requests_per_connection_bounds_a_kept_connection() {
    let (_dir, socket, _seen, closed) = keeping_backend(usize::MAX);
    let root = php_root();
    let site = with_per_connection(php_site(root.path(), &socket, Duration::from_secs(10)), 2);
    let _busy = site.cgi.fastcgi.as_ref().unwrap().pool.begin().await.unwrap();
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let got = answers(&mut c, &[("GET", false); 5]).await;
        assert_eq!(got, ["0", "0", "1", "1", "2"]);
    })
    .await;
    // The two connections that carried their two requests were closed by us.
    assert!(closed_within(&closed, 2, Duration::from_secs(5)).await >= 2);
}

#[tokio::test]
async fn one_request_per_connection_keeps_none() {
    let (_dir, socket, seen, _closed) = keeping_backend(usize::MAX);
    let root = php_root();
    let site = with_per_connection(php_site(root.path(), &socket, Duration::from_secs(10)), 1);
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let got = answers(&mut c, &[("GET", false); 3]).await;
        assert_eq!(got, ["0", "1", "2"]);
    })
    .await;
    assert!(
        seen.lock().unwrap().iter().all(|s| s.1 == 0),
        "never asked to keep"
    );
}

#[tokio::test]
async fn an_idle_kept_connection_is_closed_soon() {
    use crate::handler::fastcgi::pool::IDLE;
    let (_dir, socket, _seen, closed) = keeping_backend(usize::MAX);
    let root = php_root();
    let site = php_site(root.path(), &socket, Duration::from_secs(10));
    let conf = site.cgi.fastcgi.clone().unwrap();
    let _busy = conf.pool.begin().await.unwrap();
    run_site(site, cfg(), true, |mut c, _tx| async move {
        assert_eq!(answers(&mut c, &[("GET", false)]).await, ["0"]);
        assert_eq!(conf.pool.idle(), 1, "kept");
        // The sweeper closes it once it has been idle for IDLE: the backend is free
        // for another processor's requests.
        let t = std::time::Instant::now();
        assert_eq!(closed_within(&closed, 1, IDLE * 100).await, 1, "closed when idle");
        assert!(t.elapsed() >= IDLE / 2, "not at once: {:?}", t.elapsed());
        assert_eq!(conf.pool.idle(), 0);
        // And the next request connects again.
        assert_eq!(answers(&mut c, &[("GET", false)]).await, ["1"]);
    })
    .await;
}

#[tokio::test]
async fn a_lone_client_gets_a_connection_per_request() {
    // Nothing else with the backends: each answer's connection is closed at once (the
    // backend is free for anyone), though each was asked to be kept.
    let (_dir, socket, seen, closed) = keeping_backend(usize::MAX);
    let root = php_root();
    let site = php_site(root.path(), &socket, Duration::from_secs(10));
    let conf = site.cgi.fastcgi.clone().unwrap();
    run_site(site, cfg(), true, |mut c, _tx| async move {
        let got = answers(&mut c, &[("GET", false); 3]).await;
        assert_eq!(got, ["0", "1", "2"]);
        assert_eq!(conf.pool.idle(), 0);
    })
    .await;
    assert!(seen.lock().unwrap().iter().all(|s| s.1 == record::KEEP_CONN));
    assert_eq!(closed_within(&closed, 3, Duration::from_secs(5)).await, 3);
}

#[tokio::test]
async fn junk_on_an_idle_kept_connection_fails_one_request_and_frees_everything() {
    // A hostile backend (the tenant's own code): after its first answer it writes junk
    // on the kept connection while it waits in the pool. The request that takes it
    // gets a 502 (never another request's bytes, no panic), the connection is not
    // kept, and no slot stays taken.
    use std::sync::atomic::{AtomicUsize, Ordering};
    let conns = Arc::new(AtomicUsize::new(0));
    let (_dir, socket) = fake(move |mut s| {
        let id = conns.fetch_add(1, Ordering::SeqCst);
        loop {
            let Some((_, begin)) = read_record(&mut s) else {
                return;
            };
            while !read_record(&mut s).unwrap().1.is_empty() {}
            while !read_record(&mut s).unwrap().1.is_empty() {}
            let mut out = rec(STDOUT, format!("Content-Type: text/plain\r\n\r\n{id}").as_bytes());
            out.extend(end());
            if s.write_all(&out).is_err() {
                return;
            }
            if id == 0 {
                std::thread::sleep(Duration::from_millis(5));
                let _ = s.write_all(b"\xffjunk that is no record at all");
            }
            if begin[2] & record::KEEP_CONN == 0 {
                return;
            }
        }
    });
    let root = php_root();
    let site = php_site(root.path(), &socket, Duration::from_secs(10));
    let conf = site.cgi.fastcgi.clone().unwrap();
    let busy = conf.pool.begin().await.unwrap();
    let pool_conf = conf.clone();
    run_site(site, cfg(), true, |mut c, _tx| async move {
        assert_eq!(answers(&mut c, &[("GET", false)]).await, ["0"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.send(b"GET /x.php HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        // A failed backend answer ends the client's connection (as for any 502 here).
        assert_eq!(c.response(false).await.status, 502);
    })
    .await;
    assert_eq!(conf.pool.idle(), 0, "the broken connection is not kept");
    drop(busy);
    // Every slot is free again (8 at once, none waiting).
    let mut all = Vec::new();
    for _ in 0..8 {
        let f = tokio::time::timeout(Duration::from_secs(2), pool_conf.pool.begin())
            .await
            .expect("a slot stayed taken");
        all.push(f.unwrap());
    }
}
