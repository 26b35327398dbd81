//! One round: reach national, then push the outbox batch by batch, confirming each batch to
//! `serve` only after national answered for every object in it.

use std::collections::{BTreeMap, BTreeSet};

use clinicbox_control::outbox::{Batch, Confirm, FileRef, ObjectKind, Parked};
use clinicbox_control::pull::MergeReport;
use serde_json::{Value, json};

use crate::UplinkError;
use crate::config::PullPlan;
use crate::local::LocalBox;
use crate::national::{National, NationalInfo};
use crate::outcome::{self, Outcome};
use crate::owners;
use crate::pull::PullSummary;

/// The smallest batch the uplink shrinks to on a link that keeps failing.
const MIN_BATCH_BYTES: usize = 16 * 1024;
/// How many times a round shrinks its batch and tries again before it gives up.
const RETRIES_PER_ROUND: u32 = 4;

/// The batch size, fitted to the link: halved when a request is cut, times out or is refused
/// as too large, grown by an eighth of the maximum after each batch that went through.
#[derive(Debug, Clone, Copy)]
pub struct BatchSize {
    now: usize,
    max: usize,
}

impl BatchSize {
    pub fn new(max: usize) -> BatchSize {
        let max = max.max(MIN_BATCH_BYTES);
        BatchSize { now: max, max }
    }

    pub fn get(&self) -> usize {
        self.now
    }

    /// Halves the size; false if it is already the smallest.
    fn shrink(&mut self) -> bool {
        if self.now <= MIN_BATCH_BYTES {
            return false;
        }
        self.now = (self.now / 2).max(MIN_BATCH_BYTES);
        true
    }

    fn grow(&mut self) {
        self.now = (self.now + self.max / 8).min(self.max);
    }
}

/// How far the box's clock may be from national's before the status page says so.
pub const CLOCK_TOLERANCE_SECS: i64 = 60;

/// What a round did.
#[derive(Debug, Default, Clone)]
pub struct RoundSummary {
    pub national: Option<NationalInfo>,
    /// The box's clock minus national's, in seconds (from `serverDate`).
    pub clock_skew_secs: Option<i64>,
    /// The metadata pull, when it ran.
    pub pull: Option<PullSummary>,
    /// What merging national's changed data did, when it ran.
    pub national_data: Option<MergeReport>,
    /// Approval states that changed on the box, when they were pulled.
    pub approvals: Option<usize>,
    /// Values national reserved for the box in this round, when the pools were topped up.
    pub reserved: Option<usize>,
    /// Pull steps that did not finish, and why (the push went on).
    pub pull_errors: Vec<String>,
    /// Objects national accepted, by kind.
    pub pushed: BTreeMap<ObjectKind, u64>,
    /// Objects national refused in this round.
    pub parked: Vec<Parked>,
    /// What the box did with the remote configuration national held for it, when this round
    /// checked in and national held one.
    pub fleet: Option<clinicbox_control::fleet::ConfigEcho>,
    /// True when this round checked in to national's dataStore.
    pub checked_in: bool,
    /// Why the check-in failed (the round went on).
    pub check_in_error: Option<String>,
    /// What asking national about patients whose writes it refused for ownership did (their
    /// owner moved away from the box's clinics), when any were.
    pub moved_away: Option<MergeReport>,
    pub batches: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// What the update check after the round did (`crate::update::describe`), when updates
    /// are on.
    pub update: Option<String>,
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
        if let Some(skew) = self
            .clock_skew_secs
            .filter(|s| s.abs() > CLOCK_TOLERANCE_SECS)
        {
            out.push(clock_sentence(skew));
        }
        out.extend(self.pull_lines());
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
        if let Some(m) = &self.moved_away {
            out.push(format!(
                "  {} patient(s) moved away from the box's clinics at national (owner updated on the box)",
                m.applied
            ));
        }
        for p in self.parked.iter().take(20) {
            out.push(format!(
                "  {} {}: {} {}",
                p.kind.plural(),
                p.uid,
                p.code,
                p.message
            ));
        }
        out.extend(self.check_in_line());
        if let Some(u) = &self.update {
            out.push(format!("update: {u}"));
        }
        out.push(format!(
            "bytes: {} sent, {} received",
            self.bytes_sent, self.bytes_received
        ));
        out
    }

    fn check_in_line(&self) -> Option<String> {
        if let Some(e) = &self.check_in_error {
            return Some(format!("check-in: failed: {e}"));
        }
        if !self.checked_in {
            return None;
        }
        Some(match &self.fleet {
            None => "check-in: sent (no remote configuration for this box)".into(),
            Some(f) => match (&f.refused_revision, &f.refused_because) {
                (Some(r), Some(why)) => {
                    format!("check-in: sent; remote configuration {r} refused: {why}")
                }
                _ => format!(
                    "check-in: sent; remote configuration {} in force",
                    f.applied_revision
                ),
            },
        })
    }
}

