//! Which later requests of a connection stay in this processor: its own hosts, and the
//! host the multiplexer routed to the default vhost; anything else goes back to a
//! multiplexer. The first request is never re-checked (the multiplexer chose it).

use common::head::{self, MAX_HEADERS};
use common::vhost::HostTable;

use crate::handler::Site;
use crate::session::Router;

/// This processor's sites and its cut of the multiplexers' host table.
pub(crate) struct Sites {
    pub sites: Vec<Site>,
    /// The multiplexers' host table cut down to the entries that decide this
    /// environment's hosts: its own (index into `sites`) and every other environment's
    /// entry that overlaps one of them ([`FOREIGN`]), in the multiplexers' order, so a
    /// lookup here reaches the multiplexers' answer for every host of ours.
    pub hosts: HostTable,
}

/// A host-table entry of another environment.
pub(crate) const FOREIGN: usize = common::control::FOREIGN_HOST as usize;

impl Sites {
    pub fn by_vhost(&self, id: u32) -> Option<&Site> {
        self.sites.iter().find(|s| s.vhost_id == id)
    }
}

/// Routes the later requests of one connection: our own hosts stay; the host the
/// multiplexer sent to our default vhost stays with it; anything else (another
/// environment's, or one we cannot tell) goes back to a multiplexer, which decides.
pub(crate) struct ConnRouter<'a> {
    pub sites: &'a Sites,
    /// When the first request was routed to vhost 0: its head, parsed only if a later
    /// request's host is not one of ours (then: was it the host routed by default?).
    pub first_head: Option<Vec<u8>>,
    pub default_host: std::cell::OnceCell<Option<Option<String>>>,
}

impl Router for ConnRouter<'_> {
    fn route(&self, host: Option<&str>) -> Option<&Site> {
        match host.and_then(|h| self.sites.hosts.lookup(h)) {
            Some(FOREIGN) => return None,
            Some(i) => return self.sites.sites.get(i),
            None => {}
        }
        let default = self.default_host.get_or_init(|| {
            self.first_head
                .as_deref()
                .and_then(|h| default_routed_host(self.sites, h))
        });
        match default {
            Some(d) if d.as_deref().map(str::to_ascii_lowercase) == host.map(str::to_ascii_lowercase) => {
                self.sites.by_vhost(0)
            }
            _ => None,
        }
    }
}

impl ConnRouter<'_> {
    /// What routing needs of the connection once it is parked: the host routed by
    /// default, decided now, so the first head is not kept (`Some(None)`: routed by
    /// default with no host; `None`: not routed by default). A router made again with
    /// it in `default_host` routes as this one.
    pub fn into_default_host(self) -> Option<Option<String>> {
        let ConnRouter {
            sites,
            first_head,
            default_host,
        } = self;
        default_host
            .into_inner()
            .unwrap_or_else(|| first_head.as_deref().and_then(|h| default_routed_host(sites, h)))
    }
}

/// Routes every request of a TLS connection, the first included (the multiplexer saw
/// only the ClientHello). Served: a host of the connection's own vhost, a missing host,
/// and on a connection routed to the TLS default (no server name, or an unknown one) a
/// host that is not ours and is the server name (or any such host when none was sent).
/// A host of another of our vhosts is served by it when the certificate presented
/// covers that host (a browser coalescing connections). Anything else (another
/// environment's host, our other vhosts the certificate does not cover, a name the
/// certificate was not chosen for) gets 421, since a decrypted connection cannot be
/// handed back.
pub(crate) struct TlsRouter<'a> {
    pub sites: &'a Sites,
    /// The vhost whose certificate the handshake presented.
    pub vhost: u32,
    /// Routed to the TLS default.
    pub by_default: bool,
    /// The ClientHello's server name (lower-cased).
    pub sni: Option<String>,
    /// Requests refused (each gets 421), for the slot's `TLS_MISDIRECTED`.
    pub misdirected: &'a std::cell::Cell<u64>,
    /// Whether the certificate presented covers a host (`TlsSites::covers`): a host of
    /// another of our vhosts that it covers is served by that vhost.
    pub covers: &'a dyn Fn(&str) -> bool,
}

impl Router for TlsRouter<'_> {
    fn route(&self, host: Option<&str>) -> Option<&Site> {
        let site = self.decide(host);
        if site.is_none() {
            self.misdirected.set(self.misdirected.get().saturating_add(1));
        }
        site
    }
}

impl TlsRouter<'_> {
    fn decide(&self, host: Option<&str>) -> Option<&Site> {
        let Some(host) = host else {
            return self.sites.by_vhost(self.vhost);
        };
        match self.sites.hosts.lookup(host) {
            Some(FOREIGN) => None,
            Some(i) => self
                .sites
                .sites
                .get(i)
                .filter(|s| s.vhost_id == self.vhost || (self.covers)(host)),
            None if self.by_default => {
                let host = host.strip_suffix('.').unwrap_or(host);
                match &self.sni {
                    Some(sni) if !sni.eq_ignore_ascii_case(host) => None,
                    _ => self.sites.by_vhost(self.vhost),
                }
            }
            None => None,
        }
    }
}

