//! End-to-end tests of [`super::serve`] over real loopback sockets with raw clients:
//! the harness here, the protocol's behaviour in [`conn`], the static files' in [`files`],
//! FastCGI (a real `php-cgi` and fake backends) in [`fastcgi`].

mod conn;
mod fastcgi;
mod files;

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::serve;
use crate::handler::Site;
use crate::session::{ConnConfig, Outcome, Router, Stop};
use crate::transport::Transport;

const CLIENT_WAIT: Duration = Duration::from_secs(10);

struct TestRouter(Site);

impl Router for TestRouter {
    fn route(&self, host: Option<&str>) -> Option<&Site> {
        match host {
            Some(h) if h.eq_ignore_ascii_case("other.test") => None,
            _ => Some(&self.0),
        }
    }
}

fn cfg() -> ConnConfig {
    ConnConfig {
        keep_alive_timeout: Duration::from_secs(5),
        request_head_timeout: Duration::from_secs(5),
        limit_request_head: 8192,
        head_limits: common::head::Limits::head_only(8192),
        head_timeout: common::http::rate::RateTimeout::fixed(Duration::from_secs(5)),
    }
}

/// A document root with a few files.
fn docroot() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("a.txt"), "alpha").unwrap();
    std::fs::write(root.join("b.txt"), "bravo").unwrap();
    std::fs::create_dir_all(root.join("d/sub")).unwrap();
    std::fs::write(root.join("d/index.html"), "<p>index</p>").unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), big).unwrap();
    dir
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = vec![0u8; 65536];
        let n = tokio::time::timeout(CLIENT_WAIT, self.s.read(&mut chunk))
            .await
            .expect("server answered in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// One response; `head_only` for HEAD (no body despite Content-Length).
    async fn response(&mut self, head_only: bool) -> Resp {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf).expect("valid response") {
                let status = resp.code.unwrap();
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let len = if head_only || status == 304 || status == 100 {
                    0
                } else {
                    len
                };
                while self.buf.len() < n + len {
                    assert!(self.fill().await > 0, "body cut short");
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Resp {
                    status,
                    headers,
                    body,
                };
            }
            assert!(
                self.fill().await > 0,
                "connection closed before a response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Everything until the server closes.
    async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes())
            .await;
        self.response(false).await
    }
}

/// Serve one connection (pre-reading the first head like a multiplexer when `preread`)
/// while `client` drives it; returns the outcome and what the client returned.
async fn run<T, F, Fut>(root: &Path, cfg: ConnConfig, preread: bool, client: F) -> (Outcome, T)
where
    F: FnOnce(Client, watch::Sender<Stop>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    run_site(Site::plain(1, "a.test", root.to_path_buf()), cfg, preread, client).await
}

/// [`run`] for a given site.
async fn run_site<T, F, Fut>(site: Site, cfg: ConnConfig, preread: bool, client: F) -> (Outcome, T)
where
    F: FnOnce(Client, watch::Sender<Stop>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    run_observed(site, cfg, preread, &crate::session::NoObserver, client).await
}

/// [`run_site`] with an observer of the connection's requests.
async fn run_observed<T, F, Fut>(
    site: Site,
    cfg: ConnConfig,
    preread: bool,
    observer: &dyn crate::session::Observer,
    client: F,
) -> (Outcome, T)
where
    F: FnOnce(Client, watch::Sender<Stop>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = TestRouter(site.clone());
    let (tx, mut rx) = watch::channel(Stop::Run);
    let server = async {
        let (mut stream, _) = listener.accept().await.unwrap();
        // Small socket buffers, so that a large response cannot sit in the kernel whole.
        nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &65536).unwrap();
        let mut buffered = Vec::new();
        let mut chunk = [0u8; 1024];
        while preread && common::head::head_end(&buffered).is_none() {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buffered.extend_from_slice(&chunk[..n]);
        }
        let mut transport = Transport::Plain(stream);
        serve(
            &mut transport,
            buffered,
            Some(&site),
            &router,
            &cfg,
            &mut rx,
            observer,
        )
        .await
    };
    let client = async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(65536).unwrap();
        let s = socket.connect(addr).await.unwrap();
        client(Client { s, buf: Vec::new() }, tx).await
    };
    tokio::join!(server, client)
}

/// An idle keep-alive connection's state is the connection loop's future: what a
/// request needs (files, CGI, FastCGI, error answers) is boxed while it runs, so the
/// loop stays small (1,536 bytes when this was written).
#[tokio::test]
async fn the_connection_loop_state_is_small() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let site = Site::plain(1, "a.test", std::path::PathBuf::from("/nonexistent"));
    let router = TestRouter(site.clone());
    let (_tx, mut rx) = watch::channel(Stop::Run);
    let cfg = cfg();
    let mut transport = Transport::Plain(stream);
    let observer = crate::session::NoObserver;
    let f = serve(
        &mut transport,
        Vec::new(),
        Some(&site),
        &router,
        &cfg,
        &mut rx,
        &observer,
    );
    let size = std::mem::size_of_val(&f);
    assert!(size <= 2048, "the connection loop's future is {size} bytes");
}
