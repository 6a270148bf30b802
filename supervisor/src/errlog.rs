//! The error log: stderr by default (journald-friendly); with `error_log` set, the
//! supervisor opens the file (the safe way: no symlink followed, regular file only)
//! and puts it on fd 2 before starting any child, and SIGUSR1 reopens it and hands the
//! new fd to every child.

use std::os::fd::OwnedFd;

use conf::Config;

use crate::SupervisorError;

/// Opens `error_log` (if set) and installs it as stderr. Returns the file's fd.
pub fn install(cfg: &Config) -> Result<Option<OwnedFd>, SupervisorError> {
    let Some(path) = &cfg.server.error_log else {
        return Ok(None);
    };
    let fd = OwnedFd::from(crate::logs::open("error log", path)?);
    common::fds::install_stderr(&fd)
        .map_err(|e| SupervisorError::Runtime(std::io::Error::other(e.to_string())))?;
    Ok(Some(fd))
}
