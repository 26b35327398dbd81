#![doc = include_str!("../README.md")]

pub mod metrics;
mod page;
pub mod setup;
pub mod tablets;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Extension, Form, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clinicbox_store::{Store, StoreStats};
use serde::{Deserialize, Serialize};

pub use metrics::Metrics;
pub use setup::{SetupActions, SetupStatus};
pub use tablets::{TabletSeen, Tablets};

/// `[status]` in `clinicbox.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Serve the status page at `/`. Default: `true`.
    pub enabled: bool,
    /// Who may read `/metrics`. Default: `localhost`.
    pub metrics: MetricsAccess,
    /// The URL shown (and QR-encoded) for the Capture app. Default: worked out by the daemon
    /// (`https://<public name>` with an installed certificate, else `http://<LAN address>`).
    pub capture_url: Option<String>,
    /// A tablet not seen for this many days is flagged on the page. Default: `3`.
    pub stale_tablet_days: u32,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            metrics: MetricsAccess::Localhost,
            capture_url: None,
            stale_tablet_days: 3,
        }
    }
}

/// Access to `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Only clients on the box itself (a scraper or `curl` over SSH).
    Localhost,
    /// Loopback, or anyone who logs in as a DHIS2 admin (HTTP Basic).
    Admin,
    /// Not served.
    Off,
}

/// Static facts about the box.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BoxInfo {
    pub box_id: String,
    pub clinic_name: String,
    /// The daemon's version.
    pub version: String,
    /// The DHIS2 version the box presents to tablets.
    pub dhis2_version: String,
    /// The root slot the box booted from (`a` or `b`) on an A/B image; `None` elsewhere.
    pub slot: Option<String>,
}

/// The certificate in use, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertView {
    /// `installed` or `self-signed`.
    pub source: String,
    pub subject: String,
    pub names: Vec<String>,
    pub not_after: i64,
    pub sha256: String,
    pub problem: Option<String>,
}

/// How the box is announced on the LAN.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscoveryView {
    pub interface: Option<String>,
    pub mdns_host: Option<String>,
    pub mdns_services: Vec<String>,
    pub dns_names: Vec<String>,
    pub dns_listening: Vec<String>,
}

/// Mains/battery, from the power daemon.
#[derive(Debug, Clone, Serialize)]
pub struct PowerView {
    /// e.g. `on line`, `on battery`.
    pub state: String,
    /// e.g. `battery 84 %, 41 min left`.
    pub detail: Option<String>,
}

/// "Back up now" on the admin page: where a stick is plugged in (`None`: none is), and the
/// backup itself (blocking; what to tell the admin, or why it failed).
#[derive(Clone)]
pub struct BackupNow {
    pub stick: Source<Option<String>>,
    pub run: Arc<dyn Fn() -> Result<String, String> + Send + Sync>,
}

/// The last backup written (`clinicbox backup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    /// When its snapshot of the store was taken (ms since the epoch).
    pub at_ms: u64,
    pub bytes: u64,
    /// The folder it went to (a USB stick's mount point).
    pub folder: String,
}

/// The last time a new release did not come up healthy and the box went back to its old
/// system slot by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackView {
    pub version: String,
    /// The slot it was installed in (`a` or `b`).
    pub slot: String,
    pub at_ms: i64,
    pub reason: Option<String>,
}

/// Where the uplink to national stands: the outbox (from the store) and the uplink process's
/// last report.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UplinkView {
    /// What the uplink process last said (`idle`, `sending`, `backing off 40 s`, …), or
    /// `not running` if it never reported since `serve` started.
    pub state: String,
    /// When national last confirmed records sent by this box (ms since the epoch).
    pub last_success_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Records national has not confirmed yet, by type (`trackedEntities`, `dataValues`, …).
    pub pending: std::collections::BTreeMap<String, u64>,
    /// True when more are pending than were counted.
    pub pending_at_least: bool,
    /// Records national refused, with its reason (the details only for an admin).
    pub parked_count: usize,
    pub parked: Vec<ParkedView>,
    pub national_version: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The box's clock minus national's, in seconds, when the uplink last connected.
    pub clock_skew_secs: Option<i64>,
    /// The uplink's last update check (up to date, downloading, ready, failed); `None`:
    /// updates are off.
    pub update: Option<String>,
    /// How the last metadata pull from national went.
    pub metadata: Option<MetadataView>,
    /// Values changed both on the box and at national, and which version was kept (the
    /// details only for an admin).
    pub conflicts_count: usize,
    pub conflicts: Vec<ConflictView>,
}

