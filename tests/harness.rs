//! The integration harness: `TestServer::start(config)` writes the config to a temp
//! dir, runs the real binary, waits for its `ready` line (never a sleep), and on drop
//! stops it and fails the test if any process logged a panic.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
/// uid/gid of the multiplexers in tests.
pub const MUX_UID: u32 = 2000;
pub const ALICE: u32 = 2001;
pub const BOB: u32 = 2002;

/// True when the test may run; prints why and returns false when it needs root and
/// does not have it. Under CI (`CI` set) a missing root is a failure, never a skip.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this test needs root and CI must run it as root");
    }
    eprintln!("skipping: this test needs root (real uid switches, chroot, fd passing between uids)");
    false
}

/// A temp dir every test uid can traverse.
pub fn world() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-test")
        .tempdir()
        .unwrap();
    chmod(dir.path(), 0o755);
    dir
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

/// Writes `content` at `dir/rel` (creating parents), owned by `uid`, with `mode`.
pub fn put(dir: &Path, rel: &str, content: &[u8], uid: u32, mode: u32) -> PathBuf {
    let p = dir.join(rel);
    let mut d = p.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&d).unwrap();
    while d.starts_with(dir) && d != dir {
        chown(&d, uid);
        chmod(&d, 0o755);
        d = d.parent().unwrap().to_path_buf();
    }
    std::fs::write(&p, content).unwrap();
    chown(&p, uid);
    chmod(&p, mode);
    p
}

/// The standard two-environment config: alice (2001) and bob (2002), one vhost each.
pub fn two_env_config(root: &Path, extra_server: &str) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 2
request_head_timeout = 2
keep_alive_timeout = 5
{extra_server}

[environments.alice]
user = {ALICE}
group = {ALICE}
min_processors = 1
max_processors = 4

[environments.bob]
user = {BOB}
group = {BOB}
min_processors = 1
max_processors = 4

[[vhosts]]
server_name = "alice.test"
server_alias = ["www.alice.test", "*.alice.test"]
environment = "alice"
document_root = "{a}"

[[vhosts]]
server_name = "bob.test"
environment = "bob"
document_root = "{b}"
"#,
        a = root.join("alice").display(),
        b = root.join("bob").display()
    )
}

/// A running `bulkhead serve`.
pub struct TestServer {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    /// The Prometheus listener, when one is configured.
    pub metrics_addr: Option<SocketAddr>,
    pub config_path: PathBuf,
    log: Arc<(Mutex<String>, Condvar)>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts the server on `config` and waits for `ready`.
    pub fn start(config: &str) -> TestServer {
        Self::try_start(config).unwrap_or_else(|log| panic!("server did not become ready:\n{log}"))
    }

