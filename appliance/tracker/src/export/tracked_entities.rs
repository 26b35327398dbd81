//! `GET /api/tracker/trackedEntities` (bulk download and online search) and
//! `GET /api/tracker/trackedEntities/{uid}`.

use std::collections::HashSet;

use axum::Extension;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use clinicbox_api::ApiState;
use clinicbox_api::fields::{FieldList, NoResolve, project};
use clinicbox_api::query::Query;
use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::EnrollmentStatus;
use clinicbox_store::{Collection, ReadView};
use clinicbox_web::error::json_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde_json::{Map, Value};

use super::cursor::{Cursor, CursorKey};
use super::filters::ValueFilter;
use super::listing::{not_found, page_response, relationships, renderer, requested};
use super::render::{Renderer, to_map};
use super::{
    OrderBy, OrgUnitSelection, Paging, SortKey, child, date_param, fields, order, sort_by_order,
    stamp_key, ts_ms, uid_list, wants,
};
use crate::Tracker;
use crate::catalog::{Catalog, TeMeta};
use crate::meta::{Meta, data_read};
use crate::model::StoredTrackedEntity;

const DEFAULT_FIELDS: &str = "*,!relationships,!enrollments,!events,!programOwners";

/// Whether the user may read a tracked entity (for `program`, when given): DHIS2's ownership
/// rule (search scope for open programs, capture scope or an override for protected ones).
pub fn te_readable(
    user: &AuthUser,
    t: &Tracker,
    m: &TeMeta,
    te: Uid,
    program: Option<(&str, &Map<String, Value>)>,
) -> Result<(), ApiError> {
    let owner = m.owner(program.and_then(|(p, _)| Uid::try_from(p).ok()));
    let ok = match program {
        Some((p, obj)) => match Meta::access_level(obj) {
            "PROTECTED" => {
                user.can_capture_in(owner.as_str()) || t.has_override(&user.uid, te.as_str(), p)
            }
            "CLOSED" => user.can_capture_in(owner.as_str()),
            _ => user.can_search_in(owner.as_str()),
        },
        None => user.can_search_in(owner.as_str()),
    };
    if ok {
        Ok(())
    } else if user.can_search_in(owner.as_str()) {
        Err(ApiError::Forbidden("OWNERSHIP_ACCESS_DENIED".into()))
    } else {
        Err(ApiError::NotFound(format!(
            "TrackedEntity with id {te} could not be found."
        )))
    }
}

/// [`te_readable`] without overrides: true for every entity `owner` owns.
fn te_readable_by_scope(
    user: &AuthUser,
    owner: Uid,
    program: Option<(&str, &Map<String, Value>)>,
) -> bool {
    match program.map(|(_, obj)| Meta::access_level(obj)) {
        Some("PROTECTED" | "CLOSED") => user.can_capture_in(owner.as_str()),
        _ => user.can_search_in(owner.as_str()),
    }
}

struct Params {
    program: Option<String>,
    tet: Option<String>,
    uids: Option<HashSet<Uid>>,
    status: Option<EnrollmentStatus>,
    follow_up: Option<bool>,
    enrolled_after: Option<i64>,
    enrolled_before: Option<i64>,
    occurred_after: Option<i64>,
    occurred_before: Option<i64>,
    updated_after: Option<i64>,
    updated_before: Option<i64>,
    include_deleted: bool,
    filters: Vec<ValueFilter>,
}

fn parse_status(q: &Query) -> Result<Option<EnrollmentStatus>, ApiError> {
    match q.get("programStatus").or_else(|| q.get("enrollmentStatus")) {
        None | Some("") => Ok(None),
        Some(v) => serde_json::from_value(Value::from(v.to_ascii_uppercase()))
            .map(Some)
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "Value '{v}' is not valid for parameter programStatus. Valid values are: [ACTIVE, COMPLETED, CANCELLED]"
                ))
            }),
    }
}

