//! Resolving a path under a document root, one component at a time with `openat`, the
//! way Apache's `Options SymLinksIfOwnerMatch` does: a symbolic link is followed only
//! when the link and what it points at have the same owner, and every other component
//! is opened with `O_NOFOLLOW` so that it cannot turn into a link between check and use.
//!
//! The calls are blocking; on a local file system they are short, like nginx's.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use thiserror::Error;

use crate::handler::access::{self, AccessError};

/// Why a path cannot be served.
#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("{0}: not found")]
    NotFound(PathBuf),
    #[error("{path}: {errno}")]
    Denied { path: PathBuf, errno: Errno },
    #[error("{path}: symbolic link owned by uid {link_uid}, target by uid {target_uid}")]
    SymlinkOwner {
        path: PathBuf,
        link_uid: u32,
        target_uid: u32,
    },
    #[error("{0}: changed while being opened")]
    Raced(PathBuf),
    #[error("{0}: not a regular file or directory")]
    NotRegular(PathBuf),
    #[error("{0}: directory without an index document")]
    NoIndex(PathBuf),
    #[error("{path}: {errno}")]
    Io { path: PathBuf, errno: Errno },
    #[error(transparent)]
    Access(#[from] AccessError),
}

impl ResolveError {
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Io { .. } => 500,
            Self::Access(e) => e.status(),
            _ => 403,
        }
    }
}

/// An opened file ready to be sent.
#[derive(Debug)]
pub struct Found {
    pub file: File,
    pub stat: FileStat,
    /// The file's own name (for its media type).
    pub name: Vec<u8>,
}

/// What a path resolved to.
#[derive(Debug)]
pub enum Resolved {
    File(Found),
    /// A directory named without its trailing slash.
    Redirect,
}

/// Resolve decoded path segments under `root`, honouring the `.htaccess` of every
/// directory on the way ([`access::Walk`]): a denial is refused before anything else
/// (a missing file under a denied directory is 403, as in Apache). A directory is
/// answered with the first of `index` it has (`<Files>` sections match that name).
pub fn resolve(
    root: &Path,
    segments: &[Vec<u8>],
    trailing_slash: bool,
    index: &[String],
) -> Result<Resolved, ResolveError> {
    // What `<Files>` sections match: the file served (for a directory, the first index
    // name until another is found).
    let name = match segments.last() {
        Some(last) if !trailing_slash => last.as_slice(),
        _ => index.first().map_or(&b""[..], |n| n.as_bytes()),
    };
    let mut walk = access::Walk::new(name);
    let resolved = with_root(root, |root_fd, root_st| {
        resolve_in(root_fd, root_st, root, segments, trailing_slash, index, &mut walk)
    });
    if let Ok(Resolved::File(found)) = &resolved {
        if found.name != name {
            // An index document other than the first: the walk again, for its name
            // alone (only such a directory pays for it; the default list never does).
            if let Some(k) = index.iter().position(|n| n.as_bytes() == found.name.as_slice()) {
                return resolve(root, segments, trailing_slash, &index[k..=k]);
            }
        }
    }
    walk.finish()?;
    resolved
}

fn resolve_in(
    root_fd: BorrowedFd<'_>,
    root_st: &FileStat,
    root: &Path,
    segments: &[Vec<u8>],
    trailing_slash: bool,
    index: &[String],
    walk: &mut access::Walk<'_>,
) -> Result<Resolved, ResolveError> {
    // The current directory: the (borrowed) root until a component is opened.
    let mut owned: Option<OwnedFd> = None;
    let mut path = root.to_path_buf();
    walk.enter(root_fd, root_st, &path);
    let Some((last, parents)) = segments.split_last() else {
        return index_of(root_fd, path, index);
    };
    for seg in parents {
        path.push(OsStr::from_bytes(seg));
        let dir = owned.as_ref().map(|d| d.as_fd()).unwrap_or(root_fd);
        let (fd, st) = step(dir, seg, &path, Want::Directory)?;
        if !is(&st, libc::S_IFDIR) {
            return Err(ResolveError::NotFound(path));
        }
        walk.enter(fd.as_fd(), &st, &path);
        owned = Some(fd);
    }
    path.push(OsStr::from_bytes(last));
    let dir = owned.as_ref().map(|d| d.as_fd()).unwrap_or(root_fd);
    let (fd, st) = step(dir, last, &path, Want::Any)?;
    if is(&st, libc::S_IFDIR) {
        walk.enter(fd.as_fd(), &st, &path);
        return if trailing_slash {
            index_of(fd.as_fd(), path, index)
        } else {
            Ok(Resolved::Redirect)
        };
    }
    if trailing_slash {
        // "/file.txt/": a file named as a directory.
        return Err(ResolveError::NotFound(path));
    }
    Ok(Resolved::File(Found {
        file: File::from(fd),
        stat: st,
        name: last.clone(),
    }))
}

