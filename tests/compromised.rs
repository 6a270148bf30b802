//! A compromised processor cannot hurt the supervisor, the multiplexers or another
//! tenant. The test plays alice's processor: it takes the processor's environment
//! socket and control channel with pidfd_getfd(2), as the tenant's code running as
//! that uid could use them, and sends what it could send. Each test measures what the
//! attack could grow (multiplexer fds, process counts, supervisor RSS) before and after.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use common::control::{self, FromChild};
use common::handoff::{self, flags, Meta, NO_VHOST};
use common::seqpacket::SCM_MAX_FD;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::util::*;

/// Alice's processor's channels, taken from it.
struct Taken {
    /// Its end of alice's hand-off socket (hand-backs go to the multiplexers).
    env: OwnedFd,
    /// Its end of its control channel to the supervisor.
    control: OwnedFd,
}

fn pidfd_open(pid: i32) -> OwnedFd {
    // SAFETY: a plain syscall with integer arguments; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open({pid}): {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn pidfd_getfd(pidfd: &OwnedFd, target: RawFd) -> Option<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    // SAFETY: on success the kernel just gave us this fd; nothing else owns it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn so_type(fd: &OwnedFd) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are a valid, writable int-sized option buffer for the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        -1
    } else {
        v
    }
}

/// Takes `pid`'s two SEQPACKET sockets: the environment socket is the one whose inode
/// an fd keeper also holds (the generation's keepers hold both ends of every
/// environment's pair); the control channel's child end is held by the child only.
fn take_channels(server: &TestServer, pid: i32) -> Taken {
    let sup: std::collections::HashSet<u64> = server
        .children("fd-keeper")
        .into_iter()
        .flat_map(socket_inodes)
        .collect();
    let pidfd = pidfd_open(pid);
    let (mut env, mut ctl) = (None, None);
    for (fd, target) in fd_links(pid) {
        let Some(inode) = socket_inode(&target) else {
            continue;
        };
        let Some(taken) = pidfd_getfd(&pidfd, fd) else {
            continue;
        };
        if so_type(&taken) != libc::SOCK_SEQPACKET {
            continue;
        }
        if sup.contains(&inode) {
            assert!(env.is_none(), "two environment sockets in {pid}");
            env = Some(taken);
        } else {
            assert!(ctl.is_none(), "two control channels in {pid}");
            ctl = Some(taken);
        }
    }
    Taken {
        env: env.expect("the processor's environment socket"),
        control: ctl.expect("the processor's control channel"),
    }
}

fn start(test: &str, extra_server: &str) -> (Dir, TestServer) {
    let w = Dir::new(test);
    sites(w.path(), 0o600);
    let server = TestServer::start(&two_env_config(w.path(), extra_server));
    (w, server)
}

fn one_alice(server: &TestServer) -> i32 {
    assert!(
        server.wait_until(Duration::from_secs(5), || server.processors_of(ALICE).len() == 1),
        "alice's processor did not start\n{}",
        server.log()
    );
    server.processors_of(ALICE)[0]
}

fn fd_count(pid: i32) -> usize {
    fd_links(pid).len()
}

fn rss_kb(pid: i32) -> u32 {
    first_num(&status_field(pid, "VmRSS").unwrap_or_default())
}

/// Both tenants are served (waiting a little for a replaced processor).
fn both_serve(server: &TestServer, when: &str) {
    for (host, body) in [("alice.test", "alice home"), ("bob.test", "bob home")] {
        let ok = server.wait_until(Duration::from_secs(10), || {
            try_get(server.addr, host).is_some_and(|r| r.status == 200 && r.text() == body)
        });
        assert!(ok, "{host} not served {when}\n{}", server.log());
    }
}

/// One GET on a fresh connection; `None` when the connection is refused or closed.
fn try_get(addr: std::net::SocketAddr, host: &str) -> Option<Response> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    read_response(&mut s, false)
}

fn handback_header() -> [u8; handoff::HEADER_LEN] {
    header_for(0)
}

/// A plain hand-back's header (no PROXY tag, made-up addresses) for a payload of `len`.
fn header_for(len: usize) -> [u8; handoff::HEADER_LEN] {
    let meta = Meta {
        flags: flags::HAND_BACK,
        vhost: NO_VHOST,
        peer: "127.0.0.1:1".parse().unwrap(),
        local: "127.0.0.1:2".parse().unwrap(),
        tag: [0; handoff::TAG_LEN],
    };
    handoff::encode_header(&meta, len)
}