impl Params {
    fn parse(state: &ApiState, q: &Query) -> Result<Params, ApiError> {
        let non_empty = |k: &str| q.get(k).filter(|s| !s.is_empty()).map(str::to_string);
        let p = Params {
            program: non_empty("program"),
            tet: non_empty("trackedEntityType"),
            uids: uid_list(q, &["trackedEntities", "trackedEntity"]),
            status: parse_status(q)?,
            follow_up: match q.get("followUp") {
                None | Some("") => None,
                Some(_) => Some(q.bool("followUp", false)?),
            },
            enrolled_after: date_param(state, q, &["enrollmentEnrolledAfter", "programStartDate"])?,
            enrolled_before: date_param(state, q, &["enrollmentEnrolledBefore", "programEndDate"])?,
            occurred_after: date_param(state, q, &["enrollmentOccurredAfter"])?,
            occurred_before: date_param(state, q, &["enrollmentOccurredBefore"])?,
            updated_after: date_param(state, q, &["updatedAfter", "lastUpdatedStartDate"])?,
            updated_before: date_param(state, q, &["updatedBefore", "lastUpdatedEndDate"])?,
            include_deleted: q.bool("includeDeleted", false)?,
            filters: ValueFilter::all(q)?,
        };
        if p.program.is_none() && p.tet.is_none() && p.uids.is_none() {
            return Err(ApiError::BadRequest(
                "Either `program`, `trackedEntityType` or `trackedEntities` should be specified"
                    .into(),
            ));
        }
        Ok(p)
    }
}

/// What a listing reads: the program and tracked entity type asked for (known, readable),
/// and the object whose search rules apply.
struct Access<'s> {
    prog: Option<&'s Obj>,
    tet: Option<String>,
    /// The program's search rules, else the type's.
    rules: Option<&'s Obj>,
}

type Obj = Map<String, Value>;

impl<'s> Access<'s> {
    fn check(user: &'s AuthUser, p: &Params) -> Result<Access<'s>, ApiError> {
        let snap = &user.snapshot;
        let prog = match &p.program {
            Some(pu) => Some(snap.get("programs", pu).ok_or_else(|| {
                ApiError::BadRequest(format!("Program is specified but does not exist: {pu}"))
            })?),
            None => None,
        };
        if let (Some(obj), Some(pu)) = (prog, &p.program)
            && !data_read(user, obj)
        {
            return Err(ApiError::Forbidden(format!(
                "User has no access to program: {pu}"
            )));
        }
        let tet = p.tet.clone().or_else(|| prog.and_then(Meta::program_tet));
        let tet_obj = match &tet {
            Some(tu) => Some(snap.get("trackedEntityTypes", tu).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Tracked entity type is specified but does not exist: {tu}"
                ))
            })?),
            None => None,
        };
        if let (Some(obj), Some(tu)) = (tet_obj, &tet)
            && !data_read(user, obj)
        {
            return Err(ApiError::Forbidden(format!(
                "User has no access to tracked entity type: {tu}"
            )));
        }
        Ok(Access {
            prog,
            tet,
            rules: prog.or(tet_obj),
        })
    }

    /// A search outside the capture scope names enough distinct attributes.
    fn enough_attributes(&self, filters: &[ValueFilter]) -> Result<(), ApiError> {
        let Some(min) = self
            .rules
            .and_then(|o| o.get("minAttributesRequiredToSearch"))
            .and_then(Value::as_u64)
        else {
            return Ok(());
        };
        let distinct: HashSet<Uid> = filters.iter().map(|f| f.uid).collect();
        if (distinct.len() as u64) < min {
            return Err(ApiError::Conflict(format!(
                "At least {min} attributes should be mentioned in the search criteria."
            )));
        }
        Ok(())
    }

    /// A search outside the capture scope finds no more than the rules allow.
    fn not_too_many(&self, found: usize) -> Result<(), ApiError> {
        let max = self
            .rules
            .and_then(|o| o.get("maxTeiCountToReturn"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if max > 0 && found as u64 > max {
            return Err(ApiError::Conflict("maxteicountreached".into()));
        }
        Ok(())
    }
}

/// A listed entity: its UID, its catalog entry, and for a program query its enrolment time.
type Candidate = (Uid, TeMeta, Option<i64>);

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
    let p = Params::parse(&state, &q)?;
    let access = Access::check(&user, &p)?;
    // Search rules outside the capture scope: enough attributes, not too many results.
    let searching = !p.filters.is_empty();
    let outside = searching && !sel.within_capture(&user);
    if outside {
        access.enough_attributes(&p.filters)?;
    }
    // A plain download, newest first, reads its page from the creation index: only the
    // entities before the page are counted, and no list of every entity is sorted.
    let window = (!searching && p.uids.is_none() && p.updated_after.is_none())
        .then(|| Window::newest_first(&order, &paging, &user, &q))
        .flatten();
    let (mut candidates, skipped) =
        candidates(&state, &t, &user, &sel, &p, &access, window.as_ref()).await;
    sort_by_order(
        &mut candidates,
        order,
        |(u, m, en), f| {
            stamp_key(&m.stamps, f).or_else(|| match f {
                "trackedEntity" => Some(SortKey::Text(u.to_string())),
                "enrolledAt" => en.map(SortKey::Num),
                "orgUnit" => Some(SortKey::Text(m.org_unit.to_string())),
                _ => None,
            })
        },
        |(u, _, _)| *u,
    );
    let read = t.store().read()?;
    let uids = if searching {
        search_hits(&read, &candidates, &p.filters)?
    } else {
        candidates.iter().map(|(u, _, _)| *u).collect()
    };
    if outside {
        access.not_too_many(uids.len())?;
    }
    let total = skipped + uids.len();
    let page = match &window {
        Some(_) => uids.iter().take(paging.page_size).copied().collect(),
        None => paging.slice(&uids),
    };
    let program_uid = p.program.as_deref().and_then(|s| Uid::try_from(s).ok());
    let renderer = renderer(&state, &user, &read);
    let children = Children::collect(&t, &page, program_uid, p.include_deleted, &fields).await;
    let mut items = Vec::with_capacity(page.len());
    for u in &page {
        let program = p.program.as_deref();
        if let Some(v) = render_te(&renderer, &children, *u, program, &fields, &read)? {
            items.push(v);
        }
    }
    let key = "trackedEntities";
    Ok(page_response(
        &state, &headers, &uri, key, items, &paging, total,
    ))
}

