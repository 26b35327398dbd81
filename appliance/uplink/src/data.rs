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

const TE_FIELDS: &str = "trackedEntity,trackedEntityType,orgUnit,inactive,deleted,updatedAt,attributes[attribute,value,updatedAt,storedBy],enrollments[enrollment,trackedEntity,program,orgUnit,status,enrolledAt,occurredAt,completedAt,followUp,deleted,updatedAt,notes,events[event,enrollment,trackedEntity,program,programStage,orgUnit,status,occurredAt,scheduledAt,completedAt,deleted,updatedAt,notes,dataValues[dataElement,value,updatedAt,storedBy]]],relationships[relationship,relationshipType,from,to,bidirectional]";
const EVENT_FIELDS: &str = "event,enrollment,trackedEntity,program,programStage,orgUnit,status,occurredAt,scheduledAt,completedAt,deleted,updatedAt,notes,dataValues[dataElement,value,updatedAt,storedBy]";

/// Pulls and merges national's changed data values; returns what the merges did.
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
    let mut report = MergeReport::default();
    for data_set in plan.data_sets {
        let mut query = vec![("dataSet", data_set.clone())];
        query.extend(roots.iter().map(|r| ("orgUnit", r.clone())));
        query.extend([
            ("children", "true".to_string()),
            ("lastUpdated", since.clone()),
            ("includeDeleted", "true".to_string()),
        ]);
        let query = serde_urlencoded::to_string(&query)
            .map_err(|e| UplinkError::Protocol(e.to_string()))?;
        let answer = national
            .get_json(&format!("/api/dataValueSets?{query}"))
            .await?;
        let values = match answer.get("dataValues") {
            Some(Value::Array(v)) => v.clone(),
            None | Some(Value::Null) => continue,
            Some(_) => {
                return Err(UplinkError::Protocol(
                    "national's dataValues are not a list".into(),
                ));
            }
        };
        if values.is_empty() {
            continue;
        }
        let body = NationalValues {
            data_set,
            zone: zone.clone(),
            skew_secs,
            values,
        };
        report.add(local.merge_values(&body).await?);
    }
    let mut tracker = TrackerPull {
        local,
        national,
        roots,
        zone: &zone,
        skew_secs,
        since: &since,
        seen: HashSet::new(),
    };
    for program in &plan.tracker_programs {
        report.add(tracker.tracked_entities(program).await?);
    }
    for program in plan.tracker_programs.iter().chain(&plan.event_programs) {
        report.add(tracker.events(program).await?);
    }
    local.keep_data_watermark(&next).await?;
    Ok(report)
}

/// Tracked entities and events changed at national, page by page.
struct TrackerPull<'a> {
    local: &'a LocalBox,
    national: &'a National,
    roots: &'a [String],
    zone: &'a str,
    skew_secs: i64,
    since: &'a str,
    /// Events already merged with their tracked entity: not merged again from the events.
    seen: HashSet<String>,
}

impl TrackerPull<'_> {
    /// A program's tracked entities changed since the watermark, with their enrollments and
    /// events (a patient transferred in brings the records).
    async fn tracked_entities(&mut self, program: &str) -> Result<MergeReport, UplinkError> {
        let query = vec![
            ("program", program.to_string()),
            ("orgUnits", self.roots.join(",")),
            ("orgUnitMode", "DESCENDANTS".to_string()),
            ("updatedAfter", self.since.to_string()),
            ("includeDeleted", "true".to_string()),
            ("fields", TE_FIELDS.to_string()),
        ];
        self.pages("/api/tracker/trackedEntities", "trackedEntities", query)
            .await
    }

    /// A program's events changed since the watermark.
    async fn events(&mut self, program: &str) -> Result<MergeReport, UplinkError> {
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
            report.add(self.pages("/api/tracker/events", "events", query).await?);
        }
        Ok(report)
    }

    /// Reads `path` page by page (oldest change first) and has `serve` merge each page.
    async fn pages(
        &mut self,
        path: &str,
        key: &str,
        mut query: Vec<(&str, String)>,
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
            let list = self.unseen(key, list);
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

    /// Notes the events nested in tracked entities; drops events already noted.
    fn unseen(&mut self, key: &str, list: Vec<Value>) -> Vec<Value> {
        let uid = |e: &Value| e.get("event").and_then(Value::as_str).map(str::to_string);
        if key == "events" {
            return list
                .into_iter()
                .filter(|e| uid(e).is_none_or(|u| !self.seen.contains(&u)))
                .collect();
        }
        for te in &list {
            let enrollments = te.get("enrollments").and_then(Value::as_array);
            for en in enrollments.into_iter().flatten() {
                let events = en.get("events").and_then(Value::as_array);
                self.seen
                    .extend(events.into_iter().flatten().filter_map(uid));
            }
        }
        list
    }
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
