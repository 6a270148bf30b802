//! A child's bootstrap fds as typed bundles: every fd of a role in a named field,
//! laid out on the wire by one function (`to_wire`, the supervisor's side) and taken
//! apart by one function (`from_wire`, the child's side), which checks the count of
//! every field against the layout the bootstrap carries and the kind of every fd
//! (listener, SEQPACKET socket, sealed memfd, file, pipe). A misordered or short list
//! is refused with the field it broke, never served.
//!
//! The bundles are generic over the fd: the supervisor builds one of `BorrowedFd`s
//! (it keeps its own), the child receives one of `OwnedFd`s. A new fd for a role is a
//! new field here, in both functions and in its layout.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{getsockopt, sockopt, SockType};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::control::{MultiplexerBoot, ProcessorBoot};

/// What an fd of a bootstrap must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// A listening stream socket.
    Listener,
    /// A SOCK_SEQPACKET socket (an environment's hand-off socket).
    SeqPacket,
    /// A memfd sealed against shrinking and growing (a scoreboard segment: no mapping
    /// of it can be made to fault).
    Memfd,
    /// A regular file (an access log).
    File,
    /// A pipe (a log pipe).
    Pipe,
}

impl fmt::Display for FdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FdKind::Listener => "listening socket",
            FdKind::SeqPacket => "SOCK_SEQPACKET socket",
            FdKind::Memfd => "sealed memfd",
            FdKind::File => "regular file",
            FdKind::Pipe => "pipe",
        })
    }
}

/// Why a bootstrap's fds were refused.
#[derive(Debug, Error)]
pub enum BootFdError {
    #[error("bootstrap carried {got} fds, its layout names {want}")]
    Count { got: usize, want: usize },
    #[error("bootstrap fd `{field}` (fd {fd}) is not a {want}: {got}")]
    Kind {
        field: &'static str,
        fd: RawFd,
        want: FdKind,
        got: String,
    },
    #[error("bootstrap layout gives `{field}` {got} fds, its configuration needs {want}")]
    Layout {
        field: &'static str,
        got: usize,
        want: usize,
    },
}

/// Checks that `fd` is a `want`; on failure, says what it is instead.
pub fn check_kind(fd: BorrowedFd<'_>, want: FdKind) -> Result<(), String> {
    match want {
        FdKind::Listener | FdKind::SeqPacket => {
            let ty = getsockopt(&fd, sockopt::SockType).map_err(|e| format!("not a socket ({e})"))?;
            match (want, ty) {
                (FdKind::SeqPacket, SockType::SeqPacket) => Ok(()),
                (FdKind::Listener, SockType::Stream) => match getsockopt(&fd, sockopt::AcceptConn) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("a stream socket that is not listening".into()),
                    Err(e) => Err(format!("a stream socket (SO_ACCEPTCONN: {e})")),
                },
                (_, ty) => Err(format!("a {ty:?} socket")),
            }
        }
        FdKind::Memfd | FdKind::File | FdKind::Pipe => {
            let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| format!("fstat: {e}"))?;
            match (want, st.st_mode & libc::S_IFMT) {
                (FdKind::Pipe, libc::S_IFIFO) | (FdKind::File, libc::S_IFREG) => Ok(()),
                (FdKind::Memfd, libc::S_IFREG) => {
                    let seals = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS)
                        .map_err(|_| String::from("a regular file that is not a memfd"))?;
                    let need = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
                    if seals & need == need {
                        Ok(())
                    } else {
                        Err(format!("a memfd not sealed against resizing (seals {seals:#x})"))
                    }
                }
                (_, libc::S_IFIFO) => Err("a pipe".into()),
                (_, libc::S_IFREG) => Err("a regular file".into()),
                (_, libc::S_IFSOCK) => Err("a socket".into()),
                (_, libc::S_IFCHR) => Err("a character device".into()),
                (_, libc::S_IFDIR) => Err("a directory".into()),
                (_, fmt) => Err(format!("file type {fmt:#o}")),
            }
        }
    }
}

