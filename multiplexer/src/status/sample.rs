//! A hand-built [`Snapshot`] for the renderers' tests: two environments ("blog" idle,
//! "shop" busy and dropping), three vhosts, five children (one multiplexer, three
//! processors, one spare), one child in each state.

use crate::status::model::{ChildRow, ChildState, EnvRow, FastcgiRow, Role, Snapshot, TlsRow, VhostRow};

/// 2026-11-23 01:13:34 UTC, the time of the reference `?auto` capture.
pub(crate) const NOW_MS: u64 = 1_795_396_414_000;
/// One hour, two minutes and three seconds of uptime.
pub(crate) const UPTIME_S: u64 = 3723;

fn child(id: usize, role: Role, env: Option<&str>, state: ChildState) -> ChildRow {
    ChildRow {
        id,
        pid: 1000 + id as u32,
        role,
        environment: env.map(str::to_owned),
        state,
        started_ms: NOW_MS - 60_000,
        last_used_ms: NOW_MS - 1000,
        connections: 10 * id as u64,
        requests: 20 * id as u64,
        bytes: 4096 * id as u64,
        active_conns: id as u64 % 3,
        capacity: 64,
        generation: 0,
    }
}

fn env(id: usize, name: &str) -> EnvRow {
    EnvRow {
        id,
        name: name.to_owned(),
        availability: 100,
        processors_alive: 1,
        processors_idle: 1,
        max_processors: 3,
        connections: 0,
        requests: 0,
        bytes: 0,
        active_conns: 0,
        duration_us: 0,
        dropped_saturated: 0,
        dropped_vhost_limit: 0,
        dropped_error: 0,
        handoffs: 0,
        handbacks: 0,
        spawns: 1,
        cold_starts: 1,
        cold_start_us: 2500,
        oom_kills: 0,
        pids_max_hits: 0,
        fastcgi: None,
        tls: None,
    }
}

fn vhost(id: usize, name: &str, env: &str, by_class: [u64; 5], histogram: Vec<u64>) -> VhostRow {
    VhostRow {
        id,
        server_name: name.to_owned(),
        environment: env.to_owned(),
        requests_by_class: by_class,
        bytes: by_class.iter().sum::<u64>() * 1500,
        duration_us: by_class.iter().sum::<u64>() * 7_000,
        histogram,
        active_conns: 0,
    }
}

pub(crate) fn snapshot() -> Snapshot {
    let blog = EnvRow {
        connections: 8,
        requests: 10,
        bytes: 15_000,
        duration_us: 70_000,
        ..env(0, "blog")
    };
    let shop = EnvRow {
        availability: 70,
        processors_alive: 2,
        processors_idle: 0,
        max_processors: 4,
        connections: 900,
        requests: 1500,
        bytes: 2_250_000,
        active_conns: 2,
        duration_us: 10_500_000,
        dropped_saturated: 30,
        dropped_vhost_limit: 4,
        dropped_error: 1,
        handoffs: 950,
        handbacks: 50,
        spawns: 6,
        cold_starts: 5,
        cold_start_us: 1_250_000,
        oom_kills: 3,
        pids_max_hits: 7,
        fastcgi: Some(FastcgiRow {
            max_backends: 8,
            running: 3,
            busy: 2,
            idle: 1,
            waiting: 1,
            requests: 1200,
            bad_gateway: 3,
            timeouts: 1,
            starts: 5,
            deaths: 1,
        }),
        tls: Some(TlsRow {
            handshakes: 40,
            resumed: 12,
            alpn_http11: 30,
            alpn_h2: 8,
            failed_timeout: 2,
            failed_server_name: 1,
            failed_error: 5,
            misdirected: 3,
        }),
        ..env(1, "shop")
    };
    Snapshot {
        server_name: "status.example".to_owned(),
        server_version: "bulkhead/0.1.0".to_owned(),
        now_ms: NOW_MS,
        started_ms: NOW_MS - UPTIME_S * 1000,
        generation: 0,
        server_limit: 16,
        max_clients: 150,
        max_multiplexers: 4,
        accepted: 1000,
        children: vec![
            // Out of order on purpose: tables sort by id.
            child(3, Role::Processor, Some("shop"), ChildState::Stopping),
            child(0, Role::Multiplexer, None, ChildState::Ready),
            child(1, Role::Processor, Some("shop"), ChildState::Busy),
            child(2, Role::Processor, Some("blog"), ChildState::Ready),
            child(4, Role::Spare, None, ChildState::Starting),
        ],
        environments: vec![blog, shop],
        vhosts: vec![
            vhost(
                0,
                "blog.example",
                "blog",
                [0, 9, 1, 0, 0],
                vec![5, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            vhost(
                1,
                "shop.example",
                "shop",
                [0, 1000, 100, 50, 50],
                vec![100, 200, 300, 200, 100, 100, 100, 50, 30, 15, 5],
            ),
            vhost(
                2,
                "www.shop.example",
                "shop",
                [0, 300, 0, 0, 0],
                vec![0, 0, 100, 100, 100, 0, 0, 0, 0, 0, 0],
            ),
        ],
    }
}
