//! User administration over the store (`clinicbox user add|passwd|disable|list`), built on the
//! metadata import so that a user added by hand passes the same checks as one from a package.

use clinicbox_dhis2::user::{AUTHORITY_ALL, valid_username};
use clinicbox_dhis2::{ImportStatus, Uid};
use clinicbox_store::{Collection, StoreError};
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth;
use crate::error::ApiError;
use crate::metadata::import::{ImportParams, import};
use crate::metadata::{ImportError, MetadataService, StoredUser, bump_revision, ref_ids};

/// Keyed-hash index of usernames → user UIDs (the store blinds the value).
pub const USERNAME_INDEX: &str = "username";

/// Shortest password accepted from an admin command.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password (DHIS2's limit).
pub const MAX_PASSWORD_LEN: usize = 72;

/// Why a user could not be added or changed. The command line and the setup page call these
/// outside any HTTP request; a route that does turns it into a WebMessage.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("Invalid username {0:?}")]
    InvalidUsername(String),
    #[error("Password must have {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters")]
    PasswordLength,
    #[error("User {0:?} already exists")]
    Exists(String),
    #[error("No user {0:?}")]
    NoSuchUser(String),
    /// A role or org unit named that does not exist.
    #[error("No {plural} with UID or name {what:?}")]
    Unknown { plural: String, what: String },
    /// A name several roles or org units share.
    #[error("Several {plural} are named {what:?}; use the UID")]
    Ambiguous { plural: String, what: String },
    /// The metadata import refused the user (its error reports, joined).
    #[error("{0}")]
    Refused(String),
    #[error("user record unreadable: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] auth::HashError),
    #[error("password hash task failed: {0}")]
    Task(String),
}

impl UserError {
    /// Whether what was asked was at fault (rather than the box).
    pub fn is_request(&self) -> bool {
        !matches!(
            self,
            UserError::Unreadable(_)
                | UserError::Import(_)
                | UserError::Store(_)
                | UserError::Hash(_)
                | UserError::Task(_)
        )
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> ApiError {
        match e {
            UserError::InvalidUsername(_) | UserError::PasswordLength => {
                ApiError::BadRequest(e.to_string())
            }
            UserError::Exists(_) | UserError::Ambiguous { .. } | UserError::Refused(_) => {
                ApiError::Conflict(e.to_string())
            }
            UserError::NoSuchUser(_) | UserError::Unknown { .. } => {
                ApiError::NotFound(e.to_string())
            }
            UserError::Import(i) => i.into(),
            UserError::Store(s) => s.into(),
            UserError::Unreadable(_) | UserError::Hash(_) | UserError::Task(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

/// What `clinicbox user add` needs.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub first_name: String,
    pub surname: String,
    /// User role UIDs or names.
    pub roles: Vec<String>,
    /// Capture org units (UIDs or names).
    pub org_units: Vec<String>,
    /// Search org units (UIDs or names); empty means the capture ones.
    pub search_org_units: Vec<String>,
    /// Grant authority `ALL` (creates a "Superuser" role if none exists).
    pub superuser: bool,
}

/// One line of `clinicbox user list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserSummary {
    pub uid: String,
    pub username: String,
    pub name: String,
    pub disabled: bool,
    pub roles: Vec<String>,
    pub org_units: Vec<String>,
}

pub fn check_password(p: &str) -> Result<(), UserError> {
    let n = p.chars().count();
    if n < MIN_PASSWORD_LEN || p.len() > MAX_PASSWORD_LEN {
        return Err(UserError::PasswordLength);
    }
    Ok(())
}

fn lookup(svc: &MetadataService, plural: &str, what: &str) -> Result<String, UserError> {
    let snap = svc.snapshot()?;
    if snap.contains(plural, what) {
        return Ok(what.to_string());
    }
    let hits: Vec<&String> = snap
        .objects(plural)
        .filter(|(_, o)| o.get("name").and_then(Value::as_str) == Some(what))
        .map(|(id, _)| id)
        .collect();
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(UserError::Unknown {
            plural: plural.to_string(),
            what: what.to_string(),
        }),
        _ => Err(UserError::Ambiguous {
            plural: plural.to_string(),
            what: what.to_string(),
        }),
    }
}

/// Adds a user. Returns its UID.
pub async fn add_user(svc: &MetadataService, new: &NewUser) -> Result<String, UserError> {
    if !valid_username(&new.username) {
        return Err(UserError::InvalidUsername(new.username.clone()));
    }
    check_password(&new.password)?;
    if svc.snapshot()?.credential(&new.username).is_some() {
        return Err(UserError::Exists(new.username.clone()));
    }
    let mut roles = Vec::new();
    for r in &new.roles {
        roles.push(lookup(svc, "userRoles", r)?);
    }
    let mut package = serde_json::Map::new();
    if new.superuser {
        let snap = svc.snapshot()?;
        let existing = snap.objects("userRoles").find(|(_, r)| {
            r.get("authorities")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == AUTHORITY_ALL))
        });
        let role = match existing {
            Some((id, _)) => id.clone(),
            None => {
                let id = Uid::generate().to_string();
                package.insert(
                    "userRoles".into(),
                    json!([{"id": id, "name": "Superuser", "authorities": [AUTHORITY_ALL]}]),
                );
                id
            }
        };
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    let ous = |names: &[String]| -> Result<Vec<Value>, UserError> {
        names
            .iter()
            .map(|n| lookup(svc, "organisationUnits", n).map(|id| json!({"id": id})))
            .collect()
    };
    let capture = ous(&new.org_units)?;
    let search = if new.search_org_units.is_empty() {
        capture.clone()
    } else {
        ous(&new.search_org_units)?
    };
    let uid = Uid::generate().to_string();
    package.insert(
        "users".into(),
        json!([{
            "id": uid,
            "username": new.username,
            "password": new.password,
            "firstName": new.first_name,
            "surname": new.surname,
            "disabled": false,
            "userRoles": roles.iter().map(|r| json!({"id": r})).collect::<Vec<_>>(),
            "organisationUnits": capture,
            "teiSearchOrganisationUnits": search,
            "dataViewOrganisationUnits": capture,
        }]),
    );
    let report = import(svc, &Value::Object(package), ImportParams::default()).await?;
    if report.status != ImportStatus::Ok {
        let msgs: Vec<String> = report.error_reports().map(|e| e.message.clone()).collect();
        return Err(UserError::Refused(msgs.join("; ")));
    }
    Ok(uid)
}

async fn update_user(
    svc: &MetadataService,
    username: &str,
    change: impl FnOnce(&mut StoredUser) + Send + 'static,
) -> Result<(), UserError> {
    let _guard = svc.write_lock.lock().await;
    let snap = svc.snapshot()?;
    let uid = snap
        .credential(username)
        .map(|c| c.uid.clone())
        .ok_or_else(|| UserError::NoSuchUser(username.to_string()))?;
    let rec = svc
        .store()
        .read()?
        .get(Collection::USERS, &uid)?
        .filter(|r| !r.deleted)
        .ok_or_else(|| UserError::NoSuchUser(username.to_string()))?;
    let mut stored: StoredUser = rec
        .json()
        .map_err(|e| UserError::Unreadable(e.to_string()))?;
    change(&mut stored);
    svc.store()
        .write(move |ctx| -> Result<(), StoreError> {
            ctx.put_json(Collection::USERS, &uid, &stored)?;
            bump_revision(ctx)
        })
        .await
        .map_err(|e| e.flatten())?;
    Ok(())
}

/// Sets a new password.
pub async fn set_password(
    svc: &MetadataService,
    username: &str,
    password: &str,
) -> Result<(), UserError> {
    check_password(password)?;
    let p = password.to_string();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&p))
        .await
        .map_err(|e| UserError::Task(e.to_string()))??;
    update_user(svc, username, move |u| {
        u.password_hash = Some(hash);
    })
    .await
}

