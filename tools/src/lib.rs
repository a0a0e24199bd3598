//! Tools of status-messenger that run as code rather than as separate processes: the soak, and
//! what the servers and their drivers share (`server`).
//!
//! The load generator, the floor server and the soak's command line are binaries in `src/bin/`;
//! the soak itself lives here so that its short version runs as a test (`tests/soak.rs`).
#![forbid(unsafe_code)]

pub mod server;
pub mod soak;
