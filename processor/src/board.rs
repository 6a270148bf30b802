//! What a processor reports: its own scoreboard slot (the only shared memory it can
//! write) and its vhosts' access logs (files the supervisor opened and handed to this
//! environment only).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use common::control::AccessLogFormat;
use common::scoreboard::{now_ms, slot, Segment};

use crate::handler::Site;
use crate::recycle::Recycler;
use crate::session::{Completed, FastcgiFailure, Observer};

/// The processor's shared state for reporting.
pub struct Board {
    pub slot: Segment,
    /// Site index by vhost id.
    vhost_index: Vec<(u32, usize)>,
    logs: RefCell<Vec<Option<(File, AccessLogFormat)>>>,
    active_requests: Cell<u64>,
    /// Requests against `max_requests_per_child`.
    recycler: Recycler,
}

impl Board {
    pub fn new(
        slot: Segment,
        vhost_ids: &[u32],
        logs: Vec<Option<(File, AccessLogFormat)>>,
        recycler: Recycler,
    ) -> Board {
        Board {
            slot,
            vhost_index: vhost_ids.iter().enumerate().map(|(i, v)| (*v, i)).collect(),
            logs: RefCell::new(logs),
            active_requests: Cell::new(0),
            recycler,
        }
    }

    fn site_index(&self, vhost: u32) -> Option<usize> {
        self.vhost_index
            .iter()
            .find(|(v, _)| *v == vhost)
            .map(|(_, i)| *i)
    }

    /// A connection arrived for `vhost` (counted out by dropping its [`ConnObserver`]).
    fn conn_opened(&self, vhost: u32) {
        self.slot.add(slot::TAKEN, 1);
        self.slot.add(slot::ACTIVE_CONNS, 1);
        self.slot.set(slot::STATE, slot::BUSY);
        if let Some(i) = self.site_index(vhost) {
            self.slot.add(slot::site_word(i, slot::site::ACTIVE_CONNS), 1);
        }
    }

    /// A connection last serving `vhost` is gone (closed or handed back).
    fn conn_closed(&self, vhost: u32) {
        self.slot.sub(slot::ACTIVE_CONNS, 1);
        if let Some(i) = self.site_index(vhost) {
            self.slot.sub(slot::site_word(i, slot::site::ACTIVE_CONNS), 1);
        }
        if self.slot.get(slot::ACTIVE_CONNS) == 0 && self.slot.get(slot::STATE) == slot::BUSY {
            self.slot.set(slot::STATE, slot::READY);
        }
        self.slot.set(slot::LAST_USED_MS, now_ms());
    }

    /// A keep-alive connection moved from one of our vhosts to another.
    pub fn conn_moved(&self, from: u32, to: u32) {
        if let Some(i) = self.site_index(from) {
            self.slot.sub(slot::site_word(i, slot::site::ACTIVE_CONNS), 1);
        }
        if let Some(i) = self.site_index(to) {
            self.slot.add(slot::site_word(i, slot::site::ACTIVE_CONNS), 1);
        }
    }

    pub fn handed_back(&self) {
        self.slot.add(slot::HANDBACKS, 1);
    }

    /// Replaces the access log of each listed vhost (after SIGUSR1).
    pub fn reopen_logs(&self, vhosts: &[u32], files: Vec<std::os::fd::OwnedFd>) {
        let mut logs = self.logs.borrow_mut();
        for (vhost, fd) in vhosts.iter().zip(files) {
            if let Some(i) = self.site_index(*vhost) {
                if let Some(entry) = logs.get_mut(i) {
                    let format = entry
                        .as_ref()
                        .map(|(_, f)| *f)
                        .unwrap_or(AccessLogFormat::Combined);
                    *entry = Some((File::from(fd), format));
                }
            }
        }
    }

    fn log(&self, peer: SocketAddr, done: &Completed<'_>) {
        let Some(i) = self.site_index(done.site.vhost_id) else {
            return;
        };
        let mut logs = self.logs.borrow_mut();
        let Some(Some((file, format))) = logs.get_mut(i) else {
            return;
        };
        let line = match format {
            AccessLogFormat::Combined => combined_line(peer, done),
            AccessLogFormat::Json => json_line(peer, done),
        };
        // One write(2) per line on an O_APPEND file: lines from several processes
        // never interleave, and a rotation loses none.
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!(vhost = %done.site.server_name, "access log write: {e}");
        }
    }
}

/// Per-connection observer: the board plus the client's address. It is also the
/// connection's counter guard: made when the connection is counted in, and dropping it
/// counts the connection (and a request it left unfinished) out, on every path out of
/// the connection, a panic's unwinding included.
pub struct ConnObserver<'a> {
    board: &'a Board,
    peer: SocketAddr,
    /// The destination address, as the multiplexer gave it (a PROXY header's).
    local: SocketAddr,
    /// The vhost the connection is counted under.
    current: Cell<u32>,
    /// A request was started and has not completed.
    in_request: Cell<bool>,
    /// Counts a connection in and out (false: one HTTP/2 stream of a connection).
    counts_conn: bool,
}

