//! Tracker data changed at national, merged by the uplink's pull: tracked entities with their
//! enrollments and events (a patient transferred in brings the records), and events changed
//! at national.
//!
//! National's objects go through the same planner as a tablet's, as national (every
//! authority, every org unit of the box), and are written marked `fromNational`, so the
//! outbox does not send them back; a tablet's next change clears the mark.
//!
//! An object the box changed that national has not confirmed yet (a change after the outbox's
//! position) was changed on both sides. Each value a box user wrote (an attribute of a tracked
//! entity, a data value of an event) that national's version has otherwise goes to the later
//! change, by the time each side recorded it (national's
//! `updatedAt` in its zone against the box's clock, corrected by the measured skew); a value
//! the box keeps is taken out of national's version before the import. The rest of the object
//! (status, dates) is national's. Such an object is written unmarked, so the merged version is
//! sent to national. Both versions of each value in question are kept as a [`Conflict`], in the
//! import's own commit; a box change winning over its own value echoed back is no conflict.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use clinicbox_api::conflicts::{Conflict, Side};
use clinicbox_api::scope::Scope;
use clinicbox_api::{ApiError, AuthUser};
use clinicbox_dhis2::tracker::{
    AtomicMode, ImportMode, ImportStrategy, ReportMode, TrackerPayload,
};
use clinicbox_dhis2::user::AUTHORITY_ALL;
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone};
use clinicbox_store::{Collection, ReadView, Record};

use crate::Tracker;
use crate::import::{Flat, FromNational, ImportParams};
use crate::model::{StoredEvent, StoredTrackedEntity};

/// Who the box names as the author of national's changes.
pub const NATIONAL: &str = "national";

/// How the merge sees the box.
pub struct MergeContext {
    /// The outbox's confirmed position: a change after it has not reached national yet.
    pub confirmed_seq: u64,
    /// National's zone, for its `updatedAt`.
    pub zone: ServerTimeZone,
    /// The box's clock minus national's, in ms.
    pub skew_ms: i64,
    /// Usernames of the box's accounts (their values coming back are echoes).
    pub box_users: HashSet<String>,
}

/// What one merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Objects the planner refused (an unknown program, stage, attribute…).
    pub refused: u64,
    pub conflicts: u64,
}

/// One value of an object changed on both sides.
struct Contest<'a> {
    field: &'a str,
    on_box: Option<&'a str>,
    box_ms: u64,
    /// Who last wrote the box's value (`national` for a value national sent before).
    box_by: Option<&'a str>,
    at_national: Option<&'a str>,
    national_at: Option<Dhis2Timestamp>,
    national_by: Option<&'a str>,
}

