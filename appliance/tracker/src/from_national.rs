//! Tracker data changed at national, merged by the uplink's pull: tracked entities with their
//! enrollments, events and relationships (a patient transferred in brings the records), and
//! events changed at national.
//!
//! National's objects go through the same planner as a tablet's, as national (every
//! authority, and org units as national states them, also those the box does not hold: a
//! patient enrolled elsewhere and transferred in), and are written marked `fromNational`, so
//! the outbox does not send them back; a tablet's next change clears the mark. National's
//! `programOwners` set the owners, but for an owner the box moved and has not sent yet.
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
//!
//! An object national sends exactly as the box holds it (the box's own push echoed back, or
//! one met in the last round's overlap) is not written again. An object national deleted is
//! deleted on the box as national's; a box change to it loses (national refuses changes to
//! what it deleted) and is shown as a conflict.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use clinicbox_api::conflicts::{Conflict, MergeContext, NATIONAL, Side};
use clinicbox_dhis2::Dhis2Timestamp;
use clinicbox_dhis2::tracker::{
    AtomicMode, ImportMode, ImportStrategy, ReportMode, TrackerPayload,
};
use clinicbox_dhis2::user::AUTHORITY_ALL;
use clinicbox_store::{Collection, ReadView, Record};
use clinicbox_web::scope::Scope;
use clinicbox_web::{ApiError, AuthUser};

use crate::NationalError;

use crate::Tracker;
use crate::import::{Flat, FromNational, ImportParams};
use crate::model::{StoredEnrollment, StoredEvent, StoredTrackedEntity};

