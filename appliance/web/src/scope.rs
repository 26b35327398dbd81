//! Who is calling and what they may see: [`AuthUser`] (extracted from every authenticated
//! request) with authorities, groups and the org-unit [`Scope`], plus sharing checks. Tracker and
//! aggregate modules use these to decide capture/search/view rights.

use std::collections::BTreeSet;
use std::sync::Arc;

use clinicbox_dhis2::sharing::{Access, AccessString, LegacySharing, Sharing};
use clinicbox_dhis2::user::AUTHORITY_ALL;
use serde_json::{Map, Value};

use crate::snapshot::{Snapshot, ref_ids};

/// An org unit with its path, as the scope holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgUnitRef {
    pub uid: String,
    /// `/root/…/uid`.
    pub path: String,
}

impl OrgUnitRef {
    /// Whether `path` is this org unit or below it.
    fn covers(&self, path: &str) -> bool {
        path == self.path || path.starts_with(&format!("{}/", self.path))
    }
}

/// A user's org-unit scope. As in DHIS2, an empty search or view scope falls back to the
/// capture scope, and the search scope always includes the capture scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub capture: Vec<OrgUnitRef>,
    pub search: Vec<OrgUnitRef>,
    pub view: Vec<OrgUnitRef>,
    /// Superusers see every org unit.
    pub all: bool,
}

impl Scope {
    fn any_covers(list: &[OrgUnitRef], path: &str) -> bool {
        list.iter().any(|o| o.covers(path))
    }

    /// May data be written for the org unit at `path`?
    pub fn can_capture(&self, path: &str) -> bool {
        self.all || Self::any_covers(&self.capture, path)
    }

    /// May tracked entities owned by the org unit at `path` be searched?
    pub fn can_search(&self, path: &str) -> bool {
        self.can_capture(path) || Self::any_covers(&self.search, path)
    }

    /// May data of the org unit at `path` be viewed (aggregate, analytics)?
    pub fn can_view(&self, path: &str) -> bool {
        self.can_capture(path) || Self::any_covers(&self.view, path)
    }

    /// May the org unit itself (metadata) be seen: anything in any of the three scopes.
    pub fn can_see_org_unit(&self, path: &str) -> bool {
        self.can_search(path) || self.can_view(path)
    }

    /// Capture roots (org units not below another capture org unit), for DESCENDANTS queries.
    pub fn capture_roots(&self) -> Vec<&OrgUnitRef> {
        roots(&self.capture)
    }
}

fn roots(list: &[OrgUnitRef]) -> Vec<&OrgUnitRef> {
    list.iter()
        .filter(|o| !list.iter().any(|p| p.uid != o.uid && p.covers(&o.path)))
        .collect()
}

/// The authenticated caller.
#[derive(Clone)]
pub struct AuthUser {
    pub uid: String,
    pub username: String,
    pub authorities: BTreeSet<String>,
    pub user_groups: Vec<String>,
    pub user_roles: Vec<String>,
    pub scope: Scope,
    /// The metadata snapshot this request runs against.
    pub snapshot: Arc<Snapshot>,
}

impl std::fmt::Debug for AuthUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthUser")
            .field("uid", &self.uid)
            .field("authorities", &self.authorities)
            .finish_non_exhaustive()
    }
}

impl AuthUser {
    /// Builds the caller from the user object `uid` in `snap`.
    pub fn load(snap: &Arc<Snapshot>, uid: &str) -> Option<AuthUser> {
        let user = snap.get("users", uid)?;
        let username = user.get("username")?.as_str()?.to_string();
        let user_roles = ref_ids(user.get("userRoles"));
        let mut authorities = BTreeSet::new();
        for role in &user_roles {
            if let Some(r) = snap.get("userRoles", role) {
                if let Some(Value::Array(a)) = r.get("authorities") {
                    authorities.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
                }
            }
        }
        let ous = |key: &str| -> Vec<OrgUnitRef> {
            ref_ids(user.get(key))
                .into_iter()
                .filter_map(|id| {
                    let path = snap.org_unit_path(&id)?.to_string();
                    Some(OrgUnitRef { uid: id, path })
                })
                .collect()
        };
        let all = authorities.contains(AUTHORITY_ALL);
        Some(AuthUser {
            uid: uid.to_string(),
            username,
            user_groups: ref_ids(user.get("userGroups")),
            user_roles,
            scope: Scope {
                capture: ous("organisationUnits"),
                search: ous("teiSearchOrganisationUnits"),
                view: ous("dataViewOrganisationUnits"),
                all,
            },
            authorities,
            snapshot: snap.clone(),
        })
    }

