//! National's dataStore, where boxes check in (`clinicbox-fleet/<box id>`) and remote admins
//! leave each box its configuration (`clinicbox-fleet-config/<box id>`). As DHIS2 answers it:
//! `GET /api/dataStore/{ns}` lists the keys (404 for a namespace with none), `POST` creates a
//! key (201; 409 when it exists), `PUT` replaces one (200; 404 when it does not), a body that
//! is not JSON is a 400. Every write counts in the ledger (`data_store_writes`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{App, bad_request, conflict};

fn message(status: StatusCode, text: &str) -> Response {
    let (word, http) = match status.as_u16() {
        200 => ("OK", "OK"),
        201 => ("OK", "Created"),
        403 => ("ERROR", "Forbidden"),
        _ => ("ERROR", "Not Found"),
    };
    (
        status,
        axum::Json(
            json!({"httpStatus": http, "httpStatusCode": status.as_u16(),
            "status": word, "message": text}),
        ),
    )
        .into_response()
}

fn key_missing(ns: &str, key: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        &format!("Key '{key}' not found in namespace '{ns}'"),
    )
}

pub async fn keys(State(app): State<App>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    if let Err(r) = app.gate("GET /api/dataStore/{ns}", &headers) {
        return r;
    }
    let i = app.lock();
    match i.data.data_store.get(&ns).filter(|m| !m.is_empty()) {
        Some(m) => axum::Json(m.keys().cloned().collect::<Vec<_>>()).into_response(),
        None => message(
            StatusCode::NOT_FOUND,
            &format!("Namespace not found: '{ns}'"),
        ),
    }
}

pub async fn get_value(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, key)): Path<(String, String)>,
) -> Response {
    if let Err(r) = app.gate("GET /api/dataStore/{ns}/{key}", &headers) {
        return r;
    }
    let i = app.lock();
    match i.data.data_store.get(&ns).and_then(|m| m.get(&key)) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => key_missing(&ns, &key),
    }
}

pub async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    write(&app, &headers, "POST", &ns, &key, &body)
}

pub async fn update(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    write(&app, &headers, "PUT", &ns, &key, &body)
}

fn write(
    app: &App,
    headers: &HeaderMap,
    method: &str,
    ns: &str,
    key: &str,
    body: &[u8],
) -> Response {
    if let Err(r) = app.gate(&format!("{method} /api/dataStore/{{ns}}/{{key}}"), headers) {
        return r;
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return bad_request("The data you sent is not valid JSON");
    };
    let mut i = app.lock();
    if i.faults.data_store_forbidden {
        return message(
            StatusCode::FORBIDDEN,
            &format!("Access denied for key '{key}' in namespace '{ns}'"),
        );
    }
    let exists = i
        .data
        .data_store
        .get(ns)
        .is_some_and(|m| m.contains_key(key));
    let (status, text) = match (method, exists) {
        ("POST", true) => {
            return conflict(&format!("Key '{key}' already exists in namespace '{ns}'"));
        }
        ("PUT", false) => return key_missing(ns, key),
        ("POST", false) => (StatusCode::CREATED, format!("Key created: '{key}'")),
        _ => (StatusCode::OK, format!("Key updated: '{key}'")),
    };
    i.data
        .data_store
        .entry(ns.to_string())
        .or_default()
        .insert(key.to_string(), value);
    *i.data
        .data_store_writes
        .entry(format!("{ns}/{key}"))
        .or_default() += 1;
    App::save(&i);
    message(status, &text)
}