/// Sends `parts` with `fds` on `sock`, retrying while its queue is full (bounded).
fn send_retrying(sock: &OwnedFd, parts: &[&[u8]], fds: &[RawFd]) -> bool {
    let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None) {
            Ok(_) => return true,
            Err(nix::Error::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => return false,
        }
    }
}

/// 50 hand-backs carrying 253 fds each (SCM_MAX_FD; one fd repeated): the multiplexers
/// refuse them and keep none of the fds.
#[test]
fn hand_backs_with_253_fds_leak_nothing_into_multiplexers() {
    require_root!();
    let (_w, server) = start("hand_backs_with_253_fds_leak_nothing_into_multiplexers", "");
    let alice = one_alice(&server);
    both_serve(&server, "before");
    let muxes = server.children("multiplexer");
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<usize> = muxes.iter().map(|p| fd_count(*p)).collect();
    let taken = take_channels(&server, alice);
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let many = vec![devnull.as_raw_fd(); SCM_MAX_FD];
    let header = handback_header();
    for i in 0..50 {
        assert!(send_retrying(&taken.env, &[&header], &many), "send {i}");
    }
    std::thread::sleep(Duration::from_millis(500));
    for (p, b) in muxes.iter().zip(&before) {
        let after = fd_count(*p);
        assert!(
            after <= b + 4,
            "multiplexer {p} went from {b} to {after} fds after 50 hand-backs of 253 fds\n{}",
            server.log()
        );
    }
    both_serve(&server, "after the 253-fd hand-backs");
}

