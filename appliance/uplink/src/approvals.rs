//! Approval states from national: the box asks `serve` which workflows, periods and org units
//! its data sets have, asks national for their states, and hands every answer back whole, so
//! a period national approved locks entry on the box and one it un-approved opens again.

use clinicbox_control::pull::{ApprovalStates, MAX_APPROVAL_STATES as MAX_STATES};
use serde_json::Value;

use crate::UplinkError;
use crate::local::LocalBox;
use crate::national::National;

/// Pulls the states of every workflow; returns how many changed on the box.
pub async fn pull(local: &LocalBox, national: &National) -> Result<usize, UplinkError> {
    let mut changed = 0;
    for query in local.approval_queries().await? {
        if query.pe.is_empty() || query.ou.is_empty() {
            continue;
        }
        let path = format!(
            "/api/dataApprovals/multiple?fields=wf,pe,ou,aoc,state&wf={}&pe={}&ou={}",
            query.wf,
            query.pe.join(","),
            query.ou.join(",")
        );
        let states = match national.get_json(&path).await? {
            Value::Array(states) if states.len() <= MAX_STATES => states,
            Value::Array(states) => {
                return Err(UplinkError::Protocol(format!(
                    "national sent {} approval states for workflow {}; the box takes at most {MAX_STATES}",
                    states.len(),
                    query.wf
                )));
            }
            _ => {
                return Err(UplinkError::Protocol(
                    "national's approval states are not a list".into(),
                ));
            }
        };
        changed += local
            .record_approvals(&ApprovalStates { query, states })
            .await?;
    }
    Ok(changed)
}