impl RoundSummary {
    /// National's clock now, from the skew this round measured: a time the box can trust
    /// (national answered over TLS), for judging signed metadata's expiry.
    pub fn national_now(&self) -> Option<jiff::Timestamp> {
        let skew = jiff::SignedDuration::from_secs(self.clock_skew_secs?);
        jiff::Timestamp::now().checked_sub(skew).ok()
    }

    /// The skew national's times are corrected by when merged. Within the tolerance the
    /// measurement (whole seconds, one request's latency) is coarser than the skew: times are
    /// compared as they are.
    fn merge_skew(&self) -> i64 {
        self.clock_skew_secs
            .filter(|s| s.abs() > CLOCK_TOLERANCE_SECS)
            .unwrap_or(0)
    }

    fn pull_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.pull {
            let o = &p.outcome;
            out.push(format!(
                "metadata: {} ({} created, {} updated, {} deleted; {} source(s) read, {} unchanged)",
                o.result, o.created, o.updated, o.deleted, p.fetched, p.not_modified
            ));
            out.extend(o.messages.iter().map(|m| format!("  {m}")));
            if o.stale_values > 0 {
                out.push(format!(
                    "  {} stored value(s) refer to options or fields national removed (kept, still sent)",
                    o.stale_values
                ));
            }
        }
        if let Some(d) = &self.national_data {
            out.push(format!(
                "national data: {} applied, {} unchanged, {} skipped, {} changed on both sides",
                d.applied, d.unchanged, d.skipped, d.conflicts
            ));
        }
        if let Some(n) = self.approvals {
            out.push(format!("approvals: {n} changed"));
        }
        if let Some(n) = self.reserved {
            out.push(format!("reserved values: {n} new from national"));
        }
        out.extend(self.pull_errors.iter().cloned());
        out
    }
}

/// "The box's clock is N s ahead of/behind national's", for a skew past the tolerance.
pub fn clock_sentence(skew_secs: i64) -> String {
    let dir = if skew_secs > 0 { "ahead of" } else { "behind" };
    format!(
        "clock: the box's clock is {} s {dir} national's",
        skew_secs.unsigned_abs()
    )
}

/// The box's clock minus national's `serverDate` (a local time in `serverTimeZoneId`).
pub fn clock_skew(info: &NationalInfo) -> Option<i64> {
    let date: jiff::civil::DateTime = info.server_date.as_deref()?.parse().ok()?;
    let zone = jiff::tz::TimeZone::get(info.server_time_zone_id.as_deref()?).ok()?;
    let national = date.to_zoned(zone).ok()?.timestamp();
    Some(jiff::Timestamp::now().as_second() - national.as_second())
}

