//! The uplink socket: `clinicbox uplink` reads the outbox and confirms batches here
//! (protocol: `clinicbox_control::outbox`). HTTP/1.1 on a Unix socket that only the uplink's
//! group may open; nothing on it is reachable from the network.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clinicbox_control::fleet::MAX_CONFIG_BYTES;
use clinicbox_control::outbox::{
    Confirm, MAX_PARKED_PER_CONFIRM, MAX_REQUEST_BYTES, UplinkReport, VERSION_PREFIX,
};
use clinicbox_control::pull::{
    ApprovalStates, ApprovalsRecorded, DataWatermark, LoginVerdict, MAX_PULL_BYTES, MetadataPull,
    MetadataReport, NationalTracker, NationalValues, PullOutcome, ReservedAdded, ReservedBlock,
};
use serde::Deserialize;

use crate::outbox::{Outbox, OutboxError};

/// The uplink's last report and the last metadata pull's outcome, for the status page.
#[derive(Clone, Default)]
pub struct UplinkShared(Arc<Mutex<Shared>>);

#[derive(Default)]
struct Shared {
    report: Option<UplinkReport>,
    metadata: Option<MetadataReport>,
}

impl UplinkShared {
    pub fn get(&self) -> Option<UplinkReport> {
        self.0.lock().ok().and_then(|g| g.report.clone())
    }

    pub fn metadata(&self) -> Option<MetadataReport> {
        self.0.lock().ok().and_then(|g| g.metadata.clone())
    }

    fn set(&self, report: UplinkReport) {
        if let Ok(mut g) = self.0.lock() {
            g.report = Some(report);
        }
    }

    fn set_metadata(&self, outcome: PullOutcome) {
        if let Ok(mut g) = self.0.lock() {
            g.metadata = Some(MetadataReport {
                at_ms: crate::pull::now_ms(),
                outcome,
            });
        }
    }
}

/// Whether the box runs on its battery now (from the power process's reports).
pub type OnBattery = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct SocketState {
    outbox: Outbox,
    api: clinicbox_api::ApiState,
    relay: Arc<crate::relay::LoginRelay>,
    shared: UplinkShared,
    on_battery: OnBattery,
    fleet: crate::fleet::Fleet,
}

/// The status page's view: the outbox from the store, the rest from the uplink's last report.
pub fn view(
    outbox: Outbox,
    shared: UplinkShared,
) -> clinicbox_statuspage::Source<Option<clinicbox_statuspage::UplinkView>> {
    Arc::new(move || {
        let status = outbox.status().ok()?;
        let (conflicts, conflicts_count) = outbox.conflicts(50).unwrap_or_default();
        let conflicts = conflicts
            .into_iter()
            .map(|c| clinicbox_statuspage::ConflictView {
                kind: c.kind,
                key: c.key,
                field: c.field,
                on_box: c.on_box,
                at_national: c.at_national,
                chosen: match c.chosen {
                    clinicbox_api::conflicts::Side::Box => "box".into(),
                    clinicbox_api::conflicts::Side::National => "national".into(),
                },
                at_ms: c.at_ms,
            })
            .collect();
        let report = shared.get();
        let r = report.clone().unwrap_or_default();
        Some(clinicbox_statuspage::UplinkView {
            state: report.map_or_else(|| "not running".into(), |r| r.state),
            last_success_ms: status.last_sent_ms.or(r.last_success_ms),
            last_error: r.last_error,
            pending: status
                .pending
                .iter()
                .map(|(k, n)| (k.plural().to_string(), *n))
                .collect(),
            pending_at_least: status.pending_at_least,
            parked_count: status.parked.len(),
            parked: status
                .parked
                .into_iter()
                .take(200)
                .map(|p| clinicbox_statuspage::ParkedView {
                    kind: p.kind.plural().to_string(),
                    uid: p.uid,
                    code: p.code,
                    message: p.message,
                    attempts: p.attempts,
                })
                .collect(),
            national_version: r.national_version,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            clock_skew_secs: r.clock_skew_secs,
            update: r.update,
            metadata: shared
                .metadata()
                .map(|m| clinicbox_statuspage::MetadataView {
                    at_ms: m.at_ms,
                    result: m.outcome.result,
                    created: m.outcome.created,
                    updated: m.outcome.updated,
                    deleted: m.outcome.deleted,
                    stale_values: m.outcome.stale_values,
                    messages: m.outcome.messages,
                }),
            conflicts_count,
            conflicts,
        })
    })
}

