//! Ownership rules for the paths root uses on a tenant's behalf (the chroot it enters,
//! the access logs it opens): nobody but root, and for an access log the vhost's own
//! environment, may be able to change what such a path names.
//!
//! - `chroot`: the directory and every directory above it are owned by root and
//!   writable by no group or other user (a tenant could otherwise swap the jail before
//!   the next spawn). Above the chroot, a root-owned sticky directory such as `/tmp`
//!   is allowed: nobody else may rename or remove what root owns in it.
//! - `access_log`: every directory on the way is owned by root or the environment's
//!   uid, none is a symlink, and none is writable by a group or other user (the same
//!   sticky exception above the log's own directory); an existing file is a regular
//!   file with one link. What root set up wrong is an error. Below a directory the
//!   environment owns, the environment can change anything at any time (plant a link,
//!   chmod its directory): that is a warning only, or a tenant could stop every other
//!   tenant's server from starting or reloading. The supervisor opens every log
//!   without following links and refuses a link, FIFO, device or hard link there
//!   (`supervisor::safe_open`); that vhost then logs nothing.
//!
//! "Root" means uid 0 or the user running the check (unprivileged mode, where every
//! process runs as that user).

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Owners trusted like root.
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == uzers::get_effective_uid()
}

const STICKY: u32 = 0o1000;
const GROUP_OR_OTHER_WRITE: u32 = 0o022;

/// What a rule found: a problem root made (an error) or one the environment can
/// make and undo itself (a warning).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finding {
    Error(String),
    Warning(String),
}

/// Checks each directory from `/` down to `dir` (inclusive); the sticky exception
/// applies to all but `dir` itself. A directory may be owned by root or `env_uid`;
/// from the first one `env_uid` owns, problems are the environment's (`tenant`).
/// Returns whether `dir` is in the environment's hands.
fn directories(dir: &Path, env_uid: Option<u32>, owners: &str) -> Result<bool, Finding> {
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    let mut tenant = false;
    for (i, p) in chain.iter().enumerate() {
        let last = i + 1 == chain.len();
        let found = |why: String| {
            if tenant {
                Finding::Warning(why)
            } else {
                Finding::Error(why)
            }
        };
        let meta = match std::fs::symlink_metadata(p) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let why = format!("'{}' does not exist (it must exist and be {owners})", p.display());
                return Err(found(why));
            }
            Err(e) => return Err(found(format!("'{}' cannot be checked: {e}", p.display()))),
        };
        if meta.file_type().is_symlink() {
            let why = format!(
                "'{}' is a symbolic link (none is allowed in this path)",
                p.display()
            );
            return Err(found(why));
        }
        if !meta.is_dir() {
            return Err(found(format!("'{}' is not a directory", p.display())));
        }
        let uid = meta.uid();
        let own = env_uid == Some(uid) && !trusted(uid);
        if !trusted(uid) && !own {
            let why = format!("'{}' is owned by uid {uid}; it must be {owners}", p.display());
            return Err(found(why));
        }
        // From here on the environment can change everything (its mode included).
        tenant |= own;
        let found = |why: String| {
            if tenant {
                Finding::Warning(why)
            } else {
                Finding::Error(why)
            }
        };
        let mode = meta.mode() & 0o7777;
        let sticky_ok = !last && trusted(uid) && mode & STICKY != 0;
        if mode & GROUP_OR_OTHER_WRITE != 0 && !sticky_ok {
            let why = format!(
                "'{}' is writable by its group or others (mode {mode:04o}); it must be {owners}",
                p.display()
            );
            return Err(found(why));
        }
    }
    Ok(tenant)
}

/// The chroot rule; the error says which directory breaks it.
pub(crate) fn chroot(path: &Path) -> Result<(), String> {
    match directories(path, None, "owned by root and writable by no one else") {
        Ok(_) => Ok(()),
        Err(Finding::Error(why) | Finding::Warning(why)) => Err(format!(
            "chroot '{}' could be swapped by a user other than root: {why} (the chroot and every directory above it)",
            path.display()
        )),
    }
}

/// The access log rule for a vhost of the environment `env` running as `env_uid`.
pub(crate) fn access_log(path: &Path, env: &str, env_uid: u32) -> Result<(), Finding> {
    let context = |why: String| {
        format!(
            "access log '{}' could be redirected by a user other than root and environment '{env}' (uid {env_uid}): {why}",
            path.display()
        )
    };
    let tenant_note = " (the environment controls this directory: until it is fixed the supervisor refuses the file and this vhost logs nothing)";
    let in_context = |f: Finding| match f {
        Finding::Error(why) => Finding::Error(context(why)),
        Finding::Warning(why) => Finding::Warning(context(why) + tenant_note),
    };
    let Some(dir) = path.parent().filter(|d| *d != path) else {
        return Err(Finding::Error(context("it names no file".to_string())));
    };
    let owners = format!("owned by root or uid {env_uid} and writable by no one else");
    let tenant = directories(dir, Some(env_uid), &owners).map_err(in_context)?;
    let found = |why: String| {
        in_context(if tenant {
            Finding::Warning(why)
        } else {
            Finding::Error(why)
        })
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => file(&meta).map_err(found),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(found(format!("it cannot be checked: {e}"))),
    }
}

/// An existing log file: regular, one link.
fn file(meta: &Metadata) -> Result<(), String> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        Err("it is a symbolic link".to_string())
    } else if kind.is_fifo()
        || kind.is_char_device()
        || kind.is_block_device()
        || kind.is_socket()
        || kind.is_dir()
    {
        Err("it is not a regular file".to_string())
    } else if meta.nlink() > 1 {
        Err(format!(
            "it has {} hard links (another file may be linked here)",
            meta.nlink()
        ))
    } else {
        Ok(())
    }
}
