//! First-boot setup, guided by the status page: a new box comes up with no users, no metadata
//! and recovery keys nobody has seen. `/setup` walks whoever sets it up through, in order:
//!
//! 1. **Claim**: the clinic's name and the first admin account. Open to anyone on the LAN
//!    while the box has no user at all (as a new appliance's onboarding is), and never again.
//! 2. **Recovery keys**: shown to that person right away, then to an admin until someone
//!    confirms they are written down; then they are deleted from the box.
//! 3. **Metadata package**: the programs, forms and org units the tablets will download,
//!    uploaded as the JSON file exported from the national DHIS2.
//! 4. **Tablet users**: the accounts the staff log in with on the tablets, assigned to one of
//!    the package's org units with one of its roles (a package may bring its own), and their
//!    passwords reset when someone forgets theirs.
//!
//! The daemon does the work ([`SetupActions`]); this module only serves the pages.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Form, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::page::{esc, head};
use crate::{Admin, StatusState, challenge, is_admin, same_origin};

/// A boxed future, so that [`SetupActions`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Largest metadata package accepted through the page (a national package is tens of MB).
pub const MAX_PACKAGE_BYTES: usize = 64 * 1024 * 1024;

/// How far setup has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetupStatus {
    /// Any user account exists (then the box can no longer be claimed from the LAN).
    pub has_users: bool,
    /// The clinic's name as set during setup (None: the configured default is shown).
    pub clinic_name: Option<String>,
    /// Recovery keys waiting to be written down.
    pub pending_keys: usize,
    /// Programs + data sets the tablets can download.
    pub forms: usize,
    /// Users assigned to an org unit: the ones who can capture data on a tablet.
    pub tablet_users: usize,
}

impl SetupStatus {
    /// Nothing left for `/setup` to guide.
    pub fn complete(&self) -> bool {
        self.has_users && self.pending_keys == 0 && self.forms > 0 && self.tablet_users > 0
    }
}

/// A user, as the setup page lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub username: String,
    pub name: String,
    pub roles: Vec<String>,
    pub org_units: Vec<String>,
    pub disabled: bool,
}

/// Something to pick in a form: an org unit or a user role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub id: String,
    pub name: String,
}

/// What a new tablet user can be given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChoices {
    pub org_units: Vec<Choice>,
    pub roles: Vec<Choice>,
}

/// A tablet user, from the add-user form.
#[derive(Debug, Clone, Deserialize)]
pub struct NewTabletUser {
    pub username: String,
    pub first_name: String,
    pub surname: String,
    pub password: String,
    pub confirm: String,
    /// Org unit UID.
    pub org_unit: String,
    /// User role UID.
    pub role: String,
}

/// A recovery key to hand over once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    /// What it unlocks, for people.
    pub label: String,
    pub key: String,
}

/// The first admin and the clinic, from the claim form.
#[derive(Debug, Clone, Deserialize)]
pub struct Claim {
    pub clinic_name: String,
    pub username: String,
    pub password: String,
}

/// Why a setup action was refused: shown to the person on the page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The box already has users: it cannot be claimed again.
    #[error("this box is already set up: log in as its admin instead")]
    AlreadyClaimed,
    /// The input was not acceptable (message says why).
    #[error("{0}")]
    Invalid(String),
    /// The box could not do it (message says why).
    #[error("{0}")]
    Failed(String),
}

