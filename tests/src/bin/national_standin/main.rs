//! A stand-in for the national DHIS2, for the uplink's tests: a real HTTP server process that
//! behaves as `../shared/research/dhis2-server-sync.md` describes the real one, awkward parts
//! included, and keeps a ledger of what it applied.
//!
//! What it does like DHIS2 2.42:
//! - `GET /api/system/info` (version, `serverDate` in `serverTimeZoneId`, not UTC),
//!   `GET /api/me`; `Authorization: ApiToken …` or Basic, else 401.
//! - `POST /api/tracker`: flat payloads; `importStrategy` CREATE_AND_UPDATE / CREATE / UPDATE /
//!   DELETE; `atomicMode` ALL / OBJECT; `async=true` (the default!) answers with a job whose
//!   report lives in memory only and is lost on restart; `async=false` answers the
//!   ImportReport, with **HTTP 409 whenever any object failed, even when others were committed**.
//!   Per-object E-codes (E1000 no write access to the org unit, E1048 bad UID, E1068/E1033/E5000
//!   missing parent, E1114/E1113/E1082/E4017 already deleted, E1063/E1081/E1032/E4016 not found,
//!   E1100 cascade); re-sent notes and relationships with a UID are warnings (E1119, E4015);
//!   **a note without a UID is added again on every send**. Gzip JSON is not accepted here.
//! - `POST /api/dataValueSets` and `/api/completeDataSetRegistrations`: gzip or plain bodies
//!   (magic bytes), an identical value is `ignored`, conflicts name `indexes`, locked periods
//!   answer E7640; WARNING is HTTP 200 inside a WebMessage.
//! - `POST /api/fileResources` (multipart `file`, `uid`, `domain`) and `GET …/{uid}`; a second
//!   upload with the same UID is a 409; an event value of a file data element naming a file
//!   national lacks is E1084.
//! - Bodies over 10 MB get 413 (the reference nginx's `client_max_body_size`).
//!
//! - Metadata, users, approvals, reserved values, program ownership and the dataStore as
//!   national keeps them (`metadata.rs`, `approvals.rs`, `reserved.rs`, `ownership.rs`,
//!   `datastore.rs`).
//!
//! Test-only endpoints, outside `/api`: `GET /ledger` (what was applied, how many times),
//! `POST /faults` (see [`Faults`]), `POST /admin/metadata`, `/admin/metadata/remove`,
//! `/admin/sync-user`, `/admin/approvals` (national's admins at work). With `--state FILE` the
//! data (not the jobs) survives a restart; with `--tls-cert PEM --tls-key PEM` it speaks HTTPS;
//! `--demo` starts it holding the demo's metadata, a national nurse and the sync account on
//! clinic A; `--updates DIR` serves an update mirror beside it (`updates.rs`). Prints
//! `national-standin: listening on http(s)://ADDR` once it accepts connections.

#![allow(clippy::result_large_err)] // handlers answer early with a whole Response

mod approvals;
mod data;
mod datastore;
mod metadata;
mod ownership;
mod reserved;
mod tracker_export;
mod updates;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const ZONE: &str = "Africa/Nairobi";
const MAX_BODY: usize = 10 * 1024 * 1024;

