//! How many children run: `server_limit`, the multiplexer counts, and the processor-pool
//! directives that `[server]` may set as defaults for every environment. An environment
//! takes its own value, else `[server]`'s, else the built-in default.
//!
//! Every rule between these values is checked where it can break: `[server]`'s defaults
//! among themselves, then each environment's resolved values. A broken rule is reported
//! once, at a value written at the level being checked (the environment's table when it
//! wrote one of the two values, else `[server]`), naming where the other value came from.

use std::time::Duration;

use crate::error::{Report, Span};
use crate::tree::Table;

/// Longest accepted timeout, in seconds: anything longer is a typo, and keeping
/// durations small means no `Instant + Duration` downstream can overflow.
pub(crate) const MAX_TIMEOUT_SECS: i64 = 86_400;
pub(crate) const MAX_COUNT: i64 = u32::MAX as i64;

/// The per-environment directives, also accepted in `[server]` as defaults.
pub(crate) const POOL_KEYS: &[&str] = &[
    "min_processors",
    "max_processors",
    "max_connections_per_processor",
    "start_processors",
    "min_spare_processors",
    "max_spare_processors",
    "idle_timeout",
    "expire_timeout",
    "max_requests_per_child",
];

/// A directive: key, built-in default, accepted range.
struct Directive {
    key: &'static str,
    default: i64,
    min: i64,
    max: i64,
}

const fn count(key: &'static str, default: i64, min: i64) -> Directive {
    Directive {
        key,
        default,
        min,
        max: MAX_COUNT,
    }
}

const fn secs(key: &'static str, default: i64) -> Directive {
    Directive {
        key,
        default,
        min: 0,
        max: MAX_TIMEOUT_SECS,
    }
}

const SERVER_LIMIT: Directive = count("server_limit", 256, 1);
const MIN_MULTIPLEXERS: Directive = count("min_multiplexers", 2, 1);
const MAX_MULTIPLEXERS: Directive = count("max_multiplexers", 20, 1);

const MIN_PROCESSORS: Directive = count("min_processors", 1, 0);
const MAX_PROCESSORS: Directive = count("max_processors", 10, 1);
const MAX_CONNECTIONS: Directive = count("max_connections_per_processor", 1024, 1);
/// Its default is not fixed: it is the same table's `min_processors`.
const START_PROCESSORS: Directive = count("start_processors", 0, 0);
const MIN_SPARE: Directive = count("min_spare_processors", 0, 0);
const MAX_SPARE: Directive = count("max_spare_processors", 0, 0);
const IDLE_TIMEOUT: Directive = secs("idle_timeout", 900);
const EXPIRE_TIMEOUT: Directive = secs("expire_timeout", 1800);
const MAX_REQUESTS: Directive = Directive {
    key: "max_requests_per_child",
    default: 10_000,
    min: 0,
    max: i64::MAX,
};

/// Where a value came from, least specific first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Builtin,
    Server,
    Environment,
}

/// A value and where it was written, so that a broken rule can be reported there.
#[derive(Clone)]
pub(crate) struct Setting {
    pub value: i64,
    level: Level,
    /// Key path; for a built-in default, the key's path in `[server]`.
    path: String,
    /// The key; for a built-in default, the `[server]` header, if there is one.
    span: Span,
}

impl Setting {
    fn builtin(d: &Directive, server: &Span) -> Option<Setting> {
        Some(Setting {
            value: d.default,
            level: Level::Builtin,
            path: format!("server.{}", d.key),
            span: server.clone(),
        })
    }

    /// `t`'s value for `d`, else `inherited`; `None` when the value written is invalid
    /// (reported) or nothing valid was inherited.
    fn read(
        t: &Table,
        r: &mut Report,
        level: Level,
        d: &Directive,
        inherited: &Option<Setting>,
    ) -> Option<Setting> {
        match t.get(d.key) {
            None => inherited.clone(),
            Some(entry) => {
                let value = entry.int_in(r, d.min, d.max)?;
                Some(Setting {
                    value,
                    level,
                    path: entry.path,
                    span: entry.span,
                })
            }
        }
    }

    /// ", set in [server] at line N" or ", the default" when it was not written in the
    /// table checked at `level`.
    fn origin(&self, r: &Report, level: Level) -> String {
        match self.level {
            Level::Builtin => ", the default".to_string(),
            Level::Server if level == Level::Environment => {
                format!(", set in [server] at line {}", r.line(&self.span))
            }
            _ => String::new(),
        }
    }
}

/// The per-environment directives; a field is `None` when its value was invalid.
#[derive(Clone)]
pub(crate) struct Pool {
    pub min_processors: Option<Setting>,
    pub max_processors: Option<Setting>,
    pub max_connections_per_processor: Option<Setting>,
    pub start_processors: Option<Setting>,
    pub min_spare_processors: Option<Setting>,
    pub max_spare_processors: Option<Setting>,
    pub idle_timeout: Option<Setting>,
    pub expire_timeout: Option<Setting>,
    pub max_requests_per_child: Option<Setting>,
}

