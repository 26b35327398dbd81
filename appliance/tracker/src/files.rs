//! File resources: `POST /api/fileResources` (multipart `file`), `GET /api/fileResources/{uid}`
//! with `storageStatus`, `…/data`, and the 2.42 download paths for attribute and data-value
//! files. Bytes live in the store's `FILE_BLOBS` collection, encrypted like every record; the
//! description in `FILE_RESOURCES`.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clinicbox_api::ApiState;
use clinicbox_api::query::Query;
use clinicbox_dhis2::tracker::FileResource;
use clinicbox_dhis2::{Dhis2Timestamp, Uid, WebMessage};
use clinicbox_store::{Collection, Record, WriteError};
use clinicbox_web::error::{json_response, web_message_response};
use clinicbox_web::{ApiError, ApiResult, AuthUser};

pub use clinicbox_api::files::{FileOwner, StoredFile, Use, uploaded_in_scope};

use crate::Tracker;
use crate::export::events::event_readable;
use crate::export::tracked_entities::te_readable;
use crate::model::{StoredEvent, StoredTrackedEntity};

const DOMAINS: &[&str] = &[
    "DATA_VALUE",
    "PUSH_ANALYSIS",
    "DOCUMENT",
    "MESSAGE_ATTACHMENT",
    "USER_AVATAR",
    "ORG_UNIT",
    "ICON",
    "JOB_DATA",
];

fn describe(
    state: &ApiState,
    uid: &str,
    f: &StoredFile,
    rec: &Record,
) -> Result<FileResource, ApiError> {
    let ts = |ms: u64| {
        Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(0), state.zone())
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    Ok(FileResource {
        id: uid.to_string(),
        name: f.name.clone(),
        display_name: f.name.clone(),
        content_type: f.content_type.clone(),
        content_length: f.content_length,
        // Stored synchronously in the store's commit: never PENDING.
        storage_status: "STORED".into(),
        domain: f.domain.clone(),
        created: ts(rec.created_ms)?,
        last_updated: ts(rec.updated_ms)?,
        has_multiple_storage_files: false,
    })
}

/// `POST /api/fileResources`.
pub async fn upload(
    State(state): State<ApiState>,
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    q: Query,
    mut multipart: Multipart,
) -> ApiResult<Response> {
    let mut file: Option<(String, String, Vec<u8>)> = None;
    let mut domain = q.get("domain").map(str::to_string);
    let max = t.config().max_file_bytes;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::BadRequest(format!("Invalid multipart body: {e}")))?;
        let Some(field) = field else { break };
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or("file").to_string();
                let bytes = field.bytes().await.map_err(|_| ApiError::PayloadTooLarge)?;
                let ct = clinicbox_api::files::content_type_of(&bytes).to_string();
                file = Some((name, ct, bytes.to_vec()));
            }
            Some("domain") => {
                domain = field.text().await.ok();
            }
            _ => {}
        }
    }
    let Some((name, content_type, bytes)) = file else {
        return Err(ApiError::BadRequest("Missing parameter 'file'".into()));
    };
    if bytes.len() > max {
        return Err(ApiError::PayloadTooLarge);
    }
    if bytes.is_empty() {
        return Err(ApiError::BadRequest("The file is empty".into()));
    }
    let domain = domain
        .map(|d| d.to_ascii_uppercase())
        .unwrap_or_else(|| "DATA_VALUE".into());
    if !DOMAINS.contains(&domain.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "Invalid file resource domain: {domain}"
        )));
    }
    let uid = Uid::generate().to_string();
    let stored = StoredFile {
        name,
        content_type,
        content_length: bytes.len() as u64,
        domain,
        created_by: Some(user.username.clone()),
        assigned_to: None,
    };
    let (key, body) = (uid.clone(), stored.clone());
    t.store()
        .write(move |ctx| {
            ctx.put(Collection::FILE_BLOBS, &key, bytes)?;
            ctx.put_json(Collection::FILE_RESOURCES, &key, &body)
        })
        .await
        .map_err(|e| match e {
            WriteError::Rejected(e) | WriteError::Store(e) => ApiError::Store(e),
        })?;
    let rec = t
        .store()
        .read()?
        .get(Collection::FILE_RESOURCES, &uid)?
        .ok_or_else(|| ApiError::Internal("file resource vanished after its commit".into()))?;
    let fr = describe(&state, &uid, &stored, &rec)?;
    tracing::info!(file_resource.uid = %uid, bytes = stored.content_length, "file resource stored");
    let msg = WebMessage::new(202, "File uploaded").with_response(serde_json::json!({
        "responseType": "FileResource",
        "fileResource": fr,
    }));
    Ok(web_message_response(&msg))
}

fn load(t: &Tracker, uid: &str) -> Result<(StoredFile, Record), ApiError> {
    let not_found =
        || ApiError::NotFound(format!("FileResource with id {uid} could not be found."));
    let rec = t
        .store()
        .read()?
        .get(Collection::FILE_RESOURCES, uid)?
        .filter(|r| !r.deleted)
        .ok_or_else(not_found)?;
    let f = rec.json::<StoredFile>().map_err(|_| not_found())?;
    Ok((f, rec))
}

