//! Landlock as a second wall behind the mount namespace: read and execute in the
//! system's directories, everything in the environment's own tree and its `/tmp`,
//! read and write on a few device files, nothing else. Best effort: a kernel without
//! Landlock gets a warning line, not a refusal (the namespaces still hold).

use std::path::Path;

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};

use super::{Sandbox, SandboxError};

/// The newest ABI whose file-system rights are used (V5 adds ioctl on devices; later
/// ABIs add no file-system right).
const ABI_USED: ABI = ABI::V5;

/// Restricts this process (and everything it starts) to `s`'s paths. A path that does
/// not exist in this view is skipped.
pub fn restrict(s: &Sandbox) -> Result<(), SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Landlock(e.to_string());
    let all = AccessFs::from_all(ABI_USED);
    let read = AccessFs::from_read(ABI_USED);
    let device = read | AccessFs::WriteFile | AccessFs::IoctlDev;
    let mut rules: Vec<(&Path, landlock::BitFlags<AccessFs>)> = Vec::new();
    for p in &s.read_only {
        rules.push((p, read));
    }
    for p in &s.read_write {
        rules.push((p, all));
    }
    for p in &s.devices {
        rules.push((p, device));
    }
    if s.list_root {
        rules.push((Path::new("/"), AccessFs::ReadDir.into()));
    }
    let mut created = Ruleset::default()
        .handle_access(all)
        .map_err(|e| err(&e))?
        .create()
        .map_err(|e| err(&e))?;
    for (path, access) in rules {
        let Ok(fd) = PathFd::new(path) else { continue };
        // A file (a device) takes only file rights.
        let access = if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
            access & AccessFs::from_file(ABI_USED)
        } else {
            access
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| err(&e))?;
    }
    let status = created.restrict_self().map_err(|e| err(&e))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        eprintln!("bulkhead: Landlock is not available on this kernel; the namespaces still hold");
    }
    Ok(())
}
