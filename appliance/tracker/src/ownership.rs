//! Program ownership: `PUT /api/tracker/ownership/transfer` and "break the glass"
//! `POST /api/tracker/ownership/override` for protected programs.

use axum::Extension;
use axum::response::Response;
use clinicbox_api::query::Query;
use clinicbox_dhis2::{Uid, WebMessage};
use clinicbox_store::{Collection, WriteError};
use clinicbox_web::error::web_message_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};

use crate::Tracker;
use crate::catalog::{self, Change, stamps};
use crate::export::tracked_entities::te_readable;
use crate::meta::Meta;
use crate::model::{StoredTrackedEntity, StoredTransfer};
use crate::outbox;

fn param<'a>(q: &'a Query, keys: &[&str]) -> Result<&'a str, ApiError> {
    keys.iter()
        .find_map(|k| q.get(k).filter(|v| !v.is_empty()))
        .ok_or_else(|| ApiError::BadRequest(format!("Missing required parameter: {}", keys[0])))
}

fn uid(v: &str) -> Result<Uid, ApiError> {
    Uid::try_from(v).map_err(|_| ApiError::BadRequest(format!("Invalid UID: {v}")))
}

/// `PUT /api/tracker/ownership/transfer?trackedEntity=&program=&ou=`.
pub async fn transfer(
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    // Its own task: a client that hangs up must not stop it between the commit and the
    // catalog's update (the catalog would then miss a committed move until a rebuild).
    tokio::spawn(transfer_now(t, user, q))
        .await
        .map_err(|e| ApiError::Internal(format!("ownership transfer task failed: {e}")))?
}

async fn transfer_now(t: Tracker, user: AuthUser, q: Query) -> ApiResult<Response> {
    let te = uid(param(&q, &["trackedEntity", "trackedEntityInstance"])?)?;
    let program = param(&q, &["program"])?.to_string();
    let ou = param(&q, &["ou", "orgUnit"])?.to_string();
    let prog = user
        .snapshot
        .get("programs", &program)
        .filter(|p| Meta::is_tracker_program(p))
        .ok_or_else(|| ApiError::BadRequest(format!("Program {program} does not exist")))?;
    if !user.snapshot.contains("organisationUnits", &ou) {
        return Err(ApiError::BadRequest(format!(
            "Organisation unit {ou} does not exist"
        )));
    }
    if !Meta::new(&user.snapshot).program_in_org_unit(&program, &ou) {
        return Err(ApiError::Conflict(format!(
            "Program {program} is not assigned to organisation unit {ou}"
        )));
    }
    if !user.can_search_in(&ou) {
        return Err(ApiError::Forbidden(format!(
            "Organisation unit is not part of the search scope: {ou}"
        )));
    }
    // Under the import lock: the catalog and the store change together.
    let mut cat = t.catalog().write().await;
    let m = cat
        .tes
        .get(&te)
        .filter(|m| !m.stamps.deleted)
        .ok_or_else(|| {
            ApiError::NotFound(format!("TrackedEntity with id {te} could not be found."))
        })?;
    te_readable(&user, &t, m, te, Some((program.as_str(), prog)))?;
    let rec = t
        .store()
        .read()?
        .get(Collection::TRACKED_ENTITIES, te.as_str())?
        .ok_or_else(|| {
            ApiError::NotFound(format!("TrackedEntity with id {te} could not be found."))
        })?;
    let mut stored: StoredTrackedEntity = rec
        .json()
        .map_err(|e| ApiError::Internal(format!("reading a tracked entity: {e}")))?;
    stored.set_owner(&program, &ou);
    let body = stored.clone();
    let key = te.to_string();
    // The move goes to national through the outbox, after the entity it names.
    let transfer = StoredTransfer {
        tracked_entity: key.clone(),
        program: program.clone(),
        org_unit: ou.clone(),
    };
    let committed = t
        .store()
        .write(move |ctx| {
            ctx.put_json(Collection::TRACKED_ENTITIES, &key, &body)?;
            let tkey = outbox::transfer_key(&transfer.tracked_entity, &transfer.program);
            ctx.put_json(outbox::TRANSFERS, &tkey, &transfer)
        })
        .await
        .map_err(|e| match e {
            WriteError::Rejected(e) | WriteError::Store(e) => ApiError::Store(e),
        })?;
    let mut s = stamps(&rec);
    s.updated_ms = committed.commit.at_ms;
    if let Some(meta) = catalog::te_meta(&stored, s) {
        cat.apply(vec![Change::Te(te, meta)]);
    }
    tracing::info!(tracked_entity.uid = %te, program.uid = %program, org_unit.uid = %ou, "ownership transferred");
    Ok(web_message_response(&WebMessage::new(
        200,
        "Ownership transferred",
    )))
}

/// `POST /api/tracker/ownership/override?trackedEntity=&program=&reason=`.
pub async fn grant(
    Extension(t): Extension<Tracker>,
    user: AuthUser,
    q: Query,
) -> ApiResult<Response> {
    let te = uid(param(&q, &["trackedEntity", "trackedEntityInstance"])?)?;
    let program = param(&q, &["program"])?.to_string();
    let reason = q.get("reason").unwrap_or("").trim();
    if reason.is_empty() {
        return Err(ApiError::BadRequest(
            "Reason is required to break the glass".into(),
        ));
    }
    // DHIS2 2.42's refusals, in its order: 403 "Temporary ownership not created. …".
    let refuse = |why: &str| ApiError::Forbidden(format!("Temporary ownership not created. {why}"));
    let prog = user
        .snapshot
        .get("programs", &program)
        .ok_or_else(|| refuse("Program supplied does not exist."))?;
    {
        let cat = t.catalog().read().await;
        let m = cat
            .tes
            .get(&te)
            .filter(|m| !m.stamps.deleted)
            .ok_or_else(|| refuse("Tracked entity supplied does not exist."))?;
        if user.is_superuser() {
            return Err(refuse("Current user is a superuser."));
        }
        if !Meta::is_tracker_program(prog) {
            return Err(refuse("Program supplied is not a tracker program."));
        }
        let level = Meta::access_level(prog);
        if level != "PROTECTED" {
            return Err(refuse(&format!(
                "Temporary ownership can only be granted to protected programs. {program} access level is {level}."
            )));
        }
        // Breaking the glass needs the entity's owner in the search scope.
        if !user.can_search_in(m.owner(Uid::try_from(program.as_str()).ok()).as_str()) {
            return Err(refuse(
                "The owner of the entity-program combination is not in the user's search scope.",
            ));
        }
    }
    t.grant_override(&user.uid, te.as_str(), &program);
    tracing::info!(tracked_entity.uid = %te, program.uid = %program, user.uid = %user.uid, "ownership override granted");
    Ok(web_message_response(&WebMessage::new(
        200,
        "Temporary Ownership granted",
    )))
}
