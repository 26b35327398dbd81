//! Users, user roles and user groups as they appear in a DHIS2 metadata package.
//!
//! 2.42 exports carry `username`, `password`, `disabled`, `userRoles` on the user itself; older
//! exports nest them in `userCredentials`. [`UserPayload`] accepts both and normalises.

use serde::{Deserialize, Serialize};

use crate::Uid;

/// Authority granting everything (DHIS2 superuser).
pub const AUTHORITY_ALL: &str = "ALL";

/// An `{ "id": … }` reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: Uid,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyCredentials {
    username: Option<String>,
    password: Option<String>,
    disabled: Option<bool>,
    #[serde(default)]
    user_roles: Vec<IdRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUser {
    id: Option<Uid>,
    username: Option<String>,
    password: Option<String>,
    disabled: Option<bool>,
    #[serde(default)]
    user_roles: Vec<IdRef>,
    #[serde(default)]
    user_groups: Vec<IdRef>,
    #[serde(default)]
    organisation_units: Vec<IdRef>,
    #[serde(default)]
    tei_search_organisation_units: Vec<IdRef>,
    #[serde(default)]
    data_view_organisation_units: Vec<IdRef>,
    user_credentials: Option<LegacyCredentials>,
}

/// Why a user object cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserPayloadError {
    #[error("invalid user object: {0}")]
    Shape(String),
    #[error("user has no username")]
    MissingUsername,
    #[error("username {0:?} is invalid: 1-255 characters without whitespace or control characters")]
    BadUsername(String),
}

/// A user object from a package, normalised across DHIS2 versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPayload {
    pub id: Option<Uid>,
    pub username: String,
    /// Plain-text password from the package (hashed on import, never stored).
    pub password: Option<String>,
    pub disabled: bool,
    pub user_roles: Vec<Uid>,
    pub user_groups: Vec<Uid>,
    pub organisation_units: Vec<Uid>,
    pub tei_search_organisation_units: Vec<Uid>,
    pub data_view_organisation_units: Vec<Uid>,
}

/// DHIS2 usernames: 1–255 characters, no whitespace or control characters. Lowercase is not
/// enforced (DHIS2 matches usernames case-insensitively on login; we match exactly).
pub fn valid_username(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl UserPayload {
    pub fn from_json(v: &serde_json::Value) -> Result<Self, UserPayloadError> {
        let raw: RawUser = serde_json::from_value(v.clone())
            .map_err(|e| UserPayloadError::Shape(e.to_string()))?;
        let legacy = raw.user_credentials.unwrap_or_default();
        let username = raw
            .username
            .or(legacy.username)
            .ok_or(UserPayloadError::MissingUsername)?;
        if !valid_username(&username) {
            return Err(UserPayloadError::BadUsername(username));
        }
        let mut roles: Vec<Uid> = raw.user_roles.into_iter().map(|r| r.id).collect();
        for r in legacy.user_roles {
            if !roles.contains(&r.id) {
                roles.push(r.id);
            }
        }
        let ids = |v: Vec<IdRef>| v.into_iter().map(|r| r.id).collect();
        Ok(UserPayload {
            id: raw.id,
            username,
            password: raw.password.or(legacy.password),
            disabled: raw.disabled.or(legacy.disabled).unwrap_or(false),
            user_roles: roles,
            user_groups: ids(raw.user_groups),
            organisation_units: ids(raw.organisation_units),
            tei_search_organisation_units: ids(raw.tei_search_organisation_units),
            data_view_organisation_units: ids(raw.data_view_organisation_units),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_242_users() {
        let u = UserPayload::from_json(&json!({
            "id": "DXyJmlo9rge", "username": "android", "password": "Android123",
            "userRoles": [{"id": "Ufph3mGRmMo"}],
            "organisationUnits": [{"id": "YuQRtpLP10I"}]
        }))
        .unwrap();
        assert_eq!(u.username, "android");
        assert_eq!(u.password.as_deref(), Some("Android123"));
        assert!(!u.disabled);
        assert_eq!(u.user_roles.len(), 1);
        assert_eq!(u.organisation_units[0].as_str(), "YuQRtpLP10I");
    }

    #[test]
    fn reads_legacy_user_credentials() {
        let u = UserPayload::from_json(&json!({
            "id": "DXyJmlo9rge",
            "userCredentials": {"username": "old", "disabled": true, "userRoles": [{"id": "Ufph3mGRmMo"}]}
        }))
        .unwrap();
        assert_eq!(u.username, "old");
        assert!(u.disabled);
        assert_eq!(u.user_roles[0].as_str(), "Ufph3mGRmMo");
    }

    #[test]
    fn rejects_missing_or_bad_usernames_and_uids() {
        assert_eq!(
            UserPayload::from_json(&json!({"id": "DXyJmlo9rge"})),
            Err(UserPayloadError::MissingUsername)
        );
        assert!(matches!(
            UserPayload::from_json(&json!({"username": "a b"})),
            Err(UserPayloadError::BadUsername(_))
        ));
        assert!(matches!(
            UserPayload::from_json(&json!({"username": "ok", "userRoles": [{"id": "bad"}]})),
            Err(UserPayloadError::Shape(_))
        ));
    }
}