/// Takes a received list apart, field by field, in wire order.
struct Wire {
    fds: std::vec::IntoIter<OwnedFd>,
}

impl Wire {
    /// Refuses the list unless it holds exactly `want` fds.
    fn new(fds: Vec<OwnedFd>, want: usize) -> Result<Wire, BootFdError> {
        if fds.len() != want {
            return Err(BootFdError::Count { got: fds.len(), want });
        }
        Ok(Wire { fds: fds.into_iter() })
    }

    fn one(&mut self, field: &'static str, kind: FdKind) -> Result<OwnedFd, BootFdError> {
        // The count was checked in `new`; a layout that disagrees with its own sum
        // is still refused, not trusted.
        let fd = self.fds.next().ok_or(BootFdError::Layout {
            field,
            got: 0,
            want: 1,
        })?;
        check_kind(fd.as_fd(), kind).map_err(|got| BootFdError::Kind {
            field,
            fd: fd.as_raw_fd(),
            want: kind,
            got,
        })?;
        Ok(fd)
    }

    fn many(&mut self, field: &'static str, n: usize, kind: FdKind) -> Result<Vec<OwnedFd>, BootFdError> {
        let mut fds = Vec::with_capacity(n.min(self.fds.len()));
        for _ in 0..n {
            fds.push(self.one(field, kind)?);
        }
        Ok(fds)
    }

    fn maybe(
        &mut self,
        field: &'static str,
        present: bool,
        kind: FdKind,
    ) -> Result<Option<OwnedFd>, BootFdError> {
        present.then(|| self.one(field, kind)).transpose()
    }
}

fn expect(field: &'static str, got: usize, want: usize) -> Result<(), BootFdError> {
    if got == want {
        Ok(())
    } else {
        Err(BootFdError::Layout { field, got, want })
    }
}

/// How many fds each field of a [`MultiplexerFds`] has (the fields of one fd are
/// implicit). Travels in [`MultiplexerBoot::fds`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiplexerLayout {
    pub listeners: usize,
    pub tls_listeners: usize,
    pub metrics_listener: bool,
    pub env_sockets: usize,
    /// The environments' ends come from the generation's fd keeper on one socket
    /// (`MultiplexerFds::env_stream`) instead of in the bootstrap.
    #[serde(default)]
    pub env_stream: bool,
}

impl MultiplexerLayout {
    /// Checks the layout against the configuration slice it came with: one listener
    /// per address, the metrics listener when `metrics_listen` is set, one socket per
    /// environment.
    pub fn check(&self, boot: &MultiplexerBoot) -> Result<(), BootFdError> {
        expect("listeners", self.listeners, boot.listeners.len())?;
        expect("tls_listeners", self.tls_listeners, boot.tls_listeners.len())?;
        expect(
            "metrics_listener",
            usize::from(self.metrics_listener),
            usize::from(boot.metrics_listen.is_some()),
        )?;
        if self.env_stream {
            expect("env_sockets", self.env_sockets, 0)
        } else {
            expect("env_sockets", self.env_sockets, boot.environments.len())
        }
    }
}

/// A multiplexer's fds.
#[derive(Debug)]
pub struct MultiplexerFds<F> {
    /// One listener per [`MultiplexerBoot::listeners`] address, in order.
    pub listeners: Vec<F>,
    /// One listener per [`MultiplexerBoot::tls_listeners`] address, in order.
    pub tls_listeners: Vec<F>,
    /// The metrics listener, when [`MultiplexerBoot::metrics_listen`] is set.
    pub metrics_listener: Option<F>,
    /// The multiplexer's end of every environment's hand-off socket, in environment
    /// order (received from `env_stream` when there is one).
    pub env_sockets: Vec<F>,
    /// Where the environments' ends arrive from the fd keeper (`crate::keeper`), in
    /// batches: more than a bootstrap should carry, and the supervisor keeps none.
    pub env_stream: Option<F>,
    /// The shared table (read-write).
    pub table: F,
    /// The multiplexer's own scoreboard slot (read-write).
    pub slot: F,
}

