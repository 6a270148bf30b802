//! Connections to an environment's backends kept open between requests
//! (`FCGI_KEEP_CONN`), per processor: a request without a body and with a safe method
//! (GET, HEAD, OPTIONS) takes the most recently used idle connection, else connects;
//! a connection whose answer ended cleanly while another request of this processor was
//! with the backends (under concurrency, when the next request is due at once; a lone
//! client's connection is closed after each answer, as without keeping) goes back for
//! the next one, at most
//! `requests_per_connection` requests in all (then the backend sees the close and
//! accepts again: a request waiting on the socket from another processor waits for at
//! most that many answers of a busy backend) and idle at most [`IDLE`] (a pinned but
//! idle backend serves no one else). At most `max_backends` idle connections are kept,
//! none once the processor stops taking connections ([`Pool::close`]).
//! Saves a socket, a connect, two epoll_ctl and a close per request here, and an
//! accept, a shutdown, a read to EOF and a close in the backend.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;

/// Longest an idle connection stays open.
pub const IDLE: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Idle {
    stream: UnixStream,
    /// Requests it has carried.
    uses: u32,
    until: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first.
    idle: Vec<Idle>,
    /// A sweeper task is running.
    sweeping: bool,
    /// The processor is stopping: nothing is kept any more.
    closed: bool,
    /// Requests with the backends now ([`InFlight`]).
    active: usize,
}

/// A request with the backends, counted while it lives.
#[derive(Debug)]
pub struct InFlight {
    inner: Arc<Mutex<Inner>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        inner.active = inner.active.saturating_sub(1);
    }
}

impl InFlight {
    /// Whether another request is with the backends now.
    pub fn others(&self) -> bool {
        lock(&self.inner).active > 1
    }
}

/// The idle connections of one [`super::FastcgiConf`]. A clone starts empty; any two
/// compare equal (the configuration they belong to is what compares).
#[derive(Debug, Default)]
pub struct Pool {
    inner: Arc<Mutex<Inner>>,
}

impl Clone for Pool {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Pool {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Pool {}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// Counts a request with the backends until the guard goes.
    pub fn begin(&self) -> InFlight {
        lock(&self.inner).active += 1;
        InFlight {
            inner: self.inner.clone(),
        }
    }

    /// The most recently used idle connection that has not expired, and the requests it
    /// carried.
    pub fn take(&self) -> Option<(UnixStream, u32)> {
        let mut inner = lock(&self.inner);
        let last = inner.idle.pop()?;
        if last.until <= Instant::now() {
            // The others are older still.
            inner.idle.clear();
            return None;
        }
        Some((last.stream, last.uses))
    }

    /// Keeps `stream` (which has carried `uses` requests) for the next request, unless
    /// `max_idle` are kept already (then it is closed).
    pub fn put(&self, stream: UnixStream, uses: u32, max_idle: usize) {
        let mut inner = lock(&self.inner);
        if inner.closed || inner.idle.len() >= max_idle {
            return;
        }
        inner.idle.push(Idle {
            stream,
            uses,
            until: Instant::now() + IDLE,
        });
        if !inner.sweeping {
            inner.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(&self.inner)));
        }
    }

    /// Closes the idle connections and keeps none from now on: a processor that stops
    /// taking connections (recycled, retired, shut down) must not pin backends that its
    /// successor is waiting for.
    pub fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        inner.idle.clear();
    }

    /// Idle connections kept now.
    pub fn idle(&self) -> usize {
        lock(&self.inner).idle.len()
    }
}

/// Closes expired connections until none is left (or the pool is gone).
async fn sweep(inner: Weak<Mutex<Inner>>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let mut inner = lock(&inner);
            let now = Instant::now();
            inner.idle.retain(|i| i.until > now);
            match inner.idle.first() {
                Some(oldest) => oldest.until,
                None => {
                    inner.sweeping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}
