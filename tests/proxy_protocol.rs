//! PROXY protocol listeners (`[server] proxy_protocol`, `proxy_protocol_from`): v1 and
//! v2 headers from a raw client carried into the access log and a CGI script's
//! REMOTE_ADDR/REMOTE_PORT/SERVER_ADDR/SERVER_PORT; a source outside the blocks, a
//! missing, malformed, truncated, oversized or late header refused with the server
//! still serving; the status page refusing a carried loopback client; a TLS listener
//! with a v2 header routed by SNI; the address kept through a hand-back to another
//! environment; Debian's HAProxy (`send-proxy-v2`, routing by Host) in front of two
//! instances on 127.0.0.2 and 127.0.0.3, each access log showing the real client.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::util::*;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A v1 header for TCP4 or TCP6.
fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A v2 PROXY header (command PROXY, TCP), with an ALPN TLV as HAProxy may send.
fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x21);
    let mut body = Vec::new();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            body.extend(s.ip().octets());
            body.extend(d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21);
            body.extend(s.ip().octets());
            body.extend(d.ip().octets());
        }
        _ => panic!("mixed families"),
    }
    body.extend(src.port().to_be_bytes());
    body.extend(dst.port().to_be_bytes());
    body.extend([0x01, 0, 8]);
    body.extend(b"http/1.1");
    h.extend((body.len() as u16).to_be_bytes());
    h.extend(body);
    h
}

/// Sends `bytes` on a fresh connection and reads to the close (or 10 s).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get_close(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// `header` then one request; the answer to the close.
fn through(addr: SocketAddr, header: &[u8], host: &str, path: &str) -> String {
    let mut bytes = header.to_vec();
    bytes.extend(get_close(host, path).as_bytes());
    exchange(addr, &bytes)
}

/// Waits until `p` has at least `n` lines; returns them.
fn wait_lines(p: &Path, n: usize) -> Vec<String> {
    poll(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= n).then_some(lines)
    })
    .unwrap_or_else(|| {
        let have = std::fs::read_to_string(p).unwrap_or_default();
        panic!("{} has fewer than {n} lines:\n{have}", p.display())
    })
}

