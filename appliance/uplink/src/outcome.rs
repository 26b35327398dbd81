//! Reading national's answers object by object. The HTTP status alone says little: a
//! synchronous tracker import answers 409 whenever any object failed, even though with
//! `atomicMode=OBJECT` the others were committed (dhis2-server-sync.md F4).

use std::collections::{HashMap, HashSet};

use clinicbox_control::outbox::{ObjectKind, OwnershipTransfer, Parked};
use clinicbox_dhis2::tracker::{TrackerImportReport, TrackerType};
use clinicbox_dhis2::value_type::{excerpt_message, excerpt_of};
use serde_json::Value;

use crate::UplinkError;
use crate::national::Answer;

/// Codes that mean "national already has this": success for a re-send (§1.7, §8).
const ALREADY_THERE: &[&str] = &["E1002", "E1080", "E1030", "E4015", "E1119"];
/// Codes that mean a delete achieved its goal: already deleted, or never there.
const ALREADY_GONE: &[&str] = &[
    "E1082", "E1113", "E1114", "E4017", "E1063", "E1081", "E1032", "E4016",
];

/// What national decided for the objects of one request.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Accepted (or already there), by kind.
    pub accepted: Vec<(ObjectKind, String)>,
    /// Refused, to park.
    pub parked: Vec<Parked>,
}

impl Outcome {
    /// Adds what another request of the same batch decided.
    pub fn absorb(&mut self, other: Outcome) {
        self.accepted.extend(other.accepted);
        self.parked.extend(other.parked);
    }
}

pub fn kind(t: TrackerType) -> ObjectKind {
    match t {
        TrackerType::TrackedEntity => ObjectKind::TrackedEntity,
        TrackerType::Enrollment => ObjectKind::Enrollment,
        TrackerType::Event => ObjectKind::Event,
        TrackerType::Relationship => ObjectKind::Relationship,
    }
}

/// The tracker objects of a request: `(kind, uid)` in payload order.
pub fn tracker_uids(part: &clinicbox_control::outbox::TrackerPart) -> Vec<(ObjectKind, String)> {
    let mut out = Vec::with_capacity(part.len());
    let lists = [
        (
            ObjectKind::TrackedEntity,
            &part.tracked_entities,
            "trackedEntity",
        ),
        (ObjectKind::Enrollment, &part.enrollments, "enrollment"),
        (ObjectKind::Event, &part.events, "event"),
        (
            ObjectKind::Relationship,
            &part.relationships,
            "relationship",
        ),
    ];
    for (k, list, key) in lists {
        for v in list {
            if let Some(uid) = v.get(key).and_then(Value::as_str) {
                out.push((k, uid.to_string()));
            }
        }
    }
    out
}

/// Reads a tracker ImportReport for the objects `sent`. Every sent object must come back
/// accepted or refused; one national is silent about fails the request (it is sent again).
pub fn tracker(
    answer: &Answer,
    sent: &[(ObjectKind, String)],
    deleting: bool,
) -> Result<Outcome, UplinkError> {
    if !matches!(answer.status, 200 | 409) {
        return Err(status_error("/api/tracker", answer));
    }
    let report: TrackerImportReport = serde_json::from_slice(&answer.body).map_err(|e| {
        UplinkError::Protocol(format!(
            "/api/tracker answered HTTP {} without an import report: {e}",
            answer.status
        ))
    })?;
    let mut errors: HashMap<(ObjectKind, &str), (&str, &str)> = HashMap::new();
    for e in &report.validation_report.error_reports {
        errors
            .entry((kind(e.tracker_type), e.uid.as_str()))
            .or_insert((e.error_code.as_str(), e.message.as_str()));
    }
    let persisted: HashSet<(ObjectKind, &str)> = report
        .bundle_report
        .iter()
        .flat_map(|b| b.type_report_map.values())
        .flat_map(|t| t.object_reports.iter())
        .filter(|o| o.error_reports.is_empty())
        .map(|o| (kind(o.tracker_type), o.uid.as_str()))
        .collect();
    let mut out = Outcome::default();
    for (k, uid) in sent {
        let fine = if deleting {
            ALREADY_GONE
        } else {
            ALREADY_THERE
        };
        match errors.get(&(*k, uid.as_str())) {
            Some((code, _)) if fine.contains(code) => out.accepted.push((*k, uid.clone())),
            Some((code, message)) => out.parked.push(parked(*k, uid, code, message)),
            None if persisted.contains(&(*k, uid.as_str())) => out.accepted.push((*k, uid.clone())),
            None if report.status != clinicbox_dhis2::tracker::TrackerStatus::Error => {
                // OK/WARNING: every object was processed; a re-sent object with nothing to
                // change may be left out of the bundle report.
                out.accepted.push((*k, uid.clone()))
            }
            None => {
                return Err(UplinkError::Protocol(format!(
                    "national's import report says nothing about {} {uid}",
                    k.plural()
                )));
            }
        }
    }
    Ok(out)
}