/// What the daemon does for the setup pages.
pub trait SetupActions: Send + Sync + 'static {
    fn status(&self) -> SetupStatus;
    /// Creates the first admin and names the clinic, only while the box has no user at all.
    fn claim(&self, claim: Claim) -> BoxFuture<'_, Result<(), SetupError>>;
    fn pending_keys(&self) -> Vec<PendingKey>;
    /// The keys are written down: delete them from the box.
    fn keys_written_down(&self) -> Result<(), SetupError>;
    /// Imports a metadata package (DHIS2 metadata JSON); returns a one-line summary. With
    /// `skip_refused`, the objects that pass the checks are imported and the others skipped
    /// (DHIS2's `atomicMode=NONE`); without, one refused object refuses the package.
    fn import_metadata(
        &self,
        package: Vec<u8>,
        skip_refused: bool,
    ) -> BoxFuture<'_, Result<String, SetupError>>;
    fn users(&self) -> Vec<UserRow>;
    fn user_choices(&self) -> UserChoices;
    fn add_user(&self, user: NewTabletUser) -> BoxFuture<'_, Result<(), SetupError>>;
    fn set_password(
        &self,
        username: String,
        password: String,
    ) -> BoxFuture<'_, Result<(), SetupError>>;
    /// Disables (or enables again) a tablet user.
    fn set_disabled(
        &self,
        username: String,
        disabled: bool,
    ) -> BoxFuture<'_, Result<(), SetupError>>;

    /// Where an uploaded backup is kept while it is restored (`None`: restoring is not offered).
    fn restore_upload(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Restores the backup at `upload`, opened with `key` (an HQ identity or the recovery key),
    /// only while the box has no user; the box then restarts into it. Returns what to say.
    fn restore(
        &self,
        upload: std::path::PathBuf,
        key: String,
    ) -> BoxFuture<'_, Result<String, SetupError>> {
        let _ = (upload, key);
        Box::pin(async { Err(SetupError::Failed("restoring is not available here".into())) })
    }
}

/// The most a key typed into the restore form may be.
const MAX_KEY_BYTES: usize = 4096;
/// The largest backup the setup page takes (a box of 100,000 patients backs up to about
/// 260 MiB): anyone on the LAN may upload while the box is new, so the disk has a bound too.
pub const MAX_RESTORE_BYTES: u64 = 8 * 1024 * 1024 * 1024;

pub(crate) fn routes(state: &StatusState) -> Router<StatusState> {
    let admin = Router::new()
        .route("/setup/keys/done", post(keys_done))
        .route("/setup/users", post(add_user))
        .route("/setup/users/password", post(reset_password))
        .route("/setup/users/disable", post(disable_user))
        .route(
            "/setup/metadata",
            post(upload_metadata).layer(DefaultBodyLimit::max(MAX_PACKAGE_BYTES)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admin_gate,
        ));
    Router::new()
        .route("/setup", get(setup_page))
        .route("/setup/claim", post(claim))
        // A backup can be as big as the store: streamed to disk, never held in memory.
        .route(
            "/setup/restore",
            post(restore).layer(DefaultBodyLimit::disable()),
        )
        .merge(admin)
}

fn actions(state: &StatusState) -> Option<&Arc<dyn SetupActions>> {
    state.inner.setup.as_ref()
}

/// The setup actions, when setup is offered (the login and origin were checked by
/// [`crate::admin_gate`] before the form was read).
fn admin_form(state: &StatusState) -> Result<&Arc<dyn SetupActions>, Box<Response>> {
    actions(state).ok_or_else(|| {
        Box::new(refused(
            StatusCode::NOT_FOUND,
            "Setup",
            "Setup is not available.",
        ))
    })
}

/// The page for a cross-site form, for [`crate::admin_gate`].
pub(crate) fn cross_site() -> Response {
    refused(StatusCode::FORBIDDEN, "Refused", "Cross-site form refused.")
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, Html(body)).into_response();
    let h = r.headers_mut();
    // Recovery keys and forms: never cached, never framed, no script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

fn refused(status: StatusCode, title: &str, why: &str) -> Response {
    let mut o = String::new();
    head(&mut o, "ClinicBox setup", false);
    o.push_str("<header><h1>Set up this box</h1></header><main><section>");
    o.push_str(&format!(
        "<h2>{}</h2><p class=\"bad\" data-figure=\"setup-error\">{}</p><p><a href=\"/setup\">Back to setup</a></p>",
        esc(title),
        esc(why)
    ));
    o.push_str("</section></main></body></html>");
    html(status, o)
}

/// `GET /setup`: the claim form on a new box; for an admin, what is left to do.
async fn setup_page(
    State(state): State<StatusState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let Some(setup) = actions(&state) else {
        return refused(
            StatusCode::NOT_FOUND,
            "Setup",
            "Setup is not available on this box.",
        );
    };
    let st = setup.status();
    if !st.has_users {
        let restore = setup.restore_upload().is_some();
        return html(
            StatusCode::OK,
            render_claim(&state.snapshot().info.box_id, restore),
        );
    }
    if !is_admin(&state, &headers, addr).await {
        return challenge();
    }
    let users = UsersView {
        users: setup.users(),
        choices: setup.user_choices(),
    };
    html(
        StatusCode::OK,
        render_progress(&st, &setup.pending_keys(), &users),
    )
}

