//! Small hot files answered from memory: a per-processor (per-thread) cache of the
//! answers of resolved, permitted static files — their bytes and their fields, ready
//! for HTTP/1.1 (one write) and HTTP/2 (a header map and a shared body) — kept valid
//! by inotify watches on everything an answer depends on ([`watch`]: one drain of the
//! queue per request, no path lookup) and revalidated by stat (one `fstat` of the
//! document root and one `fstatat` per path component and per `.htaccess` on the way,
//! as the tenant) at most [`REVALIDATE`] apart, or on every request when the entry
//! could not be watched.
//!
//! What is cached is the outcome of [`resolve::resolve`] for one (vhost, raw path):
//! the file it opened and the fact that the access rules granted it. That outcome
//! depends only on the directories on the way (their entries, modes and owners, their
//! `.htaccess` files) and on the file itself, so an entry holds a stamp (device, inode,
//! type, mode, owner, size, mtime, ctime) of each and is used only while every stamp is
//! unchanged:
//! - a name created, removed or renamed in a directory (a new `.htaccess`, a file
//!   replaced by a link or a directory, an index document added) changes that
//!   directory's mtime; a chmod or chown changes its ctime;
//! - a `.htaccess` edited in place changes its own stamp;
//! - the file's content, size, mode or owner changes its stamp.
//!
//! A stamp changes on every such change only if it was older than the clock's
//! granularity when taken: only files and directories whose mtime and ctime are at
//! least [`SETTLE`] old are cached. A path through a symbolic link (at any component,
//! or a `.htaccess` that is a link) is never cached; those go through the resolver every
//! time. The snapshot of stamps is taken first and the path resolved again after it, so
//! what an entry grants held at an instant when every stamp had the value it holds.
//! Checks that need no file system (the vhost's `deny`, `.ht*` names, CGI's choice) run
//! before the cache on every request; Landlock and the tenant's uid do not change under
//! a running processor.
//!
//! Bounds: files up to [`MAX_FILE`] bytes, at most [`MAX_ENTRIES`] entries and
//! [`BUDGET`] bytes per processor; an insertion over a bound evicts arbitrary entries.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::hash::{Hash, Hasher};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Bytes;

use crate::handler::stamp::Stamp;
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat};
use thiserror::Error;

use super::resolve::{self, Found, Resolved};
use super::respond::Validators;
use super::target::PathTarget;
use crate::handler::Site;

/// Largest file kept.
pub const MAX_FILE: u64 = 128 * 1024;
/// Bytes kept per processor (bodies, fields and paths).
pub const BUDGET: usize = 4 * 1024 * 1024;
/// Entries kept per processor.
pub const MAX_ENTRIES: usize = 1024;
/// The longest a watched entry goes without a stat revalidation (for what inotify
/// cannot see: writes through a shared mapping, other NFS clients, mounts).
pub const REVALIDATE: Duration = Duration::from_secs(1);
/// How old a timestamp must be before it is trusted to show every later change (as the
/// `.htaccess` cache's).
pub use crate::handler::stamp::SETTLE;

/// Why a file is not cached (it is then served by the resolver, as before).
#[derive(Debug, Error)]
pub enum HotError {
    #[error("larger than {MAX_FILE} bytes")]
    TooLarge,
    #[error("changed less than {SETTLE:?} ago")]
    Unsettled,
    #[error("{0}: a symbolic link or not a plain file or directory")]
    NotPlain(String),
    #[error("{path}: {errno}")]
    Stat { path: String, errno: Errno },
    #[error("changed while being cached")]
    Raced,
    #[error("reading: {0}")]
    Read(std::io::Error),
}

mod watch;

pub use watch::suspect;

/// One name below the document root and its stamp.
#[derive(Debug)]
struct Check {
    /// Relative to the document root (`a`, `a/.htaccess`, `a/b.css`).
    path: CString,
    stamp: Stamp,
}

/// A cached answer: a file's bytes and fields, and what keeps them valid.
#[derive(Debug)]
pub struct Hot {
    vhost: u32,
    raw_path: Box<str>,
    root: PathBuf,
    index: Vec<String>,
    root_stamp: Stamp,
    /// The directories, `.htaccess` files and the file, root first.
    checks: Vec<Check>,
    pub body: Bytes,
    pub validators: Validators,
    /// Last-Modified as sent.
    pub last_modified: Option<String>,
    pub content_type: String,
    /// A 200's own fields as HTTP/1.1 writes them after `Server` (Content-Type,
    /// Accept-Ranges, ETag, Last-Modified; Content-Length comes last).
    pub h1_fields: Box<[u8]>,
    /// The same for HTTP/2, built by it on first use.
    pub h2_fields: OnceCell<hyper::HeaderMap>,
    cost: usize,
    /// Its inotify watches, when it could have them.
    watched: Option<watch::Watched>,
    /// When the stamps were last found unchanged.
    checked: Cell<Instant>,
}

