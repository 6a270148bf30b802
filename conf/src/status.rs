//! `[status]`: the status page's path, who may read it (local users by uid, other
//! clients by address), and the metrics listener.

use std::net::{IpAddr, SocketAddr};

use crate::error::Report;
use crate::ids::{self, Kind};
use crate::model::{Cidr, Status};
use crate::tree::{Entry, Table};

const STATUS_KEYS: &[&str] = &["path", "allow", "allow_users", "metrics_listen"];

/// `[status]`, its defaults when absent. `env_uids` are the environments' (name, uid):
/// none of them may be in `allow_users`.
pub(crate) fn status(root: &Table, r: &mut Report, env_uids: &[(&str, u32)]) -> Option<Status> {
    let defaults = Status::default();
    let Some(entry) = root.get("status") else {
        return Some(defaults);
    };
    let t = entry.table(r)?;
    t.check_keys(r, STATUS_KEYS);
    let path = match t.get("path") {
        Some(e) => status_path(&e, r),
        None => Some(defaults.path),
    };
    let allow = match t.get("allow") {
        Some(e) => allow(&e, r),
        None => Some(defaults.allow),
    };
    let allow_users = match t.get("allow_users") {
        Some(e) => allow_users(&e, r, env_uids),
        None => Some(defaults.allow_users),
    };
    let metrics_listen = match t.get("metrics_listen") {
        Some(e) => metrics_listen(&e, r),
        None => Some(defaults.metrics_listen),
    };
    Some(Status {
        path: path?,
        allow: allow?,
        allow_users: allow_users?,
        metrics_listen: metrics_listen?,
    })
}

/// An absolute request path without a query, a fragment or whitespace.
fn status_path(entry: &Entry, r: &mut Report) -> Option<String> {
    let path = entry.str(r)?;
    let problem = if !path.starts_with('/') {
        Some("must start with '/'")
    } else if path.contains(['?', '#']) {
        Some("must not contain '?' or '#'")
    } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain spaces or control characters")
    } else {
        None
    };
    if let Some(problem) = problem {
        entry.error(r, format!("{problem}, got {path:?}"));
        return None;
    }
    Some(path.to_string())
}

fn allow(entry: &Entry, r: &mut Report) -> Option<Vec<Cidr>> {
    let elements = entry.array(r)?;
    let blocks: Vec<Option<Cidr>> = elements
        .iter()
        .map(|e| {
            let s = e.str(r)?;
            match parse_cidr(s) {
                Ok(cidr) => Some(cidr),
                Err(problem) => {
                    e.error(r, format!("invalid address block '{s}': {problem}"));
                    None
                }
            }
        })
        .collect();
    blocks.into_iter().collect()
}

/// Users (names or ids) whose local connections may read the page; never an
/// environment's uid, whose code is the tenant's.
fn allow_users(entry: &Entry, r: &mut Report, env_uids: &[(&str, u32)]) -> Option<Vec<u32>> {
    let elements = entry.array(r)?;
    let uids: Vec<Option<u32>> = elements
        .iter()
        .map(|e| {
            let (uid, written) = ids::resolve(e, r, Kind::User)?;
            if let Some((env, _)) = env_uids.iter().find(|(_, u)| *u == uid) {
                let message = format!(
                    "user '{written}' (uid {uid}) runs environment '{env}'; \
                     a tenant's processes must not read the status page or the metrics"
                );
                e.error(r, message);
                return None;
            }
            Some(uid)
        })
        .collect();
    uids.into_iter().collect()
}

/// `ip/prefix`, or a bare address meaning `/32` or `/128`. Host bits must be clear.
pub(crate) fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| {
        "expected an IP address or address/prefix, e.g. \"10.0.0.0/8\" or \"::1\"".to_string()
    })?;
    let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= bits && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("prefix length must be between 0 and {bits}")),
        },
    };
    let network = mask(addr, prefix);
    if network != addr {
        return Err(format!("host bits are set; did you mean '{network}/{prefix}'?"));
    }
    Ok(Cidr { addr, prefix })
}

/// `addr` with every bit after the first `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// A socket address, or `"off"`.
fn metrics_listen(entry: &Entry, r: &mut Report) -> Option<Option<SocketAddr>> {
    let s = entry.str(r)?;
    if s == "off" {
        return Some(None);
    }
    match s.parse::<SocketAddr>() {
        Ok(addr) => Some(Some(addr)),
        Err(_) => {
            let message = format!(
                "invalid socket address '{s}' (expected ip:port, e.g. \"127.0.0.1:9180\", or \"off\")"
            );
            entry.error(r, message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = parse_cidr("10.1.0.0/16").unwrap();
        assert_eq!((c.addr, c.prefix), ("10.1.0.0".parse().unwrap(), 16));
        assert_eq!(parse_cidr("192.0.2.7").unwrap().prefix, 32);
        assert_eq!(parse_cidr("::1").unwrap().prefix, 128);
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().prefix, 0);
        assert_eq!(parse_cidr("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        let e = parse_cidr("10.1.2.3/8").unwrap_err();
        assert!(e.contains("did you mean '10.0.0.0/8'"), "{e}");
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "localhost",
            "10.0.0/8",
            "",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
