//! One round: reach national, then push the outbox batch by batch, confirming each batch to
//! `serve` only after national answered for every object in it.

use std::collections::BTreeMap;

use clinicbox_control::outbox::{Batch, Confirm, ObjectKind, Parked};
use serde_json::{Value, json};

use crate::UplinkError;
use crate::local::LocalBox;
use crate::national::{National, NationalInfo};
use crate::outcome::{self, Outcome};

/// The smallest batch the uplink shrinks to when national says a request is too large.
const MIN_BATCH_BYTES: usize = 16 * 1024;

/// What a round did.
#[derive(Debug, Default, Clone)]
pub struct RoundSummary {
    pub national: Option<NationalInfo>,
    /// Objects national accepted, by kind.
    pub pushed: BTreeMap<ObjectKind, u64>,
    /// Objects national refused in this round.
    pub parked: Vec<Parked>,
    pub batches: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl RoundSummary {
    /// The lines `--once` prints, one per phase.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = &self.national {
            out.push(format!(
                "connected: national DHIS2 {} (server time {} {})",
                n.version,
                n.server_date.as_deref().unwrap_or("?"),
                n.server_time_zone_id.as_deref().unwrap_or("?")
            ));
        }
        let pushed: Vec<String> = ObjectKind::ALL
            .iter()
            .map(|k| {
                format!(
                    "{} {}",
                    self.pushed.get(k).copied().unwrap_or(0),
                    k.plural()
                )
            })
            .collect();
        out.push(format!(
            "pushed: {} in {} batch(es)",
            pushed.join(", "),
            self.batches
        ));
        out.push(format!("parked: {}", self.parked.len()));
        for p in self.parked.iter().take(20) {
            out.push(format!(
                "  {} {}: {} {}",
                p.kind.plural(),
                p.uid,
                p.code,
                p.message
            ));
        }
        out.push(format!(
            "bytes: {} sent, {} received",
            self.bytes_sent, self.bytes_received
        ));
        out
    }
}

/// Runs one round: everything pending when it starts is confirmed or parked when it returns
/// `Ok`. Changes made during the round wait for the next one, so a round always ends.
pub async fn run(
    local: &LocalBox,
    national: &National,
    batch_bytes: usize,
) -> Result<RoundSummary, UplinkError> {
    let (sent0, received0) = national.bytes();
    let mut summary = RoundSummary {
        national: Some(national.connect().await?),
        ..RoundSummary::default()
    };
    let mut size = batch_bytes.max(MIN_BATCH_BYTES);
    let mut stop_at: Option<u64> = None;
    loop {
        let batch = local.batch(size).await?;
        let end = *stop_at.get_or_insert(batch.end);
        if batch.after >= end || (batch.is_empty() && batch.skipped == 0) {
            break;
        }
        let outcome = match push(national, &batch).await {
            Ok(o) => o,
            Err(UplinkError::TooLarge) if size > MIN_BATCH_BYTES => {
                size = (size / 2).max(MIN_BATCH_BYTES);
                tracing::info!(
                    batch_bytes = size,
                    "national refused a request as too large; smaller batches"
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        for (k, _) in &outcome.accepted {
            *summary.pushed.entry(*k).or_default() += 1;
        }
        summary.batches += 1;
        summary.parked.extend(outcome.parked.iter().cloned());
        local
            .confirm(&Confirm {
                after: batch.after,
                upto: batch.upto,
                parked: outcome.parked,
                sent: outcome.accepted,
            })
            .await?;
    }
    let (sent, received) = national.bytes();
    summary.bytes_sent = sent - sent0;
    summary.bytes_received = received - received0;
    Ok(summary)
}

/// Sends one batch: deletions first, then creates and updates, then data values per period,
/// then registrations (after the values they complete).
async fn push(national: &National, batch: &Batch) -> Result<Outcome, UplinkError> {
    let mut all = Outcome::default();
    let mut add = |o: Outcome| {
        all.accepted.extend(o.accepted);
        all.parked.extend(o.parked);
    };
    for (part, deleting) in [(&batch.tracker_deletions, true), (&batch.tracker, false)] {
        if part.is_empty() {
            continue;
        }
        let sent = outcome::tracker_uids(part);
        let body = serde_json::to_value(part).map_err(|e| UplinkError::Protocol(e.to_string()))?;
        let strategy = if deleting {
            "DELETE"
        } else {
            "CREATE_AND_UPDATE"
        };
        let answer = national.post_tracker(&body, strategy).await?;
        add(outcome::tracker(&answer, &sent, deleting)?);
    }
    for (period, values) in by_period(&batch.data_values) {
        let sent: Vec<_> = values
            .iter()
            .map(|v| (ObjectKind::DataValue, data_value_key(v)))
            .collect();
        tracing::debug!(period, values = values.len(), "posting data values");
        let answer = national
            .post_data_values(&json!({ "dataValues": values }))
            .await?;
        add(outcome::aggregate("/api/dataValueSets", &answer, &sent)?);
    }
    if !batch.registrations.is_empty() {
        let sent: Vec<_> = batch
            .registrations
            .iter()
            .map(|r| (ObjectKind::Registration, registration_key(r)))
            .collect();
        let answer = national
            .post_registrations(&json!({ "completeDataSetRegistrations": batch.registrations }))
            .await?;
        add(outcome::aggregate(
            "/api/completeDataSetRegistrations",
            &answer,
            &sent,
        )?);
    }
    Ok(all)
}

/// Data values grouped by period, in the order periods first appear: a locked or expired
/// period is refused on its own and holds up no other.
fn by_period(values: &[Value]) -> Vec<(String, Vec<Value>)> {
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for v in values {
        let pe = v
            .get("period")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match groups.iter_mut().find(|(p, _)| *p == pe) {
            Some((_, list)) => list.push(v.clone()),
            None => groups.push((pe, vec![v.clone()])),
        }
    }
    groups
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The store key of a data value entry (`de/pe/ou/coc/aoc`).
fn data_value_key(v: &Value) -> String {
    [
        "dataElement",
        "period",
        "orgUnit",
        "categoryOptionCombo",
        "attributeOptionCombo",
    ]
    .map(|k| field(v, k))
    .join("/")
}

/// The store key of a registration entry (`ds/pe/ou/aoc`).
fn registration_key(v: &Value) -> String {
    [
        "dataSet",
        "period",
        "organisationUnit",
        "attributeOptionCombo",
    ]
    .map(|k| field(v, k))
    .join("/")
}