/// Runs one round: the metadata pull first (when `pull` names the roots, empty for the sync
/// account's), then the push: everything pending when it starts is confirmed or parked when it
/// returns `Ok`. The push stops once its batches have passed what was pending at its start (a
/// batch may carry along changes made meanwhile, up to its size), so a round always ends.
pub async fn run(
    local: &LocalBox,
    national: &National,
    size: &mut BatchSize,
    pull: Option<PullPlan<'_>>,
    check_in: bool,
) -> Result<RoundSummary, UplinkError> {
    let (sent0, received0) = national.bytes();
    let info = national.connect().await?;
    let mut summary = RoundSummary {
        clock_skew_secs: clock_skew(&info),
        national: Some(info),
        ..RoundSummary::default()
    };
    if let (Some(plan), Some(info)) = (pull, summary.national.clone()) {
        pull_all(local, national, plan, &info, &mut summary).await?;
    }
    let zone = summary
        .national
        .as_ref()
        .and_then(|n| n.server_time_zone_id.clone());
    let mut stop_at: Option<u64> = None;
    let mut retries = 0;
    let mut moved = BTreeSet::new();
    loop {
        let batch = local.batch(size.get(), zone.as_deref()).await?;
        let end = *stop_at.get_or_insert(batch.end);
        let pending_done = batch.after >= end && batch.retried == 0;
        if pending_done || (batch.is_empty() && batch.skipped == 0) {
            break;
        }
        let outcome = match push(local, national, &batch).await {
            Ok(o) => o,
            // A cut, a timeout or a 413 on a bad link: the same changes again, in less.
            Err(UplinkError::TooLarge | UplinkError::Unreachable(_))
                if retries < RETRIES_PER_ROUND && size.shrink() =>
            {
                retries += 1;
                tracing::info!(batch_bytes = size.get(), "request failed; smaller batches");
                continue;
            }
            Err(e) => return Err(e),
        };
        size.grow();
        for (k, _) in &outcome.accepted {
            *summary.pushed.entry(*k).or_default() += 1;
        }
        summary.batches += 1;
        summary.parked.extend(outcome.parked.iter().cloned());
        moved.extend(owners::refused_for_ownership(&batch, &outcome.parked));
        local
            .confirm(&Confirm {
                after: batch.after,
                upto: batch.upto,
                parked: outcome.parked,
                sent: outcome.accepted,
            })
            .await?;
    }
    if let (false, Some(zone)) = (moved.is_empty(), zone.as_deref()) {
        let skew = summary.merge_skew();
        summary.moved_away = Some(owners::follow(local, national, &moved, zone, skew).await?);
    }
    // Last, so the check-in counts what this round sent; a failed check-in is said, and the
    // round still counts as done.
    if check_in {
        match crate::fleet::check_in(local, national, summary.clock_skew_secs).await {
            Ok(echo) => {
                summary.fleet = echo;
                summary.checked_in = true;
            }
            Err(e) => summary.check_in_error = Some(e.to_string()),
        }
    }
    let (sent, received) = national.bytes();
    summary.bytes_sent = sent - sent0;
    summary.bytes_received = received - received0;
    Ok(summary)
}

/// The pull before the push: metadata, national's data, approvals, reserved values.
async fn pull_all(
    local: &LocalBox,
    national: &National,
    plan: PullPlan<'_>,
    info: &NationalInfo,
    summary: &mut RoundSummary,
) -> Result<(), UplinkError> {
    let roots = crate::pull::roots(national, plan.roots).await;
    let roots = pull_step("metadata", roots, &mut summary.pull_errors)?.unwrap_or_default();
    if !roots.is_empty() {
        let metadata = crate::pull::metadata(local, national, info, &roots).await;
        summary.pull = pull_step("metadata", metadata, &mut summary.pull_errors)?;
        let skew = summary.merge_skew();
        let data = crate::data::pull(local, national, info, &roots, skew).await;
        summary.national_data = pull_step("national data", data, &mut summary.pull_errors)?;
    }
    let approvals = crate::approvals::pull(local, national).await;
    summary.approvals = pull_step("approvals", approvals, &mut summary.pull_errors)?;
    let reserved = crate::reserved::top_up(local, national, plan.reserved_values).await;
    summary.reserved = pull_step("reserved values", reserved, &mut summary.pull_errors)?;
    Ok(())
}

/// One pull step's result: national or the box gone ends the round (the push would fail the
/// same way); any other error holds up this step only, and is told.
fn pull_step<T>(
    what: &str,
    result: Result<T, UplinkError>,
    errors: &mut Vec<String>,
) -> Result<Option<T>, UplinkError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e @ (UplinkError::Unreachable(_) | UplinkError::Local(_))) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "{what} not pulled");
            errors.push(format!("{what}: not pulled: {e}"));
            Ok(None)
        }
    }
}