/// A value changed on both sides since the uplink's last round.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictView {
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
    pub field: Option<String>,
    pub on_box: Option<String>,
    pub at_national: Option<String>,
    /// `box` or `national`.
    pub chosen: String,
    pub at_ms: u64,
}

/// The last metadata pull from national.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataView {
    pub at_ms: u64,
    /// `applied`, `unchanged` or `refused`.
    pub result: String,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Stored values referring to options or stage elements national removed (kept, sent).
    pub stale_values: u64,
    /// Why it was refused, or what was left out.
    pub messages: Vec<String>,
}

/// One record national refused.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedView {
    #[serde(rename = "type")]
    pub kind: String,
    pub uid: String,
    pub code: String,
    pub message: String,
    pub attempts: u32,
}

impl UplinkView {
    /// Total records waiting for national.
    pub fn pending_total(&self) -> u64 {
        self.pending.values().sum()
    }
}

/// A value the daemon computes when the page is rendered.
pub type Source<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// Checks the request's credentials against the DHIS2 users: the admin's username, for an
/// admin.
pub type AdminCheck = Arc<
    dyn Fn(HeaderMap, Option<SocketAddr>) -> Pin<Box<dyn Future<Output = Option<String>> + Send>>
        + Send
        + Sync,
>;

/// The admin a request under the admin gate was checked to be (a request extension).
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub String);

/// Everything the page reads. Built once by the daemon; cheap to clone.
#[derive(Clone)]
pub struct StatusState {
    inner: Arc<Inner>,
}

struct Inner {
    config: StatusConfig,
    info: BoxInfo,
    started: Instant,
    capture_url: Source<String>,
    served_urls: Source<Vec<String>>,
    certificate: Option<Source<CertView>>,
    recheck_certificate: Option<Source<bool>>,
    discovery: Option<Source<DiscoveryView>>,
    power: Option<Source<Option<PowerView>>>,
    uplink: Option<Source<Option<UplinkView>>>,
    backup: Option<Source<Option<BackupView>>>,
    backup_now: Option<BackupNow>,
    rollback: Option<Source<Option<RollbackView>>>,
    /// Days before a tablet is stale, when something other than `config` decides (a remote
    /// admin's setting).
    stale_tablet_days: Option<Source<Option<u32>>>,
    /// What the last "Back up now" said, for the admin page.
    backup_said: std::sync::Mutex<Option<(bool, String)>>,
    store: Option<Store>,
    tablets: Tablets,
    metrics: Metrics,
    admin: Option<AdminCheck>,
    setup: Option<Arc<dyn SetupActions>>,
}

/// Builds a [`StatusState`].
pub struct StatusBuilder {
    inner: Inner,
}