/// Faults a test turns on with `POST /faults` (fields left out keep their value).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Faults {
    /// Apply the next N imports, then cut the connection instead of answering.
    drop_answer_after_apply: u32,
    /// Answer the next N requests under /api with this status and an HTML page (a proxy in
    /// trouble), applying nothing.
    storm_status: u16,
    storm_count: u32,
    /// Refuse every credential (a revoked token): 401.
    unauthorized: bool,
    /// Objects refused with E1064 (a unique attribute value national already holds elsewhere).
    duplicate_uids: BTreeSet<String>,
    /// Org units the sync user has no write access to (E1000 / aggregate conflicts).
    refuse_org_units: BTreeSet<String>,
    /// Periods locked by expiry (E7640).
    locked_periods: BTreeSet<String>,
    /// The version `/api/system/info` reports.
    version: Option<String>,
    /// Data elements whose values are file resource UIDs (national's metadata says so; the
    /// stand-in has none): an event naming a file national does not hold is refused (E1084).
    file_data_elements: BTreeSet<String>,
    /// Seconds added to the `serverDate` `/api/system/info` reports (a box clock that is off).
    clock_offset_secs: i64,
    /// Apply the next N ownership transfers, then cut the connection instead of answering.
    drop_transfer_answers: u32,
    /// Refuse every dataStore write (403): the sync account lacks the namespace's sharing.
    data_store_forbidden: bool,
    /// Cut the next N downloads of an update's release part-way (`updates.rs`).
    cut_update_downloads: u32,
    /// Answer this many more requests for a release's chunks, then hold every further one
    /// unanswered while it stays 0 (a link that went quiet mid-download; `updates.rs`).
    /// Absent: chunks are answered as usual.
    hold_update_chunks_after: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Obj {
    /// The object as last applied (notes and collections merged).
    body: Value,
    deleted: bool,
    /// How many imports wrote it (creates + updates).
    writes: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NoteRec {
    parent: String,
    value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FileRec {
    name: String,
    content_type: String,
    domain: String,
    bytes: usize,
    /// FNV-1a of the bytes, so a test can tell the right file arrived.
    fnv: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ValueRec {
    value: Option<String>,
    comment: Option<String>,
    deleted: bool,
    writes: u32,
    #[serde(default)]
    stored_by: Option<String>,
    /// National's time of the last write.
    #[serde(default)]
    last_updated: String,
}

/// Everything national holds, and the ledger of what it applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Data {
    tracked_entities: BTreeMap<String, Obj>,
    enrollments: BTreeMap<String, Obj>,
    events: BTreeMap<String, Obj>,
    relationships: BTreeMap<String, Obj>,
    /// Notes by UID (a note without one got a generated UID, as DHIS2 does).
    notes: BTreeMap<String, NoteRec>,
    data_values: BTreeMap<String, ValueRec>,
    registrations: BTreeMap<String, Value>,
    files: BTreeMap<String, FileRec>,
    /// Requests per `METHOD path`.
    requests: BTreeMap<String, u64>,
    /// Import requests applied whose answer was cut off by a fault.
    dropped_answers: u64,
    /// Metadata and users (see `metadata.rs`).
    #[serde(default)]
    meta: metadata::Meta,
    /// Approval states by `wf/pe/ou/aoc` (see `approvals.rs`).
    #[serde(default)]
    approvals: BTreeMap<String, Value>,
    /// Reserved values by attribute (see `reserved.rs`).
    #[serde(default)]
    reserved: BTreeMap<String, reserved::Reserved>,
    /// Program owners by `te/program` (see `ownership.rs`).
    #[serde(default)]
    owners: BTreeMap<String, String>,
    /// Ownership transfers applied, in order: `{trackedEntity, program, from, to, by}`.
    #[serde(default)]
    transfers: Vec<Value>,
    /// The dataStore by namespace and key (see `datastore.rs`).
    #[serde(default)]
    data_store: BTreeMap<String, BTreeMap<String, Value>>,
    /// dataStore writes applied, by `namespace/key`.
    #[serde(default)]
    data_store_writes: BTreeMap<String, u64>,
    /// Requests to the update mirror, in order.
    #[serde(default)]
    update_requests: Vec<updates::UpdateRequest>,
}

struct Inner {
    data: Data,
    faults: Faults,
    /// Async job reports: in memory only, lost on restart (F5).
    jobs: HashMap<String, Value>,
    state_file: Option<PathBuf>,
    next_id: u64,
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    token: Option<String>,
    basic: Option<(String, String)>,
    /// The update mirror's folder (`--updates`).
    updates: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let (mut token, mut user, mut password, mut state_file) = (None, None, None, None);
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut demo = false;
    let mut updates = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = val()?.parse()?,
            "--token" => token = Some(val()?),
            "--user" => user = Some(val()?),
            "--password" => password = Some(val()?),
            "--state" => state_file = Some(PathBuf::from(val()?)),
            "--demo" => demo = true,
            "--updates" => updates = Some(PathBuf::from(val()?)),
            "--tls-cert" => tls_cert = Some(PathBuf::from(val()?)),
            "--tls-key" => tls_key = Some(PathBuf::from(val()?)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut data: Data = state_file
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if demo && data.meta.objects.is_empty() {
        metadata::seed_demo(&mut data.meta);
    }
    let app = App {
        inner: Arc::new(Mutex::new(Inner {
            data,
            faults: Faults::default(),
            jobs: HashMap::new(),
            state_file,
            next_id: 1,
        })),
        token,
        basic: user.zip(password),
        updates,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        match tls_cert.zip(tls_key) {
            // HTTPS, as a national server is: rustls with ring, the certificate given.
            Some((cert, key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config =
                    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
                println!("national-standin: listening on https://{addr}");
                axum_server::from_tcp_rustls(listener, config)?
                    .serve(router(app).into_make_service())
                    .await
            }
            None => {
                println!("national-standin: listening on http://{addr}");
                axum::serve(tokio::net::TcpListener::from_std(listener)?, router(app)).await
            }
        }
    })?;
    Ok(())
}

fn router(app: App) -> Router {
    Router::new()
        .route("/api/system/info", get(system_info))
        .route("/api/me", get(me))
        .route("/api/tracker", post(tracker_import))
        .route(
            "/api/tracker/trackedEntities",
            get(tracker_export::tracked_entities),
        )
        .route(
            "/api/tracker/trackedEntities/{uid}",
            get(tracker_export::tracked_entity),
        )
        .route("/api/tracker/events", get(tracker_export::events))
        .route(
            "/api/tracker/ownership/transfer",
            axum::routing::put(ownership::transfer_request),
        )
        .route("/api/tracker/jobs/{id}", get(job_notifications))
        .route("/api/tracker/jobs/{id}/report", get(job_report))
        .route("/api/fileResources", post(file_upload))
        .route("/api/fileResources/{uid}", get(file_get))
        .route(
            "/api/dataValueSets",
            get(data::get_values).post(data_values),
        )
        .route("/api/completeDataSetRegistrations", post(registrations))
        .route("/api/dataApprovals/multiple", get(approvals::multiple))
        .route(
            "/api/trackedEntityAttributes/{uid}/generateAndReserve",
            get(reserved::generate_and_reserve),
        )
        .route("/api/dataStore/{ns}", get(datastore::keys))
        .route(
            "/api/dataStore/{ns}/{key}",
            get(datastore::get_value)
                .post(datastore::create)
                .put(datastore::update),
        )
        .route("/api/organisationUnits/{uid}", get(metadata::org_unit))
        .route("/api/deletedObjects", get(metadata::deleted_objects))
        .route("/api/metadata", get(metadata::changes))
        .route("/api/{plural}", get(metadata::list))
        .route("/api/{plural}/{*file}", get(metadata::dependency_export))
        .route("/updates/{*path}", get(updates::file))
        .route("/ledger", get(ledger))
        .route("/faults", post(set_faults))
        .route("/admin/metadata", post(metadata::admin_metadata))
        .route("/admin/metadata/remove", post(metadata::admin_remove))
        .route("/admin/sync-user", post(metadata::admin_sync_user))
        .route("/admin/approvals", post(approvals::admin_set))
        .route("/admin/data-values", post(data::admin_values))
        .route("/admin/tracker", post(tracker_export::admin_tracker))
        .route("/admin/tracker/delete", post(tracker_export::admin_delete))
        .route("/admin/tracker/transfer", post(ownership::admin_transfer))
        .layer(axum::middleware::from_fn(metadata::etag))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

impl App {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Auth, request counting and the proxy storm; `Err` is the answer to send instead.
    fn gate(&self, what: &str, headers: &HeaderMap) -> Result<(), Response> {
        let mut i = self.lock();
        *i.data.requests.entry(what.to_string()).or_default() += 1;
        if i.faults.storm_count > 0 {
            i.faults.storm_count -= 1;
            let status =
                StatusCode::from_u16(i.faults.storm_status).unwrap_or(StatusCode::BAD_GATEWAY);
            return Err((
                status,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response());
        }
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let ok = !i.faults.unauthorized
            && (self
                .token
                .as_ref()
                .is_some_and(|t| auth == format!("ApiToken {t}"))
                || self.basic.as_ref().is_some_and(|(u, p)| {
                    use base64::Engine as _;
                    auth == format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                    )
                }));
        if !ok {
            return Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"httpStatus": "Unauthorized", "httpStatusCode": 401, "status": "ERROR", "message": "Unauthorized"})),
            )
                .into_response());
        }
        Ok(())
    }

    fn save(i: &Inner) {
        if let Some(p) = &i.state_file
            && let Ok(bytes) = serde_json::to_vec(&i.data)
        {
            let tmp = p.with_extension("tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(tmp, p);
            }
        }
    }

    /// After an import was applied: answer, or cut the connection if a fault says so.
    fn answer(&self, status: StatusCode, body: Value) -> Response {
        let mut i = self.lock();
        Self::save(&i);
        if i.faults.drop_answer_after_apply > 0 {
            i.faults.drop_answer_after_apply -= 1;
            return Self::cut(&mut i, status);
        }
        (status, axum::Json(body)).into_response()
    }

    /// Headers go out, then the body fails: the client sees a connection cut mid-answer.
    fn cut(i: &mut Inner, status: StatusCode) -> Response {
        i.data.dropped_answers += 1;
        Self::save(i);
        let broken = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("connection cut"))
        });
        (status, Body::from_stream(broken)).into_response()
    }
}

