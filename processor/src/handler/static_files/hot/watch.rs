//! inotify watches that stand in for the hot cache's stats: one inotify instance per
//! processor thread, made on first use as the tenant, a watch on every directory, every
//! `.htaccess` and the file a cached answer depends on, and a generation per watch that
//! every event on it bumps, but a directory's events about a child's content or mode
//! (the child, if an entry depends on it, is watched itself). Before a cached answer is
//! used the queue is drained with non-blocking `read`s (no path lookup) when it may
//! hold an event; the answer is used only while each of its watches is at the
//! generation it was taken at.
//!
//! A change made through the file system (a write, truncate, chmod, chown, utime, a name
//! created, removed or renamed, the root moved away) queues its event before the
//! syscall making it returns, so a drain after the request was read sees every change
//! that finished before the client sent it. The instance is also registered with the
//! runtime's reactor (edge-triggered epoll), which learns that it is readable in the
//! same `epoll_wait` that reports the request's bytes, or an earlier one (epoll's ready
//! list is in the order things became ready, and the processor's runtime takes as many
//! events per wait as it can have fds: `serve::run`). So a request read after the reactor woke
//! its connection needs no `read` when the reactor says the queue is empty; one whose
//! bytes may have arrived after the reactor's last look (a connection's first request,
//! read by a multiplexer; pipelined bytes; TLS and HTTP/2, whose libraries buffer) is
//! marked with [`suspect`] by the protocol code and gets the `read`, as does every
//! request without a reactor. Saves one syscall per keep-alive request. What inotify does not see (a write through a
//! shared mapping, a change made by another NFS client, a mount over a directory) the
//! stat revalidation still catches, which runs at most [`super::REVALIDATE`] apart.
//! An overflowed queue (`IN_Q_OVERFLOW`) makes every entry stale. A watch the kernel
//! drops (`IN_IGNORED`: the inode is gone or unmounted) makes its entries stale. When no
//! instance or watch can be had (the uid's `max_user_instances`, 128 by default, or
//! `max_user_watches`, or a directory that may be searched but not read) the entry is
//! revalidated by stat on every request, as before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use thiserror::Error;

/// Why an entry is not watched (it is then revalidated by stat on every request).
#[derive(Debug, Error)]
pub enum WatchError {
    #[error("no inotify instance: {0}")]
    Init(Errno),
    #[error("inotify_add_watch {path}: {errno}")]
    Add { path: String, errno: Errno },
}

/// The events that can change what a cached answer holds or grants (not IN_ACCESS or
/// IN_OPEN: the cache's own reads must not invalidate it).
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DONT_FOLLOW
}

struct Slot {
    generation: u64,
    refs: u32,
}

struct Watcher {
    /// A duplicate of the instance's fd in the reactor, when there is one (epoll
    /// reports the open file, whichever fd it was added by).
    reactor: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    inotify: Inotify,
    slots: HashMap<WatchDescriptor, Slot>,
    /// Bumped by a queue overflow: every entry taken before it is stale.
    epoch: u64,
}

thread_local! {
    /// Made on first use; `Err`: `inotify_init1` failed with this (not tried again).
    static WATCHER: RefCell<Option<Result<Watcher, Errno>>> = const { RefCell::new(None) };
    /// A request was read that the reactor's readiness may not cover: the next check
    /// drains with a `read`.
    static SUSPECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The request being served was read without the reactor having looked at the
/// sockets since its bytes arrived, as far as the caller can tell (see the module
/// documentation): the next [`unchanged`] reads the queue. Any check after it will do:
/// a drain after the request was read covers it.
pub fn suspect() {
    SUSPECT.with(|s| s.set(true));
}

/// The watches one cached answer holds, with their generations when taken. Dropping it
/// releases them (a watch no entry holds is removed).
#[derive(Debug)]
pub struct Watched {
    epoch: u64,
    watches: Vec<(WatchDescriptor, u64)>,
}

impl Watcher {
    /// Drains the queue if it may hold an event: a request was marked [`suspect`], or
    /// the reactor says the instance is readable, or there is no reactor.
    fn check(&mut self) {
        let suspect = SUSPECT.with(|s| s.replace(false));
        let Some(reactor) = &self.reactor else {
            return self.drain();
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match reactor.poll_read_ready(&mut cx) {
            std::task::Poll::Ready(Ok(mut ready)) => {
                // Drained to EAGAIN: an event queued since raises a new edge, and the
                // reactor keeps a readiness it set after this guard was taken.
                if Self::drain_into(&self.inotify, &mut self.slots, &mut self.epoch) {
                    ready.clear_ready();
                }
            }
            std::task::Poll::Ready(Err(_)) => self.drain(),
            std::task::Poll::Pending if suspect => self.drain(),
            std::task::Poll::Pending => {}
        }
    }

    fn drain(&mut self) {
        Self::drain_into(&self.inotify, &mut self.slots, &mut self.epoch);
    }

    /// Reads the queue to EAGAIN (true) or an error (false), bumping generations (an
    /// associated fn so that a reactor guard borrowing another field can be held).
    fn drain_into(inotify: &Inotify, slots: &mut HashMap<WatchDescriptor, Slot>, epoch: &mut u64) -> bool {
        loop {
            let events = match inotify.read_events() {
                Ok(events) if !events.is_empty() => events,
                // EAGAIN (nothing queued) or an error: a failed read can lose events, so
                // anything but EAGAIN makes every entry stale.
                Ok(_) | Err(Errno::EAGAIN) => return true,
                Err(_) => {
                    *epoch += 1;
                    return false;
                }
            };
            for e in events {
                if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    *epoch += 1;
                } else if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                    slots.remove(&e.wd);
                } else if about_a_child_only(e.mask, e.name.as_deref()) {
                    // A directory's child's content or mode: what an entry depends on
                    // has a watch of its own, and a busy log file beside cached files
                    // must not drop them (the stamps did not either: a child's write
                    // leaves the directory's stamp alone).
                } else if let Some(slot) = slots.get_mut(&e.wd) {
                    slot.generation += 1;
                }
            }
        }
    }

    fn release(&mut self, wd: WatchDescriptor) {
        let Some(slot) = self.slots.get_mut(&wd) else {
            return;
        };
        slot.refs -= 1;
        if slot.refs == 0 {
            self.slots.remove(&wd);
            // Its IN_IGNORED is dropped by the drain (no slot).
            let _ = self.inotify.rm_watch(wd);
        }
    }
}

