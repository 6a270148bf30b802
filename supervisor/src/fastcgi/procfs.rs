//! What the supervisor reads of a backend in `/proc` to tell whether it is idle: the
//! system call it is blocked in (`/proc/<pid>/syscall`) and its CPU time
//! (`/proc/<pid>/stat`); and how many children a php-fpm master has
//! (`/proc/<pid>/task/<pid>/children`). The process is a tenant's, so the contents are parsed
//! defensively: read at most [`READ_MAX`] bytes, anything unexpected is "unknown"
//! (`None`), never a panic. The paths are procfs's own, not a tenant's.

use std::io::Read;

/// Most bytes read from one procfs file (a `stat` line is far shorter).
const READ_MAX: u64 = 4096;

/// The accept system calls of this build's architecture.
const ACCEPT_CALLS: [libc::c_long; 2] = [libc::SYS_accept, libc::SYS_accept4];

/// Most bytes read from a `children` file: 1,024 children (`max_backends`' bound) of
/// up to 7 digits and a space, twice over.
const CHILDREN_MAX: u64 = 16 * 1024;

fn read(pid: i32, file: &str) -> Option<Vec<u8>> {
    read_at_most(pid, file, READ_MAX)
}

fn read_at_most(pid: i32, file: &str, max: u64) -> Option<Vec<u8>> {
    let f = std::fs::File::open(format!("/proc/{pid}/{file}")).ok()?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// How many pids a `children` file lists (what is not a pid is not counted).
pub fn parse_children(text: &[u8]) -> usize {
    text.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty() && w.len() <= 10 && w.iter().all(u8::is_ascii_digit))
        .count()
}

/// The children of `pid`'s main thread now (a php-fpm master is single-threaded);
/// `None` when it cannot be told.
pub fn children(pid: i32) -> Option<usize> {
    Some(parse_children(&read_at_most(
        pid,
        &format!("task/{pid}/children"),
        CHILDREN_MAX,
    )?))
}

/// Whether a `/proc/<pid>/syscall` text says the process is blocked in accept.
pub fn parse_in_accept(text: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(text).ok()?;
    let first = text.split_ascii_whitespace().next()?;
    // "running" (on a CPU) or "-1" (not in a system call): not in accept.
    match first.parse::<libc::c_long>() {
        Ok(n) => Some(ACCEPT_CALLS.contains(&n)),
        Err(_) => Some(false),
    }
}

/// utime + stime (clock ticks) from a `/proc/<pid>/stat` line. The command name in
/// parentheses may hold anything, spaces and parentheses included: the fields are
/// counted after the last `)`.
pub fn parse_cpu(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state (field 3) … utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// Whether `pid` is blocked in accept now; `None` when it cannot be told.
pub fn in_accept(pid: i32) -> Option<bool> {
    parse_in_accept(&read(pid, "syscall")?)
}

/// Most entries of `/proc/<pid>/fd` looked at by [`holds_connection`].
const FDS_MAX: usize = 64;

/// Whether `pid` holds a socket on an fd above 0: a backend's fd 0 is its listening
/// socket and 1 and 2 its log pipe, so another socket is a connection it accepted
/// (the start is over). Only the first [`FDS_MAX`] entries are looked at; `readlink`
/// on procfs names the file and follows nothing. A backend could fake either answer,
/// which only changes how fast its own environment grows within `max_backends`.
pub fn holds_connection(pid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.take(FDS_MAX).flatten().any(|e| {
        let name = e.file_name();
        let above_0 = name
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n > 0);
        above_0 && std::fs::read_link(e.path()).is_ok_and(|t| is_socket_link(&t))
    })
}

/// Whether an `/proc/<pid>/fd/N` link's target names a socket (`socket:[inode]`).
fn is_socket_link(target: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    target.as_os_str().as_bytes().starts_with(b"socket:[")
}

/// `pid`'s CPU time so far, in clock ticks.
pub fn cpu(pid: i32) -> Option<u64> {
    parse_cpu(&read(pid, "stat")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        let accept4 = format!("{} 0x0 0x7ffd 0x0 0x0 0x0 0x0 0x7ffd 0x7f", libc::SYS_accept4);
        assert_eq!(parse_in_accept(accept4.as_bytes()), Some(true));
        let accept = format!("{} 0x0 0x0", libc::SYS_accept);
        assert_eq!(parse_in_accept(accept.as_bytes()), Some(true));
        assert_eq!(parse_in_accept(b"0 0x3 0x7ffd 0x1"), Some(false));
        assert_eq!(parse_in_accept(b"running"), Some(false));
        assert_eq!(parse_in_accept(b"-1 0x7ffd 0x7f"), Some(false));
        assert_eq!(parse_in_accept(b""), None);
        assert_eq!(parse_in_accept(b"\xff\xfe"), None);
    }

    #[test]
    fn stat_lines() {
        let line = b"1234 (php-cgi) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu(line), Some(10));
        // A name with spaces and parentheses cannot shift the fields.
        let tricky = b"1234 (a) b) S 1 2 ) 9 9) S 1 1234 1234 0 -1 4194560 100 0 0 0 40 2 0 0 20";
        assert_eq!(parse_cpu(tricky), Some(42));
        assert_eq!(parse_cpu(b"1234 (x) S 1"), None);
        assert_eq!(parse_cpu(b"no parenthesis"), None);
        assert_eq!(parse_cpu(b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 a b"), None);
        let huge = b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 18446744073709551615 5";
        assert_eq!(parse_cpu(huge), Some(u64::MAX));
    }

    #[test]
    fn children_lines() {
        assert_eq!(parse_children(b""), 0);
        assert_eq!(parse_children(b"12 345 6789 "), 3);
        assert_eq!(parse_children(b"12 x 3\xff 4"), 2);
        assert_eq!(parse_children(b"99999999999 1"), 1);
    }

    #[test]
    fn a_socket_above_fd_0_is_a_connection() {
        // A child with no socket, then one given a socket on fd 5.
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep");
        child.arg("30").stdin(std::process::Stdio::null());
        let mut child = child.spawn().unwrap();
        let pid = child.id() as i32;
        assert!(!holds_connection(pid), "sleep holds no socket");
        child.kill().unwrap();
        child.wait().unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        let mut with = std::process::Command::new("sleep");
        with.arg("30").stdin(std::process::Stdio::null());
        // SAFETY: only dup2 and fcntl, which are async-signal-safe, between fork and
        // exec; `fd` stays open in the parent until the child has exec'd (spawn waits
        // for that).
        unsafe {
            with.pre_exec(move || {
                // dup2 onto itself keeps close-on-exec: when the pair's end is fd 5
                // already (other tests' fds come and go), clear the flag instead.
                let r = if fd == 5 {
                    libc::fcntl(5, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 5)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut with = with.spawn().unwrap();
        let pid = with.id() as i32;
        let mut seen = false;
        for _ in 0..100 {
            seen = holds_connection(pid);
            if seen {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        with.kill().unwrap();
        with.wait().unwrap();
        assert!(seen, "fd 5 is a socket");
        assert!(is_socket_link(std::path::Path::new("socket:[1234]")));
        assert!(!is_socket_link(std::path::Path::new("/tmp/socket:[1]")));
        assert!(!is_socket_link(std::path::Path::new("pipe:[1234]")));
    }

    #[test]
    fn our_own_process_reads() {
        let me = std::process::id() as i32;
        assert!(cpu(me).is_some());
        assert_eq!(in_accept(me), Some(false));
        assert!(children(me).is_some());
    }
}