/// `POST /setup/users` (admin): a new tablet user.
async fn add_user(
    State(state): State<StatusState>,
    Extension(Admin(who)): Extension<Admin>,
    Form(user): Form<NewTabletUser>,
) -> Response {
    let setup = match admin_form(&state) {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    if user.password != user.confirm {
        return refused(
            StatusCode::BAD_REQUEST,
            "User not added",
            "The two passwords differ.",
        );
    }
    let added = user.username.clone();
    match setup.add_user(user).await {
        Ok(()) => {
            state.audit(&who, "tablet user added", &added).await;
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/setup#users")]).into_response()
        }
        Err(e) => refused(StatusCode::BAD_REQUEST, "User not added", &e.to_string()),
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    username: String,
    password: String,
    confirm: String,
}

/// `POST /setup/users/password` (admin): a forgotten password replaced.
async fn reset_password(
    State(state): State<StatusState>,
    Extension(Admin(who)): Extension<Admin>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let setup = match admin_form(&state) {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    if form.password != form.confirm {
        return refused(
            StatusCode::BAD_REQUEST,
            "Password not changed",
            "The two passwords differ.",
        );
    }
    let user = form.username.clone();
    match setup.set_password(form.username, form.password).await {
        Ok(()) => {
            state.audit(&who, "password reset", &user).await;
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/setup#users")]).into_response()
        }
        Err(e) => refused(
            StatusCode::BAD_REQUEST,
            "Password not changed",
            &e.to_string(),
        ),
    }
}

#[derive(Deserialize)]
struct DisableForm {
    username: String,
    /// `true` to disable, `false` to enable again.
    disable: bool,
    /// Set by the confirmation page: the admin read what disabling does to the tablets.
    #[serde(default)]
    confirmed: bool,
}

/// `POST /setup/users/disable` (admin). Disabling asks once more first: the Capture app removes
/// a disabled account's data from its tablets at their next sync, records not yet sent included.
async fn disable_user(
    State(state): State<StatusState>,
    Extension(Admin(who)): Extension<Admin>,
    Form(form): Form<DisableForm>,
) -> Response {
    let setup = match admin_form(&state) {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    if form.disable && form.username == who {
        return refused(
            StatusCode::BAD_REQUEST,
            "Not changed",
            "That is the account you are logged in with: disable it from another admin account.",
        );
    }
    if form.disable && !form.confirmed {
        return html(StatusCode::OK, render_disable_confirm(&form.username));
    }
    let user = form.username.clone();
    match setup.set_disabled(form.username, form.disable).await {
        Ok(()) => {
            let action = if form.disable {
                "user disabled"
            } else {
                "user enabled"
            };
            state.audit(&who, action, &user).await;
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/setup#users")]).into_response()
        }
        Err(e) => refused(StatusCode::BAD_REQUEST, "Not changed", &e.to_string()),
    }
}

fn render_disable_confirm(username: &str) -> String {
    let mut o = String::new();
    head(&mut o, "ClinicBox setup", false);
    let u = esc(username);
    o.push_str(&format!(
        "<header><h1>Disable {u}?</h1></header><main><section><h2>Before you disable {u}</h2>\
         <p class=\"warn\" data-figure=\"disable-warning\">The DHIS2 Capture app removes a disabled account \
         and <strong>everything recorded with it</strong> from the tablet at its next sync, records the box has \
         not received yet included. Sync {u}'s tablets first.</p>\
         <form method=\"post\" action=\"/setup/users/disable\">\
         <input type=\"hidden\" name=\"username\" value=\"{u}\">\
         <input type=\"hidden\" name=\"disable\" value=\"true\">\
         <input type=\"hidden\" name=\"confirmed\" value=\"true\">\
         <p><button>Disable {u}</button> <a href=\"/setup#users\">Keep the account</a></p></form>\
         </section></main></body></html>"
    ));
    o
}

struct UsersView {
    users: Vec<UserRow>,
    choices: UserChoices,
}

/// `POST /setup/claim`: the first admin. On success, the recovery keys are shown at once.
async fn claim(
    State(state): State<StatusState>,
    headers: HeaderMap,
    Form(form): Form<ClaimForm>,
) -> Response {
    let Some(setup) = actions(&state) else {
        return refused(StatusCode::NOT_FOUND, "Setup", "Setup is not available.");
    };
    if !same_origin(&headers) {
        return refused(StatusCode::FORBIDDEN, "Refused", "Cross-site form refused.");
    }
    if form.password != form.confirm {
        return refused(
            StatusCode::BAD_REQUEST,
            "Not saved",
            "The two passwords differ.",
        );
    }
    let claim = Claim {
        clinic_name: form.clinic_name.trim().to_string(),
        username: form.username.trim().to_string(),
        password: form.password,
    };
    let username = claim.username.clone();
    match setup.claim(claim).await {
        Ok(()) => {
            let detail = format!("first admin account {username}");
            state.audit(&username, "box set up", &detail).await;
            let st = setup.status();
            html(
                StatusCode::OK,
                render_claimed(&username, &st, &setup.pending_keys()),
            )
        }
        Err(SetupError::AlreadyClaimed) => refused(
            StatusCode::CONFLICT,
            "Already set up",
            &SetupError::AlreadyClaimed.to_string(),
        ),
        Err(e) => refused(StatusCode::BAD_REQUEST, "Not saved", &e.to_string()),
    }
}

#[derive(Deserialize)]
struct ClaimForm {
    clinic_name: String,
    username: String,
    password: String,
    confirm: String,
}

/// `POST /setup/keys/done` (admin): the keys are written down; delete them from the box.
async fn keys_done(
    State(state): State<StatusState>,
    Extension(Admin(who)): Extension<Admin>,
) -> Response {
    let setup = match admin_form(&state) {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    match setup.keys_written_down() {
        Ok(()) => {
            let detail = "confirmed written down; deleted from the box";
            state.audit(&who, "recovery keys", detail).await;
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/setup")]).into_response()
        }
        Err(e) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Keys not deleted",
            &e.to_string(),
        ),
    }
}

/// `POST /setup/metadata` (admin, multipart with a `package` file).
async fn upload_metadata(
    State(state): State<StatusState>,
    Extension(Admin(who)): Extension<Admin>,
    mut multipart: Multipart,
) -> Response {
    let setup = match admin_form(&state) {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    let (mut package, mut skip_refused) = (None, false);
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("skip_refused") => skip_refused = true,
            Ok(Some(field)) if field.name() == Some("package") => match field.bytes().await {
                Ok(b) => package = Some(b.to_vec()),
                Err(e) => {
                    return refused(
                        StatusCode::BAD_REQUEST,
                        "Not imported",
                        &format!("The upload did not arrive whole: {e}"),
                    );
                }
            },
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "Not imported",
                    &format!("The upload could not be read: {e}"),
                );
            }
        }
    }
    let Some(package) = package.filter(|p| !p.is_empty()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Not imported",
            "Choose the metadata package file first.",
        );
    };
    match setup.import_metadata(package, skip_refused).await {
        Ok(summary) => {
            state
                .audit(&who, "metadata package imported", &summary)
                .await;
            let mut o = String::new();
            head(&mut o, "ClinicBox setup", false);
            o.push_str(&format!(
                "<header><h1>Metadata package imported</h1></header><main><section><h2>Done</h2>\
                 <p class=\"ok\" data-figure=\"import-summary\">{}</p>\
                 <p>Tablets download it at their next sync.</p><p><a href=\"/setup\">Back to setup</a> · <a href=\"/\">Status page</a></p>\
                 </section></main></body></html>",
                esc(&summary)
            ));
            html(StatusCode::OK, o)
        }
        Err(e) => refused(StatusCode::CONFLICT, "Not imported", &e.to_string()),
    }
}

