//! Shared by every role: the control protocol, fd passing, the hand-off message, the
//! fixed fd numbers, privilege dropping and the bits of HTTP both multiplexer and
//! processor need.

pub mod bootfds;
pub mod child;
pub mod control;
pub mod fds;
#[cfg(test)]
mod fuzz;
pub mod handoff;
pub mod head;
pub mod http;
pub mod keeper;
pub mod panics;
pub mod privdrop;
pub mod sandbox;
pub mod scoreboard;
pub mod seqpacket;
pub mod vhost;
