//! National's metadata and users, as the uplink's pull reads them.
//!
//! Like DHIS2 2.42:
//! - `GET /api/me` for the sync account names its org units; with a staff member's own Basic
//!   credentials it answers that user (401 for a wrong password or a disabled account).
//! - `GET /api/organisationUnits/{uid}?includeDescendants=true` (the subtree) and
//!   `GET /api/organisationUnits?filter=id:in:[…]` (ancestors), each with `programs` and
//!   `dataSets` when asked.
//! - Dependency exports `GET /api/programs/{uid}/metadata.json` and
//!   `/api/dataSets/{uid}/metadata.json`: the object and what it needs, never org units or users;
//!   a program's or data set's `organisationUnits` list every org unit in the country.
//! - `GET /api/organisationUnitLevels`, `/api/userRoles`, `/api/userGroups?filter=id:in:[…]`,
//!   `/api/users?filter=organisationUnits.path:like:UID` (never a password).
//! - `GET /api/deletedObjects?deletedAt=…`.
//! - Every GET under `/api` except `/api/dataValueSets` carries an `ETag` (a hash of the body);
//!   `If-None-Match` with it answers 304 with no body (see [`etag`]).
//!
//! Test-only, outside `/api`: `POST /admin/metadata` (a DHIS2 package: objects upserted and
//! stamped `lastUpdated` now; users may carry a `password`), `POST /admin/metadata/remove`
//! (`{"type": plural, "id": uid}`, recorded in deletedObjects), `POST /admin/sync-user`
//! (`{"organisationUnits": [uid…]}`).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{App, server_date};

/// National's metadata: objects by collection, users with their passwords, deletions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    pub objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// Plain passwords by user UID (a stand-in; DHIS2 never exports them).
    pub passwords: BTreeMap<String, String>,
    pub deleted: Vec<Value>,
    /// The sync account's org units.
    pub sync_org_units: Vec<String>,
}

/// Types a dependency export never carries (DHIS2 references them only).
const NOT_DEPENDENCIES: &[&str] = &[
    "organisationUnits",
    "organisationUnitLevels",
    "users",
    "userGroups",
    "userRoles",
    "programs",
    "dataSets",
];

/// Fields through which a dependant names what it belongs to (a stage its program, a rule
/// action its rule, an option combo its category combo).
const BACK_REFERENCES: &[&str] = &[
    "program",
    "dataSet",
    "programRule",
    "programStage",
    "categoryCombo",
];

impl Meta {
    fn get(&self, plural: &str, uid: &str) -> Option<&Value> {
        self.objects.get(plural)?.get(uid)
    }

    fn find(&self, uid: &str) -> Option<(&str, &Value)> {
        self.objects
            .iter()
            .find_map(|(t, m)| m.get(uid).map(|o| (t.as_str(), o)))
    }

    fn klass(plural: &str) -> String {
        let singular = plural.strip_suffix('s').unwrap_or(plural);
        let mut c = singular.chars();
        let upper = c.next().map(|f| f.to_ascii_uppercase()).into_iter();
        upper.chain(c).collect()
    }

    /// `root` (a program or data set) and everything it needs, as a package.
    fn dependencies(&self, root_type: &str, uid: &str) -> Option<Value> {
        let root = self.get(root_type, uid)?;
        let mut chosen: BTreeSet<(String, String)> = BTreeSet::new();
        chosen.insert((root_type.into(), uid.into()));
        let mut queue = vec![root.clone()];
        loop {
            while let Some(v) = queue.pop() {
                let mut ids = Vec::new();
                ref_ids(&v, &mut ids, true);
                for id in ids {
                    if let Some((t, o)) = self.find(&id)
                        && !NOT_DEPENDENCIES.contains(&t)
                        && chosen.insert((t.into(), id.clone()))
                    {
                        queue.push(o.clone());
                    }
                }
            }
            // Dependants that point back at something chosen.
            let ids: BTreeSet<&str> = chosen.iter().map(|(_, id)| id.as_str()).collect();
            let mut more = Vec::new();
            for (t, objs) in &self.objects {
                if NOT_DEPENDENCIES.contains(&t.as_str()) {
                    continue;
                }
                for (id, o) in objs {
                    let points_back = BACK_REFERENCES.iter().any(|f| {
                        o.get(*f)
                            .and_then(|r| r.get("id"))
                            .and_then(Value::as_str)
                            .is_some_and(|r| ids.contains(r))
                    });
                    if points_back && !chosen.contains(&(t.clone(), id.clone())) {
                        more.push((t.clone(), id.clone(), o.clone()));
                    }
                }
            }
            if more.is_empty() {
                break;
            }
            for (t, id, o) in more {
                chosen.insert((t, id));
                queue.push(o);
            }
        }
        let mut pkg = Map::new();
        for (t, id) in chosen {
            if let Some(o) = self.get(&t, &id) {
                let list = pkg.entry(t).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = list {
                    a.push(o.clone());
                }
            }
        }
        pkg.insert(
            "system".into(),
            json!({"version": "2.42.3", "date": server_date()}),
        );
        Some(Value::Object(pkg))
    }

