//! Idle keep-alive connections parked outside their task: a connection that has
//! answered everything, holds no unread byte and stayed idle for [`PARK_AFTER`] ends
//! its task, and its socket waits here as a small record, in one epoll set of this
//! processor's own (registered once with tokio's reactor through an [`AsyncFd`]) and one
//! FIFO queue of deadlines, instead of a task, a timer and a reactor registration each.
//!
//! Readable (a request, an end of file or an error): the record is taken out and
//! handed to the resume callback, which starts the connection's loop again. Its
//! deadline passed: the record is dropped (the socket closed without an answer, as an
//! idle connection's keep-alive timeout does). [`Stop::Now`]: every record is dropped
//! at once. A graceful stop leaves them to their next request or their deadline, as it
//! leaves idle connections in their loops.
//!
//! Each socket is registered `EPOLLIN | EPOLLRDHUP | EPOLLONESHOT` with its slab index
//! and a generation as the event's data, and removed from the set when it wakes, so the
//! set holds exactly the parked sockets. Every parked connection shares
//! `keep_alive_timeout`, so deadlines are pushed in order and the queue's front is the
//! next to expire: one timer for the whole set.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::session::Stop;

/// How long a connection stays idle in its loop before it is parked. A client that
/// sends its next request sooner (a benchmark, a proxy's pool, a page's resources)
/// never pays the park's syscalls (the reactor's deregistration and registration, the
/// set's two `epoll_ctl`s), and fewer than a tenth of a second's connections are ever
/// idle in a task at once.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// Events read from the set at a time.
const BATCH: usize = 64;

/// The heap is trimmed once this many connections were parked since the last trim,
/// at most once per [`TRIM_EVERY`].
const TRIM_AFTER: usize = 256;
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Why the set could not be made or used.
#[derive(Debug, Error)]
pub enum ParkError {
    #[error("epoll_create1: {0}")]
    Create(nix::Error),
    #[error("registering the park set with the reactor: {0}")]
    Reactor(std::io::Error),
    #[error("epoll_ctl: {0}")]
    Register(nix::Error),
    #[error("the park set is closed (the processor is stopping)")]
    Closed,
}

/// The set's epoll fd, as the reactor sees it.
struct Set(Epoll);

impl AsRawFd for Set {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

struct Entry<T> {
    fd: OwnedFd,
    value: T,
    generation: u32,
}

/// The parked records, by slab index.
struct Slab<T> {
    entries: Vec<Option<Entry<T>>>,
    free: Vec<u32>,
    /// The generation of the next record put at each index (so a stale event or
    /// deadline for a record since resumed never touches the one that took its place).
    generations: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    fn insert(&mut self, fd: OwnedFd, value: T) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.entries.push(None);
                self.generations.push(0);
                self.entries.len() - 1
            }
        };
        let generation = self.generations[index];
        self.generations[index] = generation.wrapping_add(1);
        self.entries[index] = Some(Entry {
            fd,
            value,
            generation,
        });
        self.len += 1;
        key(index, generation)
    }

    fn get(&self, key: u64) -> Option<&Entry<T>> {
        let (index, generation) = split(key);
        self.entries
            .get(index)?
            .as_ref()
            .filter(|e| e.generation == generation)
    }

    fn remove(&mut self, key: u64) -> Option<Entry<T>> {
        self.get(key)?;
        let index = split(key).0;
        self.free.push(index as u32);
        self.len -= 1;
        self.entries[index].take()
    }

    fn drain(&mut self) -> Vec<Entry<T>> {
        self.free.clear();
        self.len = 0;
        // Indices and generations restart together: nothing stale remains (the
        // queue is cleared with the slab, a closed socket leaves the set).
        self.generations.clear();
        self.entries.drain(..).flatten().collect()
    }
}

fn key(index: usize, generation: u32) -> u64 {
    ((generation as u64) << 32) | index as u64
}

fn split(key: u64) -> (usize, u32) {
    ((key & 0xffff_ffff) as usize, (key >> 32) as u32)
}

/// One processor's parked connections, each a socket and a `T` (what its loop needs
/// to go on).
pub struct ParkSet<T> {
    epoll: AsyncFd<Set>,
    slab: RefCell<Slab<T>>,
    /// (deadline, key) in deadline order; entries of records since resumed are skipped
    /// when they come up, and swept when they outnumber the live ones.
    deadlines: RefCell<VecDeque<(Instant, u64)>>,
    /// Wakes the driver when the queue gets a front it did not wait for.
    changed: Notify,
    /// The driver has stopped: nothing may be parked any more.
    closed: std::cell::Cell<bool>,
    /// Connections parked since the last heap trim, and when that was.
    trimmed: std::cell::Cell<(usize, Option<Instant>)>,
}