/// The socket's routes.
pub fn router(
    outbox: Outbox,
    api: clinicbox_api::ApiState,
    relay: Arc<crate::relay::LoginRelay>,
    shared: UplinkShared,
    on_battery: OnBattery,
    fleet: crate::fleet::Fleet,
) -> axum::Router {
    let v = |p: &str| format!("{VERSION_PREFIX}{p}");
    axum::Router::new()
        .route(
            &v("/metadata"),
            post(metadata).layer(DefaultBodyLimit::max(MAX_PULL_BYTES)),
        )
        .route(
            &v("/data/values"),
            post(data_values).layer(DefaultBodyLimit::max(MAX_PULL_BYTES)),
        )
        .route(
            &v("/data/tracker"),
            post(data_tracker).layer(DefaultBodyLimit::max(MAX_PULL_BYTES)),
        )
        .route(&v("/data"), get(data_plan))
        .route(&v("/data/watermark"), post(data_watermark))
        .route(&v("/outbox"), get(outbox_batch))
        .route(&v("/confirm"), post(confirm))
        .route(&v("/position"), get(position))
        .route(&v("/report"), post(report))
        .route(&v("/files/{uid}"), get(file_bytes))
        .route(&v("/pull"), get(pull_state))
        .route(
            &v("/approvals"),
            get(approval_queries).post(approval_states),
        )
        .route(&v("/reserved"), get(reserved_pools).post(reserved_block))
        .route(&v("/logins/next"), get(login_question))
        .route(&v("/logins/{id}"), post(login_answer))
        .route(&v("/fleet/check-in"), get(fleet_check_in))
        .route(
            &v("/fleet/config"),
            post(fleet_config).layer(DefaultBodyLimit::max(MAX_CONFIG_BYTES)),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(SocketState {
            outbox,
            api,
            relay,
            shared,
            on_battery,
            fleet,
        })
}

/// Binds `path` (mode 0660, `group` if given) and serves until `stop` resolves.
pub async fn serve(
    path: &Path,
    group: Option<String>,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let opts = clinicbox_control::SocketOptions {
        group,
        ..Default::default()
    };
    let listener = clinicbox_control::ControlListener::bind(path, &opts).await?;
    let (listener, guard) = listener.into_parts();
    tracing::info!(socket.path = %path.display(), "uplink socket at {}", path.display());
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "the uplink socket stopped: {e}");
        }
    });
    Ok(())
}