    /// Users with an org unit (any of the three) under `root`, as DHIS2 lists them.
    fn users_under(&self, root: &str) -> Vec<Value> {
        let path_has = |id: &str| {
            self.get("organisationUnits", id)
                .and_then(|o| o.get("path"))
                .and_then(Value::as_str)
                .is_some_and(|p| p.split('/').any(|s| s == root))
        };
        self.objects
            .get("users")
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|u| {
                let mut ids = Vec::new();
                for f in ["organisationUnits", "dataViewOrganisationUnits"] {
                    if let Some(v) = u.get(f) {
                        ref_ids(v, &mut ids, false);
                    }
                }
                ids.iter().any(|id| path_has(id))
            })
            .cloned()
            .collect()
    }

    fn upsert(&mut self, pkg: &Map<String, Value>) {
        let now = server_date();
        for (t, list) in pkg {
            let Some(list) = list.as_array() else {
                continue;
            };
            for o in list {
                let Some(id) = o.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let mut o = o.clone();
                if let Some(m) = o.as_object_mut() {
                    m.insert("lastUpdated".into(), Value::from(now.clone()));
                    if let Some(Value::String(p)) = m.remove("password") {
                        if self.passwords.get(id) != Some(&p) {
                            m.insert("passwordLastUpdated".into(), Value::from(now.clone()));
                        } else if let Some(old) = self
                            .get("users", id)
                            .and_then(|u| u.get("passwordLastUpdated"))
                        {
                            m.insert("passwordLastUpdated".into(), old.clone());
                        }
                        self.passwords.insert(id.to_string(), p);
                    }
                }
                self.objects
                    .entry(t.clone())
                    .or_default()
                    .insert(id.to_string(), o);
            }
        }
        self.fix_paths();
    }

    /// `path` and `level` of every org unit, from the parents.
    fn fix_paths(&mut self) {
        let Some(ous) = self.objects.get("organisationUnits") else {
            return;
        };
        let parent: BTreeMap<String, Option<String>> = ous
            .iter()
            .map(|(id, o)| {
                let p = o.pointer("/parent/id").and_then(Value::as_str);
                (id.clone(), p.map(str::to_string))
            })
            .collect();
        let mut paths = BTreeMap::new();
        for id in parent.keys() {
            let mut chain = vec![id.clone()];
            while let Some(Some(p)) = parent.get(chain.last().map_or("", String::as_str)) {
                if chain.contains(p) || chain.len() > 32 {
                    break;
                }
                chain.push(p.clone());
            }
            chain.reverse();
            paths.insert(id.clone(), (format!("/{}", chain.join("/")), chain.len()));
        }
        if let Some(ous) = self.objects.get_mut("organisationUnits") {
            for (id, (path, level)) in paths {
                if let Some(o) = ous.get_mut(&id).and_then(Value::as_object_mut) {
                    o.insert("path".into(), Value::from(path));
                    o.insert("level".into(), Value::from(level));
                }
            }
        }
    }

    /// An org unit with the programs and data sets assigned to it, as `fields=…,programs[id],
    /// dataSets[id]` shows them.
    fn org_unit_view(&self, o: &Value, assigned: bool) -> Value {
        let mut o = o.clone();
        let id = o.get("id").and_then(Value::as_str).map(str::to_string);
        if assigned && let (Some(m), Some(id)) = (o.as_object_mut(), id) {
            for t in ["programs", "dataSets"] {
                let ids: Vec<Value> = self
                    .objects
                    .get(t)
                    .into_iter()
                    .flat_map(|m| m.iter())
                    .filter(|(_, p)| {
                        let mut ous = Vec::new();
                        if let Some(v) = p.get("organisationUnits") {
                            ref_ids(v, &mut ous, false);
                        }
                        ous.contains(&id)
                    })
                    .map(|(pid, _)| json!({"id": pid}))
                    .collect();
                m.insert(t.into(), Value::Array(ids));
            }
        }
        o
    }
}

