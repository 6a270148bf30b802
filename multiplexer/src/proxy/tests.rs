//! The header framing over every cut, and the tags.

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A v2 PROXY header by hand: TCP over IPv4 or IPv6, with `tlv` bytes after the addresses.
pub(crate) fn v2_header(src: SocketAddr, dst: SocketAddr, tlv: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x21);
    let mut addrs = Vec::new();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            addrs.extend(s.ip().octets());
            addrs.extend(d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21);
            addrs.extend(s.ip().octets());
            addrs.extend(d.ip().octets());
        }
        _ => panic!("mixed families"),
    }
    addrs.extend(src.port().to_be_bytes());
    addrs.extend(dst.port().to_be_bytes());
    addrs.extend(tlv);
    h.extend((addrs.len() as u16).to_be_bytes());
    h.extend(addrs);
    h
}

#[test]
fn v1_tcp4_tcp6_unknown() {
    let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 80\r\nGET / HTTP/1.1\r\n";
    let len = h.iter().position(|&b| b == b'\n').unwrap() + 1;
    assert_eq!(
        examine(h),
        Framed::Header {
            len,
            addrs: Some((sa("192.0.2.7:40000"), sa("198.51.100.1:80")))
        }
    );
    let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n\x16\x03\x01";
    assert_eq!(
        examine(h),
        Framed::Header {
            len: h.len() - 3,
            addrs: Some((sa("[2001:db8::7]:40000"), sa("[2001:db8::1]:443")))
        }
    );
    assert_eq!(
        examine(b"PROXY UNKNOWN\r\nGET"),
        Framed::Header { len: 15, addrs: None }
    );
}

#[test]
fn v2_proxy_and_local() {
    let mut h = v2_header(sa("192.0.2.7:40000"), sa("198.51.100.1:443"), &[4, 0, 1, 42]);
    let len = h.len();
    h.extend(b"\x16\x03\x01rest");
    assert_eq!(
        examine(&h),
        Framed::Header {
            len,
            addrs: Some((sa("192.0.2.7:40000"), sa("198.51.100.1:443")))
        }
    );
    let h6 = v2_header(sa("[2001:db8::7]:1"), sa("[2001:db8::1]:2"), &[]);
    assert!(matches!(
        examine(&h6),
        Framed::Header {
            len: 52,
            addrs: Some(_)
        }
    ));
    // LOCAL (a health check): the socket's addresses.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend([0x20, 0x00, 0, 0]);
    assert_eq!(examine(&local), Framed::Header { len: 16, addrs: None });
}

/// Every prefix of a valid header asks for more, never for less than it has, and
/// never takes a byte past the header.
#[test]
fn every_cut_waits() {
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 80\r\n".to_vec();
    let v2 = v2_header(
        sa("192.0.2.7:40000"),
        sa("198.51.100.1:443"),
        &[1, 0, 2, b'h', b'2'],
    );
    for h in [v1, v2] {
        for cut in 0..h.len() {
            match examine(&h[..cut]) {
                Framed::Need(n) => assert!(n > cut && n <= h.len(), "cut {cut}: need {n}"),
                other => panic!("cut {cut} of {:?}: {other:?}", String::from_utf8_lossy(&h)),
            }
        }
        let mut more = h.clone();
        more.extend(b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(examine(&more), Framed::Header { len, .. } if len == h.len()));
    }
}

