//! `max_connections_per_ip`: how many connections each client address has in this
//! multiplexer (from accept until the hand-off or the close), checked at accept before
//! a byte is read. IPv6 clients are counted per prefix (a /64 by default: one host
//! gets a whole /64). A refused address is logged once per episode: when it first goes
//! over the cap, and again only after it fell to half the cap or left the table.
//!
//! The table is this multiplexer's own (no lock): an entry exists only while its
//! address holds a connection here, so it never has more entries than the multiplexer
//! holds connections (`max_clients`, plus the one being accepted). The cap is the
//! server's, not each multiplexer's: every multiplexer also counts its connections in
//! its column of the shared table's per-address rows ([`Across`]), and an address whose
//! row sums over the cap is refused whichever multiplexer the kernel gave the
//! connection to. A row is a bucket of a keyed hash (SipHash, the supervisor's random
//! key), so two addresses that share one count together: a client can be refused only
//! if the addresses hashed with it hold the cap between them, and without the key no
//! one can choose whose bucket they land in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::rc::Rc;

use common::scoreboard::{table, Segment};

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

/// The counts shared by the multiplexers of a generation: this one's column of the
/// shared table's per-address rows.
pub(crate) struct Across {
    seg: Rc<Segment>,
    base: usize,
    column: usize,
    key: (u64, u64),
}

impl Across {
    /// This multiplexer's column (`index`) of the table `seg`, cleared; `None` for an
    /// index past the columns (it counts on its own only).
    pub fn new(seg: Rc<Segment>, index: u32) -> Option<Across> {
        let column = index as usize;
        if column >= table::per_ip::COLUMNS {
            return None;
        }
        let base = table::per_ip_base(
            seg.get(table::ENVS) as usize,
            seg.get(table::VHOSTS) as usize,
            seg.get(table::REGISTRY_LEN) as usize,
        );
        // The table was made for this layout, or the words are not there at all.
        seg.word(table::per_ip_word(
            base,
            table::per_ip::BUCKETS - 1,
            table::per_ip::COLUMNS - 1,
        ))?;
        let key = (seg.get(base), seg.get(base + 1));
        table::per_ip_clear(&seg, column);
        Some(Across {
            seg,
            base,
            column,
            key,
        })
    }

    fn bucket(&self, k: &Key) -> usize {
        #[allow(deprecated)] // std's keyed SipHash-2-4; the replacement is unstable.
        let mut h = std::hash::SipHasher::new_with_keys(self.key.0, self.key.1);
        k.hash(&mut h);
        (h.finish() % table::per_ip::BUCKETS as u64) as usize
    }

    /// Counts one more connection of `k` here; `false` (and nothing counted) when the
    /// row already holds `max` across the multiplexers.
    fn take(&self, k: &Key, max: u32) -> bool {
        let b = self.bucket(k);
        let own = table::per_ip_word(self.base, b, self.column);
        self.seg.add(own, 1);
        let sum: u64 = (0..table::per_ip::COLUMNS)
            .map(|c| self.seg.get(table::per_ip_word(self.base, b, c)))
            .fold(0, u64::saturating_add);
        if sum > u64::from(max) {
            self.give(k);
            return false;
        }
        true
    }

    fn give(&self, k: &Key) {
        let own = table::per_ip_word(self.base, self.bucket(k), self.column);
        if let Some(w) = self.seg.word(own) {
            let _ = w.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |v| v.checked_sub(1),
            );
        }
    }
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
    /// The other multiplexers' counts; `None`: this one's alone.
    across: Option<Across>,
    /// Addresses refused on the others' counts alone, when last logged.
    quiet: RefCell<HashMap<Key, std::time::Instant>>,
}

/// An address refused on the other multiplexers' counts alone is logged again here
/// only after this long.
const QUIET: std::time::Duration = std::time::Duration::from_secs(10);
/// At most this many such addresses remembered.
const QUIET_ENTRIES: usize = 1024;

/// One connection of an address, given back when dropped (handed off or closed).
pub(crate) struct Slot(Option<(Rc<PerIp>, Key)>);

impl PerIp {
    /// `max` connections per address (0: off), IPv6 counted per `prefix` bits, at most
    /// `entries` addresses at once.
    pub fn new(max: u32, prefix: u8, entries: usize, across: Option<Across>) -> Rc<PerIp> {
        Rc::new(PerIp {
            max,
            prefix,
            entries: entries.max(1),
            table: RefCell::new(HashMap::new()),
            full_warned: std::cell::Cell::new(false),
            across,
            quiet: RefCell::new(HashMap::new()),
        })
    }

