//! The mount steps an environment's holder carries out in its fresh mount namespace,
//! as the supervisor planned them (`supervisor::namespace::plan`): a data type that
//! travels in the holder's bootstrap, and the code that runs it. Every path is the
//! holder's (the host's) view; the holder is root and single-threaded.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One step of an environment's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Every mount private to this namespace: nothing propagates to or from the host.
    Private,
    /// The directory `path` (a chroot) becomes a fresh root-owned tmpfs holding clones
    /// of what it held (directories and files bound read-write, links recreated), but
    /// the names in `skip` (the ones the view provides itself).
    NewRoot { path: PathBuf, skip: Vec<String> },
    /// A fresh tmpfs (mode `mode`) on the directory `path` (a private `/tmp`), with
    /// the directories and files `keep` below it (the environment's own, e.g. document
    /// roots, certificates and keys under `/tmp`) bound back at the same places.
    Cover {
        path: PathBuf,
        mode: u32,
        keep: Vec<PathBuf>,
    },
    /// A directory (made with its parents when missing; inside a `NewRoot` only).
    Dir { path: PathBuf, mode: u32 },
    /// A tmpfs on `path` (made when missing), e.g. `/tmp` with mode 01777.
    Tmpfs { path: PathBuf, mode: u32 },
    /// `/proc` of the environment's PID namespace, `hidepid=invisible`.
    Proc { path: PathBuf },
    /// `source` bound on `target` (a directory or an empty file made for it when
    /// missing), recursively; read-only and nosuid when asked.
    Bind {
        source: PathBuf,
        target: PathBuf,
        read_only: bool,
    },
    /// A symbolic link at `path` pointing to `to`.
    Symlink { path: PathBuf, to: PathBuf },
    /// A small file written at `path` (a generated `/etc/passwd`).
    File { path: PathBuf, contents: String },
    /// An empty read-only tmpfs (mode 000) over the directory `path`, opened without
    /// following a link; a missing one is skipped.
    Hide { path: PathBuf },
}

/// Why a step failed (the holder exits; the supervisor refuses the environment).
#[derive(Debug, Error)]
pub enum MountError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MountError + 'a {
    move |source| MountError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    let src = src.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(|s| CString::new(s).unwrap_or_default());
    let data = data.map(|s| CString::new(s).unwrap_or_default());
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
    let r = unsafe { libc::mount(ptr(&src), target.as_ptr(), ptr(&fstype), flags, ptr(&data).cast()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `path` (absolute) `O_PATH` component by component without following a link.
fn open_nofollow(path: &Path) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let raw = nix::fcntl::open("/", flags, Mode::empty())?;
    // SAFETY: a fresh fd from open, owned by nothing else.
    let mut dir = unsafe { OwnedFd::from_raw_fd(raw) };
    for c in path.components().skip(1) {
        let raw = openat(Some(dir.as_raw_fd()), c.as_os_str(), flags, Mode::empty())?;
        // SAFETY: as above.
        dir = unsafe { OwnedFd::from_raw_fd(raw) };
    }
    Ok(dir)
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A mountpoint for `source` at `target`: a directory, or an empty file.
fn mountpoint(source: &Path, target: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    if std::fs::metadata(source)?.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(target).map(drop)
    }
}

/// Runs one step.
pub fn run(step: &Step) -> Result<(), MountError> {
    use std::os::unix::fs::PermissionsExt;
    match step {
        Step::Private => mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)
            .map_err(io("making mounts private at", Path::new("/"))),
        Step::NewRoot { path, skip } => new_root(path, skip),
        Step::Cover { path, mode, keep } => cover(path, *mode, keep),
        Step::Dir { path, mode } => {
            std::fs::create_dir_all(path).map_err(io("mkdir", path))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).map_err(io("chmod", path))
        }
        Step::Tmpfs { path, mode } => {
            std::fs::create_dir_all(path).map_err(io("mkdir", path))?;
            let data = format!("mode={mode:o}");
            mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&data),
            )
            .map_err(io("mounting a tmpfs on", path))
        }
        Step::Proc { path } => {
            std::fs::create_dir_all(path).map_err(io("mkdir", path))?;
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let proc_ = Some(Path::new("proc"));
            mount(proc_, path, Some("proc"), flags, Some("hidepid=invisible"))
                .or_else(|_| mount(proc_, path, Some("proc"), flags, Some("hidepid=2")))
                .map_err(io("mounting proc on", path))
        }
        Step::Bind {
            source,
            target,
            read_only,
        } => {
            mountpoint(source, target).map_err(io("making a mountpoint", target))?;
            mount(Some(source), target, None, libc::MS_BIND | libc::MS_REC, None)
                .map_err(io("binding onto", target))?;
            if *read_only {
                let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID;
                mount(None, target, None, flags, None).map_err(io("remounting read-only", target))?;
            }
            Ok(())
        }
        Step::Symlink { path, to } => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("mkdir", parent))?;
            }
            std::os::unix::fs::symlink(to, path).map_err(io("symlink", path))
        }
        Step::File { path, contents } => std::fs::write(path, contents).map_err(io("writing", path)),
        Step::Hide { path } => {
            let fd = match open_nofollow(path) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(io("opening (to hide)", path)(e)),
            };
            let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            mount(
                Some(Path::new("tmpfs")),
                &fd_path(&fd),
                Some("tmpfs"),
                flags,
                Some("mode=000,size=4k"),
            )
            .map_err(io("hiding", path))
        }
    }
}

