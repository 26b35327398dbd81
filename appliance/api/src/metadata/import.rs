//! `POST /api/metadata` and `clinicbox metadata import`: check a DHIS2 metadata package against
//! the current metadata (`check/`: ids, strategy, users, references, org-unit paths, report),
//! then write it in one store transaction, or nothing with `atomicMode=ALL` when anything is
//! wrong.

use std::collections::HashMap;

use clinicbox_dhis2::{ImportReport, UserPayload};
use clinicbox_store::{Collection, StoreError, WriteCtx};
use serde_json::{Map, Value};

use super::check::Item;
pub use super::check::{Plan, check};
use super::{ImportError, MetadataService, Snapshot, StoredUser, bump_revision};
use crate::auth;
use crate::error::ApiError;
use crate::query::Query;

/// DHIS2 `importStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStrategy {
    CreateAndUpdate,
    Create,
    Update,
    Delete,
}

/// Import options (DHIS2 names in the query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportParams {
    pub strategy: ImportStrategy,
    /// `atomicMode=ALL` (default): any error means nothing is written.
    pub atomic: bool,
    /// `importMode=VALIDATE`: check only.
    pub validate_only: bool,
    /// `importReportMode=FULL`: an object report for every object, not only failed ones.
    pub full_report: bool,
}

impl Default for ImportParams {
    fn default() -> Self {
        ImportParams {
            strategy: ImportStrategy::CreateAndUpdate,
            atomic: true,
            validate_only: false,
            full_report: false,
        }
    }
}

impl std::str::FromStr for ImportStrategy {
    type Err = String;

    /// DHIS2's `importStrategy` names, with the older aliases it still takes.
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "CREATE_AND_UPDATE" | "NEW_AND_UPDATES" => Ok(ImportStrategy::CreateAndUpdate),
            "CREATE" | "NEW" => Ok(ImportStrategy::Create),
            "UPDATE" | "UPDATES" => Ok(ImportStrategy::Update),
            "DELETE" | "DELETES" => Ok(ImportStrategy::Delete),
            other => Err(format!(
                "Value '{other}' is not valid for parameter importStrategy. Valid values are: [CREATE_AND_UPDATE, CREATE, UPDATE, DELETE]"
            )),
        }
    }
}

/// DHIS2's `atomicMode`: `ALL` (any error means nothing is written) is atomic, `NONE` not.
pub fn atomic_mode(name: &str) -> Result<bool, String> {
    match name {
        "ALL" => Ok(true),
        "NONE" => Ok(false),
        other => Err(format!(
            "Value '{other}' is not valid for parameter atomicMode. Valid values are: [ALL, NONE]"
        )),
    }
}

impl ImportParams {
    pub fn from_query(q: &Query) -> Result<Self, ApiError> {
        let strategy = q
            .get("importStrategy")
            .unwrap_or("CREATE_AND_UPDATE")
            .parse()
            .map_err(ApiError::BadRequest)?;
        let atomic =
            atomic_mode(q.get("atomicMode").unwrap_or("ALL")).map_err(ApiError::BadRequest)?;
        let validate_only = match q.get("importMode").unwrap_or("COMMIT") {
            "COMMIT" => false,
            "VALIDATE" => true,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Value '{other}' is not valid for parameter importMode. Valid values are: [COMMIT, VALIDATE]"
                )));
            }
        };
        let full_report = matches!(q.get("importReportMode"), Some("FULL" | "DEBUG"));
        Ok(ImportParams {
            strategy,
            atomic,
            validate_only,
            full_report,
        })
    }
}

/// Properties a reader computes; never stored from a package.
const COMPUTED: &[&str] = &[
    "access",
    "href",
    "displayName",
    "displayShortName",
    "displayDescription",
    "displayFormName",
    "favorite",
    "favorites",
    "lastUpdated",
    "lastUpdatedBy",
    "ancestors",
    "children",
];

/// One prepared write.
enum Write {
    Put {
        key: String,
        body: Value,
    },
    Delete {
        key: String,
    },
    PutUser {
        uid: String,
        user: Value,
        password: Option<String>,
        username: String,
    },
    DeleteUser {
        uid: String,
        username: String,
    },
}

