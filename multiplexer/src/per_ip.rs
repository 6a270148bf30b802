//! `max_connections_per_ip`: how many connections each client address has in this
//! multiplexer (from accept until the hand-off or the close), checked at accept before
//! a byte is read. IPv6 clients are counted per prefix (a /64 by default: one host
//! gets a whole /64). A refused address is logged once per episode: when it first goes
//! over the cap, and again only after it fell to half the cap or left the table.
//!
//! The table is this multiplexer's own (no lock, no shared memory): an entry exists
//! only while its address holds a connection here, so it never has more entries than
//! the multiplexer holds connections (`max_clients`, plus the one being accepted).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use tracing::warn;

/// A client as counted: an IPv4 address (IPv4-mapped IPv6 included) or an IPv6
/// prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6(u128),
}

/// The key of `ip` with IPv6 addresses cut to `prefix` bits.
fn key(ip: IpAddr, prefix: u8) -> Key {
    match ip {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::V4(u32::from(v4)),
            None => {
                let bits = u128::from(v6);
                let mask = match prefix {
                    0 => 0,
                    p if p >= 128 => u128::MAX,
                    p => !(u128::MAX >> p),
                };
                Key::V6(bits & mask)
            }
        },
    }
}

struct Count {
    n: u32,
    /// A refusal of this address was logged in the current episode.
    warned: bool,
}

/// The per-address counts of one multiplexer.
pub(crate) struct PerIp {
    /// 0: no cap (nothing is counted).
    max: u32,
    prefix: u8,
    /// At most this many addresses at once.
    entries: usize,
    table: RefCell<HashMap<Key, Count>>,
    /// The table was found full and that was logged (until it empties below half).
    full_warned: std::cell::Cell<bool>,
}

/// One connection of an address, given back when dropped (handed off or closed).
pub(crate) struct Slot(Option<(Rc<PerIp>, Key)>);

impl PerIp {
    /// `max` connections per address (0: off), IPv6 counted per `prefix` bits, at most
    /// `entries` addresses at once.
    pub fn new(max: u32, prefix: u8, entries: usize) -> Rc<PerIp> {
        Rc::new(PerIp {
            max,
            prefix,
            entries: entries.max(1),
            table: RefCell::new(HashMap::new()),
            full_warned: std::cell::Cell::new(false),
        })
    }

    /// A slot for a connection from `ip`, or `None` (logged once per episode) when the
    /// address already holds `max` connections here.
    pub fn take(self: &Rc<Self>, ip: IpAddr) -> Option<Slot> {
        if self.max == 0 {
            return Some(Slot(None));
        }
        let k = key(ip, self.prefix);
        let mut table = self.table.borrow_mut();
        let len = table.len();
        match table.get_mut(&k) {
            Some(c) if c.n >= self.max => {
                if !c.warned {
                    c.warned = true;
                    warn!(
                        client = %ip,
                        max = self.max,
                        "max_connections_per_ip: this address is over the cap; its new connections are closed at accept (logged once until it falls to half)"
                    );
                }
                return None;
            }
            Some(c) => {
                if c.n < self.max / 2 {
                    c.warned = false;
                }
                c.n += 1;
            }
            None => {
                if len >= self.entries {
                    if !self.full_warned.replace(true) {
                        warn!(
                            entries = self.entries,
                            "max_connections_per_ip: the address table is full; new addresses are closed at accept"
                        );
                    }
                    return None;
                }
                if len < self.entries / 2 {
                    self.full_warned.set(false);
                }
                table.insert(k, Count { n: 1, warned: false });
            }
        }
        Some(Slot(Some((self.clone(), k))))
    }

    /// Connections counted for `ip` (for tests).
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> u32 {
        let k = key(ip, self.prefix);
        self.table.borrow().get(&k).map(|c| c.n).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((owner, k)) = self.0.take() else { return };
        let mut table = owner.table.borrow_mut();
        if let Some(c) = table.get_mut(&k) {
            c.n = c.n.saturating_sub(1);
            if c.n == 0 {
                table.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_over_the_cap_is_refused_and_others_are_not() {
        let t = PerIp::new(2, 64, 100);
        let a = t.take(ip("127.0.0.2")).unwrap();
        let _b = t.take(ip("127.0.0.2")).unwrap();
        assert!(t.take(ip("127.0.0.2")).is_none());
        assert!(t.take(ip("127.0.0.3")).is_some());
        drop(a);
        assert_eq!(t.held(ip("127.0.0.2")), 1);
        assert!(t.take(ip("127.0.0.2")).is_some());
    }

    #[test]
    fn entries_leave_the_table_at_zero() {
        let t = PerIp::new(1, 64, 100);
        drop(t.take(ip("10.0.0.1")).unwrap());
        assert!(t.table.borrow().is_empty());
    }

    #[test]
    fn ipv6_is_counted_per_prefix_and_mapped_v4_as_v4() {
        let t = PerIp::new(1, 64, 100);
        let _a = t.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(t.take(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(t.take(ip("2001:db8:1:3::1")).is_some());
        let _v4 = t.take(ip("192.0.2.1")).unwrap();
        assert!(t.take(ip("::ffff:192.0.2.1")).is_none());
        let t128 = PerIp::new(1, 128, 100);
        let _c = t128.take(ip("2001:db8::1")).unwrap();
        assert!(t128.take(ip("2001:db8::2")).is_some());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = PerIp::new(5, 64, 2);
        let _a = t.take(ip("10.0.0.1")).unwrap();
        let _b = t.take(ip("10.0.0.2")).unwrap();
        assert!(t.take(ip("10.0.0.3")).is_none());
        assert!(t.take(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn zero_is_off() {
        let t = PerIp::new(0, 64, 1);
        let held: Vec<_> = (0..10).map(|_| t.take(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(held.len(), 10);
        assert!(t.table.borrow().is_empty());
    }
}
