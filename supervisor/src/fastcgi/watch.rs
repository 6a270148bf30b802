//! Watching an environment's FastCGI socket for a connection nobody accepted, as
//! php-fpm's ondemand master does: a task per socket waits for the listening fd to be
//! readable (never accepting), and sends the main loop an event; after each event it
//! waits [`super::scale::HOLD_OFF`] before looking again, so a burst costs a few
//! events, not one per connection. Readiness is edge-reported by the reactor, so
//! after clearing it the task asks `poll(2)` again: a connection still pending is
//! never forgotten. A wake with nothing pending (a backend accepted it first: the
//! common case under load) is followed by [`QUIET`] before the next look, so a busy
//! environment whose backends keep up costs the supervisor a few wakes a second, not
//! one per request.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::run::Event;

/// After a wake that found nothing pending, how long before the socket is looked at
/// again. A connection that arrives meanwhile and is not accepted waits at most this
/// long to be seen (only when every running backend is busy; with no backend
/// running, nothing accepts, so the look that ends the wait finds it).
pub const QUIET: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether a connection waits to be accepted on `listener` (non-blocking look).
pub fn pending(listener: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes exactly the one pollfd passed, with no timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// Longest a refuser ([`refuse_waiting`]) lives: SIGALRM ends it if an accept blocks.
const REFUSER_LIFETIME_SECS: u32 = 2;

/// Takes up to `max` connections waiting on `listener` and closes each at once,
/// unread: their processors see the backend close before answering (a 502). Only
/// for an environment whose backends cannot run now (every one died and the next
/// start waits for its backoff), so that a request is refused at once instead of
/// waiting out `fastcgi_timeout`. Not one byte is read.
///
/// Done in a forked child, never in the supervisor: the listening socket's open file
/// description is shared with the environment's backends, and each backend makes it
/// blocking for its program (php-cgi expects a blocking accept), as tenant code can
/// at any time. `SOCK_NONBLOCK` in `accept4` is the new socket's flag, not the
/// listener's, so an accept on an empty queue (another process took the last
/// connection, or the tenant raced the look) would block the supervisor until the
/// next connection: every child unwatched, no signal handled (it did: a supervisor of
/// an environment whose php-fpm kept dying sat in `accept4` until killed). The child
/// looks (`poll`, no wait) before each accept, and SIGALRM ends it after
/// [`REFUSER_LIFETIME_SECS`] if one blocks anyway. Between fork and `_exit` it calls
/// only async-signal-safe functions. Its pid, for the reaper; `None` if fork failed.
pub fn refuse_waiting(listener: BorrowedFd<'_>, max: usize) -> Option<i32> {
    let fd = listener.as_raw_fd();
    // SAFETY: the child runs only async-signal-safe calls (sigprocmask, signal,
    // alarm, poll through `pending`, accept4, close, _exit) on integers and stack memory, and never
    // returns into Rust code; the parent goes on as after any fork.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => {
            // SAFETY: as above; every pointer is to this frame's stack.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGALRM);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                // The supervisor's handlers would tell its own loop (their pipe is
                // shared): a signal meant for this child ends it instead.
                for sig in [
                    libc::SIGALRM,
                    libc::SIGTERM,
                    libc::SIGINT,
                    libc::SIGHUP,
                    libc::SIGUSR1,
                    libc::SIGCHLD,
                ] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                libc::alarm(REFUSER_LIFETIME_SECS);
                let mut n = 0;
                while n < max && pending(listener) {
                    let c = libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC);
                    if c < 0 {
                        break;
                    }
                    libc::close(c);
                    n += 1;
                }
                libc::_exit(0)
            }
        }
        p if p > 0 => Some(p),
        _ => None,
    }
}

