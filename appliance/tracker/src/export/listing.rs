//! Pieces every export endpoint shares: the renderer of a request, the relationships listed
//! under an item, and the paged JSON response.

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use clinicbox_api::ApiState;
use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::Relationship;
use clinicbox_dhis2::value_type::excerpt;
use clinicbox_store::{Collection, ReadView};
use clinicbox_web::ApiError;
use clinicbox_web::error::json_response;
use clinicbox_web::{ApiResult, AuthUser};
use serde_json::Value;

use super::render::Renderer;
use super::{PageLink, Paging, page_body};

/// The renderer for one request, reading the user's metadata snapshot.
pub(super) fn renderer<'a>(
    state: &'a ApiState,
    user: &'a AuthUser,
    read: &'a ReadView,
) -> Renderer<'a> {
    Renderer {
        state,
        snap: &user.snapshot,
        read,
    }
}

/// Renders the listed relationships that are stored, in order; missing ones are skipped.
pub(super) fn relationships(r: &Renderer, uids: &[Uid]) -> ApiResult<Vec<Relationship>> {
    let mut out = Vec::with_capacity(uids.len());
    for rel in uids {
        if let Some(rec) = r.read.get(Collection::RELATIONSHIPS, rel.as_str())? {
            out.push(r.relationship(rel.as_str(), &rec)?);
        }
    }
    Ok(out)
}

/// `200 OK` with one page of `items` under `key`, with the pager and its links.
pub(super) fn page_response(
    state: &ApiState,
    headers: &HeaderMap,
    uri: &Uri,
    key: &str,
    items: Vec<Value>,
    paging: &Paging,
    total: usize,
) -> Response {
    let link = PageLink::new(state, headers, uri);
    json_response(StatusCode::OK, &page_body(key, items, paging, total, &link))
}

/// DHIS2's 404 for one object: "<Label> with id <uid> could not be found." (the UID as sent,
/// cut to an excerpt).
pub(super) fn not_found(label: &str, uid: &str) -> ApiError {
    ApiError::NotFound(format!(
        "{label} with id {} could not be found.",
        excerpt(uid)
    ))
}

/// The UID of a single-object request: anything that is not a UID is not found.
pub(super) fn requested(label: &str, uid: &str) -> Result<Uid, ApiError> {
    Uid::try_from(uid).map_err(|_| not_found(label, uid))
}