impl StatusBuilder {
    pub fn new(config: StatusConfig, info: BoxInfo, capture_url: Source<String>) -> Self {
        Self {
            inner: Inner {
                config,
                info,
                started: Instant::now(),
                capture_url,
                served_urls: Arc::new(Vec::new),
                certificate: None,
                recheck_certificate: None,
                discovery: None,
                power: None,
                backup: None,
                backup_now: None,
                rollback: None,
                stale_tablet_days: None,
                backup_said: std::sync::Mutex::new(None),
                uplink: None,
                store: None,
                tablets: Tablets::default(),
                metrics: Metrics::default(),
                admin: None,
                setup: None,
            },
        }
    }
    pub fn served_urls(mut self, f: Source<Vec<String>>) -> Self {
        self.inner.served_urls = f;
        self
    }
    /// The certificate in use, and an action that re-reads the installed files now.
    pub fn certificate(mut self, status: Source<CertView>, recheck: Source<bool>) -> Self {
        self.inner.certificate = Some(status);
        self.inner.recheck_certificate = Some(recheck);
        self
    }
    pub fn discovery(mut self, f: Source<DiscoveryView>) -> Self {
        self.inner.discovery = Some(f);
        self
    }
    pub fn power(mut self, f: Source<Option<PowerView>>) -> Self {
        self.inner.power = Some(f);
        self
    }
    pub fn uplink(mut self, f: Source<Option<UplinkView>>) -> Self {
        self.inner.uplink = Some(f);
        self
    }
    /// The last backup (shown as "never" when the source is set and has none).
    pub fn backup(mut self, f: Source<Option<BackupView>>) -> Self {
        self.inner.backup = Some(f);
        self
    }
    /// The last rollback of an update (read at every snapshot: the boot check records one
    /// after the daemon started).
    pub fn rollback(mut self, f: Source<Option<RollbackView>>) -> Self {
        self.inner.rollback = Some(f);
        self
    }
    /// The admin page's "Back up now" to a plugged-in stick.
    pub fn backup_now(mut self, b: BackupNow) -> Self {
        self.inner.backup_now = Some(b);
        self
    }
    pub fn store(mut self, store: Store) -> Self {
        self.inner.store = Some(store);
        self
    }
    pub fn tablets(mut self, tablets: Tablets) -> Self {
        self.inner.tablets = tablets;
        self
    }
    pub fn admin(mut self, check: AdminCheck) -> Self {
        self.inner.admin = Some(check);
        self
    }
    /// First-boot setup at `/setup` (needs [`Self::admin`] for the steps after the claim).
    /// Where the stale-tablet days come from when they are set at run time (`None` from it:
    /// the configured days).
    pub fn stale_tablet_days(mut self, f: Source<Option<u32>>) -> Self {
        self.inner.stale_tablet_days = Some(f);
        self
    }
    pub fn setup(mut self, actions: Arc<dyn SetupActions>) -> Self {
        self.inner.setup = Some(actions);
        self
    }
    pub fn build(self) -> StatusState {
        StatusState {
            inner: Arc::new(self.inner),
        }
    }
}

impl StatusState {
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    pub fn tablets(&self) -> &Tablets {
        &self.inner.tablets
    }

    /// Everything on the page, as data.
    pub fn snapshot(&self) -> Snapshot {
        let i = &self.inner;
        let store = i.store.as_ref().and_then(|s| s.stats().ok());
        let (requests, errors) = i.metrics.totals();
        let setup = i.setup.as_ref().map(|s| s.status());
        let mut info = i.info.clone();
        if let Some(name) = setup.as_ref().and_then(|s| s.clinic_name.clone()) {
            info.clinic_name = name;
        }
        Snapshot {
            info,
            setup,
            capture_url: (i.capture_url)(),
            served_urls: (i.served_urls)(),
            uptime_secs: i.started.elapsed().as_secs(),
            now_ms: now_ms(),
            certificate: i.certificate.as_ref().map(|f| f()),
            discovery: i.discovery.as_ref().map(|f| f()),
            power: i.power.as_ref().and_then(|f| f()),
            backup: i.backup.as_ref().map(|f| f()),
            backup_stick: i.backup_now.as_ref().and_then(|b| (b.stick)()),
            backup_said: i
                .backup_said
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            uplink: i.uplink.as_ref().and_then(|f| f()),
            rollback: i.rollback.as_ref().and_then(|f| f()),
            // Read from the store only where an admin sees it (`with_audit`): the public page
            // and /metrics are rendered far more often.
            audit: Vec::new(),
            store,
            tablets: i.tablets.list(),
            stale_tablet_days: i
                .stale_tablet_days
                .as_ref()
                .and_then(|f| f())
                .unwrap_or(i.config.stale_tablet_days),
            requests,
            errors,
        }
    }
}

/// How many audit entries the admin page and `/status.json` show.
const AUDIT_SHOWN: usize = 20;

/// The page's figures at one moment; also served as `/status.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub info: BoxInfo,
    /// How far first-boot setup has got (None: setup is not offered).
    pub setup: Option<SetupStatus>,
    pub capture_url: String,
    pub served_urls: Vec<String>,
    pub uptime_secs: u64,
    pub now_ms: u64,
    pub certificate: Option<CertView>,
    pub discovery: Option<DiscoveryView>,
    pub power: Option<PowerView>,
    /// `None`: backups are not reported here; `Some(None)`: never backed up.
    pub backup: Option<Option<BackupView>>,
    /// Where a stick is plugged in for "Back up now" (admin page only).
    #[serde(skip)]
    pub backup_stick: Option<String>,
    /// What the last "Back up now" said: (it worked, the words).
    #[serde(skip)]
    pub backup_said: Option<(bool, String)>,
    pub uplink: Option<UplinkView>,
    /// The last update that came back to the old slot by itself.
    pub rollback: Option<RollbackView>,
    /// The newest changes made on the box and by whom (admins only: see
    /// [`StatusState::with_audit`]).
    pub audit: Vec<clinicbox_web::audit::AuditEntry>,
    pub store: Option<StoreStats>,
    pub tablets: Vec<TabletSeen>,
    pub stale_tablet_days: u32,
    pub requests: u64,
    pub errors: u64,
}

