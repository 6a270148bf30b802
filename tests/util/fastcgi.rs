//! A tiny FastCGI client for the tests, written by hand from the specification:
//! BEGIN_REQUEST (responder, no keep-alive), PARAMS, an empty PARAMS, an empty STDIN,
//! then records until END_REQUEST. Also a Unix connect as another uid (a thread whose
//! own credentials are switched with the raw system calls, which are per thread).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;

fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len() as u16;
    let mut r = vec![VERSION, kind, 0, 1, (len >> 8) as u8, len as u8, 0, 0];
    r.extend_from_slice(body);
    r
}

fn length(out: &mut Vec<u8>, n: usize) {
    if n < 128 {
        out.push(n as u8);
    } else {
        out.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// The bytes of one request with `params`.
pub fn request_bytes(params: &[(&str, &str)]) -> Vec<u8> {
    let mut begin = RESPONDER.to_be_bytes().to_vec();
    begin.extend_from_slice(&[0; 6]);
    let mut p = Vec::new();
    for (k, v) in params {
        length(&mut p, k.len());
        length(&mut p, v.len());
        p.extend_from_slice(k.as_bytes());
        p.extend_from_slice(v.as_bytes());
    }
    let mut out = record(BEGIN_REQUEST, &begin);
    out.extend(record(PARAMS, &p));
    out.extend(record(PARAMS, &[]));
    out.extend(record(STDIN, &[]));
    out
}

/// Sends one request for the PHP file `script` on `s` and reads until END_REQUEST:
/// Ok(stdout) or Err(why).
pub fn php_request(s: &mut UnixStream, script: &Path) -> Result<String, String> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let script = script.to_str().unwrap();
    let bytes = request_bytes(&[
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_FILENAME", script),
        ("SCRIPT_NAME", "/t.php"),
        ("REQUEST_URI", "/t.php"),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REDIRECT_STATUS", "200"),
    ]);
    s.write_all(&bytes).map_err(|e| format!("write: {e}"))?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    loop {
        let mut head = [0u8; 8];
        s.read_exact(&mut head).map_err(|e| format!("read header: {e}"))?;
        let len = u16::from_be_bytes([head[4], head[5]]) as usize + head[6] as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
        body.truncate(u16::from_be_bytes([head[4], head[5]]) as usize);
        match head[1] {
            STDOUT => stdout.extend_from_slice(&body),
            STDERR => stderr.extend_from_slice(&body),
            END_REQUEST => break,
            other => return Err(format!("unexpected record type {other}")),
        }
    }
    if !stderr.is_empty() {
        return Err(format!("stderr: {}", String::from_utf8_lossy(&stderr)));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Connects to `path` from a thread running as `uid`/`gid` (raw setresgid/setresuid
/// change only the calling thread's credentials); the errno on failure.
pub fn connect_as(path: &Path, uid: u32, gid: u32) -> Result<(), i32> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: raw credential system calls on this thread only; it ends right after.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        UnixStream::connect(&path)
            .map(drop)
            .map_err(|e| e.raw_os_error().unwrap_or(0))
    })
    .join()
    .unwrap()
}
