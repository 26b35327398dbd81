//! National's aggregate values read back: `GET /api/dataValueSets` as DHIS2 answers it (a data
//! set, org units with `children`, `lastUpdated`, `includeDeleted`; DHIS2's 409 without a time
//! or period), and `/admin/data-values`, a district officer correcting values at national.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{App, conflict, server_date, str_of};

const IDS: [&str; 5] = [
    "dataElement",
    "period",
    "orgUnit",
    "categoryOptionCombo",
    "attributeOptionCombo",
];

/// `[{dataElement, period, orgUnit, categoryOptionCombo, attributeOptionCombo, value, storedBy}]`;
/// a null value deletes.
pub async fn admin_values(State(app): State<App>, axum::Json(v): axum::Json<Value>) -> Response {
    let mut i = app.lock();
    for d in v.as_array().into_iter().flatten() {
        let key = IDS.map(|k| str_of(d, k).unwrap_or("")).join("/");
        let rec = i.data.data_values.entry(key).or_default();
        rec.value = str_of(d, "value").map(str::to_string);
        rec.deleted = rec.value.is_none();
        rec.stored_by = str_of(d, "storedBy").map(str::to_string);
        rec.last_updated = server_date();
        rec.writes += 1;
    }
    super::App::save(&i);
    StatusCode::NO_CONTENT.into_response()
}

pub async fn get_values(
    State(app): State<App>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/dataValueSets", &headers) {
        return r;
    }
    let one = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(ds) = one("dataSet") else {
        return conflict("At least one valid data set or data element group must be specified");
    };
    let Some(since) = one("lastUpdated") else {
        return conflict(
            "At least one valid period, start/end dates, last updated or last updated duration must be specified",
        );
    };
    let children = one("children") == Some("true");
    let include_deleted = one("includeDeleted") == Some("true");
    let roots: Vec<&str> = q
        .iter()
        .filter(|(n, _)| n == "orgUnit")
        .map(|(_, v)| v.as_str())
        .collect();
    let i = app.lock();
    let meta = &i.data.meta.objects;
    let Some(set) = meta.get("dataSets").and_then(|m| m.get(ds)) else {
        return conflict(&format!("Data set not found or not accessible: `{ds}`"));
    };
    let elements: Vec<&str> = set
        .get("dataSetElements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("dataElement")?.get("id")?.as_str())
        .collect();
    let in_scope = |ou: &str| {
        roots.contains(&ou)
            || (children
                && meta
                    .get("organisationUnits")
                    .and_then(|m| m.get(ou))
                    .and_then(|o| o.get("path"))
                    .and_then(Value::as_str)
                    .is_some_and(|p| roots.iter().any(|r| p.contains(&format!("/{r}/")))))
    };
    let mut out = Vec::new();
    for (key, rec) in &i.data.data_values {
        let ids: Vec<&str> = key.split('/').collect();
        let [de, pe, ou, coc, aoc] = ids[..] else {
            continue;
        };
        if !elements.contains(&de)
            || !in_scope(ou)
            || rec.last_updated.as_str() < since
            || (rec.deleted && !include_deleted)
        {
            continue;
        }
        let mut v = json!({"dataElement": de, "period": pe, "orgUnit": ou,
            "categoryOptionCombo": coc, "attributeOptionCombo": aoc,
            "storedBy": rec.stored_by, "lastUpdated": rec.last_updated, "followup": false});
        if let Some(value) = &rec.value {
            v["value"] = json!(value);
        }
        if let Some(c) = &rec.comment {
            v["comment"] = json!(c);
        }
        if rec.deleted {
            v["deleted"] = json!(true);
        }
        out.push(v);
    }
    axum::Json(json!({"dataSet": ds, "dataValues": out})).into_response()
}
