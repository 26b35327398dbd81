#![doc = include_str!("../README.md")]

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