impl Pool {
    fn builtin(server: &Span) -> Pool {
        let min_processors = Setting::builtin(&MIN_PROCESSORS, server);
        Pool {
            start_processors: min_processors.clone(),
            min_processors,
            max_processors: Setting::builtin(&MAX_PROCESSORS, server),
            max_connections_per_processor: Setting::builtin(&MAX_CONNECTIONS, server),
            min_spare_processors: Setting::builtin(&MIN_SPARE, server),
            max_spare_processors: Setting::builtin(&MAX_SPARE, server),
            idle_timeout: Setting::builtin(&IDLE_TIMEOUT, server),
            expire_timeout: Setting::builtin(&EXPIRE_TIMEOUT, server),
            max_requests_per_child: Setting::builtin(&MAX_REQUESTS, server),
        }
    }

    /// `t`'s values over `parent`'s.
    fn read(t: &Table, r: &mut Report, level: Level, parent: &Pool) -> Pool {
        let mut read = |d: &Directive, inherited: &Option<Setting>| Setting::read(t, r, level, d, inherited);
        let min_processors = read(&MIN_PROCESSORS, &parent.min_processors);
        let max_processors = read(&MAX_PROCESSORS, &parent.max_processors);
        let max_connections_per_processor = read(&MAX_CONNECTIONS, &parent.max_connections_per_processor);
        let inherited_start = match &parent.start_processors {
            // Not written above: this table's min_processors.
            Some(s) if s.level == Level::Builtin => min_processors.clone().map(|min| Setting {
                level: Level::Builtin,
                ..min
            }),
            other => other.clone(),
        };
        let start_processors = read(&START_PROCESSORS, &inherited_start);
        Pool {
            min_processors,
            max_processors,
            max_connections_per_processor,
            start_processors,
            min_spare_processors: read(&MIN_SPARE, &parent.min_spare_processors),
            max_spare_processors: read(&MAX_SPARE, &parent.max_spare_processors),
            idle_timeout: read(&IDLE_TIMEOUT, &parent.idle_timeout),
            expire_timeout: read(&EXPIRE_TIMEOUT, &parent.expire_timeout),
            max_requests_per_child: read(&MAX_REQUESTS, &parent.max_requests_per_child),
        }
    }

    /// The rules between the values, reporting what was written at `level`. Whether
    /// they all hold (also when a broken one was reported at another level).
    fn check(&self, r: &mut Report, level: Level, server_limit: &Option<Setting>) -> bool {
        let mut ok = at_most(
            r,
            level,
            (MIN_PROCESSORS.key, &self.min_processors),
            (MAX_PROCESSORS.key, &self.max_processors),
            Blame::Upper,
            "",
        );
        // A start_processors nobody wrote is min_processors: nothing to check.
        if self
            .start_processors
            .as_ref()
            .is_some_and(|s| s.level != Level::Builtin)
        {
            let start = (START_PROCESSORS.key, &self.start_processors);
            let note = "; it must be between min_processors and max_processors";
            ok &= at_most(
                r,
                level,
                (MIN_PROCESSORS.key, &self.min_processors),
                start,
                Blame::Upper,
                note,
            );
            ok &= at_most(
                r,
                level,
                start,
                (MAX_PROCESSORS.key, &self.max_processors),
                Blame::Lower,
                note,
            );
        }
        if self.max_spare_processors.as_ref().is_some_and(|s| s.value != 0) {
            ok &= at_most(
                r,
                level,
                (MIN_SPARE.key, &self.min_spare_processors),
                (MAX_SPARE.key, &self.max_spare_processors),
                Blame::Upper,
                " (0 turns max_spare_processors off)",
            );
        }
        ok &= at_most(
            r,
            level,
            (MAX_PROCESSORS.key, &self.max_processors),
            (SERVER_LIMIT.key, server_limit),
            Blame::Lower,
            "",
        );
        ok
    }
}

/// Which side of a broken `lower <= upper` to report when both were written at the
/// level checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blame {
    Lower,
    Upper,
}

/// Checks `lower <= upper`, each named by its key. A broken rule is reported at a value
/// written at `level` (`blame` when both were), and not at all when neither was: it was
/// then reported at `[server]` already, or built-in defaults cannot break it. Missing
/// values were invalid and reported; the rule is skipped.
fn at_most(
    r: &mut Report,
    level: Level,
    lower: (&str, &Option<Setting>),
    upper: (&str, &Option<Setting>),
    blame: Blame,
    note: &str,
) -> bool {
    let ((lower_key, Some(lo)), (upper_key, Some(hi))) = (lower, upper) else {
        return true;
    };
    if lo.value <= hi.value {
        return true;
    }
    let as_upper = (hi, upper_key, "less than", lo, lower_key);
    let as_lower = (lo, lower_key, "greater than", hi, upper_key);
    let order = match blame {
        Blame::Upper => [as_upper, as_lower],
        Blame::Lower => [as_lower, as_upper],
    };
    if let Some((at, key, relation, other, other_key)) = order.into_iter().find(|c| c.0.level == level) {
        let message = format!(
            "{key} ({}) is {relation} {other_key} ({}{}){note}",
            at.value,
            other.value,
            other.origin(r, level)
        );
        r.error(&at.span, &at.path, message);
    }
    false
}

