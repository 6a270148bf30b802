//! Dropping root for good, in the order OpenSSH and OpenBSD httpd use: chroot, chdir,
//! setgroups, setresgid, setresuid, then proof that root cannot be regained, then
//! no_new_privs. Runs in a freshly exec'd child before it builds its runtime, so the
//! process is single-threaded here.

use std::path::{Path, PathBuf};

use nix::unistd::{chdir, chroot, getresgid, getresuid, setgroups, setresgid, setresuid, Gid, Uid};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Who a child becomes. Travels in the bootstrap message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub chroot: Option<PathBuf>,
}

/// Why a drop failed; the child exits on any of them.
#[derive(Debug, Error)]
pub enum PrivDropError {
    #[error("refusing to run as uid 0 / gid 0")]
    ToRoot,
    #[error("chroot({path}): {source}")]
    Chroot { path: PathBuf, source: nix::Error },
    #[error("chdir(/): {0}")]
    Chdir(nix::Error),
    #[error("setgroups([{gid}]): {source}")]
    SetGroups { gid: u32, source: nix::Error },
    #[error("setresgid({gid}): {source}")]
    SetGid { gid: u32, source: nix::Error },
    #[error("setresuid({uid}): {source}")]
    SetUid { uid: u32, source: nix::Error },
    #[error("privileges could be regained after the drop ({0})")]
    Regained(&'static str),
    #[error("ids after the drop are not the ones asked for")]
    Mismatch,
    #[error("the supervisor is gone (reparented): not serving unsupervised")]
    Orphaned,
    #[error("prctl({what}): {source}")]
    Prctl {
        what: &'static str,
        source: std::io::Error,
    },
}

fn prctl(what: &'static str, op: libc::c_int, arg: libc::c_ulong) -> Result<libc::c_int, PrivDropError> {
    // SAFETY: prctl with integer arguments only; no pointers are passed.
    let r = unsafe {
        libc::prctl(
            op,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        return Err(PrivDropError::Prctl {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(r)
}

/// Drops to `creds`. Must be called as root (euid 0).
pub fn drop_to(creds: &Credentials) -> Result<(), PrivDropError> {
    if creds.uid == 0 || creds.gid == 0 {
        return Err(PrivDropError::ToRoot);
    }
    if let Some(root) = &creds.chroot {
        chroot(root.as_path()).map_err(|source| PrivDropError::Chroot {
            path: root.clone(),
            source,
        })?;
    }
    chdir(Path::new("/")).map_err(PrivDropError::Chdir)?;
    drop_bounding_set()?;
    let _ = prctl(
        "PR_CAP_AMBIENT_CLEAR_ALL",
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    );
    let gid = Gid::from_raw(creds.gid);
    let uid = Uid::from_raw(creds.uid);
    setgroups(&[gid]).map_err(|source| PrivDropError::SetGroups {
        gid: creds.gid,
        source,
    })?;
    setresgid(gid, gid, gid).map_err(|source| PrivDropError::SetGid {
        gid: creds.gid,
        source,
    })?;
    setresuid(uid, uid, uid).map_err(|source| PrivDropError::SetUid {
        uid: creds.uid,
        source,
    })?;
    // Proof that the drop is permanent.
    let root_u = Uid::from_raw(0);
    let root_g = Gid::from_raw(0);
    if setresuid(root_u, root_u, root_u).is_ok() {
        return Err(PrivDropError::Regained("setresuid(0)"));
    }
    if setresgid(root_g, root_g, root_g).is_ok() {
        return Err(PrivDropError::Regained("setresgid(0)"));
    }
    if setgroups(&[root_g]).is_ok() {
        return Err(PrivDropError::Regained("setgroups([0])"));
    }
    let u = getresuid().map_err(|source| PrivDropError::SetUid {
        uid: creds.uid,
        source,
    })?;
    let g = getresgid().map_err(|source| PrivDropError::SetGid {
        gid: creds.gid,
        source,
    })?;
    if [u.real, u.effective, u.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(PrivDropError::Mismatch);
    }
    lock_down()
}

/// Empties the capability bounding set while we still may. EINVAL means `cap` is past
/// the kernel's last capability: the end of the list. Any other error (EPERM: the drop
/// did not happen) fails the whole drop rather than leave a capability behind.
fn drop_bounding_set() -> Result<(), PrivDropError> {
    for cap in 0..=63 {
        match prctl("PR_CAPBSET_DROP", libc::PR_CAPBSET_DROP, cap) {
            Ok(_) => {}
            Err(PrivDropError::Prctl { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && cap > 0 =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// no_new_privs, and die with the supervisor. Called by every child, also when the
/// server runs unprivileged and there is nothing to drop.
pub fn lock_down() -> Result<(), PrivDropError> {
    prctl("PR_SET_NO_NEW_PRIVS", libc::PR_SET_NO_NEW_PRIVS, 1)?;
    // The death signal is cleared by a credential change, so set it after the drop.
    prctl(
        "PR_SET_PDEATHSIG",
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
    )?;
    orphan_check()
}

/// The death signal only fires for a parent that dies after it was set: if the
/// supervisor is already gone (we were reparented), stop now instead of serving
/// unsupervised.
pub fn orphan_check() -> Result<(), PrivDropError> {
    // Compared with the parent we started with, not with 1: the supervisor may itself
    // be pid 1 (a container), and an orphan may go to a subreaper.
    if nix::unistd::getppid() != *PARENT.get_or_init(nix::unistd::getppid) {
        return Err(PrivDropError::Orphaned);
    }
    Ok(())
}

/// The parent this process started with (recorded at the first check, before the drop).
static PARENT: std::sync::OnceLock<nix::unistd::Pid> = std::sync::OnceLock::new();

/// Records the parent this process started with; call first thing in a child.
pub fn remember_parent() {
    let _ = PARENT.set(nix::unistd::getppid());
}
