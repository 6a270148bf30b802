//! Opening a log file as root without letting anyone else choose what is opened: the
//! path is walked from `/` one component at a time with `openat(O_NOFOLLOW)`, so a
//! symlink anywhere in it is refused instead of followed, and the file itself must be
//! a regular file with a single link (never a FIFO, a device, or a hard link to some
//! other file). Used for every access log and the error log, at start, on SIGHUP and on
//! SIGUSR1.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, openat, AtFlags, FcntlArg, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use thiserror::Error;

/// Mode of a log file created here (before the umask).
const LOG_MODE: u32 = 0o640;

/// Why a log file was not opened.
#[derive(Debug, Error)]
pub enum SafeOpenError {
    #[error("'{0}' is not an absolute path without '..'")]
    NotAbsolute(PathBuf),
    #[error("'{at}' is a symbolic link: log paths must not contain one (refused, not followed)")]
    Symlink { at: PathBuf },
    #[error("'{at}' is not a directory")]
    NotDirectory { at: PathBuf },
    #[error("'{at}' is not a regular file ({kind}); refusing to open it for writing")]
    NotRegular { at: PathBuf, kind: &'static str },
    #[error("'{at}' has {links} hard links: it may be another file linked here; refusing it")]
    HardLinks { at: PathBuf, links: u64 },
    #[error("'{at}': {errno}")]
    Io { at: PathBuf, errno: Errno },
}

/// Opens (creating with mode 0640 when absent) `path` for appending, close-on-exec,
/// without following any symlink on the way.
pub fn open_append(path: &Path) -> Result<File, SafeOpenError> {
    let not_absolute = || SafeOpenError::NotAbsolute(path.to_path_buf());
    let mut names = Vec::new();
    for (i, c) in path.components().enumerate() {
        match c {
            Component::RootDir if i == 0 => {}
            Component::CurDir => {}
            Component::Normal(name) => names.push(name),
            _ => return Err(not_absolute()),
        }
    }
    let Some((file_name, dirs)) = names.split_last() else {
        return Err(not_absolute());
    };
    if !path.is_absolute() {
        return Err(not_absolute());
    }
    // O_PATH: search permission is enough (unprivileged mode: a directory we may
    // search but not list).
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut at = PathBuf::from("/");
    let mut dir = open("/", dir_flags, Mode::empty())
        .map(own)
        .map_err(|errno| io(&at, errno))?;
    for name in dirs {
        at.push(name);
        dir = match openat(Some(dir.as_raw_fd()), *name, dir_flags, Mode::empty()) {
            Ok(fd) => own(fd),
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => return Err(why_not_dir(&dir, name, &at)),
            Err(errno) => return Err(io(&at, errno)),
        };
    }
    at.push(file_name);
    // Look before opening: a FIFO or a device is never opened at all (opening one can
    // block or have effects of its own).
    match fstatat(Some(dir.as_raw_fd()), *file_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => check_file(&st, &at)?,
        Err(Errno::ENOENT) => {}
        Err(errno) => return Err(io(&at, errno)),
    }
    // O_NONBLOCK and O_NOCTTY in case the name was swapped for a FIFO meanwhile;
    // O_NOFOLLOW in case it was swapped for a link.
    let flags = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_CREAT
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match openat(
        Some(dir.as_raw_fd()),
        *file_name,
        flags,
        Mode::from_bits_truncate(LOG_MODE),
    ) {
        Ok(fd) => own(fd),
        Err(Errno::ELOOP) => return Err(SafeOpenError::Symlink { at }),
        Err(errno) => return Err(io(&at, errno)),
    };
    let st = fstat(fd.as_raw_fd()).map_err(|errno| io(&at, errno))?;
    check_file(&st, &at)?;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_APPEND)).map_err(|errno| io(&at, errno))?;
    Ok(File::from(fd))
}

