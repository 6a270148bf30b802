//! Builds a [`Snapshot`] from the scoreboard: live slots plus the retired totals,
//! read under the shared table's seqlock so a child that dies meanwhile is counted
//! exactly once.

use crate::status::model::{ChildRow, ChildState, EnvRow, FastcgiRow, Role, Snapshot, TlsRow, VhostRow};
use common::scoreboard::{now_ms, slot, table};

use crate::pool::Pools;

/// Fixed facts a snapshot repeats.
pub struct Facts {
    pub generation: u64,
    pub server_limit: u64,
    pub max_multiplexers: u64,
}

fn state(v: u64) -> ChildState {
    match v {
        slot::READY => ChildState::Ready,
        slot::BUSY => ChildState::Busy,
        slot::STOPPING => ChildState::Stopping,
        _ => ChildState::Starting,
    }
}

/// Takes a consistent snapshot (retrying while the supervisor retires a child).
pub fn take(pools: &Pools, facts: &Facts, server_name: &str) -> Snapshot {
    for _ in 0..100 {
        let before = pools.table.seq_read_begin(table::SEQ);
        if before % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let snap = build(pools, facts, server_name);
        if pools.table.seq_read_valid(table::SEQ, before) {
            return snap;
        }
    }
    build(pools, facts, server_name)
}

