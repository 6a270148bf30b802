//! The `.htaccess` of a directory, read as the tenant and parsed once, kept per thread
//! for up to [`CAPACITY`] directories (cleared when full).
//!
//! Keyed by the directory's (device, inode) and revalidated by its mtime, which the walk
//! has already from its `fstat`: a directory without `.htaccess` costs no syscall until
//! an entry is created, removed or renamed in it. A present `.htaccess` costs one
//! `fstatat` per request (its inode, size, mtime and ctime). A timestamp less than
//! [`SETTLE`](crate::handler::stamp::SETTLE) old is not trusted (a change within the same clock tick would keep it):
//! such a directory or file is looked at again on the next request, and a file's text is
//! parsed again only when it changed (compared by hash), so notes are logged once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::rc::Rc;
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use super::parse::{self, Htaccess};
use super::AccessError;
use crate::handler::stamp::Stamp;
use crate::handler::static_files::resolve::{self, ResolveError};

/// The name read in every directory.
pub const NAME: &str = ".htaccess";
/// A larger `.htaccess` refuses its directory (fail closed).
pub const MAX_SIZE: u64 = 64 * 1024;
/// Directories remembered per thread.
pub const CAPACITY: usize = 1000;

enum State {
    Absent,
    Present {
        stamp: Stamp,
        settled: bool,
        hash: u64,
        rules: Rc<Htaccess>,
    },
}

struct Entry {
    dir: Stamp,
    dir_settled: bool,
    state: State,
}

thread_local! {
    static CACHE: RefCell<HashMap<(u64, u64), Entry>> = RefCell::new(HashMap::new());
}

/// The rules of the `.htaccess` in `dir` (whose stat is `dir_st` and path `path`), if
/// it has one.
pub fn rules(
    dir: BorrowedFd<'_>,
    dir_st: &FileStat,
    path: &Path,
) -> Result<Option<Rc<Htaccess>>, AccessError> {
    let key = (dir_st.st_dev, dir_st.st_ino);
    let dir_stamp = Stamp::of(dir_st);
    let cached = CACHE.with(|c| {
        let c = c.borrow();
        let e = c.get(&key)?;
        match &e.state {
            // No `.htaccess` while the directory is unchanged since a settled look.
            State::Absent => (e.dir == dir_stamp && e.dir_settled).then_some(Hit::Absent),
            // A present one is checked by its own stamp, whatever the directory did.
            State::Present {
                stamp,
                settled,
                hash,
                rules,
            } => Some(Hit::Present {
                stamp: *stamp,
                settled: *settled,
                hash: *hash,
                rules: rules.clone(),
            }),
        }
    });
    let previous = match cached {
        Some(Hit::Absent) => return Ok(None),
        Some(Hit::Present {
            stamp,
            settled,
            hash,
            rules,
        }) => {
            if settled {
                let now = fstatat(Some(dir.as_raw_fd()), NAME, AtFlags::AT_SYMLINK_NOFOLLOW);
                if now.is_ok_and(|st| Stamp::of(&st) == stamp) {
                    return Ok(Some(rules));
                }
            }
            Some((hash, rules))
        }
        None => None,
    };
    let now = SystemTime::now();
    let (state, rules) = load(dir, path, previous, now)?;
    let entry = Entry {
        dir: dir_stamp,
        dir_settled: dir_stamp.settled(now),
        state,
    };
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CAPACITY && !c.contains_key(&key) {
            c.clear();
        }
        c.insert(key, entry);
    });
    Ok(rules)
}

enum Hit {
    Absent,
    Present {
        stamp: Stamp,
        settled: bool,
        hash: u64,
        rules: Rc<Htaccess>,
    },
}

/// Read and parse `dir`'s `.htaccess`; `previous` is the last text's hash and rules.
fn load(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    previous: Option<(u64, Rc<Htaccess>)>,
    now: SystemTime,
) -> Result<(State, Option<Rc<Htaccess>>), AccessError> {
    let path = dir_path.join(NAME);
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let (file, st, linked) = match openat(Some(dir.as_raw_fd()), NAME, flags, Mode::empty()) {
        Ok(fd) => {
            let file = std::fs::File::from(resolve::own(fd));
            let st = fstat(file.as_raw_fd()).map_err(|errno| AccessError::Io {
                path: path.clone(),
                errno,
            })?;
            (file, st, false)
        }
        Err(Errno::ENOENT) => return Ok((State::Absent, None)),
        // A symbolic link: followed only when owner-matched, like any other file.
        Err(Errno::ELOOP) => match resolve::step(dir, NAME.as_bytes(), &path, resolve::Want::Any) {
            Ok((fd, st)) => (std::fs::File::from(fd), st, true),
            Err(ResolveError::NotFound(_)) => return Ok((State::Absent, None)),
            Err(e) => return Err(AccessError::Unreadable(Box::new(e))),
        },
        Err(errno @ (Errno::EACCES | Errno::EPERM)) => {
            return Err(AccessError::Unreadable(Box::new(ResolveError::Denied {
                path,
                errno,
            })))
        }
        Err(errno) => return Err(AccessError::Io { path, errno }),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(AccessError::Broken {
            path,
            reason: "not a regular file".into(),
        });
    }
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > MAX_SIZE {
        return Err(AccessError::Broken {
            path,
            reason: format!("{size} bytes, more than {MAX_SIZE}"),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| AccessError::Io {
            path: path.clone(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(AccessError::Broken {
            path,
            reason: format!("more than {MAX_SIZE} bytes"),
        });
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let hash = hasher.finish();
    let rules = match previous {
        Some((h, rules)) if h == hash => rules,
        _ => {
            let text = String::from_utf8_lossy(&bytes);
            let parsed = parse::parse(&text).map_err(|e| AccessError::Broken {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            if !parsed.notes.is_empty() {
                tracing::debug!(file = %path.display(), ignored = ?parsed.notes, "htaccess: ignored what is not implemented");
            }
            Rc::new(parsed)
        }
    };
    let stamp = Stamp::of(&st);
    // A followed link's own stamp does not change with its target: read it every time.
    let settled = !linked && stamp.settled(now);
    let state = State::Present {
        stamp,
        settled,
        hash,
        rules: rules.clone(),
    };
    Ok((state, Some(rules)))
}
