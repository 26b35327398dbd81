//! DHIS2 sharing: access strings (`rwrw----`), the `sharing` object, and the computed `access`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an access string is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a DHIS2 access string (8 chars like \"rwrw----\"): {0:?}")]
pub struct AccessStringError(String);

/// An 8-character DHIS2 access string: metadata read/write, data read/write, then `----`.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct AccessString {
    pub metadata_read: bool,
    pub metadata_write: bool,
    pub data_read: bool,
    pub data_write: bool,
}

impl AccessString {
    pub const NONE: AccessString = AccessString {
        metadata_read: false,
        metadata_write: false,
        data_read: false,
        data_write: false,
    };

    pub fn parse(s: &str) -> Result<Self, AccessStringError> {
        let b = s.as_bytes();
        let err = || AccessStringError(s.to_string());
        if b.len() != 8 {
            return Err(err());
        }
        let flag = |c: u8, want: u8| match c {
            b'-' => Ok(false),
            c if c == want => Ok(true),
            _ => Err(err()),
        };
        if b[4..].iter().any(|c| *c != b'-') {
            return Err(err());
        }
        Ok(AccessString {
            metadata_read: flag(b[0], b'r')?,
            metadata_write: flag(b[1], b'w')?,
            data_read: flag(b[2], b'r')?,
            data_write: flag(b[3], b'w')?,
        })
    }

    /// Union of two grants.
    pub fn or(self, o: AccessString) -> AccessString {
        AccessString {
            metadata_read: self.metadata_read || o.metadata_read,
            metadata_write: self.metadata_write || o.metadata_write,
            data_read: self.data_read || o.data_read,
            data_write: self.data_write || o.data_write,
        }
    }
}

impl fmt::Display for AccessString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |on: bool, ch: char| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}{}----",
            c(self.metadata_read, 'r'),
            c(self.metadata_write, 'w'),
            c(self.data_read, 'r'),
            c(self.data_write, 'w')
        )
    }
}

impl fmt::Debug for AccessString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessString({self})")
    }
}

impl Serialize for AccessString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccessString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        AccessString::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One user or group grant inside `sharing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharingGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub access: AccessString,
}

/// The `sharing` object of a shareable metadata object (DHIS2 2.36+).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sharing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub external: bool,
    #[serde(default, rename = "public", skip_serializing_if = "Option::is_none")]
    pub public_access: Option<AccessString>,
    #[serde(default)]
    pub users: BTreeMap<String, SharingGrant>,
    #[serde(default)]
    pub user_groups: BTreeMap<String, SharingGrant>,
}

/// The legacy (≤2.35) sharing fields, still found in old exports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacySharing {
    #[serde(default)]
    pub public_access: Option<AccessString>,
    #[serde(default)]
    pub user_accesses: Vec<LegacyGrant>,
    #[serde(default)]
    pub user_group_accesses: Vec<LegacyGrant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyGrant {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub user_uid: Option<String>,
    #[serde(default)]
    pub user_group_uid: Option<String>,
    pub access: AccessString,
}

impl From<LegacySharing> for Sharing {
    fn from(l: LegacySharing) -> Sharing {
        let grants = |v: Vec<LegacyGrant>| {
            v.into_iter()
                .filter_map(|g| {
                    let id = g.id.or(g.user_uid).or(g.user_group_uid)?;
                    Some((
                        id.clone(),
                        SharingGrant {
                            id: Some(id),
                            access: g.access,
                        },
                    ))
                })
                .collect()
        };
        Sharing {
            owner: None,
            external: false,
            public_access: l.public_access,
            users: grants(l.user_accesses),
            user_groups: grants(l.user_group_accesses),
        }
    }
}

impl Sharing {
    /// What a user with `user_id` in `groups` may do.
    pub fn access_for<'a>(
        &self,
        user_id: &str,
        groups: impl IntoIterator<Item = &'a str>,
    ) -> AccessString {
        let mut a = self.public_access.unwrap_or(AccessString::NONE);
        if let Some(g) = self.users.get(user_id) {
            a = a.or(g.access);
        }
        if self.owner.as_deref() == Some(user_id) {
            a = a.or(AccessString {
                metadata_read: true,
                metadata_write: true,
                ..AccessString::NONE
            });
        }
        for group in groups {
            if let Some(g) = self.user_groups.get(group) {
                a = a.or(g.access);
            }
        }
        a
    }
}

/// The computed `access` object DHIS2 serves per user (the SDK reads `read`,
/// `data.read`/`data.write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub manage: bool,
    pub externalize: bool,
    pub write: bool,
    pub read: bool,
    pub update: bool,
    pub delete: bool,
    pub data: DataAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataAccess {
    pub read: bool,
    pub write: bool,
}

impl Access {
    pub fn from_grant(a: AccessString) -> Access {
        Access {
            manage: a.metadata_write,
            externalize: false,
            write: a.metadata_write,
            read: a.metadata_read,
            update: a.metadata_write,
            delete: a.metadata_write,
            data: DataAccess {
                read: a.data_read,
                write: a.data_write,
            },
        }
    }

    pub fn all() -> Access {
        Access {
            manage: true,
            externalize: true,
            write: true,
            read: true,
            update: true,
            delete: true,
            data: DataAccess {
                read: true,
                write: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_access_strings() {
        let a = AccessString::parse("rwr-----").unwrap();
        assert!(a.metadata_read && a.metadata_write && a.data_read && !a.data_write);
        assert_eq!(a.to_string(), "rwr-----");
        for bad in ["rw", "rwrw---x", "wrrw----", "rwrw-----", "RWRW----"] {
            assert!(AccessString::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_combines_public_user_and_groups() {
        let s: Sharing = serde_json::from_value(serde_json::json!({
            "public": "r-------",
            "users": {"uUser000001": {"id": "uUser000001", "access": "r-r-----"}},
            "userGroups": {"gGroup00001": {"id": "gGroup00001", "access": "r-rw----"}}
        }))
        .unwrap();
        assert_eq!(s.access_for("other000001", []).to_string(), "r-------");
        assert_eq!(s.access_for("uUser000001", []).to_string(), "r-r-----");
        assert_eq!(
            s.access_for("other000001", ["gGroup00001"]).to_string(),
            "r-rw----"
        );
        let access = Access::from_grant(s.access_for("other000001", ["gGroup00001"]));
        assert!(access.read && access.data.write && !access.write);
    }

    #[test]
    fn legacy_sharing_converts() {
        let l: LegacySharing = serde_json::from_value(serde_json::json!({
            "publicAccess": "rw------",
            "userGroupAccesses": [{"userGroupUid": "gGroup00001", "access": "rwrw----"}]
        }))
        .unwrap();
        let s = Sharing::from(l);
        assert_eq!(
            s.access_for("x", ["gGroup00001"]),
            AccessString::parse("rwrw----").unwrap()
        );
    }
}
