//! One test binary for every integration test (ripgrep's trick): each module starts
//! the real `bulkhead` binary through the harness.

mod bench_smoke;
mod chroot;
mod compromised;
mod config_check;
mod fd_hygiene;
mod handback;
mod hardening;
mod harness;
mod http_errors;
mod isolation;
mod lifecycle;
mod log_format;
mod log_links;
mod logs;
mod pools;
mod reload;
mod scoreboard;
mod screenshot;
mod status_access;
mod status_page;
mod tenant_stdio;