    /// Like `start`, but returns the log if the server does not become ready.
    pub fn try_start(config: &str) -> Result<TestServer, String> {
        Self::try_start_with(config, |_| {})
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle` (counting from the start of the log);
    /// returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until `count` log lines contain `needle`; returns the last one.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut g = m.lock().unwrap();
        loop {
            let hits: Vec<&str> = g.lines().filter(|l| l.contains(needle)).collect();
            if hits.len() >= count {
                return Some(hits[count - 1].to_string());
            }
            if g.contains("<eof>") {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the supervisor to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pids of the supervisor's children in `role` ("multiplexer" or "processor").
    /// Spares (processors exec'd ahead of need, still root and unassigned, holding
    /// nothing) are not counted as processors.
    pub fn children(&self, role: &str) -> Vec<i32> {
        children_of(self.pid())
            .into_iter()
            .filter(|p| cmdline(*p).get(1).map(String::as_str) == Some(role))
            .filter(|p| role != "processor" || !is_spare(*p))
            .collect()
    }

    /// Spare processors: exec'd, waiting for an environment.
    pub fn spares(&self) -> Vec<i32> {
        children_of(self.pid())
            .into_iter()
            .filter(|p| cmdline(*p).get(1).map(String::as_str) == Some("processor") && is_spare(*p))
            .collect()
    }

    /// Processor pids whose uid is `uid`.
    pub fn processors_of(&self, uid: u32) -> Vec<i32> {
        self.children("processor")
            .into_iter()
            .filter(|p| status_field(*p, "Uid").map(|u| first_num(&u)) == Some(uid))
            .collect()
    }

    /// Waits until `f` holds, polling (for process-table changes no log announces).
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        f()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        let log = self.log();
        if !std::thread::panicking() && log.contains("panicked") {
            panic!("a bulkhead process panicked:\n{log}");
        }
    }
}

/// A spare runs as root until it is assigned (tests always run the server as root).
fn is_spare(pid: i32) -> bool {
    status_field(pid, "Uid")
        .map(|u| first_num(&u) == 0)
        .unwrap_or(false)
}

pub fn children_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out.sort();
    out
}

pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
}

pub fn first_num(s: &str) -> u32 {
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Reads one response from `r` (`head_request` for HEAD: no body).
pub fn read_response(r: &mut impl Read, head_request: bool) -> Option<Response> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match r.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || status == 304 || status == 204 || (100..200).contains(&status) {
        return Some(resp);
    }
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).ok()?;
        resp.body = body;
    } else {
        r.read_to_end(&mut resp.body).ok()?;
    }
    Some(resp)
}

/// One GET on a fresh connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut s, false).expect("no response")
}

/// Sends raw bytes and reads everything until the server closes.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

// ---- Helpers for the lifecycle, handback, fd_hygiene and chroot tests ----

/// `s` without ANSI colour escapes (the log is coloured, so `pid=N` is not contiguous).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl TestServer {
    /// Starts the server like `try_start`, letting `customize` adjust the command first
    /// (e.g. to hand the supervisor an fd it should not pass on).
    pub fn try_start_with(config: &str, customize: impl FnOnce(&mut Command)) -> Result<TestServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("bulkhead-conf")
            .tempdir()
            .unwrap();
        let config_path = dir.path().join("bulkhead.toml");
        // Tests run in parallel: never the fixed default metrics port.
        let config = if config.contains("[status]") {
            config.to_string()
        } else {
            format!("{config}\n[status]\nmetrics_listen = \"127.0.0.1:0\"\n")
        };
        std::fs::write(&config_path, &config).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        customize(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if std::env::var_os("BULKHEAD_TEST_ECHO").is_some() {
                    eprint!("{line}");
                }
                let (m, cv) = &*log2;
                m.lock().unwrap().push_str(&line);
                cv.notify_all();
                line.clear();
            }
            let (m, cv) = &*log2;
            m.lock().unwrap().push_str("<eof>\n");
            cv.notify_all();
        });
        let mut server = TestServer {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics_addr: None,
            config_path,
            log,
            _dir: dir,
        };
        match server.wait_for_log("ready: listening on ", Duration::from_secs(30)) {
            Some(line) => {
                let rest = line.split("ready: listening on ").nth(1).unwrap();
                let first = strip_ansi(rest.split([',', ' ', ';']).next().unwrap().trim());
                server.addr = first.parse().unwrap();
                server.metrics_addr = line
                    .split("metrics on ")
                    .nth(1)
                    .and_then(|m| m.split_whitespace().next())
                    .and_then(|m| m.parse().ok());
                Ok(server)
            }
            None => {
                server.kill();
                Err(server.log())
            }
        }
    }

    /// Every log line so far, colours removed.
    pub fn log_lines(&self) -> Vec<String> {
        self.log().lines().map(strip_ansi).collect()
    }

    /// Waits until a log line (colours removed) satisfies `pred`; returns that line.
    /// Gives up early when the server's stderr has closed.
    pub fn wait_for_log_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(line) = g.lines().map(strip_ansi).find(|l| pred(l)) {
                return Some(line);
            }
            if g.contains("<eof>") {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    /// Every child of the supervisor, any role.
    pub fn all_children(&self) -> Vec<i32> {
        let mut v = self.children("multiplexer");
        v.extend(self.children("processor"));
        v.sort();
        v
    }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| {
                stat[i + 1..]
                    .split_whitespace()
                    .next()
                    .map(|s| s != "Z" && s != "X")
            })
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// `(fd, readlink target)` of every open fd of `pid` (fds that close meanwhile are skipped).
pub fn fd_links(pid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(t) = std::fs::read_link(e.path()) {
            out.push((fd, t.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    out
}

/// The `flags:` of `/proc/PID/fdinfo/FD` (octal in the file), if the fd is still open.
pub fn fd_flags(pid: i32, fd: i32) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// The inode of a `socket:[INODE]` link target.
pub fn socket_inode(target: &str) -> Option<u64> {
    target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Socket inodes `pid` holds.
pub fn socket_inodes(pid: i32) -> std::collections::HashSet<u64> {
    fd_links(pid)
        .iter()
        .filter_map(|(_, t)| socket_inode(t))
        .collect()
}

/// Inodes of the TCP sockets in /proc/net/tcp and tcp6; `listening` keeps only state
/// 0A (LISTEN).
pub fn tcp_inodes(listening: bool) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || (listening && f[3] != "0A") {
                continue;
            }
            if let Ok(inode) = f[9].parse::<u64>() {
                if inode != 0 {
                    out.insert(inode);
                }
            }
        }
    }
    out
}

/// Sends a keep-alive GET on `s` and reads its response.
pub fn get_on(s: &mut TcpStream, host: &str, path: &str) -> Option<Response> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").ok()?;
    read_response(s, false)
}

// ---- Helpers for the status_page, logs and screenshot tests ----

/// A port that was free a moment ago on 127.0.0.1 (bound to port 0, then released),
/// for tools that must be told where to listen.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The path of the external `tool` if it is installed. Under CI (`CI` set) a missing
/// tool is a failure (`.ci/run` installs it); otherwise prints why the test is skipped
/// and returns `None`. `package` is the Debian package that provides it.
pub fn require_tool(tool: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/usr/bin".into()])
            .map(|d| d.join(tool))
            .find(|p| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is missing: CI must install Debian's {package} (see .ci/run)");
        }
        eprintln!("skipping: {tool} is not installed (apt-get install {package})");
    }
    found
}

/// Runs `cmd` (stdout and stderr captured, `stdin` written then closed), killing it by
/// pid if it has not exited within `timeout`. Returns `None` on timeout.
pub fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Option<std::process::Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let input = stdin.map(|b| b.to_vec());
    let mut pipe = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let (Some(p), Some(b)) = (pipe.as_mut(), input) {
            let _ = p.write_all(&b);
        }
        drop(pipe);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    // A grandchild may still hold the pipes after a timeout: do not wait for them then.
    let status = status?;
    Some(std::process::Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// An HTTP/1.0 GET (so no chunked encoding) read until the server closes; the status
/// and body, or `None` if nothing listens or the answer is not HTTP.
pub fn get_http10(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A TCP connection to `addr` whose source address is `local` (e.g. 127.0.0.2).
pub fn connect_from(local: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(dest) = addr else {
        panic!("connect_from: {addr} is not IPv4")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(local, 0)),
    )
    .unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(dest)).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// A parsed JSON value (the test crate has no serde_json).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// `obj[key]`, or `Null`.
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or(&Json::Null),
            _ => &Json::Null,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }
    pub fn as_u64(&self) -> Option<u64> {
        self.as_f64()
            .filter(|n| *n >= 0.0 && n.fract() == 0.0)
            .map(|n| n as u64)
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(v) => Some(v),
            _ => None,
        }
    }
}

/// Parses one JSON document (RFC 8259, strict: no trailing commas, nothing after it
/// but whitespace).
pub fn parse_json(text: &str) -> Result<Json, String> {
    struct P<'a> {
        b: &'a [u8],
        i: usize,
    }
    impl P<'_> {
        fn ws(&mut self) {
            while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }
        fn err<T>(&self, what: &str) -> Result<T, String> {
            Err(format!("{what} at byte {}", self.i))
        }
        fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
            if self.b[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(v)
            } else {
                self.err("bad literal")
            }
        }
        fn value(&mut self, depth: usize) -> Result<Json, String> {
            if depth > 128 {
                return self.err("too deep");
            }
            self.ws();
            match self.b.get(self.i) {
                None => self.err("unexpected end"),
                Some(b'n') => self.lit("null", Json::Null),
                Some(b't') => self.lit("true", Json::Bool(true)),
                Some(b'f') => self.lit("false", Json::Bool(false)),
                Some(b'"') => self.string().map(Json::Str),
                Some(b'[') => {
                    self.i += 1;
                    let mut v = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Json::Arr(v));
                    }
                    loop {
                        v.push(self.value(depth + 1)?);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Json::Arr(v));
                            }
                            _ => return self.err("expected , or ]"),
                        }
                    }
                }
                Some(b'{') => {
                    self.i += 1;
                    let mut m = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Json::Obj(m));
                    }
                    loop {
                        self.ws();
                        if self.b.get(self.i) != Some(&b'"') {
                            return self.err("expected a key");
                        }
                        let k = self.string()?;
                        self.ws();
                        if self.b.get(self.i) != Some(&b':') {
                            return self.err("expected :");
                        }
                        self.i += 1;
                        m.push((k, self.value(depth + 1)?));
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Json::Obj(m));
                            }
                            _ => return self.err("expected , or }"),
                        }
                    }
                }
                Some(c) if *c == b'-' || c.is_ascii_digit() => {
                    let start = self.i;
                    if self.b[self.i] == b'-' {
                        self.i += 1;
                    }
                    let digits = |p: &mut Self| {
                        let s = p.i;
                        while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                            p.i += 1;
                        }
                        p.i - s
                    };
                    let int_start = self.i;
                    let n = digits(self);
                    if n == 0 || (n > 1 && self.b[int_start] == b'0') {
                        return self.err("bad number");
                    }
                    if self.b.get(self.i) == Some(&b'.') {
                        self.i += 1;
                        if digits(self) == 0 {
                            return self.err("bad fraction");
                        }
                    }
                    if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
                        self.i += 1;
                        if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                            self.i += 1;
                        }
                        if digits(self) == 0 {
                            return self.err("bad exponent");
                        }
                    }
                    let s = std::str::from_utf8(&self.b[start..self.i]).unwrap();
                    s.parse().map(Json::Num).or_else(|_| self.err("bad number"))
                }
                Some(_) => self.err("unexpected character"),
            }
        }
        fn string(&mut self) -> Result<String, String> {
            self.i += 1; // the opening quote
            let mut out: Vec<u8> = Vec::new();
            loop {
                let Some(&c) = self.b.get(self.i) else {
                    return self.err("unterminated string");
                };
                self.i += 1;
                match c {
                    b'"' => return String::from_utf8(out).or_else(|_| self.err("bad UTF-8")),
                    b'\\' => {
                        let Some(&e) = self.b.get(self.i) else {
                            return self.err("unterminated escape");
                        };
                        self.i += 1;
                        let ch = match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let hex = |p: &mut Self| -> Result<u32, String> {
                                    let h = p.b.get(p.i..p.i + 4).and_then(|h| std::str::from_utf8(h).ok());
                                    let v = h.and_then(|h| u32::from_str_radix(h, 16).ok());
                                    p.i += 4;
                                    v.ok_or_else(|| format!("bad \\u escape at byte {}", p.i))
                                };
                                let mut u = hex(self)?;
                                if (0xd800..0xdc00).contains(&u) && self.b[self.i..].starts_with(b"\\u") {
                                    self.i += 2;
                                    let lo = hex(self)?;
                                    u = 0x10000 + ((u - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff);
                                }
                                char::from_u32(u).unwrap_or('\u{fffd}')
                            }
                            _ => return self.err("bad escape"),
                        };
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    c if c < 0x20 => return self.err("control character in string"),
                    c => out.push(c),
                }
            }
        }
    }
    let mut p = P {
        b: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return p.err("trailing data");
    }
    Ok(v)
}

impl TestServer {
    /// Starts a server whose config sets `[server] error_log = "<error_log>"`, where the
    /// supervisor moves stderr before anything else: the log that `wait_for_log` and
    /// `log()` see is read from that file (following it by name, like `tail -F`, so a
    /// rotation is followed too), plus whatever reached stderr before the move.
    pub fn start_with_error_log(config: &str, error_log: &Path) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("bulkhead-conf")
            .tempdir()
            .unwrap();
        let config_path = dir.path().join("bulkhead.toml");
        let config = if config.contains("[status]") {
            config.to_string()
        } else {
            format!("{config}\n[status]\nmetrics_listen = \"127.0.0.1:0\"\n")
        };
        std::fs::write(&config_path, &config).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            // Until the supervisor moves fd 2; no "<eof>": the file carries on.
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let (m, cv) = &*log2;
                m.lock().unwrap().push_str(&line);
                cv.notify_all();
                line.clear();
            }
        });
        let log3 = log.clone();
        let path = error_log.to_path_buf();
        std::thread::spawn(move || {
            use std::os::unix::fs::MetadataExt;
            // Every file seen at the path (the renamed ones keep getting lines until
            // each child has its new fd), with its inode and unfinished line.
            let mut files: Vec<(std::fs::File, u64, Vec<u8>)> = Vec::new();
            // Ends once the TestServer (and the stderr reader) are gone.
            while Arc::strong_count(&log3) > 1 {
                if let Ok(ino) = std::fs::metadata(&path).map(|m| m.ino()) {
                    if !files.iter().any(|(_, i, _)| *i == ino) {
                        if let Ok(f) = std::fs::File::open(&path) {
                            let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                            files.push((f, ino, Vec::new()));
                        }
                    }
                }
                let mut progressed = false;
                for (f, _, pending) in files.iter_mut() {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = f.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        progressed = true;
                    }
                    if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                        let text: Vec<u8> = pending.drain(..=end).collect();
                        let (m, cv) = &*log3;
                        m.lock().unwrap().push_str(&String::from_utf8_lossy(&text));
                        cv.notify_all();
                    }
                }
                if !progressed {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        let mut server = TestServer {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics_addr: None,
            config_path,
            log,
            _dir: dir,
        };
        let Some(line) =
            server.wait_for_log_line(Duration::from_secs(30), |l| l.contains("ready: listening on "))
        else {
            server.kill();
            panic!("server did not become ready:\n{}", server.log());
        };
        let rest = line.split("ready: listening on ").nth(1).unwrap();
        server.addr = rest
            .split([',', ' ', ';'])
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        server.metrics_addr = line
            .split("metrics on ")
            .nth(1)
            .and_then(|m| m.split_whitespace().next())
            .and_then(|m| m.parse().ok());
        server
    }
}

// ---- Helpers for the pools, reload and scoreboard tests ----

/// A two-environment config like [`two_env_config`], with the pool directives left to
/// the caller: `server_extra` goes into `[server]`, `alice_extra` / `bob_extra` into the
/// environments' tables, `more` after the two vhosts (extra `[[vhosts]]`). Short
/// timeouts so the pool tests stay fast.
pub fn pools_config(
    root: &Path,
    server_extra: &str,
    alice_extra: &str,
    bob_extra: &str,
    more: &str,
) -> String {
    format!(
        r#"
[server]
user = {MUX_UID}
group = {MUX_UID}
listen = ["127.0.0.1:0"]
min_multiplexers = 2
request_head_timeout = 2
keep_alive_timeout = 1
{server_extra}

[environments.alice]
user = {ALICE}
group = {ALICE}
{alice_extra}

[environments.bob]
user = {BOB}
group = {BOB}
{bob_extra}

[[vhosts]]
server_name = "alice.test"
environment = "alice"
document_root = "{a}"

[[vhosts]]
server_name = "bob.test"
environment = "bob"
document_root = "{b}"

{more}
"#,
        a = root.join("alice").display(),
        b = root.join("bob").display()
    )
}

/// A sparse file of `len` bytes at `dir/rel`, owned by `uid`, with `mode`.
pub fn sparse_file(dir: &Path, rel: &str, len: u64, uid: u32, mode: u32) {
    let p = put(dir, rel, b"", uid, mode);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Starts a GET of a big file and reads only the response head: the processor that
/// serves it stays busy on it (its socket buffers full) until the stream is dropped.
pub fn stalled_download(addr: SocketAddr, host: &str, path: &str) -> TcpStream {
    let mut s = connect(addr);
    // A small receive buffer so the processor blocks early.
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &4096);
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            other => panic!("download of {host}{path}: no response head ({other:?})"),
        }
    }
    let text = String::from_utf8_lossy(&head);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "download of {host}{path}: {text}"
    );
    s
}

/// `GET /server-status?json`, parsed.
pub fn scoreboard_json(addr: SocketAddr) -> Json {
    let r = get(addr, "status.test", "/server-status?json");
    assert_eq!(r.status, 200, "server-status: {}", r.text());
    parse_json(&r.text()).unwrap_or_else(|e| panic!("server-status JSON: {e}\n{}", r.text()))
}

/// The `environments[]` row named `env` of a status snapshot.
pub fn env_row<'a>(snap: &'a Json, env: &str) -> &'a Json {
    snap.get("environments")
        .as_array()
        .and_then(|a| a.iter().find(|e| e.get("name").as_str() == Some(env)))
        .unwrap_or_else(|| panic!("no environment {env} in the status page"))
}

/// One numeric field of environment `env`'s status row, read now.
pub fn env_stat(addr: SocketAddr, env: &str, field: &str) -> u64 {
    let snap = scoreboard_json(addr);
    env_row(&snap, env)
        .get(field)
        .as_u64()
        .unwrap_or_else(|| panic!("environment {env}: no numeric {field}"))
}

/// The 99th percentile (nearest rank) of `v`.
pub fn p99(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let rank = ((s.len() as f64) * 0.99).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// One `memfd:` mapping of a process, from `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdMap {
    /// `start-end` as in the file (also the name under `/proc/PID/map_files/`).
    pub range: String,
    pub len: usize,
    /// e.g. `rw-s`.
    pub perms: String,
    pub inode: u64,
    /// `bulkhead-slot`, `bulkhead-table`, …
    pub name: String,
}

/// Every `memfd:` mapping of `pid`.
pub fn memfd_maps(pid: i32) -> Vec<MemfdMap> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.get(5)?.strip_prefix("/memfd:")?.to_string();
            let (a, b) = f[0].split_once('-')?;
            let len = usize::from_str_radix(b, 16).ok()? - usize::from_str_radix(a, 16).ok()?;
            Some(MemfdMap {
                range: f[0].to_string(),
                len,
                perms: f[1].to_string(),
                inode: f[4].parse().ok()?,
                name,
            })
        })
        .collect()
}