/// What one merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Objects national sent as the box holds them (the box's own changes echoed back).
    pub unchanged: u64,
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
    ) -> Result<Merged, NationalError> {
        let mut flat = Flat::from_payload(payload);
        let (gone, gone_conflicts) = self.deletions(&mut flat, &cx)?;
        let unchanged = drop_unchanged(&self.store().read()?, &mut flat)?;
        let national_gone = FromNational {
            keep_box: HashSet::new(),
            conflicts: gone_conflicts,
        };
        let mut merged = self
            .import_as_national(gone, ImportStrategy::Delete, national_gone)
            .await?;
        let (keep_box, conflicts) = self.settle_pending(&mut flat, &cx)?;
        let rest = self
            .import_as_national(
                flat,
                ImportStrategy::CreateAndUpdate,
                FromNational {
                    keep_box,
                    conflicts,
                },
            )
            .await?;
        merged.created += rest.created;
        merged.updated += rest.updated;
        merged.deleted += rest.deleted;
        merged.refused += rest.refused;
        merged.conflicts += rest.conflicts;
        merged.unchanged = unchanged;
        Ok(merged)
    }

    /// Settles the objects the box changed and national has not confirmed: the values the box
    /// keeps are taken out of national's version; returns those objects (written unmarked) and
    /// the conflicts.
    fn settle_pending(
        &self,
        flat: &mut Flat,
        cx: &MergeContext,
    ) -> Result<(HashSet<String>, Vec<Conflict>), ApiError> {
        let mut keep_box = HashSet::new();
        let mut conflicts = Vec::new();
        let read = self.store().read()?;
        for te in &mut flat.tracked_entities {
            let uid = te.tracked_entity.clone().unwrap_or_default();
            // An owner moved on the box and not yet sent is the later move: national gets it.
            let mut owners = std::mem::take(&mut te.program_owners);
            owners.retain(|o| !transfer_pending(&read, &uid, &o.program, cx));
            te.program_owners = owners;
            let Some(stored) =
                pending::<StoredTrackedEntity>(&read, Collection::TRACKED_ENTITIES, &uid, cx)?
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
                settle("trackedEntity", &uid, contest, cx, &mut conflicts)
            });
        }
        for en in &flat.enrollments {
            let uid = en.enrollment.clone().unwrap_or_default();
            if pending::<StoredEnrollment>(&read, Collection::ENROLLMENTS, &uid, cx)?.is_some() {
                keep_box.insert(uid);
            }
        }
        for ev in &mut flat.events {
            let uid = ev.event.clone().unwrap_or_default();
            let Some(stored) = pending::<StoredEvent>(&read, Collection::EVENTS, &uid, cx)? else {
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
                settle("event", &uid, contest, cx, &mut conflicts)
            });
        }
        Ok((keep_box, conflicts))
    }

    /// Takes national's deletions out of `flat`: those of objects the box holds, to delete;
    /// a deleted object the box changed meanwhile is a conflict national's deletion wins
    /// (national refuses changes to what it deleted).
    fn deletions(
        &self,
        flat: &mut Flat,
        cx: &MergeContext,
    ) -> Result<(Flat, Vec<Conflict>), ApiError> {
        let read = self.store().read()?;
        let mut gone = Flat::default();
        let mut conflicts = Vec::new();
        let mut check =
            |kind: &str, c: Collection, uid: Option<&String>| -> Result<bool, ApiError> {
                let uid = uid.cloned().unwrap_or_default();
                let Some(rec) = read.get(c, &uid)? else {
                    return Ok(false);
                };
                if rec.deleted {
                    return Ok(false);
                }
                if rec.seq > cx.confirmed_seq && !from_national(&rec) {
                    conflicts.push(Conflict {
                        kind: kind.into(),
                        key: uid,
                        field: None,
                        on_box: Some("changed on the box".into()),
                        at_national: None,
                        chosen: Side::National,
                        at_ms: 0,
                    });
                }
                Ok(true)
            };
        for ev in std::mem::take(&mut flat.events) {
            match ev.deleted {
                Some(true) if check("event", Collection::EVENTS, ev.event.as_ref())? => {
                    gone.events.push(ev)
                }
                Some(true) => {}
                _ => flat.events.push(ev),
            }
        }
        for en in std::mem::take(&mut flat.enrollments) {
            match en.deleted {
                Some(true)
                    if check(
                        "enrollment",
                        Collection::ENROLLMENTS,
                        en.enrollment.as_ref(),
                    )? =>
                {
                    gone.enrollments.push(en)
                }
                Some(true) => {}
                _ => flat.enrollments.push(en),
            }
        }
        for te in std::mem::take(&mut flat.tracked_entities) {
            match te.deleted {
                Some(true)
                    if check(
                        "trackedEntity",
                        Collection::TRACKED_ENTITIES,
                        te.tracked_entity.as_ref(),
                    )? =>
                {
                    gone.tracked_entities.push(te)
                }
                Some(true) => {}
                _ => flat.tracked_entities.push(te),
            }
        }
        Ok((gone, conflicts))
    }

    /// Runs the planner over `flat` as national, with `strategy`, in one commit.
    async fn import_as_national(
        &self,
        flat: Flat,
        strategy: ImportStrategy,
        national: FromNational,
    ) -> Result<Merged, ApiError> {
        if flat.is_empty() && national.conflicts.is_empty() {
            return Ok(Merged::default());
        }
        let conflicts = national.conflicts.len() as u64;
        let params = ImportParams {
            import_strategy: strategy,
            atomic_mode: AtomicMode::Object,
            import_mode: ImportMode::Commit,
            report_mode: ReportMode::Errors,
            run_async: false,
        };
        let user = national_user(self.api().metadata().snapshot()?);
        let this = self.clone();
        let imported = tokio::spawn(async move {
            this.import_inner(user, params, flat, false, Some(national))
                .await
        })
        .await
        .map_err(|e| ApiError::Internal(format!("merge task failed: {e}")))??;
        // Codes and UIDs only: a message may quote a value.
        for e in imported
            .report
            .validation_report
            .error_reports
            .iter()
            .take(5)
        {
            tracing::warn!(code = %e.error_code, uid = %e.uid, kind = ?e.tracker_type, "national's object refused");
        }
        let s = imported.report.stats;
        Ok(Merged {
            created: s.created,
            updated: s.updated,
            deleted: s.deleted,
            unchanged: 0,
            refused: s.ignored,
            conflicts,
        })
    }
}

