//! Program ownership as DHIS2 keeps it (`dhis2-server-sync.md` §1.8): one owner org unit per
//! tracked entity and program, set by the first enrollment, moved by `PUT
//! /api/tracker/ownership/transfer`; a transfer bumps the entity's `updatedAt`. Enrollments and
//! events of an entity whose owner lies outside the sync account's org units are refused with
//! E1102, and national's exports filter by owner.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{App, Data, str_of};

/// The key of an owner: `te/program`.
fn key(te: &str, program: &str) -> String {
    format!("{te}/{program}")
}

/// The owner of `te` in `program`, if it was ever enrolled.
pub fn owner<'a>(d: &'a Data, te: &str, program: &str) -> Option<&'a str> {
    d.owners.get(&key(te, program)).map(String::as_str)
}

/// An enrollment written: its org unit becomes the owner, if the entity had none in the
/// program (as DHIS2 does on the first enrollment).
pub fn enrolled(d: &mut Data, enrollment: &Value) {
    let (Some(te), Some(program), Some(ou)) = (
        str_of(enrollment, "trackedEntity"),
        str_of(enrollment, "program"),
        str_of(enrollment, "orgUnit"),
    ) else {
        return;
    };
    d.owners
        .entry(key(te, program))
        .or_insert_with(|| ou.to_string());
}

/// The `programOwners` national lists for `te`.
pub fn program_owners(d: &Data, te: &str) -> Value {
    let prefix = format!("{te}/");
    Value::Array(
        d.owners
            .iter()
            .filter_map(|(k, ou)| {
                let program = k.strip_prefix(&prefix)?;
                Some(json!({"trackedEntity": te, "program": program, "orgUnit": ou}))
            })
            .collect(),
    )
}

/// Whether the sync account may write data of `te` in `program`: the owner lies in its org
/// units (an account with none is national's own superuser, the push tests' default).
pub fn sync_may_write(d: &Data, te: &str, program: &str) -> bool {
    let roots = &d.meta.sync_org_units;
    roots.is_empty()
        || owner(d, te, program).is_none_or(|ou| {
            let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
            super::tracker_export::under(d, ou, &roots)
        })
}

/// E1102 for an enrollment or event whose entity's owner is outside the sync account's org
/// units. An event names its enrollment; the entity and program come from it.
pub fn check(d: &Data, enrollment_or_event: &Value) -> Result<(), (&'static str, String)> {
    let o = enrollment_or_event;
    let from_enrollment = str_of(o, "enrollment").and_then(|en| d.enrollments.get(en));
    let te = str_of(o, "trackedEntity")
        .or_else(|| from_enrollment.and_then(|e| str_of(&e.body, "trackedEntity")));
    let program =
        str_of(o, "program").or_else(|| from_enrollment.and_then(|e| str_of(&e.body, "program")));
    match (te, program) {
        (Some(te), Some(program)) if !sync_may_write(d, te, program) => Err((
            "E1102",
            format!(
                "User: `SyncUser001`, has no access to the tracked entity: `{te}`, program: `{program}`, combination."
            ),
        )),
        _ => Ok(()),
    }
}

fn answer(status: StatusCode, message: &str) -> Response {
    let body = json!({"httpStatus": status.canonical_reason(), "httpStatusCode": status.as_u16(),
        "status": if status.is_success() { "OK" } else { "ERROR" }, "message": message});
    (status, axum::Json(body)).into_response()
}

/// Moves the owner, as DHIS2's ownership manager does: the entity's `updatedAt` moves too.
fn transfer(d: &mut Data, te: &str, program: &str, ou: &str, by: &str) -> Result<(), Response> {
    if d.tracked_entities.get(te).is_none_or(|o| o.deleted) {
        return Err(answer(
            StatusCode::NOT_FOUND,
            &format!("TrackedEntity with id {te} could not be found."),
        ));
    }
    let Some(from) = owner(d, te, program).map(str::to_string) else {
        return Err(answer(
            StatusCode::BAD_REQUEST,
            &format!(
                "Tracked entity not transferred. No owner found for the combination of tracked entity {te} and program {program}"
            ),
        ));
    };
    if from == ou {
        return Err(answer(
            StatusCode::BAD_REQUEST,
            &format!(
                "Tracked entity not transferred. The owner of the tracked entity {te} and program {program} is already {ou}"
            ),
        ));
    }
    d.owners.insert(key(te, program), ou.to_string());
    if let Some(entity) = d.tracked_entities.get_mut(te) {
        entity.body["updatedAt"] = Value::String(super::server_date());
    }
    d.transfers
        .push(json!({"trackedEntity": te, "program": program, "from": from, "to": ou, "by": by}));
    Ok(())
}

/// `PUT /api/tracker/ownership/transfer?trackedEntity=&program=&ou=` by the sync account: the
/// owner must be one it may write for, and the target an org unit national knows.
pub async fn transfer_request(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.gate("PUT /api/tracker/ownership/transfer", &headers) {
        return r;
    }
    let arg = |k: &str| q.get(k).cloned().unwrap_or_default();
    let (te, program, ou) = (arg("trackedEntity"), arg("program"), arg("ou"));
    let result = {
        let mut i = app.lock();
        let d = &mut i.data;
        let known = d
            .meta
            .objects
            .get("organisationUnits")
            .is_some_and(|m| m.contains_key(&ou));
        if !known {
            Err(answer(
                StatusCode::NOT_FOUND,
                "Tracked entity not transferred. Org unit supplied does not exist.",
            ))
        } else if !sync_may_write(d, &te, &program) {
            Err(answer(
                StatusCode::FORBIDDEN,
                "Tracked entity not transferred. User does not have access to change ownership for the entity-program combination",
            ))
        } else {
            transfer(d, &te, &program, &ou, "sync")
        }
    };
    let mut i = app.lock();
    if result.is_ok() && i.faults.drop_transfer_answers > 0 {
        i.faults.drop_transfer_answers -= 1;
        return App::cut(&mut i, StatusCode::OK);
    }
    drop(i);
    match result {
        Ok(()) => app.answer(
            StatusCode::OK,
            json!({"httpStatus": "OK", "httpStatusCode": 200, "status": "OK",
                "message": "Ownership transferred"}),
        ),
        Err(r) => {
            App::save(&app.lock());
            r
        }
    }
}

/// `/admin/tracker/transfer` `{trackedEntity, program, orgUnit}`: someone at national moves a
/// patient's ownership.
pub async fn admin_transfer(State(app): State<App>, axum::Json(v): axum::Json<Value>) -> Response {
    let arg = |k: &str| str_of(&v, k).unwrap_or("").to_string();
    let mut i = app.lock();
    let moved = transfer(
        &mut i.data,
        &arg("trackedEntity"),
        &arg("program"),
        &arg("orgUnit"),
        "national",
    );
    App::save(&i);
    match moved {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}
