//! HTTPS with each tenant's own key: certificates from a private CA made with the
//! `openssl` command, clients built on rustls (the presented certificate compared byte
//! for byte with the vhost's file), `openssl s_client` for the old protocol versions.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::util::processes::fd_links;
use crate::util::*;

/// A private CA and a certificate per environment, in `dir`.
pub(crate) struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub(crate) fn new(dir: &Path) -> Pki {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=bulkhead test CA"];
        args.extend(ec);
        args.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        openssl(dir, &args);
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// `stem.crt` (signed by the CA, for `names`) and `stem.key` (owned by `uid`, 0600).
    pub(crate) fn issue(&self, stem: &str, names: &[&str], uid: u32) -> (PathBuf, PathBuf) {
        let ext = format!(
            "subjectAltName={}\n",
            names
                .iter()
                .map(|n| format!("DNS:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        std::fs::write(self.dir.join(format!("{stem}.ext")), ext).unwrap();
        let (key, csr, crt) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
        );
        let subj = format!("/CN={}", names[0]);
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &subj,
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{stem}.ext"),
                "-out",
                &crt,
            ],
        );
        let key = self.dir.join(key);
        std::os::unix::fs::chown(&key, Some(uid), Some(uid)).unwrap();
        chmod(&key, 0o600);
        (self.dir.join(crt), key)
    }
}

/// The DER of the leaf in a PEM chain file.
pub(crate) fn leaf(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().as_ref().to_vec()
}

/// Accepts any certificate: the tests compare the presented one with the file.
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

pub(crate) fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    sni: bool,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    config.enable_sni = sni;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What one HTTPS exchange saw.
struct Seen {
    cert: Vec<u8>,
    version: Option<rustls::ProtocolVersion>,
    alpn: Option<Vec<u8>>,
    resumed: bool,
    response: String,
}

/// A TLS connection to `addr` for `sni` (`None`: no server name sent), one request with
/// `host`, the answer read to the close.
fn https(addr: SocketAddr, sni: Option<&str>, host: &str) -> Result<Seen, String> {
    https_with(
        addr,
        sni,
        host,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        None,
    )
}

/// [`https`] with the versions offered and, when `split` is set, the ClientHello sent
/// by hand in records of at most that many bytes, each its own TCP write.
fn https_with(
    addr: SocketAddr,
    sni: Option<&str>,
    host: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    split: Option<usize>,
) -> Result<Seen, String> {
    https_on(addr, client_config(versions, sni.is_some()), sni, host, split)
}