    /// Logs a refusal of `ip` once per episode (`warned` is the address's flag).
    fn refused(&self, ip: IpAddr, warned: &mut bool) {
        if !*warned {
            *warned = true;
            warn!(
                client = %ip,
                max = self.max,
                "max_connections_per_ip: this address is over the cap; its new connections are closed at accept (logged once until it falls to half)"
            );
        }
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
                self.refused(ip, &mut c.warned);
                return None;
            }
            Some(c) => {
                if self.across.as_ref().is_some_and(|a| !a.take(&k, self.max)) {
                    self.refused(ip, &mut c.warned);
                    return None;
                }
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
                if self.across.as_ref().is_some_and(|a| !a.take(&k, self.max)) {
                    // Over the cap on the other multiplexers, nothing held here: an
                    // episode here is at most one line per address per QUIET.
                    let mut quiet = self.quiet.borrow_mut();
                    let now = std::time::Instant::now();
                    let fresh = quiet.get(&k).is_none_or(|t| now.duration_since(*t) >= QUIET);
                    if fresh {
                        if quiet.len() >= QUIET_ENTRIES {
                            quiet.retain(|_, t| now.duration_since(*t) < QUIET);
                            if quiet.len() >= QUIET_ENTRIES {
                                quiet.clear();
                            }
                        }
                        quiet.insert(k, now);
                        let mut warned = false;
                        self.refused(ip, &mut warned);
                    }
                    return None;
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
        if let Some(a) = &owner.across {
            a.give(&k);
        }
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
        let t = PerIp::new(2, 64, 100, None);
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
        let t = PerIp::new(1, 64, 100, None);
        drop(t.take(ip("10.0.0.1")).unwrap());
        assert!(t.table.borrow().is_empty());
    }

    #[test]
    fn ipv6_is_counted_per_prefix_and_mapped_v4_as_v4() {
        let t = PerIp::new(1, 64, 100, None);
        let _a = t.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(t.take(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(t.take(ip("2001:db8:1:3::1")).is_some());
        let _v4 = t.take(ip("192.0.2.1")).unwrap();
        assert!(t.take(ip("::ffff:192.0.2.1")).is_none());
        let t128 = PerIp::new(1, 128, 100, None);
        let _c = t128.take(ip("2001:db8::1")).unwrap();
        assert!(t128.take(ip("2001:db8::2")).is_some());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = PerIp::new(5, 64, 2, None);
        let _a = t.take(ip("10.0.0.1")).unwrap();
        let _b = t.take(ip("10.0.0.2")).unwrap();
        assert!(t.take(ip("10.0.0.3")).is_none());
        assert!(t.take(ip("10.0.0.1")).is_some());
    }

    /// Two multiplexers' tables over one shared table (columns 0 and 1).
    fn pair(max: u32) -> (Rc<PerIp>, Rc<PerIp>) {
        let words = table::words(0, 0, 0);
        let (rw, _ro) = common::scoreboard::create("per-ip-test", words).unwrap();
        let seg = |fd: &std::os::fd::OwnedFd| Rc::new(Segment::map(fd, true).unwrap());
        let key = seg(&rw);
        key.set(table::per_ip_base(0, 0, 0), 0x1234);
        let a = PerIp::new(max, 64, 100, Across::new(seg(&rw), 0));
        let b = PerIp::new(max, 64, 100, Across::new(seg(&rw), 1));
        (a, b)
    }

    #[test]
    fn the_cap_is_the_servers_across_multiplexers() {
        let (a, b) = pair(3);
        let x = ip("10.1.1.1");
        let one = a.take(x).unwrap();
        let _two = b.take(x).unwrap();
        let _three = a.take(x).unwrap();
        assert!(b.take(x).is_none(), "a fourth on the other multiplexer");
        assert!(a.take(x).is_none(), "a fourth on the first");
        assert!(b.take(ip("10.1.1.2")).is_some(), "another address");
        drop(one);
        assert!(
            b.take(x).is_some(),
            "a slot given back on one is free on the other"
        );
    }

    #[test]
    fn a_cleared_column_frees_its_counts() {
        let (a, b) = pair(2);
        let x = ip("10.2.2.2");
        let held: Vec<_> = (0..2).map(|_| a.take(x).unwrap()).collect();
        assert!(b.take(x).is_none());
        // a's multiplexer died: the supervisor clears its column.
        let seg = &a.across.as_ref().unwrap().seg;
        table::per_ip_clear(seg, 0);
        let _c = b.take(x).unwrap();
        // Slots of the dead table given back after the clear never go below zero.
        drop(held);
        let _d = b.take(x).unwrap();
        assert!(b.take(x).is_none());
    }

    #[test]
    fn an_index_past_the_columns_counts_alone() {
        let (rw, _ro) = common::scoreboard::create("per-ip-test", table::words(0, 0, 0)).unwrap();
        let seg = Rc::new(Segment::map(&rw, true).unwrap());
        assert!(Across::new(seg, table::per_ip::COLUMNS as u32).is_none());
    }

    #[test]
    fn zero_is_off() {
        let t = PerIp::new(0, 64, 1, None);
        let held: Vec<_> = (0..10).map(|_| t.take(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(held.len(), 10);
        assert!(t.table.borrow().is_empty());
    }
}
