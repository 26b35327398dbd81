//! The daemon side: accept connections and dispatch requests to a [`ControlHandler`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use crate::protocol::{
    DaemonStatus, ErrorCode, MAX_LINE_BYTES, PROTOCOL_VERSION, PowerReport, QuiesceOutcome,
    Request, RequestEnvelope, Response, ResponseEnvelope, SnapshotOutcome,
};
use crate::socket::ControlListener;

/// At most this many clients at once; the power process needs one.
const MAX_CONNECTIONS: usize = 16;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Upper bound on a quiesce deadline a client may ask for.
const MAX_QUIESCE_DEADLINE: Duration = Duration::from_secs(600);

/// A handler failure, reported to the client as `failed`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// What the daemon does for each request. Implemented by the daemon (and by test fakes).
pub trait ControlHandler: Send + Sync + 'static {
    /// Record the power process's latest report (status page, uplink power saving).
    fn report_power(
        &self,
        report: PowerReport,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Stop writes, drain, close the store. The server also cuts the call off at `deadline`
    /// and answers `deadline_exceeded`; the handler should still use the deadline itself to cut
    /// its own drain short.
    fn quiesce(
        &self,
        deadline: Duration,
        reason: String,
    ) -> impl Future<Output = Result<QuiesceOutcome, HandlerError>> + Send;

    /// Undo a quiesce.
    fn resume(&self, reason: String) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Current status.
    fn status(&self) -> impl Future<Output = DaemonStatus> + Send;

    /// A consistent copy of the store in the staging file (see [`Request::Snapshot`]).
    fn snapshot(&self) -> impl Future<Output = Result<SnapshotOutcome, HandlerError>> + Send {
        async { Err(HandlerError("this daemon takes no snapshots".into())) }
    }

    /// Record that a backup was written (see [`Request::BackupWritten`]).
    fn backup_written(
        &self,
        file: String,
        bytes: u64,
        at_ms: u64,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (file, bytes, at_ms);
        async { Err(HandlerError("this daemon keeps no backup record".into())) }
    }
}

/// Serve `listener` until `shutdown` resolves. Each connection runs in its own task; a
/// misbehaving client only ever gets error lines back and never stops the server.
pub async fn serve<H: ControlHandler>(
    listener: ControlListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Open connections end with the server (after the request in hand is answered).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let peer = stream
            .peer_cred()
            .map(|c| format!("uid={} pid={:?}", c.uid(), c.pid()))
            .unwrap_or_else(|_| "unknown".into());
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let handler = handler.clone();
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    tracing::debug!(control.peer = %peer, "control client connected ({peer})");
                    if let Err(e) = serve_connection(stream, handler.as_ref(), stop).await {
                        tracing::debug!(control.peer = %peer, error = %e, "control connection ended: {e}");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(control.peer = %peer, "control socket busy, refusing {peer}");
                tokio::spawn(async move {
                    let mut stream = stream;
                    let resp = error_line(0, ErrorCode::Busy, "too many control connections");
                    let _ = stream.write_all(resp.as_bytes()).await;
                });
            }
        }
    }
    let _ = stop_tx.send(true);
}

async fn serve_connection<H: ControlHandler>(
    stream: UnixStream,
    handler: &H,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let read = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
            read = tokio::time::timeout(
                IDLE_TIMEOUT,
                read_line_limited(&mut reader, &mut line, MAX_LINE_BYTES),
            ) => read,
        };
        let out = match read {
            Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(LineRead::Eof)) => return Ok(()),
            Ok(Ok(LineRead::TooLong)) => error_line(0, ErrorCode::TooLong, "line too long"),
            Ok(Ok(LineRead::Line)) => handle_line(&line, handler).await,
        };
        write.write_all(out.as_bytes()).await?;
    }
}

pub(crate) enum LineRead {
    Line,
    Eof,
    /// The line was longer than the limit; it was read to its end and discarded.
    TooLong,
}

/// Read one `\n`-terminated line into `buf` (without the newline), never holding more than
/// `limit` bytes.
pub(crate) async fn read_line_limited<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<LineRead> {
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                LineRead::Eof
            } else if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(available.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

async fn handle_line<H: ControlHandler>(line: &[u8], handler: &H) -> String {
    // Two steps so that a request from another protocol version gets a precise error.
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return error_line(0, ErrorCode::BadRequest, &format!("invalid JSON: {e}")),
    };
    let id = value.get("id").and_then(|v| v.as_u64()).unwrap_or(0);
    match value.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return error_line(
                id,
                ErrorCode::UnsupportedVersion,
                &format!(
                    "protocol version {v} is not supported; this daemon speaks {PROTOCOL_VERSION}"
                ),
            );
        }
        None => return error_line(id, ErrorCode::BadRequest, "missing protocol version \"v\""),
    }
    let env: RequestEnvelope = match serde_json::from_value(value) {
        Ok(env) => env,
        Err(e) => return error_line(id, ErrorCode::BadRequest, &format!("bad request: {e}")),
    };
    let response = dispatch(env.request, handler).await;
    encode(&ResponseEnvelope {
        v: PROTOCOL_VERSION,
        id,
        response,
    })
}

async fn dispatch<H: ControlHandler>(request: Request, handler: &H) -> Response {
    match request {
        Request::ReportPower { report } => match handler.report_power(report).await {
            Ok(()) => Response::Ack,
            Err(e) => failed(e),
        },
        Request::Quiesce {
            deadline_ms,
            reason,
        } => {
            let deadline = Duration::from_millis(deadline_ms).min(MAX_QUIESCE_DEADLINE);
            tracing::debug!(control.reason = %reason, deadline_ms, "quiesce requested: {reason}");
            let started = Instant::now();
            match tokio::time::timeout(deadline, handler.quiesce(deadline, reason)).await {
                Ok(Ok(outcome)) => Response::Quiesced(outcome),
                Ok(Err(e)) => failed(e),
                Err(_) => Response::Error {
                    code: ErrorCode::DeadlineExceeded,
                    message: format!(
                        "quiesce did not finish within {} ms",
                        started.elapsed().as_millis()
                    ),
                },
            }
        }
        Request::Resume { reason } => {
            tracing::debug!(control.reason = %reason, "resume requested: {reason}");
            match handler.resume(reason).await {
                Ok(()) => Response::Resumed,
                Err(e) => failed(e),
            }
        }
        Request::Status {} => Response::Status(handler.status().await),
        Request::Snapshot {} => match handler.snapshot().await {
            Ok(outcome) => Response::Snapshot(outcome),
            Err(e) => failed(e),
        },
        Request::BackupWritten { file, bytes, at_ms } => {
            match handler.backup_written(file, bytes, at_ms).await {
                Ok(()) => Response::Ack,
                Err(e) => failed(e),
            }
        }
    }
}

fn failed(e: HandlerError) -> Response {
    Response::Error {
        code: ErrorCode::Failed,
        message: e.0,
    }
}

fn error_line(id: u64, code: ErrorCode, message: &str) -> String {
    encode(&ResponseEnvelope {
        v: PROTOCOL_VERSION,
        id,
        response: Response::Error {
            code,
            message: message.to_string(),
        },
    })
}

fn encode(env: &ResponseEnvelope) -> String {
    // Serialising these plain types cannot fail; fall back to a fixed line rather than panic.
    let mut s = serde_json::to_string(env).unwrap_or_else(|_| {
        r#"{"v":1,"id":0,"response":{"result":"error","code":"failed","message":"encode"}}"#
            .to_string()
    });
    s.push('\n');
    s
}