/// [`https_with`] with a given client configuration (its session store included).
fn https_on(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sni: Option<&str>,
    host: &str,
    split: Option<usize>,
) -> Result<Seen, String> {
    let name = ServerName::try_from(sni.unwrap_or("unnamed.test").to_owned()).unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.set_nodelay(true).unwrap();
    if let Some(size) = split {
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        for piece in hello[5..].chunks(size) {
            let mut record = vec![22, 3, 1];
            record.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            record.extend_from_slice(piece);
            sock.write_all(&record).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A close without close_notify still ends a Connection: close answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(Seen {
        cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default(),
        version: conn.protocol_version(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        response: String::from_utf8_lossy(&response).into_owned(),
    })
}

/// Files and a config: alice (`alice.test`, `*.alice.test`) and bob (`bob.test`), each
/// with its own certificate and key.
pub(crate) struct Setup {
    _dir: Dir,
    pub(crate) pki_dir: PathBuf,
    pub(crate) alice: (PathBuf, PathBuf),
    pub(crate) bob: (PathBuf, PathBuf),
    pub(crate) root: PathBuf,
}

pub(crate) fn setup(test: &str) -> Setup {
    setup_in(test, None)
}

/// [`setup`] with the certificates and keys in `pki_dir` when given.
fn setup_in(test: &str, pki_dir: Option<&Path>) -> Setup {
    let dir = Dir::new(test);
    sites(dir.path(), 0o644);
    let pki_dir = pki_dir.map_or_else(|| dir.path().join("pki"), Path::to_path_buf);
    std::fs::create_dir_all(&pki_dir).unwrap();
    chmod(&pki_dir, 0o755);
    let pki = Pki::new(&pki_dir);
    let alice = pki.issue("alice", &["alice.test", "*.alice.test"], ALICE);
    let bob = pki.issue("bob", &["bob.test"], BOB);
    Setup {
        root: dir.path().to_path_buf(),
        _dir: dir,
        pki_dir,
        alice,
        bob,
    }
}

pub(crate) fn config(s: &Setup, extra_server: &str) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
min_multiplexers = 2
request_head_timeout = 3
keep_alive_timeout = 5
{extra_server}

[environments.alice]
user = {ALICE}
group = {ALICE}
min_processors = 2
max_processors = 2

[environments.bob]
user = {BOB}
group = {BOB}
min_processors = 1
max_processors = 2

[[vhosts]]
server_name = "alice.test"
server_alias = ["*.alice.test"]
environment = "alice"
document_root = "{a}"
tls_certificate = "{ac}"
tls_key = "{ak}"

[[vhosts]]
server_name = "bob.test"
environment = "bob"
document_root = "{b}"
tls_certificate = "{bc}"
tls_key = "{bk}"
"#,
        a = s.root.join("alice").display(),
        b = s.root.join("bob").display(),
        ac = s.alice.0.display(),
        ak = s.alice.1.display(),
        bc = s.bob.0.display(),
        bk = s.bob.1.display(),
    )
}

pub(crate) fn tls_addr(server: &TestServer) -> SocketAddr {
    server.tls_addr.expect("a tls listener in the ready line")
}

#[track_caller]
fn assert_served(seen: &Seen, cert: &Path, body: &str) {
    assert!(
        seen.cert == leaf(cert),
        "presented certificate is not {}",
        cert.display()
    );
    assert!(seen.response.starts_with("HTTP/1.1 200"), "{}", seen.response);
    assert!(seen.response.ends_with(body), "{}", seen.response);
}

#[test]
fn each_name_gets_its_own_environments_certificate_and_page() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_names");
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    let seen = https(addr, Some("alice.test"), "alice.test").unwrap();
    assert_served(&seen, &s.alice.0, "alice home");
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_served(
        &https(addr, Some("bob.test"), "bob.test").unwrap(),
        &s.bob.0,
        "bob home",
    );
    // A wildcard alias, mixed case, a trailing Host port.
    assert_served(
        &https(addr, Some("www.alice.test"), "www.alice.test").unwrap(),
        &s.alice.0,
        "alice home",
    );
    assert_served(
        &https(addr, Some("BoB.TeSt"), "bob.test:443").unwrap(),
        &s.bob.0,
        "bob home",
    );
    // No server name, or an unknown one: the default (the first vhost with a
    // certificate), never another tenant's.
    assert_served(
        &https(addr, None, "alice.test").unwrap(),
        &s.alice.0,
        "alice home",
    );
    assert_served(
        &https(addr, Some("nowhere.test"), "nowhere.test").unwrap(),
        &s.alice.0,
        "alice home",
    );
    // Plain HTTP still works beside it.
    ok(&server, "bob.test", "bob home", "plain HTTP beside TLS");
}

#[test]
fn a_hello_split_over_records_and_segments_routes() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_split");
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    let both: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    // Records of 40 bytes (a handful, each its own segment), of 100, and two records.
    for size in [40, 100, 200] {
        let seen = https_with(addr, Some("bob.test"), "bob.test", both, Some(size)).unwrap();
        assert_served(&seen, &s.bob.0, "bob home");
    }
}

