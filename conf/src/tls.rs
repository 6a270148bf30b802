//! HTTPS keys: `[server] listen_tls`, `tls_default`, `tls_strict_sni`, and per vhost
//! `tls_certificate` (a PEM chain) and `tls_key` (PEM: PKCS#8, SEC1 or PKCS#1).
//!
//! The key is only ever looked at with `stat`: root never reads a tenant's key. It must
//! not be readable by the multiplexers' user (an error), should be readable by nobody
//! but the environment's uid (a warning otherwise), and must be readable by the
//! environment, whose processors load it themselves. The certificate is read and parsed
//! (a public document): its leaf must cover every name of the vhost. Both paths are host
//! paths inside the environment's chroot when it has one (processors open them in the
//! jail, as document roots).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::error::Report;
use crate::model::{Vhost, VhostTls};
use crate::tree::{Entry, Table};

/// The `[server]` keys of this module.
pub(crate) const SERVER_KEYS: &[&str] = &["listen_tls", "tls_default", "tls_strict_sni"];
/// The vhost keys of this module.
pub(crate) const VHOST_KEYS: &[&str] = &["tls_certificate", "tls_key", "redirect_to_https", "hsts_max_age"];

/// Longest `hsts_max_age` (two years, what browsers' preload lists ask for).
const MAX_HSTS_SECS: i64 = 2 * 365 * 24 * 3600;

/// Largest certificate chain file read (a chain is a few KiB).
const MAX_CHAIN_BYTES: u64 = 1 << 20;

/// Who must and must not read a key, as ids.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readers {
    /// The multiplexers' uid and gid (they drop to exactly these, no supplementary group).
    pub mux: (u32, u32),
    /// The environment's uid and gid.
    pub env: (u32, u32),
}

/// What [`judge_key`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyFinding {
    Ok,
    Warning(String),
    Error(String),
}

/// The key rule over a file's owner, group and mode (pure, unit-tested). Processes drop
/// to one uid and one gid with no supplementary groups, so these bits are what decides.
pub(crate) fn judge_key(owner: u32, group: u32, mode: u32, who: Readers) -> KeyFinding {
    let (mux_uid, mux_gid) = who.mux;
    let (env_uid, env_gid) = who.env;
    let readable = |uid: u32, gid: u32| {
        uid == 0
            || (owner == uid && mode & 0o400 != 0)
            || (group == gid && mode & 0o040 != 0)
            || mode & 0o004 != 0
    };
    if mux_uid == env_uid {
        return KeyFinding::Error(format!(
            "the multiplexers run as the environment's uid {env_uid}: they could read the key"
        ));
    }
    if readable(mux_uid, mux_gid) {
        return KeyFinding::Error(format!(
            "readable by the multiplexers' user (uid {mux_uid}, gid {mux_gid}; mode {:04o}, owner {owner}, group {group}): no key may be readable outside its environment",
            mode & 0o7777
        ));
    }
    if owner == mux_uid {
        return KeyFinding::Error(format!(
            "owned by the multiplexers' user (uid {mux_uid}), which could make it readable"
        ));
    }
    if !readable(env_uid, env_gid) {
        return KeyFinding::Error(format!(
            "the environment (uid {env_uid}, gid {env_gid}) cannot read it (mode {:04o}, owner {owner}, group {group}); its processors load it",
            mode & 0o7777
        ));
    }
    if owner != env_uid && owner != 0 {
        return KeyFinding::Warning(format!(
            "owned by uid {owner}, not the environment's uid {env_uid}: that user can read it"
        ));
    }
    if mode & 0o040 != 0 {
        return KeyFinding::Warning(format!(
            "readable by group {group} (mode {:04o}): every member can read it; make it 0400 or 0600, owned by uid {env_uid}",
            mode & 0o7777
        ));
    }
    KeyFinding::Ok
}

/// The key's file, by `stat` only (never opened).
fn key_file(path: &Path, who: Readers) -> KeyFinding {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return KeyFinding::Error(format!("'{}' cannot be checked: {e}", path.display())),
    };
    if !meta.file_type().is_file() {
        return KeyFinding::Error(format!("'{}' is not a regular file", path.display()));
    }
    match judge_key(meta.uid(), meta.gid(), meta.mode(), who) {
        KeyFinding::Ok => KeyFinding::Ok,
        KeyFinding::Warning(why) => KeyFinding::Warning(format!("key '{}' is {why}", path.display())),
        KeyFinding::Error(why) => KeyFinding::Error(format!("key '{}' is refused: {why}", path.display())),
    }
}