/// Reads an aggregate ImportSummary (bare or inside a WebMessage's `response`) for the
/// entries `sent` (data values or registrations, in payload order).
pub fn aggregate(
    path: &str,
    answer: &Answer,
    sent: &[(ObjectKind, String)],
) -> Result<Outcome, UplinkError> {
    if !matches!(answer.status, 200 | 409) {
        return Err(status_error(path, answer));
    }
    let body: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| UplinkError::Protocol(format!("{path} did not answer JSON: {e}")))?;
    let summary = match body.get("response") {
        Some(r) if r.get("importCount").is_some() => r,
        _ if body.get("importCount").is_some() => &body,
        _ => {
            return Err(UplinkError::Protocol(format!(
                "{path} answered HTTP {} without an import summary",
                answer.status
            )));
        }
    };
    let status = summary.get("status").and_then(Value::as_str).unwrap_or("");
    let mut refused: HashMap<usize, (String, String)> = HashMap::new();
    let mut unplaced: Option<(String, String)> = None;
    for c in summary
        .get("conflicts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let code = c
            .get("errorCode")
            .and_then(Value::as_str)
            .unwrap_or("ERROR");
        let message = c.get("value").and_then(Value::as_str).unwrap_or("refused");
        let indexes: Vec<usize> = c
            .get("indexes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .map(|i| i as usize)
            .collect();
        if indexes.is_empty() {
            unplaced.get_or_insert((code.into(), message.into()));
        }
        for i in indexes {
            refused.entry(i).or_insert((code.into(), message.into()));
        }
    }
    let mut out = Outcome::default();
    for (i, (k, key)) in sent.iter().enumerate() {
        match (refused.get(&i), status, &unplaced) {
            (Some((code, msg)), _, _) => out.parked.push(parked(*k, key, code, msg)),
            // ERROR with a conflict naming no row: nothing of the set was written.
            (None, "ERROR", Some((code, msg))) => out.parked.push(parked(*k, key, code, msg)),
            (None, "ERROR", None) => {
                return Err(UplinkError::Protocol(format!(
                    "{path} answered ERROR without saying why"
                )));
            }
            _ => out.accepted.push((*k, key.clone())),
        }
    }
    Ok(out)
}

/// A refusal to park, its code and message cut to bounded lengths.
pub fn parked(kind: ObjectKind, uid: &str, code: &str, message: &str) -> Parked {
    Parked {
        kind,
        uid: uid.to_string(),
        code: excerpt_of(code, 16).into_owned(),
        message: excerpt_message(message).into_owned(),
        attempts: 0,
        at_ms: 0,
        retry: false,
    }
}

/// National's answer to one ownership transfer. "Already the owner" is success (a re-send
/// after a cut answer); a patient or enrollment national does not hold yet is parked as a
/// dependant (sent again once something parked goes through); other refusals are parked.
pub fn transfer(answer: &Answer, t: &OwnershipTransfer) -> Result<Outcome, UplinkError> {
    let key = (ObjectKind::OwnershipTransfer, t.key());
    let message = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {}", answer.status));
    let mut out = Outcome::default();
    match answer.status {
        200..=204 => out.accepted.push(key),
        400 if message.contains("is already") => out.accepted.push(key),
        404 => out.parked.push(parked(key.0, &key.1, "E5000", &message)),
        400 if message.contains("No owner found") => {
            out.parked.push(parked(key.0, &key.1, "E5000", &message))
        }
        400 | 403 | 409 => {
            let code = format!("HTTP{}", answer.status);
            out.parked.push(parked(key.0, &key.1, &code, &message));
        }
        _ => return Err(status_error("/api/tracker/ownership/transfer", answer)),
    }
    Ok(out)
}

