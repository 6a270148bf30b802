//! cgroup limits per environment. An environment with a limit set gets one group,
//! named after it, under bulkhead's tree (`[server] cgroup_root`, else a `bulkhead`
//! child of the supervisor's own group) in each hierarchy that serves a controller
//! (v2 when the unified tree offers it, else v1: `detect.rs`). The supervisor makes
//! the groups before the first child starts, writes the limits (`files.rs`), moves
//! every child of the environment into them between its exec and its bootstrap
//! ([`Groups::attach`]), reads the OOM and `pids.max` counters on every tick, rewrites
//! the limits of an environment a reload keeps and removes the group of one it drops
//! once its processes are gone. A limit no controller can apply falls back to an
//! rlimit of the child (`RLIMIT_AS`, `RLIMIT_NPROC`) with a warning, or is an error.
//! Environments without limits get nothing, and without any, nothing is even detected.

mod detect;
mod files;
mod fs;
mod make;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use conf::{Bound, CgroupLimits, Config};
use nix::errno::Errno;
use thiserror::Error;
use tracing::{info, warn};

use detect::{Controller, Hierarchy, Version};
use files::V1Io;
use make::{make_group, prepare_root, write_limits};

/// Why cgroups could not be set up or a child not be placed.
#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("environment {env}: {key} cannot be applied: {reason}")]
    Unavailable {
        env: String,
        key: &'static str,
        reason: String,
    },
    #[error("reading {path}: {source}")]
    Proc {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("cgroup {path}: {errno}")]
    Group { path: PathBuf, errno: Errno },
    #[error("cgroup {path}: writing {file} = {value:?}: {errno}")]
    Write {
        path: PathBuf,
        file: &'static str,
        value: String,
        errno: Errno,
    },
    #[error("cgroup root {root} is outside what {mount} shows (a cgroup namespace?)")]
    Outside { root: PathBuf, mount: PathBuf },
    #[error("environment {env}: placing pid {pid} into {path}: {errno}")]
    Attach {
        env: String,
        pid: i32,
        path: PathBuf,
        errno: Errno,
    },
    #[error("environment {env}: rlimit of pid {pid}: {errno}")]
    Rlimit { env: String, pid: i32, errno: Errno },
}

/// A hierarchy bulkhead uses: where its tree is, and what it serves there.
struct Used {
    h: Hierarchy,
    /// The directory of bulkhead's tree in it.
    root_dir: PathBuf,
    controllers: Vec<Controller>,
}

/// What detection decided.
struct Layout {
    used: Vec<Used>,
    /// Which v1 file weighs I/O, when io comes from v1.
    io: Option<V1Io>,
}

impl Layout {
    fn serves(&self, c: Controller) -> Option<&Used> {
        self.used.iter().find(|u| u.controllers.contains(&c))
    }
}

/// The rlimits a child gets because no controller applies its environment's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fallback {
    address_space: Option<u64>,
    processes: Option<u64>,
}

/// One environment's group: a directory per hierarchy used.
struct Group {
    env: String,
    dirs: Vec<(PathBuf, OwnedFd)>,
    /// Where its events are counted: (directory index, file, key) for OOM kills and
    /// `pids.max` hits.
    oom: Option<(usize, &'static str, &'static str)>,
    pids: Option<(usize, &'static str, &'static str)>,
    fallback: Fallback,
}

/// Every environment's group; empty (and nothing detected) when no environment has a
/// limit.
#[derive(Default)]
pub(crate) struct Groups {
    layout: Option<Layout>,
    groups: HashMap<String, Group>,
    /// Groups of environments a reload dropped, removed once empty.
    doomed: Vec<Group>,
    /// `cgroup_root` as the tree was made with (a reload does not move it).
    root: Option<PathBuf>,
}