impl<'a> ConnObserver<'a> {
    /// Counts a connection for `vhost` in.
    /// `peer` and `local` are the hand-off's: the client's and the destination's, a
    /// PROXY header's when the listener reads one (not the socket's).
    pub fn open(board: &'a Board, (peer, local): (SocketAddr, SocketAddr), vhost: u32) -> Self {
        board.conn_opened(vhost);
        ConnObserver {
            board,
            peer,
            local,
            current: Cell::new(vhost),
            in_request: Cell::new(false),
            counts_conn: true,
        }
    }

    /// The observer of one HTTP/2 stream of a connection for `vhost` (counted by the
    /// connection's own observer): its request, never the connection.
    pub fn stream(board: &'a Board, (peer, local): (SocketAddr, SocketAddr), vhost: u32) -> Self {
        ConnObserver {
            board,
            peer,
            local,
            current: Cell::new(vhost),
            in_request: Cell::new(false),
            counts_conn: false,
        }
    }

    /// A request is over (completed, or abandoned with its connection).
    fn request_done(&self) {
        if !self.in_request.replace(false) {
            return;
        }
        let b = self.board;
        let now = now_ms();
        let n = b.active_requests.get().saturating_sub(1);
        b.active_requests.set(n);
        // Progress resets the clock expire_timeout measures.
        b.slot.set(slot::BUSY_SINCE_MS, if n == 0 { 0 } else { now });
    }
}

/// A parked connection's place in the counters ([`crate::park`]): it stays counted, as
/// an idle keep-alive connection in its loop is, until it is resumed
/// ([`ConnObserver::resume`]) or dropped (closed at its deadline or at a stop).
pub struct Counted {
    board: Rc<Board>,
    /// The vhost it is counted under; `None` once resumed.
    vhost: Option<u32>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(vhost) = self.vhost.take() {
            self.board.conn_closed(vhost);
        }
    }
}

impl<'a> ConnObserver<'a> {
    /// The connection leaves its loop to be parked, between requests: it stays
    /// counted, now by the returned guard. `board` is this observer's.
    pub fn park(mut self, board: Rc<Board>) -> Counted {
        debug_assert!(std::ptr::eq(&*board, self.board));
        self.request_done();
        let vhost = self.counts_conn.then(|| self.current.get());
        // Counted out by the guard, not by this drop.
        self.counts_conn = false;
        Counted { board, vhost }
    }

    /// The observer of a parked connection resumed: counted already (by `counted`).
    pub fn resume(board: &'a Board, addrs: (SocketAddr, SocketAddr), mut counted: Counted) -> Self {
        let vhost = counted.vhost.take();
        ConnObserver {
            board,
            peer: addrs.0,
            local: addrs.1,
            current: Cell::new(vhost.unwrap_or(0)),
            in_request: Cell::new(false),
            counts_conn: vhost.is_some(),
        }
    }
}

impl Drop for ConnObserver<'_> {
    fn drop(&mut self) {
        self.request_done();
        if self.counts_conn {
            self.board.conn_closed(self.current.get());
        }
    }
}

impl Observer for ConnObserver<'_> {
    fn addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        Some((self.peer, self.local))
    }

    fn started(&self, site: &Site) {
        let b = self.board;
        if self.current.get() != site.vhost_id {
            if self.counts_conn {
                b.conn_moved(self.current.get(), site.vhost_id);
            }
            self.current.set(site.vhost_id);
        }
        if self.in_request.replace(true) {
            return;
        }
        let n = b.active_requests.get();
        b.active_requests.set(n + 1);
        if n == 0 {
            b.slot.set(slot::BUSY_SINCE_MS, now_ms());
        }
    }

    fn answering(&self, status: u16, bytes: u64) {
        let b = self.board;
        b.slot.add(slot::REQUESTS, 1);
        b.slot.add(slot::BYTES, bytes);
        if let Some(i) = b.site_index(self.current.get()) {
            let class = (status / 100).clamp(1, 5) as usize - 1;
            b.slot.add(slot::site_word(i, slot::site::CLASS + class), 1);
            b.slot.add(slot::site_word(i, slot::site::BYTES), bytes);
        }
    }

    fn fastcgi_started(&self) {
        self.board.slot.add(slot::FCGI_REQUESTS, 1);
        self.board.slot.add(slot::FCGI_ACTIVE, 1);
    }

    fn fastcgi_done(&self, failure: Option<FastcgiFailure>) {
        let s = &self.board.slot;
        s.sub(slot::FCGI_ACTIVE, 1);
        match failure {
            Some(FastcgiFailure::BadGateway) => s.add(slot::FCGI_BAD_GATEWAY, 1),
            Some(FastcgiFailure::Timeout) => s.add(slot::FCGI_TIMEOUTS, 1),
            None => {}
        }
    }

    fn completed(&self, done: &Completed<'_>) {
        let b = self.board;
        let us = done.duration.as_micros() as u64;
        b.slot.add(slot::DURATION_US, us);
        if let Some(i) = b.site_index(done.site.vhost_id) {
            b.slot.add(slot::site_word(i, slot::site::DURATION_US), us);
            let ms = done.duration.as_millis() as u64;
            let bucket = slot::site::BUCKETS_MS
                .iter()
                .position(|&le| ms <= le)
                .unwrap_or(slot::site::BUCKETS_MS.len());
            b.slot.add(slot::site_word(i, slot::site::HIST + bucket), 1);
        }
        let now = now_ms();
        b.slot.set(slot::LAST_USED_MS, now);
        self.request_done();
        b.log(self.peer, done);
        b.recycler.request_done(now);
    }
}

