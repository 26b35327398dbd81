//! `GET /api/tracker/{trackedEntities,enrollments,events,relationships}`: selection by org unit
//! mode, program, status, dates and `updatedAfter`; stable ordering and offset paging with the
//! 2.42 `pager`; rendering to the DHIS2 JSON shapes and `fields` projection.
//!
//! Candidate selection runs on the in-memory catalog under its read lock (cheap, no
//! decryption); only the requested page is read from the store and decrypted.

pub(crate) mod cursor;
pub mod enrollments;
pub mod events;
pub mod filters;
mod listing;
pub mod relationships;
pub mod render;
pub mod tracked_entities;

use std::cmp::Ordering;
use std::collections::HashSet;

use axum::http::{HeaderMap, Uri};
use clinicbox_api::ApiState;
use clinicbox_api::fields::FieldList;
use clinicbox_api::query::Query;
use clinicbox_dhis2::{Dhis2Timestamp, Uid};
use clinicbox_web::{ApiError, AuthUser};
use serde_json::{Map, Value, json};

/// `orgUnitMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgUnitMode {
    Selected,
    Children,
    Descendants,
    Accessible,
    Capture,
    All,
}

/// Which org units a query covers.
pub struct OrgUnitSelection {
    mode: OrgUnitMode,
    /// Requested org units with their paths.
    units: Vec<(Uid, String)>,
}

impl OrgUnitSelection {
    /// Parses `orgUnits` (or `orgUnit`) and `orgUnitMode` (or the old `ouMode`) and checks
    /// that the requested units are in the user's search scope.
    pub fn parse(q: &Query, user: &AuthUser, list_key: &str) -> Result<Self, ApiError> {
        let mut ids = q.list(list_key);
        if ids.is_empty() {
            ids = q.list("orgUnit");
        }
        // Pre-2.41 clients separate with ';'.
        let ids: Vec<String> = ids
            .iter()
            .flat_map(|s| s.split(';'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mode_raw = q.get("orgUnitMode").or_else(|| q.get("ouMode"));
        let mode = match mode_raw.map(str::to_ascii_uppercase).as_deref() {
            None | Some("") => {
                if ids.is_empty() {
                    OrgUnitMode::Accessible
                } else {
                    OrgUnitMode::Selected
                }
            }
            Some("SELECTED") => OrgUnitMode::Selected,
            Some("CHILDREN") => OrgUnitMode::Children,
            Some("DESCENDANTS") => OrgUnitMode::Descendants,
            Some("ACCESSIBLE") => OrgUnitMode::Accessible,
            Some("CAPTURE") => OrgUnitMode::Capture,
            Some("ALL") => OrgUnitMode::All,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "Value '{other}' is not valid for parameter orgUnitMode. Valid values are: [SELECTED, CHILDREN, DESCENDANTS, ACCESSIBLE, CAPTURE, ALL]"
                )));
            }
        };
        if matches!(
            mode,
            OrgUnitMode::Selected | OrgUnitMode::Children | OrgUnitMode::Descendants
        ) && ids.is_empty()
        {
            return Err(ApiError::BadRequest(
                "At least one org unit is required for orgUnitMode SELECTED, CHILDREN or DESCENDANTS"
                    .into(),
            ));
        }
        if mode == OrgUnitMode::All && !user.is_superuser() {
            return Err(ApiError::Forbidden(
                "User is not authorized to query across all organisation units".into(),
            ));
        }
        let mut units = Vec::new();
        for id in ids {
            let Some(path) = user.snapshot.org_unit_path(&id).map(str::to_string) else {
                return Err(ApiError::BadRequest(format!(
                    "Organisation unit does not exist: {id}"
                )));
            };
            if !user.can_search_in(&id) {
                return Err(ApiError::Forbidden(format!(
                    "Organisation unit is not part of the search scope: {id}"
                )));
            }
            let u = Uid::try_from(id.as_str())
                .map_err(|_| ApiError::BadRequest(format!("Invalid UID: {id}")))?;
            units.push((u, path));
        }
        Ok(OrgUnitSelection { mode, units })
    }

    /// Whether objects in org unit `ou` are selected (scope rules are checked separately).
    pub fn covers(&self, user: &AuthUser, ou: Uid) -> bool {
        let Some(path) = user.snapshot.org_unit_path(ou.as_str()) else {
            return false;
        };
        match self.mode {
            OrgUnitMode::Selected => self.units.iter().any(|(u, _)| *u == ou),
            OrgUnitMode::Children => self.units.iter().any(|(u, p)| {
                *u == ou
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.matches('/').count() == 1 && rest.starts_with('/'))
            }),
            OrgUnitMode::Descendants => self
                .units
                .iter()
                .any(|(_, p)| path == p || path.starts_with(&format!("{p}/"))),
            OrgUnitMode::Accessible => user.can_search_in(ou.as_str()),
            OrgUnitMode::Capture => user.can_capture_in(ou.as_str()),
            OrgUnitMode::All => true,
        }
    }

    pub fn mode(&self) -> OrgUnitMode {
        self.mode
    }

    /// Whether every covered org unit is in the user's capture scope (searches inside the
    /// capture scope skip the min-attributes and max-results rules).
    pub fn within_capture(&self, user: &AuthUser) -> bool {
        match self.mode {
            OrgUnitMode::Capture => true,
            OrgUnitMode::Selected | OrgUnitMode::Children | OrgUnitMode::Descendants => self
                .units
                .iter()
                .all(|(u, _)| user.can_capture_in(u.as_str())),
            _ => user
                .scope
                .search
                .iter()
                .all(|s| user.can_capture_in(&s.uid)),
        }
    }
}