/// Alice with a CGI script printing its addresses and an access log, on a PROXY
/// listener that takes headers from `from`.
fn alice_with_cgi(w: &Path, from: &str, status: &str) -> (String, PathBuf) {
    sites(w, 0o644);
    put(
        w,
        "alice/cgi-bin/addr.cgi",
        b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"remote=$REMOTE_ADDR:$REMOTE_PORT server=$SERVER_ADDR:$SERVER_PORT\"\n",
        ALICE,
        0o755,
    );
    let log = log_dir(w).join("alice.log");
    let vhost = format!(
        r#"
[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{a}"
access_log = "{l}"
cgi = [".cgi"]
cgi_dirs = ["/cgi-bin/"]
{status}"#,
        a = w.join("alice").display(),
        l = log.display()
    );
    let extra = format!("proxy_protocol = true\nproxy_protocol_from = {from}");
    (alice_config(&extra, &vhost), log)
}

#[test]
fn v1_and_v2_carry_the_client_into_the_access_log_and_cgi() {
    require_root!();
    let dir = Dir::new("v1_and_v2_carry_the_client_into_the_access_log_and_cgi");
    let w = dir.path();
    let (config, log) = alice_with_cgi(w, r#"["127.0.0.1/32", "::1/128"]"#, "");
    let server = TestServer::start(&config);
    let cases = [
        (
            v1(sa("192.0.2.7:40000"), sa("198.51.100.1:8088")),
            "192.0.2.7:40000 server=198.51.100.1:8088",
        ),
        (
            v2(sa("192.0.2.8:40001"), sa("198.51.100.2:8089")),
            "192.0.2.8:40001 server=198.51.100.2:8089",
        ),
        (
            v1(sa("[2001:db8::7]:40002"), sa("[2001:db8::1]:80")),
            "2001:db8::7:40002 server=2001:db8::1:80",
        ),
        (
            v2(sa("[2001:db8::8]:40003"), sa("[2001:db8::1]:443")),
            "2001:db8::8:40003 server=2001:db8::1:443",
        ),
    ];
    for (header, want) in &cases {
        let answer = through(server.addr, header, "alice.test", "/cgi-bin/addr.cgi");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}\n{}", server.log());
        assert!(answer.contains(&format!("remote={want}")), "{answer}");
        let answer = through(server.addr, header, "alice.test", "/");
        assert!(answer.ends_with("alice home"), "{answer}");
    }
    // A header whose first bytes come alone (the slow path), then the rest.
    let mut s = connect(server.addr);
    let header = v2(sa("192.0.2.9:1234"), sa("198.51.100.3:80"));
    s.write_all(&header[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&header[10..20]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&header[20..]).unwrap();
    s.write_all(get_close("alice.test", "/").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.ends_with("alice home"), "{out}");
    let lines = wait_lines(&log, 9);
    let clients: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        clients,
        [
            "192.0.2.7",
            "192.0.2.7",
            "192.0.2.8",
            "192.0.2.8",
            "2001:db8::7",
            "2001:db8::7",
            "2001:db8::8",
            "2001:db8::8",
            "192.0.2.9"
        ],
        "{lines:?}"
    );
}

/// Bad headers: closed without an answer, logged, no panic (the harness checks), and
/// the next good connection is served.
#[test]
fn no_valid_header_or_a_foreign_source_is_refused() {
    require_root!();
    let dir = Dir::new("no_valid_header_or_a_foreign_source_is_refused");
    let w = dir.path();
    let (config, log) = alice_with_cgi(w, r#"["127.0.0.1/32"]"#, "");
    let server = TestServer::start(&config);
    let good = v1(sa("192.0.2.7:40000"), sa("198.51.100.1:80"));
    // A source outside proxy_protocol_from, even with a valid header.
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr);
    let _ = s.write_all(&good);
    let _ = s.write_all(get_close("alice.test", "/").as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert!(
        server
            .wait_for_log("outside proxy_protocol_from refused", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log()
    );
    let mut oversized = V2_SIGNATURE.to_vec();
    oversized.extend([0x21, 0x11, 0xff, 0xff]);
    oversized.extend(vec![0u8; 4000]);
    let mut long_v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 80".to_vec();
    long_v1.resize(150, b' ');
    long_v1.extend(b"\r\n");
    let mut bad_version = v2(sa("192.0.2.7:1"), sa("192.0.2.8:2"));
    bad_version[12] = 0x11;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("no header", get_close("alice.test", "/").into_bytes()),
        (
            "a TLS hello",
            b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00".to_vec(),
        ),
        (
            "malformed v1",
            b"PROXY TCP4 192.0.2.999 1.2.3.4 1 2\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            "v1 with a bare CR",
            b"PROXY TCP4 192.0.2.7 1.2.3.4 1 2\rGET / HTTP/1.1\r\n\r\n".to_vec(),
        ),
        ("v1 over 107 bytes", long_v1),
        ("v2 oversized", oversized),
        ("v2 bad version", bad_version),
        ("truncated v1 then a close", b"PROXY TCP4 192.0.2.7 ".to_vec()),
        (
            "truncated v2 then a close",
            v2(sa("192.0.2.7:1"), sa("192.0.2.8:2"))[..20].to_vec(),
        ),
    ];
    for (what, bytes) in &bad {
        let answer = exchange(server.addr, bytes);
        assert!(answer.is_empty(), "{what}: answered {answer:?}");
    }
    // A header that never completes: closed after request_head_timeout (2 s).
    let started = Instant::now();
    let mut s = connect(server.addr);
    s.write_all(b"PROXY TCP4 192.0.2.7").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let waited = started.elapsed();
    assert!(out.is_empty());
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
    assert!(
        server
            .wait_for_log(
                "PROXY protocol: no complete header within request_head_timeout",
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        server.log()
    );
    for why in [
        "no PROXY protocol header",
        "v1 header",
        "v2 header",
        "within 107 bytes",
    ] {
        assert!(
            server.log().contains(why),
            "no log line with {why:?}:\n{}",
            server.log()
        );
    }
    // Still serving; only good requests were logged.
    let answer = through(server.addr, &good, "alice.test", "/");
    assert!(answer.ends_with("alice home"), "{answer}\n{}", server.log());
    let lines = wait_lines(&log, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("192.0.2.7 "), "{lines:?}");
}

/// The status page: a carried client is judged by `[status] allow` alone, and one that
/// claims loopback is never let in (it would be the proxy's host's loopback).
#[test]
fn status_trusts_a_carried_client_only_by_allow() {
    require_root!();
    let dir = Dir::new("status_trusts_a_carried_client_only_by_allow");
    let w = dir.path();
    let status = "\n[status]\nallow = [\"192.0.2.0/24\"]\nallow_users = [0]\nmetrics_listen = \"off\"\n";
    let (config, _log) = alice_with_cgi(w, r#"["127.0.0.1/32"]"#, status);
    let server = TestServer::start(&config);
    let dest = sa("198.51.100.1:80");
    let answer = through(
        server.addr,
        &v2(sa("192.0.2.7:1"), dest),
        "alice.test",
        "/server-status?auto",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}\n{}", server.log());
    for client in ["127.0.0.1:1", "198.51.100.1:2", "203.0.113.1:3"] {
        let answer = through(
            server.addr,
            &v2(sa(client), dest),
            "alice.test",
            "/server-status?auto",
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{client}: {answer}");
    }
    // The multiplexer's log line may reach the log just after its answer.
    assert!(
        server.wait_until(Duration::from_secs(5), || server.log().contains("looks local")),
        "{}",
        server.log()
    );
}

/// A keep-alive connection with a v2 header moves from alice to bob (a hand-back):
/// bob's access log shows the carried client, not the socket's.
#[test]
fn the_carried_address_survives_a_hand_back() {
    require_root!();
    let dir = Dir::new("the_carried_address_survives_a_hand_back");
    let w = dir.path();
    sites(w, 0o644);
    let logs = log_dir(w);
    let extra = "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]";
    let config = two_env_config(w, extra)
        .replace(
            "environment = \"alice\"\n",
            &format!(
                "environment = \"alice\"\naccess_log = \"{}\"\n",
                logs.join("alice.log").display()
            ),
        )
        .replace(
            "environment = \"bob\"\n",
            &format!(
                "environment = \"bob\"\naccess_log = \"{}\"\n",
                logs.join("bob.log").display()
            ),
        );
    let server = TestServer::start(&config);
    let mut s = connect(server.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&v2(sa("203.0.113.9:5555"), sa("198.51.100.1:80")))
        .unwrap();
    for (host, body) in [
        ("alice.test", "alice home"),
        ("bob.test", "bob home"),
        ("alice.test", "alice home"),
    ] {
        let r = get_on(&mut s, host, "/").unwrap_or_else(|| panic!("no answer for {host}\n{}", server.log()));
        assert_eq!((r.status, r.text()), (200, body.to_string()), "{host}");
    }
    let alice = wait_lines(&logs.join("alice.log"), 2);
    let bob = wait_lines(&logs.join("bob.log"), 1);
    for line in alice.iter().chain(&bob) {
        assert!(line.starts_with("203.0.113.9 "), "{line}");
    }
    assert!(!server.log().contains("hand-back refused"), "{}", server.log());
}

/// Accepts any certificate: the test checks which site answered.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A self-signed certificate for `names` and its key (owned by `uid`, 0600).
fn self_signed(dir: &Path, names: &[&str], uid: u32) -> (PathBuf, PathBuf) {
    let name = names[0];
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName={}", san.join(","))])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::os::unix::fs::chown(&key, Some(uid), Some(uid)).unwrap();
    chmod(&key, 0o600);
    chmod(&crt, 0o644);
    (crt, key)
}

/// `header`, then a TLS connection for `sni` and one request for it; the answer.
fn https_after(addr: SocketAddr, header: &[u8], sni: &str) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let mut conn =
        ClientConnection::new(Arc::new(config), ServerName::try_from(sni.to_owned()).unwrap()).unwrap();
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.write_all(header).map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(get_close(sni, "/").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[test]
fn a_tls_listener_reads_v2_then_routes_by_sni() {
    require_root!();
    let dir = Dir::new("a_tls_listener_reads_v2_then_routes_by_sni");
    let w = dir.path();
    sites(w, 0o644);
    let pki = w.join("pki");
    std::fs::create_dir(&pki).unwrap();
    chmod(&pki, 0o755);
    let (ac, ak) = self_signed(&pki, &["alice.test", "www.alice.test", "*.alice.test"], ALICE);
    let (bc, bk) = self_signed(&pki, &["bob.test"], BOB);
    let logs = log_dir(w);
    let extra =
        "listen_tls = [\"127.0.0.1:0\"]\nproxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]";
    let config = two_env_config(w, extra)
        .replace(
            "environment = \"alice\"\n",
            &format!(
                "environment = \"alice\"\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n",
                ac.display(),
                ak.display()
            ),
        )
        .replace(
            "environment = \"bob\"\n",
            &format!(
                "environment = \"bob\"\ntls_certificate = \"{}\"\ntls_key = \"{}\"\naccess_log = \"{}\"\n",
                bc.display(),
                bk.display(),
                logs.join("bob.log").display()
            ),
        );
    let server = TestServer::start(&config);
    let addr = server.tls_addr.expect("a TLS listener");
    let header = v2(sa("192.0.2.44:4444"), sa("198.51.100.1:443"));
    for (sni, body) in [("alice.test", "alice home"), ("bob.test", "bob home")] {
        let answer =
            https_after(addr, &header, sni).unwrap_or_else(|e| panic!("{sni}: {e}\n{}", server.log()));
        assert!(answer.ends_with(body), "{sni}: {answer}");
    }
    let answer = https_after(
        addr,
        &v1(sa("192.0.2.45:4445"), sa("198.51.100.1:443")),
        "bob.test",
    )
    .unwrap();
    assert!(answer.ends_with("bob home"), "{answer}");
    let lines = wait_lines(&logs.join("bob.log"), 2);
    assert!(lines[0].starts_with("192.0.2.44 "), "{lines:?}");
    assert!(lines[1].starts_with("192.0.2.45 "), "{lines:?}");
    // Without a header a hello is refused.
    assert!(https_after(addr, b"", "bob.test").is_err());
}

/// HAProxy, killed on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One bulkhead instance on `ip` serving `env`'s site only, on a PROXY listener.
fn instance(w: &Path, ip: &str, env: &str, uid: u32) -> (TestServer, PathBuf) {
    let log = w.join("logs").join(format!("{env}.log"));
    let config = format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["{ip}:0"]
min_multiplexers = 1
request_head_timeout = 2
proxy_protocol = true
proxy_protocol_from = ["127.0.0.1/32"]

[environments.{env}]
user = {uid}
group = {uid}
min_processors = 1
max_processors = 2

[[vhosts]]
server_name = "{env}.test"
environment = "{env}"
document_root = "{root}"
access_log = "{l}"
"#,
        root = w.join(env).display(),
        l = log.display()
    );
    (TestServer::start(&config), log)
}

#[test]
fn haproxy_in_front_of_two_instances_with_send_proxy_v2() {
    require_root!();
    let Some(haproxy) = require_tool("haproxy", "haproxy") else {
        return;
    };
    let dir = Dir::new("haproxy_in_front_of_two_instances_with_send_proxy_v2");
    let w = dir.path();
    sites(w, 0o644);
    log_dir(w);
    let (a, alice_log) = instance(w, "127.0.0.2", "alice", ALICE);
    let (b, bob_log) = instance(w, "127.0.0.3", "bob", BOB);
    // The deployed example's shape: a host map, one backend per bulkhead host.
    let map = w.join("hosts.map");
    std::fs::write(&map, "alice.test be_host_a\nbob.test be_host_b\n").unwrap();
    let port = free_port();
    let cfg = w.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            r#"
global
    maxconn 100

defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s

frontend www
    bind 127.0.0.1:{port}
    use_backend %[req.hdr(host),lower,word(1,:),map({map},be_host_a)]

backend be_host_a
    server a {a} send-proxy-v2 check inter 100ms

backend be_host_b
    server b {b} send-proxy-v2 check inter 100ms
"#,
            map = map.display(),
            a = a.addr,
            b = b.addr
        ),
    )
    .unwrap();
    let check = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _proxy = Haproxy(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let up = poll(Duration::from_secs(10), || TcpStream::connect(front).ok());
    assert!(up.is_some(), "haproxy did not listen on {front}");
    // A few health checks (v2's LOCAL command, then a close) have come and gone.
    std::thread::sleep(Duration::from_millis(500));
    let client = Ipv4Addr::new(127, 0, 0, 5);
    for (host, body) in [
        ("alice.test", "alice home"),
        ("bob.test", "bob home"),
        ("bob.test", "bob home"),
    ] {
        let mut s = connect_from(client, front);
        let r = get_on(&mut s, host, "/")
            .unwrap_or_else(|| panic!("no answer for {host}\n{}\n{}", a.log(), b.log()));
        assert_eq!((r.status, r.text()), (200, body.to_string()), "{host}");
    }
    let alice = wait_lines(&alice_log, 1);
    let bob = wait_lines(&bob_log, 2);
    assert_eq!(alice.len(), 1, "{alice:?}");
    for line in alice.iter().chain(&bob) {
        assert!(line.starts_with("127.0.0.5 "), "{line}");
    }
    // The health checks were taken as the proxy's own connections, never refused.
    for server in [&a, &b] {
        assert!(!server.log().contains("PROXY protocol:"), "{}", server.log());
    }
}
