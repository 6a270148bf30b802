//! Access logs: opened by the supervisor (as root, so a tenant cannot choose the
//! path), handed to the vhost's environment only, and reopened on SIGUSR1. Every open
//! goes through [`crate::safe_open`]: a symlink, FIFO, device or hard link where the
//! log should be is refused, never followed or written.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use conf::Config;
use thiserror::Error;

use crate::safe_open::{self, SafeOpenError};

/// Why a log could not be opened.
#[derive(Debug, Error)]
#[error("{what} {path}: {source}")]
pub struct LogError {
    /// "access log" or "error log".
    pub what: &'static str,
    pub path: PathBuf,
    pub source: SafeOpenError,
}

/// One open file per vhost that has an access log.
#[derive(Default)]
pub struct AccessLogs {
    pub files: HashMap<usize, File>,
}

/// Opens `path` for appending the safe way; `what` names the log in the error.
pub(crate) fn open(what: &'static str, path: &std::path::Path) -> Result<File, LogError> {
    safe_open::open_append(path).map_err(|source| LogError {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl AccessLogs {
    /// Opens every vhost's access log; all errors are returned, none is fatal to the
    /// others. A vhost whose log was refused logs nothing (its error is returned).
    pub fn open_all(cfg: &Config) -> (AccessLogs, Vec<LogError>) {
        let mut logs = AccessLogs::default();
        let mut errors = Vec::new();
        for (i, v) in cfg.vhosts.iter().enumerate() {
            if let Some(path) = &v.access_log {
                match open("access log", path) {
                    Ok(f) => {
                        logs.files.insert(i, f);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        (logs, errors)
    }

    /// Keeps `old`'s file for every vhost (of the same configuration) whose log could
    /// not be reopened, so a refused reopen leaves that vhost logging where it did.
    /// Returns the vhosts kept.
    pub fn keep_from(&mut self, old: AccessLogs) -> Vec<usize> {
        let mut kept = Vec::new();
        for (i, f) in old.files {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.files.entry(i) {
                slot.insert(f);
                kept.push(i);
            }
        }
        kept
    }
}