/// The part of the creation order (newest first) a page needs, for a query that needs no
/// total: the entities before it are only counted, and one past it says whether there is a
/// next page.
struct Window {
    page: usize,
    size: usize,
    /// The user and the query without its page: whose download a cursor continues.
    cursor_key: CursorKey,
}

impl Window {
    fn newest_first(
        order: &[OrderBy],
        paging: &Paging,
        user: &AuthUser,
        q: &Query,
    ) -> Option<Window> {
        let newest = match order {
            [] => true,
            [o] => {
                o.desc
                    && matches!(
                        o.field.as_str(),
                        "createdAt" | "createdAtClient" | "created"
                    )
            }
            _ => false,
        };
        if !(newest && paging.paging && !paging.total_pages) {
            return None;
        }
        let pairs = q.pairs();
        let rest = pairs.iter().filter(|(k, _)| k != "page");
        let cursor_key = CursorKey::new(&user.uid, rest.map(|(k, v)| (k.as_str(), v.as_str())));
        Some(Window {
            page: paging.page,
            size: paging.page_size,
            cursor_key,
        })
    }

    fn skip(&self) -> usize {
        (self.page - 1).saturating_mul(self.size)
    }
}

/// The entities the query selects from the catalog (the UIDs asked for, the holders of an
/// exact attribute value, what changed since `updatedAfter`, or all), readable by the user,
/// with their enrolment time. With a `window` (skip, take), only that part of the creation
/// order, and how many were skipped.
async fn candidates(
    state: &ApiState,
    t: &Tracker,
    user: &AuthUser,
    sel: &OrgUnitSelection,
    p: &Params,
    access: &Access<'_>,
    window: Option<&Window>,
) -> (Vec<Candidate>, usize) {
    let program_uid = p.program.as_deref().and_then(|s| Uid::try_from(s).ok());
    let tet_u = access.tet.as_deref().and_then(|s| Uid::try_from(s).ok());
    let cat = t.catalog().read().await;
    let prog_ref = p.program.as_deref().zip(access.prog);
    // Entities share a handful of owners: whether the selection and the user's scope admit
    // an owner is asked once per request, not once per entity (an override is per entity, so
    // only a yes is remembered).
    let mut owners_admitted = HashSet::new();
    let mut admit = |u: Uid| -> Option<(&TeMeta, Option<i64>)> {
        let m = cat.tes.get(&u)?;
        if (m.stamps.deleted && !p.include_deleted) || tet_u.is_some_and(|tu| tu != m.tet) {
            return None;
        }
        let enrolled = match program_uid {
            Some(pu) => enrollment_match(state, &cat, u, pu, p, window.is_none())?,
            None => None,
        };
        let owner = m.owner(program_uid);
        if !owners_admitted.contains(&owner) {
            if !sel.covers(user, owner) || te_readable(user, t, m, u, prog_ref).is_err() {
                return None;
            }
            if te_readable_by_scope(user, owner, prog_ref) {
                owners_admitted.insert(owner);
            }
        }
        let up = i64::try_from(m.stamps.updated_ms).unwrap_or(i64::MAX);
        if p.updated_after.is_some_and(|a| up < a) || p.updated_before.is_some_and(|b| up > b) {
            return None;
        }
        Some((m, enrolled))
    };
    if let Some(w) = window {
        let generation = cat.generation();
        let resume = t.cursors().get(&w.cursor_key, w.page, generation);
        let mut skipped = resume.map_or(0, |c| c.admitted);
        let mut admitted = cat
            .tes_newest_first_from(resume.map(|c| c.from))
            .filter_map(|(ms, u)| admit(u).map(|(m, en)| (ms, u, m, en)));
        skipped += admitted
            .by_ref()
            .take(w.skip().saturating_sub(skipped))
            .count();
        let page: Vec<_> = admitted.take(w.size.saturating_add(1)).collect();
        if let Some((ms, u, _, _)) = page.get(w.size) {
            let next = Cursor {
                generation,
                next_page: w.page + 1,
                from: (*ms, *u),
                admitted: skipped + w.size,
            };
            t.cursors().put(w.cursor_key, next);
        }
        let page = page.into_iter().map(|(_, u, m, en)| (u, m.clone(), en));
        return (page.collect(), skipped);
    }
    let exact = p
        .filters
        .iter()
        .find_map(|f| f.exact().map(|v| (f.uid, v.to_string())));
    // The smallest pool that holds every answer: the UIDs asked for, the holders of an exact
    // value, what changed since `updatedAfter`, or everything.
    let pool: Vec<Uid> = if let Some(list) = &p.uids {
        list.iter().copied().collect()
    } else if let Some((a, v)) = &exact {
        // Under the catalog's lock: the snapshot holds every commit the catalog does.
        match t.store().read().and_then(|read| cat.holders(&read, *a, v)) {
            Ok(h) => h,
            Err(err) => {
                tracing::error!(error = %err, "the attribute-value index could not be read");
                Vec::new()
            }
        }
    } else if let Some(after) = p.updated_after {
        cat.tes_updated_since(u64::try_from(after).unwrap_or(0))
            .collect()
    } else {
        cat.tes.keys().copied().collect()
    };
    let all = pool
        .into_iter()
        .filter_map(|u| admit(u).map(|(m, en)| (u, m.clone(), en)));
    (all.collect(), 0)
}