#[test]
fn only_tls_1_2_and_1_3() {
    require_root!();
    let Some(openssl_bin) = require_tool("openssl", "openssl") else {
        return;
    };
    let s = setup("tls_versions");
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    let v12 = https_with(
        addr,
        Some("alice.test"),
        "alice.test",
        &[&rustls::version::TLS12],
        None,
    )
    .unwrap();
    assert_eq!(v12.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_served(&v12, &s.alice.0, "alice home");
    let v13 = https_with(
        addr,
        Some("bob.test"),
        "bob.test",
        &[&rustls::version::TLS13],
        None,
    )
    .unwrap();
    assert_eq!(v13.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_served(&v13, &s.bob.0, "bob home");
    for old in ["-tls1", "-tls1_1"] {
        let out = Command::new(&openssl_bin)
            .args([
                "s_client",
                old,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-servername",
                "alice.test",
                "-connect",
            ])
            .arg(addr.to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{old} was served:\n{text}");
        // The hello went out and an alert came back: refused by the server, not the client.
        assert!(text.contains("SSL alert number"), "{old}:\n{text}");
        assert!(
            !text.contains("BEGIN CERTIFICATE") && text.contains("Cipher is (NONE)"),
            "{old}:\n{text}"
        );
    }
}

#[test]
fn sessions_resume_across_the_environments_processors() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_resume");
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    assert!(server.wait_until(Duration::from_secs(10), || server.processors_of(ALICE).len() == 2));
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let config = client_config(versions, true);
        let first = https_on(addr, config.clone(), Some("alice.test"), "alice.test", None).unwrap();
        assert!(!first.resumed);
        // Alice has two processors: whichever takes each connection, the session resumes.
        for i in 0..6 {
            let again = https_on(addr, config.clone(), Some("alice.test"), "alice.test", None).unwrap();
            assert_served(&again, &s.alice.0, "alice home");
            assert!(again.resumed, "{versions:?}: connection {i} was not resumed");
        }
    }
}

#[test]
fn another_environments_host_on_a_tls_connection_is_421() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_421");
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    let seen = https(addr, Some("alice.test"), "bob.test").unwrap();
    assert_eq!(seen.cert, leaf(&s.alice.0));
    assert!(
        seen.response.starts_with("HTTP/1.1 421 Misdirected Request"),
        "{}",
        seen.response
    );
    assert!(!seen.response.contains("bob home"), "{}", seen.response);
}

#[test]
fn strict_sni_alerts_instead_of_the_default() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_strict");
    let server = TestServer::start(&config(&s, "tls_strict_sni = true\ntls_default = \"bob.test\""));
    let addr = tls_addr(&server);
    assert_served(
        &https(addr, Some("alice.test"), "alice.test").unwrap(),
        &s.alice.0,
        "alice home",
    );
    for sni in [Some("nowhere.test"), None] {
        let e = https(addr, sni, "alice.test").err().expect("refused");
        assert!(
            e.contains("UnrecognisedName") || e.contains("unrecognized"),
            "{sni:?}: {e}"
        );
    }
}