/// Starts the watch of `listener` (a dup of it is watched); the handle ends it.
///
/// The dup is registered with the reactor only while the task waits for a first
/// connection: every connection to a registered listener wakes the reactor (an edge
/// per connection), even while the task sleeps, so a busy environment's listener is
/// deregistered between looks and looked at with `poll(2)` after [`QUIET`].
/// Registering a listener that is already readable reports it at once, so no
/// connection goes unseen between two registrations.
pub fn spawn(
    listener: &OwnedFd,
    gen: u64,
    env: usize,
    tx: mpsc::Sender<Event>,
) -> std::io::Result<tokio::task::AbortHandle> {
    let mut fd = Some(listener.try_clone()?);
    let task = tokio::spawn(async move {
        loop {
            let Some(owned) = fd.take() else { return };
            if !pending(std::os::fd::AsFd::as_fd(&owned)) {
                // SAFETY: an OwnedFd is open and names the same file description for
                // as long as it lives, and the AsyncFd owns it for exactly that long.
                let afd = match unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) } {
                    Ok(afd) => afd,
                    Err(e) => {
                        tracing::warn!(env, "watching a FastCGI socket: {e}");
                        return;
                    }
                };
                match afd.readable().await {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => return,
                }
                let owned = afd.into_inner();
                let now = pending(std::os::fd::AsFd::as_fd(&owned));
                fd = Some(owned);
                if !now {
                    tokio::time::sleep(QUIET).await;
                    continue;
                }
            } else {
                fd = Some(owned);
            }
            if tx.send(Event::FastcgiPending { gen, env }).await.is_err() {
                return;
            }
            tokio::time::sleep(super::scale::HOLD_OFF).await;
        }
    });
    Ok(task.abort_handle())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::Duration;

    use super::*;

    /// A connection a backend accepted wakes the watch once and reports nothing; one
    /// left waiting after that, while the listener is deregistered, is still reported.
    #[test]
    fn a_connection_left_waiting_after_a_false_wake_is_reported() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s");
            let listener = UnixListener::bind(&path).unwrap();
            let owned = OwnedFd::from(listener.try_clone().unwrap());
            let (tx, mut rx) = mpsc::channel(4);
            let task = spawn(&owned, 7, 3, tx).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Accepted at once, as a running backend would: nothing to report.
            let _first = UnixStream::connect(&path).unwrap();
            drop(listener.accept().unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(rx.try_recv().is_err());
            // Left waiting: reported, within QUIET of the false wake.
            let _second = UnixStream::connect(&path).unwrap();
            let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the waiting connection is reported")
                .unwrap();
            assert!(matches!(event, Event::FastcgiPending { gen: 7, env: 3 }));
            task.abort();
        });
    }

    /// On a blocking listener (as every backend leaves the shared description) the
    /// refuser takes what waits and ends; with nothing waiting it ends at once; the
    /// caller never waits for it.
    #[test]
    fn refusing_on_a_blocking_listener_closes_what_waits_and_never_blocks() {
        use std::io::Read;
        use std::time::Instant;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(false).unwrap();
        let mut waiting: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&path).unwrap()).collect();
        let reap = |pid: i32| {
            let t = Instant::now();
            let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
            (st, t.elapsed())
        };
        let t = Instant::now();
        let pid = refuse_waiting(std::os::fd::AsFd::as_fd(&listener), 1024).expect("forked");
        assert!(t.elapsed() < Duration::from_millis(500), "the caller waited");
        let (st, took) = reap(pid);
        assert_eq!(
            st,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
        );
        assert!(took < Duration::from_secs(1), "the refuser lingered {took:?}");
        for c in &mut waiting {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 1];
            assert_eq!(c.read(&mut b).unwrap(), 0, "closed unread");
        }
        assert!(!pending(std::os::fd::AsFd::as_fd(&listener)));
        // Nothing waiting: it ends at once, without blocking in accept.
        let pid = refuse_waiting(std::os::fd::AsFd::as_fd(&listener), 1024).expect("forked");
        let (st, took) = reap(pid);
        assert_eq!(
            st,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
        );
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}
