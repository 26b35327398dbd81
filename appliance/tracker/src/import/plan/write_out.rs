//! Write-out: turns the planned slots into writes, catalog changes and the report.

use std::collections::{BTreeMap, HashMap};

use clinicbox_dhis2::Uid;
use clinicbox_dhis2::import_report::Stats;
use clinicbox_dhis2::tracker::{
    AtomicMode, BundleReport, TrackerImportReport, TrackerObjectReport, TrackerStatus, TrackerType,
    TrackerTypeReport, ValidationReport,
};

use super::{Body, Kind, Outcome, Planner, Slot, Write};
use crate::catalog::{self, Change, Stamps};
use crate::files::FileOwner;
use crate::model::{StoredEnrollment, StoredEvent, StoredRelationship, StoredTrackedEntity};

use TrackerType::{Enrollment as EN, Event as EV, Relationship as REL, TrackedEntity as TE};

impl Planner<'_> {
    pub(super) fn finish(mut self) -> Outcome {
        let has_errors = !self.errors.is_empty();
        let all_or_nothing = self.params.atomic_mode == AtomicMode::All && has_errors;
        let mut writes = Vec::new();
        let mut changes = Vec::new();
        if !all_or_nothing {
            for (t, uid) in std::mem::take(&mut self.order) {
                self.emit(t, &uid, &mut writes, &mut changes);
            }
            // Files go to their records in the same commit, when the record is written.
            for (file, owner) in std::mem::take(&mut self.file_refs) {
                let (FileOwner::TrackedEntity(o) | FileOwner::Event(o)) = &owner;
                if !self.failed.contains(o) {
                    writes.push(Write {
                        uid: file,
                        body: Body::FileAssignment(owner),
                        tombstone: false,
                    });
                }
            }
        }
        let mut type_map = BTreeMap::new();
        let mut total = Stats::default();
        for (t, list) in &self.outcomes {
            let mut stats = Stats::default();
            let mut reports = Vec::new();
            for (uid, index, kind) in list {
                let kind = if all_or_nothing { Kind::Ignored } else { *kind };
                match kind {
                    Kind::Created => stats.created += 1,
                    Kind::Updated => stats.updated += 1,
                    Kind::Deleted => stats.deleted += 1,
                    Kind::Ignored => stats.ignored += 1,
                }
                if !all_or_nothing && !self.failed.contains(uid) {
                    reports.push(TrackerObjectReport {
                        tracker_type: *t,
                        uid: uid.clone(),
                        index: Some(*index),
                        error_reports: Vec::new(),
                    });
                }
            }
            let stats = stats.with_total();
            total.add(&stats);
            type_map.insert(
                *t,
                TrackerTypeReport {
                    tracker_type: *t,
                    stats,
                    object_reports: reports,
                },
            );
        }
        let status = if has_errors {
            TrackerStatus::Error
        } else if !self.warnings.is_empty() {
            TrackerStatus::Warning
        } else {
            TrackerStatus::Ok
        };
        let report = TrackerImportReport {
            status,
            validation_report: ValidationReport {
                error_reports: self.errors,
                warning_reports: Some(self.warnings),
            },
            stats: total,
            bundle_report: Some(BundleReport {
                status,
                type_report_map: type_map,
                stats: total,
            }),
            timings_stats: None,
            message: None,
        };
        Outcome {
            writes,
            changes,
            report,
        }
    }

    fn emit(
        &mut self,
        t: TrackerType,
        uid: &str,
        writes: &mut Vec<Write>,
        changes: &mut Vec<Change>,
    ) {
        let Ok(u) = Uid::try_from(uid) else {
            return;
        };
        match t {
            TE => emit_slot(&mut self.tes, u, uid, writes, changes),
            EN => emit_slot(&mut self.ens, u, uid, writes, changes),
            EV => emit_slot(&mut self.evs, u, uid, writes, changes),
            REL => emit_slot(&mut self.rels, u, uid, writes, changes),
        }
    }
}

/// A stored model the planner writes out: its catalog entry and its write body.
trait Planned: Sized {
    fn change(&self, u: Uid, stamps: Stamps) -> Option<Change>;
    fn body(self) -> Body;
}

impl Planned for StoredTrackedEntity {
    fn change(&self, u: Uid, stamps: Stamps) -> Option<Change> {
        catalog::te_meta_with_values(self, stamps).map(|m| Change::Te(u, m))
    }
    fn body(self) -> Body {
        Body::TrackedEntity(Box::new(self))
    }
}

impl Planned for StoredEnrollment {
    fn change(&self, u: Uid, stamps: Stamps) -> Option<Change> {
        catalog::en_meta(self, stamps).map(|m| Change::Enrollment(u, m))
    }
    fn body(self) -> Body {
        Body::Enrollment(Box::new(self))
    }
}

impl Planned for StoredEvent {
    fn change(&self, u: Uid, stamps: Stamps) -> Option<Change> {
        catalog::ev_meta(self, stamps).map(|m| Change::Event(u, m))
    }
    fn body(self) -> Body {
        Body::Event(Box::new(self))
    }
}

impl Planned for StoredRelationship {
    fn change(&self, u: Uid, stamps: Stamps) -> Option<Change> {
        catalog::rel_meta(self, stamps).map(|m| Change::Relationship(u, m))
    }
    fn body(self) -> Body {
        Body::Relationship(Box::new(self))
    }
}

/// Takes a planned object out of its slots and, if it changed, adds its write and the catalog
/// change to apply after the commit.
fn emit_slot<T: Planned>(
    slots: &mut HashMap<String, Slot<T>>,
    u: Uid,
    uid: &str,
    writes: &mut Vec<Write>,
    changes: &mut Vec<Change>,
) {
    let Some(s) = slots.remove(uid) else {
        return;
    };
    if !s.dirty {
        return;
    }
    let stamps = Stamps {
        created_ms: s.created_ms.unwrap_or(0),
        updated_ms: 0,
        deleted: s.deleted,
    };
    if let Some(c) = s.stored.change(u, stamps) {
        changes.push(c);
    }
    writes.push(Write {
        uid: uid.to_string(),
        body: s.stored.body(),
        tombstone: s.deleted,
    });
}