/// `Spawn` for bob's and for alice's own environment, 100 times each from alice's
/// processor: no processor is started for either.
#[test]
fn spawn_from_a_processor_starts_nothing() {
    require_root!();
    let (_w, server) = start("spawn_from_a_processor_starts_nothing", "");
    let alice = one_alice(&server);
    assert!(server.wait_until(Duration::from_secs(5), || server.processors_of(BOB).len() == 1));
    both_serve(&server, "before");
    std::thread::sleep(Duration::from_millis(300));
    let before = (server.processors_of(ALICE).len(), server.processors_of(BOB).len());
    let taken = take_channels(&server, alice);
    for _ in 0..100 {
        for env in [1u32, 0] {
            control::send(taken.control.as_fd(), &FromChild::Spawn { env }, &[]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after = (server.processors_of(ALICE).len(), server.processors_of(BOB).len());
    assert_eq!(
        before,
        after,
        "(alice, bob) processors changed after Spawn from a processor\n{}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("processor asked to start a processor: refused"),
        "no refusal logged\n{}",
        server.log()
    );
    assert!(
        alive(alice),
        "a refused Spawn must not cost the processor its life"
    );
    both_serve(&server, "after");
}

/// `Recycling` 100 times from alice's processor: it is honoured once (one successor
/// for alice, as a processor near its `max_requests_per_child` gets), bob gets nothing,
/// and the processor lives on.
#[test]
fn recycling_from_a_processor_starts_one_successor_at_most() {
    require_root!();
    let (_w, server) = start("recycling_from_a_processor_starts_one_successor_at_most", "");
    let alice = one_alice(&server);
    assert!(server.wait_until(Duration::from_secs(5), || server.processors_of(BOB).len() == 1));
    both_serve(&server, "before");
    let taken = take_channels(&server, alice);
    for _ in 0..100 {
        control::send(taken.control.as_fd(), &FromChild::Recycling, &[]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        server.wait_until(Duration::from_secs(5), || server.processors_of(ALICE).len() == 2),
        "no successor for alice: {:?}\n{}",
        server.processors_of(ALICE),
        server.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        (server.processors_of(ALICE).len(), server.processors_of(BOB).len()),
        (2, 1),
        "(alice, bob) processors after 100 Recycling from one processor\n{}",
        server.log()
    );
    assert!(alive(alice), "Recycling must not cost the processor its life");
    both_serve(&server, "after");
}

/// Many 60 KiB fragments flagged "more" on the control channel: the supervisor keeps
/// none of it (RSS grows under 1 MB), drops the offender, and the server serves on.
#[test]
fn oversized_control_messages_do_not_grow_the_supervisor() {
    require_root!();
    let (_w, server) = start("oversized_control_messages_do_not_grow_the_supervisor", "");
    let alice = one_alice(&server);
    both_serve(&server, "before");
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kb(server.pid());
    let taken = take_channels(&server, alice);
    let big = vec![b' '; control::FRAGMENT];
    let mut sent = 0;
    for _ in 0..200 {
        if !send_retrying(&taken.control, &[&[1u8], &big], &[]) {
            break;
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kb(server.pid());
    assert!(
        after < before + 1024,
        "supervisor RSS went from {before} kB to {after} kB after {sent} fragments\n{}",
        server.log()
    );
    drop(taken);
    both_serve(&server, "after the oversized control message");
}

/// The processor connects to the listener itself and hands back its client ends in a
/// loop (it costs the processor nothing): no multiplexer holds more than its bound.
#[test]
fn self_hand_backs_are_bounded() {
    require_root!();
    let (_w, server) = start(
        "self_hand_backs_are_bounded",
        "max_clients = 16\nmax_connections_per_processor = 4",
    );
    let alice = one_alice(&server);
    both_serve(&server, "before");
    let muxes = server.children("multiplexer");
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<usize> = muxes.iter().map(|p| fd_count(*p)).collect();
    let taken = take_channels(&server, alice);
    let header = handback_header();
    for i in 0..300 {
        let client = std::net::TcpStream::connect(server.addr).unwrap();
        let fd: OwnedFd = client.into();
        assert!(
            send_retrying(&taken.env, &[&header], &[fd.as_raw_fd()]),
            "send {i}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    // Per multiplexer: max_clients (16) connections in the works, plus slack for the
    // fds a refused one is open for.
    for (p, b) in muxes.iter().zip(&before) {
        let after = fd_count(*p);
        assert!(
            after <= b + 16 + 8,
            "multiplexer {p} went from {b} to {after} fds after 300 self hand-backs\n{}",
            server.log()
        );
    }
    drop(taken);
    both_serve(&server, "after the self hand-backs");
}

/// A hand-back claiming a PROXY header's client address it was never handed off with
/// (a tag it had to invent) is refused: the processor cannot pick the client address
/// the next environment sees.
#[test]
fn a_forged_proxy_address_in_a_hand_back_is_refused() {
    require_root!();
    let (_w, server) = start(
        "a_forged_proxy_address_in_a_hand_back_is_refused",
        "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]",
    );
    let alice = one_alice(&server);
    let taken = take_channels(&server, alice);
    let meta = Meta {
        flags: flags::HAND_BACK | flags::PROXIED,
        vhost: NO_VHOST,
        peer: "127.0.0.1:1".parse().unwrap(),
        local: "127.0.0.1:80".parse().unwrap(),
        tag: [0x5a; handoff::TAG_LEN],
    };
    let header = handoff::encode_header(&meta, 0);
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(own.local_addr().unwrap()).unwrap();
    let fd: OwnedFd = client.into();
    assert!(send_retrying(&taken.env, &[&header], &[fd.as_raw_fd()]));
    let line = server.wait_for_log(
        "not the one this socket was handed off with",
        Duration::from_secs(5),
    );
    assert!(line.is_some(), "{}", server.log());
}

/// A listening socket of the test's own and a connection to it: the client end, and
/// the accepted end (blocking, as sockets are made) that alice hands back.
fn own_connection() -> (std::net::TcpStream, std::net::TcpStream) {
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(own.local_addr().unwrap()).unwrap();
    let (served, _) = own.accept().unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (client, served)
}

fn is_nonblocking(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFL takes no pointer; the fd is open for the call.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

/// Runs `f` while a thread clears O_NONBLOCK on `fd` every 200 µs, as a tenant's code
/// holding a copy of a handed-back socket could. The thread stops when `f` returns or
/// panics (a failed assertion must fail the test, not hang it).
fn while_made_blocking(fd: &impl AsRawFd, f: impl FnOnce()) {
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let raw = fd.as_raw_fd();
    std::thread::scope(|s| {
        let _stop = Stop(&stop);
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: F_SETFL with plain flags on an open fd of our own.
                unsafe { libc::fcntl(raw, libc::F_SETFL, 0) };
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        f();
    });
}

/// A hand-back of a blocking socket with a whole head for bob (the multiplexers' fast
/// path: routed and handed off at once, never in their reactor): bob serves it, and
/// the socket was made non-blocking before bob got it, so a socket alice chose cannot
/// stall bob's processor.
#[test]
fn a_blocking_hand_back_is_made_non_blocking_before_it_is_routed() {
    require_root!();
    let (_w, server) = start(
        "a_blocking_hand_back_is_made_non_blocking_before_it_is_routed",
        "",
    );
    let alice = one_alice(&server);
    both_serve(&server, "before");
    let taken = take_channels(&server, alice);
    let (mut client, served) = own_connection();
    assert!(!is_nonblocking(&served));
    let head = b"GET / HTTP/1.1\r\nHost: bob.test\r\n\r\n";
    let header = header_for(head.len());
    assert!(send_retrying(&taken.env, &[&header, head], &[served.as_raw_fd()]));
    let r = read_response(&mut client, false).expect("no response to the hand-back");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "bob home"),
        "{}",
        server.log()
    );
    // The flag belongs to the file description, which our copy shares.
    assert!(is_nonblocking(&served), "bob got a blocking socket");
    // Keep-alive goes on in bob's processor.
    use std::io::Write;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: bob.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut client, false).expect("no second response");
    assert_eq!((r.status, r.text().as_str()), (200, "bob home"));
    both_serve(&server, "after");
}

/// A hand-back whose payload holds a whole head longer than `limit_request_head` is
/// not routed on that head (the fast path looks for its end within the limit only):
/// the client gets 431, as a fresh connection would.
#[test]
fn a_hand_back_head_over_the_limit_is_refused() {
    require_root!();
    let (_w, server) = start(
        "a_hand_back_head_over_the_limit_is_refused",
        "limit_request_head = 1024",
    );
    let alice = one_alice(&server);
    let taken = take_channels(&server, alice);
    let (mut client, served) = own_connection();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: bob.test\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(2000)
    );
    let header = header_for(head.len());
    assert!(send_retrying(
        &taken.env,
        &[&header, head.as_bytes()],
        &[served.as_raw_fd()]
    ));
    drop(served);
    let r = read_response(&mut client, false).expect("no response to the hand-back");
    assert_eq!(r.status, 431, "{}", server.log());
    both_serve(&server, "after");
}

/// Only the generation's multiplexer 0 is woken by hand-backs; the others take what is
/// queued every 20 ms: with either multiplexer frozen (SIGSTOP), a hand-back is still
/// routed, by the other one.
#[test]
fn a_hand_back_is_routed_with_either_multiplexer_frozen() {
    require_root!();
    let (_w, server) = start("a_hand_back_is_routed_with_either_multiplexer_frozen", "");
    let alice = one_alice(&server);
    both_serve(&server, "before");
    let taken = take_channels(&server, alice);
    let muxes = server.children("multiplexer");
    assert_eq!(muxes.len(), 2, "{}", server.log());
    let head = b"GET / HTTP/1.1\r\nHost: bob.test\r\nConnection: close\r\n\r\n";
    let header = header_for(head.len());
    for frozen in &muxes {
        // SAFETY: plain kill(2) calls on a child of the server under test.
        unsafe { libc::kill(*frozen, libc::SIGSTOP) };
        let (mut client, served) = own_connection();
        let sent = send_retrying(&taken.env, &[&header, head], &[served.as_raw_fd()]);
        drop(served);
        let r = read_response(&mut client, false);
        // SAFETY: as above.
        unsafe { libc::kill(*frozen, libc::SIGCONT) };
        assert!(sent);
        let r = r.unwrap_or_else(|| panic!("no response with multiplexer {frozen} frozen\n{}", server.log()));
        assert_eq!((r.status, r.text().as_str()), (200, "bob home"));
    }
    both_serve(&server, "after");
}

/// Alice hands back a socket of her own making with half a head, keeps her copy, and
/// keeps clearing its `O_NONBLOCK` (the flag is the open file description's, shared by
/// every copy) while the client trickles the rest. A multiplexer reading it with a
/// plain `read(2)` would block its only thread; each reads with `MSG_DONTWAIT`
/// (`multiplexer/src/dontwait.rs`), so every new connection is still answered, and the
/// half head meets its timeout.
#[test]
fn a_hand_back_made_blocking_behind_the_multiplexer_stops_nothing() {
    require_root!();
    let (_w, server) = start(
        "a_hand_back_made_blocking_behind_the_multiplexer_stops_nothing",
        "",
    );
    let alice = one_alice(&server);
    both_serve(&server, "before");
    let taken = take_channels(&server, alice);
    let (mut client, served) = own_connection();
    let head = b"GET / HTTP/1.1\r\n";
    let header = header_for(head.len());
    assert!(send_retrying(&taken.env, &[&header, head], &[served.as_raw_fd()]));
    while_made_blocking(&served, || {
        use std::io::Write;
        // Bytes in pieces: each wakes the multiplexer holding the connection, whose
        // next read then finds the socket blocking and nothing to read.
        for piece in [&b"Host: "[..], b"bob", b".te"] {
            std::thread::sleep(Duration::from_millis(150));
            client.write_all(piece).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        // Sixteen fresh connections (spread over both multiplexers' sockets), each
        // answered in time.
        for i in 0..16 {
            let r = try_get(server.addr, if i % 2 == 0 { "alice.test" } else { "bob.test" });
            assert!(
                r.as_ref().is_some_and(|r| r.status == 200),
                "connection {i} not answered: {r:?}\n{}",
                server.log()
            );
        }
    });
    both_serve(&server, "after");
}

/// Alice hands back a socket with a whole head for bob and keeps her copy, clearing
/// O_NONBLOCK on it all the time, as a tenant's code could. Bob's one processor sends
/// a 16 MiB file into a client that does not read (sendfile(2) on a blocking socket
/// would sleep in the kernel), then waits between the pieces of the next head (a read
/// on a blocking socket would sleep): other clients of bob's are answered throughout.
#[test]
fn a_hand_back_made_blocking_behind_the_next_processor_stops_nothing() {
    require_root!();
    let test = "a_hand_back_made_blocking_behind_the_next_processor_stops_nothing";
    let w = Dir::new(test);
    sites(w.path(), 0o600);
    let big = vec![b'x'; 16 << 20];
    put(w.path(), "bob/big.bin", &big, BOB, 0o600);
    // One processor for bob: a stall in it would stop every client of bob's.
    let config = two_env_config(w.path(), "").replace(
        "group = 2002\nmin_processors = 1\nmax_processors = 4",
        "group = 2002\nmin_processors = 1\nmax_processors = 1",
    );
    assert!(config.contains("max_processors = 1"), "{config}");
    let server = TestServer::start(&config);
    let alice = one_alice(&server);
    both_serve(&server, "before");
    let taken = take_channels(&server, alice);
    let (mut client, served) = own_connection();
    let small: libc::c_int = 8192;
    // SAFETY: an int-sized option value valid for the call, on our own open socket.
    unsafe {
        libc::setsockopt(
            served.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let head = b"GET /big.bin HTTP/1.1\r\nHost: bob.test\r\n\r\n";
    let header = header_for(head.len());
    assert!(send_retrying(&taken.env, &[&header, head], &[served.as_raw_fd()]));
    let others_answered = |when: &str| {
        for i in 0..8 {
            let r = try_get(server.addr, "bob.test");
            assert!(
                r.as_ref()
                    .is_some_and(|r| r.status == 200 && r.text() == "bob home"),
                "bob's client {i} not answered {when}: {r:?}\n{}",
                server.log()
            );
        }
    };
    while_made_blocking(&served, || {
        std::thread::sleep(Duration::from_millis(300));
        others_answered("while the big file waits for its reader");
        client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let r = read_response(&mut client, false).expect("no answer to the hand-back");
        assert_eq!((r.status, r.body.len()), (200, big.len()), "{}", server.log());
        use std::io::Write;
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        others_answered("while the next head is half sent");
        client
            .write_all(b"Host: bob.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut client, false).expect("no second answer");
        assert_eq!((r.status, r.text().as_str()), (200, "bob home"));
    });
    both_serve(&server, "after");
}