/// Reads a certificate chain (a regular file, at most [`MAX_CHAIN_BYTES`], opened with
/// `O_NONBLOCK | O_NOCTTY` so that a FIFO or a terminal cannot hang the check) and returns its certificates, leaf first.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("'{}' cannot be opened: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("'{}' cannot be checked: {e}", path.display()))?;
    let kind = meta.file_type();
    if !kind.is_file() || kind.is_fifo() {
        return Err(format!("'{}' is not a regular file", path.display()));
    }
    if meta.len() > MAX_CHAIN_BYTES {
        return Err(format!(
            "'{}' is {} bytes, more than a certificate chain ({MAX_CHAIN_BYTES} at most)",
            path.display(),
            meta.len()
        ));
    }
    let mut text = Vec::new();
    file.take(MAX_CHAIN_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| format!("'{}' cannot be read: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&text).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!(
            "'{}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )),
        Err(e) => Err(format!(
            "'{}' is not a PEM certificate chain: {e}",
            path.display()
        )),
    }
}

/// The names of `leaf` a vhost's `names` are not covered by. A wildcard vhost name
/// (`*.example.com`) is covered only by a wildcard certificate name for that domain.
pub(crate) fn uncovered(leaf: &CertificateDer<'_>, names: &[&str]) -> Result<Vec<String>, String> {
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("its first certificate cannot be parsed: {e}"))?;
    let mut missing = Vec::new();
    for name in names {
        // A name only a wildcard certificate name matches: a label no one registers.
        let probe = match name.strip_prefix("*.") {
            Some(domain) => format!("bulkhead-wildcard-probe.{domain}"),
            None => (*name).to_string(),
        };
        let covered = match ServerName::try_from(probe.as_str()) {
            Ok(server_name) => cert.verify_is_valid_for_subject_name(&server_name).is_ok(),
            Err(_) => false,
        };
        if !covered {
            missing.push((*name).to_string());
        }
    }
    Ok(missing)
}