fn render_claim(box_id: &str, restore: bool) -> String {
    let mut o = String::new();
    head(&mut o, "Set up this ClinicBox", false);
    o.push_str(&format!(
        "<header><h1>Set up this box</h1><p>ClinicBox {}: new, no accounts yet</p></header><main>\
         <section><h2>1. The clinic and its administrator</h2>\
         <p>The account made here can manage the box and log in from the DHIS2 Capture app. \
         Only the first person to fill this in can do so.</p>\
         <form method=\"post\" action=\"/setup/claim\" data-figure=\"claim-form\">\
         <p><label>Clinic name<br><input name=\"clinic_name\" required maxlength=\"120\" autocomplete=\"organization\"></label></p>\
         <p><label>Admin username<br><input name=\"username\" required value=\"admin\" autocomplete=\"username\"></label></p>\
         <p><label>Password (8 to 72 characters)<br><input name=\"password\" type=\"password\" required minlength=\"8\" maxlength=\"72\" autocomplete=\"new-password\"></label></p>\
         <p><label>Password again<br><input name=\"confirm\" type=\"password\" required minlength=\"8\" maxlength=\"72\" autocomplete=\"new-password\"></label></p>\
         <p><button>Create the admin account</button></p></form></section>{}{}</main></body></html>",
        esc(box_id),
        steps_to_come(),
        if restore { RESTORE_FORM } else { "" }
    ));
    o
}

