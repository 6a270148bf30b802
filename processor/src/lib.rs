//! The processor: one process of an environment's pool, running as the environment's
//! uid (optionally chrooted). It receives client connections from the multiplexers over
//! its environment's hand-off socket, serves them, and hands a connection back when a
//! later request on it names a vhost of another environment.

mod board;
pub mod http;
mod pool;

pub use pool::{run, ProcessorError};