/// A vhost's `tls_certificate` and `tls_key`: `Some(None)` when neither is set.
/// `chroot`: the environment's, when it has one; `who`: `None` when an id is invalid
/// (reported elsewhere).
pub(crate) fn vhost(
    t: &Table,
    r: &mut Report,
    names: &[&str],
    chroot: Option<&Path>,
    who: Option<Readers>,
) -> Option<Option<VhostTls>> {
    let certificate = t.get("tls_certificate");
    let key = t.get("tls_key");
    let (certificate, key) = match (certificate, key) {
        (None, None) => return Some(None),
        (Some(c), Some(k)) => (c, k),
        (Some(e), None) | (None, Some(e)) => {
            e.error(r, "tls_certificate and tls_key go together: set both or neither");
            return None;
        }
    };
    let cert_path = jailed_path(&certificate, r, chroot);
    let key_path = jailed_path(&key, r, chroot);
    if let (Some(path), Some(who)) = (&key_path, who) {
        match key_file(path, who) {
            KeyFinding::Ok => {}
            KeyFinding::Warning(why) => r.warn(&key.span, &key.path, why),
            KeyFinding::Error(why) => {
                key.error(r, why);
                return None;
            }
        }
    }
    if let Some(path) = &cert_path {
        let chain = match read_chain(path) {
            Ok(chain) => chain,
            Err(why) => {
                certificate.error(r, why);
                return None;
            }
        };
        match uncovered(&chain[0], names) {
            Ok(missing) if missing.is_empty() => {}
            Ok(missing) => {
                certificate.error(
                    r,
                    format!(
                        "certificate '{}' does not cover {} of this vhost",
                        path.display(),
                        missing
                            .iter()
                            .map(|n| format!("'{n}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return None;
            }
            Err(why) => {
                certificate.error(r, format!("certificate '{}': {why}", path.display()));
                return None;
            }
        }
    }
    Some(Some(VhostTls {
        certificate: cert_path?,
        key: key_path?,
    }))
}

/// A vhost's `redirect_to_https` and `hsts_max_age`; both need its certificate
/// (`has_tls`), and a redirect needs `listen_tls`.
pub(crate) fn policy(
    t: &Table,
    r: &mut Report,
    has_tls: bool,
    listen_tls: bool,
) -> Option<(bool, Option<u64>)> {
    let redirect = match t.get("redirect_to_https") {
        None => Some(false),
        Some(e) => e.bool(r).and_then(|on| {
            if on && !(has_tls && listen_tls) {
                e.error(
                    r,
                    "redirect_to_https needs this vhost's tls_certificate and [server] listen_tls",
                );
                return None;
            }
            Some(on)
        }),
    };
    let hsts = match t.get("hsts_max_age") {
        None => Some(None),
        Some(e) => e.int_in(r, 0, MAX_HSTS_SECS).and_then(|secs| {
            if !has_tls {
                e.error(r, "hsts_max_age needs this vhost's tls_certificate");
                return None;
            }
            Some(Some(secs as u64))
        }),
    };
    Some((redirect?, hsts?))
}

/// An absolute path, inside `chroot` when there is one.
fn jailed_path(entry: &Entry, r: &mut Report, chroot: Option<&Path>) -> Option<PathBuf> {
    let path = entry.abs_path(r)?;
    if let Some(root) = chroot {
        if !path.starts_with(root) {
            entry.error(
                r,
                format!(
                    "'{}' is outside the environment's chroot '{}' (its processors open it in the jail)",
                    path.display(),
                    root.display()
                ),
            );
            return None;
        }
    }
    Some(path)
}

/// `[server] tls_strict_sni`: default false.
pub(crate) fn strict_sni(t: &Table, r: &mut Report) -> Option<bool> {
    match t.get("tls_strict_sni") {
        None => Some(false),
        Some(e) => e.bool(r),
    }
}

/// `[server] tls_default` and the vhosts: the TLS default vhost (the named one, else the
/// first with a certificate), and the rules between `listen_tls` and certificates.
pub(crate) fn default_vhost(
    server: &Table,
    r: &mut Report,
    listen_tls: bool,
    vhosts: &[Vhost],
) -> Option<Option<usize>> {
    let first = vhosts.iter().position(|v| v.tls.is_some());
    let chosen = match server.get("tls_default") {
        None => first,
        Some(e) => {
            let name = e.str(r)?.to_ascii_lowercase();
            let found = vhosts
                .iter()
                .position(|v| v.server_name == name || v.server_alias.contains(&name));
            match found {
                None => {
                    e.error(
                        r,
                        format!("tls_default '{name}' is no vhost's server_name or alias"),
                    );
                    return None;
                }
                Some(i) if vhosts[i].tls.is_none() => {
                    e.error(
                        r,
                        format!("tls_default '{name}' names a vhost without tls_certificate"),
                    );
                    return None;
                }
                Some(i) => Some(i),
            }
        }
    };
    match (listen_tls, chosen) {
        (true, None) => {
            let e = server.get("listen_tls");
            let span = e.as_ref().and_then(|e| e.span.clone());
            r.error(
                &span,
                &server.key_path("listen_tls"),
                "listen_tls is set but no vhost has tls_certificate and tls_key",
            );
            None
        }
        (false, Some(_)) => {
            r.warn(
                &server.span,
                &server.path,
                "vhosts have certificates but [server] listen_tls is empty: no HTTPS is served",
            );
            Some(chosen)
        }
        _ => Some(chosen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHO: Readers = Readers {
        mux: (2000, 2000),
        env: (2001, 2001),
    };

    #[test]
    fn a_key_only_its_environment_reads_passes() {
        assert_eq!(judge_key(2001, 2001, 0o600, WHO), KeyFinding::Ok);
        assert_eq!(judge_key(2001, 2001, 0o400, WHO), KeyFinding::Ok);
        assert_eq!(
            judge_key(0, 2001, 0o040, WHO),
            KeyFinding::Warning(judge_key_warning(0o040))
        );
    }

    fn judge_key_warning(mode: u32) -> String {
        match judge_key(0, 2001, mode, WHO) {
            KeyFinding::Warning(w) => w,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_the_multiplexers_can_read_is_refused() {
        for (owner, group, mode) in [
            (2001, 2001, 0o604),
            (2001, 2001, 0o644),
            (2001, 2000, 0o640),
            (2000, 2000, 0o400),
            (2000, 2000, 0o000),
            (0, 0, 0o444),
        ] {
            match judge_key(owner, group, mode, WHO) {
                KeyFinding::Error(why) => assert!(why.contains("multiplexers"), "{why}"),
                other => panic!("{owner} {group} {mode:o}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_key_the_environment_cannot_read_is_refused() {
        match judge_key(0, 0, 0o600, WHO) {
            KeyFinding::Error(why) => assert!(why.contains("cannot read"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_others_of_its_group_or_another_owner_can_read_is_a_warning() {
        assert!(matches!(
            judge_key(2001, 2001, 0o640, WHO),
            KeyFinding::Warning(_)
        ));
        assert!(matches!(
            judge_key(2002, 2001, 0o040, WHO),
            KeyFinding::Warning(_)
        ));
    }

    #[test]
    fn multiplexers_as_the_environment_are_refused() {
        let same = Readers {
            mux: (2001, 2001),
            env: (2001, 2001),
        };
        assert!(matches!(judge_key(2001, 2001, 0o600, same), KeyFinding::Error(_)));
    }
}