impl Hot {
    /// Whether every stamp is what it was (a failed stat is a change).
    fn fresh(&self, root: BorrowedFd<'_>) -> bool {
        #[cfg(test)]
        STAT_CHECKS.with(|n| n.set(n.get() + 1));
        if !fstat(root.as_raw_fd()).is_ok_and(|st| Stamp::of(&st) == self.root_stamp) {
            return false;
        }
        self.checks.iter().all(|c| {
            fstatat(
                Some(root.as_raw_fd()),
                c.path.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| Stamp::of(&st) == c.stamp)
        })
    }

    fn is_for(&self, site: &Site, target: &PathTarget) -> bool {
        self.vhost == site.vhost_id
            && *self.raw_path == *target.raw_path
            && self.root == site.document_root
            && self.index == site.index
    }
}

#[derive(Default)]
struct Cache {
    map: HashMap<u64, Rc<Hot>>,
    bytes: usize,
}

impl Cache {
    fn remove(&mut self, key: u64) {
        if let Some(old) = self.map.remove(&key) {
            self.bytes -= old.cost;
        }
    }

    fn insert(&mut self, key: u64, hot: Rc<Hot>) {
        self.remove(key);
        while !self.map.is_empty() && (self.map.len() >= MAX_ENTRIES || self.bytes + hot.cost > BUDGET) {
            let Some(&victim) = self.map.keys().next() else {
                break;
            };
            self.remove(victim);
        }
        self.bytes += hot.cost;
        self.map.insert(key, hot);
    }
}

