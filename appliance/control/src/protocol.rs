//! Wire format of the control socket.
//!
//! # Format
//! One JSON object per line (UTF-8, `\n`-terminated, at most [`MAX_LINE_BYTES`]).
//! Requests: `{"v":1,"id":7,"request":{"op":"quiesce","deadline_ms":20000,"reason":"ups critical"}}`.
//! Responses: `{"v":1,"id":7,"response":{"result":"quiesced","elapsed_ms":812,"drained":true}}`.
//! A client may send several requests on one connection; each gets exactly one response line,
//! in order, carrying the request's `id`.
//!
//! # Versioning
//! `v` is the protocol version. A server answers a request with another `v` with an
//! `unsupported_version` error (it does not hang up), so a power process from one release and a
//! daemon from another fail loudly and stay connected. Fields are strict: our own processes are
//! the only peers, so an unknown field is a bug, not a future extension.

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest accepted line, newline included. Bounded so a confused peer cannot make the daemon
/// buffer without limit.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEnvelope {
    pub v: u32,
    pub id: u64,
    pub request: Request,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseEnvelope {
    pub v: u32,
    pub id: u64,
    pub response: Response,
}

/// What a client asks of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The power process's current view of the power supply, for the status page and the
    /// uplink's power saving. Sent on every change and as a periodic heartbeat.
    ReportPower { report: PowerReport },
    /// Stop accepting writes (503 + `Retry-After`), finish in-flight requests, commit and close
    /// the store, all within `deadline_ms`. Idempotent.
    Quiesce { deadline_ms: u64, reason: String },
    /// Undo a quiesce: reopen the store and accept writes again. Idempotent.
    Resume { reason: String },
    /// Ask for the daemon's status. (A struct variant so that unknown fields are rejected.)
    Status {},
    /// Write a consistent copy of the store, taken while writes go on, into the daemon's
    /// backup staging file; the caller packs it and removes it.
    Snapshot {},
    /// A backup was written (shown on the status page): its file, size, and when its snapshot
    /// was taken.
    BackupWritten {
        file: String,
        bytes: u64,
        at_ms: u64,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The request was applied.
    Ack,
    /// The daemon is quiesced: the store is closed.
    Quiesced(QuiesceOutcome),
    /// The daemon accepts writes again.
    Resumed,
    Status(DaemonStatus),
    Snapshot(SnapshotOutcome),
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Result of a quiesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuiesceOutcome {
    /// Time the daemon took, from receiving the request to the store being closed.
    pub elapsed_ms: u64,
    /// False when in-flight requests were still running at the deadline and were cut off
    /// (they were never acknowledged, so nothing acknowledged is lost).
    pub drained: bool,
}

/// Where a snapshot of the store was written and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotOutcome {
    /// The staging file, inside the daemon's data directory.
    pub path: String,
    pub bytes: u64,
    /// The store's last sequence number in the copy.
    pub last_seq: u64,
    /// The box's id (its DHIS2 system id), to name the backup.
    pub box_id: String,
    /// When the copy was taken (the store's clock, ms).
    pub at_ms: u64,
}

/// The daemon's status as seen over the control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonStatus {
    /// Daemon version string.
    pub version: String,
    /// False while quiesced.
    pub accepting_writes: bool,
    /// The last power report received, if any.
    pub power: Option<PowerReport>,
    /// The maintenance window a remote admin set (`rebootHours`), if one is in force: the
    /// installer restarts into a new release only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_hours: Option<[u8; 2]>,
}

/// Machine-readable error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line was not valid JSON or not a known request.
    BadRequest,
    /// The request's `v` is not [`PROTOCOL_VERSION`].
    UnsupportedVersion,
    /// The line exceeded [`MAX_LINE_BYTES`].
    TooLong,
    /// The handler did not finish within the request's deadline.
    DeadlineExceeded,
    /// The handler failed.
    Failed,
    /// The server is at its connection limit.
    Busy,
}

/// The power supply as the power process sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerReport {
    pub state: PowerState,
    /// Where the reading comes from, e.g. `nut:ups@127.0.0.1:3493`, `sysfs:BAT0`, `i2c:ina219`.
    pub source: String,
    /// Filtered state of charge, 0–100, if the source gives one.
    pub charge_percent: Option<f32>,
    /// Filtered runtime estimate in seconds, if the source gives one.
    pub runtime_s: Option<u64>,
    /// Seconds on battery so far (0 on line).
    pub on_battery_s: u64,
    /// One line for staff, e.g. "On battery for 3 min; the box shuts down at 20% charge".
    pub detail: String,
    /// Unix time of the reading, in seconds.
    pub observed_at_unix_s: u64,
}

/// Power states, in the order the policy moves through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// No usable reading yet, or the source is unreachable while on line.
    Unknown,
    OnLine,
    OnBattery,
    /// The policy decided to shut down; the shutdown sequence starts.
    Critical,
    /// The shutdown sequence is running.
    ShuttingDown,
}

impl PowerState {
    /// Short label for logs and the status page.
    pub fn label(self) -> &'static str {
        match self {
            PowerState::Unknown => "unknown",
            PowerState::OnLine => "on line",
            PowerState::OnBattery => "on battery",
            PowerState::Critical => "critical",
            PowerState::ShuttingDown => "shutting down",
        }
    }
}

impl std::fmt::Display for PowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_has_the_documented_shape() {
        let env = RequestEnvelope {
            v: PROTOCOL_VERSION,
            id: 7,
            request: Request::Quiesce {
                deadline_ms: 20_000,
                reason: "ups critical".into(),
            },
        };
        let line = serde_json::to_string(&env).expect("serialise");
        assert_eq!(
            line,
            r#"{"v":1,"id":7,"request":{"op":"quiesce","deadline_ms":20000,"reason":"ups critical"}}"#
        );
        let back: RequestEnvelope = serde_json::from_str(&line).expect("parse");
        assert_eq!(back, env);
    }

    #[test]
    fn response_line_has_the_documented_shape() {
        let env = ResponseEnvelope {
            v: 1,
            id: 7,
            response: Response::Quiesced(QuiesceOutcome {
                elapsed_ms: 812,
                drained: true,
            }),
        };
        let line = serde_json::to_string(&env).expect("serialise");
        assert_eq!(
            line,
            r#"{"v":1,"id":7,"response":{"result":"quiesced","elapsed_ms":812,"drained":true}}"#
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let line = r#"{"v":1,"id":1,"request":{"op":"status","extra":1}}"#;
        assert!(serde_json::from_str::<RequestEnvelope>(line).is_err());
    }

    #[test]
    fn power_report_round_trips() {
        let r = PowerReport {
            state: PowerState::OnBattery,
            source: "nut:ups@127.0.0.1:3493".into(),
            charge_percent: Some(81.5),
            runtime_s: Some(1200),
            on_battery_s: 42,
            detail: "On battery".into(),
            observed_at_unix_s: 1_700_000_000,
        };
        let req = Request::ReportPower { report: r.clone() };
        let json = serde_json::to_string(&req).expect("serialise");
        assert!(json.contains(r#""state":"on_battery""#), "{json}");
        assert_eq!(
            serde_json::from_str::<Request>(&json).expect("parse"),
            Request::ReportPower { report: r }
        );
    }
}
