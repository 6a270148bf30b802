//! A FastCGI backend's last steps before it becomes its environment's program: the
//! supervisor exec'd us as `bulkhead fastcgi-backend`, `common::child::start` took the
//! bootstrap, put the log pipe on fds 1 and 2 and dropped to the environment's uid, gid
//! and chroot. Here: refuse to go on as root, set the rlimits a tenant's program runs
//! under, put the environment's listening socket on fd 0 (the FastCGI convention: the
//! program accepts there), mark every fd above 2 close-on-exec, and `execve` the
//! configured command in place (same pid, so the supervisor's child is the program)
//! with a scrubbed environment. On any failure: one line on stderr (the log pipe) and
//! exit status 127.
//!
//! With `manager = "php-fpm"` the command is php-fpm's master: the socket goes on fd 3
//! instead (php-fpm points fds 0 and 1 at `/dev/null` before it looks at its sockets),
//! named in `FPM_SOCKETS=<listen>=3` so that it adopts it rather than binding, and the
//! master runs with `-F -O -y <pool file>` (foreground, its log on stderr: the log
//! pipe, which the tenant cannot reopen by path, being root's).

use std::ffi::CString;
use std::os::fd::AsRawFd;

use common::bootfds::BackendFds;
use common::control::BackendBoot;
use thiserror::Error;

/// Why a backend's command was not exec'd.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("refusing to run a FastCGI backend as root")]
    Root,
    #[error("empty command")]
    NoCommand,
    #[error("a NUL byte in {0}")]
    Nul(&'static str),
    #[error("setrlimit({resource}): {source}")]
    Rlimit {
        resource: &'static str,
        source: std::io::Error,
    },
    #[error("listener onto fd 0: {0}")]
    Dup(std::io::Error),
    #[error("the FastCGI socket path '{0}' holds ',' or '=' (php-fpm's FPM_SOCKETS cannot name it)")]
    FpmSocket(String),
    #[error("exec {program}: {source}")]
    Exec { program: String, source: nix::Error },
}

/// `PATH` of every backend.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Where a php-fpm master finds its inherited socket (`FPM_SOCKETS=<listen>=3`).
pub const FPM_LISTEN_FD: i32 = 3;

/// The limits a backend runs under (soft, hard), lowered to at most our own hard
/// limits. Unlike a CGI script's, no `RLIMIT_CPU`: a backend lives for many requests,
/// and each request's time is bounded by the processor's `fastcgi_timeout`.
fn limits() -> [(libc::__rlimit_resource_t, u64, u64, &'static str); 4] {
    const GIB: u64 = 1 << 30;
    [
        (libc::RLIMIT_DATA, GIB, GIB, "RLIMIT_DATA"),
        (libc::RLIMIT_FSIZE, GIB, GIB, "RLIMIT_FSIZE"),
        (libc::RLIMIT_CORE, 0, 0, "RLIMIT_CORE"),
        (libc::RLIMIT_NOFILE, 1024, 1024, "RLIMIT_NOFILE"),
    ]
}

/// The environment a backend's command gets: `PATH`, `PHP_FCGI_MAX_REQUESTS` (always:
/// php-cgi's own default without it is 500, and its 0 means "never", as ours), then the configuration's `env` (which `conf` keeps from
/// naming the reserved variables).
/// A php-fpm master gets `PATH`, `FPM_SOCKETS` and the configured `env` (for its
/// own startup: `PHP_INI_SCAN_DIR` is read there); its children get only the pool's
/// `env[...]` entries (`clear_env = yes`).
pub fn environment(boot: &BackendBoot) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_owned(), PATH.to_owned())];
    match &boot.php_fpm {
        Some(fpm) => env.push(("FPM_SOCKETS".into(), format!("{}={FPM_LISTEN_FD}", fpm.socket))),
        None => env.push(("PHP_FCGI_MAX_REQUESTS".into(), boot.max_requests.to_string())),
    }
    env.extend(boot.env.iter().filter(|(k, _)| k != "PATH").cloned());
    env
}

/// Becomes the backend's command; returns only on failure, after writing one line to
/// stderr. The caller exits with status 127.
pub fn exec(boot: &BackendBoot, fds: BackendFds<std::os::fd::OwnedFd>) -> BackendError {
    let e = prepare_and_exec(boot, fds);
    eprintln!(
        "fastcgi backend of environment {}: {e}",
        boot.environment.escape_debug()
    );
    e
}

