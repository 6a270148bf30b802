//! An environment's FastCGI listening socket: its directory made or checked without
//! following any path someone else controls, a stale socket of the same name removed,
//! the bind, and the socket file given to the environment (its uid and gid, mode
//! 0600) so that only it and root can connect. The socket file is unlinked when the
//! [`Socket`] is dropped (its generation is gone).
//!
//! Every directory is opened from `/` one component at a time with
//! `O_NOFOLLOW|O_DIRECTORY`; a component that is a symlink, is not root's (or, run
//! unprivileged, ours) or is writable by group or others (save a sticky directory
//! such as `/tmp`, on the way only) is refused. The socket's own directory is root's
//! and mode 0711: anyone may pass, nobody may list it or create in it. The bind and
//! the chown/chmod go through the directory's fd (`/proc/self/fd/N/name`,
//! `fchownat`, `fchmodat`), never through the path again.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{fchmod, fchmodat, fstat, mkdirat, umask, FchmodatFlags, Mode};
use nix::unistd::{fchownat, unlinkat, Gid, Uid, UnlinkatFlags};
use thiserror::Error;

/// Mode of the directory holding the sockets: root's, passable, not listable.
pub const DIR_MODE: u32 = 0o711;
/// Mode of a socket file: its environment's uid only.
pub const SOCKET_MODE: u32 = 0o600;
/// php-fpm's listen backlog.
const BACKLOG: i32 = 511;
/// Longest path a `sockaddr_un` holds (108 bytes with its NUL).
pub const SUN_PATH_MAX: usize = 107;

/// Why a FastCGI socket could not be made.
#[derive(Debug, Error)]
pub enum SocketError {
    #[error("environment {env}: FastCGI socket path '{path}' is {len} bytes, longer than a Unix socket address holds ({SUN_PATH_MAX})")]
    TooLong { env: String, path: PathBuf, len: usize },
    #[error("environment {env}: '{at}' is not an absolute path without '..'")]
    NotAbsolute { env: String, at: PathBuf },
    #[error("environment {env}: '{at}' is a symbolic link or not a directory: refused, not followed")]
    NotDirectory { env: String, at: PathBuf },
    #[error("environment {env}: '{at}' is owned by uid {uid}, not root: refused for the FastCGI socket")]
    Owner { env: String, at: PathBuf, uid: u32 },
    #[error("environment {env}: '{at}' is writable by group or others (mode {mode:o}): refused for the FastCGI socket")]
    Writable { env: String, at: PathBuf, mode: u32 },
    #[error("environment {env}: FastCGI socket '{at}': {errno}")]
    Io { env: String, at: PathBuf, errno: Errno },
}

/// A bound, listening FastCGI socket; unlinked on drop.
#[derive(Debug)]
pub struct Socket {
    /// The listening socket (close-on-exec, non-blocking); the supervisor never accepts.
    pub listener: OwnedFd,
    /// The directory holding it.
    dir: OwnedFd,
    name: String,
    /// Where it is on the host.
    pub path: PathBuf,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = unlinkat(
            Some(self.dir.as_raw_fd()),
            self.name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }
}

impl Socket {
    /// The directory holding it (root's, 0711): where a php-fpm pool file goes too.
    pub fn dir(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.dir)
    }
}

