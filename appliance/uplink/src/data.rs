//! Data changed at national since the last data pull: for each of the box's data sets,
//! `GET /api/dataValueSets?lastUpdated=…&includeDeleted=true` over the box's org units and
//! their children; for each program, the tracked entities (with enrollments and events) and
//! the events changed since then (`updatedAfter`, oldest first, page by page). All merged by
//! `serve` (national's values win over nothing the box has not sent;
//! a value changed on both sides goes to the later change, both kept for an admin). The
//! watermark is national's `serverDate` at the round's start, less an overlap for national's
//! transactions still committing, kept only once every data set was merged: a cut pull is
//! asked again, and merging a value twice changes nothing.

use std::collections::HashSet;

use clinicbox_control::pull::{MergeReport, NationalTracker, NationalValues};
use futures_util::future::join_all;
use serde_json::Value;

use crate::UplinkError;
use crate::local::LocalBox;
use crate::national::{National, NationalInfo};

/// How far back of national's clock the next pull starts again.
const OVERLAP_SECS: i64 = 300;
/// Before the first data pull: everything national has.
const BEGINNING: &str = "1970-01-01";
/// Tracker objects per page.
const PAGE_SIZE: usize = 100;
/// Pages of one program's changes a round reads at most.
const MAX_PAGES: usize = 500;

const TE_FIELDS: &str = "trackedEntity,trackedEntityType,orgUnit,inactive,deleted,updatedAt,programOwners[orgUnit,program],attributes[attribute,value,updatedAt,storedBy],enrollments[enrollment,trackedEntity,program,orgUnit,status,enrolledAt,occurredAt,completedAt,followUp,deleted,updatedAt,notes,events[event,enrollment,trackedEntity,program,programStage,orgUnit,status,occurredAt,scheduledAt,completedAt,deleted,updatedAt,notes,dataValues[dataElement,value,updatedAt,storedBy]]],relationships[relationship,relationshipType,from,to,bidirectional]";
const EVENT_FIELDS: &str = "event,enrollment,trackedEntity,program,programStage,orgUnit,status,occurredAt,scheduledAt,completedAt,deleted,updatedAt,notes,dataValues[dataElement,value,updatedAt,storedBy]";

/// Pulls and merges national's changed data; returns what the merges did.
pub async fn pull(
    local: &LocalBox,
    national: &National,
    info: &NationalInfo,
    roots: &[String],
    skew_secs: i64,
) -> Result<MergeReport, UplinkError> {
    let zone = info.server_time_zone_id.clone().ok_or_else(|| {
        UplinkError::Protocol("national gave no serverTimeZoneId to read its times in".into())
    })?;
    let next = info
        .server_date
        .as_deref()
        .and_then(|d| earlier(d, OVERLAP_SECS))
        .ok_or_else(|| UplinkError::Protocol("national gave no readable serverDate".into()))?;
    let plan = local.data_plan().await?;
    let since = plan.watermark.unwrap_or_else(|| BEGINNING.into());
    let pull = DataPull {
        local,
        national,
        roots,
        zone: &zone,
        skew_secs,
        since: &since,
    };
    let mut report = MergeReport::default();
    // Data sets and programs' tracked entities do not depend on each other: asked at once, so
    // a slow link costs one round trip for them, not one each.
    let (values, entities) = tokio::join!(
        join_all(plan.data_sets.iter().map(|ds| pull.data_set(ds))),
        join_all(
            plan.tracker_programs
                .iter()
                .map(|p| pull.tracked_entities(p))
        ),
    );
    let mut seen = HashSet::new();
    for r in values {
        report.add(r?);
    }
    for r in entities {
        let (r, events) = r?;
        report.add(r);
        seen.extend(events);
    }
    // Then the events, less those already merged with their tracked entity.
    let programs = plan.tracker_programs.iter().chain(&plan.event_programs);
    for r in join_all(programs.map(|p| pull.events(p, &seen))).await {
        report.add(r?);
    }
    local.keep_data_watermark(&next).await?;
    Ok(report)
}

/// One data pull's requests.
struct DataPull<'a> {
    local: &'a LocalBox,
    national: &'a National,
    roots: &'a [String],
    zone: &'a str,
    skew_secs: i64,
    since: &'a str,
}

