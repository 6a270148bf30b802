//! `[server] listen_tls`, `tls_default`, `tls_strict_sni` and a vhost's
//! `tls_certificate` / `tls_key`: the key judged by its owner and mode only (the
//! multiplexers' user must not read it, nobody but the environment should), the
//! certificate parsed and checked against the vhost's names. Certificates are made with
//! the `openssl` command; the owner tests need root (to chown) and pass without it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::*;

/// A self-signed certificate for `names` and its key in `dir`, named after `stem`; the
/// key is the environment's (2001), mode 0600, when running as root.
fn cert(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            &format!("/CN={}", names[0]),
            "-addext",
            &format!("subjectAltName={san}"),
        ])
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    own(&k, 2001, 2001, 0o600);
    (c, k)
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// chown (as root only) and chmod.
fn own(path: &Path, uid: u32, gid: u32, mode: u32) {
    if root() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn tls_vhost(name: &str, alias: &[&str], c: &Path, k: &Path) -> String {
    let alias = alias
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "\n[[vhosts]]\nserver_name = \"{name}\"\nserver_alias = [{alias}]\nenvironment = \"alice\"\ndocument_root = \"/srv/alice/www\"\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n",
        c.display(),
        k.display()
    )
}

const TLS_LISTEN: &str = "listen_tls = [\"127.0.0.1:0\"]\n";

#[test]
fn a_vhost_with_a_certificate_that_covers_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path(), "a", &["alice.example", "*.alice.example"]);
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        VHOST,
        &tls_vhost("www.alice.example", &["*.alice.example"], &c, &k),
    ]);
    let config = parse(&text);
    assert_eq!(config.server.listen_tls, ["127.0.0.1:0".parse().unwrap()]);
    // The first vhost has no certificate: the default is the first that has one.
    assert_eq!(config.server.tls_default, Some(1));
    assert!(!config.server.tls_strict_sni);
    let tls = config.vhosts[1].tls.as_ref().expect("tls");
    assert_eq!(
        (tls.certificate.as_path(), tls.key.as_path()),
        (c.as_path(), k.as_path())
    );
    assert!(config.vhosts[0].tls.is_none());
    if root() {
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }
    // Without TLS anywhere, nothing changes.
    let config = parse(&cat(&[SERVER, ALICE, VHOST]));
    assert!(config.server.listen_tls.is_empty());
    assert_eq!(config.server.tls_default, None);
}

#[test]
fn tls_default_and_strict_sni() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path(), "a", &["a.example", "b.example"]);
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        "tls_default = \"B.example\"\ntls_strict_sni = true\n",
        ALICE,
        &tls_vhost("a.example", &[], &c, &k),
        &tls_vhost("b.example", &[], &c, &k),
    ]);
    let config = parse(&text);
    assert_eq!(config.server.tls_default, Some(1));
    assert!(config.server.tls_strict_sni);

    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        "tls_default = \"alice.example\"\n",
        ALICE,
        VHOST,
        &tls_vhost("a.example", &[], &c, &k),
    ]);
    let errors = errors(&text);
    assert_has(
        &errors,
        line_of(&text, "tls_default"),
        "server.tls_default",
        "without tls_certificate",
    );
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        "tls_strict_sni = 1\n",
        ALICE,
        &tls_vhost("a.example", &[], &c, &k),
    ]);
    assert_has(
        &errors_of(&text),
        line_of(&text, "tls_strict_sni"),
        "server.tls_strict_sni",
        "true or false",
    );
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        "tls_default = \"nowhere.example\"\n",
        ALICE,
        &tls_vhost("a.example", &[], &c, &k),
    ]);
    assert_has(
        &errors_of(&text),
        line_of(&text, "tls_default"),
        "server.tls_default",
        "no vhost's",
    );
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    errors(text)
}

#[test]
fn listen_tls_needs_a_certificate_and_its_own_addresses() {
    let text = cat(&[SERVER, TLS_LISTEN, ALICE, VHOST]);
    let errors = errors(&text);
    assert_has(
        &errors,
        line_of(&text, "listen_tls"),
        "server.listen_tls",
        "no vhost has tls_certificate",
    );
    let text = cat(&[SERVER, "listen_tls = [\"127.0.0.1:0\", \"bad\"]\n", ALICE, VHOST]);
    assert_has(
        &errors_of(&text),
        line_of(&text, "listen_tls"),
        "server.listen_tls[1]",
        "invalid socket address",
    );
    let server = SERVER.replace("127.0.0.1:0", "127.0.0.1:8080");
    let text = cat(&[&server, "listen_tls = [\"127.0.0.1:8080\"]\n", ALICE, VHOST]);
    assert_has(
        &errors_of(&text),
        line_of(&text, "listen_tls"),
        "server.listen_tls",
        "also in listen",
    );
}

#[test]
fn a_certificate_that_misses_a_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path(), "a", &["alice.example"]);
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("alice.example", &["www.alice.example", "*.alice.example"], &c, &k),
    ]);
    let errors = errors(&text);
    let e = errors
        .iter()
        .find(|e| e.key == "vhosts[0].tls_certificate")
        .expect("an error");
    assert_eq!(e.line, line_of(&text, "tls_certificate"));
    assert!(
        e.message.contains("'www.alice.example', '*.alice.example'"),
        "{e}"
    );
    // A wildcard certificate covers one label, not the bare domain; a wildcard vhost
    // name needs a wildcard certificate name.
    let (c, k) = cert(dir.path(), "w", &["*.alice.example"]);
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("www.alice.example", &["alice.example"], &c, &k),
    ]);
    let errors = errors_of(&text);
    let e = errors
        .iter()
        .find(|e| e.key == "vhosts[0].tls_certificate")
        .expect("an error");
    assert!(
        e.message.contains("'alice.example'") && !e.message.contains("www"),
        "{e}"
    );
    let (c, k) = cert(dir.path(), "x", &["x.alice.example"]);
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("x.alice.example", &["*.alice.example"], &c, &k),
    ]);
    let errors = errors_of(&text);
    assert!(
        errors.iter().any(|e| e.message.contains("'*.alice.example'")),
        "{errors:?}"
    );
}