/// The candidates whose stored attribute values match every filter (they need the decrypted
/// records).
fn search_hits(
    read: &ReadView,
    candidates: &[Candidate],
    filters: &[ValueFilter],
) -> Result<Vec<Uid>, ApiError> {
    let mut hits = Vec::new();
    for (u, _, _) in candidates {
        let Some(rec) = read.get(Collection::TRACKED_ENTITIES, u.as_str())? else {
            continue;
        };
        let Ok(te) = rec.json::<StoredTrackedEntity>() else {
            continue;
        };
        let value = |f: &ValueFilter| te.attribute(f.uid.as_str()).map(|a| a.value.as_str());
        if filters.iter().all(|f| f.matches(value(f))) {
            hits.push(*u);
        }
    }
    Ok(hits)
}

/// For a program query: whether the entity has a matching enrollment, and its enrolment time
/// (0 unless `want_time` or a date filter needs it: turning a date into a time costs a
/// time-zone lookup per enrollment).
fn enrollment_match(
    state: &ApiState,
    cat: &Catalog,
    te: Uid,
    program: Uid,
    p: &Params,
    want_time: bool,
) -> Option<Option<i64>> {
    let dated = p.enrolled_after.is_some()
        || p.enrolled_before.is_some()
        || p.occurred_after.is_some()
        || p.occurred_before.is_some();
    let mut found = None;
    for en in cat.enrollments_of(te) {
        let Some(m) = cat.enrollments.get(en) else {
            continue;
        };
        if m.program != program || (m.stamps.deleted && !p.include_deleted) {
            continue;
        }
        if p.status.is_some_and(|s| s != m.status || m.stamps.deleted) {
            continue;
        }
        if p.follow_up.is_some_and(|f| f != m.follow_up) {
            continue;
        }
        if !want_time && !dated {
            found = Some(0);
            continue;
        }
        let enrolled = ts_ms(state, &m.enrolled_at);
        if p.enrolled_after.is_some_and(|a| enrolled < a)
            || p.enrolled_before.is_some_and(|b| enrolled > b)
        {
            continue;
        }
        let occurred = m.occurred_at.map(|o| ts_ms(state, &o)).unwrap_or(enrolled);
        if p.occurred_after.is_some_and(|a| occurred < a)
            || p.occurred_before.is_some_and(|b| occurred > b)
        {
            continue;
        }
        found = Some(found.map_or(enrolled, |f: i64| f.min(enrolled)));
    }
    found.map(Some)
}