impl DataPull<'_> {
    /// One data set's values changed since the watermark.
    async fn data_set(&self, data_set: &str) -> Result<MergeReport, UplinkError> {
        let mut query = vec![("dataSet", data_set.to_string())];
        query.extend(self.roots.iter().map(|r| ("orgUnit", r.clone())));
        query.extend([
            ("children", "true".to_string()),
            ("lastUpdated", self.since.to_string()),
            ("includeDeleted", "true".to_string()),
        ]);
        let query = serde_urlencoded::to_string(&query)
            .map_err(|e| UplinkError::Protocol(e.to_string()))?;
        let answer = self
            .national
            .get_json(&format!("/api/dataValueSets?{query}"))
            .await?;
        let values = match answer.get("dataValues") {
            Some(Value::Array(v)) if !v.is_empty() => v.clone(),
            None | Some(Value::Null) | Some(Value::Array(_)) => {
                return Ok(MergeReport::default());
            }
            Some(_) => {
                return Err(UplinkError::Protocol(
                    "national's dataValues are not a list".into(),
                ));
            }
        };
        let body = NationalValues {
            data_set: data_set.to_string(),
            zone: self.zone.to_string(),
            skew_secs: self.skew_secs,
            values,
        };
        self.local.merge_values(&body).await
    }

    /// A program's tracked entities changed since the watermark, with their enrollments,
    /// events and relationships (a patient transferred in brings the records); also the UIDs
    /// of the events they carried.
    async fn tracked_entities(
        &self,
        program: &str,
    ) -> Result<(MergeReport, HashSet<String>), UplinkError> {
        let query = vec![
            ("program", program.to_string()),
            ("orgUnits", self.roots.join(",")),
            ("orgUnitMode", "DESCENDANTS".to_string()),
            ("updatedAfter", self.since.to_string()),
            ("includeDeleted", "true".to_string()),
            ("fields", TE_FIELDS.to_string()),
        ];
        let mut seen = HashSet::new();
        let report = self
            .pages(
                "/api/tracker/trackedEntities",
                "trackedEntities",
                query,
                |list| {
                    seen.extend(nested_events(&list));
                    list
                },
            )
            .await?;
        Ok((report, seen))
    }

    /// A program's events changed since the watermark, but those in `seen`.
    async fn events(
        &self,
        program: &str,
        seen: &HashSet<String>,
    ) -> Result<MergeReport, UplinkError> {
        let mut report = MergeReport::default();
        for root in self.roots {
            let query = vec![
                ("program", program.to_string()),
                ("orgUnit", root.clone()),
                ("orgUnitMode", "DESCENDANTS".to_string()),
                ("updatedAfter", self.since.to_string()),
                ("includeDeleted", "true".to_string()),
                ("fields", EVENT_FIELDS.to_string()),
            ];
            let unseen = |list: Vec<Value>| {
                list.into_iter()
                    .filter(|e| event_uid(e).is_none_or(|u| !seen.contains(&u)))
                    .collect()
            };
            report.add(
                self.pages("/api/tracker/events", "events", query, unseen)
                    .await?,
            );
        }
        Ok(report)
    }

    /// Reads `path` page by page (oldest change first), passes each page through `keep` and
    /// has `serve` merge what it keeps.
    async fn pages(
        &self,
        path: &str,
        key: &str,
        mut query: Vec<(&str, String)>,
        mut keep: impl FnMut(Vec<Value>) -> Vec<Value>,
    ) -> Result<MergeReport, UplinkError> {
        query.extend([
            ("order", "updatedAt:asc".to_string()),
            ("pageSize", PAGE_SIZE.to_string()),
        ]);
        let mut report = MergeReport::default();
        for page in 1..=MAX_PAGES {
            let mut q = query.clone();
            q.push(("page", page.to_string()));
            let q = serde_urlencoded::to_string(&q)
                .map_err(|e| UplinkError::Protocol(e.to_string()))?;
            let answer = self.national.get_json(&format!("{path}?{q}")).await?;
            // 2.41+ name the list after the type; 2.39 and 2.40 call it `instances`.
            let list = match answer.get(key).or_else(|| answer.get("instances")) {
                Some(Value::Array(l)) => l.clone(),
                _ => {
                    return Err(UplinkError::Protocol(format!(
                        "national's {path} answer has no {key} list"
                    )));
                }
            };
            let last = list.len() < PAGE_SIZE;
            let list = keep(list);
            if !list.is_empty() {
                let mut body = NationalTracker {
                    zone: self.zone.to_string(),
                    skew_secs: self.skew_secs,
                    ..NationalTracker::default()
                };
                if key == "events" {
                    body.events = list;
                } else {
                    body.tracked_entities = list;
                }
                report.add(self.local.merge_tracker(&body).await?);
            }
            if last {
                return Ok(report);
            }
        }
        Err(UplinkError::Protocol(format!(
            "{path} has more than {MAX_PAGES} pages of changes"
        )))
    }
}

fn event_uid(e: &Value) -> Option<String> {
    e.get("event").and_then(Value::as_str).map(str::to_string)
}

/// The UIDs of the events nested in a page of tracked entities.
fn nested_events(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter_map(|te| te.get("enrollments").and_then(Value::as_array))
        .flatten()
        .filter_map(|en| en.get("events").and_then(Value::as_array))
        .flatten()
        .filter_map(event_uid)
        .collect()
}

/// `yyyy-MM-ddTHH:mm:ss.SSS` `secs` earlier.
fn earlier(date: &str, secs: i64) -> Option<String> {
    let dt: jiff::civil::DateTime = date.parse().ok()?;
    let dt = dt.checked_sub(jiff::SignedDuration::from_secs(secs)).ok()?;
    Some(dt.strftime("%Y-%m-%dT%H:%M:%S%.3f").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_steps_back_across_midnight() {
        assert_eq!(
            earlier("2026-12-07T00:02:00.250", 300).as_deref(),
            Some("2026-12-06T23:57:00.250")
        );
        assert_eq!(earlier("not a date", 300), None);
    }
}