#[test]
fn bad_headers_are_refused() {
    let bad = |b: &[u8]| matches!(examine(b), Framed::Bad(_));
    // No header at all: a plain request, a TLS hello.
    assert!(bad(b"GET / HTTP/1.1\r\n"));
    assert!(bad(b"\x16\x03\x01\x02\x00"));
    assert!(bad(b"PROXX"));
    // Malformed v1.
    assert!(bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"));
    assert!(bad(b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n"));
    assert!(bad(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"));
    assert!(bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"));
    assert!(bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"));
    // Over 107 bytes without a CRLF.
    let mut long = b"PROXY TCP4 ".to_vec();
    long.resize(200, b'1');
    assert!(bad(&long));
    // v2: version, command, family, datagram, too large, addresses cut short.
    let good = v2_header(sa("192.0.2.7:1"), sa("192.0.2.8:2"), &[]);
    for (at, value) in [(12, 0x11), (12, 0x2f), (13, 0x41), (13, 0x12)] {
        let mut h = good.clone();
        h[at] = value;
        assert!(bad(&h), "byte {at} = {value:#x}");
    }
    let mut h = good.clone();
    h[14..16].copy_from_slice(&(MAX_HEADER as u16).to_be_bytes());
    assert!(bad(&h));
    let mut h = good.clone();
    h[14..16].copy_from_slice(&4u16.to_be_bytes());
    h.truncate(20);
    assert!(bad(&h));
}

#[test]
fn examine_never_panics() {
    bolero::check!().with_type::<Vec<u8>>().for_each(|bytes| {
        let _ = examine(bytes);
    });
}

fn proxy() -> Proxy {
    let boot = common::control::ProxyBoot {
        plain: vec![false, true],
        tls: vec![true],
        from: vec![("10.0.0.0".parse().unwrap(), 8), ("::1".parse().unwrap(), 128)],
        key: common::control::TicketSeed([9; 32]),
    };
    Proxy::new(
        &boot,
        &[sa("0.0.0.0:80"), sa("127.0.0.2:8080")],
        &[sa("[::]:443")],
    )
}

#[test]
fn from_and_listeners() {
    let p = proxy();
    assert!(p.allowed(sa("10.1.2.3:5")));
    assert!(p.allowed(sa("[::ffff:10.1.2.3]:5")));
    assert!(p.allowed(sa("[::1]:5")));
    assert!(!p.allowed(sa("127.0.0.1:5")));
    assert!(!p.allowed(sa("11.0.0.1:5")));
    assert!(p.is_proxy_listener(sa("127.0.0.2:8080")));
    assert!(!p.is_proxy_listener(sa("127.0.0.3:8080")));
    assert!(!p.is_proxy_listener(sa("127.0.0.2:80")));
    assert!(!p.is_proxy_listener(sa("192.0.2.1:443")), "[::]:443 is v6-only");
    assert!(p.is_proxy_listener(sa("[2001:db8::1]:443")));
}

#[test]
fn tags_bind_addresses_and_socket() {
    let p = proxy();
    let (peer, local) = (sa("192.0.2.7:40000"), sa("127.0.0.2:8080"));
    let tag = p.tag(77, peer, local);
    assert!(p.verify(77, peer, local, &tag));
    assert!(!p.verify(78, peer, local, &tag), "another socket");
    assert!(
        !p.verify(77, sa("192.0.2.8:40000"), local, &tag),
        "another client"
    );
    assert!(
        !p.verify(77, peer, sa("127.0.0.2:8081"), &tag),
        "another destination"
    );
    assert!(!p.verify(77, peer, local, &[0; TAG_LEN]));
    // Another generation's key.
    let mut boot = common::control::ProxyBoot {
        plain: vec![],
        tls: vec![],
        from: vec![],
        key: common::control::TicketSeed([9; 32]),
    };
    boot.key.0[0] = 1;
    let other = Proxy::new(&boot, &[], &[]);
    assert!(!other.verify(77, peer, local, &tag));
    // Through the hand-off codec and back, the tag still holds.
    let m = meta(flags::HAND_BACK, u32::MAX, peer, local, Some(tag));
    let (back, _) = common::handoff::decode(&common::handoff::encode_header(&m, 0)).unwrap();
    assert!(p.verify(77, back.peer, back.local, &back.tag));
}

#[test]
fn hand_backs() {
    let p = proxy();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(b);
    let socket = (sa("127.0.0.1:50000"), sa("127.0.0.2:8080"));
    // Unflagged from a PROXY listener: refused.
    let plain = meta(flags::HAND_BACK, u32::MAX, socket.0, socket.1, None);
    assert!(p.hand_back(a.as_fd(), &plain, socket).is_err());
    // Unflagged from another listener: the socket's own.
    let other = (sa("127.0.0.1:50000"), sa("127.0.0.1:80"));
    assert_eq!(
        p.hand_back(a.as_fd(), &plain, other).unwrap(),
        (other.0, other.1, None)
    );
    // Flagged: only with this socket's tag (a Unix socket has a cookie too).
    let cookie = socket_cookie(a.as_fd()).expect("SO_COOKIE");
    let client = (sa("192.0.2.7:1"), sa("198.51.100.1:80"));
    let tag = p.tag(cookie, client.0, client.1);
    let good = meta(flags::HAND_BACK, u32::MAX, client.0, client.1, Some(tag));
    assert_eq!(
        p.hand_back(a.as_fd(), &good, socket).unwrap(),
        (client.0, client.1, Some(tag))
    );
    let forged = meta(flags::HAND_BACK, u32::MAX, sa("127.0.0.1:1"), client.1, Some(tag));
    assert!(p.hand_back(a.as_fd(), &forged, socket).is_err());
    let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(
        p.hand_back(c.as_fd(), &good, socket).is_err(),
        "the tag of another socket"
    );
}
