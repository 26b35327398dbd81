//! `GET /api/tracker/relationships?trackedEntity=|enrollment=|event=` and
//! `GET /api/tracker/relationships/{uid}`.

use axum::Extension;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use clinicbox_api::ApiState;
use clinicbox_api::fields::{NoResolve, project};
use clinicbox_api::query::Query;
use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::TrackerType;
use clinicbox_store::Collection;
use clinicbox_web::error::json_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};

use super::listing::{not_found, page_response, renderer, requested};
use super::render::to_map;
use super::tracked_entities::{live_rels, te_readable};
use super::{Paging, fields};
use crate::Tracker;
use crate::catalog::Catalog;

const DEFAULT_FIELDS: &str = "relationship,relationshipType,relationshipName,bidirectional,createdAt,updatedAt,createdAtClient,deleted,from,to";

/// Whether the user may read the object a relationship side points to.
fn item_readable(user: &AuthUser, t: &Tracker, cat: &Catalog, (ty, u): (TrackerType, Uid)) -> bool {
    let te = match ty {
        TrackerType::TrackedEntity => Some(u),
        TrackerType::Enrollment => cat.enrollments.get(&u).map(|m| m.te),
        TrackerType::Event => match cat.events.get(&u) {
            Some(m) => match m.te {
                Some(te) => Some(te),
                None => return user.can_search_in(m.org_unit.as_str()),
            },
            None => None,
        },
        TrackerType::Relationship => None,
    };
    te.and_then(|te| cat.tes.get(&te).map(|m| (te, m)))
        .is_some_and(|(te, m)| te_readable(user, t, m, te, None).is_ok())
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
    let include_deleted = q.bool("includeDeleted", false)?;
    let item = ["trackedEntity", "enrollment", "event"]
        .iter()
        .find_map(|k| {
            q.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| (*k, v.to_string()))
        });
    let Some((key, item)) = item else {
        return Err(ApiError::BadRequest(
            "One of parameters trackedEntity, enrollment or event is required".into(),
        ));
    };
    let u = Uid::try_from(item.as_str())
        .map_err(|_| ApiError::BadRequest(format!("Invalid UID for {key}: {item}")))?;
    let mut uids = {
        let cat = t.catalog().read().await;
        let ty = match key {
            "trackedEntity" => TrackerType::TrackedEntity,
            "enrollment" => TrackerType::Enrollment,
            _ => TrackerType::Event,
        };
        if !item_readable(&user, &t, &cat, (ty, u)) {
            return Err(ApiError::NotFound(format!(
                "{key} with id {item} could not be found."
            )));
        }
        live_rels(&cat, u, include_deleted)
    };
    uids.sort();
    let total = uids.len();
    let page = paging.slice(&uids);
    let read = t.store().read()?;
    let r = renderer(&state, &user, &read);
    let mut items = Vec::new();
    for u in page {
        if let Some(rec) = read.get(Collection::RELATIONSHIPS, u.as_str())? {
            items.push(project(
                &to_map(&r.relationship(u.as_str(), &rec)?)?,
                &fields,
                &NoResolve,
            ));
        }
    }
    Ok(page_response(
        &state,
        &headers,
        &uri,
        "relationships",
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
    let gone = || not_found("Relationship", &uid);
    let u = requested("Relationship", &uid)?;
    {
        let cat = t.catalog().read().await;
        let m = cat.relationships.get(&u).ok_or_else(gone)?;
        if m.stamps.deleted
            || !item_readable(&user, &t, &cat, m.from)
            || !item_readable(&user, &t, &cat, m.to)
        {
            return Err(gone());
        }
    }
    let read = t.store().read()?;
    let r = renderer(&state, &user, &read);
    let rec = read
        .get(Collection::RELATIONSHIPS, &uid)?
        .ok_or_else(gone)?;
    Ok(json_response(
        StatusCode::OK,
        &project(&to_map(&r.relationship(&uid, &rec)?)?, &fields, &NoResolve),
    ))
}
