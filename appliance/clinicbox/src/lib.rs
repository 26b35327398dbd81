//! The ClinicBox daemon and admin commands. `main.rs` only parses arguments and calls in here,
//! so tests can run the same code in-process.

pub mod app;
pub mod config;
pub mod headers;
pub mod keys;
pub mod lifecycle;
pub mod listen;
pub mod logging;
pub mod outbox;
pub mod presence;
pub mod pull;
pub mod relay;
pub mod serve;
pub mod setup;
pub mod tls;
pub mod unlock;
pub mod uplink_socket;
