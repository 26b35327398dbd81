//! `GET /api/tracker/enrollments` and `GET /api/tracker/enrollments/{uid}`.

use axum::Extension;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use clinicbox_api::ApiState;
use clinicbox_api::fields::{NoResolve, project};
use clinicbox_api::query::Query;
use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{Enrollment, EnrollmentStatus};
use clinicbox_store::{Collection, ReadView};
use clinicbox_web::error::json_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde_json::Value;

use super::listing::{not_found, page_response, relationships, renderer, requested};
use super::render::{Renderer, to_map};
use super::tracked_entities::{live_rels, te_readable};
use super::{
    OrgUnitSelection, Paging, SortKey, child, date_param, fields, order, sort_by_order, stamp_key,
    uid_list, wants,
};
use crate::Tracker;
use crate::catalog::{Catalog, EnMeta};
use crate::meta::data_read;
use crate::model::StoredTrackedEntity;

const DEFAULT_FIELDS: &str = "*,!relationships,!events,!attributes";

fn readable(user: &AuthUser, t: &Tracker, cat: &Catalog, m: &EnMeta) -> bool {
    let Some(prog) = user.snapshot.get("programs", m.program.as_str()) else {
        return false;
    };
    if !data_read(user, prog) {
        return false;
    }
    cat.tes
        .get(&m.te)
        .is_some_and(|tm| te_readable(user, t, tm, m.te, Some((m.program.as_str(), prog))).is_ok())
}

/// The enrollment with what `fields` asks for (events, attributes, relationships).
struct Parts {
    events: Vec<Uid>,
    rels: Vec<Uid>,
}

fn parts(cat: &Catalog, u: Uid, include_deleted: bool) -> Parts {
    Parts {
        events: cat
            .events_of(u)
            .iter()
            .filter(|e| {
                cat.events
                    .get(*e)
                    .is_some_and(|m| include_deleted || !m.stamps.deleted)
            })
            .copied()
            .collect(),
        rels: live_rels(cat, u, include_deleted),
    }
}

fn render(
    r: &Renderer<'_>,
    read: &ReadView,
    u: Uid,
    parts: &Parts,
    fields: &clinicbox_api::fields::FieldList,
) -> Result<Option<Value>, ApiError> {
    let Some(rec) = read.get(Collection::ENROLLMENTS, u.as_str())? else {
        return Ok(None);
    };
    let te = if wants(fields, "attributes") {
        let e: Enrollment = r.enrollment(u.as_str(), &rec, None)?;
        e.tracked_entity
            .and_then(|t| read.get(Collection::TRACKED_ENTITIES, &t).ok().flatten())
            .and_then(|rec| rec.json::<StoredTrackedEntity>().ok())
    } else {
        None
    };
    let mut e = r.enrollment(u.as_str(), &rec, te.as_ref())?;
    if wants(fields, "events") {
        let _ = child(fields, "events");
        for ev in &parts.events {
            if let Some(rec) = read.get(Collection::EVENTS, ev.as_str())? {
                e.events.push(r.event(ev.as_str(), &rec)?);
            }
        }
    }
    if wants(fields, "relationships") {
        e.relationships.extend(relationships(r, &parts.rels)?);
    }
    let mut map = to_map(&e)?;
    for k in ["events", "attributes", "relationships", "notes"] {
        map.entry(k).or_insert(Value::Array(Vec::new()));
    }
    Ok(Some(project(&map, fields, &NoResolve)))
}

