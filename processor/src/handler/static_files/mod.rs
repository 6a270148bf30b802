//! The static-file handler: a request target made safe ([`target`]), resolved under the
//! document root one component at a time with SymLinksIfOwnerMatch ([`resolve`]), and
//! answered with validators, conditional requests and ranges ([`respond`]); small hot
//! files' answers kept in memory and revalidated per request ([`hot`]).

#[cfg(test)]
mod fuzz;
pub mod hot;
pub mod resolve;
pub mod respond;
pub mod target;

pub use respond::respond;