/// Every `{"id": …}` reference inside `v` (`skip_top` leaves out `v`'s own id).
fn ref_ids(v: &Value, out: &mut Vec<String>, skip_top: bool) {
    match v {
        Value::Object(m) => {
            if !skip_top && let Some(Value::String(id)) = m.get("id") {
                out.push(id.clone());
            }
            for (k, c) in m {
                if k != "id" && k != "sharing" {
                    ref_ids(c, out, false);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| ref_ids(c, out, false)),
        _ => {}
    }
}

/// `filter=id:in:[a,b]` → the ids.
fn ids_in_filter(q: &BTreeMap<String, String>) -> Vec<String> {
    q.get("filter")
        .and_then(|f| f.strip_prefix("id:in:["))
        .and_then(|f| f.strip_suffix(']'))
        .map(|f| f.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

fn wants_assignments(q: &BTreeMap<String, String>) -> bool {
    q.get("fields").is_some_and(|f| f.contains("programs["))
}

pub async fn org_unit(
    State(app): State<App>,
    Path(uid): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/organisationUnits/{uid}", &headers) {
        return r;
    }
    let i = app.lock();
    let m = &i.data.meta;
    let Some(root) = m.get("organisationUnits", &uid) else {
        return not_found("OrganisationUnit", &uid);
    };
    let assigned = wants_assignments(&q);
    if q.get("includeDescendants").map(String::as_str) != Some("true") {
        return axum::Json(m.org_unit_view(root, assigned)).into_response();
    }
    let list: Vec<Value> = m
        .objects
        .get("organisationUnits")
        .into_iter()
        .flat_map(|o| o.values())
        .filter(|o| {
            o.get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| p.split('/').any(|s| s == uid))
        })
        .map(|o| m.org_unit_view(o, assigned))
        .collect();
    axum::Json(json!({"organisationUnits": list})).into_response()
}

/// `GET /api/{type}?filter=id:in:[…]` (or every object without a filter), `{type: […]}`.
pub async fn list(
    State(app): State<App>,
    Path(plural): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate(&format!("GET /api/{plural}"), &headers) {
        return r;
    }
    let i = app.lock();
    let m = &i.data.meta;
    if plural == "users" {
        let root = q
            .get("filter")
            .and_then(|f| f.strip_prefix("organisationUnits.path:like:"));
        let Some(root) = root else {
            return super::bad_request("this stand-in lists users by organisationUnits.path only");
        };
        let users: Vec<Value> = m
            .users_under(root)
            .into_iter()
            .map(|mut u| {
                if let Some(o) = u.as_object_mut() {
                    o.remove("password");
                }
                u
            })
            .collect();
        return axum::Json(json!({"users": users})).into_response();
    }
    if !matches!(
        plural.as_str(),
        "organisationUnits" | "organisationUnitLevels" | "userRoles" | "userGroups"
    ) {
        return super::bad_request(&format!("this stand-in does not list {plural}"));
    }
    let wanted = ids_in_filter(&q);
    let assigned = wants_assignments(&q);
    let list: Vec<Value> = m
        .objects
        .get(&plural)
        .into_iter()
        .flat_map(|o| o.iter())
        .filter(|(id, _)| wanted.is_empty() || wanted.contains(id))
        .map(|(_, o)| match plural.as_str() {
            "organisationUnits" => m.org_unit_view(o, assigned),
            // DHIS2 lists a group's members only when asked; the box never asks.
            "userGroups" => {
                let mut o = o.clone();
                if let Some(g) = o.as_object_mut() {
                    g.remove("users");
                }
                o
            }
            _ => o.clone(),
        })
        .collect();
    axum::Json(json!({ plural: list })).into_response()
}

/// `GET /api/{programs|dataSets}/{uid}/metadata.json`.
pub async fn dependency_export(
    State(app): State<App>,
    Path((plural, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate(&format!("GET /api/{plural}/{{uid}}/metadata"), &headers) {
        return r;
    }
    let uid = file.strip_suffix("/metadata.json").unwrap_or(&file);
    if !matches!(plural.as_str(), "programs" | "dataSets") {
        return not_found(&plural, uid);
    }
    match app.lock().data.meta.dependencies(&plural, uid) {
        Some(pkg) => axum::Json(pkg).into_response(),
        None => not_found(&Meta::klass(&plural), uid),
    }
}

pub async fn deleted_objects(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/deletedObjects", &headers) {
        return r;
    }
    let since = q.get("deletedAt").cloned().unwrap_or_default();
    let list: Vec<Value> = app
        .lock()
        .data
        .meta
        .deleted
        .iter()
        .filter(|d| d.get("deletedAt").and_then(Value::as_str).unwrap_or("") >= since.as_str())
        .cloned()
        .collect();
    axum::Json(json!({"deletedObjects": list})).into_response()
}

/// `GET /api/metadata?fields=id&filter=lastUpdated:ge:T&<type>=true…`: the ids of objects of
/// the asked types changed since T, with the `system` block (its date makes every answer new).
/// With `<type>:filter=id:in:[…]` instead: those objects whole (a metadata export by id).
pub async fn changes(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/metadata", &headers) {
        return r;
    }
    if q.keys().any(|k| k.ends_with(":filter")) {
        return by_id(&app, &q);
    }
    let Some(since) = q
        .get("filter")
        .and_then(|f| f.strip_prefix("lastUpdated:ge:"))
    else {
        return super::bad_request("this stand-in answers /api/metadata for lastUpdated:ge only");
    };
    let i = app.lock();
    let mut out = Map::new();
    out.insert(
        "system".into(),
        json!({"version": "2.42.3", "date": server_date()}),
    );
    for (t, objs) in &i.data.meta.objects {
        if q.get(t).map(String::as_str) != Some("true") {
            continue;
        }
        let ids: Vec<Value> = objs
            .iter()
            .filter(|(_, o)| o.get("lastUpdated").and_then(Value::as_str).unwrap_or("") >= since)
            .map(|(id, _)| json!({"id": id}))
            .collect();
        out.insert(t.clone(), Value::Array(ids));
    }
    axum::Json(Value::Object(out)).into_response()
}

/// A metadata export of the objects `<type>:filter=id:in:[a,b]` names, for each `<type>=true`.
fn by_id(app: &App, q: &BTreeMap<String, String>) -> Response {
    let i = app.lock();
    let mut out = Map::new();
    out.insert(
        "system".into(),
        json!({"version": "2.42.3", "date": server_date()}),
    );
    for (key, filter) in q {
        let Some(t) = key.strip_suffix(":filter") else {
            continue;
        };
        if q.get(t).map(String::as_str) != Some("true") {
            continue;
        }
        let Some(ids) = filter
            .strip_prefix("id:in:[")
            .and_then(|f| f.strip_suffix(']'))
        else {
            return super::bad_request(&format!("this stand-in filters {t} by id:in only"));
        };
        let list: Vec<Value> = ids
            .split(',')
            .filter_map(|id| i.data.meta.get(t, id).cloned())
            .collect();
        out.insert(t.to_string(), Value::Array(list));
    }
    axum::Json(Value::Object(out)).into_response()
}

/// `/api/me` with a staff member's own Basic credentials: that user, or 401.
pub fn me_as_staff(app: &App, headers: &HeaderMap) -> Option<Response> {
    use base64::Engine as _;
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.strip_prefix("Basic ")?)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    let mut i = app.lock();
    *i.data
        .requests
        .entry("GET /api/me (staff)".into())
        .or_default() += 1;
    let m = &i.data.meta;
    let user = m
        .objects
        .get("users")?
        .values()
        .find(|u| u.get("username").and_then(Value::as_str) == Some(username))?;
    let id = user.get("id").and_then(Value::as_str).unwrap_or("");
    let disabled = user.get("disabled").and_then(Value::as_bool) == Some(true);
    if disabled || m.passwords.get(id).map(String::as_str) != Some(password) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"httpStatus": "Unauthorized", "httpStatusCode": 401, "status": "ERROR", "message": "Unauthorized"})),
            )
                .into_response(),
        );
    }
    Some(axum::Json(json!({"id": id, "username": username})).into_response())
}