pub async fn list(
    State(state): State<ApiState>,
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    q: Query,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<Response> {
    let fields = fields(&q, DEFAULT_FIELDS)?;
    let paging = Paging::parse(&q)?;
    let order = order(&q)?;
    let sel = OrgUnitSelection::parse(&q, &user, "orgUnits")?;
    let program = q
        .get("program")
        .filter(|s| !s.is_empty())
        .map(|p| {
            Uid::try_from(p).map_err(|_| ApiError::BadRequest(format!("Invalid program: {p}")))
        })
        .transpose()?;
    let te = q
        .get("trackedEntity")
        .filter(|s| !s.is_empty())
        .map(|p| {
            Uid::try_from(p)
                .map_err(|_| ApiError::BadRequest(format!("Invalid trackedEntity: {p}")))
        })
        .transpose()?;
    let list = uid_list(&q, &["enrollments", "enrollment"]);
    let status: Option<EnrollmentStatus> = match q.get("status").or_else(|| q.get("programStatus"))
    {
        None | Some("") => None,
        Some(v) => Some(
            serde_json::from_value(Value::from(v.to_ascii_uppercase()))
                .map_err(|_| ApiError::BadRequest(format!("Value '{v}' is not a valid status")))?,
        ),
    };
    let updated_after = date_param(&state, &q, &["updatedAfter"])?;
    let include_deleted = q.bool("includeDeleted", false)?;
    if program.is_none() && te.is_none() && list.is_none() {
        return Err(ApiError::BadRequest(
            "Either `program`, `trackedEntity` or `enrollments` should be specified".into(),
        ));
    }
    let (mut candidates, parts_of) = {
        let cat = t.catalog().read().await;
        let pool: Vec<Uid> = match (&list, te) {
            (Some(l), _) => l.iter().copied().collect(),
            (None, Some(te)) => cat.enrollments_of(te).to_vec(),
            _ => cat.enrollments.keys().copied().collect(),
        };
        let mut out: Vec<(Uid, EnMeta)> = Vec::new();
        for u in pool {
            let Some(m) = cat.enrollments.get(&u) else {
                continue;
            };
            if (m.stamps.deleted && !include_deleted)
                || program.is_some_and(|p| p != m.program)
                || te.is_some_and(|t| t != m.te)
                || status.is_some_and(|s| s != m.status)
                || updated_after.is_some_and(|a| (m.stamps.updated_ms as i64) < a)
                || !sel.covers(&user, m.org_unit)
                || !readable(&user, &t, &cat, m)
            {
                continue;
            }
            out.push((u, m.clone()));
        }
        let parts_of: std::collections::HashMap<Uid, Parts> = out
            .iter()
            .map(|(u, _)| (*u, parts(&cat, *u, include_deleted)))
            .collect();
        (out, parts_of)
    };
    sort_by_order(
        &mut candidates,
        order,
        |(u, m), f| {
            stamp_key(&m.stamps, f)
                .or_else(|| (f == "enrollment").then(|| SortKey::Text(u.to_string())))
        },
        |(u, _)| *u,
    );
    let uids: Vec<Uid> = candidates.iter().map(|(u, _)| *u).collect();
    let total = uids.len();
    let page = paging.slice(&uids);
    let read = t.store().read()?;
    let r = renderer(&state, &user, &read);
    let mut items = Vec::new();
    for u in page {
        if let Some(p) = parts_of.get(&u) {
            if let Some(v) = render(&r, &read, u, p, &fields)? {
                items.push(v);
            }
        }
    }
    Ok(page_response(
        &state,
        &headers,
        &uri,
        "enrollments",
        items,
        &paging,
        total,
    ))
}

pub async fn get_one(
    State(state): State<ApiState>,
    Extension(t): Extension<Tracker>,
    Path(uid): Path<String>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let fields = fields(&q, DEFAULT_FIELDS)?;
    let gone = || not_found("Enrollment", &uid);
    let u = requested("Enrollment", &uid)?;
    let p = {
        let cat = t.catalog().read().await;
        let m = cat.enrollments.get(&u).ok_or_else(gone)?;
        if m.stamps.deleted || !readable(&user, &t, &cat, m) {
            return Err(gone());
        }
        parts(&cat, u, false)
    };
    let read = t.store().read()?;
    let r = renderer(&state, &user, &read);
    let v = render(&r, &read, u, &p, &fields)?.ok_or_else(gone)?;
    Ok(json_response(StatusCode::OK, &v))
}