fn build(pools: &Pools, facts: &Facts, server_name: &str) -> Snapshot {
    let t = &pools.table;
    let (ne, nv) = (pools.envs.len(), pools.vhosts.len());
    let live = |index: usize, pid: u32| {
        t.get(table::registry_word(ne, nv, index, table::registry::LIVE)) == 1
            && t.get(table::registry_word(ne, nv, index, table::registry::PID)) == pid as u64
    };
    let mut envs: Vec<EnvRow> = pools
        .envs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let w = |x| t.get(table::env_word(i, x));
            EnvRow {
                id: i,
                name: e.name.clone(),
                availability: w(table::env::AVAILABILITY).min(100),
                processors_alive: 0,
                processors_idle: 0,
                max_processors: e.max_processors as u64,
                connections: w(table::env::RETIRED_TAKEN),
                requests: w(table::env::RETIRED_REQUESTS),
                bytes: w(table::env::RETIRED_BYTES),
                active_conns: 0,
                duration_us: w(table::env::RETIRED_DURATION_US),
                dropped_saturated: w(table::env::DROPPED_SATURATED),
                dropped_vhost_limit: w(table::env::DROPPED_VHOST_LIMIT),
                dropped_error: w(table::env::DROPPED_ERROR),
                handoffs: w(table::env::HANDOFFS),
                handbacks: w(table::env::HANDBACKS),
                spawns: w(table::env::SPAWNS),
                cold_starts: w(table::env::COLD_STARTS),
                cold_start_us: w(table::env::COLD_START_US),
                oom_kills: w(table::env::OOM_KILLS).min(1 << 48),
                pids_max_hits: w(table::env::PIDS_MAX_HITS).min(1 << 48),
                fastcgi: fastcgi(&w),
                tls: pools
                    .vhosts
                    .iter()
                    .any(|v| v.tls && v.env as usize == i)
                    .then(|| {
                        tls_row(|slot_word| {
                            let total = table::TLS_RETIRED.iter().find(|(_, sw)| *sw == slot_word);
                            total.map_or(0, |(tw, _)| w(*tw).min(1 << 48))
                        })
                    }),
            }
        })
        .collect();
    let mut fcgi_active = vec![0u64; ne];
    let mut vhosts: Vec<VhostRow> = pools
        .vhosts
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let w = |x| t.get(table::vhost_word(ne, i, x));
            let mut classes = [0u64; 5];
            for (c, slot_c) in classes.iter_mut().enumerate() {
                *slot_c = w(slot::site::CLASS + c);
            }
            VhostRow {
                id: i,
                server_name: v.server_name.clone(),
                environment: pools
                    .envs
                    .get(v.env as usize)
                    .map(|e| e.name.clone())
                    .unwrap_or_default(),
                requests_by_class: classes,
                bytes: w(slot::site::BYTES),
                duration_us: w(slot::site::DURATION_US),
                histogram: (0..=slot::site::BUCKETS_MS.len())
                    .map(|b| w(slot::site::HIST + b))
                    .collect(),
                active_conns: 0,
            }
        })
        .collect();
    let mut children = Vec::new();
    let mut muxes = 0u64;
    let now = now_ms();
    let slots = pools.slots.borrow();
    let mut ordered: Vec<&crate::pool::Watched> = slots.iter().filter(|w| live(w.index, w.pid)).collect();
    ordered.sort_by_key(|w| (w.env.is_some(), w.env, w.index));
    for w in ordered {
        let s = &w.seg;
        // Tenant-written numbers: bounded before they are added up.
        let g = |x| s.get(x).min(1 << 48);
        let st = state(s.get(slot::STATE));
        let row = ChildRow {
            id: w.index,
            pid: w.pid,
            role: if w.env.is_some() {
                Role::Processor
            } else {
                Role::Multiplexer
            },
            environment: w.env.map(|e| pools.envs[e].name.clone()),
            state: st,
            started_ms: g(slot::STARTED_MS).min(now),
            last_used_ms: g(slot::LAST_USED_MS).min(now),
            connections: g(slot::TAKEN),
            requests: g(slot::REQUESTS),
            bytes: g(slot::BYTES),
            active_conns: g(slot::ACTIVE_CONNS),
            capacity: g(slot::CAPACITY),
            generation: g(slot::GENERATION),
        };
        match w.env {
            None => muxes += 1,
            Some(e) => {
                let env = &mut envs[e];
                if st != ChildState::Stopping {
                    env.processors_alive = env.processors_alive.saturating_add(1);
                    if row.active_conns < row.capacity.max(1) {
                        env.processors_idle = env.processors_idle.saturating_add(1);
                    }
                }
                env.connections = env.connections.saturating_add(row.connections);
                env.requests = env.requests.saturating_add(row.requests);
                env.bytes = env.bytes.saturating_add(row.bytes);
                env.active_conns = env.active_conns.saturating_add(row.active_conns);
                env.duration_us = env.duration_us.saturating_add(g(slot::DURATION_US));
                if let Some(tls) = &mut env.tls {
                    tls.add(&tls_row(g));
                }
                if let Some(f) = &mut env.fastcgi {
                    f.requests = f.requests.saturating_add(g(slot::FCGI_REQUESTS));
                    f.bad_gateway = f.bad_gateway.saturating_add(g(slot::FCGI_BAD_GATEWAY));
                    f.timeouts = f.timeouts.saturating_add(g(slot::FCGI_TIMEOUTS));
                    // In flight per processor: at most its connections.
                    let active = g(slot::FCGI_ACTIVE).min(row.capacity.max(1));
                    fcgi_active[e] = fcgi_active[e].saturating_add(active);
                }
                let sites = (s.get(slot::SITES) as usize).min(nv);
                for i in 0..sites {
                    let vh = s.get(slot::site_word(i, slot::site::VHOST)) as usize;
                    let Some(v) = vhosts.get_mut(vh) else { continue };
                    if pools.vhosts[vh].env as usize != e {
                        continue;
                    }
                    let sw = |x| s.get(slot::site_word(i, x)).min(1 << 48);
                    for c in 0..5 {
                        v.requests_by_class[c] =
                            v.requests_by_class[c].saturating_add(sw(slot::site::CLASS + c));
                    }
                    v.bytes = v.bytes.saturating_add(sw(slot::site::BYTES));
                    v.duration_us = v.duration_us.saturating_add(sw(slot::site::DURATION_US));
                    for (b, h) in v.histogram.iter_mut().enumerate() {
                        *h = h.saturating_add(sw(slot::site::HIST + b));
                    }
                    v.active_conns = v.active_conns.saturating_add(sw(slot::site::ACTIVE_CONNS));
                }
            }
        }
        children.push(row);
    }
    let _ = muxes;
    for (env, active) in envs.iter_mut().zip(fcgi_active) {
        if let Some(f) = &mut env.fastcgi {
            f.split(active);
        }
    }
    Snapshot {
        server_name: server_name.to_string(),
        server_version: format!("bulkhead/{}", env!("CARGO_PKG_VERSION")),
        now_ms: now,
        started_ms: t.get(table::STARTED_MS).min(now),
        generation: facts.generation,
        server_limit: facts.server_limit,
        max_clients: pools.max_clients as u64,
        max_multiplexers: facts.max_multiplexers,
        accepted: t.get(table::ACCEPTED),
        children,
        environments: envs,
        vhosts,
    }
}