/// `--demo`: national as the README's walk-through meets it: the demo's metadata, a national
/// nurse at clinic A (`wanjiru` / `Wanjiru123`) and the sync account on clinic A.
pub fn seed_demo(meta: &mut Meta) {
    if let Value::Object(pkg) = clinicbox_tests::clinic::demo_package() {
        meta.upsert(&pkg);
    }
    let nurse = json!({"users": [{"id": "cbUserNurse", "username": "wanjiru",
        "password": "Wanjiru123", "firstName": "Wanjiru", "surname": "Kamau",
        "userRoles": [{"id": "cbRoleCaptr"}], "organisationUnits": [{"id": "cbClinicA01"}],
        "dataViewOrganisationUnits": [{"id": "cbClinicA01"}],
        "teiSearchOrganisationUnits": [{"id": "cbClinicA01"}]}]});
    if let Value::Object(pkg) = nurse {
        meta.upsert(&pkg);
    }
    meta.sync_org_units = vec!["cbClinicA01".into()];
}

pub async fn admin_metadata(
    State(app): State<App>,
    axum::Json(pkg): axum::Json<Value>,
) -> Response {
    let Some(pkg) = pkg.as_object() else {
        return super::bad_request("a package is a JSON object");
    };
    let mut i = app.lock();
    i.data.meta.upsert(pkg);
    App::save(&i);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
pub struct Removal {
    #[serde(rename = "type")]
    plural: String,
    id: String,
}

pub async fn admin_remove(State(app): State<App>, axum::Json(r): axum::Json<Removal>) -> Response {
    let mut i = app.lock();
    let m = &mut i.data.meta;
    if m.objects
        .get_mut(&r.plural)
        .and_then(|o| o.remove(&r.id))
        .is_none()
    {
        return not_found(&r.plural, &r.id);
    }
    // Like DHIS2, the object leaves every collection that listed it (an option its set).
    let now = server_date();
    for objs in m.objects.values_mut() {
        for o in objs.values_mut() {
            let Some(map) = o.as_object_mut() else {
                continue;
            };
            let mut touched = false;
            for v in map.values_mut() {
                if let Value::Array(list) = v {
                    let before = list.len();
                    list.retain(|e| e.get("id").and_then(Value::as_str) != Some(r.id.as_str()));
                    touched |= list.len() != before;
                }
            }
            if touched {
                map.insert("lastUpdated".into(), Value::from(now.clone()));
            }
        }
    }
    m.deleted.push(json!({
        "klass": Meta::klass(&r.plural),
        "uid": r.id, "deletedAt": server_date(), "deletedBy": "admin"
    }));
    App::save(&i);
    StatusCode::NO_CONTENT.into_response()
}

pub async fn admin_sync_user(State(app): State<App>, axum::Json(v): axum::Json<Value>) -> Response {
    let ous = v
        .get("organisationUnits")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut i = app.lock();
    i.data.meta.sync_org_units = ous;
    App::save(&i);
    StatusCode::NO_CONTENT.into_response()
}

fn not_found(what: &str, uid: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            json!({"httpStatus": "Not Found", "httpStatusCode": 404, "status": "ERROR",
            "message": format!("{what} with id {uid} could not be found.")}),
        ),
    )
        .into_response()
}

/// DHIS2's shallow ETag filter: a GET under `/api` (not `/api/dataValueSets`) gets an `ETag`
/// from its body; a matching `If-None-Match` gets 304 and no body. National still builds the
/// whole answer, as DHIS2 does.
pub async fn etag(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let eligible = req.method() == Method::GET
        && path.starts_with("/api/")
        && !path.starts_with("/api/dataValueSets")
        && !path.starts_with("/api/fileResources");
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let resp = next.run(req).await;
    if !eligible || resp.status() != StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, super::MAX_BODY * 4).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let tag = format!("\"0{}\"", super::fnv_hex(&bytes));
    if if_none_match.as_ref().and_then(|v| v.to_str().ok()) == Some(tag.as_str()) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&tag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    if let Ok(v) = HeaderValue::from_str(&tag) {
        parts.headers.insert(header::ETAG, v);
    }
    Response::from_parts(parts, Body::from(Bytes::from(bytes.to_vec())))
}