/// What `[server]` says about children, read before the rest of `[server]` because the
/// environments inherit from it.
pub(crate) struct Limits {
    pub server_limit: Option<Setting>,
    pub min_multiplexers: Option<Setting>,
    pub max_multiplexers: Option<Setting>,
    /// The environments' defaults.
    pub pool: Pool,
    /// The environments' default cgroup limits; `None` when one is invalid.
    pub cgroup: Option<crate::model::CgroupLimits>,
    /// `[server] private_view`, the environments' default; `None` when invalid.
    pub private_view: Option<bool>,
}

impl Limits {
    /// From `[server]` (`None` when it is absent or not a table), with its rules checked.
    pub(crate) fn server(t: Option<&Table>, r: &mut Report) -> Limits {
        let span = t.and_then(|t| t.span.clone());
        let builtin = Pool::builtin(&span);
        let server_limit = Setting::builtin(&SERVER_LIMIT, &span);
        let min_multiplexers = Setting::builtin(&MIN_MULTIPLEXERS, &span);
        let max_multiplexers = Setting::builtin(&MAX_MULTIPLEXERS, &span);
        let Some(t) = t else {
            return Limits {
                server_limit,
                min_multiplexers,
                max_multiplexers,
                pool: builtin,
                cgroup: Some(Default::default()),
                private_view: Some(crate::view::DEFAULT),
            };
        };
        let level = Level::Server;
        let limits = Limits {
            server_limit: Setting::read(t, r, level, &SERVER_LIMIT, &server_limit),
            min_multiplexers: Setting::read(t, r, level, &MIN_MULTIPLEXERS, &min_multiplexers),
            max_multiplexers: Setting::read(t, r, level, &MAX_MULTIPLEXERS, &max_multiplexers),
            pool: Pool::read(t, r, level, &builtin),
            cgroup: crate::cgroup::limits(t, r, &Default::default()),
            private_view: crate::view::flag(t, r, crate::view::DEFAULT),
        };
        at_most(
            r,
            level,
            (MIN_MULTIPLEXERS.key, &limits.min_multiplexers),
            (MAX_MULTIPLEXERS.key, &limits.max_multiplexers),
            Blame::Upper,
            "",
        );
        limits.pool.check(r, level, &limits.server_limit);
        limits
    }

    /// One environment's values over `[server]`'s, and whether its rules hold.
    pub(crate) fn environment(&self, t: &Table, r: &mut Report) -> (Pool, bool) {
        let pool = Pool::read(t, r, Level::Environment, &self.pool);
        let ok = pool.check(r, Level::Environment, &self.server_limit);
        (pool, ok)
    }

    /// `min_multiplexers` plus every environment's `min_processors` must fit in
    /// `server_limit`; reported at `server_limit`, or at `[server]` when it is unset.
    /// `envs` holds the environments whose `min_processors` is valid.
    pub(crate) fn check_total(&self, r: &mut Report, envs: &[(&str, i64)]) {
        let (Some(limit), Some(muxes)) = (&self.server_limit, &self.min_multiplexers) else {
            return;
        };
        let processors: i64 = envs.iter().map(|&(_, min)| min).sum();
        let total = muxes.value.saturating_add(processors);
        if total <= limit.value {
            return;
        }
        let detail = if envs.len() <= 6 {
            let each: Vec<String> = envs.iter().map(|(name, min)| format!("{name} {min}")).collect();
            each.join(", ")
        } else {
            format!("{processors} over {} environments", envs.len())
        };
        let message = format!(
            "min_multiplexers ({}) plus every environment's min_processors ({detail}) is {total}, \
             more than server_limit ({}{})",
            muxes.value,
            limit.value,
            limit.origin(r, Level::Server)
        );
        r.error(&limit.span, &limit.path, message);
    }
}

pub(crate) fn to_u32(s: &Option<Setting>) -> Option<u32> {
    u32::try_from(s.as_ref()?.value).ok()
}

pub(crate) fn to_u64(s: &Option<Setting>) -> Option<u64> {
    u64::try_from(s.as_ref()?.value).ok()
}

pub(crate) fn to_duration(s: &Option<Setting>) -> Option<Duration> {
    to_u64(s).map(Duration::from_secs)
}