/// A TLS row from a reader of the processors' slot words (bounded by the caller).
fn tls_row(g: impl Fn(usize) -> u64) -> TlsRow {
    TlsRow {
        handshakes: g(slot::TLS_HANDSHAKES),
        resumed: g(slot::TLS_RESUMED),
        alpn_http11: g(slot::TLS_ALPN_HTTP11),
        alpn_h2: g(slot::TLS_ALPN_H2),
        failed_timeout: g(slot::TLS_FAIL_TIMEOUT),
        failed_server_name: g(slot::TLS_FAIL_SERVER_NAME),
        failed_error: g(slot::TLS_FAIL_ERROR),
        misdirected: g(slot::TLS_MISDIRECTED),
    }
}

/// An environment's FastCGI row from its table words (the supervisor's, but bounded
/// all the same), before the processors' counters are added; `None` without backends.
fn fastcgi(w: &impl Fn(usize) -> u64) -> Option<FastcgiRow> {
    let max_backends = w(table::env::MAX_BACKENDS).min(1 << 20);
    if max_backends == 0 {
        return None;
    }
    let bound = |x: usize| w(x).min(1 << 48);
    Some(FastcgiRow {
        max_backends,
        running: w(table::env::BACKENDS).min(max_backends),
        requests: bound(table::env::RETIRED_FCGI_REQUESTS),
        bad_gateway: bound(table::env::RETIRED_FCGI_BAD_GATEWAY),
        timeouts: bound(table::env::RETIRED_FCGI_TIMEOUTS),
        starts: bound(table::env::BACKEND_STARTS),
        deaths: bound(table::env::BACKEND_DEATHS),
        ..FastcgiRow::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::control::{EnvBoot, SlotAdd, VhostBoot};
    use common::scoreboard::{self, Segment};
    use std::time::Duration;

    /// Two scribbled processor slots (every word `u64::MAX`) on top of retired totals
    /// already at `u64::MAX`: the snapshot saturates, never wraps or panics.
    #[test]
    fn scribbled_slots_and_full_totals_saturate() {
        let (ne, nv, reg) = (1, 1, 4);
        let (table_rw, _) = scoreboard::create("t", table::words(ne, nv, reg)).unwrap();
        let t = Segment::map(&table_rw, true).unwrap();
        for w in 0..table::env::WORDS {
            t.set(table::env_word(0, w), u64::MAX);
        }
        for w in 0..table::vhost::WORDS {
            t.set(table::vhost_word(ne, 0, w), u64::MAX);
        }
        let mut add = Vec::new();
        let mut fds = Vec::new();
        let mut keep = Vec::new();
        for i in 0..2 {
            let pid = 100 + i as u32;
            t.set(table::registry_word(ne, nv, i, table::registry::PID), pid as u64);
            t.set(table::registry_word(ne, nv, i, table::registry::LIVE), 1);
            let (rw, ro) = scoreboard::create("s", slot::words(1)).unwrap();
            let s = Segment::map(&rw, true).unwrap();
            for w in 0..s.words() {
                s.set(w, u64::MAX);
            }
            s.set(slot::SITES, 1);
            s.set(slot::site_word(0, slot::site::VHOST), 0);
            keep.push(s);
            add.push(SlotAdd {
                pid,
                env: 0,
                index: i as u32,
            });
            fds.push(ro);
        }
        let envs = vec![EnvBoot {
            name: "alice".into(),
            max_processors: 4,
            capacity: 8,
        }];
        let vhosts = vec![VhostBoot {
            server_name: "alice.test".into(),
            env: 0,
            max_clients: 0,
            tls: false,
        }];
        let pools = Pools::new(envs, vhosts, std::rc::Rc::new(t), Duration::from_secs(1), 1, 0);
        pools.update(add, fds, vec![]);
        let facts = Facts {
            generation: 0,
            server_limit: 10,
            max_multiplexers: 1,
        };
        let snap = take(&pools, &facts, "x");
        let e = &snap.environments[0];
        assert_eq!(
            (e.requests, e.bytes, e.connections),
            (u64::MAX, u64::MAX, u64::MAX)
        );
        let v = &snap.vhosts[0];
        assert_eq!(v.requests(), u64::MAX);
        assert_eq!(v.bytes, u64::MAX);
        assert!(v.histogram.iter().all(|h| *h == u64::MAX));
        assert_eq!(snap.children.len(), 2);
        let _ = pools.view(0);
        let _ = pools.saturated(0);
        let _ = pools.vhost_active(0);
        let _ = crate::status::render(&snap, &crate::status::parse_query(None));
        let _ = crate::status::prometheus(&snap);
    }
}