/// "Restore from a backup", beside setting up a new box.
const RESTORE_FORM: &str = "<section><h2>Or: restore from a backup</h2>\
     <p>Replacing a box? Restore the old box's backup here: the clinic's records, its name and \
     certificate come back, and the tablets carry on as before. The box restarts when it is done.</p>\
     <form method=\"post\" action=\"/setup/restore\" enctype=\"multipart/form-data\" data-figure=\"restore-form\">\
     <p><label>Backup file<br><input type=\"file\" name=\"backup\" required></label></p>\
     <p><label>The old box's recovery key, or the ministry's HQ key<br>\
     <textarea name=\"key\" rows=\"3\" required autocomplete=\"off\"></textarea></label></p>\
     <p><button>Restore and restart</button></p></form></section>";

/// `POST /setup/restore` (multipart `backup` file and `key`): only while the box has no user.
async fn restore(
    State(state): State<StatusState>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let Some(setup) = actions(&state).cloned() else {
        return refused(StatusCode::NOT_FOUND, "Setup", "Setup is not available.");
    };
    if !same_origin(&headers) {
        return refused(StatusCode::FORBIDDEN, "Refused", "Cross-site form refused.");
    }
    let Some(upload) = setup.restore_upload() else {
        return refused(
            StatusCode::NOT_FOUND,
            "Not restored",
            "Restoring is not available here.",
        );
    };
    if setup.status().has_users {
        return refused(
            StatusCode::CONFLICT,
            "Not restored",
            &SetupError::AlreadyClaimed.to_string(),
        );
    }
    let not_restored = |m: String| refused(StatusCode::BAD_REQUEST, "Not restored", &m);
    let (mut key, mut got_file) = (String::new(), false);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return not_restored(format!("The upload could not be read: {e}")),
        };
        match field.name() {
            Some("backup") => match save(field, &upload).await {
                Ok(n) => got_file = n > 0,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&upload).await;
                    return not_restored(format!("The backup did not arrive whole: {e}"));
                }
            },
            Some("key") => match field.bytes().await {
                Ok(b) if b.len() <= MAX_KEY_BYTES => {
                    key = String::from_utf8_lossy(&b).trim().to_string()
                }
                _ => return not_restored("The key is not one the box can read.".into()),
            },
            _ => {}
        }
    }
    if !got_file || key.is_empty() {
        let _ = tokio::fs::remove_file(&upload).await;
        return not_restored("Choose the backup file and type the key first.".into());
    }
    match setup.restore(upload, key).await {
        Ok(said) => {
            state
                .audit("first-setup page", "backup restored", &said)
                .await;
            let mut o = String::new();
            head(&mut o, "ClinicBox restored", false);
            o.push_str(&format!(
                "<header><h1>Backup restored</h1></header><main><section><h2>Done</h2>\
                 <p data-figure=\"restored\">{}</p><p>The box restarts now; open <a href=\"/\">the status page</a> in a minute.</p></section></main></body></html>",
                esc(&said)
            ));
            html(StatusCode::OK, o)
        }
        Err(e) => refused(StatusCode::BAD_REQUEST, "Not restored", &e.to_string()),
    }
}

