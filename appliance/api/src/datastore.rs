//! `/api/dataStore`: namespaced JSON values, readable by every user, written by admins. Holds
//! the Android settings (`ANDROID_SETTINGS_APP/*`), served when configured and 404 otherwise.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use clinicbox_dhis2::{Dhis2Timestamp, WebMessage};
use clinicbox_store::{Collection, StoreError};
use serde_json::{Map, Value, json};

use crate::ApiState;
use crate::error::{ApiError, ApiResult, json_response, web_message_response};
use crate::extract::Json;
use crate::query::Query;
use crate::scope::AuthUser;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/dataStore", get(namespaces))
        .route("/api/dataStore/{ns}", get(keys).delete(delete_namespace))
        .route(
            "/api/dataStore/{ns}/{key}",
            get(get_value).post(create).put(update).delete(delete_key),
        )
        .route("/api/dataStore/{ns}/{key}/metaData", get(meta_data))
}

fn check_name(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > 255 || s.contains('/') || s.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("Invalid {what} {s:?}")));
    }
    Ok(())
}

fn require_admin(user: &AuthUser) -> Result<(), ApiError> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Access denied for key in namespace: writing the dataStore needs the F_METADATA_IMPORT authority".into(),
        ))
    }
}

/// Reads a value (`None` when missing or deleted).
pub fn read_value(state: &ApiState, ns: &str, key: &str) -> Result<Option<Value>, ApiError> {
    let rec = state
        .store()
        .read()?
        .get(Collection::DATA_STORE, &format!("{ns}/{key}"))?;
    match rec.filter(|r| !r.deleted) {
        Some(r) => Ok(Some(r.json().map_err(|e| {
            ApiError::Internal(format!("dataStore value {ns}/{key} unreadable: {e}"))
        })?)),
        None => Ok(None),
    }
}

/// Writes a value (admin tools and the demo loader use this too).
pub async fn write_value(
    state: &ApiState,
    ns: &str,
    key: &str,
    value: Value,
) -> Result<(), ApiError> {
    let k = format!("{ns}/{key}");
    state
        .store()
        .write(move |ctx| ctx.put_json(Collection::DATA_STORE, &k, &value))
        .await
        .map_err(|e| e.flatten())?;
    Ok(())
}

fn live_keys(
    state: &ApiState,
    ns: &str,
) -> Result<Vec<(String, clinicbox_store::Record)>, ApiError> {
    let prefix = format!("{ns}/");
    let mut out = Vec::new();
    for item in state
        .store()
        .read()?
        .scan_prefix(Collection::DATA_STORE, &prefix)?
    {
        let (k, r) = item?;
        if !r.deleted {
            out.push((k[prefix.len()..].to_string(), r));
        }
    }
    Ok(out)
}

async fn namespaces(State(state): State<ApiState>, _user: AuthUser) -> ApiResult<Response> {
    let mut out: Vec<String> = Vec::new();
    for item in state.store().read()?.scan(Collection::DATA_STORE)? {
        let (k, r) = item?;
        if r.deleted {
            continue;
        }
        if let Some((ns, _)) = k.split_once('/') {
            if out.last().map(String::as_str) != Some(ns) {
                out.push(ns.to_string());
            }
        }
    }
    Ok(json_response(StatusCode::OK, &out))
}

