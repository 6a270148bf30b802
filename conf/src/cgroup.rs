//! The cgroup limits of an environment (`memory_max`, `memory_high`, `pids_max`,
//! `cpu_max`, `cpu_weight`, `io_weight`), each also accepted in `[server]` as the
//! default of every environment, and `[server] cgroup_root`. An environment with none
//! of them set (in its table or in `[server]`) gets no cgroup at all.

use std::path::{Component, Path, PathBuf};

use crate::error::Report;
use crate::model::{Bound, CgroupLimits};
use crate::tree::{Entry, IntOrStr, Table};

/// The limit keys, in `[server]` and in every `[environments.NAME]`.
pub(crate) const KEYS: &[&str] = &[
    "memory_max",
    "memory_high",
    "pids_max",
    "cpu_max",
    "cpu_weight",
    "io_weight",
];

/// The smallest memory limit accepted: less cannot even start a processor.
const MIN_MEMORY: u64 = 1 << 20;
/// The kernel's `PID_MAX_LIMIT`.
const MAX_PIDS: i64 = 4 << 20;
/// `cpu_max` is a percentage of one CPU; this allows 1024 CPUs.
const MAX_CPU_PERCENT: i64 = 100 * 1024;
/// cgroup v2's range of `cpu.weight` and `io.weight`.
const MAX_WEIGHT: i64 = 10_000;

/// A size: a number of bytes, or a string of digits with a binary suffix (`K`, `M`,
/// `G`, `T`, either case), or `"max"`. `None` when malformed or too large.
pub fn parse_size(s: &str) -> Option<Bound> {
    if s == "max" {
        return Some(Bound::Max);
    }
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        b't' | b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let bytes = n.checked_mul(1u64 << shift)?;
    // The kernel's counters are signed 64-bit page counts: keep well inside them.
    (bytes <= i64::MAX as u64 / 2).then_some(Bound::At(bytes))
}

/// `[server] cgroup_root`: bulkhead's tree in every hierarchy, as a cgroup path (as in
/// `/proc/self/cgroup`: `/bulkhead`) or relative to the supervisor's own group in each
/// (`bulkhead`); no `..`, not `/` itself, UTF-8 without line breaks. `Some(None)` when
/// absent (`bulkhead`, relative), `None` when invalid.
pub(crate) fn root(t: &Table, r: &mut Report) -> Option<Option<PathBuf>> {
    let Some(e) = t.get("cgroup_root") else {
        return Some(None);
    };
    let s = e.str(r)?;
    let path = Path::new(s);
    let problem = if s.is_empty() || path == Path::new("/") {
        Some("must name a group below the hierarchy's root or the supervisor's own group, e.g. \"/bulkhead\" or \"bulkhead\"")
    } else if s.contains(['\0', '\n']) {
        Some("must not contain a NUL byte or a line break")
    } else if path.components().any(|c| matches!(c, Component::ParentDir)) {
        Some("must not contain '..' components")
    } else {
        None
    };
    if let Some(message) = problem {
        e.error(r, message);
        return None;
    }
    Some(Some(path.components().collect()))
}

/// `t`'s limits over `inherited` (`[server]`'s, or nothing for `[server]` itself);
/// `None` when a value written in `t` is invalid (reported).
pub(crate) fn limits(t: &Table, r: &mut Report, inherited: &CgroupLimits) -> Option<CgroupLimits> {
    let mut ok = true;
    let mut out = *inherited;
    let mut take =
        |key: &str, slot: &mut Option<Bound>, read: &dyn Fn(&Entry, &mut Report) -> Option<Bound>| {
            if let Some(e) = t.get(key) {
                match read(&e, r) {
                    Some(v) => *slot = Some(v),
                    None => ok = false,
                }
            }
        };
    take("memory_max", &mut out.memory_max, &memory);
    take("memory_high", &mut out.memory_high, &memory);
    take("pids_max", &mut out.pids_max, &|e, r| {
        count_or_max(e, r, 1, MAX_PIDS)
    });
    take("cpu_max", &mut out.cpu_max, &|e, r| {
        count_or_max(e, r, 1, MAX_CPU_PERCENT)
    });
    let mut weight = |key: &str, slot: &mut Option<u32>| {
        if let Some(e) = t.get(key) {
            match e.int_in(r, 1, MAX_WEIGHT) {
                Some(v) => *slot = u32::try_from(v).ok(),
                None => ok = false,
            }
        }
    };
    weight("cpu_weight", &mut out.cpu_weight);
    weight("io_weight", &mut out.io_weight);
    if let (Some(Bound::At(high)), Some(Bound::At(max))) = (out.memory_high, out.memory_max) {
        // Reported where one of the two was written, memory_high first.
        let written = t.get("memory_high").or_else(|| t.get("memory_max"));
        if let (true, Some(e)) = (high > max, written) {
            e.error(
                r,
                format!("memory_high ({high} bytes) is above memory_max ({max} bytes); the throttle point must be below the hard limit"),
            );
            ok = false;
        }
    }
    ok.then_some(out)
}

/// A memory size of at least [`MIN_MEMORY`], or `"max"`.
fn memory(e: &Entry, r: &mut Report) -> Option<Bound> {
    let bound = match e.int_or_str_as(r, "a size (\"512M\") or \"max\"")? {
        IntOrStr::Int(n) => u64::try_from(n).ok().map(Bound::At),
        IntOrStr::Str(s) => parse_size(s),
    };
    match bound {
        Some(Bound::At(n)) if n < MIN_MEMORY => {
            e.error(r, format!("must be at least 1M ({MIN_MEMORY} bytes), got {n}"));
            None
        }
        Some(b) => Some(b),
        None => {
            e.error(
                r,
                "expected a size: bytes, or a number with K, M, G or T (binary: \"512M\"), or \"max\"",
            );
            None
        }
    }
}

/// An integer in `min..=max`, or `"max"`.
fn count_or_max(e: &Entry, r: &mut Report, min: i64, max: i64) -> Option<Bound> {
    match e.int_or_str_as(r, "an integer or \"max\"")? {
        IntOrStr::Str("max") => Some(Bound::Max),
        IntOrStr::Str(other) => {
            e.error(r, format!("expected an integer or \"max\", got '{other}'"));
            None
        }
        IntOrStr::Int(_) => e
            .int_in(r, min, max)
            .and_then(|n| u64::try_from(n).ok())
            .map(Bound::At),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("max"), Some(Bound::Max));
        assert_eq!(parse_size("0"), Some(Bound::At(0)));
        assert_eq!(parse_size("4096"), Some(Bound::At(4096)));
        assert_eq!(parse_size("64k"), Some(Bound::At(64 << 10)));
        assert_eq!(parse_size("512M"), Some(Bound::At(512 << 20)));
        assert_eq!(parse_size("2G"), Some(Bound::At(2 << 30)));
        assert_eq!(parse_size("3t"), Some(Bound::At(3 << 40)));
        for bad in [
            "",
            "M",
            "1.5G",
            "-1",
            "1 G",
            "1GB",
            "Max",
            "12x",
            "99999999999T",
            "+5",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