/// Streams an uploaded file to `path`; returns its size.
async fn save(
    mut field: axum::extract::multipart::Field<'_>,
    path: &std::path::Path,
) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| e.to_string())?;
    let mut n = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(|e| e.to_string())? {
        n += chunk.len() as u64;
        if n > MAX_RESTORE_BYTES {
            drop(file);
            let _ = tokio::fs::remove_file(path).await;
            return Err(format!(
                "it is larger than the {} GiB a backup may be",
                MAX_RESTORE_BYTES >> 30
            ));
        }
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    file.sync_all().await.map_err(|e| e.to_string())?;
    Ok(n)
}

fn steps_to_come() -> &'static str {
    "<section><h2>Then</h2><ol><li>Write down the recovery keys the box shows once.</li>\
     <li>Upload the metadata package (the JSON file exported from the national DHIS2).</li></ol></section>"
}

fn render_claimed(username: &str, st: &SetupStatus, keys: &[PendingKey]) -> String {
    let mut o = String::new();
    head(&mut o, "ClinicBox setup", false);
    o.push_str(&format!(
        "<header><h1>{}</h1><p>Admin account <b data-figure=\"admin-username\">{}</b> created</p></header><main>",
        esc(st.clinic_name.as_deref().unwrap_or("ClinicBox")),
        esc(username)
    ));
    keys_section(&mut o, keys);
    o.push_str(
        "<section><h2>Next</h2><p><a href=\"/setup\">Continue setup</a> (log in with the account you just made).</p></section>\
         </main></body></html>",
    );
    o
}

fn keys_section(o: &mut String, keys: &[PendingKey]) {
    if keys.is_empty() {
        return;
    }
    o.push_str(
        "<section class=\"wide\"><h2>2. Write down the recovery keys</h2>\
         <p>If this box's key stick, TPM or board fails, these are the only way to read its data. \
         Write them on paper and keep them locked away, not next to the box. \
         They are shown until you confirm, then deleted from the box.</p>",
    );
    for k in keys {
        o.push_str(&format!(
            "<p class=\"small\" data-figure=\"recovery-key-label\">{}</p><p><code class=\"key\" data-figure=\"recovery-key\">{}</code></p>",
            esc(&k.label),
            esc(&k.key)
        ));
    }
    o.push_str(
        "<form method=\"post\" action=\"/setup/keys/done\"><p>\
         <button>I have written them down: delete them from the box</button></p></form></section>",
    );
}

fn render_progress(st: &SetupStatus, keys: &[PendingKey], users: &UsersView) -> String {
    let mut o = String::new();
    head(&mut o, "ClinicBox setup", false);
    o.push_str(&format!(
        "<header><h1>Set up {}</h1><p><a style=\"color:#fff\" href=\"/\">Status page</a></p></header><main>",
        esc(st.clinic_name.as_deref().unwrap_or("this box"))
    ));
    o.push_str(
        "<section><h2>1. The clinic and its administrator</h2><p class=\"ok\">Done.</p></section>",
    );
    if keys.is_empty() {
        o.push_str("<section><h2>2. Recovery keys</h2><p class=\"ok\" data-figure=\"keys-done\">No recovery keys are waiting to be written down.</p></section>");
    } else {
        keys_section(&mut o, keys);
    }
    o.push_str("<section><h2>3. Metadata package</h2>");
    if st.forms > 0 {
        o.push_str(&format!(
            "<p class=\"ok\" data-figure=\"forms\">{} programs and data sets loaded.</p><p>Upload a newer package to replace them:</p>",
            st.forms
        ));
    } else {
        o.push_str("<p class=\"warn\" data-figure=\"forms\">None yet: the tablets have no forms to download.</p>");
    }
    o.push_str(
        "<form method=\"post\" action=\"/setup/metadata\" enctype=\"multipart/form-data\">\
         <p><input type=\"file\" name=\"package\" accept=\".json,application/json\" required></p>\
         <p><label><input type=\"checkbox\" name=\"skip_refused\" style=\"width:auto\"> Import the rest when some objects are refused (for example a user the box already has)</label></p>\
         <p><button>Import the metadata package</button></p></form></section>",
    );
    if st.forms > 0 {
        users_section(&mut o, users);
    }
    if st.complete() {
        o.push_str("<section><h2>Ready</h2><p class=\"ok\" data-figure=\"setup-complete\">This box is set up. Connect the tablets from the <a href=\"/\">status page</a>.</p></section>");
    }
    o.push_str("</main></body></html>");
    o
}