impl<F: AsRawFd> MultiplexerFds<F> {
    /// The fds in wire order, and the layout to put in the bootstrap.
    pub fn to_wire(&self) -> (Vec<RawFd>, MultiplexerLayout) {
        let mut fds = Vec::with_capacity(self.listeners.len() + self.env_sockets.len() + 3);
        fds.extend(self.listeners.iter().map(AsRawFd::as_raw_fd));
        fds.extend(self.tls_listeners.iter().map(AsRawFd::as_raw_fd));
        fds.extend(self.metrics_listener.iter().map(AsRawFd::as_raw_fd));
        fds.extend(self.env_sockets.iter().map(AsRawFd::as_raw_fd));
        fds.extend(self.env_stream.iter().map(AsRawFd::as_raw_fd));
        fds.push(self.table.as_raw_fd());
        fds.push(self.slot.as_raw_fd());
        let layout = MultiplexerLayout {
            listeners: self.listeners.len(),
            tls_listeners: self.tls_listeners.len(),
            metrics_listener: self.metrics_listener.is_some(),
            env_sockets: self.env_sockets.len(),
            env_stream: self.env_stream.is_some(),
        };
        (fds, layout)
    }
}

impl MultiplexerFds<OwnedFd> {
    /// Takes a received list apart as `layout` says, checking every fd's kind.
    pub fn from_wire(layout: &MultiplexerLayout, fds: Vec<OwnedFd>) -> Result<Self, BootFdError> {
        let want = layout
            .listeners
            .saturating_add(layout.tls_listeners)
            .saturating_add(usize::from(layout.metrics_listener))
            .saturating_add(layout.env_sockets)
            .saturating_add(usize::from(layout.env_stream))
            .saturating_add(2);
        let mut w = Wire::new(fds, want)?;
        // Fields are evaluated in the order written: this is the wire order.
        Ok(MultiplexerFds {
            listeners: w.many("listeners", layout.listeners, FdKind::Listener)?,
            tls_listeners: w.many("tls_listeners", layout.tls_listeners, FdKind::Listener)?,
            metrics_listener: w.maybe("metrics_listener", layout.metrics_listener, FdKind::Listener)?,
            env_sockets: w.many("env_sockets", layout.env_sockets, FdKind::SeqPacket)?,
            env_stream: w.maybe("env_stream", layout.env_stream, FdKind::SeqPacket)?,
            table: w.one("table", FdKind::Memfd)?,
            slot: w.one("slot", FdKind::Memfd)?,
        })
    }
}

/// How many fds each field of a [`ProcessorFds`] has (the fields of one fd are
/// implicit). Travels in [`ProcessorBoot::fds`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorLayout {
    pub access_logs: usize,
}

impl ProcessorLayout {
    /// Checks the layout against the configuration slice it came with: one access log
    /// per site that has one.
    pub fn check(&self, boot: &ProcessorBoot) -> Result<(), BootFdError> {
        let sites = boot.sites.iter().filter(|s| s.access_log.is_some()).count();
        expect("access_logs", self.access_logs, sites)
    }
}

/// A processor's fds: its own environment's, nothing else.
#[derive(Debug)]
pub struct ProcessorFds<F> {
    /// The write end of its environment's log pipe; [`crate::child::start`] puts it on
    /// fds 1 and 2 before privileges are dropped.
    pub log_pipe: F,
    /// The processor's end of its environment's hand-off socket.
    pub env_socket: F,
    /// Its own scoreboard slot (read-write).
    pub slot: F,
    /// One access log per site whose [`crate::control::SiteBoot::access_log`] is set,
    /// in site order.
    pub access_logs: Vec<F>,
}

impl<F: AsRawFd> ProcessorFds<F> {
    /// The fds in wire order, and the layout to put in the bootstrap.
    pub fn to_wire(&self) -> (Vec<RawFd>, ProcessorLayout) {
        let mut fds = Vec::with_capacity(3 + self.access_logs.len());
        fds.push(self.log_pipe.as_raw_fd());
        fds.push(self.env_socket.as_raw_fd());
        fds.push(self.slot.as_raw_fd());
        fds.extend(self.access_logs.iter().map(AsRawFd::as_raw_fd));
        let layout = ProcessorLayout {
            access_logs: self.access_logs.len(),
        };
        (fds, layout)
    }
}

