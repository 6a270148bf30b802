//! The test binary for tests that need the machine to themselves: cargo runs test
//! binaries one after another, so nothing of the `integration` binary runs beside
//! these (a latency bound measured on a 2-CPU machine while another test starts 2,000
//! connections or 10,000 environments measures that test). Within this binary the
//! tests also take one lock, so they run one at a time whatever `--test-threads` says.

#[macro_use]
#[path = "../util/mod.rs"]
mod util;

/// Debian's slowhttptest (slowloris, slow body, slow read) beside a normal client.
mod slow_attacks;
