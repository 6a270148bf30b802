//! One test binary for every integration test (ripgrep's trick): each module starts
//! the real `bulkhead` binary through the harness.

mod harness;
mod isolation;