#[test]
fn a_certificate_that_is_not_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, k) = cert(dir.path(), "a", &["alice.example"]);
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("alice.example", &[], &garbage, &k),
    ]);
    let errors = errors(&text);
    assert_has(
        &errors,
        line_of(&text, "tls_certificate"),
        "vhosts[0].tls_certificate",
        "no PEM certificate",
    );
    let missing = dir.path().join("missing.crt");
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("alice.example", &[], &missing, &k),
    ]);
    assert_has(
        &errors_of(&text),
        line_of(&text, "tls_certificate"),
        "vhosts[0].tls_certificate",
        "cannot be opened",
    );
    // The key itself as the certificate: no certificate in it (and it is not parsed).
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("alice.example", &[], &k, &k),
    ]);
    assert_has(
        &errors_of(&text),
        line_of(&text, "tls_certificate"),
        "vhosts[0].tls_certificate",
        "no PEM certificate",
    );
}

#[test]
fn certificate_and_key_go_together() {
    let text = cat(&[SERVER, ALICE, VHOST, "tls_certificate = \"/etc/ssl/alice.crt\"\n"]);
    assert_has(
        &errors(&text),
        line_of(&text, "tls_certificate"),
        "vhosts[0].tls_certificate",
        "go together",
    );
    let text = cat(&[SERVER, ALICE, VHOST, "tls_key = \"relative.key\"\n"]);
    assert_has(
        &errors(&text),
        line_of(&text, "tls_key"),
        "vhosts[0].tls_key",
        "go together",
    );
}

#[test]
fn a_key_the_multiplexers_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path(), "a", &["alice.example"]);
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("alice.example", &[], &c, &k),
    ]);
    own(&k, 2001, 2001, 0o644);
    assert_has(
        &errors(&text),
        line_of(&text, "tls_key"),
        "vhosts[0].tls_key",
        "readable by the multiplexers' user",
    );
    if !root() {
        eprintln!("not root: the owner cases are skipped");
        return;
    }
    own(&k, 2001, 2000, 0o640);
    assert_has(
        &errors(&text),
        line_of(&text, "tls_key"),
        "vhosts[0].tls_key",
        "readable by the multiplexers' user",
    );
    own(&k, 2000, 2001, 0o040);
    assert_has(
        &errors(&text),
        line_of(&text, "tls_key"),
        "vhosts[0].tls_key",
        "owned by the multiplexers' user",
    );
    own(&k, 0, 0, 0o600);
    assert_has(
        &errors(&text),
        line_of(&text, "tls_key"),
        "vhosts[0].tls_key",
        "cannot read it",
    );
    // Readable by others of the environment's group: loads, with a warning.
    own(&k, 2001, 2001, 0o640);
    let config = parse(&text);
    let w = config
        .warnings
        .iter()
        .find(|w| w.key == "vhosts[0].tls_key")
        .expect("a warning");
    assert_eq!(w.line, line_of(&text, "tls_key"));
    assert!(w.message.contains("readable by group 2001"), "{w}");
    own(&k, 2002, 2001, 0o440);
    let config = parse(&text);
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.message.contains("owned by uid 2002")),
        "{:?}",
        config.warnings
    );
    own(&k, 2001, 2001, 0o400);
    assert!(parse(&text).warnings.is_empty());
}

#[test]
fn redirect_to_https_and_hsts_need_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path(), "a", &["alice.example"]);
    let policy = "redirect_to_https = true\nhsts_max_age = 31536000\n";
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("alice.example", &[], &c, &k),
        policy,
    ]);
    let config = parse(&text);
    assert!(config.vhosts[0].redirect_to_https);
    assert_eq!(config.vhosts[0].hsts_max_age, Some(31_536_000));
    let config = parse(&cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("alice.example", &[], &c, &k),
    ]));
    assert!(!config.vhosts[0].redirect_to_https);
    assert_eq!(config.vhosts[0].hsts_max_age, None);
    // Without a certificate on the vhost.
    let text = cat(&[SERVER, ALICE, VHOST, policy]);
    let errors = errors(&text);
    assert_has(
        &errors,
        line_of(&text, "redirect_to_https"),
        "vhosts[0].redirect_to_https",
        "needs this vhost's tls_certificate",
    );
    assert_has(
        &errors,
        line_of(&text, "hsts_max_age"),
        "vhosts[0].hsts_max_age",
        "needs this vhost's tls_certificate",
    );
    // A redirect with nowhere to go.
    let text = cat(&[
        SERVER,
        ALICE,
        &tls_vhost("alice.example", &[], &c, &k),
        "redirect_to_https = true\n",
    ]);
    assert_has(
        &errors_of(&text),
        line_of(&text, "redirect_to_https"),
        "vhosts[0].redirect_to_https",
        "listen_tls",
    );
    let text = cat(&[
        SERVER,
        TLS_LISTEN,
        ALICE,
        &tls_vhost("alice.example", &[], &c, &k),
        "hsts_max_age = -1\n",
    ]);
    assert_has(
        &errors_of(&text),
        line_of(&text, "hsts_max_age"),
        "vhosts[0].hsts_max_age",
        "between 0 and",
    );
}