/// Drops the objects national sent exactly as the box holds them (the box's own changes
/// echoed back, a change already met in the last round's overlap): nothing to write, and
/// tablets need not download them again. Returns how many.
fn drop_unchanged(read: &ReadView, flat: &mut Flat) -> Result<u64, ApiError> {
    let before = flat.len();
    let mut keep = Vec::new();
    for te in std::mem::take(&mut flat.tracked_entities) {
        let stored = live::<StoredTrackedEntity>(
            read,
            Collection::TRACKED_ENTITIES,
            te.tracked_entity.as_deref(),
        )?;
        let same = stored.is_some_and(|s| {
            te.org_unit.as_ref().is_none_or(|o| *o == s.org_unit)
                && te.inactive.is_none_or(|i| i == s.inactive)
                && te.attributes.iter().all(|a| {
                    s.attribute(&a.attribute).map(|b| b.value.as_str()) == a.value.as_deref()
                })
                && te
                    .program_owners
                    .iter()
                    .all(|o| s.owner(&o.program) == Some(o.org_unit.as_str()))
        });
        if !same {
            keep.push(te);
        }
    }
    flat.tracked_entities = keep;
    let mut keep = Vec::new();
    for en in std::mem::take(&mut flat.enrollments) {
        let stored =
            live::<StoredEnrollment>(read, Collection::ENROLLMENTS, en.enrollment.as_deref())?;
        // Program attributes travel on the enrollment and live on the tracked entity.
        let te = match &stored {
            Some(s) => live::<StoredTrackedEntity>(
                read,
                Collection::TRACKED_ENTITIES,
                Some(&s.tracked_entity),
            )?,
            None => None,
        };
        let attributes_held = en.attributes.iter().all(|a| {
            te.as_ref()
                .and_then(|t| t.attribute(&a.attribute))
                .map(|b| b.value.as_str())
                == a.value.as_deref()
        });
        let same = attributes_held
            && stored.is_some_and(|s| {
                en.status.is_none_or(|st| st == s.status)
                    && en.org_unit.as_ref().is_none_or(|o| *o == s.org_unit)
                    && en.enrolled_at.is_none_or(|t| t == s.enrolled_at)
                    && en.occurred_at.is_none_or(|t| Some(t) == s.occurred_at)
                    && notes_held(&en.notes, &s.notes)
            });
        if !same {
            keep.push(en);
        }
    }
    flat.enrollments = keep;
    let mut keep = Vec::new();
    for ev in std::mem::take(&mut flat.events) {
        let stored = live::<StoredEvent>(read, Collection::EVENTS, ev.event.as_deref())?;
        let same = stored.is_some_and(|s| {
            ev.status.is_none_or(|st| st == s.status)
                && ev.org_unit.as_ref().is_none_or(|o| *o == s.org_unit)
                && ev
                    .program_stage
                    .as_ref()
                    .is_none_or(|p| *p == s.program_stage)
                && ev.occurred_at.is_none_or(|t| Some(t) == s.occurred_at)
                && notes_held(&ev.notes, &s.notes)
                && ev.data_values.iter().all(|d| {
                    let held = s
                        .data_values
                        .iter()
                        .find(|b| b.data_element == d.data_element);
                    held.map(|b| b.value.as_str()) == d.value.as_deref()
                })
        });
        if !same {
            keep.push(ev);
        }
    }
    flat.events = keep;
    // A relationship never changes once made: one the box holds is already the same. Both
    // tracked entities may carry it: once is enough.
    let mut seen = HashSet::new();
    flat.relationships.retain(|r| {
        let uid = r.relationship.as_deref().unwrap_or_default();
        seen.insert(uid.to_string())
            && !matches!(read.get(Collection::RELATIONSHIPS, uid), Ok(Some(rec)) if !rec.deleted)
    });
    Ok((before - flat.len()) as u64)
}

/// Every note national sent is one the box holds.
fn notes_held(notes: &[clinicbox_dhis2::tracker::Note], held: &[crate::model::StoredNote]) -> bool {
    notes.iter().all(|n| {
        n.note
            .as_ref()
            .is_some_and(|id| held.iter().any(|h| h.note == *id))
    })
}

/// The live stored object `uid`.
fn live<T: serde::de::DeserializeOwned>(
    read: &ReadView,
    c: Collection,
    uid: Option<&str>,
) -> Result<Option<T>, ApiError> {
    let Some(rec) = read.get(c, uid.unwrap_or_default())? else {
        return Ok(None);
    };
    Ok(if rec.deleted {
        None
    } else {
        rec.json::<T>().ok()
    })
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

/// Whether the box moved `te`'s owner in `program` after the outbox's confirmed position.
fn transfer_pending(read: &ReadView, te: &str, program: &str, cx: &MergeContext) -> bool {
    let key = crate::outbox::transfer_key(te, program);
    read.get(crate::outbox::TRANSFERS, &key)
        .ok()
        .flatten()
        .is_some_and(|r| r.seq > cx.confirmed_seq)
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
    let national_ms = c.national_at.and_then(|t| t.to_epoch_ms(&cx.zone).ok());
    let national_wins = cx.national_later(c.box_ms, national_ms);
    let echo = cx.is_echo(c.national_by);
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
fn national_user(snapshot: Arc<clinicbox_web::Snapshot>) -> AuthUser {
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
