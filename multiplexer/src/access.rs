//! Who may read the status page and the metrics: a client on this host by the uid that
//! owns its socket (`[status] allow_users`), never by its address, which every local
//! process shares; any other client by its address (`[status] allow`).

use std::net::{IpAddr, SocketAddr};

use crate::peer_uid::{self, PeerUidError};

/// The rule, from the bootstrap.
pub(crate) struct Access {
    /// Non-local clients: (network, prefix length).
    pub allow: Vec<(IpAddr, u8)>,
    /// Local clients: uids.
    pub users: Vec<u32>,
}

impl Access {
    /// `Ok` when the client at `peer` of the connection accepted on `local` may see the
    /// status page or the metrics; otherwise why not, for the log line. One netlink query.
    pub fn check(&self, peer: SocketAddr, local: SocketAddr) -> Result<(), String> {
        self.check_with(peer, local, || peer_uid::owner(peer, local))
    }

    /// [`Access::check`] with the owner look-up given.
    fn check_with(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        owner: impl FnOnce() -> Result<u32, PeerUidError>,
    ) -> Result<(), String> {
        // The kernel is asked first whatever the address: a client socket of this host
        // is judged by its owner even when it uses a non-loopback address of the host.
        match owner() {
            Ok(uid) if self.users.contains(&uid) => Ok(()),
            Ok(uid) => Err(format!(
                "status refused: client {peer} is uid {uid}, not in [status] allow_users"
            )),
            Err(PeerUidError::NotFound) if !looks_local(peer, local) => {
                if self.allows(peer) {
                    Ok(())
                } else {
                    Err(format!(
                        "status refused: address {} is not in [status] allow",
                        peer.ip()
                    ))
                }
            }
            Err(e) => Err(format!(
                "status refused: the owner of local client {peer} is unknown ({e})"
            )),
        }
    }
}

impl Access {
    /// `[status] allow` lists `peer`'s address.
    fn allows(&self, peer: SocketAddr) -> bool {
        self.allow
            .iter()
            .any(|(net, p)| cidr_contains(*net, *p, peer.ip()))
    }

    /// [`Access::check`] for addresses a PROXY header carried: the socket is the
    /// proxy's, so no uid says who the client is, and a client address that looks
    /// local is local to the proxy's host, not this one: only `[status] allow`
    /// grants it, and never to a loopback (or same-address) client.
    pub fn check_carried(&self, peer: SocketAddr, local: SocketAddr) -> Result<(), String> {
        if looks_local(peer, local) {
            return Err(format!(
                "status refused: client {peer} from a PROXY header looks local; local users are \
                 judged by the uid of their socket, which a proxied connection does not have"
            ));
        }
        if self.allows(peer) {
            Ok(())
        } else {
            Err(format!(
                "status refused: address {} (from a PROXY header) is not in [status] allow",
                peer.ip()
            ))
        }
    }
}

/// Whether the connection cannot have come from another host: either end is loopback
/// (IPv4-mapped included), or both ends have the same address.
fn looks_local(peer: SocketAddr, local: SocketAddr) -> bool {
    let (p, l) = (peer.ip().to_canonical(), local.ip().to_canonical());
    p.is_loopback() || l.is_loopback() || p == l
}

