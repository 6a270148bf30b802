//! The static-file handler: a request target made safe ([`target`]), resolved under the
//! document root one component at a time with SymLinksIfOwnerMatch ([`resolve`]), and
//! answered with validators, conditional requests and ranges ([`respond`]).

#[cfg(test)]
mod fuzz;
pub mod resolve;
pub mod respond;
pub mod target;

pub use respond::respond;
