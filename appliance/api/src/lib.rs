#![doc = include_str!("../README.md")]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod auth;
pub mod conflicts;
pub mod count;
pub mod datastore;
pub mod demo;
pub mod extract;
pub mod fields;
pub mod files;
pub mod filter;
pub mod metadata;
pub mod query;
pub mod system;
pub mod users;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use clinicbox_dhis2::schema::{self, Schema};
use clinicbox_dhis2::{Dhis2Timestamp, ImportStatus, ServerTimeZone, Status, WebMessage};
use clinicbox_store::{Collection, Store, StoreError};
use serde::{Deserialize, Serialize};

pub use crate::metadata::import::{ImportParams, ImportStrategy};
pub use crate::metadata::{MetadataService, Snapshot};
pub use clinicbox_web::error::{ApiError, ApiResult};
pub use clinicbox_web::scope::{AuthUser, OrgUnitRef, Scope};
pub use clinicbox_web::{error, scope};

use crate::auth::{Authenticator, LoginLimits};
use crate::error::web_message_response;
use crate::extract::Json;
use crate::query::Query;

/// The `[api]` section of the daemon's config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// IANA zone of `serverDate` and every timestamp served (default `Etc/UTC`). Tablets convert
    /// from it, so any valid zone works; pick the clinic's for readable timestamps.
    pub time_zone: String,
    /// `systemName` and login page title.
    pub system_name: String,
    /// Login page description.
    pub application_description: String,
    /// `contextPath` served in `system/info` (default: `http://<Host header>`).
    pub public_url: Option<String>,
    /// Failed logins per username within `login_window_secs` before devices that never logged in
    /// as it are slowed down to one attempt per 30 s (default 5). Never a lock: devices that
    /// logged in as the user before are not slowed.
    pub failed_logins_per_user: usize,
    /// Failed logins per client address within the window before 429 (default 30).
    pub failed_logins_per_address: usize,
    /// Failed-login window and lock time in seconds (default 900).
    pub login_window_secs: u64,
    /// Seconds a verified password stays cached (default 3600).
    pub credential_cache_secs: u64,
    /// Largest request body in bytes (default 64 MiB: a tablet posts all pending data at once).
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            time_zone: "Etc/UTC".into(),
            system_name: "ClinicBox".into(),
            application_description: "Offline clinic server".into(),
            public_url: None,
            failed_logins_per_user: 5,
            failed_logins_per_address: 30,
            login_window_secs: 900,
            credential_cache_secs: 3600,
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Requests and failures per route, for the admin surface.
#[derive(Default)]
pub struct Metrics {
    by_route: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Metrics {
    /// `(route, requests, failures)` rows.
    pub fn snapshot(&self) -> Vec<(String, u64, u64)> {
        self.by_route
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, (n, f))| (k.clone(), *n, *f))
            .collect()
    }
}

struct Inner {
    store: Store,
    config: ApiConfig,
    zone: ServerTimeZone,
    metadata: MetadataService,
    auth: Authenticator,
    system_id: String,
    metrics: Metrics,
    logins: std::sync::OnceLock<auth::LoginObserver>,
    password_check: std::sync::OnceLock<Arc<dyn auth::PasswordCheck>>,
}

/// Shared state of every API handler. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

/// A stable id for this box, kept in the store.
const SYSTEM: Collection = Collection::named("system");

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("api.time_zone: {0}")]
    TimeZone(String),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
}

