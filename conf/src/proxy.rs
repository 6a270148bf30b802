//! `[server] proxy_protocol` and `proxy_protocol_from`: which listeners expect a PROXY
//! protocol header (v1 or v2, HAProxy's `send-proxy`/`send-proxy-v2`) before the
//! request or the ClientHello, and from which address blocks.
//!
//! `proxy_protocol = true` means every listener (`listen` and `listen_tls`); a list of
//! addresses names the listeners that expect it, each one of `listen` or `listen_tls`
//! as written there. `proxy_protocol_from` is required when any listener expects it
//! and refused when none does: a header from anywhere else would let any client pick
//! its own address.

use std::net::SocketAddr;

use crate::error::Report;
use crate::model::Cidr;
use crate::status::parse_cidr;
use crate::tree::{Entry, Table};

/// Keys of `[server]` read here.
pub(crate) const KEYS: &[&str] = &["proxy_protocol", "proxy_protocol_from"];

/// `(proxy_protocol, proxy_protocol_from)`: the listener addresses (as written in
/// `listen` / `listen_tls`) that expect a header, and who may send one. `listen` is
/// `None` when it was invalid (so names cannot be checked against it).
pub(crate) fn proxy(
    t: &Table,
    r: &mut Report,
    listen: Option<&[SocketAddr]>,
    listen_tls: Option<&[SocketAddr]>,
) -> Option<(Vec<SocketAddr>, Vec<Cidr>)> {
    let all: Option<Vec<SocketAddr>> = match (listen, listen_tls) {
        (Some(l), Some(t)) => Some(l.iter().chain(t).copied().collect()),
        _ => None,
    };
    let on = match t.get("proxy_protocol") {
        None => Some(Vec::new()),
        Some(e) if e.is_bool() => e.bool(r).map(|on| {
            if on {
                all.clone().unwrap_or_default()
            } else {
                Vec::new()
            }
        }),
        Some(e) => listeners(&e, r, all.as_deref()),
    };
    let from = match t.get("proxy_protocol_from") {
        None => Some(None),
        Some(e) => cidrs(&e, r).map(Some),
    };
    let (on, from) = (on?, from?);
    match from {
        None if !on.is_empty() => {
            let message = "required when proxy_protocol is on: the address blocks of the proxies \
                           that send the header, e.g. [\"10.0.0.0/8\", \"127.0.0.1/32\"]";
            // Reported at the line that turned it on.
            let span = t.get("proxy_protocol").map_or(t.span.clone(), |e| e.span);
            r.error(&span, &t.key_path("proxy_protocol_from"), message);
            None
        }
        Some(_) if on.is_empty() => {
            if let Some(e) = t.get("proxy_protocol_from") {
                e.error(r, "no listener reads a PROXY header: set proxy_protocol (true, or the listeners that expect it)");
            }
            None
        }
        from => Some((on, from.unwrap_or_default())),
    }
}

/// A list of listener addresses, each in `listen` or `listen_tls`, none twice.
fn listeners(entry: &Entry, r: &mut Report, all: Option<&[SocketAddr]>) -> Option<Vec<SocketAddr>> {
    let elements = entry.array(r)?;
    if elements.is_empty() {
        entry.error(
            r,
            "expected true, false, or a non-empty list of listener addresses",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for e in &elements {
        let Some(s) = e.str(r) else {
            ok = false;
            continue;
        };
        match s.parse::<SocketAddr>() {
            Err(_) => {
                e.error(
                    r,
                    format!("invalid socket address '{s}' (expected ip:port as in listen)"),
                );
                ok = false;
            }
            Ok(a) if out.contains(&a) => {
                e.error(r, format!("address '{s}' is listed twice"));
                ok = false;
            }
            Ok(a) if all.is_some_and(|all| !all.contains(&a)) => {
                e.error(r, format!("address '{s}' is not in listen or listen_tls"));
                ok = false;
            }
            Ok(a) => out.push(a),
        }
    }
    ok.then_some(out)
}

/// A non-empty list of address blocks.
fn cidrs(entry: &Entry, r: &mut Report) -> Option<Vec<Cidr>> {
    let elements = entry.array(r)?;
    if elements.is_empty() {
        entry.error(r, "must list at least one address block of a proxy");
        return None;
    }
    let blocks: Vec<Option<Cidr>> = elements
        .iter()
        .map(|e| {
            let s = e.str(r)?;
            match parse_cidr(s) {
                Ok(c) => Some(c),
                Err(problem) => {
                    e.error(r, format!("invalid address block '{s}': {problem}"));
                    None
                }
            }
        })
        .collect();
    blocks.into_iter().collect()
}