/// Checks and, unless told only to validate or the check failed atomically, writes `package`.
/// Returns the import report (status ERROR means nothing was written).
pub async fn import(
    svc: &MetadataService,
    package: &Value,
    params: ImportParams,
) -> Result<ImportReport, ImportError> {
    let _guard = svc.write_lock.lock().await;
    let snap = svc.snapshot()?;
    // Progress for people: a big package takes seconds to check and to write.
    let total: usize = package
        .as_object()
        .map(|m| m.values().filter_map(Value::as_array).map(Vec::len).sum())
        .unwrap_or(0);
    tracing::info!(objects = total, "metadata import: checking {total} objects");
    let plan = check(&snap, package, params)?;
    tracing::info!(
        objects = total,
        refused = plan.report.stats.ignored,
        "metadata import: checked {total} objects, {} refused",
        plan.report.stats.ignored
    );
    if !plan.ok || params.validate_only {
        return Ok(plan.report);
    }
    let report = plan.report;
    let mut writes = writes(&snap, plan.items, plan.strategy);
    writes.extend(plan.moved.into_iter().map(moved_org_unit));
    let writes = with_hashes(svc, writes).await?;
    tracing::info!(
        writes = writes.len(),
        "metadata import: writing {} objects in one commit",
        writes.len()
    );
    let written = svc
        .store()
        .write(move |ctx| apply(ctx, writes))
        .await
        .map_err(|e| e.flatten())?
        .value;
    tracing::info!(
        created = report.stats.created,
        updated = report.stats.updated,
        deleted = report.stats.deleted,
        ignored = report.stats.ignored,
        "metadata imported"
    );
    let mut report = report;
    report.written = written;
    Ok(report)
}