/// The host of the first request in `buf` when it is not one of ours (routed by default).
fn default_routed_host(sites: &Sites, buf: &[u8]) -> Option<Option<String>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let host = head::parse(buf, &mut headers, usize::MAX).ok()??.host;
    match host {
        Some(h) if sites.hosts.lookup(h).is_some() => None,
        h => Some(h.map(str::to_owned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(vhost_id: u32, name: &str) -> Site {
        Site::plain(vhost_id, name, "/".into())
    }

    /// Vhost 0 (`a.test`) and 3 (`b.test`, `*.b.test`) are ours; `x.b.test` overlaps
    /// our wildcard but belongs to another environment.
    fn sites() -> Sites {
        let mut hosts = HostTable::new();
        hosts.insert("a.test", 0);
        hosts.insert("x.b.test", FOREIGN);
        hosts.insert("b.test", 1);
        hosts.insert("*.b.test", 1);
        Sites {
            sites: vec![site(0, "a.test"), site(3, "b.test")],
            hosts,
        }
    }

    fn router<'a>(sites: &'a Sites, first: Option<&str>) -> ConnRouter<'a> {
        ConnRouter {
            sites,
            first_head: first.map(|h| h.as_bytes().to_vec()),
            default_host: std::cell::OnceCell::new(),
        }
    }

    fn vhost(r: &ConnRouter<'_>, host: Option<&str>) -> Option<u32> {
        r.route(host).map(|s| s.vhost_id)
    }

    #[test]
    fn own_hosts_stay_and_foreign_ones_go_back() {
        let sites = sites();
        let r = router(&sites, None);
        assert_eq!(vhost(&r, Some("a.test")), Some(0));
        assert_eq!(vhost(&r, Some("B.test")), Some(3));
        assert_eq!(vhost(&r, Some("y.b.test")), Some(3));
        assert_eq!(vhost(&r, Some("x.b.test")), None);
        // Unknown, or none, without a default-routed first request: a multiplexer decides.
        assert_eq!(vhost(&r, Some("elsewhere.test")), None);
        assert_eq!(vhost(&r, None), None);
    }

    #[test]
    fn the_host_routed_by_default_stays_with_the_default_vhost() {
        let sites = sites();
        let r = router(&sites, Some("GET / HTTP/1.1\r\nHost: Unknown.test\r\n\r\n"));
        assert_eq!(vhost(&r, Some("unknown.TEST")), Some(0));
        assert_eq!(vhost(&r, Some("other.test")), None);
        assert_eq!(vhost(&r, None), None);
        // A first request without Host (HTTP/1.0) keeps later ones without Host.
        let r = router(&sites, Some("GET / HTTP/1.0\r\n\r\n"));
        assert_eq!(vhost(&r, None), Some(0));
        assert_eq!(vhost(&r, Some("other.test")), None);
        // A first request that named one of our hosts was not routed by default.
        let r = router(&sites, Some("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"));
        assert_eq!(vhost(&r, Some("other.test")), None);
    }

    #[test]
    fn a_tls_connection_serves_its_own_vhost_only() {
        let sites = sites();
        let count = std::cell::Cell::new(0);
        let by_name = TlsRouter {
            sites: &sites,
            vhost: 3,
            by_default: false,
            sni: Some("b.test".into()),
            misdirected: &count,
            covers: &|_: &str| false,
        };
        let v = |r: &TlsRouter<'_>, host| r.route(host).map(|s| s.vhost_id);
        assert_eq!(v(&by_name, Some("b.test")), Some(3));
        assert_eq!(v(&by_name, Some("Y.b.test")), Some(3));
        assert_eq!(v(&by_name, None), Some(3));
        // Our other vhost, another environment's host, a host we do not know: 421.
        assert_eq!(v(&by_name, Some("a.test")), None);
        assert_eq!(v(&by_name, Some("x.b.test")), None);
        assert_eq!(v(&by_name, Some("elsewhere.test")), None);
        assert_eq!(count.get(), 3);
        // The certificate presented covers our other vhost's name: served there; never
        // another environment's host, covered or not.
        let coalesced = TlsRouter {
            covers: &|h: &str| h == "a.test" || h == "x.b.test",
            sni: Some("b.test".into()),
            ..by_name
        };
        assert_eq!(v(&coalesced, Some("a.test")), Some(0));
        assert_eq!(v(&coalesced, Some("x.b.test")), None);
        let by_default = TlsRouter {
            sites: &sites,
            vhost: 0,
            by_default: true,
            sni: Some("unknown.test".into()),
            misdirected: &count,
            covers: &|_: &str| false,
        };
        assert_eq!(v(&by_default, Some("unknown.test")), Some(0));
        assert_eq!(v(&by_default, Some("Unknown.Test.")), Some(0));
        assert_eq!(v(&by_default, Some("elsewhere.test")), None);
        assert_eq!(v(&by_default, Some("b.test")), None);
        let no_name = TlsRouter {
            sni: None,
            ..by_default
        };
        assert_eq!(v(&no_name, Some("203.0.113.7")), Some(0));
        assert_eq!(v(&no_name, Some("x.b.test")), None);
    }
}