/// `page`, `pageSize`, `paging`, `totalPages`.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub paging: bool,
    pub page: usize,
    pub page_size: usize,
    pub total_pages: bool,
}

impl Paging {
    pub fn parse(q: &Query) -> Result<Paging, ApiError> {
        // `skipPaging=true` is the pre-2.41 spelling of `paging=false`.
        let skip = q.bool("skipPaging", false)?;
        Ok(Paging {
            paging: q.bool("paging", true)? && !skip,
            page: q.positive("page", 1)?,
            page_size: q.positive("pageSize", 50)?,
            total_pages: q.bool("totalPages", false)?,
        })
    }

    /// The slice of `items` for this page.
    pub fn slice<T: Clone>(&self, items: &[T]) -> Vec<T> {
        if !self.paging {
            return items.to_vec();
        }
        let start = (self.page - 1).saturating_mul(self.page_size);
        items
            .iter()
            .skip(start)
            .take(self.page_size)
            .cloned()
            .collect()
    }
}

/// The JSON page: `{"pager": {…}, "page", "pageSize", "<key>": [...]}` as 2.42 returns it (the
/// top-level `page`/`pageSize` are what older SDKs read).
pub fn page_body(
    key: &str,
    items: Vec<Value>,
    paging: &Paging,
    total: usize,
    link: &PageLink,
) -> Value {
    let mut out = Map::new();
    if paging.paging {
        let mut pager = Map::new();
        pager.insert("page".into(), json!(paging.page));
        pager.insert("pageSize".into(), json!(paging.page_size));
        let page_count = total.div_ceil(paging.page_size).max(1);
        if paging.total_pages {
            pager.insert("total".into(), json!(total));
            pager.insert("pageCount".into(), json!(page_count));
        }
        if paging.page > 1 {
            pager.insert("prevPage".into(), json!(link.to(paging.page - 1)));
        }
        if paging.page * paging.page_size < total {
            pager.insert("nextPage".into(), json!(link.to(paging.page + 1)));
        }
        out.insert("pager".into(), Value::Object(pager.clone()));
        out.insert("page".into(), json!(paging.page));
        out.insert("pageSize".into(), json!(paging.page_size));
        if paging.total_pages {
            out.insert("total".into(), json!(total));
            out.insert("pageCount".into(), json!(page_count));
        }
    }
    out.insert(key.into(), Value::Array(items));
    Value::Object(out)
}

/// Builds `prevPage`/`nextPage` URLs from the request.
pub struct PageLink {
    base: String,
    path: String,
    query: Vec<(String, String)>,
}

impl PageLink {
    pub fn new(state: &ApiState, headers: &HeaderMap, uri: &Uri) -> PageLink {
        let base = state.config().public_url.clone().unwrap_or_else(|| {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        });
        let query = Query::parse(uri.query().unwrap_or(""))
            .pairs()
            .iter()
            .filter(|(k, _)| k != "page")
            .cloned()
            .collect();
        PageLink {
            base: base.trim_end_matches('/').to_string(),
            path: uri.path().to_string(),
            query,
        }
    }

    fn to(&self, page: usize) -> String {
        let mut q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        q.push(format!("page={page}"));
        format!("{}{}?{}", self.base, self.path, q.join("&"))
    }
}

/// `fields`, with the endpoint's default when absent.
pub fn fields(q: &Query, default: &str) -> Result<FieldList, ApiError> {
    FieldList::parse(q.get("fields").filter(|f| !f.is_empty()).unwrap_or(default))
}

/// Whether a projection needs property `name` (so it is worth rendering).
pub fn wants(list: &FieldList, name: &str) -> bool {
    if list.excludes.iter().any(|x| x == name) {
        return false;
    }
    list.all || list.includes.iter().any(|n| n.name == name)
}

/// The child field list of `name` (for nested rendering decisions).
pub fn child<'a>(list: &'a FieldList, name: &str) -> Option<&'a FieldList> {
    list.includes
        .iter()
        .find(|n| n.name == name)
        .and_then(|n| n.children.as_ref())
}

