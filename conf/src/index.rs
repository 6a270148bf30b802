//! A vhost's `index` (the directory index documents, tried in order: Apache's
//! `DirectoryIndex`) and `fallback` (the URL path that answers a path resolving to
//! nothing: a front controller such as WordPress's `/index.php`).

use crate::cgi::strings;
use crate::error::Report;
use crate::tree::Table;

/// `index` when absent.
pub(crate) const DEFAULT_INDEX: &str = "index.html";

/// `index`: file names (no `/`, not `.` or `..`, no NUL), at least one; `None` when
/// invalid.
pub(crate) fn index(t: &Table, r: &mut Report) -> Option<Vec<String>> {
    if t.get("index").is_none() {
        return Some(vec![DEFAULT_INDEX.to_string()]);
    }
    let names = strings(t, r, "index", |s| {
        let ok = !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0']);
        (!ok).then(|| format!("an index is a file name (no '/', not '.' or '..'), got '{s}'"))
    })?;
    if names.is_empty() {
        if let Some(e) = t.get("index") {
            e.error(r, "index lists at least one file name");
        }
        return None;
    }
    Some(names)
}

/// `fallback`: a decoded URL path starting with `/`, not ending with `/`, without `.`
/// or `..` segments, NUL, `%`, `?` or `#`; `Some(None)` when absent, `None` when invalid.
pub(crate) fn fallback(t: &Table, r: &mut Report) -> Option<Option<String>> {
    let Some(e) = t.get("fallback") else {
        return Some(None);
    };
    let s = e.str(r)?;
    let ok = s.len() > 1
        && s.starts_with('/')
        && !s.ends_with('/')
        && !s.contains(['\0', '%', '?', '#', '\\'])
        && !s.split('/').any(|seg| seg == "." || seg == "..");
    if !ok {
        e.error(
            r,
            format!("a fallback is a URL path of a file, starting with '/' (no trailing '/', no '.' or '..' segments, '%', '?' or '#'), got '{s}'"),
        );
        return None;
    }
    Some(Some(s.to_string()))
}