/// `host - - [23/Nov/2026:02:14:19 +0000] "GET / HTTP/1.1" 200 1024 "ref" "ua"`.
fn combined_line(peer: SocketAddr, d: &Completed<'_>) -> String {
    // httpdate gives "Mon, 23 Nov 2026 02:14:19 GMT"; CLF wants "23/Nov/2026:02:14:19 +0000".
    let http = httpdate::fmt_http_date(d.started);
    let parts: Vec<&str> = http.split(' ').collect();
    let when = match parts.as_slice() {
        [_, day, mon, year, time, _] => format!("{day}/{mon}/{year}:{time} +0000"),
        _ => http.clone(),
    };
    let bytes = if d.bytes == 0 {
        "-".to_string()
    } else {
        d.bytes.to_string()
    };
    format!(
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"\n",
        peer.ip(),
        when,
        escape(d.method),
        escape(d.target),
        crate::session::protocol(d.minor),
        d.status,
        bytes,
        d.referer.map(escape).unwrap_or_else(|| "-".into()),
        d.user_agent.map(escape).unwrap_or_else(|| "-".into()),
    )
}

fn json_line(peer: SocketAddr, d: &Completed<'_>) -> String {
    let ts = d
        .started
        .duration_since(UNIX_EPOCH)
        .map(|t| t.as_secs_f64())
        .unwrap_or(0.0);
    let v = serde_json::json!({
        "time": ts,
        "remote_addr": peer.ip().to_string(),
        "vhost": d.site.server_name,
        "method": d.method,
        "uri": d.target,
        "protocol": crate::session::protocol(d.minor),
        "status": d.status,
        "bytes": d.bytes,
        "referer": d.referer,
        "user_agent": d.user_agent,
        "duration_us": d.duration.as_micros() as u64,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Apache's escaping for logged strings: `"` and `\` backslashed, control and
/// non-ASCII bytes as `\xhh`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn combined_log_line() {
        let site = Site::plain(0, "a.test", "/".into());
        let d = Completed {
            site: &site,
            method: "GET",
            target: "/x\"y",
            minor: 1,
            status: 200,
            bytes: 0,
            started: UNIX_EPOCH + Duration::from_secs(1_795_400_000),
            duration: Duration::from_millis(3),
            referer: None,
            user_agent: Some("curl/8"),
        };
        let line = combined_line("127.0.0.1:5".parse().unwrap(), &d);
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(
            line.contains(" +0000] \"GET /x\\\"y HTTP/1.1\" 200 - \"-\" \"curl/8\"\n"),
            "{line}"
        );
        let _ = SystemTime::now();
    }

    #[test]
    fn fastcgi_counters_and_their_guard() {
        use crate::session::{FastcgiFailure, FastcgiRequest};
        let (rw, _ro) = common::scoreboard::create("fcgi-test", slot::words(1)).unwrap();
        let seg = Segment::map(&rw, true).unwrap();
        let (recycler, _rx) = Recycler::new(0);
        let board = Board::new(seg, &[1], vec![None], recycler);
        let obs = ConnObserver::open(
            &board,
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()),
            1,
        );
        let words = |b: &Board| {
            [
                slot::FCGI_REQUESTS,
                slot::FCGI_ACTIVE,
                slot::FCGI_BAD_GATEWAY,
                slot::FCGI_TIMEOUTS,
            ]
            .map(|w| b.slot.get(w))
        };
        let ok = FastcgiRequest::start(&obs);
        let timed_out = FastcgiRequest::start(&obs);
        assert_eq!(words(&board), [2, 2, 0, 0]);
        timed_out.fail(FastcgiFailure::Timeout);
        timed_out.fail(FastcgiFailure::BadGateway);
        drop(timed_out);
        drop(ok);
        assert_eq!(words(&board), [2, 0, 0, 1]);
        // A panic while a request is in flight still counts it out.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = FastcgiRequest::start(&obs);
            r.fail(FastcgiFailure::BadGateway);
            panic!("in flight");
        }));
        assert!(caught.is_err());
        assert_eq!(words(&board), [3, 0, 1, 1]);
    }
}
