//! The box's whole web app in one place: the tablet API (DHIS2), tracker and aggregate, the
//! status page, first setup and the admin pages, with the same layers around all of it. The
//! daemon serves exactly what [`router`] returns, and the in-process test kits and benchmarks
//! build their app with it too, so what is tested is what runs.
//!
//! Layers, outermost first: security headers; error shaping (every error a WebMessage under
//! `/api`, a page elsewhere) and the URI length limit; request metrics; the write gate (bodies
//! read under a deadline, then counted for quiesce).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clinicbox_dhis2::WebMessage;
use clinicbox_statuspage::StatusState;

use crate::lifecycle::{self, Lifecycle};

/// Everything the app serves from.
pub struct AppParts {
    pub lifecycle: Arc<Lifecycle>,
    pub api: clinicbox_api::ApiState,
    pub tracker: clinicbox_tracker::Tracker,
    pub status: StatusState,
    pub limits: RequestLimits,
}

/// Per-request bounds that hold for every route (`[http]` in `clinicbox.toml`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// The longest request target (path and query) served; longer ones get 414.
    pub max_uri_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_uri_bytes: 16 * 1024,
        }
    }
}

/// The whole app (see the module docs).
pub fn router(parts: AppParts) -> Router {
    let AppParts {
        lifecycle: lc,
        api,
        tracker,
        status,
        limits,
    } = parts;
    Router::new()
        .route("/health", get(health))
        .with_state(lc.clone())
        .merge(clinicbox_aggregate::router(api.clone()))
        .merge(clinicbox_tracker::router(tracker))
        .merge(clinicbox_statuspage::router(status.clone()))
        .merge(clinicbox_api::router(api))
        .layer(middleware::from_fn_with_state(lc, lifecycle::write_gate))
        .layer(middleware::from_fn_with_state(
            status,
            clinicbox_statuspage::track,
        ))
        .layer(middleware::from_fn_with_state(limits, shape_errors))
        .layer(middleware::from_fn(crate::headers::security_headers))
}

/// [`router`] as the in-process test kits and benchmarks build it: the daemon's defaults, and a
/// status page with no presence behind it.
pub fn in_process(
    store: &clinicbox_store::Store,
    api: clinicbox_api::ApiState,
    tracker: clinicbox_tracker::Tracker,
) -> Router {
    router(AppParts {
        lifecycle: Lifecycle::new(store.clone(), 120, Default::default()),
        api,
        tracker,
        status: status_without_presence(store),
        limits: RequestLimits::default(),
    })
}

/// A status page with no presence behind it (no TLS, discovery or power), for the in-process
/// test kits and benchmarks; the daemon's comes from `presence::prepare`.
pub fn status_without_presence(store: &clinicbox_store::Store) -> StatusState {
    let info = clinicbox_statuspage::BoxInfo {
        box_id: "clinicbox-test".into(),
        clinic_name: "Test clinic".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        dhis2_version: clinicbox_dhis2::system_info::DHIS2_VERSION.into(),
        slot: None,
    };
    clinicbox_statuspage::StatusBuilder::new(
        clinicbox_statuspage::StatusConfig::default(),
        info,
        Arc::new(|| "http://127.0.0.1".to_owned()),
    )
    .store(store.clone())
    .build()
}

async fn health(State(lc): State<Arc<Lifecycle>>) -> Response {
    let body = serde_json::json!({
        "status": if lc.store().is_healthy() { "ok" } else { "degraded" },
        "acceptingWrites": lc.accepting_writes(),
        "uptimeSeconds": lc.uptime().as_secs(),
    });
    axum::Json(body).into_response()
}

/// Refuses over-long request targets, and turns the errors that routes and extractors answer
/// in plain text (413, 414, multipart, method and path rejections) into the box's shapes:
/// a DHIS2 WebMessage under `/api`, a short page elsewhere. What the client sent is never
/// echoed back beyond a short prefix.
async fn shape_errors(State(limits): State<RequestLimits>, req: Request, next: Next) -> Response {
    let api = req.uri().path() == "/api" || req.uri().path().starts_with("/api/");
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let resp = if uri_len > limits.max_uri_bytes {
        plain(
            StatusCode::URI_TOO_LONG,
            format!(
                "The request URI is {uri_len} bytes long; this box serves at most {} bytes",
                limits.max_uri_bytes
            ),
        )
    } else {
        next.run(req).await
    };
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let shaped =
        content_type.starts_with("application/json") || content_type.starts_with("text/html");
    if !(status.is_client_error() || status.is_server_error()) || shaped {
        return resp;
    }
    let (mut head, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message =
        clinicbox_dhis2::value_type::excerpt_message(String::from_utf8_lossy(&text).trim())
            .into_owned();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_owned()
    } else {
        message
    };
    head.headers.remove(header::CONTENT_LENGTH);
    let (content_type, body) = if api {
        let msg = WebMessage::new(status.as_u16(), message);
        (
            "application/json",
            serde_json::to_vec(&msg).unwrap_or_default(),
        )
    } else {
        (
            "text/html; charset=utf-8",
            page(status, &message).into_bytes(),
        )
    };
    head.headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Response::from_parts(head, Body::from(body))
}

fn plain(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

fn page(status: StatusCode, message: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{code} · ClinicBox</title></head>\
         <body style=\"font-family:sans-serif;margin:2em\"><h1>{code} {reason}</h1><p>{msg}</p><p><a href=\"/\">Back to the box's page</a></p></body></html>",
        code = status.as_u16(),
        reason = esc(status.canonical_reason().unwrap_or("")),
        msg = esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape() {
        let p = page(StatusCode::PAYLOAD_TOO_LARGE, "<script>");
        assert!(p.contains("&lt;script&gt;") && !p.contains("<script>"));
    }
}