/// Every readable mapping of `pid`'s memory (as root), and how many bytes were read.
fn memory(pid: i32) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let Ok(mut mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        if b - a > 64 << 20 {
            // Address space reserved, not a heap of a small process.
            continue;
        }
        let mut chunk = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok() && mem.read_exact(&mut chunk).is_ok() {
            all.extend_from_slice(&chunk);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_key_outside_its_environment() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_apart");
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    for _ in 0..3 {
        assert_served(
            &https(addr, Some("alice.test"), "alice.test").unwrap(),
            &s.alice.0,
            "alice home",
        );
        assert_served(
            &https(addr, Some("bob.test"), "bob.test").unwrap(),
            &s.bob.0,
            "bob home",
        );
    }
    let pem = std::fs::read(&s.alice.1).unwrap();
    let der = PrivateKeyDer::from_pem_slice(&pem).unwrap();
    let der = der.secret_der().to_vec();
    let base64_line = String::from_utf8_lossy(&pem).lines().nth(1).unwrap().to_string();
    let key_name = s.alice.1.file_name().unwrap().to_string_lossy().into_owned();
    let mut watched = server.children("multiplexer");
    watched.extend(server.processors_of(BOB));
    watched.extend(server.spares());
    assert!(!watched.is_empty());
    for pid in watched {
        for (fd, target) in fd_links(pid) {
            assert!(
                !target.contains(&key_name),
                "pid {pid} holds alice's key on fd {fd}"
            );
        }
        let mem = memory(pid);
        assert!(
            mem.len() > 1 << 20,
            "pid {pid}: only {} bytes of memory read",
            mem.len()
        );
        assert!(!contains(&mem, &der), "pid {pid} has alice's key (DER) in memory");
        assert!(
            !contains(&mem, base64_line.as_bytes()),
            "pid {pid} has alice's key (PEM) in memory"
        );
    }
    // Alice's own processors hold no fd of it either once it is loaded.
    for pid in server.processors_of(ALICE) {
        assert!(fd_links(pid).iter().all(|(_, t)| !t.contains(&key_name)));
    }
}

#[test]
fn check_refuses_a_key_the_multiplexers_can_read() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_check");
    let path = s.pki_dir.join("bulkhead.toml");
    std::fs::write(&path, config(&s, "")).unwrap();
    let check = || {
        Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    chmod(&s.bob.1, 0o644);
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("vhosts[1].tls_key") && stderr.contains("readable by the multiplexers' user"),
        "{stderr}"
    );
    // And a server refuses to start on it.
    assert!(TestServer::try_start(&config(&s, "")).is_err());
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

#[test]
fn hostile_hellos_cost_no_panic_and_no_spinning() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_hostile");
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    let muxes = server.children("multiplexer");
    let before: u64 = muxes.iter().map(|p| cpu_ticks(*p)).sum();
    let t0 = Instant::now();
    // The first bytes of a real hello, trickled one every 200 ms by several clients.
    let mut hello = Vec::new();
    let name = ServerName::try_from("alice.test").unwrap();
    ClientConnection::new(client_config(&[&rustls::version::TLS13], true), name)
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let hello = hello.clone();
            std::thread::spawn(move || {
                let mut sock = TcpStream::connect(addr).unwrap();
                for b in hello.iter().take(12) {
                    if sock.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    let send = |bytes: &[u8]| -> Vec<u8> {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let _ = sock.write_all(bytes);
        let _ = sock.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = sock.read_to_end(&mut answer);
        answer
    };
    // Truncated and then closed; garbage; an SSLv2-style hello; an oversized one.
    assert!(send(&hello[..hello.len() / 2]).is_empty());
    let garbage: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = send(&garbage);
    let _ = send(&[0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]);
    let mut big = vec![22, 3, 1, 0x40, 0x00, 1, 0x00, 0x3f, 0xfc];
    big.resize(20_000, 0x41);
    let alert = send(&big);
    assert!(alert.is_empty() || alert[0] == 21, "{alert:?}");
    // Plain HTTP on the TLS port: a plain 400.
    let answer = send(b"GET / HTTP/1.1\r\nHost: alice.test\r\n\r\n");
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A normal client is served meanwhile.
    assert_served(
        &https(addr, Some("bob.test"), "bob.test").unwrap(),
        &s.bob.0,
        "bob home",
    );
    for t in slow {
        t.join().unwrap();
    }
    let elapsed = t0.elapsed();
    let ticks: u64 = muxes.iter().map(|p| cpu_ticks(*p)).sum::<u64>() - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = ticks as f64 / hz;
    assert!(
        cpu < elapsed.as_secs_f64() * 0.25,
        "multiplexers used {cpu:.2} s of CPU in {elapsed:?}"
    );
    assert_served(
        &https(addr, Some("alice.test"), "alice.test").unwrap(),
        &s.alice.0,
        "alice home",
    );
    assert!(server.wait_for_log("TLS: ", Duration::from_secs(5)).is_some());
}

#[test]
fn a_renewed_certificate_is_served_after_sighup_and_a_download_completes() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_renew");
    let size: u64 = 8 << 20;
    sparse_file(&s.root, "alice/big.bin", size, ALICE, 0o644);
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    let old = leaf(&s.alice.0);
    assert_served(
        &https(addr, Some("alice.test"), "alice.test").unwrap(),
        &s.alice.0,
        "alice home",
    );
    // A download started before the reload, read slowly.
    let name = ServerName::try_from("alice.test").unwrap();
    let mut conn = ClientConnection::new(client_config(&[&rustls::version::TLS13], true), name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = 0u64;
    let mut chunk = vec![0u8; 64 << 10];
    {
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"GET /big.bin HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        got += tls.read(&mut chunk).unwrap() as u64;
    }
    // Renewed in place (a new key too), then SIGHUP.
    let pki = Pki {
        dir: s.pki_dir.clone(),
    };
    let renewed = pki.issue("alice", &["alice.test", "*.alice.test"], ALICE);
    assert_eq!(renewed.0, s.alice.0);
    let new = leaf(&s.alice.0);
    assert_ne!(old, new);
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(server
        .wait_for_log("reload: new generation starting", Duration::from_secs(10))
        .is_some());
    let presented = poll(Duration::from_secs(10), || {
        let seen = https(addr, Some("alice.test"), "alice.test").ok()?;
        (seen.cert == new).then_some(seen)
    });
    assert!(presented.is_some(), "the renewed certificate was never presented");
    // The download goes on to its end.
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("download cut after {got} bytes: {e}"),
        }
    }
    assert!(
        got > size && got < size + 1024,
        "got {got} bytes of a {size}-byte file and its head"
    );
}

#[test]
fn handshakes_failures_resumptions_and_421s_are_counted_per_environment() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_metrics");
    let server = TestServer::start(&config(&s, ""));
    let addr = tls_addr(&server);
    let config = client_config(&[&rustls::version::TLS13], true);
    for _ in 0..3 {
        https_on(addr, config.clone(), Some("alice.test"), "alice.test", None).unwrap();
    }
    let misdirected = https(addr, Some("alice.test"), "bob.test").unwrap();
    assert!(misdirected.response.starts_with("HTTP/1.1 421"));
    https(addr, Some("bob.test"), "bob.test").unwrap();
    // A client that sends its hello, reads the server's flight and goes: a failed
    // handshake in bob's processor.
    let mut hello = Vec::new();
    let name = ServerName::try_from("bob.test").unwrap();
    ClientConnection::new(client_config(&[&rustls::version::TLS13], true), name)
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.write_all(&hello).unwrap();
    let mut answer = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = sock.read(&mut answer);
    drop(sock);
    let metrics = server.metrics_addr.expect("the metrics listener");
    let value = |name: &str, env: &str, label: Option<(&str, &str)>| -> f64 {
        let (status, text) = get_http10(metrics, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{text}");
        let samples = parse_samples(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        samples
            .iter()
            .filter(|x| x.name == name && x.label("environment") == Some(env))
            .filter(|x| label.is_none_or(|(k, v)| x.label(k) == Some(v)))
            .map(|x| x.value)
            .sum()
    };
    let settled = poll(Duration::from_secs(5), || {
        (value(
            "bulkhead_tls_handshake_failures_total",
            "bob",
            Some(("reason", "error")),
        ) >= 1.0)
            .then_some(())
    });
    assert!(settled.is_some(), "bob's failed handshake was not counted");
    assert_eq!(
        value(
            "bulkhead_tls_handshakes_total",
            "alice",
            Some(("alpn", "http/1.1"))
        ),
        4.0
    );
    assert_eq!(
        value("bulkhead_tls_handshakes_total", "alice", Some(("alpn", "none"))),
        0.0
    );
    assert_eq!(value("bulkhead_tls_resumed_handshakes_total", "alice", None), 2.0);
    assert_eq!(value("bulkhead_misdirected_requests_total", "alice", None), 1.0);
    assert_eq!(value("bulkhead_misdirected_requests_total", "bob", None), 0.0);
    assert_eq!(value("bulkhead_tls_handshakes_total", "bob", None), 1.0);
}

#[test]
fn a_chrooted_environment_reads_its_key_inside_the_jail() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_chroot");
    let jail = s.root.join("jail");
    put(&jail, "www/index.html", b"bob jailed", BOB, 0o644);
    chown(&jail, 0);
    chmod(&jail, 0o755);
    std::fs::create_dir(jail.join("tls")).unwrap();
    chmod(&jail.join("tls"), 0o755);
    let (crt, key) = (jail.join("tls/bob.crt"), jail.join("tls/bob.key"));
    std::fs::copy(&s.bob.0, &crt).unwrap();
    std::fs::copy(&s.bob.1, &key).unwrap();
    std::os::unix::fs::chown(&key, Some(BOB), Some(BOB)).unwrap();
    chmod(&key, 0o600);
    let jailed = |crt: &Path, key: &Path| {
        config(&s, "")
            .replace(
                "[environments.bob]\n",
                &format!("[environments.bob]\nchroot = \"{}\"\n", jail.display()),
            )
            .replace(
                &s.root.join("bob").display().to_string(),
                &jail.join("www").display().to_string(),
            )
            .replace(&s.bob.0.display().to_string(), &crt.display().to_string())
            .replace(&s.bob.1.display().to_string(), &key.display().to_string())
    };
    // A key outside the jail is refused: the processors could not open it.
    let outside = s.pki_dir.join("outside.toml");
    std::fs::write(&outside, jailed(&crt, &s.bob.1)).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&outside)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("outside the environment's chroot"),
        "{stderr}"
    );
    let server = TestServer::start(&jailed(&crt, &key));
    let addr = tls_addr(&server);
    assert_served(
        &https(addr, Some("bob.test"), "bob.test").unwrap(),
        &s.bob.0,
        "bob jailed",
    );
    assert_served(
        &https(addr, Some("alice.test"), "alice.test").unwrap(),
        &s.alice.0,
        "alice home",
    );
}

