//! `Include` paths with wildcards: `fnmatch(3)` patterns (`*`, `?`, `[a-z]`, `[!x]`,
//! `\` escapes) in any component, matched against directory listings and sorted by
//! name, as httpd does. A wildcard never matches a leading `.` (httpd's
//! `APR_FNM_PERIOD`), so `*.conf` skips `.hidden.conf` and editors' swap files.

use std::path::{Component, Path, PathBuf};

use super::source::Source;

/// Whether `s` has a wildcard character.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths `pattern` (absolute) matches, sorted; at most `limit` of them.
pub fn expand(src: &dyn Source, pattern: &Path, limit: usize) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    let parts: Vec<Component> = pattern.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let Component::Normal(part) = part else {
            if let Component::ParentDir = part {
                found.iter_mut().for_each(|p| p.push(".."));
            }
            continue;
        };
        let part = part.to_string_lossy();
        let mut next = Vec::new();
        for dir in &found {
            if !has_wildcard(&part) {
                let p = dir.join(&*part);
                if last || src.is_dir(&p) {
                    next.push(p);
                }
                continue;
            }
            let Ok(mut names) = src.list(dir) else { continue };
            names.sort();
            for (name, is_dir) in names {
                if (last || is_dir) && fnmatch(&part, &name) {
                    next.push(dir.join(name));
                }
                if next.len() >= limit {
                    break;
                }
            }
        }
        next.truncate(limit);
        found = next;
    }
    found
}

/// `fnmatch(pattern, name, FNM_PERIOD)` for one path component.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Greedy with one back-track point: the last `*` and where it resumed.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, len)) = class(&p[pi..], n[ni]) {
                        if matched {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        // An unclosed `[` is a literal.
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                '\\' if pi + 1 < p.len() => {}
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A bracket expression at the start of `p` (`p[0] == '['`): whether `c` matches it and
/// its length; `None` when it is not closed.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::Memory;
    use super::*;

    #[test]
    fn patterns() {
        assert!(fnmatch("*.conf", "a.conf"));
        assert!(!fnmatch("*.conf", "a.conf~"));
        assert!(!fnmatch("*.conf", ".a.conf"));
        assert!(fnmatch(".*", ".a"));
        assert!(fnmatch("a?c", "abc"));
        assert!(fnmatch("[a-c]x", "bx"));
        assert!(!fnmatch("[!a-c]x", "bx"));
        assert!(fnmatch("[]]", "]"));
        assert!(fnmatch("[x", "[x"));
        assert!(fnmatch("\\*", "*"));
        assert!(!fnmatch("\\*", "a"));
        assert!(fnmatch("*a*b*", "xxaxxbxx"));
        assert!(!fnmatch("*a*b", "xxaxxbxxc"));
        assert!(fnmatch("**", ""));
        assert!(!fnmatch("?", ""));
    }

    #[test]
    fn expands_in_every_component_sorted() {
        let m = Memory::with(&[
            ("/etc/a/sites/b.conf", ""),
            ("/etc/a/sites/a.conf", ""),
            ("/etc/a/sites/a.txt", ""),
            ("/etc/a/vh/one/x.conf", ""),
            ("/etc/a/vh/two/x.conf", ""),
            ("/etc/a/vh/file.conf", ""),
        ]);
        let got = expand(&m, Path::new("/etc/a/sites/*.conf"), 100);
        assert_eq!(
            got,
            [PathBuf::from("/etc/a/sites/a.conf"), "/etc/a/sites/b.conf".into()]
        );
        let got = expand(&m, Path::new("/etc/a/vh/*/x.conf"), 100);
        assert_eq!(
            got,
            [
                PathBuf::from("/etc/a/vh/one/x.conf"),
                "/etc/a/vh/two/x.conf".into()
            ]
        );
        assert_eq!(expand(&m, Path::new("/etc/a/sites/*.conf"), 1).len(), 1);
        assert!(expand(&m, Path::new("/etc/none/*.conf"), 100).is_empty());
    }
}
