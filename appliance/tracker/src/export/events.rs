//! `GET /api/tracker/events` and `GET /api/tracker/events/{uid}`.

use axum::Extension;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use clinicbox_api::error::json_response;
use clinicbox_api::fields::{NoResolve, project};
use clinicbox_api::query::Query;
use clinicbox_api::{ApiError, ApiResult, ApiState, AuthUser};
use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{EnrollmentStatus, EventStatus};
use clinicbox_store::Collection;
use serde_json::Value;

use super::filters::ValueFilter;
use super::listing::{page_response, relationships, renderer};
use super::render::to_map;
use super::tracked_entities::{live_rels, te_readable};
use super::{
    OrgUnitSelection, Paging, SortKey, compare_by, date_param, fields, order, ts_ms, uid_list,
    wants,
};
use crate::Tracker;
use crate::catalog::{Catalog, EvMeta};
use crate::meta::data_read;
use crate::model::StoredEvent;

const DEFAULT_FIELDS: &str = "*,!relationships";

fn enum_of<T: for<'de> serde::Deserialize<'de>>(
    q: &Query,
    keys: &[&str],
) -> Result<Option<T>, ApiError> {
    for k in keys {
        if let Some(v) = q.get(k).filter(|v| !v.is_empty()) {
            return serde_json::from_value(Value::from(v.to_ascii_uppercase()))
                .map(Some)
                .map_err(|_| {
                    ApiError::BadRequest(format!("Value '{v}' is not valid for parameter {k}"))
                });
        }
    }
    Ok(None)
}