/// How long an opened document root is reused before it is opened again by path
/// (so a replaced root is picked up within this, as with nginx's open_file_cache).
const ROOT_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

/// The document root, opened `O_PATH` (it comes from configuration and may itself be a
/// link) and kept by this thread with its stat for up to [`ROOT_CACHE`]; `f` runs with
/// both borrowed. (So a `.htaccess` created in the document root itself is seen within
/// that second; below it, at once: their directories are stat'ed on every walk.)
pub(crate) fn with_root<T>(
    root: &Path,
    f: impl FnOnce(BorrowedFd<'_>, &FileStat) -> Result<T, ResolveError>,
) -> Result<T, ResolveError> {
    type Root = (PathBuf, OwnedFd, FileStat, std::time::Instant);
    thread_local! {
        static ROOTS: std::cell::RefCell<Vec<Root>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let now = std::time::Instant::now();
    let fresh = ROOTS.with(|r| {
        r.borrow()
            .iter()
            .any(|(p, _, _, t)| p == root && now.duration_since(*t) < ROOT_CACHE)
    });
    if !fresh {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = open(root, dir_flags, Mode::empty())
            .map(own)
            .map_err(|e| error(root.to_path_buf(), e))?;
        let st = fstat(fd.as_raw_fd()).map_err(|e| error(root.to_path_buf(), e))?;
        ROOTS.with(|r| {
            let mut r = r.borrow_mut();
            r.retain(|(p, _, _, _)| p != root);
            r.push((root.to_path_buf(), fd, st, now));
        });
    }
    ROOTS.with(|r| {
        let r = r.borrow();
        match r.iter().find(|(p, _, _, _)| p == root) {
            Some((_, fd, st, _)) => f(fd.as_fd(), st),
            None => Err(ResolveError::NotFound(root.to_path_buf())),
        }
    })
}

/// The first of `names` an opened directory has; none is 403 (no listings).
fn index_of(dir: BorrowedFd<'_>, mut path: PathBuf, names: &[String]) -> Result<Resolved, ResolveError> {
    for name in names {
        path.push(name);
        match step(dir, name.as_bytes(), &path, Want::Any) {
            Ok((fd, st)) if is(&st, libc::S_IFREG) => {
                return Ok(Resolved::File(Found {
                    file: File::from(fd),
                    stat: st,
                    name: name.as_bytes().to_vec(),
                }))
            }
            Ok(_) | Err(ResolveError::NotFound(_)) => {
                path.pop();
            }
            Err(e) => return Err(e),
        }
    }
    Err(ResolveError::NoIndex(path))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Directory,
    /// A directory (opened O_PATH) or a regular file (opened for reading).
    Any,
}

/// Open one component of `dir`, following it only if it is an owner-matched link.
pub(crate) fn step(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &Path,
    want: Want,
) -> Result<(OwnedFd, FileStat), ResolveError> {
    let dirfd = Some(dir.as_raw_fd());
    let err = |e| error(path.to_path_buf(), e);
    // The common case first: open without following. A link fails (ELOOP for a file,
    // ENOTDIR for a directory opened O_DIRECTORY), as does a directory we may search
    // but not read (EACCES); those take the checked path below.
    let quick = match want {
        Want::Any => OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Want::Directory => OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
    };
    match openat(dirfd, name, quick, Mode::empty()) {
        Ok(fd) => {
            let fd = own(fd);
            let st = fstat(fd.as_raw_fd()).map_err(err)?;
            if is(&st, libc::S_IFREG) || is(&st, libc::S_IFDIR) {
                return Ok((fd, st));
            }
            if want == Want::Directory {
                return Err(ResolveError::NotFound(path.to_path_buf()));
            }
            return Err(ResolveError::NotRegular(path.to_path_buf()));
        }
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) | Err(Errno::EACCES) => {}
        Err(e) => return Err(err(e)),
    }
    let link = fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(err)?;
    let is_link = is(&link, libc::S_IFLNK);
    let target = if is_link {
        let target = fstatat(dirfd, name, AtFlags::empty()).map_err(err)?;
        if target.st_uid != link.st_uid {
            return Err(ResolveError::SymlinkOwner {
                path: path.to_path_buf(),
                link_uid: link.st_uid,
                target_uid: target.st_uid,
            });
        }
        target
    } else {
        link
    };
    let mut flags = OFlag::O_CLOEXEC;
    if !is_link {
        flags |= OFlag::O_NOFOLLOW;
    }
    if is(&target, libc::S_IFDIR) {
        flags |= OFlag::O_PATH | OFlag::O_DIRECTORY;
    } else if want == Want::Directory {
        return Err(ResolveError::NotFound(path.to_path_buf()));
    } else if is(&target, libc::S_IFREG) {
        // O_NONBLOCK: if the name became a FIFO meanwhile, open must not hang.
        flags |= OFlag::O_RDONLY | OFlag::O_NONBLOCK;
    } else {
        return Err(ResolveError::NotRegular(path.to_path_buf()));
    }
    let fd = openat(dirfd, name, flags, Mode::empty()).map(own).map_err(err)?;
    // What we opened must be what we checked; for a link, the link must be unchanged.
    let opened = fstat(fd.as_raw_fd()).map_err(err)?;
    let same = |a: &FileStat, b: &FileStat| a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    if !same(&opened, &target) || (opened.st_mode & libc::S_IFMT) != (target.st_mode & libc::S_IFMT) {
        return Err(ResolveError::Raced(path.to_path_buf()));
    }
    if is_link {
        let again = fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(err)?;
        if !same(&again, &link) || again.st_uid != link.st_uid {
            return Err(ResolveError::Raced(path.to_path_buf()));
        }
    }
    Ok((fd, opened))
}

/// For CGI: walks `segments` under `root` with the same rules as [`resolve`] and stops
/// at the first regular file, the script; returns it with how many segments name it
/// (the rest is its PATH_INFO). A path that ends on a directory is `NotFound`. The
/// `.htaccess` rules of every directory down to the script apply as for a static file
/// (its `<Files>` sections matched against the script's name): a script an application
/// hides is never run.
pub fn resolve_script(root: &Path, segments: &[Vec<u8>]) -> Result<(ScriptFile, usize), ResolveError> {
    with_root(root, |root_fd, root_st| {
        // The directories walked, kept open for the access rules once the script's
        // name is known (CGI requests only: the static path allocates nothing here).
        let mut dirs: Vec<(OwnedFd, FileStat, PathBuf)> = Vec::new();
        let mut path = root.to_path_buf();
        for (i, seg) in segments.iter().enumerate() {
            path.push(OsStr::from_bytes(seg));
            let dir = dirs.last().map(|d| d.0.as_fd()).unwrap_or(root_fd);
            // The last segment, a plain readable file (the usual script): its stat is
            // all a script needs, no open. Anything else (a link, no read permission,
            // not there) takes `step`, whose answer and errors are the rule.
            let plain = (i + 1 == segments.len()).then(|| plain_file(dir, seg)).flatten();
            let st = match plain {
                Some(st) => st,
                None => {
                    let (fd, st) = step(dir, seg, &path, Want::Any)?;
                    if !is(&st, libc::S_IFREG) {
                        if !is(&st, libc::S_IFDIR) {
                            return Err(ResolveError::NotFound(path));
                        }
                        dirs.push((fd, st, path.clone()));
                        continue;
                    }
                    st
                }
            };
            let mut walk = access::Walk::new(seg);
            walk.enter(root_fd, root_st, root);
            for (d, st, p) in &dirs {
                walk.enter(d.as_fd(), st, p);
            }
            walk.finish()?;
            let found = ScriptFile {
                stat: st,
                name: seg.clone(),
            };
            return Ok((found, i + 1));
        }
        Err(ResolveError::NotFound(path))
    })
}

/// The stat of `name` in `dir` when it is a regular file (not a link) that this
/// process may read: two lookups instead of an open, a stat and a close.
fn plain_file(dir: BorrowedFd<'_>, name: &[u8]) -> Option<FileStat> {
    let st = fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    if !is(&st, libc::S_IFREG) {
        return None;
    }
    let flags = AtFlags::AT_EACCESS | AtFlags::AT_SYMLINK_NOFOLLOW;
    nix::unistd::faccessat(Some(dir.as_raw_fd()), name, nix::unistd::AccessFlags::R_OK, flags).ok()?;
    Some(st)
}

/// What [`resolve_script`] found: the script's stat and its own name.
#[derive(Debug)]
pub struct ScriptFile {
    pub stat: FileStat,
    pub name: Vec<u8>,
}

pub(crate) fn own(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open/openat and is owned by no one else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn is(st: &FileStat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

fn error(path: PathBuf, errno: Errno) -> ResolveError {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR => ResolveError::NotFound(path),
        Errno::EACCES | Errno::EPERM | Errno::ELOOP | Errno::ENAMETOOLONG => {
            ResolveError::Denied { path, errno }
        }
        _ => ResolveError::Io { path, errno },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn segs(p: &str) -> Vec<Vec<u8>> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    fn status(root: &Path, p: &str) -> u16 {
        match resolve(root, &segs(p), p.ends_with('/'), &["index.html".into()]) {
            Ok(Resolved::File(_)) => 200,
            Ok(Resolved::Redirect) => 301,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn walks_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/index.html"), "i").unwrap();
        std::fs::write(root.join("f.txt"), "f").unwrap();
        symlink("f.txt", root.join("same-owner")).unwrap();
        symlink("d", root.join("dirlink")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), Mode::S_IRWXU).unwrap();
        assert_eq!(status(root, "/f.txt"), 200);
        assert_eq!(status(root, "/f.txt/"), 404);
        assert_eq!(status(root, "/f.txt/x"), 404);
        assert_eq!(status(root, "/nope"), 404);
        assert_eq!(status(root, "/d"), 301);
        assert_eq!(status(root, "/d/"), 403);
        assert_eq!(status(root, "/d/e/"), 200);
        assert_eq!(status(root, "/dirlink/e/"), 200);
        assert_eq!(status(root, "/same-owner"), 200);
        assert_eq!(status(root, "/dangling"), 404);
        assert_eq!(status(root, "/fifo"), 403);
        match resolve(root, &segs("/d/e/"), true, &["index.html".into()]) {
            Ok(Resolved::File(found)) => assert_eq!(found.name, b"index.html"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn honours_htaccess_on_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("p/open")).unwrap();
        std::fs::create_dir_all(root.join("broken")).unwrap();
        std::fs::create_dir_all(root.join("linked")).unwrap();
        std::fs::write(root.join("p/.htaccess"), "Order allow,deny\nDeny from all\n").unwrap();
        std::fs::write(root.join("p/x.txt"), "x").unwrap();
        std::fs::write(
            root.join("p/open/.htaccess"),
            "Order allow,deny\nAllow from all\n",
        )
        .unwrap();
        std::fs::write(root.join("p/open/y.txt"), "y").unwrap();
        std::fs::write(root.join("broken/.htaccess"), "<IfModule mod_authz_core.c>\n").unwrap();
        std::fs::write(root.join("broken/z.txt"), "z").unwrap();
        std::fs::write(root.join("deny-rules"), "Require all denied\n").unwrap();
        symlink("../deny-rules", root.join("linked/.htaccess")).unwrap();
        std::fs::write(root.join("linked/w.txt"), "w").unwrap();
        assert_eq!(status(root, "/p/x.txt"), 403);
        assert_eq!(status(root, "/p/missing"), 403);
        assert_eq!(status(root, "/p"), 403);
        assert_eq!(status(root, "/p/open/y.txt"), 200);
        assert_eq!(status(root, "/broken/z.txt"), 500);
        // An owner-matched link is followed, like any other file.
        assert_eq!(status(root, "/linked/w.txt"), 403);
        assert_eq!(status(root, "/deny-rules"), 200);
        // Removing a .htaccess changes the directory's mtime: seen at once.
        std::fs::remove_file(root.join("p/.htaccess")).unwrap();
        assert_eq!(status(root, "/p/x.txt"), 200);
    }

    #[test]
    fn index_names_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let index: Vec<String> = vec!["index.php".into(), "index.html".into()];
        let served = |p: &str| match resolve(root, &segs(p), true, &index) {
            Ok(Resolved::File(found)) => Ok(String::from_utf8(found.name).unwrap()),
            Ok(Resolved::Redirect) => Err(301),
            Err(e) => Err(e.status()),
        };
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::create_dir_all(root.join("c/index.php")).unwrap();
        std::fs::write(root.join("a/index.html"), "a").unwrap();
        std::fs::write(root.join("b/index.html"), "b").unwrap();
        std::fs::write(root.join("b/index.php"), "b").unwrap();
        std::fs::write(root.join("c/index.html"), "c").unwrap();
        assert_eq!(served("/a/"), Ok("index.html".into()));
        assert_eq!(served("/b/"), Ok("index.php".into()));
        // A directory named like an index is skipped.
        assert_eq!(served("/c/"), Ok("index.html".into()));
        assert_eq!(served("/"), Err(403));
        // `<Files>` sections match the name served, not the first listed.
        std::fs::write(
            root.join("a/.htaccess"),
            "<Files index.php>\nRequire all denied\n</Files>\n",
        )
        .unwrap();
        assert_eq!(served("/a/"), Ok("index.html".into()));
        std::fs::write(
            root.join("a/.htaccess"),
            "<Files index.html>\nRequire all denied\n</Files>\n",
        )
        .unwrap();
        assert_eq!(served("/a/"), Err(403));
    }

    #[test]
    fn scripts_resolve_by_stat_with_the_same_answers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.php"), "x").unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/b.php"), "y").unwrap();
        symlink("a.php", root.join("same.php")).unwrap();
        symlink("a.php", root.join("other.php")).unwrap();
        nix::unistd::fchownat(
            None,
            &root.join("other.php"),
            Some(nix::unistd::Uid::from_raw(2001)),
            None,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok();
        nix::unistd::mkfifo(&root.join("fifo.php"), Mode::S_IRWXU).unwrap();
        let got =
            |p: &str| resolve_script(root, &segs(p)).map(|(f, n)| (String::from_utf8(f.name).unwrap(), n));
        assert_eq!(got("/a.php").unwrap(), ("a.php".into(), 1));
        // PATH_INFO after the script; the script in a directory.
        assert_eq!(got("/d/b.php/more/info").unwrap(), ("b.php".into(), 2));
        // A link owned as its target is followed (SymLinksIfOwnerMatch), by `step`.
        assert_eq!(got("/same.php").unwrap(), ("same.php".into(), 1));
        if nix::unistd::geteuid().is_root() {
            assert!(matches!(
                got("/other.php"),
                Err(ResolveError::SymlinkOwner { .. })
            ));
        }
        assert!(matches!(got("/missing.php"), Err(ResolveError::NotFound(_))));
        assert!(matches!(got("/d"), Err(ResolveError::NotFound(_))));
        assert!(matches!(got("/fifo.php"), Err(ResolveError::NotRegular(_))));
        // The stat is the file's own.
        let (f, _) = resolve_script(root, &segs("/a.php")).unwrap();
        assert_eq!(f.stat.st_size, 1);
        assert!(is(&f.stat, libc::S_IFREG));
    }
}
