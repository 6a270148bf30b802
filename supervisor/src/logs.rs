//! Access logs: opened by the supervisor (as root, so a tenant cannot choose the
//! path), handed to the vhost's environment only, and reopened on SIGUSR1.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use conf::Config;
use thiserror::Error;

/// Why a log could not be opened.
#[derive(Debug, Error)]
#[error("access log {path}: {source}")]
pub struct LogError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// One open file per vhost that has an access log.
#[derive(Default)]
pub struct AccessLogs {
    pub files: HashMap<usize, File>,
}

fn open(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| LogError {
            path: path.to_path_buf(),
            source,
        })
}

impl AccessLogs {
    /// Opens every vhost's access log; all errors are returned, none is fatal to the others.
    pub fn open_all(cfg: &Config) -> (AccessLogs, Vec<LogError>) {
        let mut logs = AccessLogs::default();
        let mut errors = Vec::new();
        for (i, v) in cfg.vhosts.iter().enumerate() {
            if let Some(path) = &v.access_log {
                match open(path) {
                    Ok(f) => {
                        logs.files.insert(i, f);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        (logs, errors)
    }
}
