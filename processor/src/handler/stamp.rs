//! A file's stamp: the `stat` fields that any change to a name in a directory, or to a
//! file's content, mode or owner, changes. The `.htaccess` cache (`access/cache.rs`)
//! and the hot-file cache (`static_files/hot.rs`) revalidate by comparing stamps, and
//! trust one only once its timestamps are [`SETTLE`] old (a change within the same
//! clock tick would keep them).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::FileStat;

/// How old a timestamp must be before it is trusted to show every change.
pub const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(st: &FileStat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// Both timestamps at least [`SETTLE`] before `now` (none in the future).
    pub fn settled(&self, now: SystemTime) -> bool {
        let newest = self.mtime.0.max(self.ctime.0);
        let Ok(newest) = u64::try_from(newest) else {
            return true;
        };
        UNIX_EPOCH
            .checked_add(Duration::from_secs(newest).saturating_add(SETTLE))
            .is_some_and(|t| t < now)
    }

    /// The file type bits of its mode.
    pub fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
}
