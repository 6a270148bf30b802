//! A resolved file as a response: its validators (ETag, Last-Modified), conditional
//! requests (RFC 9110 §13), one byte range (RFC 9110 §14) and its media type.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::FileStat;
use thiserror::Error;

use super::hot;
use super::resolve::{self, Found, Resolved};
use super::target::PathTarget;
use crate::handler::{access, Body, Headers, Method, Request, Response, Site};

/// A Range header that cannot be satisfied.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("range {0:?} not satisfiable for {1} bytes")]
    Unsatisfiable(String, u64),
}

/// The validators of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// Strong: `"<inode>-<size>-<mtime ns>"`, in hex.
    pub etag: String,
    /// Whole seconds, never later than now.
    pub last_modified: Option<SystemTime>,
}

impl Validators {
    pub fn of(st: &FileStat) -> Self {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let secs = u64::try_from(st.st_mtime).unwrap_or(0);
        let nanos = u64::try_from(st.st_mtime_nsec).unwrap_or(0);
        let mtime_ns = secs.saturating_mul(1_000_000_000).saturating_add(nanos);
        let etag = format!("\"{:x}-{:x}-{:x}\"", st.st_ino, size, mtime_ns);
        // Capped at now, which also keeps it within what httpdate can format.
        let now = whole_seconds(SystemTime::now());
        let last_modified = u64::try_from(st.st_mtime).ok().map(|s| {
            UNIX_EPOCH
                .checked_add(Duration::from_secs(s))
                .map_or(now, |t| t.min(now))
        });
        Self { etag, last_modified }
    }
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The response to GET or HEAD for `target` in `site`: the access rules first
/// ([`access::check_path`], then the `.htaccess` files during resolution). A small
/// file's answer comes from [`hot`] while it is what the resolution would give.
pub fn respond(site: &Site, target: &PathTarget, req: &Request) -> Response {
    if let Err(e) = access::check_path(&site.deny, &target.segments) {
        return Response::error(e.status(), e);
    }
    if let Some(cached) = hot::lookup(site, target) {
        return serve_hot(cached, req);
    }
    let root = &site.document_root;
    let found = match resolve::resolve(root, &target.segments, target.trailing_slash, &site.index) {
        Ok(Resolved::File(found)) => found,
        Ok(Resolved::Redirect) => return redirect(target),
        Err(e @ resolve::ResolveError::NotFound(_)) => match fallback(site) {
            // A fallback is never cached: its answer stands for any missing path.
            Some(found) => return serve_found(found, req),
            None => return Response::error(e.status(), e),
        },
        Err(e) => return Response::error(e.status(), e),
    };
    let now = SystemTime::now();
    if hot::may_cache(&found, now) {
        match hot::load(site, target, &found, now) {
            Ok(cached) => return serve_hot(cached, req),
            Err(e) => tracing::trace!(path = %target.raw_path, "not cached: {e}"),
        }
    }
    serve_found(found, req)
}

/// The vhost's `fallback` as a static file, for a path that resolved to nothing (never
/// for a denial); a fallback that is a script is `cgi::select`'s, never sent as a file.
fn fallback(site: &Site) -> Option<Found> {
    let f = site.fallback.as_ref()?;
    if site.cgi.may_match(&f.segments) || access::check_path(&site.deny, &f.segments).is_err() {
        return None;
    }
    match resolve::resolve(&site.document_root, &f.segments, false, &site.index) {
        Ok(Resolved::File(found)) => Some(found),
        _ => None,
    }
}

fn redirect(target: &PathTarget) -> Response {
    let mut location = format!("{}/", target.raw_path);
    if let Some(q) = &target.query {
        location.push('?');
        location.push_str(q);
    }
    let page = format!(
        "<!DOCTYPE html>\n<html><head><title>301 Moved Permanently</title></head>\
         <body><h1>Moved Permanently</h1><p><a href=\"{}\">here</a></p></body></html>\n",
        location
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
    );
    Response::new(301, Body::Bytes(page.into_bytes()))
        .header("Location", location)
        .header("Content-Type", "text/html; charset=utf-8")
}

/// What a GET or HEAD gets from a file with validators `v` and `size` bytes: the whole
/// file (`Ok(None)`), one range of it (`Ok(Some((first, len)))`), or a response with no
/// part of it (304, 412, 416), whose validator fields `validators` adds.
fn plan(
    req: &Request,
    v: &Validators,
    size: u64,
    validators: impl Fn(Response) -> Response,
) -> Result<Option<(u64, u64)>, Response> {
    if let Some(status) = preconditions(&req.headers, v) {
        return Err(match status {
            304 => validators(Response::new(304, Body::None)),
            _ => Response::error(status, "precondition failed"),
        });
    }
    let range = match (&req.method, &req.headers.range) {
        // Range is defined for GET only (RFC 9110 §14.2); HEAD gets the 200 headers.
        (Method::Get, Some(r)) if if_range_holds(&req.headers, v) => single_range(r, size),
        _ => Ok(None),
    };
    match range {
        Ok(None) => Ok(None),
        Ok(Some((first, last))) => Ok(Some((first, last - first + 1))),
        Err(e) => Err(Response::error(416, &e).header("Content-Range", format!("bytes */{size}"))),
    }
}

/// A 200 or 206's fields after the body's: the media type, ranges, the validators.
fn file_fields(
    reply: Response,
    content_type: String,
    part: Option<(u64, u64, u64)>,
    validators: impl Fn(Response) -> Response,
) -> Response {
    let mut reply = reply
        .header("Content-Type", content_type)
        .header("Accept-Ranges", "bytes");
    if let Some((offset, len, size)) = part {
        reply = reply.header(
            "Content-Range",
            format!("bytes {}-{}/{size}", offset, offset + len - 1),
        );
    }
    validators(reply)
}

fn serve_found(found: Found, req: &Request) -> Response {
    let v = Validators::of(&found.stat);
    let size = u64::try_from(found.stat.st_size).unwrap_or(0);
    let validators = |reply: Response| {
        let reply = reply.header("ETag", v.etag.clone());
        match v.last_modified {
            Some(t) => reply.header("Last-Modified", httpdate::fmt_http_date(t)),
            None => reply,
        }
    };
    let (status, offset, len) = match plan(req, &v, size, validators) {
        Ok(None) => (200, 0, size),
        Ok(Some((offset, len))) => (206, offset, len),
        Err(response) => return response,
    };
    let reply = Response::new(
        status,
        Body::File {
            file: found.file,
            offset,
            len,
        },
    );
    let part = (status == 206).then_some((offset, len, size));
    file_fields(reply, media_type(&found.name), part, validators)
}

/// The same answers as [`serve_found`], from memory: a 200 is the entry itself (its
/// fields ready), anything else is built from the entry's validators.
fn serve_hot(cached: Rc<hot::Hot>, req: &Request) -> Response {
    let v = &cached.validators;
    let size = cached.body.len() as u64;
    let validators = |reply: Response| {
        let reply = reply.header("ETag", v.etag.clone());
        match &cached.last_modified {
            Some(t) => reply.header("Last-Modified", t.clone()),
            None => reply,
        }
    };
    match plan(req, v, size, validators) {
        Ok(None) => Response::new(200, Body::Hot(cached.clone())),
        Ok(Some((offset, len))) => {
            // Both fit: a range lies within the body, which is in memory.
            let part = cached.body[offset as usize..(offset + len) as usize].to_vec();
            let reply = Response::new(206, Body::Bytes(part));
            file_fields(
                reply,
                cached.content_type.clone(),
                Some((offset, len, size)),
                validators,
            )
        }
        Err(response) => response,
    }
}

pub(super) fn media_type(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    let ext = std::path::Path::new(name.as_ref())
        .extension()
        .and_then(|e| e.to_str());
    match ext.and_then(|e| mime_guess::from_ext(e).first_raw()) {
        Some(t) if t.starts_with("text/") => format!("{t}; charset=utf-8"),
        Some(t) => t.to_owned(),
        None => "application/octet-stream".to_owned(),
    }
}

/// RFC 9110 §13.2.2 steps 1–4 for GET/HEAD: `Some(412)` or `Some(304)` to stop.
fn preconditions(h: &Headers, v: &Validators) -> Option<u16> {
    if let Some(list) = &h.if_match {
        if !etag_list_matches(list, &v.etag, true) {
            return Some(412);
        }
    } else if let (Some(date), Some(lm)) = (parse_date(&h.if_unmodified_since), v.last_modified) {
        if lm > date {
            return Some(412);
        }
    }
    if let Some(list) = &h.if_none_match {
        if etag_list_matches(list, &v.etag, false) {
            return Some(304);
        }
    } else if let (Some(date), Some(lm)) = (parse_date(&h.if_modified_since), v.last_modified) {
        if lm <= date {
            return Some(304);
        }
    }
    None
}

fn parse_date(v: &Option<String>) -> Option<SystemTime> {
    v.as_deref().and_then(|s| httpdate::parse_http_date(s).ok())
}

/// Does `list` (`*` or comma-separated entity-tags) match `ours`? Strong comparison
/// ignores weak tags; weak comparison ignores the `W/` prefix.
fn etag_list_matches(list: &str, ours: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let weak = rest.starts_with("W/");
        let tag_start = if weak { &rest[2..] } else { rest };
        let Some(body) = tag_start.strip_prefix('"') else {
            return false; // malformed: no match
        };
        let Some(end) = body.find('"') else {
            return false;
        };
        let tag = &tag_start[..end + 2];
        if tag == ours && !(strong && weak) {
            return true;
        }
        rest = &body[end + 1..];
    }
}