/// Who may own the directories on the way: root, or the user running an
/// unprivileged server.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// The rule for one existing directory on the way (`last`: the socket's own one,
/// where a sticky, writable directory is not enough). Pure, for the tests.
pub fn check_dir(uid: u32, mode: u32, last: bool) -> Result<(), &'static str> {
    if !trusted_owner(uid) {
        return Err("owner");
    }
    let writable = mode & 0o022 != 0;
    let sticky = mode & libc::S_ISVTX != 0;
    if writable && (last || !sticky) {
        return Err("writable");
    }
    Ok(())
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn own(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens directory `path` from `/` without following a link, creating the missing
/// components (mode 0711, when `create`), checking each one; the last one's mode
/// becomes [`DIR_MODE`] when `last_is_socket_dir`.
fn open_dir(env: &str, path: &Path, create: bool, last_is_socket_dir: bool) -> Result<OwnedFd, SocketError> {
    let not_abs = || SocketError::NotAbsolute {
        env: env.to_owned(),
        at: path.to_path_buf(),
    };
    if !path.is_absolute() {
        return Err(not_abs());
    }
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => names.push(n),
            _ => return Err(not_abs()),
        }
    }
    let io = |at: &Path, errno| SocketError::Io {
        env: env.to_owned(),
        at: at.to_path_buf(),
        errno,
    };
    let mut at = PathBuf::from("/");
    let mut dir = nix::fcntl::open("/", DIR_FLAGS, Mode::empty())
        .map(own)
        .map_err(|e| io(&at, e))?;
    let n = names.len();
    for (i, name) in names.into_iter().enumerate() {
        at.push(name);
        let last = i + 1 == n && last_is_socket_dir;
        let mut created = false;
        let next = match openat(Some(dir.as_raw_fd()), name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => own(fd),
            Err(Errno::ENOENT) if create => {
                match mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(DIR_MODE)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io(&at, e)),
                }
                created = true;
                match openat(Some(dir.as_raw_fd()), name, DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => own(fd),
                    Err(Errno::ELOOP | Errno::ENOTDIR) => {
                        return Err(SocketError::NotDirectory {
                            env: env.to_owned(),
                            at,
                        })
                    }
                    Err(e) => return Err(io(&at, e)),
                }
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(SocketError::NotDirectory {
                    env: env.to_owned(),
                    at,
                })
            }
            Err(e) => return Err(io(&at, e)),
        };
        let st = fstat(next.as_raw_fd()).map_err(|e| io(&at, e))?;
        match check_dir(st.st_uid, st.st_mode & 0o7777, last) {
            Ok(()) => {}
            Err("owner") => {
                return Err(SocketError::Owner {
                    env: env.to_owned(),
                    at,
                    uid: st.st_uid,
                })
            }
            Err(_) => {
                return Err(SocketError::Writable {
                    env: env.to_owned(),
                    at,
                    mode: st.st_mode & 0o7777,
                })
            }
        }
        if (last || created) && st.st_mode & 0o7777 != DIR_MODE {
            fchmod(next.as_raw_fd(), Mode::from_bits_truncate(DIR_MODE)).map_err(|e| io(&at, e))?;
        }
        dir = next;
    }
    Ok(dir)
}

/// What to make: the environment's name (for errors), the directory the socket goes
/// in and the one above it that must exist already (`None`: make what is missing),
/// the path the environment's processes use, and who gets the socket file.
pub struct Spec<'a> {
    pub env: &'a str,
    /// The host path of the socket.
    pub host: &'a Path,
    /// The path its processes connect to (inside their chroot).
    pub inner: &'a Path,
    /// With a chroot: the jail, which must exist (`check` made sure it is root's);
    /// without: `None`, and every missing component is made.
    pub jail: Option<&'a Path>,
    /// The environment's uid and gid; `None` unprivileged (the file stays ours).
    pub owner: Option<(u32, u32)>,
}