impl<T> ParkSet<T> {
    pub fn new() -> Result<Rc<Self>, ParkError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(ParkError::Create)?;
        // SAFETY: the epoll fd is owned by the `Set` and stays open, the same file
        // description, for exactly as long as the AsyncFd that owns the `Set`.
        let epoll = unsafe { AsyncFd::register_with_interest(Set(epoll), tokio::io::Interest::READABLE) }
            .map_err(|e| ParkError::Reactor(e.into()))?;
        Ok(Rc::new(Self {
            epoll,
            slab: RefCell::new(Slab {
                entries: Vec::new(),
                free: Vec::new(),
                generations: Vec::new(),
                len: 0,
            }),
            deadlines: RefCell::new(VecDeque::new()),
            changed: Notify::new(),
            closed: std::cell::Cell::new(false),
            trimmed: std::cell::Cell::new((0, None)),
        }))
    }

    /// How many connections are parked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slab.borrow().len
    }

    /// Parks `fd` (a socket no task polls, with nothing buffered for it) with `value`
    /// until it is readable or `deadline`. On failure both are given back.
    pub fn park(&self, fd: OwnedFd, value: T, deadline: Instant) -> Result<(), (ParkError, OwnedFd, T)> {
        if self.closed.get() {
            return Err((ParkError::Closed, fd, value));
        }
        let mut slab = self.slab.borrow_mut();
        // Registered before it is stored: a failure leaves nothing behind. Index and
        // generation are known before the insert.
        let index = slab
            .free
            .last()
            .map(|&i| i as usize)
            .unwrap_or(slab.entries.len());
        let generation = slab.generations.get(index).copied().unwrap_or(0);
        let k = key(index, generation);
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
        if let Err(e) = self.epoll.get_ref().0.add(fd.as_fd(), EpollEvent::new(flags, k)) {
            return Err((ParkError::Register(e), fd, value));
        }
        let inserted = slab.insert(fd, value);
        debug_assert_eq!(inserted, k);
        let mut q = self.deadlines.borrow_mut();
        // Never before the last one: a record closes at its deadline or a little later
        // (only a spurious wake-up re-parks with an earlier one), never sooner.
        let deadline = q.back().map_or(deadline, |&(last, _)| deadline.max(last));
        let was_empty = q.is_empty();
        q.push_back((deadline, k));
        if q.len() > 2 * slab.len + 64 {
            q.retain(|&(_, k)| slab.get(k).is_some());
        }
        let (parks, at) = self.trimmed.get();
        self.trimmed.set((parks + 1, at));
        if was_empty || parks + 1 == TRIM_AFTER {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Runs the set until `stop` says [`Stop::Now`] (then every record is dropped) or
    /// its sender is gone: each record whose socket turns readable goes to `resume`,
    /// each whose deadline passes is dropped.
    pub async fn run(&self, mut stop: watch::Receiver<Stop>, resume: impl Fn(OwnedFd, T)) {
        let mut events = [EpollEvent::empty(); BATCH];
        loop {
            if *stop.borrow_and_update() == Stop::Now {
                self.close_all();
                return;
            }
            let next = self.next_deadline();
            let trim = self.trim_due();
            tokio::select! {
                biased;
                r = stop.changed() => {
                    if r.is_err() {
                        self.close_all();
                        return;
                    }
                }
                g = self.epoll.readable() => {
                    let Ok(mut guard) = g else {
                        self.close_all();
                        return;
                    };
                    let n = match guard.get_inner().0.wait(&mut events, EpollTimeout::ZERO) {
                        Ok(n) => n,
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => {
                            tracing::error!("park set: epoll_wait: {e}; closing the parked connections");
                            self.close_all();
                            return;
                        }
                    };
                    if n < BATCH {
                        guard.clear_ready();
                    }
                    for ev in &events[..n] {
                        let Some(entry) = self.slab.borrow_mut().remove(ev.data()) else {
                            continue;
                        };
                        // Out of the set before its loop registers it with the reactor.
                        let _ = self.epoll.get_ref().0.delete(entry.fd.as_fd());
                        resume(entry.fd, entry.value);
                    }
                }
                () = sleep_until(next) => self.expire(Instant::now()),
                () = sleep_until(trim) => self.trim(),
                () = self.changed.notified() => {}
            }
        }
    }

    /// When the heap should be trimmed: [`TRIM_AFTER`] parks since the last trim,
    /// [`TRIM_EVERY`] after it.
    fn trim_due(&self) -> Option<Instant> {
        let (parks, at) = self.trimmed.get();
        (parks >= TRIM_AFTER).then(|| at.map_or_else(Instant::now, |at| at + TRIM_EVERY))
    }

    /// Gives the heap's free pages back to the system. The tasks of a burst of
    /// connections (each a few KiB while it served) leave free chunks between the
    /// heap's live ones once their connections are parked, and glibc returns only the
    /// top of the heap by itself (10,000 connections parked after a burst: a 4.3 MB
    /// heap, 0.4 MB of it in use). At most once a second, a walk of the free chunks.
    fn trim(&self) {
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases memory the allocator holds free.
        unsafe {
            libc::malloc_trim(0);
        }
        self.trimmed.set((0, Some(Instant::now())));
    }

    /// The front of the queue (stale entries dropped on the way).
    fn next_deadline(&self) -> Option<Instant> {
        let slab = self.slab.borrow();
        let mut q = self.deadlines.borrow_mut();
        while let Some(&(at, k)) = q.front() {
            if slab.get(k).is_some() {
                return Some(at);
            }
            q.pop_front();
        }
        None
    }

    /// Drops every record whose deadline is at or before `now`.
    fn expire(&self, now: Instant) {
        loop {
            let front = self.deadlines.borrow().front().copied();
            let Some((at, k)) = front else { return };
            if at > now {
                return;
            }
            self.deadlines.borrow_mut().pop_front();
            let entry = self.slab.borrow_mut().remove(k);
            // Dropped outside the borrows: the value's drop may count the connection
            // out; closing the fd removes it from the set.
            drop(entry);
        }
    }

    /// Drops every record (each socket closed).
    fn close_all(&self) {
        self.closed.set(true);
        let entries = self.slab.borrow_mut().drain();
        self.deadlines.borrow_mut().clear();
        drop(entries);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Bytes of one parked record of `T` in the slab.
#[cfg(test)]
pub fn record_size<T>() -> usize {
    std::mem::size_of::<Option<Entry<T>>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn pair() -> (OwnedFd, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (OwnedFd::from(a), b)
    }

    fn run_local<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    /// A readable socket is resumed with its value; the others stay parked, and a
    /// stale key (a record since resumed) touches nothing.
    #[test]
    fn readable_resumes_and_stop_closes() {
        run_local(async {
            let set = ParkSet::<u32>::new().unwrap();
            let (stop_tx, stop_rx) = watch::channel(Stop::Run);
            let far = Instant::now() + Duration::from_secs(3600);
            let (a, mut a_peer) = pair();
            let (b, _b_peer) = pair();
            set.park(a, 1, far).map_err(|e| e.0).unwrap();
            set.park(b, 2, far).map_err(|e| e.0).unwrap();
            let (c, mut c_peer) = pair();
            // Expires first: parked last, but its deadline is never before the others'.
            set.park(c, 3, Instant::now()).map_err(|e| e.0).unwrap();
            assert_eq!(set.len(), 3);
            let resumed = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let driver = {
                let (set, resumed) = (set.clone(), resumed.clone());
                tokio::task::spawn_local(async move {
                    set.run(stop_rx, |fd, v| resumed.borrow_mut().push((fd, v))).await;
                })
            };
            a_peer.write_all(b"GET").unwrap();
            while resumed.borrow().is_empty() {
                tokio::task::yield_now().await;
            }
            assert_eq!(resumed.borrow()[0].1, 1);
            // Parked again (its key changes), then readable again: resumed again.
            let (fd, v) = resumed.borrow_mut().pop().unwrap();
            set.park(fd, v, far).map_err(|e| e.0).unwrap();
            a_peer.write_all(b" /").unwrap();
            while resumed.borrow().is_empty() {
                tokio::task::yield_now().await;
            }
            // c (deadline: far, since the queue's back was far) is still there; b too.
            assert_eq!(set.len(), 2);
            let _ = c_peer.write_all(b"x");
            stop_tx.send(Stop::Now).unwrap();
            driver.await.unwrap();
            assert_eq!(set.len(), 0, "Stop::Now closes every record");
            let (fd, v) = resumed.borrow_mut().pop().unwrap();
            assert!(set.park(fd, v, far).is_err(), "nothing parks after the stop");
        });
    }

    /// A record whose deadline passes is dropped and its socket closed.
    #[test]
    fn deadline_closes() {
        run_local(async {
            let set = ParkSet::<std::rc::Rc<()>>::new().unwrap();
            let (_stop_tx, stop_rx) = watch::channel(Stop::Run);
            let (a, mut a_peer) = pair();
            let token = std::rc::Rc::new(());
            let soon = Instant::now() + Duration::from_millis(50);
            set.park(a, token.clone(), soon).map_err(|e| e.0).unwrap();
            let driver = {
                let set = set.clone();
                tokio::task::spawn_local(async move { set.run(stop_rx, |_, _| panic!("not readable")).await })
            };
            while std::rc::Rc::strong_count(&token) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(set.len(), 0);
            let mut byte = [0u8; 1];
            assert_eq!(std::io::Read::read(&mut a_peer, &mut byte).unwrap(), 0, "closed");
            driver.abort();
        });
    }
}
