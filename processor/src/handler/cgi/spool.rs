//! A request body for a script, spooled to an unlinked temporary file (`O_TMPFILE` in
//! `/tmp`, inside the chroot when there is one) so that CONTENT_LENGTH is known for a
//! chunked body too, the script gets a file on stdin that it may read at its own pace,
//! and the body never sits in memory. Bounded by the vhost's `limit_request_body`.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use thiserror::Error;

/// Where bodies are spooled (the processor's own view: inside its chroot).
const DIR: &str = "/tmp";

/// Why a body could not be spooled.
#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("opening a temporary file in {DIR}: {0}")]
    Open(nix::errno::Errno),
    #[error("writing the request body to its temporary file: {0}")]
    Write(io::Error),
    #[error("request body larger than {0} bytes (limit_request_body)")]
    TooLarge(u64),
}

/// A body being written.
#[derive(Debug)]
pub struct Spool {
    file: File,
    len: u64,
    /// 0: none of its own.
    limit: u64,
}

impl Spool {
    /// A spool for a body of at most `limit` bytes (0: no limit of its own).
    pub fn new(limit: u64) -> Result<Self, SpoolError> {
        let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let fd = open(DIR, flags, Mode::from_bits_truncate(0o600)).map_err(SpoolError::Open)?;
        // SAFETY: `fd` was just returned by a successful open and is owned by no one else.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(Self { file, len: 0, limit })
    }

    /// Appends `data` (a blocking write to a local file, like the static handler's reads).
    pub fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        self.len += data.len() as u64;
        if self.limit != 0 && self.len > self.limit {
            return Err(SpoolError::TooLarge(self.limit));
        }
        self.file.write_all(data).map_err(SpoolError::Write)
    }

    /// The file rewound to its start, and its length.
    pub fn finish(mut self) -> Result<(File, u64), SpoolError> {
        self.file.seek(SeekFrom::Start(0)).map_err(SpoolError::Write)?;
        Ok((self.file, self.len))
    }
}