/// An event on a directory's watch about one of its children (it has a name) that
/// changed no name: a write or a chmod of the child.
fn about_a_child_only(mask: AddWatchFlags, name: Option<&OsStr>) -> bool {
    let content = AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_ISDIR;
    name.is_some_and(|n| !n.is_empty()) && content.contains(mask)
}

fn with_watcher<T>(f: impl FnOnce(&mut Watcher) -> T) -> Result<T, WatchError> {
    WATCHER.with(|w| match w.borrow_mut().get_or_insert_with(init) {
        Ok(watcher) => Ok(f(watcher)),
        Err(errno) => Err(WatchError::Init(*errno)),
    })
}

fn init() -> Result<Watcher, Errno> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).inspect_err(|errno| {
        tracing::debug!(%errno, "no inotify instance: hot files revalidated by stat");
    })?;
    Ok(Watcher {
        reactor: register(&inotify),
        inotify,
        slots: HashMap::new(),
        epoch: 0,
    })
}

/// The instance's fd in this thread's runtime's reactor, if there is one with I/O.
fn register(inotify: &Inotify) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::AsFd;
    tokio::runtime::Handle::try_current().ok()?;
    let dup = inotify.as_fd().try_clone_to_owned().ok()?;
    // A runtime built without I/O panics here rather than erring.
    std::panic::catch_unwind(move || common::fds::async_fd_readable(dup))
        .ok()?
        .ok()
}

/// Watches `root` and each of `rel` (paths below it), taking their generations after
/// the queue is drained. The caller checks the stamps again afterwards: what changes
/// from then on bumps a generation.
pub fn watch<'a>(root: &Path, rel: impl Iterator<Item = &'a [u8]>) -> Result<Watched, WatchError> {
    with_watcher(|w| {
        let mut added: Vec<WatchDescriptor> = Vec::new();
        let mut add = |w: &mut Watcher, path: &Path| -> Result<(), WatchError> {
            let wd = w
                .inotify
                .add_watch(path, mask())
                .map_err(|errno| WatchError::Add {
                    path: path.display().to_string(),
                    errno,
                })?;
            w.slots
                .entry(wd)
                .or_insert(Slot {
                    generation: 0,
                    refs: 0,
                })
                .refs += 1;
            added.push(wd);
            Ok(())
        };
        let mut result = add(w, root);
        for r in rel {
            if result.is_err() {
                break;
            }
            let mut p = root.as_os_str().as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(r);
            result = add(w, Path::new(OsStr::from_bytes(&p)));
        }
        if let Err(e) = result {
            for wd in added {
                w.release(wd);
            }
            return Err(e);
        }
        w.drain();
        let watches = added
            .into_iter()
            .filter_map(|wd| w.slots.get(&wd).map(|s| (wd, s.generation)))
            .collect();
        Ok(Watched {
            epoch: w.epoch,
            watches,
        })
    })?
}

/// Drains the queue if it may hold an event ([`Watcher::check`]); whether nothing
/// `watched` holds has changed since it was taken.
pub fn unchanged(watched: &Watched) -> bool {
    with_watcher(|w| {
        w.check();
        w.epoch == watched.epoch
            && watched
                .watches
                .iter()
                .all(|(wd, g)| w.slots.get(wd).is_some_and(|s| s.generation == *g))
    })
    .unwrap_or(false)
}

impl Drop for Watched {
    fn drop(&mut self) {
        // At thread exit the watcher may be gone already; its fd closes with it.
        let _ = WATCHER.try_with(|w| {
            if let Ok(mut w) = w.try_borrow_mut() {
                if let Some(Ok(w)) = &mut *w {
                    for (wd, _) in self.watches.drain(..) {
                        w.release(wd);
                    }
                }
            }
        });
    }
}

/// Makes this thread's watcher unavailable, as when the uid is out of instances (for
/// tests).
#[cfg(test)]
pub fn disable() {
    WATCHER.with(|w| *w.borrow_mut() = Some(Err(Errno::EMFILE)));
}

/// Watches held by this thread (for tests).
#[cfg(test)]
pub fn held() -> usize {
    WATCHER.with(|w| match &*w.borrow() {
        Some(Ok(w)) => w.slots.len(),
        _ => 0,
    })
}