/// Keeps the Argon2id `hash` of a password national confirmed (a staff account's first
/// login on the box), so the next logins are checked offline.
pub async fn keep_confirmed_hash(
    svc: &MetadataService,
    username: &str,
    hash: String,
) -> Result<(), UserError> {
    update_user(svc, username, move |u| {
        u.password_hash = Some(hash);
    })
    .await
}

/// Disables (or re-enables) a user. A disabled user's tablets are told "Account disabled" and
/// remove the account and its local data.
pub async fn set_disabled(
    svc: &MetadataService,
    username: &str,
    disabled: bool,
) -> Result<(), UserError> {
    update_user(svc, username, move |u| {
        if let Value::Object(o) = &mut u.user {
            o.insert("disabled".into(), Value::Bool(disabled));
        }
    })
    .await
}

/// All users, by username.
pub fn list_users(svc: &MetadataService) -> Result<Vec<UserSummary>, StoreError> {
    let snap = svc.snapshot()?;
    let name_of = |plural: &str, id: &String| {
        snap.get(plural, id)
            .and_then(|o| o.get("name"))
            .and_then(Value::as_str)
            .map_or_else(|| id.clone(), str::to_string)
    };
    let mut out: Vec<UserSummary> = snap
        .objects("users")
        .map(|(uid, u)| UserSummary {
            uid: uid.clone(),
            username: u
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            name: u
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            disabled: u.get("disabled").and_then(Value::as_bool).unwrap_or(false),
            roles: ref_ids(u.get("userRoles"))
                .iter()
                .map(|r| name_of("userRoles", r))
                .collect(),
            org_units: ref_ids(u.get("organisationUnits"))
                .iter()
                .map(|o| name_of("organisationUnits", o))
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.username.cmp(&b.username));
    Ok(out)
}
