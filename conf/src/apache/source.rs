//! Where configuration files come from: the file system ([`Files`]) or, in tests and
//! fuzzing, a map in memory. Every read is bounded by the caller's limit.

use std::io::{self, Read};
use std::path::Path;

/// Reading files and listing directories.
pub trait Source {
    /// The bytes of the regular file `path`, at most `limit` of them (more: an error).
    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>>;
    /// The names in directory `path`, each with whether it is a directory.
    fn list(&self, path: &Path) -> io::Result<Vec<(String, bool)>>;
    fn is_dir(&self, path: &Path) -> bool;
    fn exists(&self, path: &Path) -> bool;
}

/// The real file system.
pub struct Files;

impl Source for Files {
    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        let file = std::fs::File::open(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let mut bytes = Vec::new();
        file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
        if bytes.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {limit} bytes"),
            ));
        }
        Ok(bytes)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // A link to a directory counts as one, as httpd follows it.
            let dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
            out.push((name, dir));
        }
        Ok(out)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Files held in memory, by absolute path (tests and fuzzing).
#[cfg(test)]
#[derive(Default)]
pub struct Memory(pub std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>);

#[cfg(test)]
impl Memory {
    pub fn with(files: &[(&str, &str)]) -> Memory {
        Memory(
            files
                .iter()
                .map(|(p, t)| (p.into(), t.as_bytes().to_vec()))
                .collect(),
        )
    }
}

#[cfg(test)]
impl Source for Memory {
    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        match self.0.get(path) {
            Some(b) if b.len() <= limit => Ok(b.clone()),
            Some(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "too large")),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn list(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        let mut out: Vec<(String, bool)> = Vec::new();
        for p in self.0.keys() {
            let Ok(rest) = p.strip_prefix(path) else {
                continue;
            };
            let mut parts = rest.components();
            let Some(first) = parts.next() else { continue };
            let name = first.as_os_str().to_string_lossy().into_owned();
            let dir = parts.next().is_some();
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, dir));
            }
        }
        if out.is_empty() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(out)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.0.keys().any(|p| p != path && p.starts_with(path))
    }

    fn exists(&self, path: &Path) -> bool {
        self.0.contains_key(path) || self.is_dir(path)
    }
}
