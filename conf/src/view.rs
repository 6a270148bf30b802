//! The private view of an environment: `private_view` (in `[server]` as the default and
//! in every `[environments.NAME]`) and `bind_ro`, the host paths an environment's view
//! shows read-only besides the system's programs and libraries.
//!
//! Every `bind_ro` path is bound by root, so it must be one only root can change: an
//! existing directory whose chain from `/` is root's and writable by no one else (the
//! chroot rule), or a root-owned regular file in such a directory.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::error::Report;
use crate::fsrules;
use crate::tree::Table;

/// `private_view`'s built-in default: on (the supervisor turns it off, with one
/// warning, when it does not run as root).
pub(crate) const DEFAULT: bool = true;

/// `private_view` in `t`, else `default`; `None` when it is not a boolean (reported).
pub(crate) fn flag(t: &Table, r: &mut Report, default: bool) -> Option<bool> {
    match t.get("private_view") {
        None => Some(default),
        Some(e) => e.bool(r),
    }
}

/// `bind_ro = ["/path", ...]`; `None` when one is invalid (each reported).
pub(crate) fn bind_ro(t: &Table, r: &mut Report) -> Option<Vec<PathBuf>> {
    let Some(e) = t.get("bind_ro") else {
        return Some(Vec::new());
    };
    let mut ok = true;
    let mut paths = Vec::new();
    for item in e.array(r)? {
        let Some(path) = item.abs_path(r) else {
            ok = false;
            continue;
        };
        if let Err(why) = check(&path) {
            item.error(r, why);
            ok = false;
            continue;
        }
        paths.push(path);
    }
    ok.then_some(paths)
}

/// Whether root may bind `path` for a tenant: nobody else can change what it names.
fn check(path: &std::path::Path) -> Result<(), String> {
    if path == std::path::Path::new("/") {
        return Err("bind_ro '/' would show the whole host".to_string());
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("bind_ro '{}': {e}", path.display()))?;
    if meta.is_dir() {
        return fsrules::chroot(path).map_err(|why| format!("bind_ro: {why}"));
    }
    if !meta.is_file() {
        return Err(format!(
            "bind_ro '{}' is neither a directory nor a regular file",
            path.display()
        ));
    }
    if meta.uid() != 0 && meta.uid() != uzers::get_effective_uid() {
        return Err(format!("bind_ro '{}' is not owned by root", path.display()));
    }
    let parent = path.parent().unwrap_or(std::path::Path::new("/"));
    fsrules::chroot(parent).map_err(|why| format!("bind_ro '{}': {why}", path.display()))
}