/// Sends one batch: files first (values reference them), then deletions, then creates and
/// updates, then data values per data set and period, then registrations (after the values
/// they complete), then ownership transfers (national moves only what it holds).
async fn push(
    local: &LocalBox,
    national: &National,
    batch: &Batch,
) -> Result<Outcome, UplinkError> {
    let mut all = Outcome::default();
    for file in &batch.files {
        all.absorb(push_file(local, national, file).await?);
    }
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
        all.absorb(outcome::tracker(&answer, &sent, deleting)?);
    }
    for ((data_set, period), values) in by_set_and_period(&batch.data_values) {
        let sent: Vec<_> = values
            .iter()
            .map(|v| (ObjectKind::DataValue, data_value_key(v)))
            .collect();
        tracing::debug!(period, values = values.len(), "posting data values");
        let mut body = json!({ "dataValues": values });
        if let Some(ds) = data_set {
            body["dataSet"] = Value::String(ds);
        }
        let answer = national.post_data_values(&body).await?;
        all.absorb(outcome::aggregate("/api/dataValueSets", &answer, &sent)?);
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
        all.absorb(outcome::aggregate(
            "/api/completeDataSetRegistrations",
            &answer,
            &sent,
        )?);
    }
    for t in &batch.transfers {
        let answer = national.transfer_ownership(t).await?;
        all.absorb(outcome::transfer(&answer, t)?);
    }
    Ok(all)
}

/// One file resource: skipped if national has it (an earlier answer was cut), else uploaded
/// under the box's UID.
async fn push_file(
    local: &LocalBox,
    national: &National,
    file: &FileRef,
) -> Result<Outcome, UplinkError> {
    let done = (ObjectKind::FileResource, file.uid.clone());
    let mut out = Outcome::default();
    if national.has_file(&file.uid).await? {
        out.accepted.push(done);
        return Ok(out);
    }
    let Some(bytes) = local.file_bytes(&file.uid).await? else {
        out.parked.push(outcome::parked(
            ObjectKind::FileResource,
            &file.uid,
            "NO_CONTENT",
            "the box no longer holds this file's bytes",
        ));
        return Ok(out);
    };
    let answer = national.post_file(file, bytes.to_vec()).await?;
    match answer.status {
        200..=202 => out.accepted.push(done),
        400 | 409 | 413 => {
            let message = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {}", answer.status));
            let code = format!("HTTP{}", answer.status);
            out.parked.push(outcome::parked(
                ObjectKind::FileResource,
                &file.uid,
                &code,
                &message,
            ));
        }
        s => {
            return Err(UplinkError::Unreachable(format!(
                "national answered /api/fileResources with HTTP {s}"
            )));
        }
    }
    Ok(out)
}

/// A data set (if named) and a period.
type SetPeriod = (Option<String>, String);

/// Data values grouped by data set (when the box named it) and period, in the order the groups
/// first appear: a locked, expired or approved set refuses its own values and holds up no other.
/// The data set moves from the values to the set, where DHIS2 reads it.
fn by_set_and_period(values: &[Value]) -> Vec<(SetPeriod, Vec<Value>)> {
    let mut groups: Vec<(SetPeriod, Vec<Value>)> = Vec::new();
    for v in values {
        let mut v = v.clone();
        let ds = v
            .as_object_mut()
            .and_then(|m| m.remove("dataSet"))
            .and_then(|d| d.as_str().map(str::to_string));
        let key = (ds, field(&v, "period").to_string());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(v),
            None => groups.push((key, vec![v])),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_one_request_per_data_set_and_period_with_the_set_named_once() {
        let v = |de: &str, pe: &str, ds: Option<&str>| {
            let mut v = json!({"dataElement": de, "period": pe, "orgUnit": "ou", "value": "1"});
            if let Some(ds) = ds {
                v["dataSet"] = json!(ds);
            }
            v
        };
        let groups = by_set_and_period(&[
            v("a", "202611", Some("dsA")),
            v("b", "202611", Some("dsB")),
            v("c", "202611", Some("dsA")),
            v("d", "202612", Some("dsA")),
            v("e", "202611", None),
        ]);
        let keys: Vec<_> = groups.iter().map(|(k, l)| (k.clone(), l.len())).collect();
        assert_eq!(
            keys,
            vec![
                ((Some("dsA".into()), "202611".into()), 2),
                ((Some("dsB".into()), "202611".into()), 1),
                ((Some("dsA".into()), "202612".into()), 1),
                ((None, "202611".into()), 1),
            ]
        );
        assert!(groups[0].1.iter().all(|v| v.get("dataSet").is_none()));
        assert_eq!(data_value_key(&groups[0].1[0]), "a/202611/ou//");
    }
}
