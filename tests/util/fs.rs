//! Files the tests serve: a directory per test (named after it, every test uid may
//! traverse it), files written with an owner and a mode, and the two standard sites.

use std::path::{Path, PathBuf};

use super::{ALICE, BOB};

/// A temp dir for one test, `bulkhead-<test>-XXXX`, mode 0755; removed on drop.
pub struct Dir(tempfile::TempDir);

impl Dir {
    /// A fresh directory whose name starts with the test's name.
    pub fn new(test: &str) -> Dir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bulkhead-{test}-"))
            .tempdir()
            .unwrap();
        chmod(dir.path(), 0o755);
        Dir(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Owner and group of `p` (not following a link).
pub fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

/// Writes `content` at `dir/rel` (creating parents), owned by `uid`, with `mode`.
pub fn put(dir: &Path, rel: &str, content: &[u8], uid: u32, mode: u32) -> PathBuf {
    let p = dir.join(rel);
    let mut d = p.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&d).unwrap();
    while d.starts_with(dir) && d != dir {
        chown(&d, uid);
        chmod(&d, 0o755);
        d = d.parent().unwrap().to_path_buf();
    }
    std::fs::write(&p, content).unwrap();
    chown(&p, uid);
    chmod(&p, mode);
    p
}

/// A sparse file of `len` bytes at `dir/rel`, owned by `uid`, with `mode`.
pub fn sparse_file(dir: &Path, rel: &str, len: u64, uid: u32, mode: u32) {
    let p = put(dir, rel, b"", uid, mode);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The two standard sites: `alice/index.html` ("alice home", alice's) and
/// `bob/index.html` ("bob home", bob's), both with `mode`.
pub fn sites(w: &Path, mode: u32) {
    put(w, "alice/index.html", b"alice home", ALICE, mode);
    put(w, "bob/index.html", b"bob home", BOB, mode);
}

/// A symbolic link at `link` to `target`, owned by `uid`.
pub fn symlink_owned(target: &Path, link: &Path, uid: u32) {
    std::os::unix::fs::symlink(target, link).unwrap();
    chown(link, uid);
}

/// `w/logs`, created (root's, 0755: where `check` lets root open access logs).
pub fn log_dir(w: &Path) -> PathBuf {
    let d = w.join("logs");
    std::fs::create_dir(&d).unwrap();
    d
}
