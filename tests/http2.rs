//! HTTP/2 over TLS (ALPN `h2`, hyper's server in the processor): curl gets h2 and the
//! page, CGI and FastCGI answer over h2 as over HTTP/1.1, another environment's host
//! gets 421, many streams at once, a rapid-reset flood ends its own connection only,
//! an idle connection is closed, `http2 = false` offers only HTTP/1.1, and the ALPN
//! chosen is counted per environment.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::tls::{client_config, config, leaf, setup, tls_addr, Setup};
use crate::util::*;

/// Frame types and flags used here (RFC 9113 §6).
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const ACK: u8 = 1;

/// `curl --http2` to `url` on the TLS listener (names resolved to it), with `args`:
/// (stdout, the `-w` trailer "status version").
fn curl(addr: SocketAddr, args: &[&str], url: &str) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--http2", "--max-time", "20"]);
    for name in ["alice.test", "bob.test", "www.alice.test", "shop.test"] {
        cmd.arg("--resolve")
            .arg(format!("{name}:{}:127.0.0.1", addr.port()));
    }
    cmd.args(args)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(url.replace("PORT", &addr.port().to_string()));
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), trailer.to_string())
}

fn have_curl() -> bool {
    require_tool("openssl", "openssl").is_some() && require_tool("curl", "curl").is_some()
}

