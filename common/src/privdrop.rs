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
    // Empty the capability bounding set and the ambient set while we still may.
    for cap in 0..=63 {
        // SAFETY: integer-only prctl; EINVAL past the last capability ends the loop.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            break;
        }
    }
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
    Ok(())
}