impl Snapshot {
    /// Whether tablet `t` has not synced for longer than `stale_tablet_days`.
    pub fn is_stale(&self, t: &TabletSeen) -> bool {
        let stale_ms = u64::from(self.stale_tablet_days) * 86_400_000;
        self.now_ms.saturating_sub(t.last_seen_ms) > stale_ms
    }

    /// The tablets that have not synced for longer than `stale_tablet_days`, longest first.
    pub fn stale_tablets(&self) -> Vec<&TabletSeen> {
        let mut stale: Vec<&TabletSeen> =
            self.tablets.iter().filter(|t| self.is_stale(t)).collect();
        stale.sort_by_key(|t| t.last_seen_ms);
        stale
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `/`, `/status.json`, `/metrics` and the admin actions under `/admin`.
pub fn router(state: StatusState) -> Router {
    let mut r = Router::new();
    if state.inner.config.enabled {
        r = r
            .route("/", get(index))
            .route("/status.json", get(status_json))
            .route("/admin", get(admin_page))
            .merge(
                Router::new()
                    .route("/admin/tablets/forget", post(forget_tablet))
                    .route("/admin/certificate/recheck", post(recheck_certificate))
                    .route("/admin/backup", post(backup_now))
                    .route_layer(axum::middleware::from_fn_with_state(
                        state.clone(),
                        admin_gate,
                    )),
            )
            .merge(setup::routes(&state));
    }
    if state.inner.config.metrics != MetricsAccess::Off {
        r = r.route("/metrics", get(metrics));
    }
    r.with_state(state)
}

/// Middleware for the daemon's whole router: counts every request for `/metrics`. (Tablets
/// are recorded by the API once their credentials were verified, never from a header alone.)
pub async fn track(State(state): State<StatusState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Bounded labels: a made-up method must not add a series per request.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "OTHER",
    }
    .to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(req).await;
    state.inner.metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn index(State(state): State<StatusState>) -> Response {
    let snap = state.snapshot();
    let mut resp = Html(page::render(&snap)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // No script runs on this page; say so to the browser as well.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'"),
    );
    resp
}

/// The figures for anyone on the LAN; who uses which tablet from where only for an admin
/// (Basic), since staff names and addresses are nobody else's business.
async fn status_json(
    State(state): State<StatusState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Json<Snapshot> {
    let mut snap = state.snapshot();
    if headers.contains_key(header::AUTHORIZATION) && is_admin(&state, &headers, addr).await {
        state.with_audit(&mut snap);
    } else {
        for t in &mut snap.tablets {
            t.username.clear();
            t.address = None;
        }
        // National's messages may quote a value a tablet sent.
        if let Some(u) = &mut snap.uplink {
            u.parked.clear();
            u.conflicts.clear();
            if let Some(m) = &mut u.metadata {
                m.messages.clear();
            }
        }
    }
    Json(snap)
}

async fn metrics(
    State(state): State<StatusState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let allowed = addr.ip().is_loopback()
        || (state.inner.config.metrics == MetricsAccess::Admin
            && is_admin(&state, &headers, addr).await);
    if !allowed {
        return if state.inner.config.metrics == MetricsAccess::Admin {
            challenge()
        } else {
            (
                StatusCode::FORBIDDEN,
                "metrics are served to localhost only\n",
            )
                .into_response()
        };
    }
    let body = render_metrics(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The whole `/metrics` text.
pub fn render_metrics(state: &StatusState) -> String {
    use metrics::family;
    let snap = state.snapshot();
    let mut out = String::new();
    let _ = std::fmt::Write::write_fmt(
        &mut out,
        format_args!(
            "# HELP clinicbox_build_info The daemon's version.\n# TYPE clinicbox_build_info gauge\nclinicbox_build_info{{version=\"{}\",dhis2_version=\"{}\"}} 1\n",
            metrics::label(&snap.info.version),
            metrics::label(&snap.info.dhis2_version)
        ),
    );
    family(
        &mut out,
        "clinicbox_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        snap.uptime_secs,
    );
    state.inner.metrics.render_http(&mut out);
    if let Some(s) = &snap.store {
        family(
            &mut out,
            "clinicbox_store_file_bytes",
            "gauge",
            "Size of the store file.",
            s.file_bytes,
        );
        family(
            &mut out,
            "clinicbox_store_commits_total",
            "counter",
            "Store commits since start.",
            s.commits,
        );
        family(
            &mut out,
            "clinicbox_store_writes_total",
            "counter",
            "Store write jobs since start.",
            s.writes,
        );
        family(
            &mut out,
            "clinicbox_store_failed_commits_total",
            "counter",
            "Store commits that failed since start.",
            s.failed_commits,
        );
        family(
            &mut out,
            "clinicbox_store_last_seq",
            "gauge",
            "Sequence number of the last change.",
            s.last_seq,
        );
        family(
            &mut out,
            "clinicbox_store_last_write_timestamp_seconds",
            "gauge",
            "Time of the last commit (0: none since start).",
            s.last_write_ms as f64 / 1000.0,
        );
        out.push_str("# HELP clinicbox_store_records Records per collection (tombstones included).\n# TYPE clinicbox_store_records gauge\n");
        for (c, n) in &s.records {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "clinicbox_store_records{{collection=\"{}\"}} {n}\n",
                    metrics::label(c)
                ),
            );
        }
    }
    family(
        &mut out,
        "clinicbox_tablets_seen",
        "gauge",
        "Distinct user and app pairs seen.",
        snap.tablets.len(),
    );
    if let Some(c) = &snap.certificate {
        family(
            &mut out,
            "clinicbox_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the certificate in use expires.",
            c.not_after,
        );
        family(
            &mut out,
            "clinicbox_tls_certificate_installed",
            "gauge",
            "1 when an installed (CA-issued) certificate is in use, 0 for self-signed.",
            u8::from(c.source == "installed"),
        );
    }
    if let Some(u) = &snap.uplink {
        uplink_metrics(&mut out, u);
    }
    out
}

fn uplink_metrics(out: &mut String, u: &UplinkView) {
    use metrics::family;
    out.push_str("# HELP clinicbox_uplink_pending Records national has not confirmed yet, by type.\n# TYPE clinicbox_uplink_pending gauge\n");
    for (kind, n) in &u.pending {
        let _ = std::fmt::Write::write_fmt(
            out,
            format_args!(
                "clinicbox_uplink_pending{{type=\"{}\"}} {n}\n",
                metrics::label(kind)
            ),
        );
    }
    family(
        out,
        "clinicbox_uplink_parked",
        "gauge",
        "Records national refused, waiting for a fix.",
        u.parked_count,
    );
    family(
        out,
        "clinicbox_uplink_last_success_timestamp_seconds",
        "gauge",
        "When national last confirmed records of this box (0: never).",
        u.last_success_ms.unwrap_or(0) as f64 / 1000.0,
    );
    family(
        out,
        "clinicbox_uplink_sent_bytes_total",
        "counter",
        "Bytes the uplink sent to national since it started.",
        u.bytes_sent,
    );
    family(
        out,
        "clinicbox_uplink_received_bytes_total",
        "counter",
        "Bytes the uplink received from national since it started.",
        u.bytes_received,
    );
}

async fn is_admin(state: &StatusState, headers: &HeaderMap, addr: SocketAddr) -> bool {
    admin_name(state, headers, addr).await.is_some()
}

async fn admin_name(state: &StatusState, headers: &HeaderMap, addr: SocketAddr) -> Option<String> {
    match &state.inner.admin {
        Some(check) => check(headers.clone(), Some(addr)).await,
        None => None,
    }
}

impl StatusState {
    /// Fills `snap.audit` with the trail's newest entries, for an admin's view.
    fn with_audit(&self, snap: &mut Snapshot) {
        snap.audit = self
            .inner
            .store
            .as_ref()
            .and_then(|s| s.read().ok())
            .and_then(|r| clinicbox_web::audit::recent(&r, AUDIT_SHOWN).ok())
            .unwrap_or_default();
    }

    /// Adds a change made through the page to the box's audit trail.
    pub(crate) async fn audit(&self, who: &str, action: &str, detail: &str) {
        let Some(store) = &self.inner.store else {
            return;
        };
        let entry = clinicbox_web::audit::AuditEntry::new(who, action, detail);
        clinicbox_web::audit::record(store, entry).await;
    }
}

fn challenge() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"ClinicBox admin\", charset=\"UTF-8\"",
        )],
        "admin login required\n",
    )
        .into_response()
}

