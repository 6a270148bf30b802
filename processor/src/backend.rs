//! A FastCGI backend's last steps before it becomes its environment's program: the
//! supervisor exec'd us as `bulkhead fastcgi-backend`, `common::child::start` took the
//! bootstrap, put the log pipe on fds 1 and 2 and dropped to the environment's uid, gid
//! and chroot. Here: refuse to go on as root, set the rlimits a tenant's program runs
//! under, put the environment's listening socket on fd 0 (the FastCGI convention: the
//! program accepts there), mark every fd above 2 close-on-exec, and `execve` the
//! configured command in place (same pid, so the supervisor's child is the program)
//! with a scrubbed environment. On any failure: one line on stderr (the log pipe) and
//! exit status 127.

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
    #[error("exec {program}: {source}")]
    Exec { program: String, source: nix::Error },
}

/// `PATH` of every backend.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

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
pub fn environment(boot: &BackendBoot) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_owned(), PATH.to_owned())];
    env.push(("PHP_FCGI_MAX_REQUESTS".into(), boot.max_requests.to_string()));
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
    let argv: Result<Vec<CString>, _> = boot.command.iter().map(|a| cstr(a, "an argument")).collect();
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
    // The listener on fd 0; dup2 gives the new fd no close-on-exec flag.
    // SAFETY: both fds are valid; fd 0 is /dev/null, owned by nothing in this process.
    if unsafe { libc::dup2(fds.listener.as_raw_fd(), 0) } < 0 {
        return BackendError::Dup(std::io::Error::last_os_error());
    }
    // Blocking accept: the program expects a plain listening socket.
    // SAFETY: fcntl on fd 0, just installed; integers only.
    unsafe {
        let fl = libc::fcntl(0, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(0, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    // Everything above 2 (the control channel, the bundle's own copies, the runtime's
    // fds) is gone at the exec. The control channel is close-on-exec already; this is
    // the proof for the rest.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags; no handle is
    // invalidated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if r != 0 {
        // Kernels before 5.11: flag each one we know of. Every fd opened since the
        // start was close-on-exec (std and nix open with O_CLOEXEC).
        for fd in [fds.listener.as_raw_fd(), fds.log_pipe.as_raw_fd()] {
            // SAFETY: integer-only fcntl on an fd we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
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
}
