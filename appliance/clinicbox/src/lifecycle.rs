//! The daemon's lifecycle: accepting writes, quiescing before a power cut, shutting down.
//!
//! Quiesce (asked by the power process over the control socket, or done on SIGTERM):
//! 1. new write requests get 503 with `Retry-After` (reads keep working: staff can still look);
//! 2. write requests already running finish, up to a deadline;
//! 3. the store's writer commits what it has and stops.
//!
//! Every write acknowledged before step 1 is already durable: the store acknowledges only after
//! an fsynced commit. `resume` undoes a quiesce when mains power came back in time.
//!
//! A write request counts as running only once its body is in: the gate reads the body first,
//! under an idle deadline and a size bound, so a client that sends its body slowly holds up
//! neither a quiesce nor a shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clinicbox_dhis2::WebMessage;
use clinicbox_store::Store;
use http_body_util::BodyExt;
use tokio::sync::Notify;

/// Shared by the HTTP layer, the control socket and the signal handler.
pub struct Lifecycle {
    store: Store,
    accepting_writes: AtomicBool,
    writes_in_flight: AtomicUsize,
    drained: Notify,
    shutdown: Notify,
    shutting_down: AtomicBool,
    retry_after_secs: u64,
    bodies: BodyLimits,
    started: Instant,
}

/// How the write gate reads request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// A body that sends nothing for this long is refused with 408.
    pub idle: Duration,
    /// The largest body any route takes (routes have their own, lower limits).
    pub max_bytes: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            idle: Duration::from_secs(30),
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What a quiesce achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuiesceReport {
    /// Write requests still running at the deadline (0 when everything drained).
    pub abandoned_writes: usize,
    pub store_closed: bool,
    pub took: Duration,
}

impl Lifecycle {
    pub fn new(store: Store, retry_after_secs: u64, bodies: BodyLimits) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            store,
            accepting_writes: AtomicBool::new(true),
            writes_in_flight: AtomicUsize::new(0),
            drained: Notify::new(),
            shutdown: Notify::new(),
            shutting_down: AtomicBool::new(false),
            retry_after_secs,
            bodies,
            started: Instant::now(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn accepting_writes(&self) -> bool {
        self.accepting_writes.load(Ordering::Acquire)
    }

    /// Stops taking writes, waits for running ones up to `deadline`, then closes the store.
    pub async fn quiesce(&self, deadline: Duration) -> QuiesceReport {
        let start = Instant::now();
        self.accepting_writes.store(false, Ordering::Release);
        tracing::info!(
            deadline_ms = deadline.as_millis() as u64,
            "quiescing: refusing new writes"
        );
        let wait_for_drain = async {
            loop {
                let notified = self.drained.notified();
                if self.writes_in_flight.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let abandoned = match tokio::time::timeout(deadline, wait_for_drain).await {
            Ok(()) => 0,
            Err(_) => self.writes_in_flight.load(Ordering::Acquire),
        };
        let store = self.store.clone();
        let closed = tokio::task::spawn_blocking(move || store.close()).await;
        let store_closed = matches!(closed, Ok(Ok(())));
        let report = QuiesceReport {
            abandoned_writes: abandoned,
            store_closed,
            took: start.elapsed(),
        };
        tracing::info!(
            abandoned_writes = report.abandoned_writes,
            store_closed,
            took_ms = report.took.as_millis() as u64,
            "quiesced"
        );
        report
    }

    /// Takes writes again after a quiesce (mains came back before the point of no return).
    pub fn resume(&self) -> Result<(), clinicbox_store::StoreError> {
        self.store.resume()?;
        self.accepting_writes.store(true, Ordering::Release);
        tracing::info!("resumed: accepting writes");
        Ok(())
    }

    /// Asks the whole daemon to shut down (as SIGTERM does).
    pub fn request_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.shutdown.notify_waiters();
    }

    /// Resolves once a shutdown was requested.
    pub async fn shutdown_requested(&self) {
        loop {
            let notified = self.shutdown.notified();
            if self.shutting_down.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

struct InFlight<'a>(&'a Lifecycle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.writes_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Write requests whose handler streams the body itself.
const STREAMED: &[&str] = &["/setup/restore"];

/// Middleware: counts write requests and refuses them with 503 while quiescing.
pub async fn write_gate(State(lc): State<Arc<Lifecycle>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    // A backup uploaded for a restore is as big as a store: its handler streams it to disk
    // under its own bound, so it is not read into memory here.
    let req = if STREAMED.contains(&req.uri().path()) {
        req
    } else {
        let (parts, body) = req.into_parts();
        let body = match read_body(body, lc.bodies).await {
            Ok(bytes) => bytes,
            Err(refused) => return refused,
        };
        Request::from_parts(parts, Body::from(body))
    };
    // Count first, then check: a quiesce that starts in between waits for this request.
    lc.writes_in_flight.fetch_add(1, Ordering::AcqRel);
    let guard = InFlight(&lc);
    if !lc.accepting_writes() {
        drop(guard);
        return unavailable(lc.retry_after_secs);
    }
    let response = next.run(req).await;
    drop(guard);
    response
}

/// The whole body, or the answer that refuses it: 413 past `max_bytes`, 408 when it stalls for
/// `idle`, 400 when the connection breaks.
async fn read_body(mut body: Body, limits: BodyLimits) -> Result<Bytes, Response> {
    let mut buf = Vec::new();
    loop {
        let frame = match tokio::time::timeout(limits.idle, body.frame()).await {
            Err(_) => {
                return Err(refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "The request body stalled for {} s; send it again",
                        limits.idle.as_secs()
                    ),
                ));
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(_))) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read".into(),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limits.max_bytes {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "Request body too large: this box takes at most {} bytes",
                        limits.max_bytes
                    ),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    let msg = WebMessage::new(status.as_u16(), message);
    (status, axum::Json(msg)).into_response()
}

fn unavailable(retry_after_secs: u64) -> Response {
    let msg = WebMessage::new(
        503,
        "The clinic box is shutting down to protect its data (power). Your tablet keeps the data and will send it again.",
    );
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(msg)).into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}