// From <linux/mount.h> and <fcntl.h>: the new mount API's flags.
const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// A detached recursive clone of `path` (its own mounts included).
fn clone_tree(dir: libc::c_int, name: &Path) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    let mut flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW as u32;
    if name.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    // SAFETY: open_tree on a directory fd (or AT_FDCWD) and a NUL-terminated name;
    // returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, dir, c.as_ptr(), flags) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from open_tree, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Attaches a detached tree at `target` (an existing mountpoint).
fn attach(tree: &OwnedFd, target: &Path) -> std::io::Result<()> {
    let t = cstr(target)?;
    let empty = c"";
    // SAFETY: move_mount of a detached tree fd onto a path; both strings NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn cover(path: &Path, mode: u32, keep: &[PathBuf]) -> Result<(), MountError> {
    let mut trees = Vec::new();
    for k in keep {
        // Its directory opened without following a link, then the entry itself cloned
        // through that fd without following one either (a directory or a file).
        let (Some(parent), Some(name)) = (k.parent(), k.file_name()) else {
            continue;
        };
        let fd = match open_nofollow(parent) {
            Ok(fd) => fd,
            // Not there (yet): nothing to keep.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io("opening (to keep)", k)(e)),
        };
        let tree = match clone_tree(fd.as_raw_fd(), Path::new(name)) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io("cloning", k)(e)),
        };
        let kind = nix::sys::stat::fstat(tree.as_raw_fd())
            .map(|st| st.st_mode & libc::S_IFMT)
            .map_err(|e| io("examining", k)(e.into()))?;
        // A link is refused as opening it without following would (ELOOP).
        if kind != libc::S_IFDIR && kind != libc::S_IFREG {
            return Err(io("cloning", k)(std::io::Error::from_raw_os_error(libc::ELOOP)));
        }
        trees.push((k, tree, kind == libc::S_IFDIR));
    }
    std::fs::create_dir_all(path).map_err(io("mkdir", path))?;
    let data = format!("mode={mode:o}");
    mount(
        Some(Path::new("tmpfs")),
        path,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&data),
    )
    .map_err(io("mounting a tmpfs on", path))?;
    for (k, tree, is_dir) in trees {
        if is_dir {
            std::fs::create_dir_all(k).map_err(io("mkdir", k))?;
        } else {
            if let Some(parent) = k.parent() {
                std::fs::create_dir_all(parent).map_err(io("mkdir", parent))?;
            }
            if std::fs::symlink_metadata(k).is_err() {
                std::fs::File::create(k).map_err(io("creating", k))?;
            }
        }
        attach(&tree, k).map_err(io("attaching", k))?;
    }
    Ok(())
}

/// What a chroot held, taken before it is covered.
enum Kept {
    /// A detached clone of a directory or file (`open_tree`), and whether a directory.
    Tree(OwnedFd, bool),
    Link(PathBuf),
}

fn new_root(path: &Path, skip: &[String]) -> Result<(), MountError> {
    let dir = open_nofollow(path).map_err(io("opening", path))?;
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io("listing", path))? {
        let entry = entry.map_err(io("listing", path))?;
        let name = entry.file_name();
        if skip.iter().any(|s| s.as_bytes() == name.as_bytes()) {
            continue;
        }
        let ft = entry.file_type().map_err(io("examining", &entry.path()))?;
        let item = if ft.is_symlink() {
            Kept::Link(std::fs::read_link(entry.path()).map_err(io("reading link", &entry.path()))?)
        } else if ft.is_dir() || ft.is_file() {
            let tree = clone_tree(dir.as_raw_fd(), Path::new(&name)).map_err(io("cloning", &entry.path()))?;
            Kept::Tree(tree, ft.is_dir())
        } else {
            continue;
        };
        kept.push((name, item));
    }
    mount(
        Some(Path::new("tmpfs")),
        path,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=755"),
    )
    .map_err(io("mounting the new root on", path))?;
    for (name, item) in kept {
        let target = path.join(&name);
        match item {
            Kept::Link(to) => std::os::unix::fs::symlink(to, &target).map_err(io("symlink", &target))?,
            Kept::Tree(fd, is_dir) => {
                if is_dir {
                    std::fs::create_dir(&target).map_err(io("mkdir", &target))?;
                } else {
                    std::fs::File::create(&target).map_err(io("creating", &target))?;
                }
                attach(&fd, &target).map_err(io("attaching", &target))?;
            }
        }
    }
    Ok(())
}
