//! Which hierarchy serves which controller, from the texts of `/proc/self/cgroup` and
//! `/proc/self/mountinfo` (pure, unit-tested on sample texts) plus the unified
//! hierarchy's `cgroup.controllers`: a controller is taken from cgroup v2 when the
//! unified tree offers it, else from the v1 hierarchy it is mounted in, else it is
//! missing.

use std::path::{Path, PathBuf};

/// cgroup v1 or v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The controllers bulkhead uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
    Io,
}

impl Controller {
    pub const ALL: [Controller; 4] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::Io,
    ];

    /// Its name in cgroup v2 (`cgroup.controllers`, `cgroup.subtree_control`).
    pub fn v2_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Io => "io",
        }
    }

    /// Its name in cgroup v1 (a mount option, a `/proc/self/cgroup` field).
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Io => "blkio",
            other => other.v2_name(),
        }
    }
}

/// One mounted hierarchy and where the supervisor sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// Where it is mounted (`/sys/fs/cgroup/memory`).
    pub mount: PathBuf,
    /// The group the mount shows as its root (`/` unless a namespace or bind mount).
    pub mount_root: PathBuf,
    /// The supervisor's own group (`/proc/self/cgroup`'s path).
    pub own: PathBuf,
    /// v1: the controllers mounted here; v2: those `cgroup.controllers` offers.
    pub controllers: Vec<String>,
}

impl Hierarchy {
    /// The directory of the group at cgroup path `group` (absolute, as in
    /// `/proc/self/cgroup`); `None` when it is outside what the mount shows.
    pub fn dir_of(&self, group: &Path) -> Option<PathBuf> {
        let rest = group.strip_prefix(&self.mount_root).ok()?;
        Some(self.mount.join(rest))
    }

    pub fn has(&self, c: Controller) -> bool {
        let name = match self.version {
            Version::V1 => c.v1_name(),
            Version::V2 => c.v2_name(),
        };
        self.controllers.iter().any(|n| n == name)
    }
}

/// A `/proc/self/cgroup` line: hierarchy id, controllers (empty for v2), path.
fn cgroup_lines(text: &str) -> impl Iterator<Item = (&str, Vec<&str>, &str)> {
    text.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        let id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let list = controllers.split(',').filter(|s| !s.is_empty()).collect();
        Some((id, list, path))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup mount from mountinfo: version, mount point, root, super options.
fn cgroup_mounts(text: &str) -> Vec<(Version, PathBuf, PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(root), Some(mount)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mut right = right.split(' ');
        let version = match right.next() {
            Some("cgroup") => Version::V1,
            Some("cgroup2") => Version::V2,
            _ => continue,
        };
        let options = right.nth(1).unwrap_or("");
        let options = options.split(',').map(str::to_string).collect();
        out.push((
            version,
            PathBuf::from(unescape(mount)),
            PathBuf::from(unescape(root)),
            options,
        ));
    }
    out
}

/// Every cgroup hierarchy the supervisor is in and that is mounted, from the texts of
/// `/proc/self/cgroup` and `/proc/self/mountinfo`. A v2 hierarchy's `controllers` is
/// left empty: it is read from `cgroup.controllers` by `unified_controllers`.
pub fn hierarchies(proc_cgroup: &str, mountinfo: &str) -> Vec<Hierarchy> {
    let mounts = cgroup_mounts(mountinfo);
    let mut out = Vec::new();
    for (id, list, path) in cgroup_lines(proc_cgroup) {
        let v2 = id == "0" && list.is_empty();
        let mount = mounts.iter().find(|(version, .., options)| match version {
            Version::V2 => v2,
            Version::V1 => !v2 && !list.is_empty() && list.iter().all(|c| options.iter().any(|o| o == c)),
        });
        let Some((version, mount, root, _)) = mount else {
            continue;
        };
        // A hierarchy mounted twice is listed once.
        if out.iter().any(|h: &Hierarchy| h.mount == *mount) {
            continue;
        }
        out.push(Hierarchy {
            version: *version,
            mount: mount.clone(),
            mount_root: root.clone(),
            own: PathBuf::from(path),
            controllers: match version {
                Version::V1 => list.iter().map(|s| s.to_string()).collect(),
                Version::V2 => Vec::new(),
            },
        });
    }
    out
}