/// The children of the entities on one page, copied from the catalog under its lock.
/// An enrollment with its events and its relationships.
type EnrollmentChildren = (Uid, Vec<Uid>, Vec<Uid>);

pub struct Children {
    enrollments: std::collections::HashMap<Uid, Vec<EnrollmentChildren>>,
    relationships: std::collections::HashMap<Uid, Vec<Uid>>,
    event_relationships: std::collections::HashMap<Uid, Vec<Uid>>,
}

impl Children {
    pub async fn collect(
        t: &Tracker,
        tes: &[Uid],
        program: Option<Uid>,
        include_deleted: bool,
        fields: &FieldList,
    ) -> Children {
        let want_en = wants(fields, "enrollments");
        let want_rel = wants(fields, "relationships") || want_en;
        let cat = t.catalog().read().await;
        let mut enrollments = std::collections::HashMap::new();
        let mut relationships = std::collections::HashMap::new();
        let mut event_relationships = std::collections::HashMap::new();
        for te in tes {
            if want_en {
                let mut list = Vec::new();
                for en in cat.enrollments_of(*te) {
                    let Some(m) = cat.enrollments.get(en) else {
                        continue;
                    };
                    if program.is_some_and(|p| p != m.program)
                        || (m.stamps.deleted && !include_deleted)
                    {
                        continue;
                    }
                    let events = cat
                        .events_of(*en)
                        .iter()
                        .filter(|ev| {
                            cat.events
                                .get(*ev)
                                .is_some_and(|m| include_deleted || !m.stamps.deleted)
                        })
                        .copied()
                        .collect::<Vec<Uid>>();
                    for ev in &events {
                        let rels = live_rels(&cat, *ev, include_deleted);
                        if !rels.is_empty() {
                            event_relationships.insert(*ev, rels);
                        }
                    }
                    let rels = live_rels(&cat, *en, include_deleted);
                    list.push((*en, events, rels));
                }
                enrollments.insert(*te, list);
            }
            if want_rel {
                relationships.insert(*te, live_rels(&cat, *te, include_deleted));
            }
        }
        Children {
            enrollments,
            relationships,
            event_relationships,
        }
    }
}

