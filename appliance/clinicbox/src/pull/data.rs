//! Data changed at national, merged into the store: which data sets the box pulls values
//! for, merging one data set's values (`clinicbox_aggregate::from_national`), and national's
//! time the last complete data pull covered (record `uplink/pullData`), kept only after every
//! data set of the pull was merged.

use std::collections::HashSet;

use clinicbox_aggregate::from_national;
use clinicbox_api::ApiState;
use clinicbox_api::conflicts::MergeContext;
use clinicbox_api::metadata::StoredUser;
use clinicbox_control::pull::{
    DataPlan, MAX_NATIONAL_OBJECTS, MAX_NATIONAL_VALUES, MergeReport, NationalTracker,
    NationalValues,
};
use clinicbox_dhis2::aggregate::DataValue;
use clinicbox_dhis2::tracker::TrackerPayload;
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone};
use clinicbox_store::Collection;
use serde_json::Value;

use super::PullError;
use crate::outbox::{Outbox, UPLINK};

const WATERMARK_KEY: &str = "pullData";

/// The data sets assigned to an org unit the box holds, and the watermark.
pub fn plan(api: &ApiState) -> Result<DataPlan, PullError> {
    let snap = api.metadata().snapshot()?;
    let data_sets = snap
        .objects("dataSets")
        .filter(|(_, ds)| {
            clinicbox_api::metadata::ref_ids(ds.get("organisationUnits"))
                .iter()
                .any(|ou| snap.contains("organisationUnits", ou))
        })
        .map(|(id, _)| id.to_string())
        .collect();
    let (mut tracker_programs, mut event_programs) = (Vec::new(), Vec::new());
    for (id, p) in snap.objects("programs") {
        let here = clinicbox_api::metadata::ref_ids(p.get("organisationUnits"))
            .iter()
            .any(|ou| snap.contains("organisationUnits", ou));
        if !here {
            continue;
        }
        match p.get("programType").and_then(Value::as_str) {
            Some("WITH_REGISTRATION") => tracker_programs.push(id.to_string()),
            _ => event_programs.push(id.to_string()),
        }
    }
    let watermark = api
        .store()
        .read()?
        .get(UPLINK, WATERMARK_KEY)?
        .filter(|r| !r.deleted)
        .and_then(|r| r.json::<String>().ok());
    Ok(DataPlan {
        data_sets,
        tracker_programs,
        event_programs,
        watermark,
    })
}

/// Merges one data set's values from national.
pub async fn merge(
    api: &ApiState,
    outbox: &Outbox,
    body: NationalValues,
) -> Result<MergeReport, PullError> {
    if body.values.len() > MAX_NATIONAL_VALUES {
        return Err(PullError::Invalid(format!(
            "{} values in one answer; at most {MAX_NATIONAL_VALUES}",
            body.values.len()
        )));
    }
    let cx = context(api, outbox, &body.zone, body.skew_secs)?;
    let snap = api.metadata().snapshot()?;
    let total = body.values.len() as u64;
    let values: Vec<DataValue> = body
        .values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let unreadable = total - values.len() as u64;
    let m = from_national::merge(api.store(), &snap, values, cx).await?;
    Ok(MergeReport {
        applied: m.applied,
        unchanged: m.unchanged,
        skipped: m.skipped + unreadable,
        conflicts: m.conflicts,
    })
}

/// Merges one page of national's tracker objects.
pub async fn merge_tracker(
    api: &ApiState,
    outbox: &Outbox,
    body: NationalTracker,
) -> Result<MergeReport, PullError> {
    if body.tracked_entities.len() + body.events.len() > MAX_NATIONAL_OBJECTS {
        return Err(PullError::Invalid(format!(
            "more than {MAX_NATIONAL_OBJECTS} tracker objects in one page"
        )));
    }
    let cx = context(api, outbox, &body.zone, body.skew_secs)?;
    let payload: TrackerPayload = serde_json::from_value(serde_json::json!({
        "trackedEntities": body.tracked_entities,
        "events": body.events,
    }))
    .map_err(|e| PullError::Invalid(format!("national's tracker objects: {e}")))?;
    let m = outbox.tracker().merge_from_national(payload, cx).await?;
    Ok(MergeReport {
        applied: m.created + m.updated + m.deleted,
        unchanged: m.unchanged,
        skipped: m.refused,
        conflicts: m.conflicts,
    })
}

/// What a merge needs to know of the box: the outbox's position, national's zone and clock,
/// the box's users.
fn context(
    api: &ApiState,
    outbox: &Outbox,
    zone: &str,
    skew_secs: i64,
) -> Result<MergeContext, PullError> {
    Ok(MergeContext {
        confirmed_seq: outbox
            .position()
            .map_err(|e| PullError::Invalid(e.to_string()))?
            .confirmed,
        zone: ServerTimeZone::new(zone)
            .map_err(|e| PullError::Invalid(format!("national's time zone: {e}")))?,
        skew_ms: skew_secs.saturating_mul(1000),
        box_users: usernames(api)?,
    })
}

/// Keeps national's time the data pull covered.
pub async fn keep_watermark(api: &ApiState, watermark: String) -> Result<(), PullError> {
    if watermark.len() > 40 || Dhis2Timestamp::parse_lenient(&watermark).is_err() {
        return Err(PullError::Invalid(
            "the data watermark is not a DHIS2 time".into(),
        ));
    }
    api.store()
        .write(move |ctx| ctx.put_json(UPLINK, WATERMARK_KEY, &watermark))
        .await
        .map_err(|e| e.flatten())?;
    Ok(())
}

/// The usernames of the box's accounts.
fn usernames(api: &ApiState) -> Result<HashSet<String>, PullError> {
    let read = api.store().read()?;
    let mut names = HashSet::new();
    for item in read.scan(Collection::USERS)? {
        let (_, rec) = item?;
        if let Some(name) = rec.json::<StoredUser>().ok().and_then(|u| {
            u.user
                .get("username")
                .and_then(Value::as_str)
                .map(str::to_string)
        }) {
            names.insert(name);
        }
    }
    Ok(names)
}
