//! National's reserved values: `GET /api/trackedEntityAttributes/{uid}/generateAndReserve`
//! for patterns of quoted text, `ORG_UNIT_CODE()` and `SEQUENTIAL(#…)`, counting up from 1 as
//! DHIS2 does, never handing out a value twice or one a tracked entity holds. The ledger keeps
//! every value handed out, by attribute, for the collision checks.

use std::collections::{BTreeMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{App, conflict, server_date, server_date_offset};

/// DHIS2's limit per request.
const MAX_PER_REQUEST: usize = 1000;

/// Per attribute: the next number per key, and every value handed out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reserved {
    next: BTreeMap<String, u64>,
    pub issued: Vec<String>,
}

/// A pattern as text around one sequential segment.
struct Pattern {
    before: String,
    digits: usize,
    after: String,
}

fn parse(pattern: &str, org_unit_code: Option<&str>) -> Result<Pattern, String> {
    let (mut before, mut after, mut digits) = (String::new(), String::new(), None);
    for seg in pattern.split('+').map(str::trim) {
        let text = if let Some(t) = seg.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            t.to_string()
        } else if seg.starts_with("ORG_UNIT_CODE(") {
            org_unit_code
                .ok_or("Missing required values: ORG_UNIT_CODE")?
                .to_string()
        } else if let Some(hashes) = seg
            .strip_prefix("SEQUENTIAL(")
            .and_then(|s| s.strip_suffix(')'))
        {
            digits = Some(hashes.len());
            continue;
        } else {
            return Err(format!("this stand-in does not generate `{seg}`"));
        };
        if digits.is_some() {
            after.push_str(&text);
        } else {
            before.push_str(&text);
        }
    }
    let digits = digits.ok_or("the pattern has no SEQUENTIAL segment")?;
    Ok(Pattern {
        before,
        digits,
        after,
    })
}

pub async fn generate_and_reserve(
    State(app): State<App>,
    Path(uid): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate(
        "GET /api/trackedEntityAttributes/{uid}/generateAndReserve",
        &headers,
    ) {
        return r;
    }
    let n: usize = q
        .get("numberToReserve")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    if n == 0 || n > MAX_PER_REQUEST {
        return conflict(&format!(
            "You can only reserve up to {MAX_PER_REQUEST} values in a single request"
        ));
    }
    let mut i = app.lock();
    let Some(attr) = i
        .data
        .meta
        .objects
        .get("trackedEntityAttributes")
        .and_then(|m| m.get(&uid))
    else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"httpStatusCode": 404, "status": "ERROR",
            "message": format!("TrackedEntityAttribute not found: {uid}")})),
        )
            .into_response();
    };
    let pattern = attr.get("pattern").and_then(Value::as_str).unwrap_or("");
    if attr.get("generated") != Some(&Value::Bool(true)) || pattern.is_empty() {
        return conflict(&format!("TrackedEntityAttribute {uid} is not generated"));
    }
    let p = match parse(pattern, q.get("ORG_UNIT_CODE").map(String::as_str)) {
        Ok(p) => p,
        Err(m) => return conflict(&m),
    };
    let held: HashSet<String> = i
        .data
        .tracked_entities
        .values()
        .filter_map(|te| te.body.get("attributes").and_then(Value::as_array).cloned())
        .flatten()
        .filter(|a| a.get("attribute").and_then(Value::as_str) == Some(uid.as_str()))
        .filter_map(|a| a.get("value").and_then(Value::as_str).map(str::to_string))
        .collect();
    let key = format!("{}{}{}", p.before, "#".repeat(p.digits), p.after);
    let rec = i.data.reserved.entry(uid.clone()).or_default();
    let next = rec.next.entry(key.clone()).or_insert(1);
    let space = 10u64.saturating_pow(p.digits as u32);
    let mut out = Vec::new();
    while out.len() < n && *next < space {
        let value = format!("{}{:0w$}{}", p.before, *next, p.after, w = p.digits);
        *next += 1;
        if !held.contains(&value) {
            out.push(value);
        }
    }
    if out.len() < n {
        return conflict(&format!("Not enough values left to reserve {n} values."));
    }
    rec.issued.extend(out.iter().cloned());
    let days: i64 = q
        .get("expiration")
        .and_then(|d| d.parse().ok())
        .unwrap_or(60);
    let created = server_date();
    let expiry = server_date_offset(days * 86_400);
    App::save(&i);
    let answer: Vec<Value> = out
        .into_iter()
        .map(|value| {
            json!({"ownerObject": "TRACKEDENTITYATTRIBUTE", "ownerUid": uid, "key": key,
                "value": value, "created": created, "expiryDate": expiry})
        })
        .collect();
    axum::Json(answer).into_response()
}