fn server_date() -> String {
    server_date_offset(0)
}

fn server_date_offset(secs: i64) -> String {
    let zone = jiff::tz::TimeZone::get(ZONE).unwrap_or(jiff::tz::TimeZone::UTC);
    let now = jiff::Timestamp::now();
    now.checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(now)
        .to_zoned(zone)
        .strftime("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string()
}

async fn system_info(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = app.gate("GET /api/system/info", &headers) {
        return r;
    }
    let (version, offset) = {
        let i = app.lock();
        let v = i.faults.version.clone().unwrap_or("2.42.3".into());
        (v, i.faults.clock_offset_secs)
    };
    axum::Json(json!({
        "version": version, "revision": "standin", "serverDate": server_date_offset(offset),
        "serverTimeZoneId": ZONE, "serverTimeZoneDisplayName": "East Africa Time",
        "contextPath": "", "calendar": "iso8601", "dateFormat": "yyyy-mm-dd"
    }))
    .into_response()
}

async fn me(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(r) = metadata::me_as_staff(&app, &headers) {
        return r;
    }
    if let Err(r) = app.gate("GET /api/me", &headers) {
        return r;
    }
    let ous: Vec<Value> = app
        .lock()
        .data
        .meta
        .sync_org_units
        .iter()
        .map(|id| json!({"id": id}))
        .collect();
    axum::Json(json!({"id": "SyncUser001", "username": "clinicbox-sync", "organisationUnits": ous}))
        .into_response()
}

/// An ETag's digest.
fn fnv_hex(bytes: &[u8]) -> String {
    clinicbox_tests::clinic::fnv1a(bytes)
}

async fn ledger(State(app): State<App>) -> Response {
    axum::Json(app.lock().data.clone()).into_response()
}

async fn set_faults(State(app): State<App>, axum::Json(f): axum::Json<Value>) -> Response {
    let mut i = app.lock();
    let mut current = serde_json::to_value(&i.faults).unwrap_or(json!({}));
    if let (Some(c), Some(n)) = (current.as_object_mut(), f.as_object()) {
        for (k, v) in n {
            c.insert(k.clone(), v.clone());
        }
    }
    match serde_json::from_value(current) {
        Ok(f) => {
            i.faults = f;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn is_gzip(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
}

fn gunzip(b: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .take(64 * 1024 * 1024)
        .read_to_end(&mut out)?;
    Ok(out)
}

fn conflict(message: &str) -> Response {
    (
        StatusCode::CONFLICT,
        axum::Json(json!({"httpStatus": "Conflict", "httpStatusCode": 409, "status": "ERROR", "message": message})),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"httpStatus": "Bad Request", "httpStatusCode": 400, "status": "ERROR", "message": message})),
    )
        .into_response()
}

fn valid_uid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11 && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
}

