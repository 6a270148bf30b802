//! What is written where: for each controller and version, the interface files of a
//! group and their values for an environment's limits (an unset limit writes the
//! kernel's default, so a reload that drops a limit lifts it), and the event counters
//! read back (OOM kills, `pids.max` hits). Pure; unit-tested for both versions.

use conf::{Bound, CgroupLimits};

use super::detect::{Controller, Version};

/// CFS period written with every v1 quota and v2 `cpu.max` (100 ms, the default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// One write into a group's interface file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub file: &'static str,
    pub value: String,
    /// A missing file is skipped (v1 `memory.memsw.*` without swap accounting).
    pub optional: bool,
}

fn w(file: &'static str, value: String) -> Write {
    Write {
        file,
        value,
        optional: false,
    }
}

fn optional(file: &'static str, value: String) -> Write {
    Write {
        file,
        value,
        optional: true,
    }
}

/// `bound` as v2 writes it (`max` or a number).
fn v2(bound: Option<Bound>) -> String {
    match bound {
        None | Some(Bound::Max) => "max".to_string(),
        Some(Bound::At(n)) => n.to_string(),
    }
}

/// `bound` as v1 memory writes it (`-1` for none).
fn v1_bytes(bound: Option<Bound>) -> String {
    match bound {
        None | Some(Bound::Max) => "-1".to_string(),
        Some(Bound::At(n)) => n.to_string(),
    }
}

/// The CFS quota in µs for `percent` of one CPU.
fn quota_us(percent: u64) -> u64 {
    percent.saturating_mul(CPU_PERIOD_US) / 100
}

/// v2 weight (1..=10000, default 100) as v1 `cpu.shares` (default 1024, at least 2).
fn shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).max(2)
}

/// Which v1 file weighs I/O: `blkio.weight` (CFQ, 10..=1000, default 500) or
/// `blkio.bfq.weight` (BFQ, 1..=1000, default 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Io {
    Cfq,
    Bfq,
}

