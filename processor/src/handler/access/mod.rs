//! The access rules applications ship, honoured as Apache 2.4 would (with
//! mod_access_compat): names that are never served (`.ht*`), the vhost's `deny` list,
//! and the denials of every `.htaccess` on the path ([`parse`], cached by [`cache`]).
//!
//! Merging, as Apache's per-directory merge: the directory levels from the document root
//! down, each `Require` set replacing the one inherited (AuthMerging Off) and each
//! Order/Allow/Deny set replacing the one inherited; then every `<Files>` section that
//! matches the file's name, in order, the same way. Access is granted when the resulting
//! `Require` (if any) and Order/Allow/Deny (if any) both grant.

pub mod cache;
#[cfg(test)]
mod fuzz;
pub mod parse;

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::FileStat;
use thiserror::Error;

use crate::handler::static_files::resolve::ResolveError;
use parse::{Compat, Htaccess, Rules};

/// Why access is refused.
#[derive(Debug, Error)]
pub enum AccessError {
    #[error("{0:?}: names starting with .ht are never served")]
    HtName(String),
    #[error("{0:?}: in this vhost's deny list")]
    DenyList(String),
    #[error("{}: denied", .0.display())]
    Denied(PathBuf),
    #[error("{path}: {reason}", path = .path.display())]
    Broken { path: PathBuf, reason: String },
    #[error("htaccess: {0}")]
    Unreadable(Box<ResolveError>),
    #[error("{path}: {errno}", path = .path.display())]
    Io { path: PathBuf, errno: Errno },
}

impl AccessError {
    pub fn status(&self) -> u16 {
        match self {
            Self::HtName(_) | Self::DenyList(_) | Self::Denied(_) => 403,
            Self::Unreadable(e) => e.status().max(403),
            Self::Broken { .. } | Self::Io { .. } => 500,
        }
    }
}

/// The checks that need no file system: a `.ht*` segment anywhere (Apache's default
/// `<Files ".ht*">`; case-sensitive, as Apache on Linux), or a path under an entry of
/// `deny` (URL path prefixes such as `/data/`, compared segment by segment).
pub fn check_path(deny: &[String], segments: &[Vec<u8>]) -> Result<(), AccessError> {
    let shown = || {
        let mut s = String::new();
        for seg in segments {
            s.push('/');
            s.push_str(&String::from_utf8_lossy(seg));
        }
        s
    };
    if segments.iter().any(|s| s.starts_with(b".ht")) {
        return Err(AccessError::HtName(shown()));
    }
    for prefix in deny {
        let mut parts = prefix.split('/').filter(|p| !p.is_empty());
        let mut segs = segments.iter();
        let under = loop {
            match (parts.next(), segs.next()) {
                (None, _) => break true,
                (Some(p), Some(s)) if p.as_bytes() == s.as_slice() => {}
                _ => break false,
            }
        };
        if under {
            return Err(AccessError::DenyList(shown()));
        }
    }
    Ok(())
}

/// What the sections seen so far decide.
#[derive(Debug, Clone, Copy, Default)]
struct Verdict {
    require: Option<bool>,
    compat: Option<Compat>,
}

impl Verdict {
    fn apply(&mut self, rules: &Rules) {
        if let Some(r) = rules.require() {
            self.require = Some(r);
        }
        if let Some(c) = rules.compat {
            self.compat = Some(c);
        }
    }

    fn then(self, later: Verdict) -> Verdict {
        Verdict {
            require: later.require.or(self.require),
            compat: later.compat.or(self.compat),
        }
    }

    fn grants(&self) -> bool {
        self.require.unwrap_or(true) && self.compat.is_none_or(|c| c.grants())
    }
}

/// The `.htaccess` files of one resolution, directory by directory from the root.
#[derive(Debug)]
pub struct Walk<'n> {
    /// What `<Files>` sections match: the file served (`index.html` for a directory).
    name: &'n [u8],
    dirs: Verdict,
    files: Verdict,
    /// The deepest directory whose `.htaccess` had a say, for the log.
    last: Option<PathBuf>,
    /// A `.htaccess` that could not be used: the walk refuses.
    failed: Option<AccessError>,
}