// ---------------------------------------------------------------------------------------
// Tracker

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Te,
    En,
    Ev,
    Rel,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Te => "TRACKED_ENTITY",
            Ty::En => "ENROLLMENT",
            Ty::Ev => "EVENT",
            Ty::Rel => "RELATIONSHIP",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Ty::Te => "trackedEntity",
            Ty::En => "enrollment",
            Ty::Ev => "event",
            Ty::Rel => "relationship",
        }
    }
    fn list(self) -> &'static str {
        match self {
            Ty::Te => "trackedEntities",
            Ty::En => "enrollments",
            Ty::Ev => "events",
            Ty::Rel => "relationships",
        }
    }
    /// (already deleted, not found)
    fn codes(self) -> (&'static str, &'static str) {
        match self {
            Ty::Te => ("E1114", "E1063"),
            Ty::En => ("E1113", "E1081"),
            Ty::Ev => ("E1082", "E1032"),
            Ty::Rel => ("E4017", "E4016"),
        }
    }
    fn map(self, d: &mut Data) -> &mut BTreeMap<String, Obj> {
        match self {
            Ty::Te => &mut d.tracked_entities,
            Ty::En => &mut d.enrollments,
            Ty::Ev => &mut d.events,
            Ty::Rel => &mut d.relationships,
        }
    }
}

#[derive(Default)]
struct Report {
    errors: Vec<Value>,
    warnings: Vec<Value>,
    persisted: BTreeMap<&'static str, Vec<Value>>,
    created: u64,
    updated: u64,
    deleted: u64,
    ignored: u64,
}

impl Report {
    fn error(&mut self, t: Ty, uid: &str, code: &str, message: String) {
        self.ignored += 1;
        self.errors.push(
            json!({"message": message, "errorCode": code, "trackerType": t.name(), "uid": uid}),
        );
    }
    fn warning(&mut self, t: Ty, uid: &str, code: &str, message: String) {
        self.warnings.push(
            json!({"message": message, "errorCode": code, "trackerType": t.name(), "uid": uid}),
        );
    }
    fn done(&mut self, t: Ty, uid: &str) {
        self.persisted
            .entry(t.name())
            .or_default()
            .push(json!({"trackerType": t.name(), "uid": uid, "errorReports": []}));
    }
    fn body(self, mode: &str) -> (StatusCode, Value) {
        let status = if !self.errors.is_empty() {
            "ERROR"
        } else if !self.warnings.is_empty() {
            "WARNING"
        } else {
            "OK"
        };
        let stats = json!({"created": self.created, "updated": self.updated, "deleted": self.deleted,
            "ignored": self.ignored, "total": self.created + self.updated + self.deleted + self.ignored});
        let mut type_map = serde_json::Map::new();
        for t in [Ty::Te, Ty::En, Ty::Ev, Ty::Rel] {
            let reports = self.persisted.get(t.name()).cloned().unwrap_or_default();
            type_map.insert(t.name().into(), json!({"trackerType": t.name(), "stats": {"created": 0, "updated": 0, "deleted": 0, "ignored": 0, "total": reports.len()}, "objectReports": reports}));
        }
        let mut validation = json!({"errorReports": self.errors});
        if mode == "WARNINGS" || mode == "FULL" {
            validation["warningReports"] = Value::Array(self.warnings);
        }
        let code = if status == "ERROR" {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        };
        (
            code,
            json!({"status": status, "validationReport": validation, "stats": stats,
            "bundleReport": {"status": status, "typeReportMap": type_map, "stats": stats}}),
        )
    }
}

