//! Connections from one processor to its environment's backends: at most
//! `max_backends` at once (more could only wait on the socket, behind the ones this
//! processor keeps: a request beyond them waits here for a slot, first come first
//! served, within `fastcgi_timeout`), and idle ones kept between requests
//! (`FCGI_KEEP_CONN`): a request without a body and with a safe method (GET, HEAD,
//! OPTIONS) takes the most recently used idle connection, else connects. A connection
//! whose answer ended cleanly goes back for the next request only while another
//! request of this processor is with the backends (under concurrency, when the next
//! one is due at once; a lone client's connection is closed after each answer, as
//! without keeping), at most `requests_per_connection` requests in all (then the
//! backend sees the close and accepts again: a request waiting on the socket, from
//! another processor of the environment or while backends are still being started,
//! waits for at most that many answers of a busy backend) and idle at most [`IDLE`].
//! None once the processor stops taking connections ([`Pool::close`]), and none while
//! another processor of the environment runs ([`Pool::set_shared`]: each processor may
//! hold `max_backends` connections, so a second one's requests would wait on the socket
//! behind the first's kept connections; measured with a successor running beside a
//! recycling processor: p99 8 → 60 ms). Saves a socket,
//! a connect, two epoll_ctl and a close per request here, and an accept, a shutdown, a
//! read to EOF and a close in the backend.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// Another processor of the environment runs: nothing is kept meanwhile.
    shared: bool,
    /// Requests with the backends now ([`InFlight`]).
    active: usize,
}

/// A request with the backends: its connection slot, counted while it lives.
#[derive(Debug)]
pub struct InFlight {
    inner: Arc<Mutex<Inner>>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        inner.active = inner.active.saturating_sub(1);
    }
}

impl InFlight {
    /// Whether its connection may be kept now: another request is with the backends,
    /// and the pool keeps connections ([`Pool::keeps`]).
    pub fn may_keep(&self) -> bool {
        let inner = lock(&self.inner);
        inner.active > 1 && !inner.closed && !inner.shared
    }
}

/// The connections of one [`super::FastcgiConf`]. A clone starts empty; any two
/// compare equal (the configuration they belong to is what compares).
#[derive(Debug)]
pub struct Pool {
    inner: Arc<Mutex<Inner>>,
    /// One permit per connection in use.
    slots: Arc<Semaphore>,
    /// `max_backends`: connections at once, and idle ones kept at most.
    max: usize,
}

