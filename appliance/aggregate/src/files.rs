//! `GET /api/dataValues/files?de=&pe=&ou=&co=[&cc=&cp=][&dimension=]`: the file behind a
//! file-type aggregate value.
//!
//! The value holds a file resource UID; the file resource's description is in the store's
//! `fileResources` collection (DHIS2 `fileResource` JSON: `name`, `contentType`, …) and its
//! bytes in `fileBlobs`, both under that UID. `dimension` is accepted and the original is served.
//!
//! Known quirk: the Android SDK sends the *attribute* option combo in `co`. DHIS2 reads `co` as
//! the category option combo; we try that first and then `co` as the attribute option combo.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clinicbox_api::ApiState;
use clinicbox_api::query::Query;
use clinicbox_store::{Collection, DataValueKey};
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde_json::Value;

use crate::records::{DATA_VALUES, StoredDataValue};
use crate::rules::Categories;

/// `GET /api/dataValues/files`.
pub async fn get(State(state): State<ApiState>, user: AuthUser, q: Query) -> ApiResult<Response> {
    let param = |k: &str| q.get(k).map(str::trim).unwrap_or("").to_string();
    let (de, pe, ou, co) = (param("de"), param("pe"), param("ou"), param("co"));
    if de.is_empty() || pe.is_empty() || ou.is_empty() {
        return Err(ApiError::Conflict(
            "Data element (de), period (pe) and organisation unit (ou) must be specified".into(),
        ));
    }
    if !user.snapshot.contains("organisationUnits", &ou) || !user.can_view_in(&ou) {
        return Err(ApiError::Conflict(format!(
            "User is not allowed to view org unit: `{ou}`"
        )));
    }
    let snap = user.snapshot.clone();
    let mut cats = Categories::new(&snap);
    let cp: Vec<String> = param("cp")
        .split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let aoc = match param("cc").as_str() {
        "" => cats.default_coc.clone(),
        cc => cats.find(cc, &cp).ok_or_else(|| {
            ApiError::Conflict(format!(
                "Illegal attribute option combo identifier: cc=`{cc}`"
            ))
        })?,
    };
    let coc = if co.is_empty() {
        cats.default_coc.clone()
    } else {
        co.clone()
    };
    let read = state.store().read()?;
    let mut candidates = vec![DataValueKey {
        data_element: de.clone(),
        period: pe.clone(),
        org_unit: ou.clone(),
        category_option_combo: coc,
        attribute_option_combo: aoc,
    }];
    if !co.is_empty() {
        candidates.push(DataValueKey {
            data_element: de.clone(),
            period: pe.clone(),
            org_unit: ou.clone(),
            category_option_combo: cats.default_coc.clone(),
            attribute_option_combo: co.clone(),
        });
    }
    let mut found = None;
    for k in &candidates {
        if let Some(rec) = read.get(DATA_VALUES, &k.to_key())? {
            if !rec.deleted {
                found = Some(rec);
                break;
            }
        }
    }
    let rec = found.ok_or_else(|| ApiError::NotFound("Data value does not exist".into()))?;
    let body: StoredDataValue = rec
        .json()
        .map_err(|e| ApiError::Internal(format!("data value is unreadable: {e}")))?;
    let uid = body
        .value
        .ok_or_else(|| ApiError::NotFound("Data value has no file".into()))?;
    let meta = read
        .get(Collection::FILE_RESOURCES, &uid)?
        .filter(|r| !r.deleted)
        .ok_or_else(|| ApiError::NotFound(format!("File resource not found: `{uid}`")))?;
    let meta: Value = meta.json().unwrap_or(Value::Null);
    let blob = read
        .get(Collection::FILE_BLOBS, &uid)?
        .filter(|r| !r.deleted)
        .ok_or_else(|| {
            ApiError::Conflict(format!("File resource `{uid}` is not stored on this box"))
        })?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&uid)
        .to_owned();
    let mut headers = axum::http::HeaderMap::new();
    clinicbox_api::files::download_headers(&mut headers, &name, &blob.body);
    let mut resp = (StatusCode::OK, blob.body).into_response();
    let h = resp.headers_mut();
    h.extend(headers);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}
