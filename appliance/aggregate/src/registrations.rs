//! Complete data set registrations: `POST`, `GET` and `DELETE /api/completeDataSetRegistrations`
//! with the SDK's parameters. Un-completing (DELETE, or `completed: false`) keeps a tombstone
//! that `GET` serves as `completed: false`, which is how another tablet learns of it.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clinicbox_api::ApiState;
use clinicbox_api::extract::Json;
use clinicbox_api::fields::{FieldList, NoResolve, project};
use clinicbox_api::query::Query;
use clinicbox_dhis2::Period;
use clinicbox_dhis2::aggregate::{
    CompleteDataSetRegistration, CompleteDataSetRegistrations, ConflictCode, ImportConflict,
    ImportSummary, ImportSummaryStatus,
};
use clinicbox_store::{StoreError, WriteCtx};
use clinicbox_web::error::json_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde_json::{Map, Value};

use crate::periods::Now;
use crate::records::{REGISTRATIONS, StoredRegistration, registration_key, split4};
use crate::rules::{Categories, DataSetRules, Lock, with_descendants};
use crate::selection::{self, Periods};

/// `completeDate`/`date` as stored: `true` is today, a date after today becomes today, `false`
/// or empty means no completion (DHIS2's rules).
pub fn completion_date(s: &str, now: &Now) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("false") {
        return None;
    }
    if s.eq_ignore_ascii_case("true") {
        return Some(now.today.to_string());
    }
    let d = s.get(..10)?.parse::<jiff::civil::Date>().ok()?;
    Some(d.min(now.today).to_string())
}

/// Marks `key` complete inside a write. Returns `true` if anything changed.
pub fn complete_in(
    ctx: &mut WriteCtx<'_>,
    key: &str,
    date: &str,
    stored_by: &str,
    username: &str,
) -> Result<bool, StoreError> {
    let existing = ctx.get(REGISTRATIONS, key)?;
    if existing.as_ref().is_some_and(|r| {
        !r.deleted
            && r.json::<StoredRegistration>()
                .is_ok_and(|b| b.date == date && b.stored_by == stored_by)
    }) {
        return Ok(false);
    }
    ctx.put_json(
        REGISTRATIONS,
        key,
        &StoredRegistration {
            date: date.to_string(),
            stored_by: stored_by.to_string(),
            last_updated_by: username.to_string(),
        },
    )?;
    Ok(true)
}