fn options(choices: &[Choice]) -> String {
    choices
        .iter()
        .map(|c| format!("<option value=\"{}\">{}</option>", esc(&c.id), esc(&c.name)))
        .collect()
}

fn users_section(o: &mut String, v: &UsersView) {
    o.push_str("<section class=\"wide\" id=\"users\"><h2>4. Tablet users</h2>");
    o.push_str("<p>The accounts staff log in with in the DHIS2 Capture app. Each sees the data of its org unit.</p>");
    // A row per user, stacked on a phone (`table.stack`): five columns do not fit one.
    o.push_str("<table class=\"stack\"><tr><th>Username</th><th>Name</th><th>Org units</th><th>Roles</th><th>Password · account</th></tr>");
    for u in &v.users {
        o.push_str(&format!(
            "<tr data-figure=\"user\"><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>\
             <form method=\"post\" action=\"/setup/users/password\">\
             <input type=\"hidden\" name=\"username\" value=\"{}\">\
             <input name=\"password\" type=\"password\" required minlength=\"8\" maxlength=\"72\" placeholder=\"new password\" autocomplete=\"new-password\">\
             <input name=\"confirm\" type=\"password\" required minlength=\"8\" maxlength=\"72\" placeholder=\"again\" autocomplete=\"new-password\">\
             <button>Set</button></form>\
             <form method=\"post\" action=\"/setup/users/disable\">\
             <input type=\"hidden\" name=\"username\" value=\"{}\">\
             <input type=\"hidden\" name=\"disable\" value=\"{}\">\
             <button>{}</button></form></td></tr>",
            esc(&u.username),
            if u.disabled { " <span class=\"bad\">(disabled)</span>" } else { "" },
            esc(&u.name),
            esc(&u.org_units.join(", ")),
            esc(&u.roles.join(", ")),
            esc(&u.username),
            esc(&u.username),
            !u.disabled,
            if u.disabled { "Enable" } else { "Disable…" },
        ));
    }
    o.push_str("</table>");
    if v.choices.org_units.is_empty() || v.choices.roles.is_empty() {
        o.push_str("<p class=\"warn\">The metadata package has no org units or no user roles: a tablet user needs both.</p></section>");
        return;
    }
    o.push_str(&format!(
        "<h3>Add a tablet user</h3><form method=\"post\" action=\"/setup/users\" data-figure=\"add-user-form\">\
         <p><label>Username<br><input name=\"username\" required autocomplete=\"off\"></label></p>\
         <p><label>First name<br><input name=\"first_name\" required></label></p>\
         <p><label>Surname<br><input name=\"surname\" required></label></p>\
         <p><label>Password (8 to 72 characters)<br><input name=\"password\" type=\"password\" required minlength=\"8\" maxlength=\"72\" autocomplete=\"new-password\"></label></p>\
         <p><label>Password again<br><input name=\"confirm\" type=\"password\" required minlength=\"8\" maxlength=\"72\" autocomplete=\"new-password\"></label></p>\
         <p><label>Org unit<br><select name=\"org_unit\" required>{}</select></label></p>\
         <p><label>Role<br><select name=\"role\" required>{}</select></label></p>\
         <p><button>Add the user</button></p></form></section>",
        options(&v.choices.org_units),
        options(&v.choices.roles)
    ));
}

/// The status page's "Set up this box" panel: what is left, with a link.
pub(crate) fn render_todo(o: &mut String, st: &SetupStatus) {
    if st.complete() {
        return;
    }
    let mut todo = Vec::new();
    if !st.has_users {
        todo.push("create the admin account");
    }
    if st.pending_keys > 0 {
        todo.push("write down the recovery keys");
    }
    if st.forms == 0 {
        todo.push("upload the metadata package");
    }
    if st.tablet_users == 0 {
        todo.push("add the tablet users");
    }
    o.push_str(&format!(
        "<section class=\"connect\" data-figure=\"setup-todo\"><div><h2>Set up this box</h2>\
         <p class=\"warn\">Still to do: {}.</p><p><a class=\"action\" href=\"/setup\">Open setup</a></p></div></section>",
        esc(&todo.join(", "))
    ));
}
