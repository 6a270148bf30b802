//! Host-name lookup shared by the multiplexer (routing) and the processor (keep-alive
//! checks): exact names and aliases, and `*.` wildcards, compared case-insensitively.

use std::collections::HashMap;

/// Maps host names to an index chosen by the caller.
#[derive(Debug, Default, Clone)]
pub struct HostTable {
    exact: HashMap<String, usize>,
    /// (".suffix", index), in insertion order: the first vhost listing a wildcard wins.
    wildcards: Vec<(String, usize)>,
}

impl HostTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a name (`a.example`) or a wildcard (`*.a.example`). The first insertion of a
    /// name wins, as the first matching vhost does in Apache.
    pub fn insert(&mut self, name: &str, index: usize) {
        let name = name.to_ascii_lowercase();
        if let Some(suffix) = name.strip_prefix('*') {
            self.wildcards.push((suffix.to_owned(), index));
        } else {
            self.exact.entry(name).or_insert(index);
        }
    }

    /// The index for `host` (without port), or `None`.
    pub fn lookup(&self, host: &str) -> Option<usize> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|&(_, i)| i)
    }
}

/// Whether two host-table entries (names or `*.` wildcards) can match one same host, so
/// that which of them a host reaches depends on the table's order rules (exact before
/// wildcard, first wildcard wins). Compared case-insensitively.
pub fn names_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let a = a.strip_suffix('.').unwrap_or(&a);
    let b = b.strip_suffix('.').unwrap_or(&b);
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(suffix), None) => b.len() > suffix.len() && b.ends_with(suffix),
        (None, Some(suffix)) => a.len() > suffix.len() && a.ends_with(suffix),
        // Both match a host ending in the longer suffix.
        (Some(x), Some(y)) => x.ends_with(y) || y.ends_with(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps() {
        assert!(names_overlap("shop.alice.test", "*.alice.test"));
        assert!(names_overlap("*.Alice.test", "shop.alice.test."));
        assert!(names_overlap("*.a.test", "*.x.a.test"));
        assert!(names_overlap("*.test", "*.a.test"));
        assert!(names_overlap("a.test", "A.TEST"));
        assert!(!names_overlap("alice.test", "*.alice.test"));
        assert!(!names_overlap("*.alice.test", "*.bob.test"));
        assert!(!names_overlap("a.test", "b.test"));
    }

    #[test]
    fn exact_alias_wildcard() {
        let mut t = HostTable::new();
        t.insert("alice.example", 0);
        t.insert("WWW.alice.example", 0);
        t.insert("*.alice.example", 0);
        t.insert("bob.example", 1);
        assert_eq!(t.lookup("Alice.Example"), Some(0));
        assert_eq!(t.lookup("www.alice.example"), Some(0));
        assert_eq!(t.lookup("x.y.alice.example"), Some(0));
        assert_eq!(t.lookup("bob.example."), Some(1));
        assert_eq!(t.lookup("example"), None);
        assert_eq!(t.lookup(".alice.example"), None);
    }
}
