//! CGI/1.1 (RFC 3875): which requests run a script ([`select`]), its meta-variables
//! ([`env`]), the request body spooled to an unlinked temporary file ([`spool`]), the
//! script started in its own session with resource limits and killed with its whole
//! process group at `cgi_timeout` ([`spawn`]), and its output's header block turned
//! into a response ([`output`]).
//!
//! A script with one of the environment's FastCGI extensions is chosen here too, by
//! the same rules (index, fallback, access rules), and goes to a backend
//! ([`super::fastcgi`]) instead of being started; it need not be executable. A
//! FastCGI extension wins under a CGI directory as well: the name says what runs it.
//!
//! The processor already runs as the environment's uid (and in its chroot, where the
//! script and its interpreter must exist, and `/tmp` for request bodies). How the
//! request body and the response body travel is the protocol's (`h1/conn/cgi.rs`).

pub mod env;
#[cfg(test)]
mod fuzz;
pub mod output;
pub mod spawn;
pub mod spool;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::access;
use super::fastcgi::FastcgiConf;
use super::static_files::resolve::{self, ResolveError};
use super::static_files::target::{self, PathTarget, Target};
use super::{Fallback, Request, Response, Site};

pub use output::{Answer, Output};
pub use spawn::Running;

/// A site's CGI settings, from its bootstrap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgiConf {
    /// File name extensions (`.cgi`).
    pub extensions: Vec<String>,
    /// URL path prefixes (`/cgi-bin/`) as decoded segments (`["cgi-bin"]`).
    pub dirs: Vec<Vec<Vec<u8>>>,
    /// The script's whole process group is killed after this.
    pub timeout: Duration,
    /// `limit_request_body`: bytes of a body a script is given (413 over it); 0: no
    /// limit of its own (the body decoder's 1 GiB still applies). FastCGI bodies too.
    pub body_limit: u64,
    /// The environment's FastCGI backends, when it has them.
    pub fastcgi: Option<Arc<FastcgiConf>>,
}

impl CgiConf {
    pub fn new(extensions: Vec<String>, dirs: &[String], timeout: Duration, body_limit: u64) -> Self {
        let dirs = dirs
            .iter()
            .map(|d| {
                d.split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.as_bytes().to_vec())
                    .collect()
            })
            .collect();
        Self {
            extensions,
            dirs,
            timeout,
            body_limit,
            fastcgi: None,
        }
    }

    /// With the environment's FastCGI backends.
    pub fn with_fastcgi(mut self, fastcgi: Option<Arc<FastcgiConf>>) -> Self {
        self.fastcgi = fastcgi;
        self
    }

    /// No request of the site runs a script: the static path never looks further.
    pub fn is_off(&self) -> bool {
        self.extensions.is_empty()
            && self.dirs.is_empty()
            && self.fastcgi.as_ref().is_none_or(|f| f.extensions.is_empty())
    }

    /// A CGI or a FastCGI extension.
    pub fn has_extension(&self, name: &[u8]) -> bool {
        self.extensions
            .iter()
            .any(|e| name.len() > e.len() && name.ends_with(e.as_bytes()))
            || self.fastcgi_for(name).is_some()
    }

    /// The backends that run a file called `name`, if they do.
    pub fn fastcgi_for(&self, name: &[u8]) -> Option<&Arc<FastcgiConf>> {
        self.fastcgi.as_ref().filter(|f| f.has_extension(name))
    }

    fn in_dir(&self, segments: &[Vec<u8>]) -> Option<usize> {
        self.dirs
            .iter()
            .find(|d| segments.len() > d.len() && segments.starts_with(d))
            .map(Vec::len)
    }

    /// Whether `segments` could name a script, without a system call: a segment with a
    /// CGI extension, or a path under a CGI directory.
    pub fn may_match(&self, segments: &[Vec<u8>]) -> bool {
        self.in_dir(segments).is_some() || segments.iter().any(|s| self.has_extension(s))
    }
}

/// A script a request runs.
#[derive(Debug)]
pub struct Script {
    /// The target it was found from (query, raw path, trailing slash).
    pub target: PathTarget,
    /// How many of the target's segments name the script; the rest is PATH_INFO.
    pub script_segments: usize,
    /// The file as this process sees it (SCRIPT_FILENAME).
    pub filename: PathBuf,
    /// Its directory: the script's working directory.
    pub dir: PathBuf,
    /// The backends that run it; `None`: a CGI script, started by us.
    pub fastcgi: Option<Arc<FastcgiConf>>,
}

/// Whether `req` could run a script of `site` (no system call): the one-shot path
/// leaves those to the connection loop.
pub fn may_match(site: &Site, req: &Request) -> bool {
    if site.cgi.is_off() {
        return false;
    }
    match target::parse(&req.target) {
        Ok(Target::Path(p)) => {
            site.cgi.may_match(&p.segments)
                || (is_dir(&p) && index_runs(site))
                || fallback_runs(site).is_some()
        }
        _ => false,
    }
}

/// A target naming a directory (`/` or a trailing slash).
fn is_dir(target: &PathTarget) -> bool {
    target.trailing_slash || target.segments.is_empty()
}

/// Whether one of the site's `index` names is a script (by extension).
fn index_runs(site: &Site) -> bool {
    site.index.iter().any(|n| site.cgi.has_extension(n.as_bytes()))
}

/// The site's `fallback`, when it is a script.
fn fallback_runs(site: &Site) -> Option<&Fallback> {
    site.fallback.as_ref().filter(|f| site.cgi.may_match(&f.segments))
}