impl<'n> Walk<'n> {
    pub fn new(name: &'n [u8]) -> Self {
        Self {
            name,
            dirs: Verdict::default(),
            files: Verdict::default(),
            last: None,
            failed: None,
        }
    }

    /// Take in the `.htaccess` of `dir` (opened, with its stat, at `path`).
    pub fn enter(&mut self, dir: BorrowedFd<'_>, st: &FileStat, path: &Path) {
        if self.failed.is_some() {
            return;
        }
        match cache::rules(dir, st, path) {
            Ok(None) => {}
            Ok(Some(h)) => self.take(&h, path),
            Err(e) => self.failed = Some(e),
        }
    }

    fn take(&mut self, h: &Htaccess, path: &Path) {
        self.dirs.apply(&h.dir);
        for f in h.files.iter().filter(|f| f.matches(self.name)) {
            self.files.apply(&f.rules);
        }
        self.last = Some(path.join(cache::NAME));
    }

    /// Whether the rules seen grant access.
    pub fn finish(self) -> Result<(), AccessError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.dirs.then(self.files).grants() {
            Ok(())
        } else {
            Err(AccessError::Denied(self.last.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<Vec<u8>> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn names_and_deny_lists() {
        let deny = vec!["/data/".to_owned(), "/conf".to_owned(), "/a/b/".to_owned()];
        let status = |p: &str| check_path(&deny, &segs(p)).map_err(|e| e.status());
        assert_eq!(status("/data"), Err(403));
        assert_eq!(status("/data/x/y.txt"), Err(403));
        assert_eq!(status("/conf/"), Err(403));
        assert_eq!(status("/a/b"), Err(403));
        assert_eq!(status("/database.txt"), Ok(()));
        assert_eq!(status("/a/bc"), Ok(()));
        assert_eq!(status("/a"), Ok(()));
        assert_eq!(status("/"), Ok(()));
        assert_eq!(status("/x/.htaccess"), Err(403));
        assert_eq!(status("/.htpasswd"), Err(403));
        assert_eq!(status("/.ht"), Err(403));
        assert_eq!(status("/.hta/x"), Err(403));
        // Case-sensitive, as Apache on Linux.
        assert_eq!(status("/.HTaccess"), Ok(()));
        assert!(check_path(&["/".to_owned()], &segs("/x")).is_err());
    }

    fn walk(files: &[&str], name: &str) -> Result<(), AccessError> {
        let mut w = Walk::new(name.as_bytes());
        for (i, text) in files.iter().enumerate() {
            let h = parse::parse(text).unwrap();
            w.take(&h, Path::new(&format!("/d{i}")));
        }
        w.finish()
    }

    #[test]
    fn merge_order() {
        let denied = "Require all denied";
        let granted = "Require all granted";
        assert!(walk(&[denied], "x").is_err());
        assert!(walk(&[denied, ""], "x").is_err());
        assert!(walk(&[denied, granted], "x").is_ok());
        assert!(walk(&[granted, denied], "x").is_err());
        // Order/Allow/Deny are replaced by a deeper set, not by a Require.
        let compat = "Order allow,deny\nDeny from all";
        assert!(walk(&[compat, granted], "x").is_err());
        assert!(walk(&[compat, "Order allow,deny\nAllow from all"], "x").is_ok());
        // <Files> sections apply after every directory level.
        let bak = "<FilesMatch \"\\.bak$\">\nRequire all denied\n</FilesMatch>";
        assert!(walk(&[bak, granted], "a.bak").is_err());
        assert!(walk(&[bak, granted], "a.txt").is_ok());
        let regrant = "<Files a.bak>\nRequire all granted\n</Files>";
        assert!(walk(&[bak, regrant], "a.bak").is_ok());
        assert!(walk(&[], "x").is_ok());
    }
}
