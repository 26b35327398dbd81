//! Metadata as the box holds it: objects in the store's `METADATA` collection under
//! `<type>/<uid>` (users in `USERS`), and an in-memory [`Snapshot`] rebuilt when the metadata
//! revision changes, from which every metadata endpoint, the auth layer and scope checks read.

pub mod check;
mod error;
pub mod import;
pub mod serve;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone, schema};
use clinicbox_store::{Collection, ReadView, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use clinicbox_web::snapshot::{Credential, INVERSES, Snapshot, ref_ids};
pub use error::ImportError;

/// One record holding the metadata revision, bumped by every metadata or user write so that
/// every process and handle sees the change.
pub const REVISION: Collection = Collection::named("metadataRevision");
const REVISION_KEY: &str = "current";

/// A user as stored in `USERS`: the DHIS2 user object (no password) and the Argon2id hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredUser {
    pub user: Value,
    pub password_hash: Option<String>,
}

/// Builds the snapshot of the metadata and users stored at `revision`.
pub(crate) fn build(
    revision: u64,
    read: &ReadView,
    zone: &ServerTimeZone,
) -> Result<Snapshot, StoreError> {
    let mut types: HashMap<&'static str, BTreeMap<String, Map<String, Value>>> = HashMap::new();
    for s in schema::SCHEMAS {
        types.insert(s.plural, BTreeMap::new());
    }
    let stamp = |ms: u64| {
        Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(i64::MAX), zone)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    for item in read.scan(Collection::METADATA)? {
        let (key, rec) = item?;
        if rec.deleted {
            continue;
        }
        let Some((plural, uid)) = key.split_once('/') else {
            continue;
        };
        let Some(s) = schema::by_plural(plural) else {
            continue;
        };
        let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&rec.body) else {
            tracing::warn!(metadata.key = %key, "skipping an unreadable metadata record");
            continue;
        };
        finish_object(s, &mut obj, &stamp(rec.created_ms), &stamp(rec.updated_ms));
        if let Some(m) = types.get_mut(s.plural) {
            m.insert(uid.to_string(), obj);
        }
    }
    let mut credentials = HashMap::new();
    let users_schema = schema::by_plural("users");
    for item in read.scan(Collection::USERS)? {
        let (uid, rec) = item?;
        if rec.deleted {
            continue;
        }
        let Ok(stored) = rec.json::<StoredUser>() else {
            tracing::warn!(user.uid = %uid, "skipping an unreadable user record");
            continue;
        };
        let Value::Object(mut user) = stored.user else {
            continue;
        };
        if let Some(s) = users_schema {
            finish_object(s, &mut user, &stamp(rec.created_ms), &stamp(rec.updated_ms));
        }
        if let Some(username) = user.get("username").and_then(Value::as_str) {
            credentials.insert(
                username.to_string(),
                Credential {
                    uid: uid.clone(),
                    password_hash: stored.password_hash,
                    disabled: user
                        .get("disabled")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                },
            );
        }
        if let Some(m) = types.get_mut("users") {
            m.insert(uid, user);
        }
    }
    Ok(Snapshot::new(revision, types, credentials))
}

/// Adds the properties DHIS2 computes for every reader: display names, `isDefault`, and the
/// box's own `created`/`lastUpdated` (tablets compare `lastUpdated` with our `serverDate`).
fn finish_object(s: &schema::Schema, obj: &mut Map<String, Value>, created: &str, updated: &str) {
    if !obj.contains_key("created") {
        obj.insert("created".into(), Value::from(created));
    }
    obj.insert("lastUpdated".into(), Value::from(updated));
    let fallback = |keys: &[&str], obj: &Map<String, Value>| {
        keys.iter()
            .find_map(|k| obj.get(*k).filter(|v| v.is_string()).cloned())
    };
    for (display, sources) in [
        ("displayName", &["name"][..]),
        ("displayShortName", &["shortName", "name"][..]),
        ("displayDescription", &["description"][..]),
        ("displayFormName", &["formName", "name"][..]),
    ] {
        if !obj.contains_key(display) {
            if let Some(v) = fallback(sources, obj) {
                obj.insert(display.into(), v);
            }
        }
    }
    if s.plural == "users" && !obj.contains_key("displayName") {
        let first = obj.get("firstName").and_then(Value::as_str).unwrap_or("");
        let last = obj.get("surname").and_then(Value::as_str).unwrap_or("");
        let name = format!("{first} {last}").trim().to_string();
        obj.insert("name".into(), Value::from(name.clone()));
        obj.insert("displayName".into(), Value::from(name));
    }
    if matches!(
        s.plural,
        "categoryCombos" | "categories" | "categoryOptions" | "categoryOptionCombos"
    ) && !obj.contains_key("isDefault")
    {
        let is_default = obj.get("name").and_then(Value::as_str) == Some("default");
        obj.insert("isDefault".into(), Value::Bool(is_default));
    }
    obj.remove("password");
}

/// Reads and caches metadata snapshots; serialises writes.
#[derive(Clone)]
pub struct MetadataService {
    store: Store,
    zone: ServerTimeZone,
    current: Arc<Mutex<Arc<Snapshot>>>,
    /// One metadata/user write at a time: imports validate against the snapshot they write over.
    pub(crate) write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl MetadataService {
    pub fn new(store: Store, zone: ServerTimeZone) -> Result<Self, StoreError> {
        let read = store.read()?;
        let rev = read_revision(&read)?;
        let snap = build(rev, &read, &zone)?;
        Ok(MetadataService {
            store,
            zone,
            current: Arc::new(Mutex::new(Arc::new(snap))),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn zone(&self) -> &ServerTimeZone {
        &self.zone
    }

    /// The current snapshot, rebuilt first if the stored revision moved.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        let read = self.store.read()?;
        let rev = read_revision(&read)?;
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.revision != rev {
            let snap = build(rev, &read, &self.zone)?;
            tracing::debug!(metadata.revision = rev, "metadata snapshot rebuilt");
            *cur = Arc::new(snap);
        }
        Ok(cur.clone())
    }
}

fn read_revision(read: &ReadView) -> Result<u64, StoreError> {
    Ok(read
        .get(REVISION, REVISION_KEY)?
        .and_then(|r| r.json::<u64>().ok())
        .unwrap_or(0))
}

/// Bumps the metadata revision inside a write (every metadata/user write calls this).
pub fn bump_revision(ctx: &mut clinicbox_store::WriteCtx<'_>) -> Result<(), StoreError> {
    let cur = ctx
        .get(REVISION, REVISION_KEY)?
        .and_then(|r| r.json::<u64>().ok())
        .unwrap_or(0);
    ctx.put_json(REVISION, REVISION_KEY, &(cur + 1))
}
