//! National's tracker data read back, as DHIS2 2.41+ answers it: `GET
//! /api/tracker/trackedEntities` (a program, `orgUnits` with `orgUnitMode=DESCENDANTS`,
//! `updatedAfter`, owned there, with enrollments, events, relationships and `programOwners`
//! nested) and `GET /api/tracker/events`, oldest change
//! first with `page`/`pageSize` and a `pager` (deleted events with `includeDeleted=true`); and
//! `/admin/tracker` and `/admin/tracker/delete`, someone at national (a district officer,
//! another clinic) changing or deleting tracker data.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{App, Data, Obj, Report, Ty, str_of, upsert};

/// `{trackedEntities, enrollments, events}`, flat, applied as national's own change.
pub async fn admin_tracker(State(app): State<App>, axum::Json(v): axum::Json<Value>) -> Response {
    let mut i = app.lock();
    let mut report = Report::default();
    for (t, key, id) in [
        (Ty::Te, "trackedEntities", "trackedEntity"),
        (Ty::En, "enrollments", "enrollment"),
        (Ty::Ev, "events", "event"),
        (Ty::Rel, "relationships", "relationship"),
    ] {
        for o in v.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(uid) = str_of(o, id) {
                upsert(&mut i.data, &mut report, t, uid, o);
            }
        }
    }
    super::App::save(&i);
    StatusCode::NO_CONTENT.into_response()
}

/// Whether `ou` lies at or under one of `roots`.
pub fn under(d: &Data, ou: &str, roots: &[&str]) -> bool {
    let path = d
        .meta
        .objects
        .get("organisationUnits")
        .and_then(|m| m.get(ou))
        .and_then(|o| o.get("path"))
        .and_then(Value::as_str)
        .unwrap_or("");
    roots
        .iter()
        .any(|r| *r == ou || path.split('/').any(|p| p == *r))
}

fn updated(o: &Obj) -> &str {
    o.body
        .get("updatedAt")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The page `page` of `items` (oldest change first), with DHIS2 2.41's `pager`.
fn paged(q: &BTreeMap<String, String>, key: &str, mut items: Vec<(String, Value)>) -> Response {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let size: usize = q
        .get("pageSize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    let page: usize = q
        .get("page")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let list: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|(_, v)| v)
        .collect();
    axum::Json(json!({"pager": {"page": page, "pageSize": size}, key: list})).into_response()
}

fn live(m: &BTreeMap<String, Obj>) -> impl Iterator<Item = (&String, &Obj)> {
    m.iter().filter(|(_, o)| !o.deleted)
}

pub async fn tracked_entities(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/tracker/trackedEntities", &headers) {
        return r;
    }
    let Some(program) = q.get("program") else {
        return super::bad_request("Either `program` or `trackedEntityType` must be specified");
    };
    let since = q.get("updatedAfter").cloned().unwrap_or_default();
    let roots: Vec<&str> = q
        .get("orgUnits")
        .map(|s| s.split(',').collect())
        .unwrap_or_default();
    let i = app.lock();
    let d = &i.data;
    let mut items = Vec::new();
    for (uid, te) in live(&d.tracked_entities) {
        if updated(te) <= since.as_str() {
            continue;
        }
        let enrollments: Vec<Value> = live(&d.enrollments)
            .filter(|(_, e)| {
                str_of(&e.body, "trackedEntity") == Some(uid.as_str())
                    && str_of(&e.body, "program") == Some(program.as_str())
            })
            .map(|(eid, e)| {
                let mut body = e.body.clone();
                body["events"] = Value::Array(
                    live(&d.events)
                        .filter(|(_, ev)| str_of(&ev.body, "enrollment") == Some(eid.as_str()))
                        .map(|(_, ev)| ev.body.clone())
                        .collect(),
                );
                body
            })
            .collect();
        // National's program queries follow the owner, not where the enrollment was made.
        let owned_here =
            super::ownership::owner(d, uid, program).is_some_and(|ou| under(d, ou, &roots));
        if !owned_here {
            continue;
        }
        let mut body = te.body.clone();
        body["enrollments"] = Value::Array(enrollments);
        body["programOwners"] = super::ownership::program_owners(d, uid);
        let names = |r: &Value, side: &str| {
            r.pointer(&format!("/{side}/trackedEntity/trackedEntity"))
                .and_then(Value::as_str)
                == Some(uid.as_str())
        };
        body["relationships"] = Value::Array(
            live(&d.relationships)
                .filter(|(_, r)| names(&r.body, "from") || names(&r.body, "to"))
                .map(|(_, r)| r.body.clone())
                .collect(),
        );
        items.push((updated(te).to_string(), body));
    }
    paged(&q, "trackedEntities", items)
}

