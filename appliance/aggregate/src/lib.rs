#![doc = include_str!("../README.md")]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod approvals;
pub mod export;
pub mod files;
pub mod from_national;
pub mod import;
pub mod outbox;
pub mod periods;
pub mod records;
pub mod registrations;
pub mod rules;
pub mod selection;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use clinicbox_api::ApiState;
use clinicbox_api::extract::JsonBytes;
use clinicbox_api::query::Query;
use clinicbox_dhis2::WebMessage;
use clinicbox_dhis2::aggregate::{DataValueSet, ImportSummary};
use clinicbox_web::error::web_message_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};

pub use crate::approvals::record as record_approvals;
pub use crate::records::{APPROVALS, AUDIT, DATA_VALUES, REGISTRATIONS};

/// The aggregate endpoints, ready to merge next to `clinicbox_api::router`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/api/dataValueSets",
            get(export::get).post(post_data_value_sets),
        )
        .route(
            "/api/completeDataSetRegistrations",
            get(registrations::get)
                .post(registrations::post)
                .delete(registrations::delete),
        )
        .route("/api/dataApprovals/multiple", get(approvals::get_multiple))
        .route("/api/dataValues/files", get(files::get))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// "Now" for the lock rules: the store's clock in the server zone.
pub(crate) fn now(state: &ApiState) -> ApiResult<periods::Now> {
    periods::Now::at(state.store().server_time_ms(), state.zone())
        .ok_or_else(|| ApiError::Internal("the store clock is out of range".into()))
}

/// An ImportSummary in DHIS2's WebMessage: 200 SUCCESS, 409 WARNING or ERROR.
pub(crate) fn summary_response(s: &ImportSummary) -> Response {
    let (code, status, message) = s.web_message_parts();
    let body = serde_json::to_value(s).unwrap_or_default();
    web_message_response(
        &WebMessage::new(code, message)
            .with_status(status)
            .with_response(body),
    )
}

/// Most values one `POST /api/dataValueSets` may hold (a month's report of a big clinic is a few
/// thousand); more is refused whole, before parsing.
pub const MAX_VALUES_PER_IMPORT: usize = 100_000;

/// `POST /api/dataValueSets`.
async fn post_data_value_sets(
    State(state): State<ApiState>,
    user: AuthUser,
    q: Query,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    let params = import::ImportParams::from_query(&q)?;
    let items = clinicbox_api::count::items(&body);
    if items > MAX_VALUES_PER_IMPORT {
        return Err(ApiError::LimitExceeded(format!(
            "The data value set holds {items} items; this box imports at most {MAX_VALUES_PER_IMPORT} values in one request"
        )));
    }
    let set: DataValueSet = clinicbox_api::extract::parse(&body)?;
    let now = now(&state)?;
    let plan = {
        let read = state.store().read()?;
        import::plan(&user, &set, params, &now, &read)?
    };
    let summary = import::apply(state.store(), plan, params, &user.username).await?;
    let c = summary.import_count;
    tracing::info!(
        data_set.uid = set.data_set.as_deref().unwrap_or(""),
        user = %user.username,
        values = set.data_values.len(),
        imported = c.imported,
        updated = c.updated,
        deleted = c.deleted,
        ignored = c.ignored,
        conflicts = summary.conflicts.len(),
        dry_run = params.dry_run,
        "data value set imported"
    );
    Ok(summary_response(&summary))
}

async fn method_not_allowed(req: Request) -> Response {
    web_message_response(&WebMessage::new(
        StatusCode::METHOD_NOT_ALLOWED.as_u16(),
        format!("Request method '{}' is not supported", req.method()),
    ))
}