/// What one environment's limits get: per limit key, the way it is applied.
fn decide(env: &str, l: &CgroupLimits, layout: &Layout) -> Result<(Fallback, Vec<String>), CgroupError> {
    let mut fallback = Fallback::default();
    let mut warnings = Vec::new();
    let missing = |key: &'static str| CgroupError::Unavailable {
        env: env.to_string(),
        key,
        reason: "no cpu controller in cgroup v2 or v1".to_string(),
    };
    let memory = layout.serves(Controller::Memory);
    if memory.is_none() {
        if let Some(Bound::At(n)) = l.memory_max {
            fallback.address_space = Some(n);
            warnings.push(format!(
                "environment {env}: no memory controller; memory_max is RLIMIT_AS of each process instead"
            ));
        }
    }
    if l.memory_high.is_some() && memory.is_none_or(|u| u.h.version == Version::V1) {
        warnings.push(format!(
            "environment {env}: memory_high needs cgroup v2's memory controller; not applied"
        ));
    }
    if layout.serves(Controller::Pids).is_none() {
        if let Some(Bound::At(n)) = l.pids_max {
            fallback.processes = Some(n);
            warnings.push(format!(
                "environment {env}: no pids controller; pids_max is RLIMIT_NPROC of the environment's uid instead"
            ));
        }
    }
    if layout.serves(Controller::Cpu).is_none() {
        if l.cpu_max.is_some() {
            return Err(missing("cpu_max"));
        }
        if l.cpu_weight.is_some() {
            return Err(missing("cpu_weight"));
        }
    }
    if l.io_weight.is_some() && layout.serves(Controller::Io).is_none() {
        warnings.push(format!(
            "environment {env}: io_weight needs an io controller (v2 io, or v1 blkio with a weight); not applied"
        ));
    }
    Ok((fallback, warnings))
}

fn read_proc(path: &'static str) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Proc { path, source })
}

/// Detects the hierarchies and decides where bulkhead's tree is in each.
fn detect(root: Option<&Path>) -> Result<Layout, CgroupError> {
    let mut hs = detect::hierarchies(
        &read_proc("/proc/self/cgroup")?,
        &read_proc("/proc/self/mountinfo")?,
    );
    for h in hs.iter_mut().filter(|h| h.version == Version::V2) {
        // What the supervisor's own group may hand down (its parent enabled them).
        let own = h.dir_of(&h.own).unwrap_or_else(|| h.mount.clone());
        let text = fs::open_dir(&own, None)
            .and_then(|d| fs::read(&d, "cgroup.controllers"))
            .unwrap_or_default();
        h.controllers = detect::controller_list(&text);
    }
    let chosen = detect::choose(&hs);
    let mut used: Vec<Used> = Vec::new();
    let mut io = None;
    for (c, at) in chosen {
        let Some(i) = at else { continue };
        let h = &hs[i];
        // Relative: below the supervisor's own group in this hierarchy.
        let root_group = h.own.join(root.unwrap_or(Path::new("bulkhead")));
        let root_dir = h.dir_of(&root_group).ok_or_else(|| CgroupError::Outside {
            root: root_group.clone(),
            mount: h.mount.clone(),
        })?;
        if c == Controller::Io && h.version == Version::V1 {
            // Only with a weight file (CFQ or BFQ), looked for in the own group.
            let own = h.dir_of(&h.own).unwrap_or_else(|| h.mount.clone());
            let Ok(dir) = fs::open_dir(&own, None) else {
                continue;
            };
            io = if fs::exists(&dir, "blkio.weight") {
                Some(V1Io::Cfq)
            } else if fs::exists(&dir, "blkio.bfq.weight") {
                Some(V1Io::Bfq)
            } else {
                continue;
            };
        }
        match used.iter_mut().find(|u| u.h.mount == h.mount) {
            Some(u) => u.controllers.push(c),
            None => used.push(Used {
                h: h.clone(),
                root_dir,
                controllers: vec![c],
            }),
        }
    }
    Ok(Layout { used, io })
}

