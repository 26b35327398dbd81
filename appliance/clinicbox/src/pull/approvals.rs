//! Approval states from national: which ones the box needs, and recording what national said.
//! An approved period locks data entry on the box (the aggregate crate enforces stored states).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use clinicbox_aggregate::periods::{self, Now};
use clinicbox_api::ApiState;
use clinicbox_control::pull::{
    APPROVAL_PERIODS, ApprovalQuery, ApprovalStates, MAX_APPROVAL_STATES,
};
use clinicbox_dhis2::aggregate::DataApproval;
use clinicbox_dhis2::period::PeriodType;
use serde_json::Value;

use super::PullError;

/// One query per workflow of the data sets the box's org units have: their current and
/// [`APPROVAL_PERIODS`]` - 1` previous periods, and the org units the sets are assigned to.
pub fn queries(api: &ApiState) -> Result<Vec<ApprovalQuery>, PullError> {
    let snap = api.metadata().snapshot()?;
    let now = Now::at(api.store().server_time_ms(), api.zone())
        .ok_or_else(|| PullError::Invalid("the store clock is out of range".into()))?;
    let mut by_wf: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for (_, ds) in snap.objects("dataSets") {
        let Some(wf) = ds
            .get("workflow")
            .and_then(|w| w.get("id"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let Some(t) = ds
            .get("periodType")
            .and_then(Value::as_str)
            .and_then(PeriodType::from_name)
        else {
            continue;
        };
        let ous: Vec<String> = clinicbox_api::metadata::ref_ids(ds.get("organisationUnits"))
            .into_iter()
            .filter(|ou| snap.contains("organisationUnits", ou))
            .collect();
        if ous.is_empty() {
            continue;
        }
        let entry = by_wf.entry(wf.to_string()).or_default();
        entry.1.extend(ous);
        if let Some(current) = now.current(t) {
            for n in 0..APPROVAL_PERIODS {
                if let Some(p) = periods::offset(&current, -n) {
                    entry.0.insert(p.id().to_string());
                }
            }
        }
    }
    Ok(by_wf
        .into_iter()
        .map(|(wf, (pe, ou))| ApprovalQuery {
            wf,
            pe: pe.into_iter().collect(),
            ou: ou.into_iter().collect(),
        })
        .collect())
}

/// Records national's states for one query: what it gave is stored, a stored state of the
/// query it gave none for is removed. Returns how many changed.
pub async fn record(api: &ApiState, answer: ApprovalStates) -> Result<usize, PullError> {
    let q = &answer.query;
    if answer.states.len() > MAX_APPROVAL_STATES {
        return Err(PullError::Invalid(format!(
            "{} approval states in one answer; at most {MAX_APPROVAL_STATES}",
            answer.states.len()
        )));
    }
    let mut states: Vec<DataApproval> = answer
        .states
        .iter()
        .filter_map(|s| serde_json::from_value::<DataApproval>(s.clone()).ok())
        .filter(|a| a.wf == q.wf && q.pe.contains(&a.pe) && q.ou.contains(&a.ou))
        .collect();
    let given: HashSet<(String, String, String, String)> = states
        .iter()
        .filter(|a| a.state.is_some())
        .map(|a| (a.wf.clone(), a.pe.clone(), a.ou.clone(), a.aoc.clone()))
        .collect();
    let read = api.store().read()?;
    for item in read.scan(clinicbox_aggregate::APPROVALS)? {
        let (_, rec) = item?;
        let Ok(a) = rec.json::<DataApproval>() else {
            continue;
        };
        let key = (a.wf.clone(), a.pe.clone(), a.ou.clone(), a.aoc.clone());
        if !rec.deleted
            && a.wf == q.wf
            && q.pe.contains(&a.pe)
            && q.ou.contains(&a.ou)
            && !given.contains(&key)
        {
            states.push(DataApproval { state: None, ..a });
        }
    }
    drop(read);
    Ok(clinicbox_aggregate::record_approvals(api.store(), states).await?)
}
