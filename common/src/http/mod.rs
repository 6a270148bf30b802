//! The HTTP edge both roles share: reason phrases, the error page, the `Date` value and
//! the lingering close, so that a multiplexer's answer and a processor's answer to the
//! same status look the same.

pub mod date;
pub mod error_page;
pub mod linger;
pub mod rate;
pub mod status;
