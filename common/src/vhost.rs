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

#[cfg(test)]
mod tests {
    use super::*;

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
