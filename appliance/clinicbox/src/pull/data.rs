//! Data changed at national, merged into the store: which data sets the box pulls values
//! for, merging one data set's values (`clinicbox_aggregate::from_national`), and national's
//! time the last complete data pull covered (record `uplink/pullData`), kept only after every
//! data set of the pull was merged.

use std::collections::HashSet;

use clinicbox_aggregate::from_national::{self, MergeContext};
use clinicbox_api::ApiState;
use clinicbox_api::metadata::StoredUser;
use clinicbox_control::pull::{DataPlan, MAX_NATIONAL_VALUES, MergeReport, NationalValues};
use clinicbox_dhis2::aggregate::DataValue;
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone};
use clinicbox_store::Collection;
use serde_json::Value;

use super::PullError;
use crate::outbox::{Outbox, UPLINK};

const WATERMARK_KEY: &str = "pullData";

/// The data sets assigned to an org unit the box holds, and the watermark.
pub fn plan(api: &ApiState) -> Result<DataPlan, PullError> {
    let snap = api
        .metadata()
        .snapshot()
        .map_err(|e| PullError::Import(e.to_string()))?;
    let data_sets = snap
        .objects("dataSets")
        .filter(|(_, ds)| {
            clinicbox_api::metadata::ref_ids(ds.get("organisationUnits"))
                .iter()
                .any(|ou| snap.contains("organisationUnits", ou))
        })
        .map(|(id, _)| id.to_string())
        .collect();
    let watermark = api
        .store()
        .read()?
        .get(UPLINK, WATERMARK_KEY)?
        .filter(|r| !r.deleted)
        .and_then(|r| r.json::<String>().ok());
    Ok(DataPlan {
        data_sets,
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
    let zone = ServerTimeZone::new(&body.zone)
        .map_err(|e| PullError::Invalid(format!("national's time zone: {e}")))?;
    let snap = api
        .metadata()
        .snapshot()
        .map_err(|e| PullError::Import(e.to_string()))?;
    let total = body.values.len() as u64;
    let values: Vec<DataValue> = body
        .values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let unreadable = total - values.len() as u64;
    let cx = MergeContext {
        confirmed_seq: outbox
            .position()
            .map_err(|e| PullError::Invalid(e.to_string()))?
            .confirmed,
        zone,
        skew_ms: body.skew_secs.saturating_mul(1000),
        box_users: usernames(api)?,
    };
    let m = from_national::merge(api.store(), &snap, values, cx).await?;
    Ok(MergeReport {
        applied: m.applied,
        unchanged: m.unchanged,
        skipped: m.skipped + unreadable,
        conflicts: m.conflicts,
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
