//! HTTPS in the processor: its sites' certificate chains and keys, read by the
//! processor itself as the environment (inside its chroot) when it starts, and the
//! handshake on a connection the multiplexer routed by its ClientHello without reading
//! it.
//!
//! rustls with the `ring` provider, TLS 1.2 and 1.3 only, ALPN `h2` (unless `[server]
//! http2 = false`) then `http/1.1`. One
//! `ServerConfig` per site, all of this processor's sharing one ticketer and one session
//! cache: tickets are sealed with keys derived from the environment's seed
//! ([`tickets`]), so a session resumes on any processor of this environment and
//! generation and on no other environment's (whose seed is not here). The hello is read again here and its
//! server name checked against the multiplexer's answer: a disagreement is a refused
//! handshake, never another vhost's certificate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::control::{SiteTls, TicketSeed};
use rustls::server::{Acceptor, ServerConfig, ServerSessionMemoryCache};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::route::{Sites, FOREIGN};

mod tickets;

/// Largest certificate chain or key file read.
const MAX_PEM: u64 = 1 << 20;
/// TLS 1.2 sessions remembered (by id) per processor.
const SESSION_CACHE: usize = 1024;

/// Why a site's certificate or key could not be loaded, or a handshake failed.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: more than {MAX_PEM} bytes")]
    TooLarge { path: String },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key in it (PKCS#8, SEC1 or PKCS#1)")]
    NoKey { path: String },
    #[error("site {site}: {source}")]
    Config { site: String, source: rustls::Error },
    #[error("the TLS ticketer: {0}")]
    Ticketer(rustls::Error),
    #[error("ClientHello: {0}")]
    Hello(std::io::Error),
    #[error("handshake: {0}")]
    Handshake(std::io::Error),
    #[error("no ClientHello or handshake within {0:?}")]
    Timeout(Duration),
    #[error("the server name {sni:?} does not agree with the multiplexer's routing (vhost {vhost})")]
    Disagrees { sni: Option<String>, vhost: u32 },
    #[error("vhost {0} has no certificate loaded in this processor")]
    NoConfig(u32),
}

/// This processor's TLS configurations, by vhost id.
#[derive(Default)]
pub struct TlsSites {
    configs: HashMap<u32, Arc<ServerConfig>>,
    /// Each site's leaf certificate (DER), for [`TlsSites::covers`].
    leaves: HashMap<u32, CertificateDer<'static>>,
}

impl TlsSites {
    /// Loads every site's certificate and key (`(vhost id, server name, paths)`). A site
    /// whose files cannot be loaded is left out (its handshakes are refused) with the
    /// error returned, so one broken site does not stop the others.
    pub fn load<'a>(
        sites: impl Iterator<Item = (u32, &'a str, &'a SiteTls)>,
        seed: Option<&TicketSeed>,
        h2: bool,
    ) -> (TlsSites, Vec<TlsError>) {
        let mut out = TlsSites::default();
        let mut errors = Vec::new();
        let shared = match Shared::new(seed) {
            Ok(shared) => shared,
            Err(e) => return (out, vec![e]),
        };
        for (vhost, name, files) in sites {
            match config(name, files, &shared, h2) {
                Ok((config, leaf)) => {
                    out.configs.insert(vhost, config);
                    out.leaves.insert(vhost, leaf);
                }
                Err(e) => errors.push(e),
            }
        }
        (out, errors)
    }

    pub fn has(&self, vhost: u32) -> bool {
        self.configs.contains_key(&vhost)
    }

    /// Whether the certificate `vhost`'s handshakes present covers `host` (a request
    /// for another of our vhosts on that connection is then served, as a browser that
    /// coalesces connections expects; otherwise 421).
    pub fn covers(&self, vhost: u32, host: &str) -> bool {
        let Some(leaf) = self.leaves.get(&vhost) else {
            return false;
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let (Ok(cert), Ok(name)) = (
            webpki::EndEntityCert::try_from(leaf),
            rustls_pki_types::ServerName::try_from(host),
        ) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    }
}

/// What every site's configuration of this processor shares.
struct Shared {
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Arc<ServerSessionMemoryCache>,
}

impl Shared {
    /// With the environment's seed, its shared tickets; without (never sent for an
    /// environment with a certificate), this processor's own.
    fn new(seed: Option<&TicketSeed>) -> Result<Shared, TlsError> {
        let ticketer: Arc<dyn rustls::server::ProducesTickets> = match seed {
            Some(seed) => Arc::new(tickets::Tickets::new(&seed.0)),
            None => rustls::crypto::ring::Ticketer::new().map_err(TlsError::Ticketer)?,
        };
        Ok(Shared {
            ticketer,
            cache: ServerSessionMemoryCache::new(SESSION_CACHE),
        })
    }
}

