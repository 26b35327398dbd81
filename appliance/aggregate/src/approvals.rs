//! Data approval states. Approval happens on national DHIS2; the uplink stores the states it
//! pulls with [`record`], tablets read them with `GET /api/dataApprovals/multiple`, and an
//! approved period locks data entry on the box (E7642). No state stored means none served.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbox_api::ApiState;
use clinicbox_api::fields::{FieldList, NoResolve, project};
use clinicbox_api::query::Query;
use clinicbox_dhis2::aggregate::DataApproval;
use clinicbox_store::{ReadView, Store, StoreError};
use clinicbox_web::error::json_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde_json::Value;

use crate::records::{APPROVALS, approval_key, split4};
use crate::selection::{self, Periods};

/// Whether the approval record `wf/pe/ou/aoc` holds an approved state.
pub fn is_approved(read: &ReadView, key: &str) -> Result<bool, StoreError> {
    Ok(match read.get(APPROVALS, key)? {
        Some(r) if !r.deleted => r
            .json::<DataApproval>()
            .ok()
            .and_then(|a| a.state)
            .is_some_and(|s| s.is_approved()),
        _ => false,
    })
}

/// Stores approval states (the uplink calls this with what national reports). A state of
/// `None` removes the stored one. Unchanged states are not rewritten. Returns how many changed.
pub async fn record(store: &Store, approvals: Vec<DataApproval>) -> Result<usize, StoreError> {
    let written = store
        .write(move |ctx| -> Result<usize, StoreError> {
            let mut n = 0;
            for a in &approvals {
                let key = approval_key(a);
                let current = ctx.get(APPROVALS, &key)?;
                let same = current.as_ref().is_some_and(|r| {
                    !r.deleted && r.json::<DataApproval>().ok().as_ref() == Some(a)
                });
                match (&a.state, same) {
                    (_, true) => {}
                    (Some(_), false) => {
                        ctx.put_json(APPROVALS, &key, a)?;
                        n += 1;
                    }
                    (None, false) => n += usize::from(ctx.delete(APPROVALS, &key)?),
                }
            }
            Ok(n)
        })
        .await
        .map_err(|e| e.flatten())?;
    Ok(written.value)
}

/// `GET /api/dataApprovals/multiple?wf=&pe=&ou=&aoc=` (or `ds=` for the data sets' workflows):
/// a JSON array of the stored states the user may see.
pub async fn get_multiple(
    State(state): State<ApiState>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let now = crate::now(&state)?;
    let mut workflows = q.list("wf");
    for ds in q.list("ds") {
        let obj = user
            .snapshot
            .get("dataSets", &ds)
            .ok_or_else(|| ApiError::Conflict(format!("Data set does not exist: `{ds}`")))?;
        if let Some(wf) = obj
            .get("workflow")
            .and_then(|w| w.get("id"))
            .and_then(Value::as_str)
        {
            workflows.push(wf.to_string());
        }
    }
    if workflows.is_empty() && q.list("ds").is_empty() {
        return Err(ApiError::Conflict(
            "At least one approval workflow (wf) or data set (ds) must be specified".into(),
        ));
    }
    let periods = Periods::parse(&q, "pe")?;
    let since = selection::last_updated(&q, &now)?;
    let requested = q.list("ou");
    let org_units = if requested.is_empty() {
        None
    } else {
        Some(selection::org_units(&user, &requested, false)?)
    };
    let aocs = q.list("aoc");
    let fields = match q.get("fields").filter(|f| !f.is_empty()) {
        Some(f) => Some(FieldList::parse(f)?),
        None => None,
    };
    let read = state.store().read()?;
    let mut out = Vec::new();
    for wf in &workflows {
        for prefix in periods.prefixes(wf) {
            for item in read.scan_prefix(APPROVALS, &prefix)? {
                let (key, rec) = item?;
                let Some((_, pe, ou, aoc)) = split4(&key) else {
                    continue;
                };
                if rec.deleted
                    || !periods.matches(pe)
                    || org_units.as_ref().is_some_and(|s| !s.contains(ou))
                    || !user.can_view_in(ou)
                    || (!aocs.is_empty() && !aocs.iter().any(|a| a == aoc))
                    || since.is_some_and(|ms| rec.updated_ms < ms)
                {
                    continue;
                }
                let Ok(a) = rec.json::<DataApproval>() else {
                    tracing::warn!(approval.key = %key, "skipping an unreadable approval state");
                    continue;
                };
                let v = serde_json::to_value(&a).map_err(|e| ApiError::Internal(e.to_string()))?;
                out.push(match (&fields, v) {
                    (Some(f), Value::Object(m)) => project(&m, f, &NoResolve),
                    (_, v) => v,
                });
            }
        }
    }
    Ok(json_response(StatusCode::OK, &Value::Array(out)))
}
