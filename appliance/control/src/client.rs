//! The client side, used by the power process (and admin tools).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::protocol::{
    DaemonStatus, ErrorCode, MAX_LINE_BYTES, PROTOCOL_VERSION, PowerReport, QuiesceOutcome,
    Request, RequestEnvelope, Response, ResponseEnvelope, SnapshotOutcome,
};
use crate::server::{LineRead, read_line_limited};

/// Errors a client call can return.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to control socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer from the daemon within {0:?}")]
    Timeout(Duration),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("unreadable answer from the daemon: {0}")]
    Decode(String),
    #[error("the daemon answered {code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("unexpected answer from the daemon: {0:?}")]
    Unexpected(Box<Response>),
}

/// A connection to the control socket that reconnects by itself.
///
/// Every call has a timeout; after an I/O error the connection is dropped and the next call
/// dials again, so a restarted daemon is picked up without ceremony.
#[derive(Debug)]
pub struct ControlClient {
    path: PathBuf,
    timeout: Duration,
    next_id: u64,
    conn: Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)>,
}

impl ControlClient {
    /// A client for the socket at `path`; `timeout` bounds each call except `quiesce`, which
    /// waits for its own deadline plus `timeout`.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        ControlClient {
            path: path.into(),
            timeout,
            next_id: 1,
            conn: None,
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Send the power report.
    pub async fn report_power(&mut self, report: PowerReport) -> Result<(), ClientError> {
        match self
            .call(Request::ReportPower { report }, self.timeout)
            .await?
        {
            Response::Ack => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ask the daemon to quiesce within `deadline`.
    pub async fn quiesce(
        &mut self,
        deadline: Duration,
        reason: &str,
    ) -> Result<QuiesceOutcome, ClientError> {
        let req = Request::Quiesce {
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            reason: reason.to_string(),
        };
        match self.call(req, deadline + self.timeout).await? {
            Response::Quiesced(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Ask the daemon to accept writes again.
    pub async fn resume(&mut self, reason: &str) -> Result<(), ClientError> {
        let req = Request::Resume {
            reason: reason.to_string(),
        };
        match self.call(req, self.timeout).await? {
            Response::Resumed => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The daemon's status.
    pub async fn status(&mut self) -> Result<DaemonStatus, ClientError> {
        match self.call(Request::Status {}, self.timeout).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// A consistent copy of the store in the daemon's staging file; `timeout` bounds the copy
    /// (a big store on an SD card takes a while).
    pub async fn snapshot(&mut self, timeout: Duration) -> Result<SnapshotOutcome, ClientError> {
        match self.call(Request::Snapshot {}, timeout).await? {
            Response::Snapshot(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Tells the daemon a backup was written.
    pub async fn backup_written(
        &mut self,
        file: &str,
        bytes: u64,
        at_ms: u64,
    ) -> Result<(), ClientError> {
        let req = Request::BackupWritten {
            file: file.to_string(),
            bytes,
            at_ms,
        };
        match self.call(req, self.timeout).await? {
            Response::Ack => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Send one request and wait for its answer. Every request is idempotent, so one retry on
    /// a fresh connection is safe when the old one turns out to be dead.
    pub async fn call(
        &mut self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let had_conn = self.conn.is_some();
        let first = tokio::time::timeout(timeout, self.call_once(&request)).await;
        let result = match first {
            Err(_) => Err(ClientError::Timeout(timeout)),
            Ok(Err(ClientError::Io(_) | ClientError::Closed)) if had_conn => {
                self.conn = None;
                tokio::time::timeout(timeout, self.call_once(&request))
                    .await
                    .unwrap_or(Err(ClientError::Timeout(timeout)))
            }
            Ok(r) => r,
        };
        if result.is_err() {
            self.conn = None;
        }
        match result? {
            Response::Error { code, message } => Err(ClientError::Remote { code, message }),
            other => Ok(other),
        }
    }

    async fn call_once(&mut self, request: &Request) -> Result<Response, ClientError> {
        if self.conn.is_none() {
            let stream =
                UnixStream::connect(&self.path)
                    .await
                    .map_err(|source| ClientError::Connect {
                        path: self.path.clone(),
                        source,
                    })?;
            let (r, w) = stream.into_split();
            self.conn = Some((BufReader::new(r), w));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&RequestEnvelope {
            v: PROTOCOL_VERSION,
            id,
            request: request.clone(),
        })
        .map_err(|e| ClientError::Decode(e.to_string()))?;
        line.push(b'\n');
        let Some((reader, writer)) = self.conn.as_mut() else {
            return Err(ClientError::Closed);
        };
        writer.write_all(&line).await?;
        let mut buf = Vec::with_capacity(256);
        match read_line_limited(reader, &mut buf, MAX_LINE_BYTES).await? {
            LineRead::Eof => return Err(ClientError::Closed),
            LineRead::TooLong => return Err(ClientError::Decode("answer too long".into())),
            LineRead::Line => {}
        }
        let env: ResponseEnvelope =
            serde_json::from_slice(&buf).map_err(|e| ClientError::Decode(e.to_string()))?;
        if env.id != id && env.id != 0 {
            return Err(ClientError::Decode(format!(
                "answer for request {} while waiting for {id}",
                env.id
            )));
        }
        Ok(env.response)
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Unexpected(Box::new(r))
}
