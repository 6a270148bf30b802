//! FastCGI (FastCGI 1.0, responder role): a request whose script has one of the
//! environment's FastCGI extensions is answered by one of the environment's backends
//! (`php-cgi`…), which the supervisor starts and which share the processor's uid and
//! chroot. The script is chosen by [`super::cgi::select`], like a CGI script; the
//! parameters are CGI's meta-variables ([`params`]); the processor connects to the
//! backends' listening socket (a connection kept for the next request when it may be:
//! [`pool`]) and speaks the records of [`record`] itself ([`client`]); the answer's
//! header block and body go through CGI's [`super::cgi::output`].

mod ask;
pub mod client;
#[cfg(test)]
mod fuzz;
pub mod params;
pub mod pool;
pub mod record;

use std::path::PathBuf;
use std::time::Duration;

pub(crate) use ask::ask;
pub use client::{Backend, FcgiError};

/// The environment's FastCGI backends, from the processor's bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastcgiConf {
    /// The backends' listening Unix socket, as this process sees it.
    pub socket: PathBuf,
    /// File name extensions (`.php`) whose scripts the backends run.
    pub extensions: Vec<String>,
    /// `fastcgi_timeout`: the longest wait for the backend's next byte (504).
    pub timeout: Duration,
    /// The backend program (`command[0]`) and the environment, for log lines.
    pub program: String,
    pub environment: String,
    /// `requests_per_connection`: requests one kept connection carries; 1: none kept.
    pub requests_per_connection: u32,
    /// This processor's connections to the backends (at most `max_backends`).
    pub pool: pool::Pool,
}

impl FastcgiConf {
    /// From the bootstrap's `fastcgi` of environment `environment`.
    pub fn from_boot(boot: &common::control::FastcgiBoot, environment: &str) -> Self {
        Self {
            socket: boot.socket.clone(),
            extensions: boot.extensions.clone(),
            timeout: Duration::from_secs(boot.timeout_secs.max(1)),
            program: boot.program.clone(),
            environment: environment.to_string(),
            requests_per_connection: boot.requests_per_connection.max(1),
            pool: pool::Pool::new(boot.max_backends as usize),
        }
    }

    /// Whether a request may go over a kept connection: one without a body (nothing to
    /// send again) with a safe method, so that a kept connection the backend closed
    /// before it read the request (its `max_requests` reached) is retried on a new one
    /// without running anything twice.
    pub fn may_keep(&self, method: &[u8], has_body: bool) -> bool {
        self.requests_per_connection > 1 && !has_body && matches!(method, b"GET" | b"HEAD" | b"OPTIONS")
    }

    /// Whether a file called `name` is run by the backends.
    pub fn has_extension(&self, name: &[u8]) -> bool {
        self.extensions
            .iter()
            .any(|e| name.len() > e.len() && name.ends_with(e.as_bytes()))
    }
}