/// Un-completes `key` inside a write (a tombstone keeping the last body). `true` if it was
/// complete.
fn uncomplete_in(ctx: &mut WriteCtx<'_>, key: &str, username: &str) -> Result<bool, StoreError> {
    match ctx.get(REGISTRATIONS, key)? {
        Some(r) if !r.deleted => {
            let mut body: StoredRegistration = r.json().map_err(|source| StoreError::Json {
                collection: REGISTRATIONS.name().into(),
                key: key.into(),
                source,
            })?;
            body.last_updated_by = username.to_string();
            let bytes = serde_json::to_vec(&body).map_err(|source| StoreError::Json {
                collection: REGISTRATIONS.name().into(),
                key: key.into(),
                source,
            })?;
            ctx.put_tombstone(REGISTRATIONS, key, bytes)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn plain(property: &str, object: &str, message: String, index: Option<usize>) -> ImportConflict {
    ImportConflict {
        object: object.to_string(),
        objects: [(property.to_string(), object.to_string())].into(),
        value: message,
        error_code: None,
        property: Some(property.to_string()),
        indexes: index.into_iter().collect(),
    }
}

/// One registration to (un)complete, validated.
struct RegOp {
    key: String,
    complete: bool,
    date: String,
    stored_by: String,
}

/// Checks that `user` may (un)complete `ds`/`pe`/`ou`/`aoc` now: the rules every registration
/// write shares (POST and DELETE).
#[allow(clippy::too_many_arguments)]
fn check_target(
    user: &AuthUser,
    cats: &mut Categories<'_>,
    now: &Now,
    read: &clinicbox_store::ReadView,
    force: bool,
    ds: &str,
    pe: &str,
    ou: &str,
    aoc: &str,
    index: Option<usize>,
) -> Result<Result<(), ImportConflict>, StoreError> {
    let snap = user.snapshot.clone();
    let c =
        |code: ConflictCode, objects: &[(&str, &str)]| ImportConflict::new(code, objects, index);
    let Some(ds_obj) = snap.get("dataSets", ds) else {
        return Ok(Err(c(ConflictCode::E7600, &[("dataSet", ds)])));
    };
    if !user.access_to(ds_obj).data.write {
        return Ok(Err(c(ConflictCode::E7601, &[("dataSet", ds)])));
    }
    let Some(rules) = DataSetRules::load(&snap, ds, now, &cats.default_combo) else {
        return Ok(Err(c(ConflictCode::E7600, &[("dataSet", ds)])));
    };
    let Ok(period) = Period::parse(pe) else {
        return Ok(Err(c(ConflictCode::E7611, &[("period", pe)])));
    };
    if rules.period_type.is_some_and(|t| t != period.period_type()) {
        return Ok(Err(plain(
            "period",
            pe,
            format!("Period type of period: `{pe}` is not the period type of data set: `{ds}`"),
            index,
        )));
    }
    if !snap.contains("organisationUnits", ou) {
        return Ok(Err(c(ConflictCode::E7612, &[("orgUnit", ou)])));
    }
    if !user.can_capture_in(ou) {
        return Ok(Err(c(
            ConflictCode::E7617,
            &[("orgUnit", ou), ("user", &user.uid)],
        )));
    }
    if !rules.org_units.contains(ou) {
        return Ok(Err(plain(
            "orgUnit",
            ou,
            format!("Organisation unit: `{ou}` is not assigned to data set: `{ds}`"),
            index,
        )));
    }
    if !cats.exists(aoc) {
        return Ok(Err(c(
            ConflictCode::E7615,
            &[("attributeOptionCombo", aoc)],
        )));
    }
    if !cats.in_combo(&rules.attribute_combo, aoc) {
        return Ok(Err(plain(
            "attributeOptionCombo",
            aoc,
            format!(
                "Attribute option combo: `{aoc}` must be part of the category combo of data set: `{ds}`"
            ),
            index,
        )));
    }
    if force && user.is_superuser() {
        return Ok(Ok(()));
    }
    match rules.lock(&period, now, user) {
        Some(Lock::Expired) => {
            return Ok(Err(c(
                ConflictCode::E7640,
                &[("period", pe), ("dataSet", ds)],
            )));
        }
        Some(Lock::Future(latest)) => {
            return Ok(Err(plain(
                "period",
                pe,
                format!(
                    "Period: `{pe}` is after latest open future period: `{latest}` for data set: `{ds}`"
                ),
                index,
            )));
        }
        Some(Lock::InputClosed) => {
            return Ok(Err(c(
                ConflictCode::E7643,
                &[("period", pe), ("dataSet", ds)],
            )));
        }
        None => {}
    }
    if let Some(wf) = &rules.workflow {
        if crate::approvals::is_approved(read, &format!("{wf}/{pe}/{ou}/{aoc}"))? {
            return Ok(Err(c(
                ConflictCode::E7642,
                &[
                    ("orgUnit", ou),
                    ("period", pe),
                    ("attributeOptionCombo", aoc),
                    ("dataSet", ds),
                ],
            )));
        }
    }
    Ok(Ok(()))
}

fn trimmed(s: &Option<String>) -> &str {
    s.as_deref().map_or("", str::trim)
}

/// `POST /api/completeDataSetRegistrations`: an ImportSummary like `dataValueSets`.
pub async fn post(
    State(state): State<ApiState>,
    user: AuthUser,
    q: Query,
    Json(body): Json<CompleteDataSetRegistrations>,
) -> ApiResult<Response> {
    let dry_run = q.bool("dryRun", false)?;
    let force = q.bool("force", false)?;
    let now = crate::now(&state)?;
    let mut summary = ImportSummary::new(ImportSummaryStatus::Success);
    let ops = {
        let read = state.store().read()?;
        let mut cats = Categories::new(&user.snapshot);
        let mut ops = Vec::new();
        for (i, r) in body.complete_data_set_registrations.iter().enumerate() {
            match plan_one(&user, &mut cats, &now, &read, force, r, i)? {
                Ok(op) => ops.push(op),
                Err(c) => {
                    summary.add_conflict(c);
                    summary.import_count.ignored += 1;
                }
            }
        }
        ops
    };
    let counts = if dry_run {
        would_change(&state.store().read()?, &ops)?
    } else {
        write_ops(&state, ops, user.username.clone()).await?
    };
    summary.import_count.imported += counts.0;
    summary.import_count.updated += counts.1;
    summary.import_count.ignored += counts.2;
    summary.status = if summary.conflicts.is_empty() {
        ImportSummaryStatus::Success
    } else {
        ImportSummaryStatus::Warning
    };
    summary.description = Some("Import process completed successfully".into());
    tracing::info!(
        user = %user.username,
        imported = summary.import_count.imported,
        updated = summary.import_count.updated,
        ignored = summary.import_count.ignored,
        conflicts = summary.conflicts.len(),
        dry_run,
        "complete registrations imported"
    );
    Ok(crate::summary_response(&summary))
}

/// The write registration `r` (at `index` in the payload) asks for, or why it is refused.
fn plan_one(
    user: &AuthUser,
    cats: &mut Categories<'_>,
    now: &Now,
    read: &clinicbox_store::ReadView,
    force: bool,
    r: &CompleteDataSetRegistration,
    index: usize,
) -> Result<Result<RegOp, ImportConflict>, StoreError> {
    let (ds, pe, ou) = (
        trimmed(&r.data_set),
        trimmed(&r.period),
        trimmed(&r.organisation_unit),
    );
    let aoc = match trimmed(&r.attribute_option_combo) {
        "" => cats.default_coc.clone(),
        a => a.to_string(),
    };
    let sent_date = r.date.as_deref().unwrap_or("");
    let date = match sent_date.trim() {
        "" => Some(now.today.to_string()),
        d => completion_date(d, now),
    };
    if let Err(c) = check_target(user, cats, now, read, force, ds, pe, ou, &aoc, Some(index))? {
        return Ok(Err(c));
    }
    let Some(date) = date else {
        return Ok(Err(plain(
            "date",
            sent_date,
            format!("Invalid completion date: `{sent_date}`"),
            Some(index),
        )));
    };
    Ok(Ok(RegOp {
        key: registration_key(ds, pe, ou, &aoc),
        complete: r.completed.unwrap_or(true),
        date,
        stored_by: match trimmed(&r.stored_by) {
            "" => user.username.clone(),
            s => s.to_string(),
        },
    }))
}

/// What `ops` would do, as (imported, updated, ignored), without writing (`dryRun`).
fn would_change(
    read: &clinicbox_store::ReadView,
    ops: &[RegOp],
) -> Result<(u64, u64, u64), StoreError> {
    let mut n = (0, 0, 0);
    for op in ops {
        let live = read
            .get(REGISTRATIONS, &op.key)?
            .is_some_and(|r| !r.deleted);
        match (op.complete, live) {
            (true, false) => n.0 += 1,
            (false, true) => n.1 += 1,
            _ => n.2 += 1,
        }
    }
    Ok(n)
}

/// Writes `ops` in one durable commit; returns (imported, updated, ignored).
async fn write_ops(
    state: &ApiState,
    ops: Vec<RegOp>,
    username: String,
) -> Result<(u64, u64, u64), ApiError> {
    let written = state
        .store()
        .write(move |ctx| -> Result<(u64, u64, u64), StoreError> {
            let mut n = (0, 0, 0);
            for op in &ops {
                let was_live = ctx.get(REGISTRATIONS, &op.key)?.is_some_and(|r| !r.deleted);
                if op.complete {
                    if complete_in(ctx, &op.key, &op.date, &op.stored_by, &username)? {
                        if was_live {
                            n.1 += 1;
                        } else {
                            n.0 += 1;
                        }
                    } else {
                        n.2 += 1;
                    }
                } else if uncomplete_in(ctx, &op.key, &username)? {
                    n.1 += 1;
                } else {
                    n.2 += 1;
                }
            }
            Ok(n)
        })
        .await
        .map_err(|e| e.flatten())?;
    Ok(written.value)
}

/// `GET /api/completeDataSetRegistrations`.
pub async fn get(State(state): State<ApiState>, user: AuthUser, q: Query) -> ApiResult<Response> {
    let now = crate::now(&state)?;
    let data_sets = q.list("dataSet");
    if data_sets.is_empty() {
        return Err(ApiError::Conflict(
            "At least one valid data set must be specified".into(),
        ));
    }
    selection::readable_data_sets(&user, &data_sets)?;
    let periods = Periods::parse(&q, "period")?;
    let since = selection::last_updated(&q, &now)?;
    if periods.is_empty() && since.is_none() {
        return Err(ApiError::Conflict(
            "At least one valid period, start/end dates, last updated or last updated duration must be specified".into(),
        ));
    }
    let requested = q.list("orgUnit");
    if requested.is_empty() {
        return Err(ApiError::Conflict(
            "At least one valid organisation unit must be specified".into(),
        ));
    }
    let org_units = selection::org_units(&user, &requested, q.bool("children", false)?)?;
    let fields = match q.get("fields").filter(|f| !f.is_empty()) {
        Some(f) => Some(FieldList::parse(f)?),
        None => None,
    };
    let read = state.store().read()?;
    let mut out = Vec::new();
    for ds in &data_sets {
        for prefix in periods.prefixes(ds) {
            for item in read.scan_prefix(REGISTRATIONS, &prefix)? {
                let (key, rec) = item?;
                let Some((ds, pe, ou, aoc)) = split4(&key) else {
                    continue;
                };
                if !org_units.contains(ou)
                    || !periods.matches(pe)
                    || since.is_some_and(|ms| rec.updated_ms < ms)
                {
                    continue;
                }
                let body: StoredRegistration = rec.json().map_err(|e| {
                    ApiError::Internal(format!("registration {key} is unreadable: {e}"))
                })?;
                let reg = CompleteDataSetRegistration {
                    period: Some(pe.into()),
                    data_set: Some(ds.into()),
                    organisation_unit: Some(ou.into()),
                    attribute_option_combo: Some(aoc.into()),
                    date: Some(body.date),
                    stored_by: Some(body.stored_by),
                    completed: Some(!rec.deleted),
                    last_updated: Some(state.format_ms(rec.updated_ms)),
                    last_updated_by: Some(body.last_updated_by),
                };
                let v =
                    serde_json::to_value(&reg).map_err(|e| ApiError::Internal(e.to_string()))?;
                out.push(match (&fields, v) {
                    (Some(f), Value::Object(m)) => project(&m, f, &NoResolve),
                    (_, v) => v,
                });
            }
        }
    }
    let mut body = Map::new();
    body.insert("completeDataSetRegistrations".into(), Value::Array(out));
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

/// `DELETE /api/completeDataSetRegistrations?ds=&pe=&ou=[&cc=&cp=][&multiOu=]`: 204 when done.
pub async fn delete(
    State(state): State<ApiState>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let now = crate::now(&state)?;
    let data_sets = q.list("ds");
    let pe = q.get("pe").unwrap_or("").trim().to_string();
    let ou = q.get("ou").unwrap_or("").trim().to_string();
    if data_sets.is_empty() || pe.is_empty() || ou.is_empty() {
        return Err(ApiError::Conflict(
            "Data set (ds), period (pe) and organisation unit (ou) must be specified".into(),
        ));
    }
    let snap = user.snapshot.clone();
    let mut cats = Categories::new(&snap);
    let cc = q.get("cc").unwrap_or("").trim();
    let cp: Vec<String> = q
        .get("cp")
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let aoc = match (cc, cp.is_empty()) {
        ("", true) => cats.default_coc.clone(),
        ("", false) => {
            return Err(ApiError::Conflict(
                "Category combo (cc) must be given with category options (cp)".into(),
            ));
        }
        (cc, _) => cats.find(cc, &cp).ok_or_else(|| {
            ApiError::Conflict(format!(
                "Illegal attribute option combo identifier: cc=`{cc}` cp=`{}`",
                cp.join(";")
            ))
        })?,
    };
    let multi = q.bool("multiOu", false)?;
    let force = q.bool("force", false)?;
    let mut keys = Vec::new();
    {
        let read = state.store().read()?;
        for ds in &data_sets {
            let units: Vec<String> = if multi {
                let assigned: HashSet<String> = snap
                    .get("dataSets", ds)
                    .map(|d| clinicbox_api::metadata::ref_ids(d.get("organisationUnits")))
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let mut all: Vec<String> = with_descendants(&snap, std::slice::from_ref(&ou))
                    .into_iter()
                    .filter(|u| assigned.contains(u))
                    .collect();
                all.sort();
                if all.is_empty() {
                    return Err(ApiError::Conflict(format!(
                        "Organisation unit: `{ou}` and its children are not assigned to data set: `{ds}`"
                    )));
                }
                all
            } else {
                vec![ou.clone()]
            };
            for unit in units {
                if let Err(c) = check_target(
                    &user, &mut cats, &now, &read, force, ds, &pe, &unit, &aoc, None,
                )? {
                    return Err(ApiError::Conflict(c.value));
                }
                keys.push(registration_key(ds, &pe, &unit, &aoc));
            }
        }
    }
    let username = user.username.clone();
    let removed = state
        .store()
        .write(move |ctx| -> Result<usize, StoreError> {
            let mut n = 0;
            for k in &keys {
                n += usize::from(uncomplete_in(ctx, k, &username)?);
            }
            Ok(n)
        })
        .await
        .map_err(|e| e.flatten())?
        .value;
    tracing::info!(user = %user.username, removed, "complete registrations removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clinicbox_dhis2::ServerTimeZone;

    #[test]
    fn completion_dates_follow_dhis2() {
        // 2026-03-10T12:00Z
        let now = Now::at(1_773_144_000_000, &ServerTimeZone::utc()).unwrap();
        assert_eq!(completion_date("true", &now).as_deref(), Some("2026-03-10"));
        assert_eq!(completion_date("false", &now), None);
        assert_eq!(
            completion_date("2026-03-01", &now).as_deref(),
            Some("2026-03-01")
        );
        assert_eq!(
            completion_date("2027-01-01", &now).as_deref(),
            Some("2026-03-10")
        );
        assert_eq!(
            completion_date("2026-03-02T10:00:00.000", &now).as_deref(),
            Some("2026-03-02")
        );
        assert_eq!(completion_date("soon", &now), None);
    }
}