/// `GET /api/dataStore/{ns}`: key names, or with `fields` a paged `{pager, entries}`.
async fn keys(
    State(state): State<ApiState>,
    _user: AuthUser,
    Path(ns): Path<String>,
    q: Query,
) -> ApiResult<Response> {
    check_name("namespace", &ns)?;
    let entries = live_keys(&state, &ns)?;
    if entries.is_empty() {
        return Err(ApiError::NotFound(format!("Namespace not found: '{ns}'")));
    }
    let Some(fields) = q.get("fields") else {
        let names: Vec<&String> = entries.iter().map(|(k, _)| k).collect();
        return Ok(json_response(StatusCode::OK, &names));
    };
    let paging = q.bool("paging", true)?;
    let page = q.positive("page", 1)?;
    let page_size = q.positive("pageSize", 50)?;
    let total = entries.len();
    let (start, end) = if paging {
        let s = (page - 1).saturating_mul(page_size).min(total);
        (s, s.saturating_add(page_size).min(total))
    } else {
        (0, total)
    };
    let with_value = fields == "." || fields.split(',').any(|f| f == "value" || f == "*");
    let mut list = Vec::new();
    for (k, r) in &entries[start..end] {
        let mut e = Map::new();
        e.insert("key".into(), Value::from(k.clone()));
        if with_value {
            e.insert("value".into(), r.json().unwrap_or(Value::Null));
        }
        list.push(Value::Object(e));
    }
    let mut body = Map::new();
    if paging {
        body.insert("pager".into(), json!({"page": page, "pageSize": page_size}));
    }
    body.insert("entries".into(), Value::Array(list));
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

fn not_found(ns: &str, key: &str) -> ApiError {
    ApiError::NotFound(format!("Key '{key}' not found in namespace '{ns}'"))
}

async fn get_value(
    State(state): State<ApiState>,
    _user: AuthUser,
    Path((ns, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_name("namespace", &ns)?;
    check_name("key", &key)?;
    let v = read_value(&state, &ns, &key)?.ok_or_else(|| not_found(&ns, &key))?;
    Ok(json_response(StatusCode::OK, &v))
}

async fn meta_data(
    State(state): State<ApiState>,
    _user: AuthUser,
    Path((ns, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    let rec = state
        .store()
        .read()?
        .get(Collection::DATA_STORE, &format!("{ns}/{key}"))?
        .filter(|r| !r.deleted)
        .ok_or_else(|| not_found(&ns, &key))?;
    let stamp = |ms: u64| {
        Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(0), state.zone())
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"namespace": ns, "key": key, "created": stamp(rec.created_ms), "lastUpdated": stamp(rec.updated_ms)}),
    ))
}

#[derive(Debug)]
enum Outcome {
    Done,
    Exists,
    Missing,
}

async fn change(
    state: &ApiState,
    ns: &str,
    key: &str,
    value: Option<Value>,
    must_exist: bool,
) -> Result<Outcome, ApiError> {
    let k = format!("{ns}/{key}");
    let out = state
        .store()
        .write(move |ctx| -> Result<Outcome, StoreError> {
            let exists = ctx
                .get(Collection::DATA_STORE, &k)?
                .is_some_and(|r| !r.deleted);
            match (value, exists, must_exist) {
                (Some(_), true, false) => Ok(Outcome::Exists),
                (_, false, true) => Ok(Outcome::Missing),
                (Some(v), _, _) => {
                    ctx.put_json(Collection::DATA_STORE, &k, &v)?;
                    Ok(Outcome::Done)
                }
                (None, _, _) => {
                    ctx.delete(Collection::DATA_STORE, &k)?;
                    Ok(Outcome::Done)
                }
            }
        })
        .await
        .map_err(|e| e.flatten())?;
    Ok(out.value)
}

async fn create(
    State(state): State<ApiState>,
    user: AuthUser,
    Path((ns, key)): Path<(String, String)>,
    Json(value): Json<Value>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    check_name("namespace", &ns)?;
    check_name("key", &key)?;
    match change(&state, &ns, &key, Some(value), false).await? {
        Outcome::Exists => Err(ApiError::Conflict(format!(
            "Key '{key}' already exists in namespace '{ns}'"
        ))),
        _ => Ok(web_message_response(&WebMessage::new(
            201,
            format!("Key created: '{key}'"),
        ))),
    }
}

async fn update(
    State(state): State<ApiState>,
    user: AuthUser,
    Path((ns, key)): Path<(String, String)>,
    Json(value): Json<Value>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    check_name("namespace", &ns)?;
    check_name("key", &key)?;
    match change(&state, &ns, &key, Some(value), true).await? {
        Outcome::Missing => Err(not_found(&ns, &key)),
        _ => Ok(web_message_response(&WebMessage::new(
            200,
            format!("Key updated: '{key}'"),
        ))),
    }
}

async fn delete_key(
    State(state): State<ApiState>,
    user: AuthUser,
    Path((ns, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    match change(&state, &ns, &key, None, true).await? {
        Outcome::Missing => Err(not_found(&ns, &key)),
        _ => Ok(web_message_response(&WebMessage::new(
            200,
            format!("Key '{key}' deleted from namespace '{ns}'"),
        ))),
    }
}

async fn delete_namespace(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(ns): Path<String>,
) -> ApiResult<Response> {
    require_admin(&user)?;
    check_name("namespace", &ns)?;
    let keys: Vec<String> = live_keys(&state, &ns)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    if keys.is_empty() {
        return Err(ApiError::NotFound(format!("Namespace not found: '{ns}'")));
    }
    let n = ns.clone();
    state
        .store()
        .write(move |ctx| -> Result<(), StoreError> {
            for k in keys {
                ctx.delete(Collection::DATA_STORE, &format!("{n}/{k}"))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.flatten())?;
    Ok(web_message_response(&WebMessage::new(
        200,
        format!("Namespace '{ns}' deleted."),
    )))
}