impl Clone for Pool {
    fn clone(&self) -> Self {
        Self::new(self.max)
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
    /// At most `max` connections at once (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::default(),
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Waits for a connection slot (first come, first served) and counts the request
    /// with the backends until the guard goes.
    /// (`None` only if the semaphore were closed, which nothing does.)
    pub async fn begin(&self) -> Option<InFlight> {
        if let Some(free) = self.try_begin() {
            return Some(free);
        }
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        Some(self.counted(slot))
    }

    /// [`Self::begin`] when a slot is free now (no waiting, so no timer to arm).
    pub fn try_begin(&self) -> Option<InFlight> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.counted(slot))
    }

    fn counted(&self, slot: OwnedSemaphorePermit) -> InFlight {
        lock(&self.inner).active += 1;
        InFlight {
            inner: self.inner.clone(),
            _slot: slot,
        }
    }

    /// For a request that may keep its connection, under one lock: `None` when the
    /// pool keeps nothing now ([`Self::keeps`]: the request must not ask to), else the
    /// most recently used idle connection that has not expired, if any, and the
    /// requests it carried.
    pub fn keeping(&self) -> Option<Option<(UnixStream, u32)>> {
        let mut inner = lock(&self.inner);
        if inner.closed || inner.shared {
            return None;
        }
        Some(most_recent(&mut inner))
    }

    /// The most recently used idle connection that has not expired, and the requests it
    /// carried.
    #[cfg(test)]
    pub fn take(&self) -> Option<(UnixStream, u32)> {
        most_recent(&mut lock(&self.inner))
    }

    /// Keeps `stream` (which has carried `uses` requests) for the next request, unless
    /// `max_backends` are kept already (then it is closed).
    pub fn put(&self, stream: UnixStream, uses: u32) {
        let mut inner = lock(&self.inner);
        if inner.closed || inner.shared || inner.idle.len() >= self.max {
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

    /// Whether connections are kept now (not closed, not shared).
    #[cfg(test)]
    pub fn keeps(&self) -> bool {
        let inner = lock(&self.inner);
        !inner.closed && !inner.shared
    }

    /// Another processor of the environment runs (`true`: the idle connections are
    /// closed and none is kept until it is `false` again) or none does.
    pub fn set_shared(&self, shared: bool) {
        let mut inner = lock(&self.inner);
        inner.shared = shared;
        if shared {
            inner.idle.clear();
        }
    }

    /// Idle connections kept now.
    pub fn idle(&self) -> usize {
        lock(&self.inner).idle.len()
    }
}

/// Pops the most recent idle connection unless it has expired (then the older ones
/// have too, and all go).
fn most_recent(inner: &mut Inner) -> Option<(UnixStream, u32)> {
    let last = inner.idle.pop()?;
    if last.until <= Instant::now() {
        inner.idle.clear();
        return None;
    }
    Some((last.stream, last.uses))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_bound_the_connections_in_use_first_come_first_served() {
        let pool = Pool::new(1);
        let first = pool.begin().await.unwrap();
        assert!(!first.may_keep(), "alone");
        let mut second = Box::pin(pool.begin());
        let waiting = tokio::time::timeout(Duration::from_millis(50), &mut second).await;
        assert!(
            waiting.is_err(),
            "a second connection while the only slot is used"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the slot came free")
            .unwrap();
        let pool2 = Pool::new(2);
        let a = pool2.begin().await.unwrap();
        let b = pool2.begin().await.unwrap();
        assert!(a.may_keep() && b.may_keep(), "two with the backends");
        drop((second, a, b));
    }

    #[tokio::test]
    async fn a_shared_pool_keeps_nothing_until_it_is_alone_again() {
        let pool = Pool::new(4);
        let pair = || UnixStream::pair().unwrap();
        let (a, _pa) = pair();
        pool.put(a, 1);
        let (x, y) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
        assert!(pool.keeps() && x.may_keep());
        pool.set_shared(true);
        assert_eq!(
            pool.idle(),
            0,
            "idle connections closed when another processor runs"
        );
        assert!(!pool.keeps() && !x.may_keep() && !y.may_keep());
        let (b, _pb) = pair();
        pool.put(b, 1);
        assert_eq!(pool.idle(), 0, "nothing kept while shared");
        pool.set_shared(false);
        assert!(pool.keeps() && x.may_keep());
        let (c, _pc) = pair();
        pool.put(c, 1);
        assert_eq!(pool.idle(), 1, "kept again once alone");
        drop((x, y));
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_expire_and_go_on_close() {
        let pool = Pool::new(2);
        let pair = || UnixStream::pair().unwrap();
        let (a, _pa) = pair();
        let (b, _pb) = pair();
        let (c, _pc) = pair();
        pool.put(a, 1);
        pool.put(b, 2);
        pool.put(c, 3);
        assert_eq!(pool.idle(), 2, "at most max_backends idle");
        // Most recent first.
        assert_eq!(pool.take().map(|(_, uses)| uses), Some(2));
        tokio::time::sleep(IDLE * 3).await;
        assert_eq!(pool.idle(), 0, "swept once idle for IDLE");
        assert!(pool.take().is_none());
        let (d, _pd) = pair();
        pool.put(d, 1);
        pool.close();
        assert_eq!(pool.idle(), 0);
        let (e, _pe) = pair();
        pool.put(e, 1);
        assert_eq!(pool.idle(), 0, "nothing kept once closed");
    }
}