async fn tracker_import(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = app.gate("POST /api/tracker", &headers) {
        return r;
    }
    if is_gzip(&body) {
        // DHIS2 binds tracker JSON directly: no gzip (dhis2-server-sync.md §1.9).
        return bad_request("JSON parse error: Illegal character ((CTRL-CHAR, code 31))");
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("JSON parse error");
    };
    let strategy = q
        .get("importStrategy")
        .map_or("CREATE_AND_UPDATE", String::as_str)
        .to_string();
    let atomic_all = q.get("atomicMode").is_none_or(|m| m != "OBJECT");
    let mode = q
        .get("reportMode")
        .map_or("ERRORS", String::as_str)
        .to_string();
    let asynchronous = q.get("async").is_none_or(|a| a != "false");
    let (status, report) = {
        let mut i = app.lock();
        let faults = i.faults.clone();
        let mut work = i.data.clone();
        let report = import(&mut work, &payload, &strategy, &faults);
        let failed = !report.errors.is_empty();
        let (status, body) = report.body(&mode);
        if !(atomic_all && failed) {
            let (req, drop) = (i.data.requests.clone(), i.data.dropped_answers);
            i.data = work;
            i.data.requests = req;
            i.data.dropped_answers = drop;
        }
        (status, body)
    };
    if asynchronous {
        let mut i = app.lock();
        let id = format!("Job{:08}", i.next_id);
        i.next_id += 1;
        i.jobs.insert(id.clone(), report);
        drop(i);
        return app.answer(StatusCode::OK, json!({"httpStatus": "OK", "httpStatusCode": 200, "status": "OK",
            "message": "Tracker job added", "response": {"id": id, "location": format!("/api/tracker/jobs/{id}")}}));
    }
    app.answer(status, report)
}

async fn job_notifications(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/tracker/jobs", &headers) {
        return r;
    }
    let known = app.lock().jobs.contains_key(&id);
    if !known {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"status": "ERROR", "httpStatusCode": 404,
            "message": format!("Job {id} not found")})),
        )
            .into_response();
    }
    axum::Json(
        json!([{"uid": id, "level": "INFO", "category": "TRACKER_IMPORT_JOB",
        "time": server_date(), "message": "Import complete", "completed": true}]),
    )
    .into_response()
}

async fn job_report(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/tracker/jobs/report", &headers) {
        return r;
    }
    match app.lock().jobs.get(&id) {
        Some(r) => axum::Json(r.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"status": "ERROR", "httpStatusCode": 404,
            "message": format!("Summary for job {id} does not exist")})),
        )
            .into_response(),
    }
}