/// A TLS client offering only `h2`, connected to `addr` for `sni`.
fn h2_client(addr: SocketAddr, sni: &str) -> StreamOwned<ClientConnection, TcpStream> {
    let mut config = (*client_config(&[&rustls::version::TLS13], true)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.set_nodelay(true).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    tls.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    tls.flush().unwrap();
    assert_eq!(
        tls.conn.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server did not choose h2"
    );
    tls
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A HEADERS frame for `GET path` with `authority` (HPACK: static-table method, scheme,
/// literal path and authority without indexing, no Huffman).
fn get_headers(stream: u32, authority: &str, path: &str, end_stream: bool) -> Vec<u8> {
    let mut block = vec![0x82, 0x87];
    for (index, value) in [(4u8, path), (1u8, authority)] {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block)
}

/// The next frame: (type, flags, stream, payload); `None` at the end of the connection.
fn read_frame(tls: &mut impl Read) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

/// Reads frames (acknowledging the server's settings) until `done` says so or the
/// connection ends; whether `done` did.
fn read_until(
    tls: &mut StreamOwned<ClientConnection, TcpStream>,
    mut done: impl FnMut(u8, u8, u32, &[u8]) -> bool,
) -> bool {
    while let Some((kind, flags, stream, payload)) = read_frame(tls) {
        if kind == SETTINGS && flags & ACK == 0 {
            let _ = tls.write_all(&frame(SETTINGS, ACK, 0, &[]));
            let _ = tls.flush();
        }
        if kind == PING && flags & ACK == 0 {
            let _ = tls.write_all(&frame(PING, ACK, 0, &payload));
            let _ = tls.flush();
        }
        if done(kind, flags, stream, &payload) {
            return true;
        }
    }
    false
}

fn metric(server: &TestServer, name: &str, env: &str, label: Option<(&str, &str)>) -> f64 {
    let metrics = server.metrics_addr.expect("the metrics listener");
    let (status, text) = get_http10(metrics, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    let samples = parse_samples(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    samples
        .iter()
        .filter(|x| x.name == name && x.label("environment") == Some(env))
        .filter(|x| label.is_none_or(|(k, v)| x.label(k) == Some(v)))
        .map(|x| x.value)
        .sum()
}

fn start(s: &Setup, extra: &str) -> TestServer {
    TestServer::start(&config(s, extra))
}

#[test]
fn curl_gets_h2_and_the_page_and_421_for_another_environments_host() {
    require_root!();
    if !have_curl() {
        return;
    }
    let s = setup("h2_curl");
    let server = start(&s, "");
    let addr = tls_addr(&server);
    let (body, trailer) = curl(addr, &[], "https://alice.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("alice home", "200 2"));
    let (body, trailer) = curl(addr, &[], "https://bob.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("bob home", "200 2"));
    // Two requests on one h2 connection (SNI alice.test): alice's page, then bob's host
    // (as :authority) gets 421 and nothing of bob's.
    let (body, trailer) = curl(
        addr,
        &[
            "-o",
            "/dev/null",
            "https://alice.test:PORT/",
            "-H",
            "Host: bob.test",
        ],
        "https://alice.test:PORT/",
    );
    assert_eq!(trailer, "421 2", "{body}");
    let (body, trailer) = curl(addr, &["-H", "Host: bob.test"], "https://alice.test:PORT/");
    assert_eq!(trailer, "421 2");
    assert!(!body.contains("bob home"), "{body}");
    // The same over HTTP/1.1 on TLS.
    let (body, trailer) = curl(
        addr,
        &["--http1.1", "-H", "Host: bob.test"],
        "https://alice.test:PORT/",
    );
    assert_eq!(trailer, "421 1.1");
    assert!(!body.contains("bob home"), "{body}");
    // A wildcard name of alice's own certificate is served on alice's connection.
    let (body, trailer) = curl(addr, &["-H", "Host: www.alice.test"], "https://alice.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("alice home", "200 2"));
    // The certificate presented is alice's own.
    let tls = h2_client(addr, "alice.test");
    let cert = tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    assert!(cert == leaf(&s.alice.0));
}

#[test]
fn a_cgi_script_and_php_answer_over_h2() {
    require_root!();
    if !have_curl() {
        return;
    }
    let s = setup("h2_cgi");
    let script = b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nX-Script: yes\\r\\n\\r\\n'\nprintf '%s %s %s %s ' \"$SERVER_PROTOCOL\" \"$HTTPS\" \"$REQUEST_METHOD\" \"$HTTP_HOST\"\ncat\n";
    put(&s.root, "alice/env.cgi", script, ALICE, 0o755);
    let php_ok = crate::util::php::have_php_cgi();
    if php_ok {
        crate::util::php::php(
            &s.root.join("alice"),
            "hello.php",
            "<?php echo 'php ', $_SERVER['SERVER_PROTOCOL'], ' ', $_SERVER['HTTPS'], ' ', $_POST['a'] ?? '-';",
            ALICE,
        );
    }
    let run = crate::util::php::runtime_dir(&s.root);
    let mut text = config(&s, &format!("runtime_dir = \"{}\"", run.display())).replace(
        "server_alias = [\"*.alice.test\"]\n",
        "server_alias = [\"*.alice.test\"]\ncgi = [\".cgi\"]\n",
    );
    if php_ok {
        text.push_str(&crate::util::php::php_table("alice", ""));
    }
    let server = TestServer::start(&text);
    let addr = tls_addr(&server);
    let (body, trailer) = curl(
        addr,
        &["-i", "-d", "posted body"],
        "https://alice.test:PORT/env.cgi",
    );
    assert_eq!(trailer, "200 2", "{body}");
    assert!(body.contains("x-script: yes"), "{body}");
    assert!(
        body.ends_with(&format!(
            "HTTP/2.0 on POST alice.test:{} posted body",
            addr.port()
        )),
        "{body}"
    );
    let (body, trailer) = curl(addr, &[], "https://alice.test:PORT/env.cgi");
    assert_eq!(trailer, "200 2");
    assert!(
        body.ends_with(&format!("HTTP/2.0 on GET alice.test:{} ", addr.port())),
        "{body}"
    );
    if !php_ok {
        return;
    }
    let (body, trailer) = curl(addr, &["-d", "a=b"], "https://alice.test:PORT/hello.php");
    assert_eq!((body.as_str(), trailer.as_str()), ("php HTTP/2.0 on b", "200 2"));
    assert_eq!(
        metric(&server, "bulkhead_fastcgi_requests_total", "alice", None),
        1.0
    );
}

#[test]
fn many_streams_at_once_on_one_connection() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("h2_streams");
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    put(&s.root, "alice/big.txt", &big, ALICE, 0o644);
    let server = start(&s, "keep_alive_max_requests = 1000");
    let addr = tls_addr(&server);
    let mut tls = h2_client(addr, "alice.test");
    // 100 streams in one write, all answered on the one connection.
    let mut burst = Vec::new();
    let n = 100u32;
    for i in 0..n {
        burst.extend(get_headers(1 + 2 * i, "alice.test", "/", true));
    }
    tls.write_all(&burst).unwrap();
    tls.flush().unwrap();
    let mut ended = std::collections::HashSet::new();
    let mut bytes = 0usize;
    let ok = read_until(&mut tls, |kind, flags, stream, payload| {
        if kind == DATA {
            bytes += payload.len();
        }
        if (kind == DATA || kind == HEADERS) && flags & END_STREAM != 0 {
            ended.insert(stream);
        }
        assert_ne!(kind, GOAWAY, "GOAWAY {payload:?}");
        ended.len() == n as usize
    });
    assert!(ok, "only {} of {n} streams answered", ended.len());
    assert_eq!(bytes, n as usize * "alice home".len());
    // And a large file over h2, checked whole by curl.
    if have_curl() {
        let (body, trailer) = curl(addr, &[], "https://alice.test:PORT/big.txt");
        assert_eq!(trailer, "200 2");
        assert!(body.as_bytes() == big.as_slice(), "{} bytes", body.len());
    }
}

#[test]
fn a_rapid_reset_flood_ends_its_connection_and_harms_no_other_client() {
    require_root!();
    if !have_curl() {
        return;
    }
    let s = setup("h2_rapid_reset");
    // No request budget: the reset budget is what ends the flood.
    let server = start(&s, "keep_alive_max_requests = 0");
    let addr = tls_addr(&server);
    let mut tls = h2_client(addr, "alice.test");
    let t0 = Instant::now();
    // HEADERS then RST_STREAM(CANCEL), 1000 times, in writes of 50 pairs.
    let mut sent = 0u32;
    'flood: for batch in 0..20u32 {
        let mut burst = Vec::new();
        for i in 0..50u32 {
            let id = 1 + 2 * (batch * 50 + i);
            burst.extend(get_headers(id, "alice.test", "/", true));
            burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        if tls.write_all(&burst).and_then(|()| tls.flush()).is_err() {
            break 'flood;
        }
        sent += 50;
    }
    let mut goaway = None;
    read_until(&mut tls, |kind, _, _, payload| {
        if kind == GOAWAY && payload.len() >= 8 {
            goaway = Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
        false
    });
    // The connection closed well within the timeouts (the reads ended before the
    // client's 10 s read timeout), after GOAWAY(ENHANCE_YOUR_CALM) when it arrived
    // before the close (with the flood still unread the kernel may reset instead).
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(
        goaway.is_none_or(|code| code == 0xb),
        "GOAWAY {goaway:?} after {sent} resets"
    );
    // Another client, and alice's next one, are served.
    let (body, trailer) = curl(addr, &[], "https://alice.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("alice home", "200 2"));
    let (body, trailer) = curl(addr, &[], "https://bob.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("bob home", "200 2"));
    assert!(!server.log().contains("panicked"));
}

#[test]
fn an_idle_h2_connection_is_closed_after_keep_alive_timeout() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("h2_idle");
    let server =
        TestServer::start(&config(&s, "").replace("keep_alive_timeout = 5", "keep_alive_timeout = 1"));
    let addr = tls_addr(&server);
    let mut tls = h2_client(addr, "alice.test");
    tls.write_all(&get_headers(1, "alice.test", "/", true)).unwrap();
    tls.flush().unwrap();
    let answered = read_until(&mut tls, |kind, flags, stream, _| {
        stream == 1 && kind == DATA && flags & END_STREAM != 0
    });
    assert!(answered);
    let idle = Instant::now();
    let mut goaway = false;
    read_until(&mut tls, |kind, _, _, _| {
        goaway |= kind == GOAWAY;
        false
    });
    let waited = idle.elapsed();
    assert!(goaway, "closed without GOAWAY");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

#[test]
fn http2_off_offers_only_http_1_1() {
    require_root!();
    if !have_curl() {
        return;
    }
    let s = setup("h2_off");
    let server = start(&s, "http2 = false");
    let addr = tls_addr(&server);
    let (body, trailer) = curl(addr, &[], "https://alice.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("alice home", "200 1.1"));
}

#[test]
fn the_alpn_chosen_is_counted_per_environment() {
    require_root!();
    if !have_curl() {
        return;
    }
    let s = setup("h2_metrics");
    let server = start(&s, "");
    let addr = tls_addr(&server);
    curl(addr, &[], "https://alice.test:PORT/");
    curl(addr, &[], "https://alice.test:PORT/");
    curl(addr, &["--http1.1"], "https://alice.test:PORT/");
    let (_, trailer) = curl(addr, &["-H", "Host: bob.test"], "https://alice.test:PORT/");
    assert_eq!(trailer, "421 2");
    curl(addr, &[], "https://bob.test:PORT/");
    let alpn = |env: &str, p: &str| metric(&server, "bulkhead_tls_handshakes_total", env, Some(("alpn", p)));
    let settled = poll(Duration::from_secs(5), || {
        (alpn("alice", "h2") >= 3.0).then_some(())
    });
    assert!(
        settled.is_some(),
        "alice's h2 handshakes: {}",
        alpn("alice", "h2")
    );
    assert_eq!(alpn("alice", "http/1.1"), 1.0);
    assert_eq!(alpn("bob", "h2"), 1.0);
    let misdirected = poll(Duration::from_secs(5), || {
        let m = metric(&server, "bulkhead_misdirected_requests_total", "alice", None);
        (m >= 1.0).then_some(m)
    });
    assert_eq!(misdirected, Some(1.0));
    // ?json says the same.
    let r = get(server.addr, "alice.test", "/server-status?json");
    assert_eq!(r.status, 200, "{}", r.text());
    let json: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    let envs = json["environments"].as_array().expect("environments");
    let alice = envs.iter().find(|e| e["name"] == "alice").expect("alice");
    assert_eq!(alice["tls"]["alpn_h2"], 3, "{alice}");
}

#[test]
fn another_vhost_of_the_same_environment_is_served_only_if_the_certificate_covers_it() {
    require_root!();
    if !have_curl() {
        return;
    }
    let s = setup("h2_same_env");
    put(&s.root, "blog/index.html", b"blog home", ALICE, 0o644);
    put(&s.root, "shop/index.html", b"shop home", ALICE, 0o644);
    let pki_dir = s.root.join("pki2");
    std::fs::create_dir_all(&pki_dir).unwrap();
    chmod(&pki_dir, 0o755);
    let (shop_crt, shop_key) = crate::tls::Pki::new(&pki_dir).issue("shop", &["shop.test"], ALICE);
    // Both in alice's environment: blog.alice.test (covered by alice's *.alice.test,
    // no certificate of its own) and shop.test (its own certificate only).
    let text = format!(
        "{}\n[[vhosts]]\nserver_name = \"blog.alice.test\"\nenvironment = \"alice\"\ndocument_root = \"{}\"\n\n[[vhosts]]\nserver_name = \"shop.test\"\nenvironment = \"alice\"\ndocument_root = \"{}\"\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n",
        config(&s, ""),
        s.root.join("blog").display(),
        s.root.join("shop").display(),
        shop_crt.display(),
        shop_key.display(),
    );
    let server = TestServer::start(&text);
    let addr = tls_addr(&server);
    let url = "https://alice.test:PORT/";
    for proto in ["--http2", "--http1.1"] {
        let v = if proto == "--http2" { "2" } else { "1.1" };
        let (body, trailer) = curl(addr, &[proto, "-H", "Host: blog.alice.test"], url);
        assert_eq!(
            (body.as_str(), trailer.as_str()),
            ("blog home", &*format!("200 {v}"))
        );
        let (body, trailer) = curl(addr, &[proto, "-H", "Host: shop.test"], url);
        assert_eq!(trailer, format!("421 {v}"), "{body}");
        assert!(!body.contains("shop home"), "{body}");
    }
    let (body, trailer) = curl(addr, &[], "https://shop.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("shop home", "200 2"));
}

#[test]
fn an_h2_download_running_across_a_reload_completes() {
    require_root!();
    if !have_curl() {
        return;
    }
    let s = setup("h2_reload");
    let size: u64 = 8 << 20;
    sparse_file(&s.root, "alice/big.bin", size, ALICE, 0o644);
    let server = start(&s, "");
    let addr = tls_addr(&server);
    let port = addr.port().to_string();
    // About 4 s at 2 MB/s, over HTTP/2.
    let download = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--http2",
            "--limit-rate",
            "2M",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
        ])
        .arg("--resolve")
        .arg(format!("alice.test:{port}:127.0.0.1"))
        .args(["-w", "%{http_code} %{http_version} %{size_download}"])
        .arg(format!("https://alice.test:{port}/big.bin"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(800));
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(server
        .wait_for_log("reload: new generation starting", Duration::from_secs(10))
        .is_some());
    // New connections are served by the new generation meanwhile.
    let (body, trailer) = curl(addr, &[], "https://alice.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("alice home", "200 2"));
    let out = download.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, format!("200 2 {size}"), "the download across the reload");
}

#[test]
fn a_continuation_flood_is_cut_off_at_the_header_list_limit() {
    require_root!();
    if !have_curl() {
        return;
    }
    let s = setup("h2_continuation");
    let server = start(&s, "");
    let addr = tls_addr(&server);
    let mut tls = h2_client(addr, "alice.test");
    // HEADERS without END_HEADERS, then CONTINUATION frames of literal fields (16 KiB
    // each) that never end: 4 MiB in all if the server lets them in.
    let mut start = get_headers(1, "alice.test", "/", true);
    start[4] = END_STREAM; // no END_HEADERS
    tls.write_all(&start).unwrap();
    let mut block = Vec::new();
    while block.len() < 16 * 1024 - 130 {
        block.extend([0x00, 3]);
        block.extend_from_slice(b"x-a");
        block.push(120);
        block.extend(std::iter::repeat_n(b'v', 120));
    }
    let continuation = frame(9, 0, 1, &block);
    let t0 = Instant::now();
    let mut sent = 0usize;
    for _ in 0..256 {
        if tls.write_all(&continuation).and_then(|()| tls.flush()).is_err() {
            break;
        }
        sent += continuation.len();
    }
    // The server ends the connection (GOAWAY, or a reset) instead of decoding on.
    let mut seen = Vec::new();
    read_until(&mut tls, |kind, _, _, _| {
        seen.push(kind);
        false
    });
    eprintln!("sent {sent} bytes of CONTINUATION; frames seen {seen:?}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(
        seen.contains(&GOAWAY) || sent < 4 << 20,
        "4 MiB of CONTINUATION taken; frames seen {seen:?}"
    );
    let (body, trailer) = curl(addr, &[], "https://alice.test:PORT/");
    assert_eq!((body.as_str(), trailer.as_str()), ("alice home", "200 2"));
}

#[test]
fn keep_alive_max_requests_ends_an_h2_connection_with_goaway() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("h2_max_requests");
    let server = start(&s, "keep_alive_max_requests = 3");
    let addr = tls_addr(&server);
    let mut tls = h2_client(addr, "alice.test");
    let mut answered = 0;
    let mut goaway = false;
    for i in 0..3u32 {
        tls.write_all(&get_headers(1 + 2 * i, "alice.test", "/", true))
            .unwrap();
        tls.flush().unwrap();
        read_until(&mut tls, |kind, flags, stream, _| {
            goaway |= kind == GOAWAY;
            let done = stream == 1 + 2 * i && kind == DATA && flags & END_STREAM != 0;
            answered += usize::from(done);
            done
        });
    }
    assert_eq!(answered, 3, "the three requests allowed are answered");
    read_until(&mut tls, |kind, _, _, _| {
        goaway |= kind == GOAWAY;
        false
    });
    assert!(goaway, "no GOAWAY after keep_alive_max_requests");
}
