//! Rules that keep tenants apart, checked once every section is valid:
//!
//! - an environment may not run as the multiplexers' uid or gid (`server.user`,
//!   `server.group`): it could signal every multiplexer (SIGSTOP them all);
//! - two environments with one uid can signal (and ptrace) each other's processors:
//!   a warning naming both;
//! - a host name of one environment that a `*.` wildcard of another environment also
//!   matches: a warning naming both vhosts and environments, since which one a host
//!   reaches depends on the routing order (exact names first, then the first wildcard).

use common::vhost::names_overlap;

use crate::error::{Report, Span};
use crate::model::{Environment, Server, Vhost};
use crate::tree::{Entry, Table};

/// The entry at `environments.NAME.key`, for its line.
fn env_entry<'a>(root: &Table<'a>, r: &mut Report, name: &str, key: &str) -> Option<Entry<'a>> {
    root.get("environments")?.table(r)?.get(name)?.table(r)?.get(key)
}

/// Applies the rules to the valid environments (in file order, `None` where invalid)
/// and, when every environment and vhost is valid, to the vhosts' names.
pub(crate) fn check(
    root: &Table,
    r: &mut Report,
    server: Option<&Server>,
    all_envs: &[Option<&Environment>],
    vhosts: Option<&[Vhost]>,
) {
    let envs: Vec<&Environment> = all_envs.iter().flatten().copied().collect();
    if let Some(server) = server {
        for env in &envs {
            if env.uid == server.uid {
                if let Some(e) = env_entry(root, r, &env.name, "user") {
                    let message = format!(
                        "uid {} is the multiplexers' (server.user = {:?}): this environment could signal (SIGSTOP) every multiplexer",
                        env.uid, server.user_name
                    );
                    e.error(r, message);
                }
            }
            if env.gid == server.gid {
                if let Some(e) = env_entry(root, r, &env.name, "group") {
                    let message = format!(
                        "gid {} is the multiplexers' (server.group = {:?}): an environment must not share the multiplexers' group",
                        env.gid, server.group_name
                    );
                    e.error(r, message);
                }
            }
        }
    }
    // The first environment of each uid, found once: linear in the environments.
    let mut first_of: std::collections::HashMap<u32, &Environment> = std::collections::HashMap::new();
    for env in &envs {
        let first = *first_of.entry(env.uid).or_insert(env);
        if std::ptr::eq(first, *env) {
            continue;
        }
        if let Some(e) = env_entry(root, r, &env.name, "user") {
            let message = format!(
                "environments '{}' and '{}' both run as uid {}: each can signal and ptrace the other's processors",
                first.name, env.name, env.uid
            );
            r.warn(&e.span, &e.path, message);
        }
    }
    if let (Some(vhosts), true) = (vhosts, envs.len() == all_envs.len()) {
        overlaps(root, r, &envs, vhosts);
    }
}

/// One host name of a vhost, where it is written.
struct Name {
    vhost: usize,
    env: usize,
    name: String,
    span: Span,
    path: String,
}

/// Every server_name and alias with its place in the file.
fn names(root: &Table, r: &mut Report, vhosts: &[Vhost]) -> Vec<Name> {
    let Some(tables) = root.get("vhosts").and_then(|e| e.tables(r)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (vhost, (t, v)) in tables.iter().zip(vhosts).enumerate() {
        let mut entries: Vec<Entry> = t.get("server_name").into_iter().collect();
        if let Some(aliases) = t.get("server_alias").and_then(|e| e.array(r)) {
            entries.extend(aliases);
        }
        let written = std::iter::once(&v.server_name).chain(&v.server_alias);
        for (e, name) in entries.into_iter().zip(written) {
            out.push(Name {
                vhost,
                env: v.environment,
                name: name.clone(),
                span: e.span.clone(),
                path: e.path.clone(),
            });
        }
    }
    out
}

/// Warns once per pair of names of different environments that can match one host.
/// Only a wildcard can overlap another name (equal names are already an error), so
/// the work is wildcards × names, not names².
fn overlaps(root: &Table, r: &mut Report, envs: &[&Environment], vhosts: &[Vhost]) {
    let names = names(root, r, vhosts);
    let env_name = |i: usize| vhosts_env_name(envs, vhosts, i);
    for (wi, w) in names.iter().enumerate() {
        if !w.name.starts_with("*.") {
            continue;
        }
        for (oi, o) in names.iter().enumerate() {
            // Two wildcards: once, from the first of them.
            let both_wild = o.name.starts_with("*.");
            if o.env == w.env || (both_wild && oi <= wi) || !names_overlap(&w.name, &o.name) {
                continue;
            }
            // Reported at the later of the two in the file.
            let (early, late) = if r.line(&w.span) <= r.line(&o.span) {
                (w, o)
            } else {
                (o, w)
            };
            let message = format!(
                "'{}' (vhosts[{}], environment '{}') and '{}' (vhosts[{}], environment '{}', line {}) can match the same host: exact names win, then the first wildcard",
                late.name,
                late.vhost,
                env_name(late.vhost),
                early.name,
                early.vhost,
                env_name(early.vhost),
                r.line(&early.span)
            );
            r.warn(&late.span, &late.path, message);
        }
    }
}

fn vhosts_env_name<'a>(envs: &[&'a Environment], vhosts: &[Vhost], vhost: usize) -> &'a str {
    vhosts
        .get(vhost)
        .and_then(|v| envs.get(v.environment))
        .map_or("?", |e| e.name.as_str())
}