/// Refuses cross-site form posts: a browser that cached admin Basic credentials would send
/// them with a forged form from another page.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|h| h.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => {
            let authority = origin.split_once("://").map_or(origin, |(_, r)| r);
            authority.split('/').next() == Some(host)
        }
        _ => false,
    }
}

async fn admin_page(
    State(state): State<StatusState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if state.inner.admin.is_none() {
        return (
            StatusCode::NOT_FOUND,
            Html(page::render_admin_unavailable()),
        )
            .into_response();
    }
    if !is_admin(&state, &headers, addr).await {
        return challenge();
    }
    let mut snap = state.snapshot();
    state.with_audit(&mut snap);
    Html(page::render_admin(&snap)).into_response()
}

#[derive(Deserialize)]
struct ForgetForm {
    username: String,
    device: String,
}

/// The gate of every admin form, before its body is read or parsed: an admin login (else the
/// Basic challenge) and a same-origin post (else refused).
pub(crate) async fn admin_gate(
    State(state): State<StatusState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(name) = admin_name(&state, req.headers(), addr).await else {
        return challenge();
    };
    if !same_origin(req.headers()) {
        return setup::cross_site();
    }
    req.extensions_mut().insert(Admin(name));
    next.run(req).await
}

async fn forget_tablet(
    State(state): State<StatusState>,
    Extension(Admin(who)): Extension<Admin>,
    Form(form): Form<ForgetForm>,
) -> Response {
    state.inner.tablets.forget(&form.username, &form.device);
    state.inner.tablets.flush();
    let detail = format!("{} on {}", form.username, form.device);
    state.audit(&who, "tablet forgotten", &detail).await;
    redirect_admin()
}