async fn fleet_check_in(State(s): State<SocketState>) -> Response {
    let fleet = s.fleet.clone();
    match tokio::task::spawn_blocking(move || fleet.check_in()).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn fleet_config(
    State(s): State<SocketState>,
    Json(raw): Json<serde_json::Value>,
) -> Response {
    match s.fleet.apply(raw).await {
        Ok(echo) => Json(echo).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct BatchQuery {
    max_bytes: Option<usize>,
    /// National's `serverTimeZoneId`, for the times the box stamped itself.
    zone: Option<String>,
}

async fn outbox_batch(State(s): State<SocketState>, Query(q): Query<BatchQuery>) -> Response {
    let max = q.max_bytes.unwrap_or(512 * 1024);
    let zone = match q.zone.as_deref().map(clinicbox_dhis2::ServerTimeZone::new) {
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Some(Ok(z)) => Some(z),
        None => None,
    };
    let outbox = s.outbox.clone();
    match tokio::task::spawn_blocking(move || outbox.batch(max, zone.as_ref())).await {
        Ok(Ok(batch)) => Json(batch).into_response(),
        Ok(Err(e)) => error(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn confirm(State(s): State<SocketState>, Json(c): Json<Confirm>) -> Response {
    if c.parked.len() > MAX_PARKED_PER_CONFIRM || c.sent.len() > 10 * MAX_PARKED_PER_CONFIRM {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many objects in one confirm",
        )
            .into_response();
    }
    match s.outbox.confirm(c).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => error(e),
    }
}

async fn position(State(s): State<SocketState>) -> Response {
    match s.outbox.position() {
        Ok(mut p) => {
            p.on_battery = (s.on_battery)();
            Json(p).into_response()
        }
        Err(e) => error(e),
    }
}

async fn file_bytes(
    State(s): State<SocketState>,
    axum::extract::Path(uid): axum::extract::Path<String>,
) -> Response {
    let outbox = s.outbox.clone();
    match tokio::task::spawn_blocking(move || outbox.file_bytes(&uid)).await {
        Ok(Ok(Some(bytes))) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Ok(Ok(None)) => StatusCode::NOT_FOUND.into_response(),
        Ok(Err(e)) => error(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn report(State(s): State<SocketState>, Json(mut r): Json<UplinkReport>) -> StatusCode {
    // Shown on the status page: keep what the uplink says short.
    use clinicbox_dhis2::value_type::excerpt_of;
    r.state = excerpt_of(&r.state, 200).into_owned();
    r.last_error = r.last_error.map(|e| excerpt_of(&e, 500).into_owned());
    s.shared.set(r);
    StatusCode::NO_CONTENT
}

async fn pull_state(State(s): State<SocketState>) -> Response {
    match crate::pull::state(&s.api) {
        Ok(state) => Json(state).into_response(),
        Err(e) => pull_error(e),
    }
}

async fn metadata(State(s): State<SocketState>, Json(pull): Json<MetadataPull>) -> Response {
    match crate::pull::apply(&s.api, pull).await {
        Ok(mut outcome) => {
            if outcome.result == "applied" {
                // Kept and still sent; counted so an admin knows national changed under them.
                outcome.stale_values = s.outbox.tracker().stale_values().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "stale values not counted");
                    0
                });
            }
            if outcome.result != "unchanged" || s.shared.metadata().is_none() {
                s.shared.set_metadata(outcome.clone());
            }
            Json(outcome).into_response()
        }
        Err(e) => pull_error(e),
    }
}

async fn approval_queries(State(s): State<SocketState>) -> Response {
    match crate::pull::approvals::queries(&s.api) {
        Ok(q) => Json(q).into_response(),
        Err(e) => pull_error(e),
    }
}

async fn approval_states(
    State(s): State<SocketState>,
    Json(answer): Json<ApprovalStates>,
) -> Response {
    match crate::pull::approvals::record(&s.api, answer).await {
        Ok(changed) => Json(ApprovalsRecorded { changed }).into_response(),
        Err(e) => pull_error(e),
    }
}

async fn data_plan(State(s): State<SocketState>) -> Response {
    match crate::pull::data::plan(&s.api) {
        Ok(p) => Json(p).into_response(),
        Err(e) => pull_error(e),
    }
}

async fn data_values(State(s): State<SocketState>, Json(body): Json<NationalValues>) -> Response {
    match crate::pull::data::merge(&s.api, &s.outbox, body).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => pull_error(e),
    }
}

async fn data_tracker(State(s): State<SocketState>, Json(body): Json<NationalTracker>) -> Response {
    match crate::pull::data::merge_tracker(&s.api, &s.outbox, body).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => pull_error(e),
    }
}

async fn data_watermark(State(s): State<SocketState>, Json(w): Json<DataWatermark>) -> Response {
    match crate::pull::data::keep_watermark(&s.api, w.watermark).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => pull_error(e),
    }
}

async fn reserved_pools(State(s): State<SocketState>) -> Response {
    match crate::pull::reserved::pools(s.outbox.tracker()).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => pull_error(e),
    }
}

async fn reserved_block(
    State(s): State<SocketState>,
    Json(block): Json<ReservedBlock>,
) -> Response {
    match crate::pull::reserved::add(s.outbox.tracker(), block).await {
        Ok(added) => Json(ReservedAdded { added }).into_response(),
        Err(e) => pull_error(e),
    }
}

async fn login_question(State(s): State<SocketState>) -> Response {
    match s.relay.next().await {
        Some(q) => Json(q).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

#[derive(Deserialize)]
struct LoginAnswer {
    verdict: LoginVerdict,
}

async fn login_answer(
    State(s): State<SocketState>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    Json(a): Json<LoginAnswer>,
) -> StatusCode {
    if s.relay.answer(id, a.verdict) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

fn pull_error(e: crate::pull::PullError) -> Response {
    tracing::warn!(error = %e, "uplink socket");
    let status = match e {
        crate::pull::PullError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_string()).into_response()
}

fn error(e: OutboxError) -> Response {
    let status = match e {
        OutboxError::Moved { .. } => StatusCode::CONFLICT,
        OutboxError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::warn!(error = %e, "uplink socket");
    (status, e.to_string()).into_response()
}