impl ApiState {
    /// Validates the config and loads the metadata snapshot.
    pub async fn new(store: Store, config: ApiConfig) -> Result<ApiState, StartError> {
        let zone = ServerTimeZone::new(&config.time_zone)
            .map_err(|e| StartError::TimeZone(e.to_string()))?;
        let metadata = MetadataService::new(store.clone(), zone.clone())?;
        let system_id = match store
            .read()?
            .get(SYSTEM, "id")?
            .and_then(|r| r.json::<String>().ok())
        {
            Some(id) => id,
            None => {
                let id = clinicbox_dhis2::Uid::generate().to_string();
                let v = id.clone();
                store
                    .write(move |ctx| ctx.put_json(SYSTEM, "id", &v))
                    .await
                    .map_err(|e| e.flatten())?;
                id
            }
        };
        let auth = Authenticator::new(LoginLimits {
            per_user: config.failed_logins_per_user.max(1),
            per_address: config.failed_logins_per_address.max(1),
            window: Duration::from_secs(config.login_window_secs.max(1)),
            cache_ttl: Duration::from_secs(config.credential_cache_secs),
            ..LoginLimits::default()
        });
        Ok(ApiState {
            inner: Arc::new(Inner {
                store,
                config,
                zone,
                metadata,
                auth,
                system_id,
                metrics: Metrics::default(),
                logins: std::sync::OnceLock::new(),
                password_check: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }
    pub fn zone(&self) -> &ServerTimeZone {
        &self.inner.zone
    }
    pub fn metadata(&self) -> &MetadataService {
        &self.inner.metadata
    }
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }
    /// Tells `observer` of every `/api` call whose credentials were verified (the status
    /// page's "tablets seen"). Set once; later calls are ignored.
    pub fn observe_logins(&self, observer: auth::LoginObserver) {
        let _ = self.inner.logins.set(observer);
    }
    pub(crate) fn login_observer(&self) -> Option<&auth::LoginObserver> {
        self.inner.logins.get()
    }
    /// Checks passwords the box cannot verify at national (through the uplink). Set once;
    /// later calls are ignored.
    pub fn check_passwords_with(&self, check: Arc<dyn auth::PasswordCheck>) {
        let _ = self.inner.password_check.set(check);
    }
    pub(crate) fn password_check(&self) -> Option<&Arc<dyn auth::PasswordCheck>> {
        self.inner.password_check.get()
    }
    pub fn system_id(&self) -> &str {
        &self.inner.system_id
    }
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Now, from the store's clock, formatted as DHIS2's `serverDate`.
    pub fn server_date(&self) -> String {
        self.format_ms(self.inner.store.server_time_ms())
    }

    /// A store timestamp (ms) as a DHIS2 timestamp in the server zone.
    pub fn format_ms(&self, ms: u64) -> String {
        Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(i64::MAX), &self.inner.zone)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }
}

/// Everything under `/api` this crate serves; tracker and aggregate have their own routers,
/// merged beside this one in the daemon's `app.rs`.
pub fn router(state: ApiState) -> Router {
    let mut r = Router::new()
        .merge(system::routes())
        .merge(datastore::routes())
        .route(
            "/api/metadata",
            get(metadata::serve::export).post(import_metadata),
        )
        .route(
            "/api/categoryOptions/orgUnits",
            get(metadata::serve::category_option_org_units),
        )
        .route("/api/icons", get(metadata::serve::icons));
    for s in schema::SCHEMAS {
        r = r.merge(metadata_routes(s));
    }
    r.fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

fn metadata_routes(s: &'static Schema) -> Router<ApiState> {
    Router::new()
        .route(
            &format!("/api/{}", s.plural),
            get(move |st, u, q| metadata::serve::list(s, st, u, q)),
        )
        .route(
            &format!("/api/{}/{{uid}}", s.plural),
            get(move |st, p, u, q| metadata::serve::get_one(s, st, p, u, q)),
        )
}

/// `POST /api/metadata` (admins): import a package.
async fn import_metadata(
    State(state): State<ApiState>,
    user: AuthUser,
    q: Query,
    Json(package): Json<serde_json::Value>,
) -> ApiResult<Response> {
    if !user.is_admin() {
        return Err(ApiError::Forbidden(
            "You need the F_METADATA_IMPORT authority to import metadata".into(),
        ));
    }
    let params = ImportParams::from_query(&q)?;
    let report = metadata::import::import(state.metadata(), &package, params).await?;
    if report.status == ImportStatus::Ok {
        let msg = WebMessage::new(200, "Import was successful.")
            .with_status(Status::Ok)
            .with_response(
                serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.to_string()))?,
            );
        Ok(web_message_response(&msg))
    } else {
        Err(ApiError::Import(Box::new(report)))
    }
}

/// Unknown paths under `/api`: 401 without valid credentials (as DHIS2), else 404; elsewhere
/// 404. Always a WebMessage.
async fn fallback(State(state): State<ApiState>, req: Request) -> ApiError {
    let not_found =
        ApiError::NotFound(format!("No endpoint {} {}", req.method(), req.uri().path()));
    if !req.uri().path().starts_with("/api") {
        return not_found;
    }
    let (mut parts, _) = req.into_parts();
    match <AuthUser as axum::extract::FromRequestParts<ApiState>>::from_request_parts(
        &mut parts, &state,
    )
    .await
    {
        Err(e) => e,
        Ok(_) => not_found,
    }
}

async fn method_not_allowed(req: Request) -> Response {
    web_message_response(&WebMessage::new(
        StatusCode::METHOD_NOT_ALLOWED.as_u16(),
        format!("Request method '{}' is not supported", req.method()),
    ))
}

async fn count_requests(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_string(), |m| m.as_str().to_string());
    let route = format!("{} {route}", req.method());
    let resp = next.run(req).await;
    let failed = resp.status().is_client_error() || resp.status().is_server_error();
    let mut m = state
        .metrics()
        .by_route
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let e = m.entry(route).or_default();
    e.0 += 1;
    e.1 += u64::from(failed);
    resp
}