async fn recheck_certificate(
    State(state): State<StatusState>,
    Extension(Admin(who)): Extension<Admin>,
) -> Response {
    if let Some(recheck) = &state.inner.recheck_certificate {
        let changed = recheck();
        let detail = if changed {
            "a new certificate is served"
        } else {
            "no change"
        };
        state.audit(&who, "certificate re-checked", detail).await;
    }
    redirect_admin()
}

/// Backs the box up to the plugged-in stick now; the admin page then says how it went.
async fn backup_now(
    State(state): State<StatusState>,
    Extension(Admin(who)): Extension<Admin>,
) -> Response {
    let Some(b) = state.inner.backup_now.clone() else {
        return redirect_admin();
    };
    let said = match tokio::task::spawn_blocking(move || (b.run)()).await {
        Ok(Ok(m)) => (true, m),
        Ok(Err(e)) => (false, e),
        Err(e) => (false, format!("the backup stopped: {e}")),
    };
    let action = if said.0 {
        "backup written"
    } else {
        "backup failed"
    };
    state.audit(&who, action, &said.1).await;
    *state
        .inner
        .backup_said
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(said);
    redirect_admin()
}

fn redirect_admin() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn state(metrics: MetricsAccess, admin: Option<AdminCheck>) -> StatusState {
        let info = BoxInfo {
            box_id: "box-0001".into(),
            clinic_name: "Kisumu <Health> Centre".into(),
            version: "0.1.0".into(),
            dhis2_version: "2.42.1".into(),
            slot: Some("a".into()),
        };
        let config = StatusConfig {
            metrics,
            ..StatusConfig::default()
        };
        let mut b = StatusBuilder::new(config, info, Arc::new(|| "http://10.0.0.1".to_owned()));
        if let Some(a) = admin {
            b = b.admin(a);
        }
        b.build()
    }

    fn app(s: StatusState) -> Router {
        let api = Router::new().route("/api/me", get(|| async { "{}" }));
        router(s.clone())
            .merge(api)
            .layer(axum::middleware::from_fn_with_state(s, track))
    }

    fn req(path: &str, from: [u8; 4]) -> Request {
        let mut r = Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("req");
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((from, 40000))));
        r
    }

    async fn body(resp: Response) -> String {
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8(b.to_vec()).expect("utf8")
    }

    #[tokio::test]
    async fn the_page_says_which_update_was_undone_and_why() {
        let info = BoxInfo {
            box_id: "box-0001".into(),
            clinic_name: "Clinic".into(),
            version: "0.1.1".into(),
            dhis2_version: "2.42.1".into(),
            slot: Some("b".into()),
        };
        let rollback = RollbackView {
            version: "0.1.2".into(),
            slot: "a".into(),
            at_ms: 0,
            reason: Some("clinicbox.service is not <active>".into()),
        };
        let s = StatusBuilder::new(StatusConfig::default(), info, Arc::new(String::new))
            .rollback(Arc::new(move || Some(rollback.clone())))
            .build();
        let html = body(app(s).oneshot(req("/", [10, 0, 0, 9])).await.expect("resp")).await;
        assert!(
            html.contains("data-figure=\"rollback\">0.1.2 did not start well and was undone<"),
            "{html}"
        );
        assert!(html.contains("system A, "), "{html}");
        assert!(
            html.contains("clinicbox.service is not &lt;active&gt;"),
            "{html}"
        );
    }

    #[tokio::test]
    async fn page_escapes_and_carries_qr() {
        let resp = app(state(MetricsAccess::Localhost, None))
            .oneshot(req("/", [10, 0, 0, 9]))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::OK);
        let html = body(resp).await;
        assert!(html.contains("Kisumu &lt;Health&gt; Centre"));
        assert!(!html.contains("<script"));
        assert!(html.contains("<svg"));
        assert!(html.contains("data-figure=\"capture-url\">http://10.0.0.1<"));
        assert!(html.contains("data-figure=\"slot\">(system A)<"), "{html}");
    }

    #[tokio::test]
    async fn metrics_localhost_only() {
        let s = state(MetricsAccess::Localhost, None);
        let resp = app(s.clone())
            .oneshot(req("/metrics", [10, 0, 0, 9]))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let resp = app(s)
            .oneshot(req("/metrics", [127, 0, 0, 1]))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::OK);
        let text = body(resp).await;
        assert!(text.contains("clinicbox_uptime_seconds"));
        assert!(
            text.contains(
                "clinicbox_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"403\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn made_up_methods_share_one_metrics_series() {
        let s = state(MetricsAccess::Localhost, None);
        for m in ["FOO1", "FOO2", "BREW"] {
            let mut r = req("/nowhere", [10, 0, 0, 9]);
            *r.method_mut() = axum::http::Method::from_bytes(m.as_bytes()).expect("method");
            app(s.clone()).oneshot(r).await.expect("resp");
        }
        let text = render_metrics(&s);
        assert!(!text.contains("FOO1") && !text.contains("BREW"), "{text}");
        assert!(text.contains("method=\"OTHER\""), "{text}");
    }

    #[test]
    fn tablets_not_synced_for_days_are_said_at_the_top_of_the_page() {
        let s = state(MetricsAccess::Localhost, None);
        s.tablets().record("nurse1", None, None, 1);
        s.tablets().record("nurse2", None, None, now_ms());
        let page = page::render(&s.snapshot());
        let banner = page
            .split("data-figure=\"stale-tablets\">")
            .nth(1)
            .expect("the stale tablets said in words");
        assert!(
            banner.starts_with("1 tablet has not synced for 3 days: nurse1 ("),
            "{banner}"
        );
        let banner = banner.split("</p>").next().unwrap_or_default();
        assert!(!banner.contains("nurse2"), "{banner}");
        let said = page.find("stale-tablets").unwrap_or(usize::MAX);
        let connect = page.find("Connect a tablet").unwrap_or(0);
        assert!(said < connect, "said before anything else");
        s.tablets().record("nurse1", None, None, now_ms());
        assert!(!page::render(&s.snapshot()).contains("stale-tablets"));
    }

    #[tokio::test]
    async fn metrics_for_admins_asks_for_login() {
        let check: AdminCheck = Arc::new(|h: HeaderMap, _| {
            Box::pin(async move {
                h.get(header::AUTHORIZATION)
                    .is_some_and(|v| v == "Basic YWRtaW46ZGlzdHJpY3Q=")
                    .then(|| "admin".to_string())
            })
        });
        let s = state(MetricsAccess::Admin, Some(check));
        let resp = app(s.clone())
            .oneshot(req("/metrics", [10, 0, 0, 9]))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        let mut r = req("/metrics", [10, 0, 0, 9]);
        r.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46ZGlzdHJpY3Q="),
        );
        assert_eq!(
            app(s).oneshot(r).await.expect("resp").status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn made_up_credentials_record_no_tablet_and_status_json_hides_who() {
        let check: AdminCheck = Arc::new(|h: HeaderMap, _| {
            Box::pin(async move {
                h.get(header::AUTHORIZATION)
                    .is_some_and(|v| v == "Basic YWRtaW46ZGlzdHJpY3Q=")
                    .then(|| "admin".to_string()) // admin:district
            })
        });
        let s = state(MetricsAccess::Localhost, Some(check));
        let a = app(s.clone());
        // A header alone records nothing: only the API does, after verifying it.
        let mut r = req("/", [10, 0, 0, 9]);
        r.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic ZXZlOng="),
        ); // eve:x
        a.clone().oneshot(r).await.expect("resp");
        assert!(s.tablets().list().is_empty());
        s.tablets()
            .record("nurse1", None, Some([10, 0, 0, 9].into()), 1);
        let body = |r: Response| async move {
            let b = axum::body::to_bytes(r.into_body(), 1 << 20)
                .await
                .expect("body");
            String::from_utf8(b.to_vec()).expect("utf8")
        };
        let anon = body(
            a.clone()
                .oneshot(req("/status.json", [10, 0, 0, 7]))
                .await
                .expect("resp"),
        )
        .await;
        assert!(
            !anon.contains("nurse1") && !anon.contains("10.0.0.9"),
            "{anon}"
        );
        let mut r = req("/status.json", [10, 0, 0, 7]);
        r.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46ZGlzdHJpY3Q="),
        );
        let admin = body(a.oneshot(r).await.expect("resp")).await;
        assert!(
            admin.contains("nurse1") && admin.contains("10.0.0.9"),
            "{admin}"
        );
    }

    #[tokio::test]
    async fn admin_forms_are_not_read_before_the_login_is_checked() {
        let check: AdminCheck = Arc::new(|h: HeaderMap, _| {
            Box::pin(async move {
                h.contains_key(header::AUTHORIZATION)
                    .then(|| "admin".to_string())
            })
        });
        let s = state(MetricsAccess::Localhost, Some(check));
        for uri in [
            "/admin/tablets/forget",
            "/setup/users",
            "/setup/users/password",
            "/setup/users/disable",
        ] {
            let mut r = Request::builder()
                .method("POST")
                .uri(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::HOST, "box.lan")
                .header(header::ORIGIN, "http://box.lan")
                .body(Body::from("%%%not a form&&&=="))
                .expect("req");
            r.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 1))));
            // A stranger's garbage is answered with the login challenge, not a parse error.
            let resp = app(s.clone()).oneshot(r).await.expect("r");
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{uri}");
        }
    }

    #[tokio::test]
    async fn admin_actions_need_login_and_same_origin() {
        let check: AdminCheck = Arc::new(|h: HeaderMap, _| {
            Box::pin(async move {
                h.contains_key(header::AUTHORIZATION)
                    .then(|| "admin".to_string())
            })
        });
        let s = state(MetricsAccess::Localhost, Some(check));
        s.tablets().record("nurse1", None, None, 1);
        let form = "username=nurse1&device=unknown";
        let post = |auth: bool, origin: &str| {
            let mut r = Request::builder()
                .method("POST")
                .uri("/admin/tablets/forget")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::HOST, "box.lan")
                .header(header::ORIGIN, origin)
                .body(Body::from(form))
                .expect("req");
            if auth {
                r.headers_mut().insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_static("Basic eDp5"),
                );
            }
            r.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 1))));
            r
        };
        assert_eq!(
            app(s.clone())
                .oneshot(post(false, "http://box.lan"))
                .await
                .expect("r")
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app(s.clone())
                .oneshot(post(true, "http://evil.example"))
                .await
                .expect("r")
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(s.tablets().list().len(), 1);
        assert_eq!(
            app(s.clone())
                .oneshot(post(true, "http://box.lan"))
                .await
                .expect("r")
                .status(),
            StatusCode::SEE_OTHER
        );
        assert!(s.tablets().list().is_empty());
    }

    #[test]
    fn config_defaults() {
        let c: StatusConfig = serde_json::from_str("{}").expect("cfg");
        assert_eq!(c, StatusConfig::default());
        let c: StatusConfig = serde_json::from_str("{\"metrics\":\"admin\"}").expect("cfg");
        assert_eq!(c.metrics, MetricsAccess::Admin);
    }
}