fn status_error(path: &str, answer: &Answer) -> UplinkError {
    match answer.status {
        413 => UplinkError::TooLarge,
        s => UplinkError::Unreachable(format!("national answered {path} with HTTP {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(&body).expect("json"),
            etag: None,
        }
    }

    fn report(status: &str, errors: Value, persisted: Value) -> Value {
        json!({
            "status": status,
            "validationReport": {"errorReports": errors},
            "stats": {"created": 0, "updated": 0, "deleted": 0, "ignored": 0, "total": 0},
            "bundleReport": {"status": status, "stats": {"created": 0, "updated": 0, "deleted": 0, "ignored": 0, "total": 0},
                "typeReportMap": {"EVENT": {"trackerType": "EVENT", "stats": {"created": 0, "updated": 0, "deleted": 0, "ignored": 0, "total": 0}, "objectReports": persisted}}}
        })
    }

    #[test]
    fn a_409_with_a_partial_commit_accepts_the_committed_and_parks_the_refused() {
        let sent = vec![
            (ObjectKind::Event, "evOK0000001".to_string()),
            (ObjectKind::Event, "evBAD000001".to_string()),
        ];
        let body = report(
            "ERROR",
            json!([{"message": "no access", "errorCode": "E1000", "trackerType": "EVENT", "uid": "evBAD000001"}]),
            json!([{"trackerType": "EVENT", "uid": "evOK0000001", "errorReports": []}]),
        );
        let out = tracker(&answer(409, body), &sent, false).expect("read");
        assert_eq!(out.accepted, vec![sent[0].clone()]);
        assert_eq!(out.parked.len(), 1);
        assert_eq!(out.parked[0].code, "E1000");
    }

    #[test]
    fn already_there_on_a_resend_and_already_gone_on_a_delete_count_as_done() {
        let sent = vec![(ObjectKind::Relationship, "rel00000001".to_string())];
        let e = |code: &str| json!([{"message": "m", "errorCode": code, "trackerType": "RELATIONSHIP", "uid": "rel00000001"}]);
        let out = tracker(
            &answer(409, report("ERROR", e("E4015"), json!([]))),
            &sent,
            false,
        )
        .expect("read");
        assert_eq!(out.accepted.len(), 1);
        let out = tracker(
            &answer(409, report("ERROR", e("E4017"), json!([]))),
            &sent,
            true,
        )
        .expect("read");
        assert_eq!(out.accepted.len(), 1);
        // Already gone is no success for an upsert: national will never take it again.
        let out = tracker(
            &answer(409, report("ERROR", e("E4017"), json!([]))),
            &sent,
            false,
        )
        .expect("read");
        assert_eq!(out.parked.len(), 1);
    }

    #[test]
    fn an_object_national_is_silent_about_in_an_error_report_fails_the_request() {
        let sent = vec![(ObjectKind::Event, "evGONE00001".to_string())];
        let r = tracker(
            &answer(409, report("ERROR", json!([]), json!([]))),
            &sent,
            false,
        );
        assert!(matches!(r, Err(UplinkError::Protocol(_))), "{r:?}");
    }

    #[test]
    fn a_502_or_an_html_page_is_no_answer() {
        let sent = vec![(ObjectKind::Event, "ev000000001".to_string())];
        let bad = Answer {
            status: 502,
            body: b"<html>bad gateway</html>".to_vec(),
            etag: None,
        };
        assert!(matches!(
            tracker(&bad, &sent, false),
            Err(UplinkError::Unreachable(_))
        ));
        let html = Answer {
            status: 200,
            body: b"<html>login</html>".to_vec(),
            etag: None,
        };
        assert!(matches!(
            tracker(&html, &sent, false),
            Err(UplinkError::Protocol(_))
        ));
    }

    #[test]
    fn aggregate_conflicts_park_exactly_the_rows_their_indexes_name() {
        let sent: Vec<_> = (0..3)
            .map(|i| (ObjectKind::DataValue, format!("de{i}/202611/ou/coc/aoc")))
            .collect();
        let body = json!({"httpStatus": "OK", "status": "WARNING", "response": {
            "responseType": "ImportSummary", "status": "WARNING",
            "importCount": {"imported": 2, "updated": 0, "ignored": 1, "deleted": 0},
            "conflicts": [{"object": "x", "value": "Period is locked", "errorCode": "E7640", "indexes": [1]}]}});
        let out = aggregate("/api/dataValueSets", &answer(200, body), &sent).expect("read");
        assert_eq!(out.accepted, vec![sent[0].clone(), sent[2].clone()]);
        assert_eq!(out.parked[0].uid, sent[1].1);
        assert_eq!(out.parked[0].code, "E7640");
    }

    #[test]
    fn a_transfer_national_already_holds_is_sent_and_one_it_cannot_place_waits_for_its_patient() {
        let t = OwnershipTransfer {
            tracked_entity: "teUplink001".into(),
            program: "cbPrgOpd001".into(),
            org_unit: "cbClinicB01".into(),
        };
        let said = |status, message: &str| {
            transfer(&answer(status, json!({ "message": message })), &t)
                .map(|o| (o.accepted.len(), o.parked.first().map(|p| p.code.clone())))
        };
        assert_eq!(said(200, "Ownership transferred").ok(), Some((1, None)));
        let already = "Tracked entity not transferred. The owner of the tracked entity teUplink001 and program cbPrgOpd001 is already cbClinicB01";
        assert_eq!(said(400, already).ok(), Some((1, None)));
        assert_eq!(
            said(404, "TrackedEntity with id teUplink001 could not be found.").ok(),
            Some((0, Some("E5000".into())))
        );
        assert_eq!(
            said(403, "User does not have access to change ownership").ok(),
            Some((0, Some("HTTP403".into())))
        );
        assert!(said(502, "Bad Gateway").is_err());
    }
}
