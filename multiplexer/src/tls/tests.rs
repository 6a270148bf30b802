//! The ClientHello examination and the routing rules, without root or a socket: real
//! hellos from a rustls client, re-framed into several records, cut short, corrupted.

use std::sync::Arc;

use super::*;

/// The first flight of a rustls client for `sni` (one record).
fn hello(sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    client.write_tls(&mut out).unwrap();
    out
}

/// The handshake bytes of `records` framed again into records of at most `size` bytes.
fn reframe(records: &[u8], size: usize) -> Vec<u8> {
    let body = &records[5..];
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

#[test]
fn a_whole_hello_gives_its_server_name() {
    let h = hello("alice.example");
    assert_eq!(examine(&h), Peeked::Hello(Some("alice.example".into())));
    // Mixed case reaches the table lower-cased.
    assert_eq!(
        examine(&hello("Alice.EXAMPLE")),
        Peeked::Hello(Some("alice.example".into()))
    );
}

#[test]
fn every_prefix_asks_for_more() {
    let h = hello("alice.example");
    for cut in 0..h.len() {
        match examine(&h[..cut]) {
            Peeked::Need(n) => assert!(n > cut && n <= h.len(), "cut {cut}: need {n}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn a_hello_split_over_records_is_reassembled() {
    let h = hello("bob.example");
    for size in [1, 2, 3, 4, 5, 100, 200] {
        let split = reframe(&h, size);
        assert_eq!(
            examine(&split),
            Peeked::Hello(Some("bob.example".into())),
            "records of {size}"
        );
        // Trailing bytes of the next flight do not matter.
        let mut more = split.clone();
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(examine(&more), Peeked::Hello(Some("bob.example".into())));
        for cut in 0..split.len() {
            assert!(
                matches!(examine(&split[..cut]), Peeked::Need(_)),
                "size {size} cut {cut}"
            );
        }
    }
}

#[test]
fn no_server_name_is_none() {
    // rustls sends no SNI for an IP address.
    assert_eq!(examine(&hello("127.0.0.1")), Peeked::Hello(None));
}

#[test]
fn what_is_not_a_hello_is_named() {
    assert_eq!(examine(b"GET / HTTP/1.1\r\n"), Peeked::PlainHttp);
    assert_eq!(examine(b"OPTIONS * HTTP/1.1\r\n"), Peeked::PlainHttp);
    assert!(matches!(
        examine(&[0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0]),
        Peeked::Bad(_, None)
    ));
    assert!(matches!(examine(&[0, 0, 0, 0, 0, 0]), Peeked::Bad(_, None)));
    // An application-data record first, a wrong version, an empty record.
    assert!(matches!(examine(&[23, 3, 3, 0, 1, 0]), Peeked::Bad(_, None)));
    assert!(matches!(examine(&[22, 2, 0, 0, 1, 0]), Peeked::Bad(_, Some(_))));
    assert!(matches!(examine(&[22, 3, 1, 0, 0]), Peeked::Bad(_, Some(_))));
    // A ServerHello (type 2) instead of a ClientHello.
    assert!(matches!(
        examine(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
        Peeked::Bad(_, Some(_))
    ));
    // A record of another type between the hello's records.
    let mut mixed = reframe(&hello("a.example"), 50);
    mixed[55] = 23;
    assert!(matches!(examine(&mixed), Peeked::Bad(_, Some(_))));
}

#[test]
fn an_oversized_hello_is_refused_early() {
    // Declared over the bound: refused on its first four handshake bytes.
    assert_eq!(examine(&[22, 3, 1, 0, 4, 1, 0, 0x50, 0]), Peeked::TooLarge);
    // Records that never end the message run into the bound.
    let mut records = vec![22, 3, 1, 0, 4, 1, 0, 0x3f, 0xf0];
    while records.len() <= MAX_HELLO {
        records.extend_from_slice(&[22, 3, 1, 0, 1, 0]);
    }
    assert_eq!(examine(&records), Peeked::TooLarge);
    // A record announcing more than the bound.
    assert!(matches!(
        examine(&[22, 3, 1, 0x40, 0x01]),
        Peeked::Bad(..) | Peeked::TooLarge
    ));
}

#[test]
fn corrupted_hellos_never_panic() {
    let h = reframe(&hello("alice.example"), 60);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bad = h.clone();
        let at = (seed as usize) % bad.len();
        bad[at] = (seed >> 32) as u8;
        let cut = ((seed >> 16) as usize) % (bad.len() + 1);
        let _ = examine(&bad[..cut]);
        let _ = examine(&bad);
    }
}

fn vhost(env: u32, tls: bool) -> VhostBoot {
    VhostBoot {
        server_name: String::new(),
        env,
        max_clients: 0,
        tls,
    }
}

#[test]
fn routing_follows_the_host_table_and_the_default() {
    let mut hosts = HostTable::new();
    hosts.insert("alice.example", 0);
    hosts.insert("*.bob.example", 1);
    hosts.insert("plain.example", 2);
    let vhosts = [vhost(0, true), vhost(1, true), vhost(1, false)];
    let r = |sni: Option<&str>, strict| route(&hosts, &vhosts, Some(0), strict, sni);
    assert_eq!(r(Some("alice.example"), false), Some((0, false)));
    assert_eq!(r(Some("ALICE.example"), false), Some((0, false)));
    assert_eq!(r(Some("www.bob.example"), false), Some((1, false)));
    // No name, an unknown name, a vhost without a certificate: the default, flagged.
    assert_eq!(r(None, false), Some((0, true)));
    assert_eq!(r(Some("nowhere.example"), false), Some((0, true)));
    assert_eq!(r(Some("plain.example"), false), Some((0, true)));
    // Strict: an alert for each of those.
    assert_eq!(r(None, true), None);
    assert_eq!(r(Some("nowhere.example"), true), None);
    assert_eq!(r(Some("www.bob.example"), true), Some((1, false)));
}
