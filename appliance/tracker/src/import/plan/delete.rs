//! Plans deletions: soft deletes (tombstones) with their cascades.

use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{TrackerType, ValidationCode};
use clinicbox_store::Collection;

use super::{Errs, Exists, Kind, Planner, Slot};
use crate::model::{StoredEvent, StoredRelationship};

use TrackerType::{Enrollment as EN, Event as EV, Relationship as REL, TrackedEntity as TE};
use ValidationCode as C;

impl Planner<'_> {
    pub(super) fn delete(&mut self, t: TrackerType, uid: &str, index: usize) {
        let mut e = Errs::new(t, uid);
        if !Uid::is_valid(uid) {
            e.add(C::E1048, &[t.display_name(), uid]);
            return self.fail(e, index);
        }
        match self.exists(t, uid) {
            Exists::Missing => {
                let code = match t {
                    TE => C::E1063,
                    EN => C::E1081,
                    EV => C::E1032,
                    REL => C::E4016,
                };
                e.add(code, &[uid]);
                return self.fail(e, index);
            }
            // Already deleted (a re-sent deletion after a lost report): the goal is reached,
            // so it is acknowledged and the tablet can purge its copy.
            Exists::Deleted => return self.outcome(t, uid, index, Kind::Ignored),
            Exists::Live => {}
        }
        let can_cascade_te = self.user.has_authority("F_TEI_CASCADE_DELETE");
        let can_cascade_en = self.user.has_authority("F_ENROLLMENT_CASCADE_DELETE");
        match t {
            TE => {
                let Some(slot) = self.te_slot(uid) else {
                    e.add(C::E1063, &[uid]);
                    return self.fail(e, index);
                };
                let ou = slot.stored.org_unit.clone();
                if !self.can_capture(&ou) {
                    e.add(C::E1000, &[&self.user.username, &ou]);
                    return self.fail(e, index);
                }
                let live: Vec<String> = self.live_children(TE, uid);
                if !live.is_empty() && !can_cascade_te {
                    e.add(C::E1100, &[&self.user.username, uid]);
                    return self.fail(e, index);
                }
                for en in live {
                    for ev in self.live_children(EN, &en) {
                        self.tombstone(EV, &ev);
                    }
                    self.tombstone(EN, &en);
                }
                self.tombstone(TE, uid);
            }
            EN => {
                let Some(slot) = self.en_slot(uid) else {
                    e.add(C::E1081, &[uid]);
                    return self.fail(e, index);
                };
                let (ou, te) = (
                    slot.stored.org_unit.clone(),
                    slot.stored.tracked_entity.clone(),
                );
                if !self.can_capture(&ou) {
                    e.add(C::E1000, &[&self.user.username, &ou]);
                    return self.fail(e, index);
                }
                let live = self.live_children(EN, uid);
                if !live.is_empty() && !can_cascade_en {
                    e.add(C::E1103, &[&self.user.username, uid]);
                    return self.fail(e, index);
                }
                for ev in live {
                    self.tombstone(EV, &ev);
                }
                self.tombstone(EN, uid);
                self.touch(Some(&te));
            }
            EV => {
                let Some((stored, _)) = self.load::<StoredEvent>(Collection::EVENTS, uid) else {
                    e.add(C::E1032, &[uid]);
                    return self.fail(e, index);
                };
                if !self.can_capture(&stored.org_unit) {
                    e.add(C::E1000, &[&self.user.username, &stored.org_unit]);
                    return self.fail(e, index);
                }
                self.tombstone(EV, uid);
                self.touch(stored.tracked_entity.as_deref());
            }
            REL => {
                if !self.rel_deletable(uid) {
                    e.add(C::E4020, &[&self.user.username, uid]);
                    return self.fail(e, index);
                }
                let te = self.rel_tes(uid);
                self.tombstone(REL, uid);
                for t in te {
                    self.touch(Some(&t));
                }
            }
        }
        self.outcome(t, uid, index, Kind::Deleted);
    }

    /// Deleting a relationship needs write access to its `from` end, and to its `to` end too
    /// when it shows on both sides (DHIS2 2.42), as the ends are stored.
    fn rel_deletable(&self, rel: &str) -> bool {
        let Some(m) = Uid::try_from(rel)
            .ok()
            .and_then(|u| self.cat.relationships.get(&u))
        else {
            return false;
        };
        let bidirectional = self
            .load::<StoredRelationship>(Collection::RELATIONSHIPS, rel)
            .is_some_and(|(r, _)| r.bidirectional);
        self.item_writable(m.from.0, m.from.1.as_str())
            && (!bidirectional || self.item_writable(m.to.0, m.to.1.as_str()))
    }

    fn rel_tes(&self, rel: &str) -> Vec<String> {
        let Some(m) = Uid::try_from(rel)
            .ok()
            .and_then(|u| self.cat.relationships.get(&u))
        else {
            return Vec::new();
        };
        [m.from, m.to]
            .iter()
            .filter_map(|(t, u)| self.te_of(*t, u.as_str()))
            .collect()
    }

    /// Live enrollments of an entity, or live events of an enrollment.
    fn live_children(&self, t: TrackerType, uid: &str) -> Vec<String> {
        let Ok(u) = Uid::try_from(uid) else {
            return Vec::new();
        };
        match t {
            TE => self
                .cat
                .enrollments_of(u)
                .iter()
                .filter(|c| self.exists(EN, c.as_str()) == Exists::Live)
                .map(|c| c.to_string())
                .collect(),
            EN => self
                .cat
                .events_of(u)
                .iter()
                .filter(|c| self.exists(EV, c.as_str()) == Exists::Live)
                .map(|c| c.to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Plans a soft delete: the record keeps its last body, gets `deleted` and a new
    /// `updatedAt`; its relationships go with it.
    fn tombstone(&mut self, t: TrackerType, uid: &str) {
        if self.exists(t, uid) != Exists::Live {
            return;
        }
        match t {
            TE => {
                if let Some(s) = self.te_slot(uid) {
                    s.deleted = true;
                    s.dirty = true;
                }
            }
            EN => {
                if let Some(s) = self.en_slot(uid) {
                    s.deleted = true;
                    s.dirty = true;
                }
            }
            EV => {
                if !self.evs.contains_key(uid) {
                    let Some((stored, created)) = self.load::<StoredEvent>(Collection::EVENTS, uid)
                    else {
                        return;
                    };
                    self.order.push((EV, uid.to_string()));
                    self.evs.insert(
                        uid.to_string(),
                        Slot {
                            stored,
                            created_ms: Some(created),
                            dirty: true,
                            deleted: true,
                        },
                    );
                } else if let Some(s) = self.evs.get_mut(uid) {
                    s.deleted = true;
                    s.dirty = true;
                }
            }
            REL => {
                if !self.rels.contains_key(uid) {
                    let Some((stored, created)) =
                        self.load::<StoredRelationship>(Collection::RELATIONSHIPS, uid)
                    else {
                        return;
                    };
                    self.order.push((REL, uid.to_string()));
                    self.rels.insert(
                        uid.to_string(),
                        Slot {
                            stored,
                            created_ms: Some(created),
                            dirty: true,
                            deleted: true,
                        },
                    );
                } else if let Some(s) = self.rels.get_mut(uid) {
                    s.deleted = true;
                    s.dirty = true;
                }
                return;
            }
        }
        if let Ok(u) = Uid::try_from(uid) {
            let rels: Vec<String> = self
                .cat
                .relationships_of(u)
                .iter()
                .map(|r| r.to_string())
                .collect();
            for r in rels {
                self.tombstone(REL, &r);
            }
        }
    }
}