/// Reads a PEM file (bounded), as this process (the environment).
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let shown = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: shown(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TlsError::Read {
            path: shown(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM {
        return Err(TlsError::TooLarge { path: shown() });
    }
    Ok(bytes)
}

/// Overwrites a buffer that held key material before it is freed.
fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference; a volatile write keeps
        // the compiler from dropping the overwrite of memory about to be freed.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

/// A site's configuration, and its leaf certificate.
type Loaded = (Arc<ServerConfig>, CertificateDer<'static>);

fn config(name: &str, files: &SiteTls, shared: &Shared, h2: bool) -> Result<Loaded, TlsError> {
    let chain_pem = read_pem(&files.certificate)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.certificate.display().to_string(),
        });
    }
    let leaf = chain[0].clone();
    let mut key_pem = read_pem(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem);
    wipe(&mut key_pem);
    let key = key.map_err(|_| TlsError::NoKey {
        path: files.key.display().to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let site = || name.to_string();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Config { site: site(), source })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config { site: site(), source })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if h2 {
        config.alpn_protocols.insert(0, crate::h2::ALPN.to_vec());
    }
    config.ticketer = shared.ticketer.clone();
    config.session_storage = shared.cache.clone();
    Ok((Arc::new(config), leaf))
}

/// Whether a hello's server name agrees with the multiplexer's routing (pure): routed
/// by name, the name must reach that same vhost here; routed to the TLS default, the
/// name must not reach another of our vhosts that has a certificate (the multiplexer
/// would have sent it there).
pub(crate) fn agrees(
    sites: &Sites,
    has_tls: impl Fn(u32) -> bool,
    vhost: u32,
    by_default: bool,
    sni: Option<&str>,
) -> bool {
    let reached = sni
        .and_then(|name| sites.hosts.lookup(name))
        .filter(|&i| i != FOREIGN)
        .and_then(|i| sites.sites.get(i))
        .map(|s| s.vhost_id);
    match (by_default, reached) {
        (false, Some(v)) => v == vhost,
        (false, None) => false,
        (true, Some(v)) => v == vhost || !has_tls(v),
        (true, None) => true,
    }
}

/// The slot word counting a failed handshake.
pub(crate) fn failure_word(e: &TlsError) -> usize {
    use common::scoreboard::slot;
    match e {
        TlsError::Timeout(_) => slot::TLS_FAIL_TIMEOUT,
        TlsError::Disagrees { .. } => slot::TLS_FAIL_SERVER_NAME,
        _ => slot::TLS_FAIL_ERROR,
    }
}

/// Reads the ClientHello, checks its server name, and completes the handshake with the
/// certificate of `vhost`, all within `within`.
pub(crate) async fn accept(
    stream: TcpStream,
    tls: &TlsSites,
    sites: &Sites,
    vhost: u32,
    by_default: bool,
    within: Duration,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
            .await
            .map_err(TlsError::Hello)?;
        let sni = start.client_hello().server_name().map(str::to_ascii_lowercase);
        if !agrees(sites, |v| tls.has(v), vhost, by_default, sni.as_deref()) {
            return Err(TlsError::Disagrees { sni, vhost });
        }
        let config = tls.configs.get(&vhost).ok_or(TlsError::NoConfig(vhost))?.clone();
        start.into_stream(config).await.map_err(TlsError::Handshake)
    };
    match tokio::time::timeout(within, handshake).await {
        Ok(r) => r,
        Err(_) => Err(TlsError::Timeout(within)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Site;
    use common::vhost::HostTable;

    #[test]
    fn the_server_name_must_agree_with_the_routing() {
        let mut hosts = HostTable::new();
        hosts.insert("a.test", 0);
        hosts.insert("b.test", 1);
        hosts.insert("plain.test", 2);
        hosts.insert("other.test", FOREIGN);
        let sites = Sites {
            sites: vec![
                Site::plain(4, "a.test", "/".into()),
                Site::plain(5, "b.test", "/".into()),
                Site::plain(6, "plain.test", "/".into()),
            ],
            hosts,
        };
        let tls = |v: u32| v != 6;
        // Routed by name: exactly that vhost.
        assert!(agrees(&sites, tls, 4, false, Some("a.test")));
        assert!(!agrees(&sites, tls, 4, false, Some("b.test")));
        assert!(!agrees(&sites, tls, 4, false, None));
        assert!(!agrees(&sites, tls, 4, false, Some("other.test")));
        // Routed to the default: any name that reaches no other certificate of ours.
        assert!(agrees(&sites, tls, 4, true, None));
        assert!(agrees(&sites, tls, 4, true, Some("nowhere.test")));
        assert!(agrees(&sites, tls, 4, true, Some("other.test")));
        assert!(agrees(&sites, tls, 4, true, Some("plain.test")));
        assert!(!agrees(&sites, tls, 4, true, Some("b.test")));
    }
}