/// What `bulkhead check` prints: a line per hierarchy used and per environment with
/// limits; an error when a limit cannot be applied.
pub fn describe(cfg: &Config) -> Result<Vec<String>, CgroupError> {
    if cfg.environments.iter().all(|e| e.cgroup.is_empty()) {
        return Ok(Vec::new());
    }
    let layout = detect(cfg.server.cgroup_root.as_deref())?;
    let mut lines = Vec::new();
    for u in &layout.used {
        let names: Vec<&str> = u
            .controllers
            .iter()
            .map(|c| {
                if u.h.version == Version::V1 {
                    c.v1_name()
                } else {
                    c.v2_name()
                }
            })
            .collect();
        let v = if u.h.version == Version::V1 { "v1" } else { "v2" };
        lines.push(format!(
            "cgroup {v} {}: {} under {}",
            u.h.mount.display(),
            names.join(", "),
            u.root_dir.display()
        ));
    }
    for e in cfg.environments.iter().filter(|e| !e.cgroup.is_empty()) {
        let (fallback, warnings) = decide(&e.name, &e.cgroup, &layout)?;
        let mut parts: Vec<String> = Controller::ALL
            .iter()
            .filter(|&&c| files::wanted(c, &e.cgroup))
            .filter_map(|&c| {
                let u = layout.serves(c)?;
                let v = if u.h.version == Version::V1 { "v1" } else { "v2" };
                Some(format!("{} ({v})", c.v2_name()))
            })
            .collect();
        if fallback.address_space.is_some() {
            parts.push("RLIMIT_AS".to_string());
        }
        if fallback.processes.is_some() {
            parts.push("RLIMIT_NPROC".to_string());
        }
        lines.push(format!("environment {}: {}", e.name, parts.join(", ")));
        for w in warnings {
            lines.push(format!("warning: {w}"));
        }
    }
    Ok(lines)
}

impl Groups {
    /// Detects, makes bulkhead's tree and every environment's group with its limits.
    /// With no limit anywhere: nothing.
    pub(crate) fn setup(cfg: &Config) -> Result<Groups, CgroupError> {
        let mut groups = Groups::default();
        groups.sync(cfg)?;
        Ok(groups)
    }

