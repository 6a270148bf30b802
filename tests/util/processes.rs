//! Reading other processes from `/proc` (children, ids, fds, sockets, memfd mappings)
//! and running external tools with a bound on their time.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Live (not zombie) children of `ppid`, sorted.
pub fn children_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// The arguments of `pid` (`[bulkhead, role]` for a child).
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One `Key:` of `/proc/PID/status`, trimmed.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
}

/// The first number of a `status` field (the real id of `Uid:`).
pub fn first_num(s: &str) -> u32 {
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// The real uid of `pid`, if it exists.
pub fn uid_of(pid: i32) -> Option<u32> {
    status_field(pid, "Uid").map(|u| first_num(&u))
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| {
                stat[i + 1..]
                    .split_whitespace()
                    .next()
                    .map(|s| s != "Z" && s != "X")
            })
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// `pid` as its own PID namespace numbers it (the last `NSpid:` field; the same pid
/// outside a private view), if it exists.
pub fn ns_pid(pid: i32) -> Option<i32> {
    status_field(pid, "NSpid")?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// True while a process of `uid` whose pid is `pid` as its own PID namespace numbers it
/// (what a script of an environment with a private view sees as `$$`) exists and is
/// not a zombie. Outside a view that is the host's pid.
pub fn alive_as(uid: u32, pid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .any(|p| ns_pid(p) == Some(pid) && uid_of(p) == Some(uid) && alive(p))
}

/// `(fd, readlink target)` of every open fd of `pid` (fds that close meanwhile are skipped).
pub fn fd_links(pid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(t) = std::fs::read_link(e.path()) {
            out.push((fd, t.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    out
}

/// The `flags:` of `/proc/PID/fdinfo/FD` (octal in the file), if the fd is still open.
pub fn fd_flags(pid: i32, fd: i32) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// The inode of a `socket:[INODE]` link target.
pub fn socket_inode(target: &str) -> Option<u64> {
    target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Socket inodes `pid` holds.
pub fn socket_inodes(pid: i32) -> HashSet<u64> {
    fd_links(pid)
        .iter()
        .filter_map(|(_, t)| socket_inode(t))
        .collect()
}

/// Inodes of the TCP sockets in /proc/net/tcp and tcp6; `listening` keeps only state
/// 0A (LISTEN).
pub fn tcp_inodes(listening: bool) -> HashSet<u64> {
    let mut out = HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || (listening && f[3] != "0A") {
                continue;
            }
            if let Ok(inode) = f[9].parse::<u64>() {
                if inode != 0 {
                    out.insert(inode);
                }
            }
        }
    }
    out
}

/// Connected (not listening) TCP socket inodes.
pub fn connected_tcp_inodes() -> HashSet<u64> {
    tcp_inodes(false).difference(&tcp_inodes(true)).copied().collect()
}

/// One `memfd:` mapping of a process, from `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdMap {
    /// `start-end` as in the file (also the name under `/proc/PID/map_files/`).
    pub range: String,
    pub len: usize,
    /// e.g. `rw-s`.
    pub perms: String,
    pub inode: u64,
    /// `bulkhead-slot`, `bulkhead-table`, …
    pub name: String,
}

/// Every `memfd:` mapping of `pid`.
pub fn memfd_maps(pid: i32) -> Vec<MemfdMap> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.get(5)?.strip_prefix("/memfd:")?.to_string();
            let (a, b) = f[0].split_once('-')?;
            let len = usize::from_str_radix(b, 16).ok()? - usize::from_str_radix(a, 16).ok()?;
            Some(MemfdMap {
                range: f[0].to_string(),
                len,
                perms: f[1].to_string(),
                inode: f[4].parse().ok()?,
                name,
            })
        })
        .collect()
}

/// Runs `cmd` (stdout and stderr captured, `stdin` written then closed), killing it by
/// pid if it has not exited within `timeout`. Returns `None` on timeout.
pub fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Option<std::process::Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let input = stdin.map(|b| b.to_vec());
    let mut pipe = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let (Some(p), Some(b)) = (pipe.as_mut(), input) {
            let _ = p.write_all(&b);
        }
        drop(pipe);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    // A grandchild may still hold the pipes after a timeout: do not wait for them then.
    let status = status?;
    Some(std::process::Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}