/// The writes for `c` in a group of version `v`, in order. `io` says which v1 I/O file
/// exists (v1 only).
pub fn writes(c: Controller, v: Version, limits: &CgroupLimits, io: Option<V1Io>) -> Vec<Write> {
    match (c, v) {
        (Controller::Memory, Version::V2) => vec![
            w("memory.max", v2(limits.memory_max)),
            w("memory.high", v2(limits.memory_high)),
        ],
        // A limit cannot go below memsw's nor memsw below the limit: lift memsw, set the
        // limit, then set memsw to it, so swap does not extend the hard limit.
        (Controller::Memory, Version::V1) => vec![
            optional("memory.memsw.limit_in_bytes", "-1".to_string()),
            w("memory.limit_in_bytes", v1_bytes(limits.memory_max)),
            optional("memory.memsw.limit_in_bytes", v1_bytes(limits.memory_max)),
        ],
        (Controller::Pids, _) => vec![w("pids.max", v2(limits.pids_max))],
        (Controller::Cpu, Version::V2) => {
            let quota = match limits.cpu_max {
                None | Some(Bound::Max) => "max".to_string(),
                Some(Bound::At(p)) => quota_us(p).to_string(),
            };
            vec![
                w("cpu.max", format!("{quota} {CPU_PERIOD_US}")),
                w("cpu.weight", limits.cpu_weight.unwrap_or(100).to_string()),
            ]
        }
        (Controller::Cpu, Version::V1) => {
            let quota = match limits.cpu_max {
                None | Some(Bound::Max) => "-1".to_string(),
                Some(Bound::At(p)) => quota_us(p).to_string(),
            };
            vec![
                w("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                w("cpu.cfs_quota_us", quota),
                w("cpu.shares", shares(limits.cpu_weight.unwrap_or(100)).to_string()),
            ]
        }
        (Controller::Io, Version::V2) => {
            vec![w(
                "io.weight",
                format!("default {}", limits.io_weight.unwrap_or(100)),
            )]
        }
        (Controller::Io, Version::V1) => match io {
            Some(V1Io::Cfq) => {
                let weight = limits
                    .io_weight
                    .map_or(500, |x| (u64::from(x) * 5).clamp(10, 1000));
                vec![w("blkio.weight", weight.to_string())]
            }
            Some(V1Io::Bfq) => {
                let weight = limits.io_weight.map_or(100, |x| u64::from(x).clamp(1, 1000));
                vec![w("blkio.bfq.weight", weight.to_string())]
            }
            None => Vec::new(),
        },
    }
}

/// Where a controller's events are counted, and the key of the line.
pub fn event_file(c: Controller, v: Version) -> Option<(&'static str, &'static str)> {
    match (c, v) {
        (Controller::Memory, Version::V2) => Some(("memory.events", "oom_kill")),
        // Since 4.13; older kernels: memory.failcnt (hits of the limit, not kills).
        (Controller::Memory, Version::V1) => Some(("memory.oom_control", "oom_kill")),
        (Controller::Pids, _) => Some(("pids.events", "max")),
        _ => None,
    }
}

/// The value of the `key N` line of a flat-keyed file (`memory.events`,
/// `memory.oom_control`, `pids.events`); a bare number (`memory.failcnt`) when `key`
/// is empty.
pub fn read_counter(text: &str, key: &str) -> Option<u64> {
    if key.is_empty() {
        return text.trim().parse().ok();
    }
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Whether a limit that the controller `c` would apply is set.
pub fn wanted(c: Controller, limits: &CgroupLimits) -> bool {
    match c {
        Controller::Memory => limits.memory_max.is_some() || limits.memory_high.is_some(),
        Controller::Pids => limits.pids_max.is_some(),
        Controller::Cpu => limits.cpu_max.is_some() || limits.cpu_weight.is_some(),
        Controller::Io => limits.io_weight.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CgroupLimits {
        CgroupLimits {
            memory_max: Some(Bound::At(64 << 20)),
            memory_high: Some(Bound::At(48 << 20)),
            pids_max: Some(Bound::At(100)),
            cpu_max: Some(Bound::At(20)),
            cpu_weight: Some(200),
            io_weight: Some(50),
        }
    }

    fn pairs(ws: &[Write]) -> Vec<(&str, &str)> {
        ws.iter().map(|w| (w.file, w.value.as_str())).collect()
    }

    #[test]
    fn v2_files() {
        let l = limits();
        let v = Version::V2;
        assert_eq!(
            pairs(&writes(Controller::Memory, v, &l, None)),
            [("memory.max", "67108864"), ("memory.high", "50331648")]
        );
        assert_eq!(
            pairs(&writes(Controller::Pids, v, &l, None)),
            [("pids.max", "100")]
        );
        assert_eq!(
            pairs(&writes(Controller::Cpu, v, &l, None)),
            [("cpu.max", "20000 100000"), ("cpu.weight", "200")]
        );
        assert_eq!(
            pairs(&writes(Controller::Io, v, &l, None)),
            [("io.weight", "default 50")]
        );
        let none = CgroupLimits::default();
        assert_eq!(
            pairs(&writes(Controller::Memory, v, &none, None)),
            [("memory.max", "max"), ("memory.high", "max")]
        );
        assert_eq!(
            pairs(&writes(Controller::Cpu, v, &none, None)),
            [("cpu.max", "max 100000"), ("cpu.weight", "100")]
        );
        assert_eq!(
            event_file(Controller::Memory, v),
            Some(("memory.events", "oom_kill"))
        );
    }

    #[test]
    fn v1_files() {
        let l = limits();
        let v = Version::V1;
        let mem = writes(Controller::Memory, v, &l, None);
        assert_eq!(
            pairs(&mem),
            [
                ("memory.memsw.limit_in_bytes", "-1"),
                ("memory.limit_in_bytes", "67108864"),
                ("memory.memsw.limit_in_bytes", "67108864")
            ]
        );
        assert!(mem[0].optional && !mem[1].optional && mem[2].optional);
        assert_eq!(
            pairs(&writes(Controller::Pids, v, &l, None)),
            [("pids.max", "100")]
        );
        assert_eq!(
            pairs(&writes(Controller::Cpu, v, &l, None)),
            [
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "20000"),
                ("cpu.shares", "2048")
            ]
        );
        assert_eq!(
            pairs(&writes(Controller::Io, v, &l, Some(V1Io::Cfq))),
            [("blkio.weight", "250")]
        );
        assert_eq!(
            pairs(&writes(Controller::Io, v, &l, Some(V1Io::Bfq))),
            [("blkio.bfq.weight", "50")]
        );
        assert!(writes(Controller::Io, v, &l, None).is_empty());
        let none = CgroupLimits {
            cpu_max: Some(Bound::Max),
            ..Default::default()
        };
        assert_eq!(
            pairs(&writes(Controller::Cpu, v, &none, None)),
            [
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "-1"),
                ("cpu.shares", "1024")
            ]
        );
        assert_eq!(
            pairs(&writes(Controller::Memory, v, &none, None))[1],
            ("memory.limit_in_bytes", "-1")
        );
        assert_eq!(shares(1), 10);
        assert_eq!(
            pairs(&writes(
                Controller::Cpu,
                v,
                &CgroupLimits {
                    cpu_max: Some(Bound::At(250)),
                    ..none
                },
                None
            ))[1],
            ("cpu.cfs_quota_us", "250000")
        );
        assert_eq!(
            event_file(Controller::Memory, v),
            Some(("memory.oom_control", "oom_kill"))
        );
        assert_eq!(event_file(Controller::Pids, v), Some(("pids.events", "max")));
        assert_eq!(event_file(Controller::Cpu, v), None);
    }

    #[test]
    fn counters() {
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(read_counter(oom_control, "oom_kill"), Some(3));
        let events = "low 0\nhigh 12\nmax 40\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(read_counter(events, "oom_kill"), Some(2));
        assert_eq!(read_counter(events, "max"), Some(40));
        assert_eq!(read_counter("max 7\n", "max"), Some(7));
        assert_eq!(read_counter("17\n", ""), Some(17));
        assert_eq!(read_counter("oom_kill x\n", "oom_kill"), None);
        assert_eq!(read_counter("", "max"), None);
    }

    #[test]
    fn which_limits_want_which_controller() {
        let only_pids = CgroupLimits {
            pids_max: Some(Bound::Max),
            ..Default::default()
        };
        assert!(wanted(Controller::Pids, &only_pids));
        assert!(!wanted(Controller::Memory, &only_pids));
        assert!(!wanted(Controller::Cpu, &only_pids));
        assert!(wanted(Controller::Cpu, &limits()));
    }
}