fn list(payload: &Value, t: Ty) -> Vec<&Value> {
    payload
        .get(t.list())
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn import(d: &mut Data, payload: &Value, strategy: &str, faults: &Faults) -> Report {
    let mut r = Report::default();
    if strategy == "DELETE" {
        for t in [Ty::Rel, Ty::Ev, Ty::En, Ty::Te] {
            for o in list(payload, t) {
                delete(d, &mut r, t, str_of(o, t.key()).unwrap_or(""));
            }
        }
        return r;
    }
    // Objects refused in this payload: their children fail with E5000.
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for t in [Ty::Te, Ty::En, Ty::Ev, Ty::Rel] {
        for o in list(payload, t) {
            let uid = str_of(o, t.key()).unwrap_or("").to_string();
            match check(d, t, o, strategy, faults, &failed) {
                Err((code, message)) => {
                    r.error(t, &uid, code, message);
                    failed.insert(uid);
                }
                Ok(()) => upsert(d, &mut r, t, &uid, o),
            }
        }
    }
    r
}

fn check(
    d: &mut Data,
    t: Ty,
    o: &Value,
    strategy: &str,
    faults: &Faults,
    failed: &BTreeSet<String>,
) -> Result<(), (&'static str, String)> {
    let uid = str_of(o, t.key()).unwrap_or("");
    if !valid_uid(uid) {
        return Err((
            "E1048",
            format!(
                "Object: `{}`, uid: `{uid}` has an invalid uid format.",
                t.key()
            ),
        ));
    }
    let (gone, missing) = t.codes();
    let existing = t.map(d).get(uid).map(|o| o.deleted);
    match (existing, strategy) {
        (Some(true), _) => {
            return Err((
                gone,
                format!(
                    "{} `{uid}` was already deleted and cannot be modified.",
                    t.key()
                ),
            ));
        }
        (None, "UPDATE") => return Err((missing, format!("{} `{uid}` does not exist.", t.key()))),
        (Some(false), "CREATE") if t != Ty::Rel => {
            return Err(("E1030", format!("{} `{uid}` already exists.", t.key())));
        }
        _ => {}
    }
    if faults.duplicate_uids.contains(uid) {
        return Err((
            "E1064",
            format!("Non-unique attribute value for {} `{uid}`.", t.key()),
        ));
    }
    if let Some(ou) = str_of(o, "orgUnit")
        && faults.refuse_org_units.contains(ou)
    {
        return Err((
            "E1000",
            format!("User: `SyncUser001`, has no write access to OrganisationUnit: `{ou}`."),
        ));
    }
    let parent = |d: &mut Data,
                  pt: Ty,
                  p: Option<&str>,
                  code: &'static str|
     -> Result<(), (&'static str, String)> {
        let Some(p) = p else { return Ok(()) };
        if failed.contains(p) {
            return Err((
                "E5000",
                format!(
                    "{} `{uid}` cannot be persisted because {} {p} referenced by it cannot be persisted.",
                    t.key(),
                    pt.key()
                ),
            ));
        }
        match pt.map(d).get(p) {
            Some(o) if !o.deleted => Ok(()),
            _ => Err((code, format!("{} `{p}` not found.", pt.key()))),
        }
    };
    match t {
        Ty::Te => {
            if str_of(o, "trackedEntityType").is_none() || str_of(o, "orgUnit").is_none() {
                return Err(("E1121", "Missing required tracked entity property.".into()));
            }
            Ok(())
        }
        Ty::En => {
            if str_of(o, "program").is_none() {
                return Err((
                    "E1122",
                    "Missing required enrollment property: `program`.".into(),
                ));
            }
            parent(d, Ty::Te, str_of(o, "trackedEntity").or(Some("")), "E1068")?;
            ownership::check(d, o)
        }
        Ty::Ev => {
            if str_of(o, "programStage").is_none() || str_of(o, "orgUnit").is_none() {
                return Err(("E1123", "Missing required event property.".into()));
            }
            for dv in o
                .get("dataValues")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let de = str_of(dv, "dataElement").unwrap_or("");
                if let Some(file) = str_of(dv, "value")
                    && faults.file_data_elements.contains(de)
                    && !d.files.contains_key(file)
                {
                    return Err((
                        "E1084",
                        format!("File resource: `{file}`, reference could not be found."),
                    ));
                }
            }
            parent(d, Ty::En, str_of(o, "enrollment"), "E1033")?;
            ownership::check(d, o)
        }
        Ty::Rel => {
            if existing == Some(false) {
                return Ok(()); // a warning, handled in upsert
            }
            for side in ["from", "to"] {
                let item = o.get(side).cloned().unwrap_or(Value::Null);
                let (pt, p) = if let Some(te) = item
                    .pointer("/trackedEntity/trackedEntity")
                    .and_then(Value::as_str)
                {
                    (Ty::Te, te.to_string())
                } else if let Some(en) = item
                    .pointer("/enrollment/enrollment")
                    .and_then(Value::as_str)
                {
                    (Ty::En, en.to_string())
                } else if let Some(ev) = item.pointer("/event/event").and_then(Value::as_str) {
                    (Ty::Ev, ev.to_string())
                } else {
                    return Err((
                        "E4000",
                        format!("Relationship: `{uid}` is missing `{side}`."),
                    ));
                };
                parent(d, pt, Some(&p), "E4012")?;
            }
            Ok(())
        }
    }
}

fn upsert(d: &mut Data, r: &mut Report, t: Ty, uid: &str, o: &Value) {
    if t == Ty::Rel && d.relationships.get(uid).is_some_and(|x| !x.deleted) {
        r.warning(
            t,
            uid,
            "E4015",
            format!("Relationship: `{uid}`, already exists."),
        );
        r.ignored += 1;
        return;
    }
    let mut incoming = o.clone();
    let notes = incoming.as_object_mut().and_then(|m| m.remove("notes"));
    let entry = t.map(d).entry(uid.to_string()).or_default();
    if entry.writes == 0 {
        r.created += 1;
    } else {
        r.updated += 1;
    }
    entry.writes += 1;
    // Collections merge item by item (attributes, dataValues); other fields are replaced.
    let mut merged = entry.body.clone();
    if !merged.is_object() {
        merged = json!({});
    }
    for (k, v) in incoming.as_object().into_iter().flatten() {
        if (k == "attributes" || k == "dataValues") && v.is_array() {
            let id = if k == "attributes" {
                "attribute"
            } else {
                "dataElement"
            };
            let mut items: Vec<Value> = merged
                .get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in v.as_array().into_iter().flatten() {
                let key = str_of(item, id);
                let before = items.iter().find(|x| str_of(x, id) == key).cloned();
                items.retain(|x| str_of(x, id) != key);
                if !item.get("value").is_some_and(Value::is_null) {
                    let mut item = item.clone();
                    // Each value keeps the time national last changed it.
                    let same = before
                        .as_ref()
                        .is_some_and(|b| b.get("value") == item.get("value"));
                    item["updatedAt"] = match before.as_ref().and_then(|b| b.get("updatedAt")) {
                        Some(t) if same => t.clone(),
                        _ => Value::String(server_date()),
                    };
                    items.push(item);
                }
            }
            merged[k.as_str()] = Value::Array(items);
        } else {
            merged[k.as_str()] = v.clone();
        }
    }
    merged["updatedAt"] = Value::String(server_date());
    entry.body = merged;
    if t == Ty::En {
        let body = entry.body.clone();
        ownership::enrolled(d, &body);
    }
    r.done(t, uid);
    for n in notes
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let value = str_of(n, "value").unwrap_or("").to_string();
        match str_of(n, "note") {
            Some(id) if d.notes.contains_key(id) => {
                r.warning(
                    t,
                    uid,
                    "E1119",
                    format!("A note with uid `{id}` already exists."),
                );
            }
            Some(id) => {
                d.notes.insert(
                    id.to_string(),
                    NoteRec {
                        parent: uid.to_string(),
                        value,
                    },
                );
            }
            None => {
                // DHIS2 generates a UID: a re-send adds the note again.
                let id = format!("gen{:08}", d.notes.len());
                d.notes.insert(
                    id,
                    NoteRec {
                        parent: uid.to_string(),
                        value,
                    },
                );
            }
        }
    }
}