#[test]
fn a_script_over_tls_is_told_https() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_cgi");
    let script = b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nprintf 'HTTPS=%s SCHEME=%s PORT=%s' \"$HTTPS\" \"$REQUEST_SCHEME\" \"$SERVER_PORT\"\n";
    put(&s.root, "alice/env.cgi", script, ALICE, 0o755);
    let text = config(&s, "").replace(
        "server_alias = [\"*.alice.test\"]\n",
        "server_alias = [\"*.alice.test\"]\ncgi = [\".cgi\"]\nhsts_max_age = 60\n",
    );
    let server = TestServer::start(&text);
    let addr = tls_addr(&server);
    let name = ServerName::try_from("alice.test").unwrap();
    let mut conn = ClientConnection::new(client_config(&[&rustls::version::TLS13], true), name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET /env.cgi HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let want = format!("HTTPS=on SCHEME=https PORT={}", addr.port());
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains(&want),
        "{response}"
    );
    assert!(
        response.contains("\r\nStrict-Transport-Security: max-age=60\r\n"),
        "{response}"
    );
    // Over plain HTTP: no HTTPS.
    let plain = get(server.addr, "alice.test", "/env.cgi");
    assert!(plain.text().contains("HTTPS= SCHEME=http "), "{}", plain.text());
    assert!(plain.header("strict-transport-security").is_none());
}

