//! The supervisor's side of a generation's two fd keepers (`common::keeper`): the
//! hand-off socket pairs are made in batches and each end goes at once to its keeper,
//! so that no process holds more than one fd per environment (the supervisor none):
//! 10,000 environments fit under a 20,000 open-files limit, a reload's two
//! generations too. A new multiplexer gets the multiplexer ends streamed by their
//! keeper; a new processor gets its environment's end from the other keeper through
//! the supervisor (one round trip, then the supervisor closes its copy).
//!
//! A keeper is a child like any other (fork+exec of our binary, `bulkhead fd-keeper`,
//! dropped to the multiplexers' user) but not in the child table: it is owned by its
//! generation, answers only the supervisor, and exits when its control channel closes
//! with the generation. Its death is found by the reaper ([`Keepers::owns`]).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use common::control::{self, Bootstrap, ControlError, FromChild, Receiver, RoleBoot, ToChild};
use common::keeper::KeeperBoot;
use common::privdrop::Credentials;
use common::seqpacket::{seqpacket_pair, PacketError};
use conf::Config;
use thiserror::Error;

use crate::spawn::{self, SpawnError};

/// Pairs made at a time before their ends go to the keepers: what the supervisor
/// holds at most while a generation is built (two fds each).
pub const PAIR_BATCH: usize = 64;

/// How long the supervisor waits for a keeper's answer (it answers from memory).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a keeper could not do its part.
#[derive(Debug, Error)]
pub enum KeeperError {
    #[error("fd keeper: {0}")]
    Spawn(#[from] SpawnError),
    #[error("fd keeper (pid {pid}): {source}")]
    Control { pid: i32, source: ControlError },
    #[error("hand-off socketpair for environment {env}: {source}")]
    Pair { env: String, source: PacketError },
    #[error("fd keeper (pid {pid}) has no end for environment {env}")]
    NoEnd { pid: i32, env: usize },
    #[error("fd keeper (pid {pid}) answered {got}")]
    Answer { pid: i32, got: String },
}

/// One keeper process.
pub struct Keeper {
    pub pid: i32,
    control: OwnedFd,
}

impl Keeper {
    fn start(
        exe: &Path,
        side: &str,
        cfg: &Config,
        generation: u64,
        privileged: bool,
    ) -> Result<Keeper, KeeperError> {
        let s = spawn::spawn(exe, "fd-keeper")?;
        let k = Keeper {
            pid: s.pid,
            control: s.control,
        };
        let boot = Bootstrap {
            credentials: privileged.then_some(Credentials {
                uid: cfg.server.uid,
                gid: cfg.server.gid,
                chroot: None,
            }),
            role: RoleBoot::Keeper(KeeperBoot {
                side: side.to_owned(),
                generation,
                ends: cfg.environments.len() as u32,
            }),
            sandbox: None,
        };
        k.send(&ToChild::Bootstrap(Box::new(boot)), &[])?;
        Ok(k)
    }

    fn send(&self, msg: &ToChild, fds: &[RawFd]) -> Result<(), KeeperError> {
        control::send(self.control.as_fd(), msg, fds).map_err(|source| KeeperError::Control {
            pid: self.pid,
            source,
        })
    }

    fn answer(&self, max_fds: usize) -> Result<(FromChild, Vec<OwnedFd>), KeeperError> {
        Receiver::with_max(4096)
            .recv_blocking(self.control.as_fd(), max_fds, ANSWER_TIMEOUT)
            .map_err(|source| KeeperError::Control {
                pid: self.pid,
                source,
            })
    }
}

/// A generation's two keepers.
pub struct Keepers {
    /// Keeps the multiplexer ends; streams them to each new multiplexer.
    pub multiplexer: Keeper,
    /// Keeps the processor ends; gives one to each new processor.
    pub processor: Keeper,
}

impl Keepers {
    /// Starts both keepers and makes every environment's pair, each end sent to its
    /// keeper in batches (the supervisor holds at most one batch at a time).
    pub fn start(
        exe: &Path,
        cfg: &Config,
        generation: u64,
        privileged: bool,
    ) -> Result<Keepers, KeeperError> {
        let k = Keepers {
            multiplexer: Keeper::start(exe, "multiplexer", cfg, generation, privileged)?,
            processor: Keeper::start(exe, "processor", cfg, generation, privileged)?,
        };
        for batch in cfg.environments.chunks(PAIR_BATCH) {
            let mut pairs = Vec::with_capacity(batch.len());
            for e in batch {
                pairs.push(seqpacket_pair().map_err(|source| KeeperError::Pair {
                    env: e.name.clone(),
                    source,
                })?);
            }
            let mux: Vec<RawFd> = pairs.iter().map(|(m, _)| m.as_raw_fd()).collect();
            let procs: Vec<RawFd> = pairs.iter().map(|(_, p)| p.as_raw_fd()).collect();
            k.multiplexer.send(&ToChild::Keep, &mux)?;
            k.processor.send(&ToChild::Keep, &procs)?;
        }
        Ok(k)
    }

    /// Whether `pid` is one of these keepers.
    pub fn owns(&self, pid: i32) -> bool {
        self.multiplexer.pid == pid || self.processor.pid == pid
    }

    /// Environment `env`'s processor end (the caller's copy, to send and close).
    pub fn processor_end(&self, env: usize) -> Result<OwnedFd, KeeperError> {
        let k = &self.processor;
        k.send(&ToChild::Give { env: env as u32 }, &[])?;
        loop {
            match k.answer(1)? {
                (FromChild::Given { env: e }, mut fds) if e as usize == env => {
                    return fds.pop().ok_or(KeeperError::NoEnd { pid: k.pid, env })
                }
                // A late answer to an earlier request that timed out: never another
                // environment's end for this processor.
                (FromChild::Given { .. }, _) => continue,
                (other, _) => {
                    return Err(KeeperError::Answer {
                        pid: k.pid,
                        got: format!("{other:?}"),
                    })
                }
            }
        }
    }

    /// A new multiplexer's `env_stream`: the keeper sends every multiplexer end on
    /// the other side of the returned socket.
    pub fn multiplexer_stream(&self) -> Result<OwnedFd, KeeperError> {
        let (ours, theirs) = seqpacket_pair().map_err(|source| KeeperError::Pair {
            env: "(stream)".into(),
            source,
        })?;
        self.multiplexer.send(&ToChild::Stream, &[ours.as_raw_fd()])?;
        Ok(theirs)
    }

    /// How many environments have hand-backs waiting for a multiplexer.
    pub fn pending_handbacks(&self) -> Result<u32, KeeperError> {
        let k = &self.multiplexer;
        k.send(&ToChild::Pending, &[])?;
        match k.answer(0)? {
            (FromChild::Pending { ends }, _) => Ok(ends),
            (other, _) => Err(KeeperError::Answer {
                pid: k.pid,
                got: format!("{other:?}"),
            }),
        }
    }

    /// Shuts every queue down for writing: the processors that drain see its end.
    pub fn close_queues(&self) -> Result<(), KeeperError> {
        self.multiplexer.send(&ToChild::CloseQueues, &[])
    }
}