/// The writes for the objects that passed the checks.
fn writes(snap: &Snapshot, items: Vec<Item>, strategy: ImportStrategy) -> Vec<Write> {
    let mut out = Vec::new();
    for it in items.into_iter().filter(|i| i.errors.is_empty()) {
        let plural = it.schema.plural;
        let key = format!("{plural}/{}", it.uid);
        if strategy == ImportStrategy::Delete {
            out.push(match plural {
                "users" => Write::DeleteUser {
                    username: snap
                        .get("users", &it.uid)
                        .and_then(|u| u.get("username"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    uid: it.uid,
                },
                _ => Write::Delete { key },
            });
            continue;
        }
        let mut obj = it.obj;
        for k in COMPUTED {
            obj.remove(*k);
        }
        out.push(match it.user {
            Some(u) => user_write(it.uid, obj, u),
            None => Write::Put {
                key,
                body: Value::Object(obj),
            },
        });
    }
    out
}

/// A user as stored: the 2.42 shape (username, disabled and roles at the top), no password.
fn user_write(uid: String, mut obj: Map<String, Value>, u: UserPayload) -> Write {
    obj.remove("password");
    if let Some(Value::Object(c)) = obj.get_mut("userCredentials") {
        c.remove("password");
    }
    obj.insert("username".into(), Value::from(u.username.clone()));
    obj.insert("disabled".into(), Value::Bool(u.disabled));
    if !obj.contains_key("userRoles") {
        let roles: Vec<Value> = u
            .user_roles
            .iter()
            .map(|r| serde_json::json!({"id": r}))
            .collect();
        obj.insert("userRoles".into(), Value::Array(roles));
    }
    obj.remove("userCredentials");
    Write::PutUser {
        uid,
        user: Value::Object(obj),
        password: u.password,
        username: u.username,
    }
}

/// An org unit outside the package whose path moved with an ancestor.
fn moved_org_unit((id, mut o): (String, Map<String, Value>)) -> Write {
    for k in COMPUTED {
        o.remove(*k);
    }
    o.remove("created");
    Write::Put {
        key: format!("organisationUnits/{id}"),
        body: Value::Object(o),
    }
}

/// Each write with the password hash its user keeps. New passwords are hashed off the async
/// threads; an existing hash the password still matches is kept, so re-importing the same
/// package changes nothing. A user without a password keeps the stored hash unless the package
/// says the password changed since (national's `passwordLastUpdated`): then the next login has
/// to be checked where it changed.
async fn with_hashes(
    svc: &MetadataService,
    writes: Vec<Write>,
) -> Result<Vec<(Write, Option<String>)>, ImportError> {
    let existing = stored_hashes(svc, &writes)?;
    tokio::task::spawn_blocking(
        move || -> Result<Vec<(Write, Option<String>)>, ImportError> {
            let mut out = Vec::new();
            for w in writes {
                let hash = match &w {
                    Write::PutUser { uid, password, .. } => {
                        let old = existing.get(uid).cloned().flatten();
                        match (password, old) {
                            (Some(p), Some(h)) if auth::verify_password(p.as_bytes(), &h) => {
                                Some(h)
                            }
                            (Some(p), _) => Some(auth::hash_password(p)?),
                            (None, old) => old,
                        }
                    }
                    _ => None,
                };
                out.push((w, hash));
            }
            Ok(out)
        },
    )
    .await
    .map_err(|e| ImportError::Task(e.to_string()))?
}

/// The hashes the users written keep, unless their password changed elsewhere since.
fn stored_hashes(
    svc: &MetadataService,
    writes: &[Write],
) -> Result<HashMap<String, Option<String>>, StoreError> {
    let read = svc.store().read()?;
    let mut m = HashMap::new();
    for w in writes {
        let Write::PutUser { uid, user, .. } = w else {
            continue;
        };
        let old = read
            .get(Collection::USERS, uid)?
            .filter(|r| !r.deleted)
            .and_then(|r| r.json::<StoredUser>().ok());
        let changed_at = |u: &Value| u.get("passwordLastUpdated").cloned();
        let h = old.and_then(|s| {
            let was = changed_at(&s.user);
            let moved = was.is_some() && was != changed_at(user);
            s.password_hash.filter(|_| !moved)
        });
        m.insert(uid.clone(), h);
    }
    Ok(m)
}

/// Applies the writes in one transaction (an object stored exactly so is not rewritten) and
/// bumps the metadata revision; returns how many records changed.
fn apply(ctx: &mut WriteCtx<'_>, writes: Vec<(Write, Option<String>)>) -> Result<u64, StoreError> {
    let mut written = 0u64;
    for (w, hash) in writes {
        written += match w {
            Write::Put { key, body } => put_metadata(ctx, &key, &body)?,
            Write::Delete { key } => u64::from(ctx.delete(Collection::METADATA, &key)?),
            Write::PutUser {
                uid,
                user,
                username,
                ..
            } => {
                let stored = StoredUser {
                    user,
                    password_hash: hash,
                };
                put_user(ctx, &uid, &username, &stored)?
            }
            Write::DeleteUser { uid, username } => {
                ctx.index_remove(crate::users::USERNAME_INDEX, &username, &uid);
                u64::from(ctx.delete(Collection::USERS, &uid)?)
            }
        };
    }
    bump_revision(ctx)?;
    Ok(written)
}

fn json_bytes(
    collection: Collection,
    key: &str,
    v: &impl serde::Serialize,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Json {
        collection: collection.name().into(),
        key: key.to_string(),
        source,
    })
}

/// Puts a metadata object unless it is stored exactly so; 1 when written.
fn put_metadata(ctx: &mut WriteCtx<'_>, key: &str, body: &Value) -> Result<u64, StoreError> {
    let bytes = json_bytes(Collection::METADATA, key, body)?;
    let same = ctx
        .get(Collection::METADATA, key)?
        .is_some_and(|r| !r.deleted && r.body == bytes);
    if same {
        return Ok(0);
    }
    ctx.put(Collection::METADATA, key, bytes)?;
    Ok(1)
}

/// Puts a user unless stored exactly so, keeping the username index right (a renamed user
/// leaves its old name); 1 when written.
fn put_user(
    ctx: &mut WriteCtx<'_>,
    uid: &str,
    username: &str,
    stored: &StoredUser,
) -> Result<u64, StoreError> {
    let bytes = json_bytes(Collection::USERS, uid, stored)?;
    let old = ctx.get(Collection::USERS, uid)?;
    let old_name = old
        .as_ref()
        .filter(|r| !r.deleted)
        .and_then(|r| r.json::<StoredUser>().ok())
        .and_then(|u| {
            u.user
                .get("username")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    if let Some(old_name) = old_name.filter(|n| n != username) {
        ctx.index_remove(crate::users::USERNAME_INDEX, &old_name, uid);
    }
    if old.is_some_and(|r| !r.deleted && r.body == bytes) {
        return Ok(0);
    }
    ctx.put(Collection::USERS, uid, bytes)?;
    ctx.index_add(crate::users::USERNAME_INDEX, username, uid)?;
    Ok(1)
}
