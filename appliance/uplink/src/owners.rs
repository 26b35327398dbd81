//! Patients national moved away from the box's clinics. National's queries for the box follow
//! the owner, so such a patient drops out of them and the pull never hears of the move. The box
//! learns of it when national refuses a write for her (E1102): the uplink then asks national for
//! her owners, once per patient and round, and hands them to `serve` as any national change.
//! Her owner on the box becomes national's, so the box's tablets get DHIS2's own answer (E1102)
//! instead of writing what national will refuse; her records stay on the box.

use std::collections::BTreeSet;

use clinicbox_control::outbox::{Batch, ObjectKind, Parked};
use clinicbox_control::pull::{MergeReport, NationalTracker};
use serde_json::Value;

use crate::UplinkError;
use crate::local::LocalBox;
use crate::national::National;

/// National's code for "no access to this tracked entity in this program" (its owner moved).
const NO_OWNERSHIP: &str = "E1102";
/// Patients asked about per round at most; the rest wait for their next refused write.
const MAX_ASKED_PER_ROUND: usize = 50;

/// The (tracked entity, program) pairs of the enrollments and events national refused in
/// `batch` for want of ownership.
pub fn refused_for_ownership(batch: &Batch, parked: &[Parked]) -> BTreeSet<(String, String)> {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let lists = [
        (
            ObjectKind::Enrollment,
            &batch.tracker.enrollments,
            "enrollment",
        ),
        (ObjectKind::Event, &batch.tracker.events, "event"),
    ];
    parked
        .iter()
        .filter(|p| p.code == NO_OWNERSHIP)
        .filter_map(|p| {
            let (_, list, key) = lists.iter().find(|(k, _, _)| *k == p.kind)?;
            let object = list
                .iter()
                .find(|o| field(o, key).as_deref() == Some(p.uid.as_str()))?;
            Some((field(object, "trackedEntity")?, field(object, "program")?))
        })
        .collect()
}

/// Asks national who owns each patient now and merges what it says; national answering that
/// the box may not see her at all (a protected program) leaves the box as it is.
pub async fn follow(
    local: &LocalBox,
    national: &National,
    patients: &BTreeSet<(String, String)>,
    zone: &str,
    skew_secs: i64,
) -> Result<MergeReport, UplinkError> {
    let mut tracked_entities = Vec::new();
    for (te, program) in patients.iter().take(MAX_ASKED_PER_ROUND) {
        if let Some(owners) = national.owners_of(te, program).await? {
            tracked_entities.push(owners);
        }
    }
    if tracked_entities.is_empty() {
        return Ok(MergeReport::default());
    }
    let body = NationalTracker {
        zone: zone.to_string(),
        skew_secs,
        tracked_entities,
        events: Vec::new(),
    };
    local.merge_tracker(&body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parked(kind: ObjectKind, uid: &str, code: &str) -> Parked {
        crate::outcome::parked(kind, uid, code, "refused")
    }

    #[test]
    fn only_writes_refused_for_ownership_name_their_patient() {
        let mut batch = Batch::default();
        batch.tracker.events = vec![
            json!({"event": "evOwned0001", "trackedEntity": "teMoved0001", "program": "prOpd000001"}),
            json!({"event": "evOther0001", "trackedEntity": "teHere00001", "program": "prOpd000001"}),
        ];
        batch.tracker.enrollments = vec![
            json!({"enrollment": "enOwned0001", "trackedEntity": "teMoved0002", "program": "prOpd000001"}),
        ];
        let refused = [
            parked(ObjectKind::Event, "evOwned0001", "E1102"),
            parked(ObjectKind::Event, "evOther0001", "E1000"),
            parked(ObjectKind::Enrollment, "enOwned0001", "E1102"),
            parked(ObjectKind::Event, "evUnknown01", "E1102"),
        ];
        let got: Vec<_> = refused_for_ownership(&batch, &refused)
            .into_iter()
            .collect();
        assert_eq!(
            got,
            vec![
                ("teMoved0001".to_string(), "prOpd000001".to_string()),
                ("teMoved0002".to_string(), "prOpd000001".to_string())
            ]
        );
    }
}