/// A regular file with at most one link (zero: unlinked since, harmless).
fn check_file(st: &FileStat, at: &Path) -> Result<(), SafeOpenError> {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => None,
        libc::S_IFLNK => return Err(SafeOpenError::Symlink { at: at.to_path_buf() }),
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFIFO => Some("a FIFO"),
        libc::S_IFCHR => Some("a character device"),
        libc::S_IFBLK => Some("a block device"),
        libc::S_IFSOCK => Some("a socket"),
        _ => Some("of an unknown type"),
    };
    if let Some(kind) = kind {
        return Err(SafeOpenError::NotRegular {
            at: at.to_path_buf(),
            kind,
        });
    }
    #[allow(clippy::useless_conversion)] // nlink_t is not u64 on every target
    let links = u64::from(st.st_nlink);
    if links > 1 {
        return Err(SafeOpenError::HardLinks {
            at: at.to_path_buf(),
            links,
        });
    }
    Ok(())
}

/// Names why `name` in `dir` could not be opened as a directory.
fn why_not_dir(dir: &OwnedFd, name: &std::ffi::OsStr, at: &Path) -> SafeOpenError {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
            SafeOpenError::Symlink { at: at.to_path_buf() }
        }
        Ok(_) => SafeOpenError::NotDirectory { at: at.to_path_buf() },
        Err(errno) => io(at, errno),
    }
}

fn io(at: &Path, errno: Errno) -> SafeOpenError {
    SafeOpenError::Io {
        at: at.to_path_buf(),
        errno,
    }
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open/openat and is owned by no one else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn dir() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("safe-open").tempdir().unwrap()
    }

    #[test]
    fn creates_and_appends() {
        let d = dir();
        let p = d.path().join("a.log");
        open_append(&p).unwrap().write_all(b"one\n").unwrap();
        open_append(&p).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777 & !0o640, 0);
        let fd = open_append(&p).unwrap();
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec");
        let fl = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_APPEND) && !fl.contains(OFlag::O_NONBLOCK));
    }

    #[test]
    fn symlink_at_the_end_is_refused_and_its_target_never_created() {
        let d = dir();
        let canary = d.path().join("canary");
        let p = d.path().join("a.log");
        symlink(&canary, &p).unwrap();
        let e = open_append(&p).unwrap_err();
        assert!(matches!(e, SafeOpenError::Symlink { ref at } if at == &p), "{e}");
        assert!(!canary.exists());
        // A link to an existing file: not written either.
        std::fs::write(&canary, b"").unwrap();
        assert!(matches!(open_append(&p), Err(SafeOpenError::Symlink { .. })));
        assert_eq!(std::fs::metadata(&canary).unwrap().len(), 0);
    }

    #[test]
    fn symlink_in_the_middle_is_refused() {
        let d = dir();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = d.path().join("logs");
        symlink(&real, &link).unwrap();
        let e = open_append(&link.join("a.log")).unwrap_err();
        assert!(
            matches!(e, SafeOpenError::Symlink { ref at } if at == &link),
            "{e}"
        );
        assert!(!real.join("a.log").exists());
    }

    #[test]
    fn fifo_at_the_end_is_refused_without_blocking() {
        let d = dir();
        let p = d.path().join("a.log");
        nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_append(&p).unwrap_err();
        assert!(
            matches!(e, SafeOpenError::NotRegular { kind: "a FIFO", .. }),
            "{e}"
        );
    }

    #[test]
    fn a_directory_or_a_device_is_refused() {
        let d = dir();
        let e = open_append(d.path()).unwrap_err();
        assert!(matches!(e, SafeOpenError::NotRegular { .. }), "{e}");
        let e = open_append(Path::new("/dev/null")).unwrap_err();
        assert!(
            matches!(
                e,
                SafeOpenError::NotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn hard_link_is_refused() {
        let d = dir();
        let other = d.path().join("other");
        std::fs::write(&other, b"secret\n").unwrap();
        let p = d.path().join("a.log");
        std::fs::hard_link(&other, &p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().nlink(), 2);
        let e = open_append(&p).unwrap_err();
        assert!(matches!(e, SafeOpenError::HardLinks { links: 2, .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "secret\n");
    }

    #[test]
    fn relative_or_dotdot_paths_are_refused() {
        for p in ["a.log", "/tmp/../etc/x", "/"] {
            assert!(
                matches!(open_append(Path::new(p)), Err(SafeOpenError::NotAbsolute(_))),
                "{p}"
            );
        }
    }
}
