//! cgroupfs access as root without following a symlink: every path is walked from `/`
//! one component at a time with `openat(O_NOFOLLOW)` (cgroupfs has no links, but what
//! is above its mount could be changed), groups are held as `O_PATH` directory fds,
//! and interface files are opened relative to them with `O_NOFOLLOW`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Most bytes read from an interface file (`memory.events` is about 100).
const READ_MAX: usize = 4096;

const DIR_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by open/openat and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The normal components of an absolute path; `None` for `..` or a relative path.
fn names(path: &Path) -> Option<Vec<&std::ffi::OsStr>> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    Some(out)
}

/// Opens the directory `path` (absolute), no link followed; with `create`, the
/// missing components from `create_below` on (a path prefix of `path`) are made
/// (mode 0755).
pub fn open_dir(path: &Path, create_below: Option<&Path>) -> Result<OwnedFd, Errno> {
    let all = names(path).ok_or(Errno::EINVAL)?;
    let keep = match create_below {
        Some(base) => names(base).ok_or(Errno::EINVAL)?.len(),
        None => usize::MAX,
    };
    let mut dir = open("/", DIR_FLAGS, Mode::empty()).map(own)?;
    for (i, name) in all.iter().enumerate() {
        let next = match openat(Some(dir.as_raw_fd()), *name, DIR_FLAGS, Mode::empty()) {
            Err(Errno::ENOENT) if i >= keep => {
                match mkdirat(Some(dir.as_raw_fd()), *name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                openat(Some(dir.as_raw_fd()), *name, DIR_FLAGS, Mode::empty())?
            }
            other => other?,
        };
        dir = own(next);
    }
    Ok(dir)
}

/// Writes `value` into the interface file `name` of the group `dir` in one `write`
/// (cgroupfs takes a value per write).
pub fn write(dir: &OwnedFd, name: &str, value: &str) -> Result<(), Errno> {
    let flags = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = own(openat(Some(dir.as_raw_fd()), name, flags, Mode::empty())?);
    let n = nix::unistd::write(&fd, value.as_bytes())?;
    if n != value.len() {
        return Err(Errno::EIO);
    }
    Ok(())
}

/// The text of the interface file `name` of `dir`, at most [`READ_MAX`] bytes.
pub fn read(dir: &OwnedFd, name: &str) -> Result<String, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = own(openat(Some(dir.as_raw_fd()), name, flags, Mode::empty())?);
    let mut buf = vec![0u8; READ_MAX];
    let mut len = 0;
    while len < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Whether `dir` has an entry `name` (an interface file).
pub fn exists(dir: &OwnedFd, name: &str) -> bool {
    nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok()
}

/// Removes the (empty of processes) group at `path`; a missing one is gone already.
pub fn remove(path: &Path) -> Result<(), Errno> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Errno::EINVAL);
    };
    let dir = open_dir(parent, None)?;
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