pub fn live_rels(cat: &Catalog, item: Uid, include_deleted: bool) -> Vec<Uid> {
    cat.relationships_of(item)
        .iter()
        .filter(|r| {
            cat.relationships
                .get(*r)
                .is_some_and(|m| include_deleted || !m.stamps.deleted)
        })
        .copied()
        .collect()
}

fn render_te(
    r: &Renderer<'_>,
    children: &Children,
    u: Uid,
    program: Option<&str>,
    fields: &FieldList,
    read: &ReadView,
) -> Result<Option<Value>, ApiError> {
    let Some(rec) = read.get(Collection::TRACKED_ENTITIES, u.as_str())? else {
        return Ok(None);
    };
    let (mut te, stored) =
        r.tracked_entity(u.as_str(), &rec, program, wants(fields, "attributes"))?;
    if wants(fields, "enrollments") {
        let en_fields = child(fields, "enrollments");
        let want_events = en_fields.is_none_or(|f| wants(f, "events"));
        for (en, events, rels) in children
            .enrollments
            .get(&u)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let Some(rec) = read.get(Collection::ENROLLMENTS, en.as_str())? else {
                continue;
            };
            let mut e = r.enrollment(en.as_str(), &rec, Some(&stored))?;
            if want_events {
                for ev in events {
                    if let Some(rec) = read.get(Collection::EVENTS, ev.as_str())? {
                        let mut event = r.event(ev.as_str(), &rec)?;
                        let ev_rels = children.event_relationships.get(ev);
                        event
                            .relationships
                            .extend(relationships(r, ev_rels.map(Vec::as_slice).unwrap_or(&[]))?);
                        e.events.push(event);
                    }
                }
            }
            e.relationships.extend(relationships(r, rels)?);
            te.enrollments.push(e);
        }
    }
    if wants(fields, "relationships") {
        let rels = children.relationships.get(&u);
        te.relationships
            .extend(relationships(r, rels.map(Vec::as_slice).unwrap_or(&[]))?);
    }
    let mut map = to_map(&te)?;
    // Empty collections are still written, as DHIS2 does.
    for k in [
        "attributes",
        "enrollments",
        "relationships",
        "programOwners",
    ] {
        map.entry(k).or_insert(Value::Array(Vec::new()));
    }
    Ok(Some(project(&map, fields, &NoResolve)))
}

pub async fn get_one(
    State(state): State<ApiState>,
    Extension(t): Extension<Tracker>,
    Path(uid): Path<String>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let fields = fields(&q, DEFAULT_FIELDS)?;
    let program = q
        .get("program")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let include_deleted = q.bool("includeDeleted", false)?;
    let gone = || not_found("TrackedEntity", &uid);
    let u = requested("TrackedEntity", &uid)?;
    let snap = &user.snapshot;
    let prog = match &program {
        Some(p) => Some(snap.get("programs", p).ok_or_else(|| {
            ApiError::BadRequest(format!("Program is specified but does not exist: {p}"))
        })?),
        None => None,
    };
    let program_uid = program.as_deref().and_then(|p| Uid::try_from(p).ok());
    {
        let cat = t.catalog().read().await;
        let m = cat.tes.get(&u).ok_or_else(gone)?;
        if m.stamps.deleted && !include_deleted {
            return Err(gone());
        }
        if let Some(pu) = program_uid {
            let enrolled = cat
                .enrollments_of(u)
                .iter()
                .any(|e| cat.enrollments.get(e).is_some_and(|m| m.program == pu));
            let owned = m.owners.iter().any(|(p, _)| *p == pu);
            if !enrolled && !owned {
                return Err(gone());
            }
        }
        te_readable(&user, &t, m, u, program.as_deref().zip(prog))?;
    }
    let read = t.store().read()?;
    let renderer = renderer(&state, &user, &read);
    let children = Children::collect(&t, &[u], program_uid, include_deleted, &fields).await;
    let v =
        render_te(&renderer, &children, u, program.as_deref(), &fields, &read)?.ok_or_else(gone)?;
    Ok(json_response(StatusCode::OK, &v))
}