/// A `...After`/`...Before` date parameter as epoch ms in the server zone.
pub fn date_param(state: &ApiState, q: &Query, keys: &[&str]) -> Result<Option<i64>, ApiError> {
    for k in keys {
        if let Some(v) = q.get(k).filter(|v| !v.is_empty()) {
            let t = Dhis2Timestamp::parse_lenient(v).map_err(|_| {
                ApiError::BadRequest(format!("Value '{v}' is not a valid date for parameter {k}"))
            })?;
            return t
                .to_epoch_ms(state.zone())
                .map(Some)
                .map_err(|e| ApiError::BadRequest(e.to_string()));
        }
    }
    Ok(None)
}

/// A timestamp as epoch ms in the server zone (0 when out of range).
pub fn ts_ms(state: &ApiState, t: &Dhis2Timestamp) -> i64 {
    t.to_epoch_ms(state.zone()).unwrap_or(0)
}

/// A list of UIDs in a parameter (`a,b` or the pre-2.41 `a;b`).
pub fn uid_list(q: &Query, keys: &[&str]) -> Option<HashSet<Uid>> {
    let mut out = HashSet::new();
    let mut any = false;
    for k in keys {
        for v in q.list(k) {
            for p in v.split(';').filter(|p| !p.is_empty()) {
                any = true;
                if let Ok(u) = Uid::try_from(p) {
                    out.insert(u);
                }
            }
        }
    }
    any.then_some(out)
}

/// One `order` item.
#[derive(Debug, Clone)]
pub struct OrderBy {
    pub field: String,
    pub desc: bool,
}

/// Parses `order=createdAt:desc,trackedEntity` (also `order=a:desc&order=b`).
pub fn order(q: &Query) -> Result<Vec<OrderBy>, ApiError> {
    let mut out = Vec::new();
    for item in q.list("order") {
        let (field, dir) = item.split_once(':').unwrap_or((item.as_str(), "asc"));
        let desc = match dir.to_ascii_lowercase().as_str() {
            "asc" => false,
            "desc" => true,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid order direction '{dir}' in order={item}"
                )));
            }
        };
        out.push(OrderBy {
            field: field.to_string(),
            desc,
        });
    }
    Ok(out)
}

/// Compares by the given keys, then by a final tie-breaker so the order is total (stable
/// offset paging needs it).
pub fn compare_by<T>(
    a: &T,
    b: &T,
    order: &[OrderBy],
    key: impl Fn(&T, &str) -> Option<SortKey>,
    tie: impl Fn(&T) -> Uid,
) -> Ordering {
    for o in order {
        let (ka, kb) = (key(a, &o.field), key(b, &o.field));
        let c = ka.cmp(&kb);
        let c = if o.desc { c.reverse() } else { c };
        if c != Ordering::Equal {
            return c;
        }
    }
    tie(a).cmp(&tie(b))
}

/// Sorts a listing's candidates by `order`, newest created first when none is asked, ties by
/// UID.
pub fn sort_by_order<T>(
    items: &mut [T],
    order: Vec<OrderBy>,
    key: impl Fn(&T, &str) -> Option<SortKey>,
    uid: impl Fn(&T) -> Uid,
) {
    let order = if order.is_empty() {
        vec![OrderBy {
            field: "createdAt".into(),
            desc: true,
        }]
    } else {
        order
    };
    items.sort_by(|a, b| compare_by(a, b, &order, &key, &uid));
}

/// The sort key of what every tracker object has: when it was created and last updated.
pub fn stamp_key(s: &crate::catalog::Stamps, field: &str) -> Option<SortKey> {
    let ms = match field {
        "createdAt" | "createdAtClient" | "created" => s.created_ms,
        "updatedAt" | "updatedAtClient" | "lastUpdated" => s.updated_ms,
        _ => return None,
    };
    Some(SortKey::Num(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// A sortable value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortKey {
    Num(i64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Stamps;

    fn uid(n: u8) -> Uid {
        Uid::try_from(format!("teSort{n:05}").as_str()).expect("uid")
    }

    #[test]
    fn listings_sort_newest_first_unless_asked_and_ties_go_by_uid() {
        let stamps = |c: u64, u: u64| Stamps {
            created_ms: c,
            updated_ms: u,
            deleted: false,
        };
        let items = vec![
            (uid(1), stamps(10, 50)),
            (uid(2), stamps(30, 40)),
            (uid(3), stamps(20, 40)),
        ];
        let sorted = |order: Vec<OrderBy>| {
            let mut v = items.clone();
            sort_by_order(&mut v, order, |(_, s), f| stamp_key(s, f), |(u, _)| *u);
            v.iter().map(|(u, _)| *u).collect::<Vec<_>>()
        };
        assert_eq!(sorted(Vec::new()), vec![uid(2), uid(3), uid(1)]);
        let by_update = vec![OrderBy {
            field: "lastUpdated".into(),
            desc: false,
        }];
        assert_eq!(sorted(by_update), vec![uid(2), uid(3), uid(1)]);
        let unknown = vec![OrderBy {
            field: "nothing".into(),
            desc: true,
        }];
        assert_eq!(sorted(unknown), vec![uid(1), uid(2), uid(3)]);
    }
}
