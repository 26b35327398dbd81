#![doc = include_str!("../README.md")]

pub mod client;
pub mod fleet;
pub mod outbox;
pub mod protocol;
pub mod pull;
pub mod server;
pub mod socket;

use std::path::PathBuf;

pub use client::{ClientError, ControlClient};
pub use protocol::{
    DaemonStatus, ErrorCode, PROTOCOL_VERSION, PowerReport, PowerState, QuiesceOutcome, Request,
    Response, SnapshotOutcome,
};
pub use server::{ControlHandler, HandlerError, serve};
pub use socket::{ControlListener, DEFAULT_SOCKET_MODE, SocketGuard, SocketOptions};

/// Where the daemon listens by default (systemd `RuntimeDirectory=clinicbox`).
pub const DEFAULT_SOCKET_PATH: &str = "/run/clinicbox/control.sock";

/// Errors setting up the server side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot bind control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {0} is in use by another running daemon")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
}
