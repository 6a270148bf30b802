//! Watching an environment's FastCGI socket for a connection nobody accepted, as
//! php-fpm's ondemand master does: a task per socket waits for the listening fd to be
//! readable (never accepting), and sends the main loop an event; after each event it
//! waits [`super::scale::HOLD_OFF`] before looking again, so a burst costs a few
//! events, not one per connection. Readiness is edge-reported by the reactor, so
//! after clearing it the task asks `poll(2)` again: a connection still pending is
//! never forgotten.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::run::Event;

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

/// Takes up to `max` connections waiting on `listener` and closes each at once,
/// unread: their processors see the backend close before answering (a 502). Only
/// for an environment whose backends cannot run now (every one died and the next
/// start waits for its backoff), so that a request is refused at once instead of
/// waiting out `fastcgi_timeout`. Not one byte is read. Returns how many.
pub fn refuse_waiting(listener: BorrowedFd<'_>, max: usize) -> usize {
    let mut n = 0;
    while n < max {
        match nix::sys::socket::accept4(
            listener.as_raw_fd(),
            nix::sys::socket::SockFlag::SOCK_CLOEXEC | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
        ) {
            Ok(fd) => {
                // SAFETY: accept4 just returned this fd; nothing else owns it.
                drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
                n += 1;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    n
}

/// Starts the watch of `listener` (a dup of it is registered); the handle ends it.
pub fn spawn(
    listener: &OwnedFd,
    gen: u64,
    env: usize,
    tx: mpsc::Sender<Event>,
) -> std::io::Result<tokio::task::AbortHandle> {
    let fd = listener.try_clone()?;
    // SAFETY: an OwnedFd is open and names the same file description for as long as
    // it lives, and the AsyncFd owns it for exactly that long.
    let afd =
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(std::io::Error::from)?;
    let task = tokio::spawn(async move {
        loop {
            if !pending(std::os::fd::AsFd::as_fd(afd.get_ref())) {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                guard.clear_ready();
                if !pending(std::os::fd::AsFd::as_fd(afd.get_ref())) {
                    continue;
                }
            }
            if tx.send(Event::FastcgiPending { gen, env }).await.is_err() {
                return;
            }
            tokio::time::sleep(super::scale::HOLD_OFF).await;
        }
    });
    Ok(task.abort_handle())
}