impl ProcessorFds<OwnedFd> {
    /// Takes a received list apart as `layout` says, checking every fd's kind.
    pub fn from_wire(layout: &ProcessorLayout, fds: Vec<OwnedFd>) -> Result<Self, BootFdError> {
        let mut w = Wire::new(fds, layout.access_logs.saturating_add(3))?;
        // Fields are evaluated in the order written: this is the wire order.
        Ok(ProcessorFds {
            log_pipe: w.one("log_pipe", FdKind::Pipe)?,
            env_socket: w.one("env_socket", FdKind::SeqPacket)?,
            slot: w.one("slot", FdKind::Memfd)?,
            access_logs: w.many("access_logs", layout.access_logs, FdKind::File)?,
        })
    }
}

/// A FastCGI backend's fds: its environment's log pipe (put on fds 1 and 2) and the
/// environment's listening Unix socket (put on fd 0 before the exec). Nothing else:
/// no slot, no hand-off socket, no access log. The layout is fixed (two fds).
#[derive(Debug)]
pub struct BackendFds<F> {
    /// The write end of its environment's log pipe.
    pub log_pipe: F,
    /// The environment's FastCGI listening socket (shared by all its backends).
    pub listener: F,
}

impl<F: AsRawFd> BackendFds<F> {
    /// The fds in wire order.
    pub fn to_wire(&self) -> Vec<RawFd> {
        vec![self.log_pipe.as_raw_fd(), self.listener.as_raw_fd()]
    }
}

