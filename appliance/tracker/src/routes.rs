//! The route table, `POST /api/tracker` and the job endpoints.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use clinicbox_api::ApiState;
use clinicbox_api::extract::JsonBytes;
use clinicbox_api::query::Query;
use clinicbox_dhis2::WebMessage;
use clinicbox_dhis2::tracker::{ReportMode, TrackerPayload, TrackerStatus};
use clinicbox_web::error::{json_response, web_message_response};
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde_json::json;

use crate::export::{enrollments, events, relationships, tracked_entities};
use crate::import::ImportParams;
use crate::{Tracker, files, jobs, ownership, reserved};

pub fn routes(max_file_bytes: usize) -> Router<ApiState> {
    Router::new()
        .route("/api/tracker", post(import))
        .route("/api/tracker/jobs/{uid}", get(job))
        .route("/api/tracker/jobs/{uid}/report", get(job_report))
        .route("/api/tracker/trackedEntities", get(tracked_entities::list))
        .route(
            "/api/tracker/trackedEntities/{uid}",
            get(tracked_entities::get_one),
        )
        .route(
            "/api/tracker/trackedEntities/{uid}/attributes/{attribute}/file",
            get(files::attribute_file),
        )
        .route(
            "/api/tracker/trackedEntities/{uid}/attributes/{attribute}/image",
            get(files::attribute_file),
        )
        .route("/api/tracker/events", get(events::list))
        .route("/api/tracker/events/{uid}", get(events::get_one))
        .route(
            "/api/tracker/events/{uid}/dataValues/{attribute}/file",
            get(files::data_value_file),
        )
        .route(
            "/api/tracker/events/{uid}/dataValues/{attribute}/image",
            get(files::data_value_file),
        )
        .route("/api/tracker/enrollments", get(enrollments::list))
        .route("/api/tracker/enrollments/{uid}", get(enrollments::get_one))
        .route("/api/tracker/relationships", get(relationships::list))
        .route(
            "/api/tracker/relationships/{uid}",
            get(relationships::get_one),
        )
        .route("/api/tracker/ownership/transfer", put(ownership::transfer))
        .route("/api/tracker/ownership/override", post(ownership::grant))
        .route(
            "/api/trackedEntityAttributes/{uid}/generateAndReserve",
            get(reserved::generate_and_reserve),
        )
        .route(
            "/api/trackedEntityAttributes/{uid}/generate",
            get(reserved::generate),
        )
        .route(
            "/api/fileResources",
            post(files::upload).layer(DefaultBodyLimit::max(max_file_bytes + 64 * 1024)),
        )
        .route("/api/fileResources/{uid}", get(files::meta))
        .route("/api/fileResources/{uid}/data", get(files::data))
}

/// The base URL tablets reach us at (`contextPath`).
pub fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    state
        .config()
        .public_url
        .clone()
        .unwrap_or_else(|| {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        })
        .trim_end_matches('/')
        .to_string()
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /api/tracker`.
async fn import(
    State(state): State<ApiState>,
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    q: Query,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult<Response> {
    let params = ImportParams::from_query(&q)?;
    let max = t.config().max_objects_per_import;
    let items = clinicbox_api::count::items(&body);
    if items > max {
        return Err(ApiError::LimitExceeded(format!(
            "The payload holds {items} items (objects, values, notes, owners, coordinates); this box imports at most {max} in one request"
        )));
    }
    let payload: TrackerPayload = clinicbox_api::extract::parse(&body)?;
    if params.run_async {
        let done = t.import(user, params, payload, true).await?;
        let id = done
            .job_id
            .ok_or_else(|| ApiError::Internal("import stored no job".into()))?;
        let location = format!("{}/api/tracker/jobs/{id}", base_url(&state, &headers));
        let msg = WebMessage::new(200, "Tracker job added").with_response(json!({
            "responseType": "TrackerJob",
            "id": id,
            "location": location,
        }));
        return Ok(web_message_response(&msg));
    }
    let done = t.import(user, params, payload, false).await?;
    let report = done.report.for_mode(params.report_mode);
    // DHIS2 answers a synchronous import with the report itself, 409 when it has errors.
    let status = if report.status == TrackerStatus::Error {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &report))
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Job with id {id} not found"))
}

/// `GET /api/tracker/jobs/{id}`: the job's notifications (an array), newest first.
async fn job(
    State(state): State<ApiState>,
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let read = t.store().read()?;
    let (job, done_ms) = jobs::load_job(&read, &id)?.ok_or_else(|| job_not_found(&id))?;
    if job.user != user.uid && !user.is_superuser() {
        return Err(job_not_found(&id));
    }
    let list = jobs::notifications(&job, done_ms, state.zone());
    Ok(no_store(json_response(StatusCode::OK, &list)))
}

/// `GET /api/tracker/jobs/{id}/report[?reportMode=]`.
async fn job_report(
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    Path(id): Path<String>,
    q: Query,
) -> ApiResult<Response> {
    let mode: ReportMode = match q.get("reportMode") {
        None | Some("") => ReportMode::Errors,
        Some(v) => serde_json::from_value(serde_json::Value::from(v.to_ascii_uppercase()))
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "Value '{v}' is not valid for parameter reportMode. Valid values are: [FULL, ERRORS, WARNINGS]"
                ))
            })?,
    };
    let read = t.store().read()?;
    let (job, _) = jobs::load_job(&read, &id)?
        .ok_or_else(|| ApiError::NotFound(format!("Summary for job {id} does not exist")))?;
    if job.user != user.uid && !user.is_superuser() {
        return Err(ApiError::NotFound(format!(
            "Summary for job {id} does not exist"
        )));
    }
    Ok(no_store(json_response(
        StatusCode::OK,
        &job.report.for_mode(mode),
    )))
}