/// If-Range (RFC 9110 §13.1.5): the range applies only if the validator still matches
/// (strongly: an entity-tag equal to ours, or a date equal to Last-Modified).
fn if_range_holds(h: &Headers, v: &Validators) -> bool {
    let Some(cond) = h.if_range.as_deref() else {
        return true;
    };
    if cond.starts_with('"') || cond.starts_with("W/") {
        return cond == v.etag;
    }
    match (httpdate::parse_http_date(cond), v.last_modified) {
        (Ok(date), Some(lm)) => date == lm,
        _ => false,
    }
}

/// One `bytes=` range as an inclusive `(first, last)`. `Ok(None)`: ignore the header
/// (not bytes, invalid, or several ranges — RFC 9110 §14.2 lets us send 200).
fn single_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, RangeError> {
    let Some((unit, set)) = header.split_once('=') else {
        return Ok(None);
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(None);
    }
    let specs: Vec<&str> = set.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let [spec] = specs.as_slice() else {
        return Ok(None);
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let unsatisfiable = || Err(RangeError::Unsatisfiable((*spec).to_owned(), size));
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => Ok(None),
            Some(0) => unsatisfiable(),
            Some(_) if size == 0 => unsatisfiable(),
            Some(n) => Ok(Some((size - n.min(size), size - 1))),
        },
        (first, "") => match num(first) {
            None => Ok(None),
            Some(f) if f >= size => unsatisfiable(),
            Some(f) => Ok(Some((f, size - 1))),
        },
        (first, last) => match (num(first), num(last)) {
            (Some(f), Some(l)) if f <= l => {
                if f >= size {
                    unsatisfiable()
                } else {
                    Ok(Some((f, l.min(size - 1))))
                }
            }
            _ => Ok(None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(single_range("bytes=0-4", 10), Ok(Some((0, 4))));
        assert_eq!(single_range("Bytes = 5-", 10), Ok(Some((5, 9))));
        assert_eq!(single_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(single_range("bytes=-30", 10), Ok(Some((0, 9))));
        assert_eq!(single_range("bytes=2-100", 10), Ok(Some((2, 9))));
        assert!(single_range("bytes=10-", 10).is_err());
        assert!(single_range("bytes=-0", 10).is_err());
        assert!(single_range("bytes=0-0", 0).is_err());
        assert_eq!(single_range("bytes=0-1,3-4", 10), Ok(None));
        assert_eq!(single_range("bytes=4-1", 10), Ok(None));
        assert_eq!(single_range("items=0-1", 10), Ok(None));
        assert_eq!(single_range("bytes=+1-2", 10), Ok(None));
        assert_eq!(single_range("bytes=99999999999999999999999-", 10), Ok(None));
    }

    #[test]
    fn entity_tags() {
        let ours = "\"1-2-3\"";
        assert!(etag_list_matches("\"x\", W/\"1-2-3\"", ours, false));
        assert!(!etag_list_matches("W/\"1-2-3\"", ours, true));
        assert!(etag_list_matches("\"a,b\" ,\"1-2-3\"", ours, true));
        assert!(etag_list_matches(" * ", ours, true));
        assert!(!etag_list_matches("1-2-3", ours, false));
        assert!(!etag_list_matches("\"1-2-3", ours, false));
    }

    #[test]
    fn validators_survive_odd_mtimes() {
        // SAFETY: all-zero is a valid `struct stat`.
        let mut st: FileStat = unsafe { std::mem::zeroed() };
        st.st_mtime = i64::MAX;
        st.st_mtime_nsec = 999_999_999;
        st.st_size = 5;
        let v = Validators::of(&st);
        assert!(v.last_modified.is_some_and(|t| t <= SystemTime::now()));
        st.st_mtime = -5;
        assert_eq!(Validators::of(&st).last_modified, None);
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type(b"index.html"), "text/html; charset=utf-8");
        assert_eq!(media_type(b"a.png"), "image/png");
        assert_eq!(media_type(b"noext"), "application/octet-stream");
    }
}