/// Whether the user may read this event: program sharing, then for tracker events the
/// entity's ownership rule (as DHIS2 2.41+: a visit made at another clinic is read wherever the
/// patient is owned now), for events without registration the org unit in the search scope.
fn readable(user: &AuthUser, t: &Tracker, cat: &Catalog, m: &EvMeta) -> bool {
    let Some(prog) = user.snapshot.get("programs", m.program.as_str()) else {
        return false;
    };
    if !data_read(user, prog) {
        return false;
    }
    match m.te.and_then(|te| cat.tes.get(&te).map(|tm| (te, tm))) {
        Some((te, tm)) => te_readable(user, t, tm, te, Some((m.program.as_str(), prog))).is_ok(),
        None => user.can_search_in(m.org_unit.as_str()),
    }
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
    let uid_of = |k: &str| -> Result<Option<Uid>, ApiError> {
        match q.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => Uid::try_from(v)
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("Invalid UID for {k}: {v}"))),
        }
    };
    let program = uid_of("program")?;
    if let Some(p) = program {
        if !user.snapshot.contains("programs", p.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "Program is specified but does not exist: {p}"
            )));
        }
    }
    let stage = uid_of("programStage")?;
    let te = uid_of("trackedEntity")?;
    let status: Option<EventStatus> = enum_of(&q, &["status"])?;
    let en_status: Option<EnrollmentStatus> = enum_of(&q, &["programStatus", "enrollmentStatus"])?;
    let events = uid_list(&q, &["events", "event"]);
    let enrollments = uid_list(&q, &["enrollments", "enrollment"]);
    let occurred_after = date_param(&state, &q, &["occurredAfter", "startDate"])?;
    let occurred_before = date_param(&state, &q, &["occurredBefore", "endDate"])?;
    let scheduled_after = date_param(&state, &q, &["scheduledAfter"])?;
    let scheduled_before = date_param(&state, &q, &["scheduledBefore"])?;
    let updated_after = date_param(&state, &q, &["updatedAfter", "lastUpdatedStartDate"])?;
    let updated_before = date_param(&state, &q, &["updatedBefore", "lastUpdatedEndDate"])?;
    let include_deleted = q.bool("includeDeleted", false)?;
    let filters: Vec<ValueFilter> = q
        .all("filter")
        .filter(|f| !f.is_empty())
        .map(ValueFilter::parse)
        .collect::<Result<_, _>>()?;
    let mut candidates: Vec<(Uid, EvMeta)> = {
        let cat = t.catalog().read().await;
        let pool: Vec<Uid> = match &events {
            Some(list) => list.iter().copied().collect(),
            None => cat.events.keys().copied().collect(),
        };
        let mut out = Vec::new();
        for u in pool {
            let Some(m) = cat.events.get(&u) else {
                continue;
            };
            if m.stamps.deleted && !include_deleted {
                continue;
            }
            if program.is_some_and(|p| p != m.program)
                || stage.is_some_and(|s| s != m.stage)
                || te.is_some_and(|t| Some(t) != m.te)
                || status.is_some_and(|s| s != m.status)
                || enrollments
                    .as_ref()
                    .is_some_and(|l| m.enrollment.is_none_or(|e| !l.contains(&e)))
            {
                continue;
            }
            if let Some(s) = en_status {
                let ok = m
                    .enrollment
                    .and_then(|e| cat.enrollments.get(&e))
                    .is_some_and(|em| em.status == s);
                if !ok {
                    continue;
                }
            }
            let in_range = |v: Option<i64>, a: Option<i64>, b: Option<i64>| match v {
                Some(v) => a.is_none_or(|a| v >= a) && b.is_none_or(|b| v <= b),
                None => a.is_none() && b.is_none(),
            };
            let occurred = m.occurred_at.map(|o| ts_ms(&state, &o));
            let scheduled = m.scheduled_at.map(|o| ts_ms(&state, &o));
            let updated = i64::try_from(m.stamps.updated_ms).unwrap_or(i64::MAX);
            if !in_range(occurred, occurred_after, occurred_before)
                || !in_range(scheduled, scheduled_after, scheduled_before)
                || !in_range(Some(updated), updated_after, updated_before)
            {
                continue;
            }
            if !sel.covers(&user, m.org_unit) || !readable(&user, &t, &cat, m) {
                continue;
            }
            out.push((u, m.clone()));
        }
        out
    };
    let order = if order.is_empty() {
        vec![super::OrderBy {
            field: "createdAt".into(),
            desc: true,
        }]
    } else {
        order
    };
    candidates.sort_by(|a, b| {
        compare_by(
            a,
            b,
            &order,
            |(u, m), f| match f {
                "createdAt" | "createdAtClient" | "created" => {
                    Some(SortKey::Num(m.stamps.created_ms as i64))
                }
                "updatedAt" | "updatedAtClient" | "lastUpdated" => {
                    Some(SortKey::Num(m.stamps.updated_ms as i64))
                }
                "occurredAt" | "eventDate" => {
                    m.occurred_at.map(|o| SortKey::Num(ts_ms(&state, &o)))
                }
                "scheduledAt" | "dueDate" => {
                    m.scheduled_at.map(|o| SortKey::Num(ts_ms(&state, &o)))
                }
                "event" => Some(SortKey::Text(u.to_string())),
                "orgUnit" => Some(SortKey::Text(m.org_unit.to_string())),
                _ => None,
            },
            |(u, _)| *u,
        )
    });
    let read = t.store().read()?;
    let uids: Vec<Uid> = if filters.is_empty() {
        candidates.iter().map(|(u, _)| *u).collect()
    } else {
        let mut hits = Vec::new();
        for (u, _) in &candidates {
            let Some(rec) = read.get(Collection::EVENTS, u.as_str())? else {
                continue;
            };
            let Ok(ev) = rec.json::<StoredEvent>() else {
                continue;
            };
            let ok = filters.iter().all(|f| {
                f.matches(
                    ev.data_values
                        .iter()
                        .find(|d| d.data_element == f.uid.as_str())
                        .map(|d| d.value.as_str()),
                )
            });
            if ok {
                hits.push(*u);
            }
        }
        hits
    };
    let total = uids.len();
    let page = paging.slice(&uids);
    let rels = if wants(&fields, "relationships") {
        let cat = t.catalog().read().await;
        page.iter()
            .map(|u| (*u, live_rels(&cat, *u, include_deleted)))
            .collect()
    } else {
        std::collections::HashMap::new()
    };
    let renderer = renderer(&state, &user, &read);
    let mut items = Vec::with_capacity(page.len());
    for u in &page {
        let Some(rec) = read.get(Collection::EVENTS, u.as_str())? else {
            continue;
        };
        let mut ev = renderer.event(u.as_str(), &rec)?;
        ev.relationships.extend(relationships(
            &renderer,
            rels.get(u).map(Vec::as_slice).unwrap_or(&[]),
        )?);
        let mut map = to_map(&ev)?;
        map.entry("relationships")
            .or_insert(Value::Array(Vec::new()));
        items.push(project(&map, &fields, &NoResolve));
    }
    Ok(page_response(
        &state, &headers, &uri, "events", items, &paging, total,
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
    let not_found = || ApiError::NotFound(format!("Event with id {uid} could not be found."));
    let u = Uid::try_from(uid.as_str()).map_err(|_| not_found())?;
    let rels = {
        let cat = t.catalog().read().await;
        let m = cat.events.get(&u).ok_or_else(not_found)?;
        if m.stamps.deleted || !readable(&user, &t, &cat, m) {
            return Err(not_found());
        }
        live_rels(&cat, u, false)
    };
    let read = t.store().read()?;
    let renderer = renderer(&state, &user, &read);
    let rec = read.get(Collection::EVENTS, &uid)?.ok_or_else(not_found)?;
    let mut ev = renderer.event(&uid, &rec)?;
    if wants(&fields, "relationships") {
        ev.relationships.extend(relationships(&renderer, &rels)?);
    }
    let map = to_map(&ev)?;
    Ok(json_response(
        StatusCode::OK,
        &project(&map, &fields, &NoResolve),
    ))
}

/// Whether an event is readable, for the file download paths.
pub async fn event_readable(t: &Tracker, user: &AuthUser, u: Uid) -> bool {
    let cat = t.catalog().read().await;
    cat.events
        .get(&u)
        .is_some_and(|m| !m.stamps.deleted && readable(user, t, &cat, m))
}