/// The script `req` runs, if it runs one: `None` for a static file; `Some(Err)` for a
/// script that cannot run (not executable: 403; not found under a CGI directory: 404).
/// A directory whose index document is a script runs it; a path that resolves to
/// nothing runs the `fallback` when that is a script (never a denied path).
pub fn select(site: &Site, req: &Request) -> Option<Result<Script, Response>> {
    let cgi = &site.cgi;
    let Ok(Target::Path(target)) = target::parse(&req.target) else {
        return None;
    };
    let dir_index = is_dir(&target) && index_runs(site);
    let fallback = fallback_runs(site);
    if !cgi.may_match(&target.segments) && !dir_index && fallback.is_none() {
        return None;
    }
    // The same path rules as a static file: `.ht*` names and the vhost's `deny`.
    if let Err(e) = access::check_path(&site.deny, &target.segments) {
        return Some(Err(Response::error(e.status(), e)));
    }
    let target = if cgi.may_match(&target.segments) {
        match by_path(site, target) {
            Ok(chosen) => return chosen,
            Err(_) if !dir_index && fallback.is_none() => return None,
            Err(target) => target,
        }
    } else {
        target
    };
    // Neither a script by its path nor a CGI directory's: what does the path resolve to?
    let root = &site.document_root;
    match resolve::resolve(root, &target.segments, target.trailing_slash, &site.index) {
        Ok(resolve::Resolved::File(found)) if is_dir(&target) && cgi.has_extension(&found.name) => {
            // Apache's `DirectoryIndex index.cgi`: SCRIPT_NAME is the index's path.
            let mut segments = target.segments.clone();
            segments.push(found.name.clone());
            let n = segments.len();
            let script_target = PathTarget {
                raw_path: target.raw_path,
                query: target.query,
                segments,
                trailing_slash: false,
            };
            Some(script(site, script_target, n, &found.stat, &found.name))
        }
        Err(ResolveError::NotFound(_)) => {
            let f = fallback?;
            let segments = f.segments.clone();
            let (found, n) = match resolve::resolve_script(root, &segments) {
                Ok((found, n)) if n == segments.len() => (found, n),
                Ok(_) => {
                    return Some(Err(Response::error(
                        404,
                        format!("fallback {} names no file", f.path),
                    )))
                }
                Err(e) => return Some(Err(Response::error(e.status(), e))),
            };
            let script_target = PathTarget {
                raw_path: target.raw_path,
                query: target.query,
                segments,
                trailing_slash: false,
            };
            Some(script(site, script_target, n, &found.stat, &found.name))
        }
        Err(e) if dir_index => Some(Err(Response::error(e.status(), e))),
        _ => None,
    }
}

/// A target that may name a script by its path (extension or CGI directory): the
/// answer, or the target back when it resolved to nothing by extension (the static
/// handler's, or the fallback's).
fn by_path(site: &Site, target: PathTarget) -> Result<Option<Result<Script, Response>>, PathTarget> {
    let cgi = &site.cgi;
    let under_dir = cgi.in_dir(&target.segments);
    let (found, n) = match resolve::resolve_script(&site.document_root, &target.segments) {
        Ok(found) => found,
        // Under a CGI directory every path is the script's to answer (Apache's
        // ScriptAlias); by extension, what does not resolve is the static handler's.
        Err(e) if under_dir.is_some() => return Ok(Some(Err(Response::error(e.status(), e)))),
        Err(ResolveError::NotFound(_)) => return Err(target),
        Err(e) => return Ok(Some(Err(Response::error(e.status(), e)))),
    };
    let is_script = match under_dir {
        Some(dir_len) => n > dir_len,
        None => cgi.has_extension(&found.name),
    };
    if !is_script {
        if under_dir.is_some() {
            return Ok(Some(Err(Response::error(
                403,
                "a CGI directory's prefix names a file, not a directory of scripts",
            ))));
        }
        return Ok(None);
    }
    Ok(Some(script(site, target, n, &found.stat, &found.name)))
}

/// The script named by the first `n` segments of `target`, its stat `stat` and name `name`.
fn script(
    site: &Site,
    target: PathTarget,
    n: usize,
    stat: &nix::sys::stat::FileStat,
    name: &[u8],
) -> Result<Script, Response> {
    let mut filename = site.document_root.clone();
    for seg in &target.segments[..n] {
        filename.push(OsStr::from_bytes(seg));
    }
    let fastcgi = site.cgi.fastcgi_for(name).cloned();
    if fastcgi.is_none() && stat.st_mode & 0o111 == 0 {
        let reason = format!("{}: CGI script is not executable", filename.display());
        return Err(Response::error(403, reason));
    }
    let dir = filename
        .parent()
        .map_or_else(|| site.document_root.clone(), PathBuf::from);
    Ok(Script {
        target,
        script_segments: n,
        filename,
        dir,
        fastcgi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<Vec<u8>> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn matching_without_syscalls() {
        let c = CgiConf::new(
            vec![".cgi".into()],
            &["/cgi-bin/".into()],
            Duration::from_secs(1),
            0,
        );
        assert!(c.may_match(&segs("/a.cgi")));
        assert!(c.may_match(&segs("/a.cgi/extra/path")));
        assert!(c.may_match(&segs("/cgi-bin/x")));
        assert!(!c.may_match(&segs("/cgi-bin/")));
        assert!(!c.may_match(&segs("/.cgi")));
        assert!(!c.may_match(&segs("/a.txt")));
        assert!(!c.may_match(&segs("/cgi-binx/y")));
        assert!(CgiConf::default().is_off());
    }
}