    /// Holds authority `ALL`.
    pub fn is_superuser(&self) -> bool {
        self.authorities.contains(AUTHORITY_ALL)
    }

    /// Holds `authority` (superusers hold every authority).
    pub fn has_authority(&self, authority: &str) -> bool {
        self.is_superuser() || self.authorities.contains(authority)
    }

    /// May import metadata, manage users and write the dataStore.
    pub fn is_admin(&self) -> bool {
        self.is_superuser() || self.has_authority("F_METADATA_IMPORT")
    }

    /// What this user may do with an object carrying `sharing` (or legacy sharing fields).
    pub fn access_to(&self, obj: &Map<String, Value>) -> Access {
        if self.is_superuser() {
            return Access::all();
        }
        let grant =
            sharing_of(obj).access_for(&self.uid, self.user_groups.iter().map(String::as_str));
        Access::from_grant(grant)
    }

    /// The org unit `uid` is in the capture scope.
    pub fn can_capture_in(&self, org_unit: &str) -> bool {
        self.snapshot
            .org_unit_path(org_unit)
            .is_some_and(|p| self.scope.can_capture(p))
    }

    /// The org unit `uid` is in the search scope.
    pub fn can_search_in(&self, org_unit: &str) -> bool {
        self.snapshot
            .org_unit_path(org_unit)
            .is_some_and(|p| self.scope.can_search(p))
    }

    /// The org unit `uid` is in the view scope.
    pub fn can_view_in(&self, org_unit: &str) -> bool {
        self.snapshot
            .org_unit_path(org_unit)
            .is_some_and(|p| self.scope.can_view(p))
    }
}

/// The object's sharing: `sharing` (2.36+), else legacy fields, else DHIS2's default for objects
/// without sharing (public metadata read/write, no data access).
pub fn sharing_of(obj: &Map<String, Value>) -> Sharing {
    if let Some(s) = obj.get("sharing") {
        if let Ok(s) = serde_json::from_value::<Sharing>(s.clone()) {
            return s;
        }
    }
    if obj.contains_key("publicAccess") {
        if let Ok(l) = serde_json::from_value::<LegacySharing>(Value::Object(obj.clone())) {
            return l.into();
        }
    }
    Sharing {
        public_access: AccessString::parse("rw------").ok(),
        ..Sharing::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ou(uid: &str, path: &str) -> OrgUnitRef {
        OrgUnitRef {
            uid: uid.into(),
            path: path.into(),
        }
    }

    #[test]
    fn capture_search_and_view_cover_subtrees() {
        let s = Scope {
            capture: vec![ou("c", "/r/d/c")],
            search: vec![ou("d", "/r/d")],
            view: vec![],
            all: false,
        };
        assert!(s.can_capture("/r/d/c") && s.can_capture("/r/d/c/x"));
        assert!(!s.can_capture("/r/d/c2") && !s.can_capture("/r/d"));
        assert!(s.can_search("/r/d/c2") && !s.can_search("/r"));
        assert!(s.can_view("/r/d/c") && !s.can_view("/r/d/c2"));
        assert!(s.can_see_org_unit("/r/d") && !s.can_see_org_unit("/r/e"));
        let all = Scope {
            all: true,
            ..Scope::default()
        };
        assert!(all.can_capture("/anything"));
    }

    #[test]
    fn roots_skip_descendants() {
        let s = Scope {
            capture: vec![ou("d", "/r/d"), ou("c", "/r/d/c"), ou("e", "/r/e")],
            ..Scope::default()
        };
        let r: Vec<&str> = s.capture_roots().iter().map(|o| o.uid.as_str()).collect();
        assert_eq!(r, vec!["d", "e"]);
    }

    #[test]
    fn missing_sharing_defaults_to_public_metadata_only() {
        let s = sharing_of(&Map::new());
        let a = Access::from_grant(s.access_for("u", []));
        assert!(a.read && !a.data.read);
    }
}
