//! The `FCGI_PARAMS` of a request: CGI's meta-variables (RFC 3875, [`crate::handler::cgi::env`])
//! as the backend sees them (same chroot, so `SCRIPT_FILENAME` is the processor's
//! path), without `PATH` (the backend's own environment has one), and with
//! `REDIRECT_STATUS=200`, without which php-cgi refuses to run a script when
//! `cgi.force_redirect` is on (Debian's default).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use super::record;

/// The `FCGI_PARAMS` stream (its empty record included) for the meta-variables `vars`.
pub fn encode(vars: &[(OsString, OsString)]) -> Vec<u8> {
    let redirect: (&[u8], &[u8]) = (b"REDIRECT_STATUS", b"200");
    let pairs = vars
        .iter()
        .filter(|(k, _)| k != "PATH" && k != "REDIRECT_STATUS")
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .chain(std::iter::once(redirect));
    record::params(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_dropped_redirect_status_added() {
        let vars = vec![
            ("PATH".into(), "/bin".into()),
            ("SCRIPT_FILENAME".into(), "/srv/a/x.php".into()),
        ];
        let stream = encode(&vars);
        let mut want = Vec::new();
        want.extend(record::pair(b"SCRIPT_FILENAME", b"/srv/a/x.php").unwrap());
        want.extend(record::pair(b"REDIRECT_STATUS", b"200").unwrap());
        let mut rec = Vec::new();
        record::push_record(&mut rec, record::PARAMS, &want);
        record::push_record(&mut rec, record::PARAMS, &[]);
        assert_eq!(stream, rec);
    }
}