impl Tracker {
    /// Merges national's changed objects into the store (see the module docs).
    pub async fn merge_from_national(
        &self,
        payload: TrackerPayload,
        cx: MergeContext,
    ) -> Result<Merged, ApiError> {
        let mut flat = Flat::from_payload(payload);
        let mut keep_box = HashSet::new();
        let mut conflicts = Vec::new();
        {
            let read = self.store().read()?;
            for te in &mut flat.tracked_entities {
                let uid = te.tracked_entity.clone().unwrap_or_default();
                let Some(stored) =
                    pending::<StoredTrackedEntity>(&read, Collection::TRACKED_ENTITIES, &uid, &cx)?
                else {
                    continue;
                };
                keep_box.insert(uid.clone());
                let by_attr: HashMap<&str, _> = stored
                    .attributes
                    .iter()
                    .map(|a| (a.attribute.as_str(), a))
                    .collect();
                te.attributes.retain(|a| {
                    let on_box = by_attr.get(a.attribute.as_str());
                    let contest = Contest {
                        field: &a.attribute,
                        on_box: on_box.map(|b| b.value.as_str()),
                        box_ms: on_box.map_or(0, |b| b.updated_ms),
                        box_by: on_box.and_then(|b| b.stored_by.as_deref()),
                        at_national: a.value.as_deref(),
                        national_at: a.updated_at,
                        national_by: a.stored_by.as_deref(),
                    };
                    settle("trackedEntity", &uid, contest, &cx, &mut conflicts)
                });
            }
            for en in &flat.enrollments {
                let uid = en.enrollment.clone().unwrap_or_default();
                if pending::<crate::model::StoredEnrollment>(
                    &read,
                    Collection::ENROLLMENTS,
                    &uid,
                    &cx,
                )?
                .is_some()
                {
                    keep_box.insert(uid);
                }
            }
            for ev in &mut flat.events {
                let uid = ev.event.clone().unwrap_or_default();
                let Some(stored) = pending::<StoredEvent>(&read, Collection::EVENTS, &uid, &cx)?
                else {
                    continue;
                };
                keep_box.insert(uid.clone());
                let by_de: HashMap<&str, _> = stored
                    .data_values
                    .iter()
                    .map(|d| (d.data_element.as_str(), d))
                    .collect();
                ev.data_values.retain(|d| {
                    let on_box = by_de.get(d.data_element.as_str());
                    let contest = Contest {
                        field: &d.data_element,
                        on_box: on_box.map(|b| b.value.as_str()),
                        box_ms: on_box.map_or(0, |b| b.updated_ms),
                        box_by: on_box.and_then(|b| b.stored_by.as_deref()),
                        at_national: d.value.as_deref(),
                        national_at: d.updated_at,
                        national_by: d.stored_by.as_deref(),
                    };
                    settle("event", &uid, contest, &cx, &mut conflicts)
                });
            }
        }
        let n_conflicts = conflicts.len() as u64;
        let params = ImportParams {
            import_strategy: ImportStrategy::CreateAndUpdate,
            atomic_mode: AtomicMode::Object,
            import_mode: ImportMode::Commit,
            report_mode: ReportMode::Errors,
            run_async: false,
        };
        let user = national_user(self.api().metadata().snapshot()?);
        let national = FromNational {
            keep_box,
            conflicts,
        };
        let this = self.clone();
        let imported = tokio::spawn(async move {
            this.import_inner(user, params, flat, false, Some(national))
                .await
        })
        .await
        .map_err(|e| ApiError::Internal(format!("merge task failed: {e}")))??;
        let s = imported.report.stats;
        Ok(Merged {
            created: s.created,
            updated: s.updated,
            deleted: s.deleted,
            refused: s.ignored,
            conflicts: n_conflicts,
        })
    }
}

/// The stored object `uid` when the box changed it and national has not confirmed it yet.
fn pending<T: serde::de::DeserializeOwned>(
    read: &ReadView,
    c: Collection,
    uid: &str,
    cx: &MergeContext,
) -> Result<Option<T>, ApiError> {
    let Some(rec) = read.get(c, uid)? else {
        return Ok(None);
    };
    if rec.deleted || rec.seq <= cx.confirmed_seq || from_national(&rec) {
        return Ok(None);
    }
    Ok(rec.json::<T>().ok())
}

/// Whether a stored tracker record is national's own version.
pub fn from_national(rec: &Record) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Origin {
        #[serde(default)]
        from_national: bool,
    }
    rec.json::<Origin>().is_ok_and(|o| o.from_national)
}

/// Decides one value changed on both sides: true keeps national's (it goes into the import).
fn settle(
    kind: &str,
    uid: &str,
    c: Contest<'_>,
    cx: &MergeContext,
    conflicts: &mut Vec<Conflict>,
) -> bool {
    // Unchanged, new to the box, or last written by national: national's value, no contest.
    if c.on_box == c.at_national || c.on_box.is_none() || c.box_by == Some(NATIONAL) {
        return true;
    }
    let box_ms = i64::try_from(c.box_ms).unwrap_or(i64::MAX) - cx.skew_ms;
    let national_ms = c.national_at.and_then(|t| t.to_epoch_ms(&cx.zone).ok());
    let national_wins = national_ms.is_some_and(|n| n > box_ms);
    let echo = c.national_by.is_some_and(|by| cx.box_users.contains(by));
    if national_wins || !echo {
        conflicts.push(Conflict {
            kind: kind.into(),
            key: uid.into(),
            field: Some(c.field.into()),
            on_box: c.on_box.map(str::to_string),
            at_national: c.at_national.map(str::to_string),
            chosen: if national_wins {
                Side::National
            } else {
                Side::Box
            },
            at_ms: 0,
        });
    }
    national_wins
}

/// National as an importing user: every authority, every org unit the box holds.
fn national_user(snapshot: Arc<clinicbox_api::Snapshot>) -> AuthUser {
    AuthUser {
        uid: NATIONAL.into(),
        username: NATIONAL.into(),
        authorities: [AUTHORITY_ALL.to_string()].into(),
        user_groups: Vec::new(),
        user_roles: Vec::new(),
        scope: Scope {
            capture: Vec::new(),
            search: Vec::new(),
            view: Vec::new(),
            all: true,
        },
        snapshot,
    }
}