#[cfg(test)]
thread_local! {
    /// Stat revalidations made by this thread (for tests).
    static STAT_CHECKS: Cell<u64> = const { Cell::new(0) };
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

fn key(vhost: u32, raw_path: &str) -> u64 {
    // A collision only costs a miss: an entry is used only for its own (vhost, path).
    let mut h = std::hash::DefaultHasher::new();
    vhost.hash(&mut h);
    raw_path.hash(&mut h);
    h.finish()
}

/// The cached answer for `target` in `site`, if it is still what the resolver would
/// give; a stale one is dropped.
pub fn lookup(site: &Site, target: &PathTarget) -> Option<Rc<Hot>> {
    let k = key(site.vhost_id, &target.raw_path);
    let hot = CACHE.with(|c| c.borrow().map.get(&k).cloned())?;
    let now = Instant::now();
    let fresh = hot.is_for(site, target)
        && match &hot.watched {
            // An event on a watch: changed (a stat could not tell more).
            Some(w) if !watch::unchanged(w) => false,
            Some(_) if now.saturating_duration_since(hot.checked.get()) < REVALIDATE => true,
            // Unwatched, or due for the stamps' check.
            _ => {
                let ok =
                    resolve::with_root(&site.document_root, |root, _| Ok(hot.fresh(root))).unwrap_or(false);
                if ok {
                    hot.checked.set(now);
                }
                ok
            }
        };
    if fresh {
        return Some(hot);
    }
    CACHE.with(|c| c.borrow_mut().remove(k));
    None
}

/// Whether a file the resolver found is worth trying to cache (no syscall).
pub fn may_cache(found: &Found, now: SystemTime) -> bool {
    u64::try_from(found.stat.st_size).is_ok_and(|s| s <= MAX_FILE) && Stamp::of(&found.stat).settled(now)
}

/// Caches the answer for `target` in `site`, whose resolution just found `first`: the
/// stamps first, then the path resolved again, then the file read (see the module
/// documentation for why in this order).
pub fn load(site: &Site, target: &PathTarget, first: &Found, now: SystemTime) -> Result<Rc<Hot>, HotError> {
    let size = u64::try_from(first.stat.st_size).map_err(|_| HotError::TooLarge)?;
    if size > MAX_FILE {
        return Err(HotError::TooLarge);
    }
    // The directories on the way and the file's name within the last.
    let (dirs, name): (&[Vec<u8>], &[u8]) = if target.trailing_slash {
        (&target.segments, &first.name)
    } else {
        match target.segments.split_last() {
            Some((last, dirs)) => (dirs, last),
            None => return Err(HotError::Raced),
        }
    };
    let root = &site.document_root;
    let (root_stamp, checks) = resolve::with_root(root, |fd, _| Ok(snapshot(fd, dirs, name, now)))
        .map_err(|_| HotError::Raced)??;
    let found = match resolve::resolve(root, &target.segments, target.trailing_slash, &site.index) {
        Ok(Resolved::File(found)) => found,
        _ => return Err(HotError::Raced),
    };
    let file_stamp = checks.last().map(|c| c.stamp);
    if file_stamp != Some(Stamp::of(&found.stat)) || found.name != name {
        return Err(HotError::Raced);
    }
    // `size` fits: it is at most MAX_FILE.
    let mut body = vec![0u8; size as usize];
    found.file.read_exact_at(&mut body, 0).map_err(HotError::Read)?;
    let mut hot = build(site, target, root_stamp, checks, body, &found);
    // Watched after the stamps were taken and checked once more after the watches
    // exist: from then on a change bumps a watch's generation.
    match watch::watch(root, hot.checks.iter().map(|c| c.path.as_bytes())) {
        Ok(w) => {
            let still = resolve::with_root(root, |fd, _| Ok(hot.fresh(fd))).unwrap_or(false);
            if !still {
                return Err(HotError::Raced);
            }
            hot.watched = Some(w);
        }
        Err(e) => tracing::debug!(error = %e, "hot file revalidated by stat on every request"),
    }
    let hot = Rc::new(hot);
    CACHE.with(|c| {
        c.borrow_mut()
            .insert(key(site.vhost_id, &target.raw_path), hot.clone())
    });
    Ok(hot)
}

/// The stamps of the root, every directory in `dirs` (and its `.htaccess`, if it has
/// one) and the file `name` in the last, all settled and none a link.
fn snapshot(
    root: BorrowedFd<'_>,
    dirs: &[Vec<u8>],
    name: &[u8],
    now: SystemTime,
) -> Result<(Stamp, Vec<Check>), HotError> {
    let root_st = fstat(root.as_raw_fd()).map_err(|errno| HotError::Stat {
        path: ".".into(),
        errno,
    })?;
    let root_stamp = Stamp::of(&root_st);
    if !root_stamp.settled(now) {
        return Err(HotError::Unsettled);
    }
    let mut checks = Vec::with_capacity(2 * dirs.len() + 2);
    let mut prefix: Vec<u8> = Vec::new();
    htaccess(root, &prefix, now, &mut checks)?;
    for dir in dirs {
        prefix.extend_from_slice(dir);
        checks.push(check(root, &prefix, libc::S_IFDIR, now)?);
        prefix.push(b'/');
        htaccess(root, &prefix, now, &mut checks)?;
    }
    prefix.extend_from_slice(name);
    checks.push(check(root, &prefix, libc::S_IFREG, now)?);
    Ok((root_stamp, checks))
}

/// The `.htaccess` in the directory `prefix` (empty, or ending in `/`), when it has one.
fn htaccess(
    root: BorrowedFd<'_>,
    prefix: &[u8],
    now: SystemTime,
    checks: &mut Vec<Check>,
) -> Result<(), HotError> {
    let mut path = prefix.to_vec();
    path.extend_from_slice(crate::handler::access::cache::NAME.as_bytes());
    match check(root, &path, libc::S_IFREG, now) {
        Ok(c) => {
            checks.push(c);
            Ok(())
        }
        Err(HotError::Stat {
            errno: Errno::ENOENT, ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn check(root: BorrowedFd<'_>, path: &[u8], kind: u32, now: SystemTime) -> Result<Check, HotError> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let c = CString::new(path).map_err(|_| HotError::NotPlain(shown()))?;
    let st = fstatat(Some(root.as_raw_fd()), c.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|errno| HotError::Stat { path: shown(), errno })?;
    let stamp = Stamp::of(&st);
    if stamp.kind() != kind {
        return Err(HotError::NotPlain(shown()));
    }
    if !stamp.settled(now) {
        return Err(HotError::Unsettled);
    }
    Ok(Check { path: c, stamp })
}

fn build(
    site: &Site,
    target: &PathTarget,
    root_stamp: Stamp,
    checks: Vec<Check>,
    body: Vec<u8>,
    found: &Found,
) -> Hot {
    use std::fmt::Write as _;
    let validators = Validators::of(&found.stat);
    let last_modified = validators.last_modified.map(httpdate::fmt_http_date);
    let content_type = super::respond::media_type(&found.name);
    let mut fields = String::with_capacity(160);
    let _ = write!(
        fields,
        "Content-Type: {content_type}\r\nAccept-Ranges: bytes\r\nETag: {}\r\n",
        validators.etag
    );
    if let Some(lm) = &last_modified {
        let _ = write!(fields, "Last-Modified: {lm}\r\n");
    }
    let paths: usize = checks
        .iter()
        .map(|c| c.path.as_bytes().len() + std::mem::size_of::<Check>())
        .sum();
    let cost = body.len() + 2 * fields.len() + paths + target.raw_path.len() + 512;
    Hot {
        vhost: site.vhost_id,
        raw_path: target.raw_path.clone().into_boxed_str(),
        root: site.document_root.clone(),
        index: site.index.clone(),
        root_stamp,
        checks,
        body: Bytes::from(body),
        validators,
        last_modified,
        content_type,
        h1_fields: fields.into_bytes().into_boxed_slice(),
        h2_fields: OnceCell::new(),
        cost,
        watched: None,
        checked: Cell::new(Instant::now()),
    }
}

/// Entries and bytes held by this thread's cache.
pub fn usage() -> (usize, usize) {
    CACHE.with(|c| {
        let c = c.borrow();
        (c.map.len(), c.bytes)
    })
}

#[cfg(test)]
mod tests;