fn delete(d: &mut Data, r: &mut Report, t: Ty, uid: &str) {
    let (gone, missing) = t.codes();
    match t.map(d).get(uid).map(|o| o.deleted) {
        None => {
            return r.error(
                t,
                uid,
                missing,
                format!("{} `{uid}` does not exist.", t.key()),
            );
        }
        Some(true) => {
            return r.error(
                t,
                uid,
                gone,
                format!("{} `{uid}` was already deleted.", t.key()),
            );
        }
        Some(false) => {}
    }
    // Without the cascade authority, live children refuse the delete (E1100/E1103).
    let child_of = |child: &BTreeMap<String, Obj>, key: &str| {
        child
            .values()
            .any(|c| !c.deleted && str_of(&c.body, key) == Some(uid))
    };
    if (t == Ty::Te && child_of(&d.enrollments, "trackedEntity"))
        || (t == Ty::En && child_of(&d.events, "enrollment"))
    {
        let code = if t == Ty::Te { "E1100" } else { "E1103" };
        return r.error(
            t,
            uid,
            code,
            format!(
                "{} `{uid}` has children; the user lacks the cascade-delete authority.",
                t.key()
            ),
        );
    }
    if let Some(o) = t.map(d).get_mut(uid) {
        o.deleted = true;
    }
    r.deleted += 1;
    r.done(t, uid);
}

// ---------------------------------------------------------------------------------------
// Aggregate

fn body_json(body: &Bytes) -> Result<Value, Response> {
    let plain = if is_gzip(body) {
        gunzip(body).map_err(|_| bad_request("The gzip body could not be read"))?
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&plain).map_err(|_| bad_request("JSON parse error"))
}

fn summary(
    imported: u64,
    updated: u64,
    ignored: u64,
    deleted: u64,
    conflicts: Vec<Value>,
) -> (StatusCode, Value) {
    let status = if conflicts.is_empty() {
        "SUCCESS"
    } else {
        "WARNING"
    };
    let rejected: Vec<Value> = conflicts
        .iter()
        .flat_map(|c| c["indexes"].as_array().cloned().unwrap_or_default())
        .collect();
    (
        StatusCode::OK,
        json!({"httpStatus": "OK", "httpStatusCode": 200,
        "status": if conflicts.is_empty() { "OK" } else { "WARNING" },
        "message": "Import was successful.",
        "response": {"responseType": "ImportSummary", "status": status,
            "importCount": {"imported": imported, "updated": updated, "ignored": ignored, "deleted": deleted},
            "conflicts": conflicts, "rejectedIndexes": rejected}}),
    )
}

async fn data_values(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = app.gate("POST /api/dataValueSets", &headers) {
        return r;
    }
    let payload = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (status, answer) = {
        let mut i = app.lock();
        let faults = i.faults.clone();
        let (mut imported, mut updated, mut ignored, mut deleted) = (0, 0, 0, 0);
        let mut conflicts = Vec::new();
        let values = payload
            .get("dataValues")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (idx, v) in values.iter().enumerate() {
            let ids = [
                "dataElement",
                "period",
                "orgUnit",
                "categoryOptionCombo",
                "attributeOptionCombo",
            ]
            .map(|k| str_of(v, k).unwrap_or(""));
            let conflict = |code: &str, message: String| json!({"object": ids[0], "value": message, "errorCode": code, "indexes": [idx]});
            if ids.iter().any(|s| s.is_empty()) {
                conflicts.push(conflict("E7610", "Data value is missing an id".into()));
                ignored += 1;
                continue;
            }
            if faults.refuse_org_units.contains(ids[2]) {
                conflicts.push(conflict(
                    "E7617",
                    format!(
                        "Organisation unit: `{}` not in hierarchy of current user",
                        ids[2]
                    ),
                ));
                ignored += 1;
                continue;
            }
            if faults.locked_periods.contains(ids[1]) {
                conflicts.push(conflict(
                    "E7640",
                    format!(
                        "Current date is past expiry days for period {} and data set",
                        ids[1]
                    ),
                ));
                ignored += 1;
                continue;
            }
            let data_set = str_of(&payload, "dataSet").unwrap_or("");
            if approvals::locks(&i, data_set, ids[1], ids[2], ids[4]) {
                conflicts.push(conflict(
                    "E7642",
                    format!(
                        "Data is already approved for data set: `{data_set}` period: `{}` org unit: `{}` attribute option combo: `{}`",
                        ids[1], ids[2], ids[4]
                    ),
                ));
                ignored += 1;
                continue;
            }
            let key = ids.join("/");
            let value = str_of(v, "value").map(str::to_string);
            let comment = str_of(v, "comment").map(str::to_string);
            let delete =
                v.get("deleted").and_then(Value::as_bool).unwrap_or(false) || value.is_none();
            let stored_by = str_of(v, "storedBy").map(str::to_string);
            let rec = i.data.data_values.entry(key).or_default();
            if delete {
                if rec.writes > 0 && !rec.deleted {
                    rec.deleted = true;
                    rec.writes += 1;
                    rec.stored_by = stored_by;
                    rec.last_updated = server_date();
                    deleted += 1;
                } else {
                    ignored += 1;
                }
            } else if rec.writes > 0 && !rec.deleted && rec.value == value && rec.comment == comment
            {
                ignored += 1; // identical: DHIS2 ignores it
            } else {
                if rec.writes == 0 || rec.deleted {
                    imported += 1
                } else {
                    updated += 1
                }
                rec.value = value;
                rec.comment = comment;
                rec.deleted = false;
                rec.writes += 1;
                rec.stored_by = stored_by;
                rec.last_updated = server_date();
            }
        }
        summary(imported, updated, ignored, deleted, conflicts)
    };
    app.answer(status, answer)
}

