//! National's data approvals: an admin approves or un-approves a period (`/admin/approvals`),
//! `GET /api/dataApprovals/multiple` answers a state for every asked period and org unit, as
//! DHIS2 does (UNAPPROVED_READY where nothing was approved), and a data value posted for an
//! approved period is refused (E7642), so the box's push meets the lock too.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{App, conflict};

/// The default attribute option combo.
const DEFAULT_AOC: &str = "HllvX50cXC0";
/// National answers at most this many period × org unit combinations per request.
const MAX_COMBINATIONS: usize = 5_000;

fn key(wf: &str, pe: &str, ou: &str, aoc: &str) -> String {
    format!("{wf}/{pe}/{ou}/{aoc}")
}

/// `[{wf, pe, ou, aoc?, state}]`; a null state removes the approval.
pub async fn admin_set(State(app): State<App>, axum::Json(v): axum::Json<Value>) -> Response {
    let mut i = app.lock();
    for a in v.as_array().into_iter().flatten() {
        let s = |f: &str| a.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        let aoc = a.get("aoc").and_then(Value::as_str).unwrap_or(DEFAULT_AOC);
        let k = key(&s("wf"), &s("pe"), &s("ou"), aoc);
        match a.get("state").and_then(Value::as_str) {
            Some(state) => {
                let rec = json!({"wf": s("wf"), "pe": s("pe"), "ou": s("ou"), "aoc": aoc, "state": state});
                i.data.approvals.insert(k, rec);
            }
            None => {
                i.data.approvals.remove(&k);
            }
        }
    }
    App::save(&i);
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /api/dataApprovals/multiple?wf=&pe=a,b&ou=x,y`.
pub async fn multiple(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("GET /api/dataApprovals/multiple", &headers) {
        return r;
    }
    let list = |k: &str| -> Vec<String> {
        q.get(k)
            .map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (wfs, pes, ous) = (list("wf"), list("pe"), list("ou"));
    if wfs.is_empty() || pes.is_empty() || ous.is_empty() {
        return super::bad_request("wf, pe and ou are required");
    }
    if wfs.len() * pes.len() * ous.len() > MAX_COMBINATIONS {
        return super::bad_request("too many combinations");
    }
    let i = app.lock();
    let mut out = Vec::new();
    for wf in &wfs {
        if i.data
            .meta
            .objects
            .get("dataApprovalWorkflows")
            .and_then(|m| m.get(wf))
            .is_none()
        {
            return conflict(&format!("Illegal data approval workflow specified: `{wf}`"));
        }
        for pe in &pes {
            for ou in &ous {
                let prefix = format!("{wf}/{pe}/{ou}/");
                let stored: Vec<&Value> = i
                    .data
                    .approvals
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v)
                    .collect();
                if stored.is_empty() {
                    out.push(json!({"wf": wf, "pe": pe, "ou": ou, "aoc": DEFAULT_AOC, "state": "UNAPPROVED_READY"}));
                }
                out.extend(stored.into_iter().cloned());
            }
        }
    }
    axum::Json(Value::Array(out)).into_response()
}

/// Whether a value of `data_set` for `pe` at `ou` falls in an approved period.
pub fn locks(app: &super::Inner, data_set: &str, pe: &str, ou: &str, aoc: &str) -> bool {
    let Some(wf) = app
        .data
        .meta
        .objects
        .get("dataSets")
        .and_then(|m| m.get(data_set))
        .and_then(|ds| ds.get("workflow"))
        .and_then(|w| w.get("id"))
        .and_then(Value::as_str)
    else {
        return false;
    };
    app.data
        .approvals
        .get(&key(wf, pe, ou, aoc))
        .and_then(|a| a.get("state"))
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("APPROVED") || s.starts_with("ACCEPTED"))
}