    /// Brings the groups to `cfg`: new environments' groups made, kept ones' limits
    /// rewritten, dropped ones' removed once empty. On an error nothing already running
    /// changed limits except those before the failing one.
    pub(crate) fn sync(&mut self, cfg: &Config) -> Result<(), CgroupError> {
        let with_limits: Vec<_> = cfg.environments.iter().filter(|e| !e.cgroup.is_empty()).collect();
        if self.layout.is_none() && !with_limits.is_empty() {
            let layout = detect(cfg.server.cgroup_root.as_deref())?;
            for u in &layout.used {
                prepare_root(u)?;
            }
            self.layout = Some(layout);
            self.root = cfg.server.cgroup_root.clone();
        } else if self.layout.is_some() && self.root != cfg.server.cgroup_root {
            warn!("cgroup_root changed: the groups stay where they are until the next start");
        }
        // A group dropped by an earlier reload and wanted again (or a refused reload
        // undone) is taken back before it is removed.
        let (back, doomed): (Vec<Group>, Vec<Group>) = std::mem::take(&mut self.doomed)
            .into_iter()
            .partition(|g| with_limits.iter().any(|e| e.name == g.env) && !self.groups.contains_key(&g.env));
        self.doomed = doomed;
        for g in back {
            self.groups.insert(g.env.clone(), g);
        }
        let Some(layout) = &self.layout else { return Ok(()) };
        let mut decided = Vec::new();
        for e in &with_limits {
            let (fallback, warnings) = decide(&e.name, &e.cgroup, layout)?;
            for w in warnings {
                warn!("{w}");
            }
            decided.push((*e, fallback));
        }
        // New groups are made first; nothing is committed until every write worked.
        let mut made: HashMap<String, Group> = HashMap::new();
        let mut result = Ok(());
        for (e, _) in &decided {
            let step = match self.groups.get(&e.name) {
                Some(g) => write_limits(g, &e.cgroup, layout),
                None => make_group(&e.name, layout).and_then(|g| {
                    let written = write_limits(&g, &e.cgroup, layout);
                    made.insert(e.name.clone(), g);
                    written
                }),
            };
            if let Err(e) = step {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = result {
            self.doomed.extend(made.into_values());
            self.remove_doomed();
            return Err(e);
        }
        let mut next = HashMap::new();
        for (e, fallback) in decided {
            let Some(mut group) = self.groups.remove(&e.name).or_else(|| made.remove(&e.name)) else {
                continue;
            };
            group.fallback = fallback;
            next.insert(e.name.clone(), group);
        }
        self.doomed.extend(self.groups.drain().map(|(_, g)| g));
        self.groups = next;
        if !self.groups.is_empty() {
            let names: Vec<&str> = self.groups.keys().map(String::as_str).collect();
            info!(environments = ?names, "cgroup limits applied");
        }
        self.remove_doomed();
        Ok(())
    }

    /// Places `pid` (a child exec'd for environment `env`, not yet given its
    /// bootstrap) into the environment's group in every hierarchy, and gives it the
    /// fallback rlimits. An environment without limits: nothing. The FastCGI backends
    /// call this too, before their bootstrap.
    pub(crate) fn attach(&self, env: &str, pid: i32) -> Result<(), CgroupError> {
        let Some(g) = self.groups.get(env) else {
            return Ok(());
        };
        for (path, dir) in &g.dirs {
            fs::write(dir, "cgroup.procs", &pid.to_string()).map_err(|errno| CgroupError::Attach {
                env: env.to_string(),
                pid,
                path: path.clone(),
                errno,
            })?;
        }
        let rlimit = |resource, value: u64| {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: prlimit with a valid pointer to a filled rlimit and no old-value
            // pointer; it only changes another process's limit.
            let rc = unsafe { libc::prlimit(pid, resource, &limit, std::ptr::null_mut()) };
            if rc != 0 {
                return Err(CgroupError::Rlimit {
                    env: env.to_string(),
                    pid,
                    errno: Errno::last(),
                });
            }
            Ok(())
        };
        if let Some(n) = g.fallback.address_space {
            rlimit(libc::RLIMIT_AS, n)?;
        }
        if let Some(n) = g.fallback.processes {
            rlimit(libc::RLIMIT_NPROC, n)?;
        }
        Ok(())
    }

    /// Per environment with a group: OOM kills and `pids.max` hits so far. Also
    /// retries removing dropped environments' groups.
    pub(crate) fn events(&mut self) -> Vec<(&str, u64, u64)> {
        self.remove_doomed();
        let count = |g: &Group, at: Option<(usize, &'static str, &'static str)>| {
            let (i, file, key) = at?;
            let text = fs::read(&g.dirs.get(i)?.1, file).ok()?;
            files::read_counter(&text, key)
        };
        self.groups
            .values()
            .map(|g| {
                (
                    g.env.as_str(),
                    count(g, g.oom).unwrap_or(0),
                    count(g, g.pids).unwrap_or(0),
                )
            })
            .collect()
    }

    /// Removes the groups of dropped environments that have no process left.
    fn remove_doomed(&mut self) {
        self.doomed.retain_mut(|g| {
            g.dirs.retain(|(path, _)| match fs::remove(path) {
                Ok(()) => false,
                Err(Errno::EBUSY) => true,
                Err(errno) => {
                    warn!(environment = %g.env, "removing cgroup {}: {errno}", path.display());
                    false
                }
            });
            if g.dirs.is_empty() {
                info!(environment = %g.env, "cgroup removed");
            }
            !g.dirs.is_empty()
        });
    }
}

impl Drop for Groups {
    /// At exit every child is gone (a zombie may leave its group a moment late): the
    /// groups are removed, trying for at most a second.
    fn drop(&mut self) {
        for (_, g) in self.groups.drain() {
            self.doomed.push(g);
        }
        for _ in 0..20 {
            self.remove_doomed();
            if self.doomed.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The tree's root too, when nothing else is in it (another server may share it).
        for u in self.layout.iter().flat_map(|l| &l.used) {
            let _ = fs::remove(&u.root_dir);
        }
    }
}

impl crate::state::Supervisor {
    /// The tick's part: each environment's OOM kills and `pids.max` hits into every
    /// generation's shared table that has the environment.
    pub(crate) fn count_cgroup_events(&mut self) {
        use common::scoreboard::table;
        for (name, oom, pids) in self.cgroups.events() {
            for g in &self.gens {
                if let Some(i) = g.cfg.environments.iter().position(|e| e.name == name) {
                    g.table.set(table::env_word(i, table::env::OOM_KILLS), oom);
                    g.table.set(table::env_word(i, table::env::PIDS_MAX_HITS), pids);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
