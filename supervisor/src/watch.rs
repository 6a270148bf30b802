//! Reading one child's control channel: only what its role may say, within a bound
//! that follows from what it needs to say.
//!
//! A processor runs tenant code, so its channel is hostile input to root: it may say
//! `Ready` and `Recycling` (each once; repeats are ignored), in messages of at most
//! [`PROCESSOR_MESSAGE_MAX`] bytes and no fds. `Recycling` can start at most one
//! processor of its own environment, within `max_processors` (what a processor that
//! reports no room in its slot gets from the multiplexers anyway). Its `Spawn` is
//! refused (a line per [`REFUSAL_LOG_INTERVAL`]) and changes nothing. Anything it
//! cannot parse, any fd and any oversized message make it a [`Event::Violation`]: the
//! supervisor kills it.
//! A multiplexer is not tenant code: the same violation from it is a bug, logged, and it
//! is killed too.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::control::{AsyncChannel, ControlError, FromChild};
use common::seqpacket::PacketError;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::run::Event;

/// Largest control message read from a processor (`Ready` is a few bytes).
pub(crate) const PROCESSOR_MESSAGE_MAX: usize = 4096;
/// Largest control message read from a multiplexer (`Ready`, `Spawn { env }`).
pub(crate) const MULTIPLEXER_MESSAGE_MAX: usize = 64 * 1024;
/// At most one line per this interval about refused messages from one processor.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Reads `reader` (the supervisor's copy of child `pid`'s channel) until it closes or
/// the child breaks the protocol, turning what the role may say into events.
pub(crate) fn spawn(pid: i32, reader: OwnedFd, role: &'static str, tx: mpsc::Sender<Event>) {
    let processor = role != "multiplexer";
    // A FastCGI backend's channel closes at its exec; before that it is our own code,
    // which says nothing. Any message from it is a violation.
    let backend = role == "fastcgi-backend";
    let max = if processor {
        PROCESSOR_MESSAGE_MAX
    } else {
        MULTIPLEXER_MESSAGE_MAX
    };
    let mut chan = match AsyncChannel::with_max(reader, max) {
        Ok(c) => c,
        Err(e) => {
            error!(pid, "watching control channel: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let mut ready = false;
        let mut recycling = false;
        let mut refused = 0u64;
        let mut logged: Option<Instant> = None;
        loop {
            let ev = match chan.recv::<FromChild>(0).await {
                Ok(_) if backend => Event::Violation {
                    pid,
                    why: "a fastcgi backend says nothing on its control channel".into(),
                },
                Ok((FromChild::Ready, _)) if !ready => {
                    ready = true;
                    Event::Ready(pid)
                }
                Ok((FromChild::Ready, _)) => continue,
                Ok((FromChild::Recycling, _)) if processor && !recycling => {
                    recycling = true;
                    Event::Recycling(pid)
                }
                Ok((FromChild::Recycling, _)) if processor => continue,
                Ok((FromChild::Recycling, _)) => Event::Violation {
                    pid,
                    why: "only a processor says Recycling".into(),
                },
                Ok((FromChild::Spawn { env }, _)) if !processor => Event::Spawn { pid, env },
                Ok((FromChild::Spawn { env }, _)) => {
                    refused += 1;
                    if logged.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                        logged = Some(Instant::now());
                        warn!(
                            pid,
                            env,
                            refused,
                            "processor asked to start a processor: refused (only multiplexers may)"
                        );
                    }
                    continue;
                }
                Ok((FromChild::Given { .. } | FromChild::Pending { .. }, _)) => Event::Violation {
                    pid,
                    why: "only an fd keeper answers Given or Pending".into(),
                },
                Err(ControlError::Packet(PacketError::Closed { .. } | PacketError::Io { .. }))
                | Err(ControlError::Poll(_)) => break,
                Err(e) => {
                    let _ = tx
                        .send(Event::Violation {
                            pid,
                            why: e.to_string(),
                        })
                        .await;
                    break;
                }
            };
            if tx.send(ev).await.is_err() {
                break;
            }
        }
    });
}
