//! Bootstrap and login endpoints: `system/info`, `loginConfig`, `ping`, `me`,
//! `me/authorization`, `userSettings`, `systemSettings`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clinicbox_dhis2::schema;
use clinicbox_dhis2::{DHIS2_VERSION, LoginConfig, LoginPageLayout, SystemInfo, WebMessage};
use clinicbox_store::Collection;
use serde_json::{Map, Value, json};

use crate::ApiState;
use crate::error::{ApiError, ApiResult, json_response, web_message_response};
use crate::extract::Json;
use crate::fields::{FieldList, NoResolve, project};
use crate::metadata::bump_revision;
use crate::metadata::serve::View;
use crate::query::Query;
use crate::scope::AuthUser;

/// System settings set by an admin, keyed by setting name.
pub const SYSTEM_SETTINGS: Collection = Collection::named("systemSettings");

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/system/info", get(system_info))
        .route("/api/system/ping", get(ping))
        .route("/api/loginConfig", get(login_config))
        .route("/api/ping", get(ping))
        .route("/api/me", get(me))
        .route("/api/me/authorization", get(me_authorization))
        .route("/api/me/authorization/{authority}", get(me_has_authority))
        .route("/api/userSettings", get(user_settings))
        .route("/api/systemSettings", get(system_settings))
        .route(
            "/api/systemSettings/{key}",
            get(system_setting)
                .post(set_system_setting)
                .delete(delete_system_setting),
        )
}

fn fields_or(q: &Query, default: &str) -> Result<FieldList, ApiError> {
    let f: Vec<&str> = q.all("fields").filter(|f| !f.is_empty()).collect();
    FieldList::parse(&if f.is_empty() {
        default.to_string()
    } else {
        f.join(",")
    })
}

/// `GET /api/system/info`.
async fn system_info(
    State(state): State<ApiState>,
    _user: AuthUser,
    headers: HeaderMap,
    q: Query,
) -> ApiResult<Response> {
    let info = SystemInfo {
        version: DHIS2_VERSION.to_string(),
        revision: env!("CARGO_PKG_VERSION").to_string(),
        server_date: state.server_date(),
        server_time_zone_id: state.zone().name().to_string(),
        server_time_zone_display_name: state.zone().name().to_string(),
        context_path: context_path(&state, &headers),
        date_format: "yyyy-mm-dd".into(),
        calendar: "iso8601".into(),
        system_name: state.config().system_name.clone(),
        system_id: state.system_id().to_string(),
        encryption: true,
        is_metadata_version_enabled: false,
        is_metadata_sync_enabled: false,
    };
    let Value::Object(obj) =
        serde_json::to_value(&info).map_err(|e| ApiError::Internal(e.to_string()))?
    else {
        return Err(ApiError::Internal("system info is not an object".into()));
    };
    let fields = fields_or(&q, "*")?;
    Ok(json_response(
        StatusCode::OK,
        &project(&obj, &fields, &NoResolve),
    ))
}

/// The base URL tablets reach us at: configured, or from the Host header.
fn context_path(state: &ApiState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config().public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `GET /api/loginConfig`, with or without credentials.
async fn login_config(State(state): State<ApiState>) -> Response {
    let c = state.config();
    let body = LoginConfig {
        api_version: DHIS2_VERSION.to_string(),
        application_title: c.system_name.clone(),
        application_description: c.application_description.clone(),
        ui_locale: "en".into(),
        login_page_layout: LoginPageLayout::Default,
        allow_account_recovery: false,
        email_configured: false,
        self_registration_enabled: false,
        self_registration_no_recaptcha: false,
        use_custom_logo_front: false,
        min_password_length: crate::users::MIN_PASSWORD_LEN.to_string(),
        max_password_length: crate::users::MAX_PASSWORD_LEN.to_string(),
        oidc_providers: Vec::new(),
    };
    json_response(StatusCode::OK, &body)
}

fn pong() -> Response {
    let mut r = (StatusCode::OK, "pong").into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain;charset=UTF-8"),
    );
    r
}

/// `GET /api/ping` and `GET /api/system/ping` (older SDKs): no credentials, as DHIS2.
async fn ping() -> Response {
    pong()
}

/// The `me` object: the user, plus what DHIS2 computes for it.
fn me_object(user: &AuthUser) -> ApiResult<Map<String, Value>> {
    let view = View::new(user);
    let snap = view.snap;
    let s = schema::by_plural("users").ok_or_else(|| ApiError::Internal("users schema".into()))?;
    let obj = snap
        .get("users", &user.uid)
        .ok_or_else(|| ApiError::Unauthorized("Unauthorized".into()))?;
    let mut me = view.enrich(s, &user.uid, obj);
    me.insert(
        "authorities".into(),
        Value::Array(user.authorities.iter().cloned().map(Value::from).collect()),
    );
    // ≤2.37 clients read username and roles from here; 2.42 still answers it.
    me.insert(
        "userCredentials".into(),
        json!({"id": user.uid, "username": user.username, "userRoles": me.get("userRoles").cloned().unwrap_or(json!([]))}),
    );
    let program_ids: Vec<Value> = snap
        .objects("programs")
        .filter(|(_, p)| user.access_to(p).data.read)
        .map(|(id, _)| Value::from(id.clone()))
        .collect();
    let data_set_ids: Vec<Value> = snap
        .objects("dataSets")
        .filter(|(_, d)| user.access_to(d).data.read)
        .map(|(id, _)| Value::from(id.clone()))
        .collect();
    me.insert("programs".into(), Value::Array(program_ids));
    me.insert("dataSets".into(), Value::Array(data_set_ids));
    for key in [
        "organisationUnits",
        "teiSearchOrganisationUnits",
        "dataViewOrganisationUnits",
        "userGroups",
        "userRoles",
    ] {
        if !me.contains_key(key) {
            me.insert(key.into(), json!([]));
        }
    }
    Ok(me)
}