fn prepare_and_exec(boot: &BackendBoot, fds: BackendFds<std::os::fd::OwnedFd>) -> BackendError {
    if nix::unistd::geteuid().is_root() || nix::unistd::getuid().is_root() {
        return BackendError::Root;
    }
    let Some(program) = boot.command.first() else {
        return BackendError::NoCommand;
    };
    let cstr = |s: &str, what| CString::new(s).map_err(|_| BackendError::Nul(what));
    let path = match cstr(program, "the command") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut args = boot.command.clone();
    if let Some(fpm) = &boot.php_fpm {
        if fpm.socket.contains([',', '=']) {
            return BackendError::FpmSocket(fpm.socket.clone());
        }
        args.extend(["-F".into(), "-O".into(), "-y".into(), fpm.config.clone()]);
    }
    let argv: Result<Vec<CString>, _> = args.iter().map(|a| cstr(a, "an argument")).collect();
    let envp: Result<Vec<CString>, _> = environment(boot)
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}"), "an environment variable"))
        .collect();
    let (argv, envp) = match (argv, envp) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let mut rl: Vec<(libc::__rlimit_resource_t, u64, u64)> =
        limits().iter().map(|(r, s, h, _)| (*r, *s, *h)).collect();
    crate::handler::cgi::spawn::cap_to_own(&mut rl);
    for ((resource, soft, hard), (_, _, _, name)) in rl.iter().zip(limits()) {
        let limit = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: setrlimit reads one valid rlimit struct.
        if unsafe { libc::setrlimit(*resource, &limit) } != 0 {
            return BackendError::Rlimit {
                resource: name,
                source: std::io::Error::last_os_error(),
            };
        }
    }
    // The listener on fd 0 (php-fpm: fd 3); dup2 gives the new fd no close-on-exec
    // flag. The bundle's copy may already be fd 3: dup2 onto itself does nothing, so
    // it is moved off first.
    let target = if boot.php_fpm.is_some() { FPM_LISTEN_FD } else { 0 };
    let mut listener = fds.listener.as_raw_fd();
    if listener == target {
        // SAFETY: fcntl F_DUPFD_CLOEXEC on a valid fd we own; integers only.
        listener = unsafe { libc::fcntl(listener, libc::F_DUPFD_CLOEXEC, 10) };
        if listener < 0 {
            return BackendError::Dup(std::io::Error::last_os_error());
        }
    }
    // SAFETY: both fds are valid; the target is /dev/null (fd 0) or nothing we use
    // (fd 3: the control channel was moved off it at the start).
    if unsafe { libc::dup2(listener, target) } < 0 {
        return BackendError::Dup(std::io::Error::last_os_error());
    }
    // Blocking accept: the program expects a plain listening socket.
    // SAFETY: fcntl on the fd just installed; integers only.
    unsafe {
        let fl = libc::fcntl(target, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(target, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    // Everything above 2 (3 for php-fpm: its socket) — the control channel, the
    // bundle's own copies, the runtime's fds — is gone at the exec. The control
    // channel is close-on-exec already; this is the proof for the rest.
    let first = (target.max(2) + 1) as libc::c_uint;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags; no handle is
    // invalidated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if r != 0 {
        // Kernels before 5.11: flag each one we know of. Every fd opened since the
        // start was close-on-exec (std and nix open with O_CLOEXEC).
        for fd in [fds.listener.as_raw_fd(), fds.log_pipe.as_raw_fd(), listener] {
            if fd != target {
                // SAFETY: integer-only fcntl on an fd we own.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
    let err = match nix::unistd::execve(&path, &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    BackendError::Exec {
        program: program.clone(),
        source: err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_path_max_requests_and_the_configured_ones() {
        let mut boot = BackendBoot {
            environment: "alice".into(),
            env_id: 0,
            command: vec!["/usr/bin/php-cgi".into()],
            env: vec![("PHP_INI_SCAN_DIR".into(), "/srv/alice/php.d".into())],
            max_requests: 500,
            generation: 0,
            php_fpm: None,
        };
        let env = environment(&boot);
        assert_eq!(
            env,
            [
                ("PATH".to_owned(), PATH.to_owned()),
                ("PHP_FCGI_MAX_REQUESTS".into(), "500".into()),
                ("PHP_INI_SCAN_DIR".into(), "/srv/alice/php.d".into()),
            ]
        );
        // 0 is said too: without it php-cgi stops at its own default of 500.
        boot.max_requests = 0;
        assert!(environment(&boot).contains(&("PHP_FCGI_MAX_REQUESTS".into(), "0".into())));
    }

    #[test]
    fn a_php_fpm_master_gets_fpm_sockets_and_no_php_fcgi_variable() {
        let boot = BackendBoot {
            environment: "alice".into(),
            env_id: 0,
            command: vec!["/usr/sbin/php-fpm8.2".into()],
            env: vec![("PHP_INI_SCAN_DIR".into(), ":/srv/alice/php.d".into())],
            max_requests: 500,
            generation: 0,
            php_fpm: Some(common::control::FpmBoot {
                config: "/.bulkhead/1-0-0.conf".into(),
                socket: "/.bulkhead/1-0-0.sock".into(),
            }),
        };
        assert_eq!(
            environment(&boot),
            [
                ("PATH".to_owned(), PATH.to_owned()),
                ("FPM_SOCKETS".into(), "/.bulkhead/1-0-0.sock=3".into()),
                ("PHP_INI_SCAN_DIR".into(), ":/srv/alice/php.d".into()),
            ]
        );
    }
}
