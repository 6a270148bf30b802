//! Making bulkhead's tree in a hierarchy (and, in v2, handing the controllers down to
//! it), an environment's group in every hierarchy used, and writing its limits.

use std::os::fd::OwnedFd;
use std::path::Path;

use conf::CgroupLimits;
use nix::errno::Errno;

use super::detect::{self, Controller, Version};
use super::{files, fs, CgroupError, Fallback, Group, Layout, Used};

/// Makes bulkhead's tree in `u` (only below the supervisor's own group, or the
/// configured root itself) and, in v2, enables the controllers for the groups below
/// it: the supervisor moves itself into a leaf (`supervisor`) of its own group first
/// when its own group has to hand the controllers down (no process may sit in a group
/// that does).
pub(super) fn prepare_root(u: &Used) -> Result<(), CgroupError> {
    let own_dir = u.h.dir_of(&u.h.own).unwrap_or_else(|| u.h.mount.clone());
    let below_own = u.root_dir.starts_with(&own_dir) && u.root_dir != own_dir;
    let create_below = if below_own {
        own_dir.clone()
    } else {
        u.root_dir.parent().map_or(u.h.mount.clone(), Path::to_path_buf)
    };
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |errno| CgroupError::Group { path, errno }
    };
    let root = fs::open_dir(&u.root_dir, Some(&create_below)).map_err(err(&u.root_dir))?;
    if u.h.version == Version::V1 {
        return Ok(());
    }
    let enable: Vec<String> = u
        .controllers
        .iter()
        .map(|c| format!("+{}", c.v2_name()))
        .collect();
    let enable = enable.join(" ");
    let write = |dir: &OwnedFd, path: &Path, file: &'static str, value: &str| {
        fs::write(dir, file, value).map_err(|errno| CgroupError::Write {
            path: path.to_path_buf(),
            file,
            value: value.to_string(),
            errno,
        })
    };
    if below_own {
        let own = fs::open_dir(&own_dir, None).map_err(err(&own_dir))?;
        let active = fs::read(&own, "cgroup.subtree_control").unwrap_or_default();
        let active = detect::controller_list(&active);
        if !u
            .controllers
            .iter()
            .all(|c| active.iter().any(|a| a == c.v2_name()))
        {
            if u.h.own != Path::new("/") {
                let leaf_path = own_dir.join("supervisor");
                let leaf = fs::open_dir(&leaf_path, Some(&own_dir)).map_err(err(&leaf_path))?;
                write(&leaf, &leaf_path, "cgroup.procs", &std::process::id().to_string())?;
            }
            write(&own, &own_dir, "cgroup.subtree_control", &enable)?;
        }
        // Each level between the own group and the root hands them down too.
        let mut at = own_dir.clone();
        let rest: Vec<_> = u
            .root_dir
            .strip_prefix(&own_dir)
            .map(|r| r.components().collect())
            .unwrap_or_default();
        for c in rest.iter().take(rest.len().saturating_sub(1)) {
            at.push(c);
            let dir = fs::open_dir(&at, None).map_err(err(&at))?;
            write(&dir, &at, "cgroup.subtree_control", &enable)?;
        }
    }
    write(&root, &u.root_dir, "cgroup.subtree_control", &enable)
}

/// Makes the group of `env` in every hierarchy used.
pub(super) fn make_group(env: &str, layout: &Layout) -> Result<Group, CgroupError> {
    let mut group = Group {
        env: env.to_string(),
        dirs: Vec::new(),
        oom: None,
        pids: None,
        fallback: Fallback::default(),
    };
    for u in &layout.used {
        let path = u.root_dir.join(env);
        let dir = fs::open_dir(&path, Some(&u.root_dir)).map_err(|errno| CgroupError::Group {
            path: path.clone(),
            errno,
        })?;
        let i = group.dirs.len();
        for &c in &u.controllers {
            let Some((file, key)) = files::event_file(c, u.h.version) else {
                continue;
            };
            // v1 before 4.13 has no oom_kill line: count the limit's hits instead.
            let at = if c == Controller::Memory
                && u.h.version == Version::V1
                && fs::read(&dir, file)
                    .map(|t| files::read_counter(&t, key).is_none())
                    .unwrap_or(true)
            {
                (i, "memory.failcnt", "")
            } else {
                (i, file, key)
            };
            match c {
                Controller::Memory => group.oom = Some(at),
                Controller::Pids => group.pids = Some(at),
                _ => {}
            }
        }
        group.dirs.push((path, dir));
    }
    Ok(group)
}

/// Writes every limit of `l` (the kernel's default for those unset) into `g`.
pub(super) fn write_limits(g: &Group, l: &CgroupLimits, layout: &Layout) -> Result<(), CgroupError> {
    for (u, (path, dir)) in layout.used.iter().zip(&g.dirs) {
        for &c in &u.controllers {
            for w in files::writes(c, u.h.version, l, layout.io) {
                match fs::write(dir, w.file, &w.value) {
                    Ok(()) => {}
                    Err(Errno::ENOENT) if w.optional => {}
                    Err(errno) => {
                        return Err(CgroupError::Write {
                            path: path.clone(),
                            file: w.file,
                            value: w.value,
                            errno,
                        })
                    }
                }
            }
        }
    }
    Ok(())
}
