//! `GET /api/dataValueSets`: the values of one or more data sets for periods and org units, as
//! the SDK downloads them (`dataSet`, `period=p1,p2`, `orgUnit=root1,root2`, `children=true`,
//! `lastUpdated`, `includeDeleted=true`, `paging=false`, its `fields`). Deleted values come back
//! as `deleted: true` so other tablets remove them too.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbox_api::ApiState;
use clinicbox_api::fields::{FieldList, NoResolve, project};
use clinicbox_api::query::Query;
use clinicbox_store::DataValueKey;
use clinicbox_web::error::json_response;
use clinicbox_web::snapshot::ref_ids;
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde_json::{Map, Value, json};

use crate::records::{DATA_VALUES, StoredDataValue};
use crate::selection::{self, Periods};

/// The data elements of the requested data sets and `dataElement`s, sorted.
fn data_elements(user: &AuthUser, data_sets: &[String], extra: &[String]) -> Vec<String> {
    let mut des: Vec<String> = data_sets
        .iter()
        .filter_map(|ds| user.snapshot.get("dataSets", ds))
        .flat_map(|ds| match ds.get("dataSetElements") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|e| {
                    e.get("dataElement")?
                        .get("id")?
                        .as_str()
                        .map(str::to_string)
                })
                .collect(),
            _ => Vec::new(),
        })
        .chain(extra.iter().cloned())
        .collect();
    des.sort();
    des.dedup();
    des
}

/// Reads the selected values; `Value` objects in DHIS2's JSON shape, in key order.
pub fn select(state: &ApiState, user: &AuthUser, q: &Query) -> ApiResult<Vec<Map<String, Value>>> {
    let now = crate::now(state)?;
    let data_sets = q.list("dataSet");
    let mut extra = q.list("dataElement");
    for group in q.list("dataElementGroup") {
        let g = user
            .snapshot
            .get("dataElementGroups", &group)
            .ok_or_else(|| {
                ApiError::Conflict(format!("Data element group does not exist: `{group}`"))
            })?;
        extra.extend(ref_ids(g.get("dataElements")));
    }
    if data_sets.is_empty() && extra.is_empty() {
        return Err(ApiError::Conflict(
            "At least one valid data set or data element group must be specified".into(),
        ));
    }
    selection::readable_data_sets(user, &data_sets)?;
    let periods = Periods::parse(q, "period")?;
    let since = selection::last_updated(q, &now)?;
    if periods.is_empty() && since.is_none() {
        return Err(ApiError::Conflict(
            "At least one valid period, start/end dates, last updated or last updated duration must be specified".into(),
        ));
    }
    let requested = q.list("orgUnit");
    if requested.is_empty() {
        return Err(ApiError::Conflict(
            "At least one valid organisation unit or organisation unit group must be specified"
                .into(),
        ));
    }
    let org_units = selection::org_units(user, &requested, q.bool("children", false)?)?;
    let aocs: HashSet<String> = q.list("attributeOptionCombo").into_iter().collect();
    let include_deleted = q.bool("includeDeleted", false)?;

    let read = state.store().read()?;
    let mut out = Vec::new();
    for de in data_elements(user, &data_sets, &extra) {
        for prefix in periods.prefixes(&de) {
            for item in read.scan_prefix(DATA_VALUES, &prefix)? {
                let (key, rec) = item?;
                let Some(k) = DataValueKey::from_key(&key) else {
                    continue;
                };
                if !org_units.contains(&k.org_unit)
                    || !periods.matches(&k.period)
                    || (!aocs.is_empty() && !aocs.contains(&k.attribute_option_combo))
                    || (rec.deleted && !include_deleted)
                    || since.is_some_and(|ms| rec.updated_ms < ms)
                {
                    continue;
                }
                let body: StoredDataValue = rec.json().map_err(|e| {
                    ApiError::Internal(format!("data value {key} is unreadable: {e}"))
                })?;
                let mut v = Map::new();
                v.insert("dataElement".into(), json!(k.data_element));
                v.insert("period".into(), json!(k.period));
                v.insert("orgUnit".into(), json!(k.org_unit));
                v.insert("categoryOptionCombo".into(), json!(k.category_option_combo));
                v.insert(
                    "attributeOptionCombo".into(),
                    json!(k.attribute_option_combo),
                );
                if let Some(val) = body.value {
                    v.insert("value".into(), json!(val));
                }
                v.insert("storedBy".into(), json!(body.stored_by));
                v.insert("created".into(), json!(state.format_ms(rec.created_ms)));
                v.insert("lastUpdated".into(), json!(state.format_ms(rec.updated_ms)));
                if let Some(c) = body.comment {
                    v.insert("comment".into(), json!(c));
                }
                v.insert("followup".into(), json!(body.followup));
                v.insert("deleted".into(), json!(rec.deleted));
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// `GET /api/dataValueSets`.
pub async fn get(State(state): State<ApiState>, user: AuthUser, q: Query) -> ApiResult<Response> {
    let values = select(&state, &user, &q)?;
    let fields = match q.get("fields").filter(|f| !f.is_empty()) {
        Some(f) => Some(FieldList::parse(f)?),
        None => None,
    };
    let values: Vec<Value> = values
        .into_iter()
        .map(|v| match &fields {
            Some(f) => project(&v, f, &NoResolve),
            None => Value::Object(v),
        })
        .collect();
    let mut body = Map::new();
    if let [ds] = q.list("dataSet").as_slice() {
        body.insert("dataSet".into(), json!(ds));
    }
    body.insert("dataValues".into(), Value::Array(values));
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}
