//! `GET /api/tracker/events` and `GET /api/tracker/events/{uid}`.

use std::collections::HashSet;

use axum::Extension;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use clinicbox_api::ApiState;
use clinicbox_api::fields::{NoResolve, project};
use clinicbox_api::query::Query;
use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{EnrollmentStatus, EventStatus};
use clinicbox_store::{Collection, ReadView};
use clinicbox_web::error::json_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde_json::Value;

use super::filters::ValueFilter;
use super::listing::{not_found, page_response, relationships, renderer, requested};
use super::render::to_map;
use super::tracked_entities::{live_rels, te_readable};
use super::{
    OrgUnitSelection, Paging, SortKey, date_param, fields, order, sort_by_order, stamp_key, ts_ms,
    uid_list, wants,
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

/// What an events listing asks for.
struct Params {
    program: Option<Uid>,
    stage: Option<Uid>,
    te: Option<Uid>,
    status: Option<EventStatus>,
    en_status: Option<EnrollmentStatus>,
    events: Option<HashSet<Uid>>,
    enrollments: Option<HashSet<Uid>>,
    occurred: (Option<i64>, Option<i64>),
    scheduled: (Option<i64>, Option<i64>),
    updated: (Option<i64>, Option<i64>),
    include_deleted: bool,
    filters: Vec<ValueFilter>,
}

impl Params {
    fn parse(state: &ApiState, user: &AuthUser, q: &Query) -> Result<Params, ApiError> {
        let uid_of = |k: &str| -> Result<Option<Uid>, ApiError> {
            match q.get(k).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => Uid::try_from(v)
                    .map(Some)
                    .map_err(|_| ApiError::BadRequest(format!("Invalid UID for {k}: {v}"))),
            }
        };
        let program = uid_of("program")?;
        if let Some(p) = program
            && !user.snapshot.contains("programs", p.as_str())
        {
            return Err(ApiError::BadRequest(format!(
                "Program is specified but does not exist: {p}"
            )));
        }
        let date = |keys: &[&str]| date_param(state, q, keys);
        Ok(Params {
            program,
            stage: uid_of("programStage")?,
            te: uid_of("trackedEntity")?,
            status: enum_of(q, &["status"])?,
            en_status: enum_of(q, &["programStatus", "enrollmentStatus"])?,
            events: uid_list(q, &["events", "event"]),
            enrollments: uid_list(q, &["enrollments", "enrollment"]),
            occurred: (
                date(&["occurredAfter", "startDate"])?,
                date(&["occurredBefore", "endDate"])?,
            ),
            scheduled: (date(&["scheduledAfter"])?, date(&["scheduledBefore"])?),
            updated: (
                date(&["updatedAfter", "lastUpdatedStartDate"])?,
                date(&["updatedBefore", "lastUpdatedEndDate"])?,
            ),
            include_deleted: q.bool("includeDeleted", false)?,
            filters: ValueFilter::all(q)?,
        })
    }

    /// The catalog entry matches the identifiers and statuses asked for.
    fn selects(&self, cat: &Catalog, m: &EvMeta) -> bool {
        if self.program.is_some_and(|p| p != m.program)
            || self.stage.is_some_and(|s| s != m.stage)
            || self.te.is_some_and(|t| Some(t) != m.te)
            || self.status.is_some_and(|s| s != m.status)
            || self
                .enrollments
                .as_ref()
                .is_some_and(|l| m.enrollment.is_none_or(|e| !l.contains(&e)))
        {
            return false;
        }
        self.en_status.is_none_or(|s| {
            m.enrollment
                .and_then(|e| cat.enrollments.get(&e))
                .is_some_and(|em| em.status == s)
        })
    }

    /// Its occurred, scheduled and update times fall in the ranges asked for.
    fn in_ranges(&self, state: &ApiState, m: &EvMeta) -> bool {
        let in_range = |v: Option<i64>, (a, b): (Option<i64>, Option<i64>)| match v {
            Some(v) => a.is_none_or(|a| v >= a) && b.is_none_or(|b| v <= b),
            None => a.is_none() && b.is_none(),
        };
        let occurred = m.occurred_at.map(|o| ts_ms(state, &o));
        let scheduled = m.scheduled_at.map(|o| ts_ms(state, &o));
        let updated = i64::try_from(m.stamps.updated_ms).unwrap_or(i64::MAX);
        in_range(occurred, self.occurred)
            && in_range(scheduled, self.scheduled)
            && in_range(Some(updated), self.updated)
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
    let p = Params::parse(&state, &user, &q)?;
    let mut candidates = candidates(&state, &t, &user, &sel, &p).await;
    sort_by_order(
        &mut candidates,
        order,
        |(u, m), f| {
            stamp_key(&m.stamps, f).or_else(|| match f {
                "occurredAt" | "eventDate" => {
                    m.occurred_at.map(|o| SortKey::Num(ts_ms(&state, &o)))
                }
                "scheduledAt" | "dueDate" => {
                    m.scheduled_at.map(|o| SortKey::Num(ts_ms(&state, &o)))
                }
                "event" => Some(SortKey::Text(u.to_string())),
                "orgUnit" => Some(SortKey::Text(m.org_unit.to_string())),
                _ => None,
            })
        },
        |(u, _)| *u,
    );
    let read = t.store().read()?;
    let uids: Vec<Uid> = if p.filters.is_empty() {
        candidates.iter().map(|(u, _)| *u).collect()
    } else {
        value_hits(&read, &candidates, &p.filters)?
    };
    let total = uids.len();
    let page = paging.slice(&uids);
    let rels = if wants(&fields, "relationships") {
        let cat = t.catalog().read().await;
        page.iter()
            .map(|u| (*u, live_rels(&cat, *u, p.include_deleted)))
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
        let listed = rels.get(u).map(Vec::as_slice).unwrap_or(&[]);
        ev.relationships.extend(relationships(&renderer, listed)?);
        let mut map = to_map(&ev)?;
        map.entry("relationships")
            .or_insert(Value::Array(Vec::new()));
        items.push(project(&map, &fields, &NoResolve));
    }
    Ok(page_response(
        &state, &headers, &uri, "events", items, &paging, total,
    ))
}

/// The events the query selects from the catalog, readable by the user in the org units
/// asked for.
async fn candidates(
    state: &ApiState,
    t: &Tracker,
    user: &AuthUser,
    sel: &OrgUnitSelection,
    p: &Params,
) -> Vec<(Uid, EvMeta)> {
    let cat = t.catalog().read().await;
    let pool: Vec<Uid> = match (&p.events, p.updated.0) {
        (Some(list), _) => list.iter().copied().collect(),
        (None, Some(after)) => cat
            .events_updated_since(u64::try_from(after).unwrap_or(0))
            .collect(),
        (None, None) => cat.events.keys().copied().collect(),
    };
    let mut out = Vec::new();
    for u in pool {
        let Some(m) = cat.events.get(&u) else {
            continue;
        };
        if (m.stamps.deleted && !p.include_deleted)
            || !p.selects(&cat, m)
            || !p.in_ranges(state, m)
            || !sel.covers(user, m.org_unit)
            || !readable(user, t, &cat, m)
        {
            continue;
        }
        out.push((u, m.clone()));
    }
    out
}

/// The candidates whose stored data values match every filter.
fn value_hits(
    read: &ReadView,
    candidates: &[(Uid, EvMeta)],
    filters: &[ValueFilter],
) -> Result<Vec<Uid>, ApiError> {
    let mut hits = Vec::new();
    for (u, _) in candidates {
        let Some(rec) = read.get(Collection::EVENTS, u.as_str())? else {
            continue;
        };
        let Ok(ev) = rec.json::<StoredEvent>() else {
            continue;
        };
        let value = |f: &ValueFilter| {
            ev.data_values
                .iter()
                .find(|d| d.data_element == f.uid.as_str())
                .map(|d| d.value.as_str())
        };
        if filters.iter().all(|f| f.matches(value(f))) {
            hits.push(*u);
        }
    }
    Ok(hits)
}

pub async fn get_one(
    State(state): State<ApiState>,
    Extension(t): Extension<Tracker>,
    Path(uid): Path<String>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let fields = fields(&q, DEFAULT_FIELDS)?;
    let gone = || not_found("Event", &uid);
    let u = requested("Event", &uid)?;
    let rels = {
        let cat = t.catalog().read().await;
        let m = cat.events.get(&u).ok_or_else(gone)?;
        if m.stamps.deleted || !readable(&user, &t, &cat, m) {
            return Err(gone());
        }
        live_rels(&cat, u, false)
    };
    let read = t.store().read()?;
    let renderer = renderer(&state, &user, &read);
    let rec = read.get(Collection::EVENTS, &uid)?.ok_or_else(gone)?;
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