#[test]
fn plain_http_is_redirected_except_acme_challenges_and_tls_answers_carry_hsts() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    let s = setup("tls_redirect");
    put(
        &s.root,
        "alice/.well-known/acme-challenge/tok",
        b"token body",
        ALICE,
        0o644,
    );
    let text = config(&s, "").replace(
        "server_alias = [\"*.alice.test\"]\n",
        "server_alias = [\"*.alice.test\"]\nredirect_to_https = true\nhsts_max_age = 600\n",
    );
    let server = TestServer::start(&text);
    let r = get(server.addr, "www.alice.test", "/page?x=1");
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(r.header("location"), Some("https://www.alice.test/page?x=1"));
    let r = get(server.addr, "alice.test", "/.well-known/acme-challenge/tok");
    assert_eq!((r.status, r.text().as_str()), (200, "token body"));
    // A POST keeps its method: 308.
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.write_all(
        b"POST /form HTTP/1.1\r\nHost: alice.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .unwrap();
    let r = read_response(&mut sock, false).unwrap();
    assert_eq!(
        (r.status, r.header("location")),
        (308, Some("https://alice.test/form"))
    );
    // Bob's vhost does not redirect.
    ok(&server, "bob.test", "bob home", "no redirect for bob");
    let seen = https(tls_addr(&server), Some("alice.test"), "alice.test").unwrap();
    assert_served(&seen, &s.alice.0, "alice home");
    assert!(
        seen.response
            .contains("\r\nStrict-Transport-Security: max-age=600\r\n"),
        "{}",
        seen.response
    );
    let seen = https(tls_addr(&server), Some("bob.test"), "bob.test").unwrap();
    assert!(
        !seen.response.contains("Strict-Transport-Security"),
        "{}",
        seen.response
    );
}

#[test]
fn a_private_view_lets_its_processors_read_their_own_key_only() {
    require_root!();
    if require_tool("openssl", "openssl").is_none() {
        return;
    }
    // Not under /tmp, which a private view covers with its own.
    let keys = tempfile::Builder::new()
        .prefix("bulkhead-tls-view-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let s = setup_in("tls_view", Some(keys.path()));
    let server = TestServer::start(&config(&s, "private_view = true"));
    let addr = tls_addr(&server);
    assert_served(
        &https(addr, Some("alice.test"), "alice.test").unwrap(),
        &s.alice.0,
        "alice home",
    );
    assert_served(
        &https(addr, Some("bob.test"), "bob.test").unwrap(),
        &s.bob.0,
        "bob home",
    );
}