/// `GET /api/me`.
async fn me(user: AuthUser, q: Query) -> ApiResult<Response> {
    let me = me_object(&user)?;
    let fields = fields_or(&q, "*")?;
    let view = View::new(&user);
    Ok(json_response(StatusCode::OK, &project(&me, &fields, &view)))
}

/// `GET /api/me/authorization`: a JSON array of authority strings.
async fn me_authorization(user: AuthUser) -> Response {
    json_response(StatusCode::OK, &user.authorities.iter().collect::<Vec<_>>())
}

/// `GET /api/me/authorization/{authority}`: `true` or `false`.
async fn me_has_authority(user: AuthUser, Path(a): Path<String>) -> Response {
    json_response(StatusCode::OK, &user.has_authority(&a))
}

/// `GET /api/userSettings`.
async fn user_settings(user: AuthUser, q: Query) -> ApiResult<Response> {
    let mut s = Map::new();
    s.insert("keyUiLocale".into(), json!("en"));
    s.insert("keyDbLocale".into(), json!("en"));
    s.insert("keyStyle".into(), json!("light_blue/light_blue.css"));
    s.insert("keyAnalysisDisplayProperty".into(), json!("name"));
    if let Some(Value::Object(own)) = user
        .snapshot
        .get("users", &user.uid)
        .and_then(|u| u.get("settings"))
    {
        for (k, v) in own {
            s.insert(k.clone(), v.clone());
        }
    }
    let keys = q.list("key");
    if !keys.is_empty() {
        s.retain(|k, _| keys.contains(k));
    }
    let fields = fields_or(&q, "*")?;
    Ok(json_response(
        StatusCode::OK,
        &project(&s, &fields, &NoResolve),
    ))
}

fn all_system_settings(state: &ApiState) -> ApiResult<Map<String, Value>> {
    let mut s = Map::new();
    s.insert("keyStyle".into(), json!("light_blue/light_blue.css"));
    s.insert("applicationTitle".into(), json!(state.config().system_name));
    let read = state.store().read()?;
    for item in read.scan(SYSTEM_SETTINGS)? {
        let (k, rec) = item?;
        if rec.deleted {
            s.remove(&k);
            continue;
        }
        if let Ok(v) = rec.json::<Value>() {
            s.insert(k, v);
        }
    }
    Ok(s)
}

/// `GET /api/systemSettings[?key=a,b]`: a flat object of the settings that have values.
async fn system_settings(
    State(state): State<ApiState>,
    _user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let mut s = all_system_settings(&state)?;
    let keys = q.list("key");
    if !keys.is_empty() {
        s.retain(|k, _| keys.contains(k));
    }
    Ok(json_response(StatusCode::OK, &Value::Object(s)))
}

/// `GET /api/systemSettings/{key}`.
async fn system_setting(
    State(state): State<ApiState>,
    _user: AuthUser,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    let s = all_system_settings(&state)?;
    let v = s
        .get(&key)
        .ok_or_else(|| ApiError::NotFound(format!("Setting does not exist: {key}")))?;
    Ok(json_response(StatusCode::OK, &json!({ key: v })))
}

fn valid_setting_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 128 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `POST /api/systemSettings/{key}` (admin) with a JSON value.
async fn set_system_setting(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(key): Path<String>,
    Json(value): Json<Value>,
) -> ApiResult<Response> {
    if !user.is_admin() {
        return Err(ApiError::Forbidden(
            "You need the F_METADATA_IMPORT authority to change settings".into(),
        ));
    }
    if !valid_setting_key(&key) {
        return Err(ApiError::BadRequest(format!("Invalid setting key {key:?}")));
    }
    let k = key.clone();
    state
        .store()
        .write(move |ctx| -> Result<(), clinicbox_store::StoreError> {
            ctx.put_json(SYSTEM_SETTINGS, &k, &value)?;
            bump_revision(ctx)
        })
        .await
        .map_err(|e| e.flatten())?;
    Ok(web_message_response(&WebMessage::new(
        200,
        format!("System setting '{key}' set"),
    )))
}

/// `DELETE /api/systemSettings/{key}` (admin).
async fn delete_system_setting(
    State(state): State<ApiState>,
    user: AuthUser,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    if !user.is_admin() {
        return Err(ApiError::Forbidden(
            "You need the F_METADATA_IMPORT authority to change settings".into(),
        ));
    }
    let k = key.clone();
    let existed = state
        .store()
        .write(move |ctx| ctx.delete(SYSTEM_SETTINGS, &k))
        .await
        .map_err(|e| e.flatten())?
        .value;
    if !existed {
        return Err(ApiError::NotFound(format!("Setting does not exist: {key}")));
    }
    Ok(web_message_response(&WebMessage::new(
        200,
        format!("System setting '{key}' removed"),
    )))
}