impl BackendFds<OwnedFd> {
    /// Takes a received list apart, checking the count (two) and every fd's kind: the
    /// listener must be a listening stream socket (a Unix one for a backend).
    pub fn from_wire(fds: Vec<OwnedFd>) -> Result<Self, BootFdError> {
        let mut w = Wire::new(fds, 2)?;
        Ok(BackendFds {
            log_pipe: w.one("log_pipe", FdKind::Pipe)?,
            listener: w.one("listener", FdKind::Listener)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{self, Receiver};
    use crate::{scoreboard, seqpacket};
    use std::time::Duration;

    /// One fd of every kind, owned by the test.
    struct Fds {
        listener: std::net::TcpListener,
        unbound: OwnedFd,
        pair: (OwnedFd, OwnedFd),
        memfd: (OwnedFd, OwnedFd),
        unsealed: OwnedFd,
        file: std::fs::File,
        pipe: (OwnedFd, OwnedFd),
        path: std::path::PathBuf,
    }

    impl Drop for Fds {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn fds(name: &str) -> Fds {
        let path = std::env::temp_dir().join(format!("bulkhead-bootfds-{name}-{}", std::process::id()));
        let unbound = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        // SAFETY: memfd_create with a constant name and flags; the fd is ours.
        let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: memfd_create just returned this fd and nothing else owns it.
        let unsealed = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        Fds {
            listener: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            unbound,
            pair: seqpacket::seqpacket_pair().unwrap(),
            memfd: scoreboard::create("test", 8).unwrap(),
            unsealed,
            file: std::fs::File::create(&path).unwrap(),
            pipe: nix::unistd::pipe().unwrap(),
            path,
        }
    }

    fn own(fds: &[RawFd]) -> Vec<OwnedFd> {
        fds.iter()
            .map(|fd| {
                // SAFETY: `fd` is open for the whole test (owned by `Fds`); the dup is ours.
                unsafe { BorrowedFd::borrow_raw(*fd) }
                    .try_clone_to_owned()
                    .unwrap()
            })
            .collect()
    }

    fn multiplexer(f: &Fds) -> MultiplexerFds<BorrowedFd<'_>> {
        MultiplexerFds {
            listeners: vec![f.listener.as_fd(), f.listener.as_fd()],
            tls_listeners: vec![f.listener.as_fd()],
            metrics_listener: Some(f.listener.as_fd()),
            env_sockets: vec![f.pair.0.as_fd(), f.pair.1.as_fd(), f.pair.0.as_fd()],
            env_stream: None,
            table: f.memfd.0.as_fd(),
            slot: f.memfd.1.as_fd(),
        }
    }

    fn processor(f: &Fds) -> ProcessorFds<BorrowedFd<'_>> {
        ProcessorFds {
            log_pipe: f.pipe.1.as_fd(),
            env_socket: f.pair.1.as_fd(),
            slot: f.memfd.0.as_fd(),
            access_logs: vec![f.file.as_fd(), f.file.as_fd()],
        }
    }

    #[test]
    fn a_bundle_survives_the_control_channel() {
        let f = fds("wire");
        let (raw, layout) = multiplexer(&f).to_wire();
        let (a, b) = seqpacket::seqpacket_pair().unwrap();
        control::send(a.as_fd(), &layout, &raw).unwrap();
        let (got, received): (MultiplexerLayout, Vec<OwnedFd>) = Receiver::new()
            .recv_blocking(b.as_fd(), 64, Duration::from_secs(5))
            .unwrap();
        assert_eq!(got, layout);
        let m = MultiplexerFds::from_wire(&got, received).unwrap();
        assert_eq!((m.listeners.len(), m.env_sockets.len()), (2, 3));
        assert!(m.metrics_listener.is_some());

        let (raw, layout) = processor(&f).to_wire();
        let p = ProcessorFds::from_wire(&layout, own(&raw)).unwrap();
        assert_eq!(p.access_logs.len(), 2);
    }

    #[test]
    fn a_misordered_list_is_refused_by_kind() {
        let f = fds("order");
        // An environment socket where the table belongs, with the count unchanged.
        let (mut raw, layout) = multiplexer(&f).to_wire();
        let table = raw.len() - 2;
        raw.swap(table - 1, table);
        let e = MultiplexerFds::from_wire(&layout, own(&raw)).unwrap_err();
        assert!(
            matches!(
                e,
                BootFdError::Kind {
                    field: "env_sockets",
                    want: FdKind::SeqPacket,
                    ..
                }
            ),
            "{e}"
        );
        // The metrics listener left out of the layout: an environment socket is one short.
        let (raw, mut layout) = multiplexer(&f).to_wire();
        layout.metrics_listener = false;
        layout.env_sockets += 1;
        let e = MultiplexerFds::from_wire(&layout, own(&raw)).unwrap_err();
        assert!(
            matches!(
                e,
                BootFdError::Kind {
                    field: "env_sockets",
                    ..
                }
            ),
            "{e}"
        );
        // A processor given its socket where its log pipe belongs.
        let (mut raw, layout) = processor(&f).to_wire();
        raw.swap(0, 1);
        let e = ProcessorFds::from_wire(&layout, own(&raw)).unwrap_err();
        assert!(
            matches!(
                e,
                BootFdError::Kind {
                    field: "log_pipe",
                    want: FdKind::Pipe,
                    ..
                }
            ),
            "{e}"
        );
        // The slot and the first access log swapped: a file is no sealed memfd.
        let (mut raw, layout) = processor(&f).to_wire();
        raw.swap(2, 3);
        let e = ProcessorFds::from_wire(&layout, own(&raw)).unwrap_err();
        assert!(
            matches!(
                e,
                BootFdError::Kind {
                    field: "slot",
                    want: FdKind::Memfd,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_short_or_long_list_is_refused() {
        let f = fds("count");
        let (raw, layout) = multiplexer(&f).to_wire();
        let e = MultiplexerFds::from_wire(&layout, own(&raw[..raw.len() - 1])).unwrap_err();
        assert!(matches!(e, BootFdError::Count { got: 8, want: 9 }), "{e}");
        let (mut raw, layout) = processor(&f).to_wire();
        raw.push(f.file.as_raw_fd());
        let e = ProcessorFds::from_wire(&layout, own(&raw)).unwrap_err();
        assert!(matches!(e, BootFdError::Count { got: 6, want: 5 }), "{e}");
    }

    #[test]
    fn kinds() {
        let f = fds("kinds");
        let ok = [
            (f.listener.as_fd(), FdKind::Listener),
            (f.pair.0.as_fd(), FdKind::SeqPacket),
            (f.memfd.0.as_fd(), FdKind::Memfd),
            (f.memfd.1.as_fd(), FdKind::Memfd),
            (f.file.as_fd(), FdKind::File),
            (f.unsealed.as_fd(), FdKind::File),
            (f.pipe.0.as_fd(), FdKind::Pipe),
            (f.pipe.1.as_fd(), FdKind::Pipe),
        ];
        for (fd, kind) in ok {
            assert_eq!(check_kind(fd, kind), Ok(()), "{kind}");
        }
        let refused = [
            (f.unbound.as_fd(), FdKind::Listener),
            (f.pair.0.as_fd(), FdKind::Listener),
            (f.listener.as_fd(), FdKind::SeqPacket),
            (f.file.as_fd(), FdKind::Memfd),
            (f.unsealed.as_fd(), FdKind::Memfd),
            (f.pipe.0.as_fd(), FdKind::File),
            (f.listener.as_fd(), FdKind::File),
            (f.file.as_fd(), FdKind::Pipe),
            (f.pipe.0.as_fd(), FdKind::SeqPacket),
        ];
        for (fd, kind) in refused {
            assert!(check_kind(fd, kind).is_err(), "{fd:?} is not a {kind}");
        }
    }

    #[test]
    fn a_backend_gets_a_pipe_and_a_listening_unix_socket() {
        let f = fds("backend");
        let path = std::env::temp_dir().join(format!("bulkhead-bootfds-unix-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let good = BackendFds {
            log_pipe: f.pipe.1.as_fd(),
            listener: unix.as_fd(),
        };
        let b = BackendFds::from_wire(own(&good.to_wire())).unwrap();
        assert_eq!(check_kind(b.listener.as_fd(), FdKind::Listener), Ok(()));
        // Swapped, or a connected socket where the listener belongs: refused by kind.
        let swapped = [unix.as_raw_fd(), f.pipe.1.as_raw_fd()];
        let e = BackendFds::from_wire(own(&swapped)).unwrap_err();
        assert!(
            matches!(
                e,
                BootFdError::Kind {
                    field: "log_pipe",
                    ..
                }
            ),
            "{e}"
        );
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let connected = [f.pipe.1.as_raw_fd(), a.as_raw_fd()];
        let e = BackendFds::from_wire(own(&connected)).unwrap_err();
        assert!(
            matches!(
                e,
                BootFdError::Kind {
                    field: "listener",
                    ..
                }
            ),
            "{e}"
        );
        let e = BackendFds::from_wire(own(&[f.pipe.1.as_raw_fd()])).unwrap_err();
        assert!(matches!(e, BootFdError::Count { got: 1, want: 2 }), "{e}");
    }

    #[test]
    fn a_layout_must_match_its_configuration() {
        let boot: ProcessorBoot = serde_json::from_value(serde_json::json!({
            "environment": "alice", "env_id": 0, "hosts": [],
            "sites": [
                {"vhost_id": 0, "server_name": "a", "document_root": "/", "access_log": "Json"},
                {"vhost_id": 1, "server_name": "b", "document_root": "/", "access_log": null},
            ],
            "limit_request_head": 1, "request_head_timeout_ms": 1, "keep_alive_timeout_ms": 1,
            "max_connections": 1, "max_requests_per_child": 0, "generation": 0,
            "fds": {"access_logs": 1},
        }))
        .unwrap();
        boot.fds.check(&boot).unwrap();
        let two = ProcessorLayout { access_logs: 2 };
        let e = two.check(&boot).unwrap_err();
        assert!(
            matches!(
                e,
                BootFdError::Layout {
                    field: "access_logs",
                    got: 2,
                    want: 1
                }
            ),
            "{e}"
        );
    }
}