/// The controllers a `cgroup.controllers` text lists.
pub fn controller_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// For each controller, the index in `hs` of the hierarchy that serves it: v2 when the
/// unified one offers it, else a v1 one; `None` when missing.
pub fn choose(hs: &[Hierarchy]) -> Vec<(Controller, Option<usize>)> {
    Controller::ALL
        .iter()
        .map(|&c| {
            let v2 = hs.iter().position(|h| h.version == Version::V2 && h.has(c));
            let v1 = || hs.iter().position(|h| h.version == Version::V1 && h.has(c));
            (c, v2.or_else(v1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine: v1 hybrid, the memory group differs per hierarchy.
    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
        4:memory:/process_api/e4fc\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_v1() {
        let hs = hierarchies(HYBRID_CGROUP, HYBRID_MOUNTS);
        let mem = hs.iter().find(|h| h.has(Controller::Memory)).unwrap();
        assert_eq!(mem.version, Version::V1);
        assert_eq!(mem.mount, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(mem.own, Path::new("/process_api/e4fc"));
        assert_eq!(
            mem.dir_of(Path::new("/process_api/e4fc/bulkhead/alice")).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/e4fc/bulkhead/alice")
        );
        let unified = hs.iter().find(|h| h.version == Version::V2).unwrap();
        assert_eq!(unified.mount, Path::new("/sys/fs/cgroup/unified"));
        // The unified tree offers nothing: everything comes from v1; blkio is there too.
        let chosen = choose(&hs);
        for (c, at) in &chosen {
            let h = &hs[at.expect("every controller mounted")];
            assert_eq!(h.version, Version::V1, "{c:?}");
            assert_eq!(h.mount, Path::new("/sys/fs/cgroup").join(c.v1_name()));
        }
        // Freezer and devices are in /proc/self/cgroup but not mounted here: skipped.
        assert!(!hs.iter().any(|h| h.controllers.iter().any(|c| c == "freezer")));
    }

    #[test]
    fn pure_v2_under_systemd() {
        let cgroup = "0::/system.slice/bulkhead.service\n";
        let mounts = "25 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let mut hs = hierarchies(cgroup, mounts);
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].own, Path::new("/system.slice/bulkhead.service"));
        hs[0].controllers = controller_list("cpuset cpu io memory hugetlb pids rdma misc\n");
        let chosen = choose(&hs);
        assert!(chosen.iter().all(|(_, at)| *at == Some(0)));
        assert_eq!(
            hs[0]
                .dir_of(Path::new("/system.slice/bulkhead.service/bulkhead"))
                .unwrap(),
            Path::new("/sys/fs/cgroup/system.slice/bulkhead.service/bulkhead")
        );
    }

    #[test]
    fn v2_preferred_in_a_hybrid_that_offers_it_and_missing_ones() {
        let cgroup = "3:cpu,cpuacct:/a\n2:memory:/m\n0::/u\n";
        let mounts = "\
1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 / /cg/memory rw - cgroup cgroup rw,memory
3 0 0:3 /u /cg/unified rw - cgroup2 cgroup2 rw
";
        let mut hs = hierarchies(cgroup, mounts);
        let u = hs.iter().position(|h| h.version == Version::V2).unwrap();
        hs[u].controllers = controller_list("pids");
        let chosen = choose(&hs);
        let get = |c| chosen.iter().find(|(x, _)| *x == c).unwrap().1;
        assert_eq!(
            hs[get(Controller::Cpu).unwrap()].mount,
            Path::new("/cg/cpu,cpuacct")
        );
        assert_eq!(
            hs[get(Controller::Memory).unwrap()].mount,
            Path::new("/cg/memory")
        );
        assert_eq!(get(Controller::Pids), Some(u));
        assert_eq!(get(Controller::Io), None);
        // The unified mount shows only /u: a group outside it has no directory.
        assert_eq!(
            hs[u].dir_of(Path::new("/u/b")).unwrap(),
            Path::new("/cg/unified/b")
        );
        assert_eq!(hs[u].dir_of(Path::new("/other")), None);
    }

    #[test]
    fn escaped_mount_points() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\04"), "/a\\04");
        assert_eq!(unescape("\\"), "\\");
    }
}