/// Makes the directory, removes a stale socket of that exact name, binds, listens and
/// gives the file to the environment.
pub fn create(spec: &Spec<'_>) -> Result<Socket, SocketError> {
    let env = spec.env;
    let len = spec.inner.as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(SocketError::TooLong {
            env: env.to_owned(),
            path: spec.inner.to_path_buf(),
            len,
        });
    }
    let not_abs = || SocketError::NotAbsolute {
        env: env.to_owned(),
        at: spec.host.to_path_buf(),
    };
    let (Some(dir_path), Some(name)) = (spec.host.parent(), spec.host.file_name().and_then(|n| n.to_str()))
    else {
        return Err(not_abs());
    };
    let dir = match spec.jail {
        Some(jail) => {
            if dir_path.parent() != Some(jail) {
                return Err(not_abs());
            }
            open_dir(env, jail, false, false)?;
            open_dir(env, dir_path, true, true)?
        }
        None => open_dir(env, dir_path, true, true)?,
    };
    let io = |errno| SocketError::Io {
        env: env.to_owned(),
        at: spec.host.to_path_buf(),
        errno,
    };
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io(e)),
    }
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(io)?;
    // By its real path, so the socket's address (`ss -x`, `/proc/net/unix`,
    // `getsockname`) names it. Resolving the path again is safe: every directory on
    // it was just checked to be root's and writable by nobody else, so only root can
    // change what it names.
    let addr = UnixAddr::new(spec.host).map_err(io)?;
    // Born 0600: no other uid can connect between the bind and the chmod. The
    // supervisor is single-threaded; the umask is back before anything else runs.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = bind(sock.as_raw_fd(), &addr);
    umask(old);
    bound.map_err(io)?;
    let socket = Socket {
        listener: sock,
        dir,
        name: name.to_owned(),
        path: spec.host.to_path_buf(),
    };
    let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
    listen(&socket.listener, backlog).map_err(io)?;
    let dirfd = Some(socket.dir.as_raw_fd());
    if let Some((uid, gid)) = spec.owner {
        fchownat(
            dirfd,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io)?;
    }
    fchmodat(
        dirfd,
        name,
        Mode::from_bits_truncate(SOCKET_MODE),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(io)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn directory_rules() {
        assert_eq!(check_dir(0, 0o755, false), Ok(()));
        assert_eq!(check_dir(0, 0o711, true), Ok(()));
        // /tmp on the way is fine; as the socket's own directory it is not.
        assert_eq!(check_dir(0, 0o1777, false), Ok(()));
        assert_eq!(check_dir(0, 0o1777, true), Err("writable"));
        assert_eq!(check_dir(0, 0o775, false), Err("writable"));
        assert_eq!(check_dir(0, 0o757, true), Err("writable"));
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        assert_eq!(check_dir(2001, 0o755, false), Err("owner"));
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("bulkhead-fcgi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn made_bound_0600_and_unlinked_on_drop() {
        let base = tmp("make");
        let host = base.join("run/fastcgi/1-0-0.sock");
        let spec = Spec {
            env: "alice",
            host: &host,
            inner: &host,
            jail: None,
            owner: None,
        };
        // A stale file of that exact name goes.
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(&host, b"stale").unwrap();
        let s = create(&spec).unwrap();
        let dir = std::fs::metadata(host.parent().unwrap()).unwrap();
        assert_eq!(dir.mode() & 0o7777, DIR_MODE);
        let meta = std::fs::symlink_metadata(&host).unwrap();
        assert_eq!(meta.mode() & 0o7777, SOCKET_MODE);
        assert_eq!(meta.mode() & libc::S_IFMT, libc::S_IFSOCK);
        std::os::unix::net::UnixStream::connect(&host).unwrap();
        drop(s);
        assert!(std::fs::symlink_metadata(&host).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_symlink_or_writable_directory_on_the_way_is_refused() {
        let base = tmp("links");
        let real = base.join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, base.join("link")).unwrap();
        let host = base.join("link/fastcgi/1-0-0.sock");
        let spec = Spec {
            env: "alice",
            host: &host,
            inner: &host,
            jail: None,
            owner: None,
        };
        let e = create(&spec).unwrap_err();
        assert!(matches!(e, SocketError::NotDirectory { .. }), "{e}");
        assert!(!real.join("fastcgi").exists());
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let host = open.join("fastcgi/1-0-0.sock");
        let e = create(&Spec {
            host: &host,
            inner: &host,
            ..spec
        })
        .unwrap_err();
        assert!(matches!(e, SocketError::Writable { .. }), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_path_longer_than_sun_path_is_an_error() {
        let long = PathBuf::from(format!("/{}", "x".repeat(SUN_PATH_MAX)));
        let spec = Spec {
            env: "alice",
            host: &long,
            inner: &long,
            jail: None,
            owner: None,
        };
        assert!(matches!(create(&spec), Err(SocketError::TooLong { .. })));
    }
}
