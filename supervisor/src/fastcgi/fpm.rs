//! `manager = "php-fpm"`: the pool file a php-fpm master runs on. The supervisor
//! writes it beside the environment's socket, in the same root-owned 0711 directory
//! (`<runtime_dir>/fastcgi/` or `<chroot>/.bulkhead/`), through that directory's fd,
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, given to the environment (its uid and gid, mode 0400:
//! the `env` values are the tenant's business, nobody else's), and unlinks it with
//! its generation, as the socket.
//!
//! Why there: the directory is root's and writable by nobody else, so root writes no
//! path a tenant controls; the master reads it by path (`-y`) at its start and again
//! when it re-execs itself on SIGUSR2, which a memfd's `/proc/self/fd/N` would need
//! `/proc` (absent from a plain jail) and an fd kept open through every exec, and so
//! inherited by every child; a file the tenant writes in its `/tmp` would be left
//! behind by each start (the shim becomes the master: nobody is left to remove it).

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};
use thiserror::Error;

/// Mode of a pool file: its environment reads it, nobody else.
pub const POOL_MODE: u32 = 0o400;

/// Why a pool file could not be written.
#[derive(Debug, Error)]
pub enum FpmError {
    #[error("environment {env}: php-fpm pool file '{at}': {errno}")]
    Io { env: String, at: PathBuf, errno: Errno },
}

/// A written pool file; unlinked on drop.
#[derive(Debug)]
pub struct PoolFile {
    dir: OwnedFd,
    name: String,
    /// Its path as the environment sees it (`-y`).
    pub inner: PathBuf,
    /// The socket's path as the environment sees it (`listen`, `FPM_SOCKETS`).
    pub socket: PathBuf,
}

