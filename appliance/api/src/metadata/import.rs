//! `POST /api/metadata` and `clinicbox metadata import`: check a DHIS2 metadata package against
//! the current metadata (`check/`: ids, strategy, users, references, org-unit paths, report),
//! then write it in one store transaction, or nothing with `atomicMode=ALL` when anything is
//! wrong.

use std::collections::HashMap;

use clinicbox_dhis2::ImportReport;
use clinicbox_store::Collection;
use serde_json::Value;

pub use super::check::{Plan, check};
use super::{MetadataService, StoredUser, bump_revision};
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

impl ImportParams {
    pub fn from_query(q: &Query) -> Result<Self, ApiError> {
        let strategy = match q.get("importStrategy").unwrap_or("CREATE_AND_UPDATE") {
            "CREATE_AND_UPDATE" | "NEW_AND_UPDATES" => ImportStrategy::CreateAndUpdate,
            "CREATE" | "NEW" => ImportStrategy::Create,
            "UPDATE" | "UPDATES" => ImportStrategy::Update,
            "DELETE" | "DELETES" => ImportStrategy::Delete,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Value '{other}' is not valid for parameter importStrategy. Valid values are: [CREATE_AND_UPDATE, CREATE, UPDATE, DELETE]"
                )));
            }
        };
        let atomic = match q.get("atomicMode").unwrap_or("ALL") {
            "ALL" => true,
            "NONE" => false,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Value '{other}' is not valid for parameter atomicMode. Valid values are: [ALL, NONE]"
                )));
            }
        };
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
) -> Result<ImportReport, ApiError> {
    let _guard = svc.write_lock.lock().await;
    let snap = svc.snapshot()?;
    let plan = check(&snap, package, params)?;
    if !plan.ok || params.validate_only {
        return Ok(plan.report);
    }
    let mut writes = Vec::new();
    for it in plan.items.into_iter().filter(|i| i.errors.is_empty()) {
        let plural = it.schema.plural;
        if plan.strategy == ImportStrategy::Delete {
            if plural == "users" {
                let username = snap
                    .get("users", &it.uid)
                    .and_then(|u| u.get("username"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                writes.push(Write::DeleteUser {
                    uid: it.uid,
                    username,
                });
            } else {
                writes.push(Write::Delete {
                    key: format!("{plural}/{}", it.uid),
                });
            }
            continue;
        }
        let mut obj = it.obj;
        for k in COMPUTED {
            obj.remove(*k);
        }
        if let Some(u) = it.user {
            obj.remove("password");
            if let Some(Value::Object(c)) = obj.get_mut("userCredentials") {
                c.remove("password");
            }
            // Normalise to the 2.42 shape.
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
            writes.push(Write::PutUser {
                uid: it.uid,
                user: Value::Object(obj),
                password: u.password,
                username: u.username,
            });
        } else {
            writes.push(Write::Put {
                key: format!("{plural}/{}", it.uid),
                body: Value::Object(obj),
            });
        }
    }
    for (id, mut o) in plan.moved {
        for k in COMPUTED {
            o.remove(*k);
        }
        o.remove("created");
        writes.push(Write::Put {
            key: format!("organisationUnits/{id}"),
            body: Value::Object(o),
        });
    }
    // Hash new passwords off the async threads; keep an existing hash the password still matches
    // so that re-importing the same package changes nothing. A user without a password keeps
    // the stored hash unless the package says the password changed since (national's
    // `passwordLastUpdated`): then the next login has to be checked where it changed.
    let store = svc.store().clone();
    let existing: HashMap<String, Option<String>> = {
        let read = store.read()?;
        let mut m = HashMap::new();
        for w in &writes {
            if let Write::PutUser { uid, user, .. } = w {
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
        }
        m
    };
    let writes =
        tokio::task::spawn_blocking(move || -> Result<Vec<(Write, Option<String>)>, ApiError> {
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
        })
        .await
        .map_err(|e| ApiError::Internal(format!("import task failed: {e}")))??;

    let written = store
        .write(move |ctx| -> Result<u64, clinicbox_store::StoreError> {
            let mut written = 0u64;
            for (w, hash) in writes {
                match w {
                    Write::Put { key, body } => {
                        let bytes = serde_json::to_vec(&body).map_err(|source| {
                            clinicbox_store::StoreError::Json {
                                collection: Collection::METADATA.name().into(),
                                key: key.clone(),
                                source,
                            }
                        })?;
                        let same = ctx
                            .get(Collection::METADATA, &key)?
                            .is_some_and(|r| !r.deleted && r.body == bytes);
                        if !same {
                            ctx.put(Collection::METADATA, &key, bytes)?;
                            written += 1;
                        }
                    }
                    Write::Delete { key } => {
                        written += u64::from(ctx.delete(Collection::METADATA, &key)?);
                    }
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
                        let bytes = serde_json::to_vec(&stored).map_err(|source| {
                            clinicbox_store::StoreError::Json {
                                collection: Collection::USERS.name().into(),
                                key: uid.clone(),
                                source,
                            }
                        })?;
                        let old = ctx.get(Collection::USERS, &uid)?;
                        if let Some(old_user) = old
                            .as_ref()
                            .filter(|r| !r.deleted)
                            .and_then(|r| r.json::<StoredUser>().ok())
                        {
                            if let Some(old_name) =
                                old_user.user.get("username").and_then(Value::as_str)
                            {
                                if old_name != username {
                                    ctx.index_remove(crate::users::USERNAME_INDEX, old_name, &uid);
                                }
                            }
                        }
                        if !old.is_some_and(|r| !r.deleted && r.body == bytes) {
                            ctx.put(Collection::USERS, &uid, bytes)?;
                            ctx.index_add(crate::users::USERNAME_INDEX, &username, &uid)?;
                            written += 1;
                        }
                    }
                    Write::DeleteUser { uid, username } => {
                        written += u64::from(ctx.delete(Collection::USERS, &uid)?);
                        ctx.index_remove(crate::users::USERNAME_INDEX, &username, &uid);
                    }
                }
            }
            bump_revision(ctx)?;
            Ok(written)
        })
        .await
        .map_err(|e| e.flatten())?
        .value;
    tracing::info!(
        created = plan.report.stats.created,
        updated = plan.report.stats.updated,
        deleted = plan.report.stats.deleted,
        ignored = plan.report.stats.ignored,
        "metadata imported"
    );
    let mut report = plan.report;
    report.written = written;
    Ok(report)
}