/// `{type: trackedEntities|enrollments|events, uid}`: deleted at national (soft, as DHIS2 does).
pub async fn admin_delete(State(app): State<App>, axum::Json(v): axum::Json<Value>) -> Response {
    let t = match str_of(&v, "type") {
        Some("trackedEntities") => Ty::Te,
        Some("enrollments") => Ty::En,
        Some("events") => Ty::Ev,
        _ => return super::bad_request("type is trackedEntities, enrollments or events"),
    };
    let uid = str_of(&v, "uid").unwrap_or("").to_string();
    let mut i = app.lock();
    let Some(o) = t.map(&mut i.data).get_mut(&uid) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    o.deleted = true;
    o.body["updatedAt"] = Value::String(super::server_date());
    super::App::save(&i);
    StatusCode::NO_CONTENT.into_response()
}

pub async fn events(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/tracker/events", &headers) {
        return r;
    }
    let program = q.get("program").cloned().unwrap_or_default();
    let since = q.get("updatedAfter").cloned().unwrap_or_default();
    let root = q.get("orgUnit").cloned().unwrap_or_default();
    let deleted_too = q.get("includeDeleted").map(String::as_str) == Some("true");
    let i = app.lock();
    let d = &i.data;
    let items = d
        .events
        .iter()
        .filter(|(_, ev)| {
            (deleted_too || !ev.deleted)
                && str_of(&ev.body, "program") == Some(program.as_str())
                && updated(ev) > since.as_str()
                && str_of(&ev.body, "orgUnit").is_some_and(|ou| under(d, ou, &[root.as_str()]))
        })
        .map(|(_, ev)| {
            let mut body = ev.body.clone();
            if ev.deleted {
                body["deleted"] = Value::Bool(true);
            }
            (updated(ev).to_string(), body)
        })
        .collect();
    paged(&q, "events", items)
}

/// `GET /api/tracker/trackedEntities/{uid}?program=`: one patient with her `programOwners`.
/// The sync account sees a patient of an open program wherever she is owned (its search scope
/// is national's); a protected or closed program's only where it may write (403
/// `OWNERSHIP_ACCESS_DENIED`, as DHIS2 answers).
pub async fn tracked_entity(
    State(app): State<App>,
    axum::extract::Path(uid): axum::extract::Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/tracker/trackedEntities/{uid}", &headers) {
        return r;
    }
    let i = app.lock();
    let d = &i.data;
    let Some(te) = d.tracked_entities.get(&uid).filter(|o| !o.deleted) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"httpStatus": "Not Found", "httpStatusCode": 404, "status": "ERROR",
                "message": format!("TrackedEntity with id {uid} could not be found.")}),
            ),
        )
            .into_response();
    };
    let program = q.get("program").cloned().unwrap_or_default();
    let level = d
        .meta
        .objects
        .get("programs")
        .and_then(|m| m.get(&program))
        .and_then(|p| str_of(p, "accessLevel"))
        .unwrap_or("OPEN");
    let guarded = matches!(level, "PROTECTED" | "CLOSED");
    if guarded && !super::ownership::sync_may_write(d, &uid, &program) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(
                json!({"httpStatus": "Forbidden", "httpStatusCode": 403, "status": "ERROR",
                "message": "OWNERSHIP_ACCESS_DENIED"}),
            ),
        )
            .into_response();
    }
    let mut body = te.body.clone();
    body["programOwners"] = super::ownership::program_owners(d, &uid);
    if let (Some(fields), Some(map)) = (q.get("fields"), body.as_object_mut()) {
        let wanted = top_level(fields);
        map.retain(|k, _| wanted.iter().any(|w| w == k));
    }
    axum::Json(body).into_response()
}

/// The top-level names of a `fields` filter (`a,b[c,d],e` → a, b, e).
fn top_level(fields: &str) -> Vec<String> {
    let (mut out, mut depth, mut name) = (Vec::new(), 0usize, String::new());
    for c in fields.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => out.push(std::mem::take(&mut name)),
            c if depth == 0 => name.push(c),
            _ => {}
        }
    }
    out.push(name);
    out
}