impl Drop for PoolFile {
    fn drop(&mut self) {
        let _ = unlinkat(
            Some(self.dir.as_raw_fd()),
            self.name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// What the pool file says.
pub struct Pool<'a> {
    /// The environment's name: the pool's.
    pub env: &'a str,
    pub generation: u64,
    /// The socket as the environment sees it.
    pub socket: &'a Path,
    pub fastcgi: &'a conf::Fastcgi,
}

/// A value as php-fpm's ini reads it literally: single-quoted (`conf` refused `'` and
/// line breaks in `env`; our paths hold neither). php-fpm still expands `$pool`.
fn quoted(v: &str) -> String {
    format!("'{v}'")
}

/// The pool file's text: `[global]` logging to stderr (`-O`; `error_log` must still
/// be something php-fpm can open, and `/proc/self/fd/2` is the supervisor's pipe,
/// which the tenant may not reopen: `syslog` is only opened, never written), no
/// daemon; one `pm = ondemand` pool listening on the adopted socket, sized by the
/// environment's `fastcgi` keys, its children's environment only `PATH` and `env`.
pub fn pool_text(p: &Pool<'_>) -> String {
    let f = p.fastcgi;
    // `[global]` is php-fpm's own section, whatever its case.
    let name = if p.env.eq_ignore_ascii_case("global") {
        format!("env-{}", p.env)
    } else {
        p.env.to_owned()
    };
    let mut s = format!(
        "; bulkhead: environment {}, generation {} (written by the supervisor; php-fpm -F -O -y)\n\
         [global]\n\
         error_log = syslog\n\
         daemonize = no\n\
         \n\
         [{name}]\n\
         listen = {}\n\
         pm = ondemand\n\
         pm.max_children = {}\n\
         pm.max_requests = {}\n\
         pm.process_idle_timeout = {}s\n\
         clear_env = yes\n\
         catch_workers_output = yes\n\
         decorate_workers_output = no\n\
         env[PATH] = {}\n",
        p.env,
        p.generation,
        quoted(&p.socket.to_string_lossy()),
        f.max_backends,
        // php-fpm reads an int: past it, as good as never.
        f.max_requests.min(i32::MAX as u64),
        f.idle_timeout.as_secs().max(1),
        quoted(common_path()),
    );
    // php-fpm's own default is `.php .phar`: the environment's extensions instead (one
    // with a character an ini value could trip over is left out, so php-fpm refuses
    // it rather than the file saying something else).
    let exts: Vec<&str> = f
        .extensions
        .iter()
        .map(String::as_str)
        .filter(|e| {
            e[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .collect();
    if !exts.is_empty() {
        s.push_str(&format!("security.limit_extensions = {}\n", exts.join(" ")));
    }
    for (k, v) in &f.env {
        if k != "PATH" {
            s.push_str(&format!("env[{k}] = {}\n", quoted(v)));
        }
    }
    s
}

/// A backend's `PATH` (the processor crate's `backend::PATH`, which we cannot import).
fn common_path() -> &'static str {
    "/usr/local/bin:/usr/bin:/bin"
}

/// Writes `text` in `dir` (the socket's directory) under `host`'s file name, owned by
/// `owner`, mode [`POOL_MODE`]; a stale file of that name (a previous supervisor with
/// our pid) goes first.
pub fn write(
    env: &str,
    dir: BorrowedFd<'_>,
    host: &Path,
    inner: PathBuf,
    socket: PathBuf,
    text: &str,
    owner: Option<(u32, u32)>,
) -> Result<PoolFile, FpmError> {
    let io = |errno| FpmError::Io {
        env: env.to_owned(),
        at: host.to_path_buf(),
        errno,
    };
    let name = host
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io(Errno::EINVAL))?;
    let dir = dir
        .try_clone_to_owned()
        .map_err(|e| io(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io(e)),
    }
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        flags,
        Mode::from_bits_truncate(POOL_MODE),
    )
    .map_err(io)?;
    // SAFETY: openat just returned this fd; nothing else owns it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let pool = PoolFile {
        dir,
        name: name.to_owned(),
        inner,
        socket,
    };
    file.write_all(text.as_bytes())
        .map_err(|e| io(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    if let Some((uid, gid)) = owner {
        fchown(
            file.as_raw_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(io)?;
    }
    nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(POOL_MODE)).map_err(io)?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fastcgi() -> conf::Fastcgi {
        conf::Fastcgi {
            manager: conf::Manager::PhpFpm,
            command: vec!["/usr/sbin/php-fpm8.2".into()],
            extensions: vec![".php".into(), ".phtml".into(), ".p hp".into()],
            min_backends: 0,
            max_backends: 8,
            max_requests: 500,
            idle_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
            requests_per_connection: 100,
            env: vec![
                ("PHP_INI_SCAN_DIR".into(), ":/srv/alice/php.d".into()),
                ("PATH".into(), "/tmp".into()),
                ("X".into(), "a \"b\" ; $c \\d".into()),
            ],
        }
    }

    #[test]
    fn the_pool_file() {
        let f = fastcgi();
        let text = pool_text(&Pool {
            env: "alice",
            generation: 3,
            socket: Path::new("/run/bulkhead/fastcgi/1-3-0.sock"),
            fastcgi: &f,
        });
        let want = "; bulkhead: environment alice, generation 3 (written by the supervisor; php-fpm -F -O -y)
[global]
error_log = syslog
daemonize = no

[alice]
listen = '/run/bulkhead/fastcgi/1-3-0.sock'
pm = ondemand
pm.max_children = 8
pm.max_requests = 500
pm.process_idle_timeout = 60s
clear_env = yes
catch_workers_output = yes
decorate_workers_output = no
env[PATH] = '/usr/local/bin:/usr/bin:/bin'
security.limit_extensions = .php .phtml
env[PHP_INI_SCAN_DIR] = ':/srv/alice/php.d'
env[X] = 'a \"b\" ; $c \\d'
";
        assert_eq!(text, want);
        // An environment called global does not become php-fpm's [global].
        let text = pool_text(&Pool {
            env: "Global",
            generation: 0,
            socket: Path::new("/.bulkhead/1-0-0.sock"),
            fastcgi: &f,
        });
        assert!(text.contains("\n[env-Global]\n"), "{text}");
        let huge = conf::Fastcgi {
            max_requests: u64::MAX,
            ..fastcgi()
        };
        let text = pool_text(&Pool {
            env: "alice",
            generation: 0,
            socket: Path::new("/x.sock"),
            fastcgi: &huge,
        });
        assert!(text.contains("\npm.max_requests = 2147483647\n"), "{text}");
    }

    #[test]
    fn written_0400_excl_and_unlinked_on_drop() {
        use std::os::unix::fs::MetadataExt;
        let base = std::env::temp_dir().join(format!("bulkhead-fpm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let dir = std::fs::File::open(&base).unwrap();
        let host = base.join("1-0-0.conf");
        std::fs::write(&host, b"stale").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&dir);
        let p = write("alice", fd, &host, host.clone(), host.clone(), "[global]\n", None).unwrap();
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "[global]\n");
        assert_eq!(std::fs::metadata(&host).unwrap().mode() & 0o7777, POOL_MODE);
        // A symlink in its place is removed, never followed.
        drop(p);
        assert!(!host.exists());
        let target = base.join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, &host).unwrap();
        let p = write("alice", fd, &host, host.clone(), host.clone(), "x", None).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        drop(p);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