/// Who may read a file resource through `/api/fileResources/{uid}`: once a record references
/// it, whoever may read that record; until then a superuser, its uploader, and users whose scope
/// covers the uploader's clinic (a tablet of the same clinic fetching a file another tablet
/// uploaded). Everyone else is told it does not exist.
pub(crate) async fn file_readable(t: &Tracker, user: &AuthUser, f: &StoredFile) -> bool {
    match &f.assigned_to {
        Some(FileOwner::Event(ev)) => match Uid::try_from(ev.as_str()) {
            Ok(u) => event_readable(t, user, u).await,
            Err(_) => false,
        },
        Some(FileOwner::TrackedEntity(te)) => {
            let Ok(u) = Uid::try_from(te.as_str()) else {
                return false;
            };
            let cat = t.catalog().read().await;
            cat.tes
                .get(&u)
                .filter(|m| !m.stamps.deleted)
                .is_some_and(|m| te_readable(user, t, m, u, None).is_ok())
        }
        None => uploaded_in_scope(user, f, Use::Read),
    }
}

async fn load_readable(
    t: &Tracker,
    user: &AuthUser,
    uid: &str,
) -> Result<(StoredFile, Record), ApiError> {
    let (f, rec) = load(t, uid)?;
    if !file_readable(t, user, &f).await {
        return Err(ApiError::NotFound(format!(
            "FileResource with id {uid} could not be found."
        )));
    }
    Ok((f, rec))
}

/// `GET /api/fileResources/{uid}`.
pub async fn meta(
    State(state): State<ApiState>,
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    let (mut f, rec) = load_readable(&t, &user, &uid).await?;
    if !clinicbox_api::files::decided_by_the_box(&f.content_type) {
        f.content_type = served_type(&t, &uid)?.to_string();
    }
    Ok(json_response(
        StatusCode::OK,
        &describe(&state, &uid, &f, &rec)?,
    ))
}

/// The type a file stored before types were decided from the bytes is served with (it kept the
/// type its uploader declared).
fn served_type(t: &Tracker, uid: &str) -> Result<&'static str, ApiError> {
    let rec = t
        .store()
        .read()?
        .get(Collection::FILE_BLOBS, uid)?
        .ok_or_else(|| ApiError::NotFound(format!("FileResource with id {uid} has no content.")))?;
    Ok(clinicbox_api::files::content_type_of(&rec.body))
}

fn blob(t: &Tracker, uid: &str) -> Result<Response, ApiError> {
    let (f, _) = load(t, uid)?;
    blob_of(t, uid, &f)
}

/// The bytes of `uid`, described by `f`, as a download.
fn blob_of(t: &Tracker, uid: &str, f: &StoredFile) -> Result<Response, ApiError> {
    let rec = t
        .store()
        .read()?
        .get(Collection::FILE_BLOBS, uid)?
        .ok_or_else(|| ApiError::NotFound(format!("FileResource with id {uid} has no content.")))?;
    let mut headers = axum::http::HeaderMap::new();
    clinicbox_api::files::download_headers(&mut headers, &f.name, &rec.body);
    let mut r = Body::from(rec.body).into_response();
    let h = r.headers_mut();
    h.extend(headers);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(r)
}

/// `GET /api/fileResources/{uid}/data`.
pub async fn data(
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    let (f, _) = load_readable(&t, &user, &uid).await?;
    blob_of(&t, &uid, &f)
}

/// `GET /api/tracker/trackedEntities/{te}/attributes/{attribute}/file|image[?dimension=]`.
/// Images are served at their original size whatever `dimension` asks (the tablet scales).
pub async fn attribute_file(
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    Path((te, attribute)): Path<(String, String)>,
    q: Query,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound(format!("Attribute {attribute} of {te} has no file."));
    let u = Uid::try_from(te.as_str()).map_err(|_| not_found())?;
    {
        let cat = t.catalog().read().await;
        let m = cat
            .tes
            .get(&u)
            .filter(|m| !m.stamps.deleted)
            .ok_or_else(not_found)?;
        let program = q.get("program").filter(|p| !p.is_empty());
        let prog = program.and_then(|p| user.snapshot.get("programs", p).map(|o| (p, o)));
        te_readable(&user, &t, m, u, prog)?;
    }
    let rec = t
        .store()
        .read()?
        .get(Collection::TRACKED_ENTITIES, &te)?
        .ok_or_else(not_found)?;
    let stored: StoredTrackedEntity = rec.json().map_err(|_| not_found())?;
    let file = stored
        .attribute(&attribute)
        .map(|a| a.value.clone())
        .ok_or_else(not_found)?;
    blob(&t, &file)
}

/// `GET /api/tracker/events/{event}/dataValues/{dataElement}/file|image[?dimension=]`.
pub async fn data_value_file(
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    Path((event, data_element)): Path<(String, String)>,
) -> ApiResult<Response> {
    let not_found = || {
        ApiError::NotFound(format!(
            "Data element {data_element} of {event} has no file."
        ))
    };
    let u = Uid::try_from(event.as_str()).map_err(|_| not_found())?;
    if !event_readable(&t, &user, u).await {
        return Err(not_found());
    }
    let rec = t
        .store()
        .read()?
        .get(Collection::EVENTS, &event)?
        .ok_or_else(not_found)?;
    let stored: StoredEvent = rec.json().map_err(|_| not_found())?;
    let file = stored
        .data_values
        .iter()
        .find(|d| d.data_element == data_element)
        .map(|d| d.value.clone())
        .ok_or_else(not_found)?;
    blob(&t, &file)
}
