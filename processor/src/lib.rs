//! The processor: one process of an environment's pool, running as the environment's
//! uid (optionally chrooted). It receives client connections from the multiplexers over
//! its environment's hand-off socket, serves them, and hands a connection back when a
//! later request on it names a vhost of another environment.
//!
//! Layers, as OpenBSD httpd's `server_http.c` / `server_file.c` and sozu's protocols:
//! - [`serve`]: the receive loop (hand-offs in, hand-backs out, drain); [`route`]: which
//!   later requests of a connection stay here; [`park`]: idle keep-alive connections
//!   kept outside their task.
//! - [`session`]: what every protocol's connection shares with the serve loop (stop
//!   signal, limits, routing, observer, outcome).
//! - [`h1`]: the HTTP/1.1 protocol (head parsing, body framing, response framing, the
//!   one-shot path); `h2`: HTTP/2 over TLS (hyper's server, the same handlers).
//! - [`handler`]: what answers a protocol-neutral request; [`handler::static_files`]
//!   today, CGI and FastCGI later.
//! - [`transport`]: the bytes under a protocol; `Plain` and `Tls`.
//! - [`tls`]: the sites' certificates and keys (loaded as the environment) and the handshake.

pub mod backend;
mod board;
pub mod h1;
mod h2;
pub mod handler;
mod park;
mod recycle;
mod route;
mod serve;
pub mod session;
pub(crate) mod tls;
pub mod transport;

pub use serve::{run, ProcessorError};
