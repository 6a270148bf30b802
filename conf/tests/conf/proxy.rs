//! `[server] proxy_protocol` and `proxy_protocol_from`.

use std::net::SocketAddr;

use conf::Cidr;

use crate::*;

const TWO: &str = r#"
[server]
user = 2000
group = 2000
listen = ["127.0.0.1:8080", "127.0.0.2:8080", "127.0.0.1:8443"]
"#;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn off_by_default() {
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    assert!(config.server.proxy_protocol.is_empty());
    assert!(config.server.proxy_protocol_from.is_empty());
}

#[test]
fn true_means_every_listener() {
    let text = cat(&[
        TWO,
        "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"127.0.0.1\", \"::1/128\"]\n",
        ALICE,
        VHOST,
    ]);
    let s = parse(&text).server;
    assert_eq!(
        s.proxy_protocol,
        [sa("127.0.0.1:8080"), sa("127.0.0.2:8080"), sa("127.0.0.1:8443")]
    );
    let want = [
        Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        },
        Cidr {
            addr: "127.0.0.1".parse().unwrap(),
            prefix: 32,
        },
        Cidr {
            addr: "::1".parse().unwrap(),
            prefix: 128,
        },
    ];
    assert_eq!(s.proxy_protocol_from, want);
    let text = cat(&[TWO, "proxy_protocol = false\n", ALICE, VHOST]);
    assert!(parse(&text).server.proxy_protocol.is_empty());
}

#[test]
fn a_list_names_listeners() {
    let text = cat(&[
        TWO,
        "proxy_protocol = [\"127.0.0.2:8080\", \"127.0.0.1:8443\"]\nproxy_protocol_from = [\"127.0.0.0/8\"]\n",
        ALICE,
        VHOST,
    ]);
    let s = parse(&text).server;
    assert_eq!(s.proxy_protocol, [sa("127.0.0.2:8080"), sa("127.0.0.1:8443")]);
}

#[test]
fn errors_name_line_and_key() {
    // On without proxy_protocol_from: at the line that turned it on.
    let text = cat(&[TWO, "proxy_protocol = true\n", ALICE, VHOST]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "proxy_protocol = true"),
        "server.proxy_protocol_from",
        "required when proxy_protocol is on",
    );
    // From without on.
    let text = cat(&[TWO, "proxy_protocol_from = [\"10.0.0.0/8\"]\n", ALICE, VHOST]);
    let errs = errors(&text);
    assert_has(
        &errs,
        line_of(&text, "proxy_protocol_from"),
        "server.proxy_protocol_from",
        "no listener reads a PROXY header",
    );
    // Every bad element at once, each on its own line.
    let text = cat(&[
        TWO,
        "proxy_protocol = [\n  \"127.0.0.9:8080\",\n  \"nonsense\",\n  \"127.0.0.1:8080\",\n  \"127.0.0.1:8080\",\n]\n",
        "proxy_protocol_from = [\n  \"10.0.0.1/8\",\n  \"300.1.1.1\",\n]\n",
        ALICE,
        VHOST,
    ]);
    let errs = errors(&text);
    let lines: Vec<_> = errs.iter().map(|e| (e.line, e.key.clone())).collect();
    assert_eq!(errs.len(), 5, "{lines:?}");
    let at = |needle: &str| {
        let n = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        errs.iter()
            .find(|e| e.line == n)
            .unwrap_or_else(|| panic!("no error at {needle}: {lines:?}"))
            .to_string()
    };
    assert!(at("127.0.0.9:8080").contains("not in listen or listen_tls"));
    assert!(at("nonsense").contains("invalid socket address"));
    assert!(at("300.1.1.1").contains("invalid address block"));
    assert!(at("10.0.0.1/8").contains("invalid address block"));
    assert!(errs.iter().any(|e| e.to_string().contains("listed twice")));
    // Wrong types and empty lists.
    let text = cat(&[
        TWO,
        "proxy_protocol = 1\nproxy_protocol_from = []\n",
        ALICE,
        VHOST,
    ]);
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.key == "server.proxy_protocol"), "{errs:?}");
    assert!(errs
        .iter()
        .any(|e| e.key == "server.proxy_protocol_from" && e.to_string().contains("at least one")));
}