pub(crate) fn cidr_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net.to_canonical(), ip.to_canonical()) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let p = u32::from(prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let p = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn access() -> Access {
        Access {
            allow: vec![("192.0.2.0".parse().unwrap(), 24)],
            users: vec![0, 2003],
        }
    }

    #[test]
    fn local_clients_are_judged_by_uid_only() {
        let a = access();
        let (peer, local) = (sa("127.0.0.1:40000"), sa("127.0.0.1:80"));
        assert!(a.check_with(peer, local, || Ok(0)).is_ok());
        assert!(a.check_with(peer, local, || Ok(2003)).is_ok());
        let e = a.check_with(peer, local, || Ok(2001)).unwrap_err();
        assert!(e.contains("uid 2001"), "{e}");
        // Gone or unknown: refused, even if the address were allowed.
        let allow_all = Access {
            allow: vec![("0.0.0.0".parse().unwrap(), 0), ("::".parse().unwrap(), 0)],
            users: vec![0],
        };
        for err in [
            PeerUidError::NotFound,
            PeerUidError::Timeout,
            PeerUidError::Malformed("x"),
        ] {
            assert!(allow_all.check_with(peer, local, || Err(err.clone())).is_err());
        }
        let mapped = sa("[::ffff:127.0.0.1]:40000");
        assert!(allow_all
            .check_with(mapped, local, || Err(PeerUidError::NotFound))
            .is_err());
        let v6 = (sa("[::1]:40000"), sa("[::1]:80"));
        assert!(allow_all
            .check_with(v6.0, v6.1, || Err(PeerUidError::NotFound))
            .is_err());
        // A host address talking to itself is local too.
        let same = (sa("192.0.2.5:40000"), sa("192.0.2.5:80"));
        assert!(allow_all
            .check_with(same.0, same.1, || Err(PeerUidError::NotFound))
            .is_err());
        assert!(a.check_with(same.0, same.1, || Ok(2001)).is_err());
    }

    #[test]
    fn remote_clients_are_judged_by_address() {
        let a = access();
        let local = sa("192.0.2.1:80");
        let gone = || Err(PeerUidError::NotFound);
        assert!(a.check_with(sa("192.0.2.9:5000"), local, gone).is_ok());
        assert!(a.check_with(sa("[::ffff:192.0.2.9]:5000"), local, gone).is_ok());
        let e = a.check_with(sa("198.51.100.1:5000"), local, gone).unwrap_err();
        assert!(e.contains("198.51.100.1"), "{e}");
        // A failed look-up is not taken for "remote".
        assert!(a
            .check_with(sa("192.0.2.9:5000"), local, || Err(PeerUidError::Timeout))
            .is_err());
        // A socket of this host found under a non-loopback address: by uid.
        assert!(a.check_with(sa("192.0.2.9:5000"), local, || Ok(2001)).is_err());
        // Default: nobody remote.
        let none = Access {
            allow: Vec::new(),
            users: vec![0],
        };
        assert!(none.check_with(sa("192.0.2.9:5000"), local, gone).is_err());
    }

    /// A PROXY header's client is judged by `allow` only; a loopback or same-address
    /// one never, even with `allow` open to everyone.
    #[test]
    fn carried_addresses() {
        let allow_all = Access {
            allow: vec![("0.0.0.0".parse().unwrap(), 0), ("::".parse().unwrap(), 0)],
            users: vec![0],
        };
        let dest = sa("192.0.2.1:80");
        for local in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1", "192.0.2.1:1"] {
            let e = allow_all.check_carried(sa(local), dest).unwrap_err();
            assert!(e.contains("looks local"), "{e}");
        }
        assert!(allow_all
            .check_carried(sa("198.51.100.1:5"), sa("127.0.0.1:80"))
            .is_err());
        let a = access();
        assert!(a.check_carried(sa("192.0.2.9:5"), dest).is_ok());
        assert!(a.check_carried(sa("198.51.100.1:5"), dest).is_err());
    }

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_contains(ip("10.0.0.0"), 8, ip("10.255.0.1")));
        assert!(!cidr_contains(ip("10.0.0.0"), 8, ip("11.0.0.1")));
        assert!(cidr_contains(ip("0.0.0.0"), 0, ip("1.2.3.4")));
        assert!(cidr_contains(ip("2001:db8::"), 32, ip("2001:db8::1")));
        assert!(!cidr_contains(ip("2001:db8::"), 32, ip("10.0.0.1")));
        assert!(cidr_contains(ip("10.0.0.0"), 8, ip("::ffff:10.0.0.1")));
    }
}