async fn registrations(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = app.gate("POST /api/completeDataSetRegistrations", &headers) {
        return r;
    }
    let payload = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (status, answer) = {
        let mut i = app.lock();
        let faults = i.faults.clone();
        let (mut imported, mut ignored) = (0, 0);
        let mut conflicts = Vec::new();
        let list = payload
            .get("completeDataSetRegistrations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (idx, reg) in list.iter().enumerate() {
            let ids = [
                "dataSet",
                "period",
                "organisationUnit",
                "attributeOptionCombo",
            ]
            .map(|k| str_of(reg, k).unwrap_or(""));
            if faults.locked_periods.contains(ids[1]) {
                conflicts.push(json!({"object": ids[1], "value": "Period is locked", "errorCode": "E7640", "indexes": [idx]}));
                ignored += 1;
                continue;
            }
            i.data.registrations.insert(ids.join("/"), reg.clone());
            imported += 1;
        }
        summary(imported, 0, ignored, 0, conflicts)
    };
    app.answer(status, answer)
}

// ---------------------------------------------------------------------------------------
// File resources

async fn file_get(State(app): State<App>, Path(uid): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = app.gate("GET /api/fileResources", &headers) {
        return r;
    }
    match app.lock().data.files.get(&uid) {
        Some(f) => axum::Json(json!({"id": uid, "name": f.name, "contentType": f.content_type,
            "contentLength": f.bytes, "domain": f.domain, "storageStatus": "STORED"})).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"httpStatus": "Not Found", "httpStatusCode": 404,
            "status": "ERROR", "message": format!("FileResource with id {uid} could not be found.")}))).into_response(),
    }
}

async fn file_upload(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    mut multipart: axum::extract::Multipart,
) -> Response {
    if let Err(r) = app.gate("POST /api/fileResources", &headers) {
        return r;
    }
    let mut file = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("file") {
            let name = field.file_name().unwrap_or("file").to_string();
            let ct = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_string();
            match field.bytes().await {
                Ok(b) => file = Some((name, ct, b)),
                Err(_) => return bad_request("The multipart body could not be read"),
            }
        }
    }
    let Some((name, content_type, bytes)) = file else {
        return bad_request("Required request part 'file' is not present");
    };
    let uid = q
        .get("uid")
        .cloned()
        .unwrap_or_else(|| format!("gen{:08}", app.lock().data.files.len()));
    if !valid_uid(&uid) && !uid.starts_with("gen") {
        return bad_request("Invalid uid");
    }
    {
        let mut i = app.lock();
        if i.data.files.contains_key(&uid) {
            return (StatusCode::CONFLICT, axum::Json(json!({"httpStatus": "Conflict", "httpStatusCode": 409,
                "status": "ERROR", "message": format!("FileResource with uid `{uid}` already exists")}))).into_response();
        }
        let domain = q.get("domain").cloned().unwrap_or("DATA_VALUE".into());
        i.data.files.insert(
            uid.clone(),
            FileRec {
                name: name.clone(),
                content_type: content_type.clone(),
                domain,
                bytes: bytes.len(),
                fnv: clinicbox_tests::clinic::fnv1a(&bytes),
            },
        );
    }
    app.answer(StatusCode::ACCEPTED, json!({"httpStatus": "Accepted", "httpStatusCode": 202, "status": "OK",
        "message": "File uploaded", "response": {"responseType": "FileResource",
        "fileResource": {"id": uid, "name": name, "contentType": content_type, "storageStatus": "PENDING"}}}))
}
