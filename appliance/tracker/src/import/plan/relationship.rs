//! Plans relationships: validation of both ends and duplicate checks.

use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{ImportStrategy, Relationship, TrackerType, ValidationCode};
use serde_json::Value;

use super::{Errs, Exists, Kind, Obj, Planner, Slot, is_set};
use crate::meta::{self, ref_id, str_of};
use crate::model::StoredRelationship;

use TrackerType::{Enrollment as EN, Event as EV, Relationship as REL, TrackedEntity as TE};
use ValidationCode as C;

impl Planner<'_> {
    pub(super) fn relationship(&mut self, index: usize, r: Relationship) {
        let uid = r.relationship.clone().unwrap_or_default();
        let mut e = Errs::new(REL, &uid);
        if !Uid::is_valid(&uid) {
            e.add(C::E1048, &["Relationship", &uid]);
            return self.fail(e, index);
        }
        match self.exists(REL, &uid) {
            Exists::Deleted => {
                e.add(C::E4017, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Live if self.params.import_strategy == ImportStrategy::Create => {
                e.add(C::E4015, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Live => {
                // Relationships are immutable; a re-sent one is acknowledged, not changed.
                self.warn(REL, &uid, C::E4015, &[&uid]);
                return self.outcome(REL, &uid, index, Kind::Ignored);
            }
            Exists::Missing if self.params.import_strategy == ImportStrategy::Update => {
                e.add(C::E4016, &[&uid]);
                return self.fail(e, index);
            }
            Exists::Missing => {}
        }
        let Some(rt) = is_set(&r.relationship_type).map(str::to_string) else {
            e.add(C::E1124, &["relationshipType"]);
            return self.fail(e, index);
        };
        let Some(rt_obj) = self.meta.relationship_type(&rt) else {
            e.add(C::E4006, &[&rt]);
            return self.fail(e, index);
        };
        let (Some(from), Some(to)) = (r.from.clone(), r.to.clone()) else {
            e.add(C::E1124, &[if r.from.is_none() { "from" } else { "to" }]);
            return self.fail(e, index);
        };
        let (Some(f), Some(t)) = (from.single(), to.single()) else {
            e.add(C::E4001, &["from/to", &uid]);
            return self.fail(e, index);
        };
        if f == t {
            e.add(C::E4000, &[&uid]);
            return self.fail(e, index);
        }
        self.check_ends(
            &mut e,
            &uid,
            &rt,
            rt_obj,
            [(&f, "fromConstraint"), (&t, "toConstraint")],
        );
        let bidirectional = meta::bool_of(rt_obj, "bidirectional");
        if !e.any() && self.duplicate(&rt, &f, &t, bidirectional) {
            e.add(
                C::E4018,
                &[&uid, f.0.display_name(), &f.1, t.0.display_name(), &t.1],
            );
        }
        if !self.can_write(&rt, rt_obj) {
            e.add(C::E4006, &[&rt]);
        }
        // Write access to where `from` lives, and to `to` as well when the link shows on both
        // sides; read access to `to` otherwise (DHIS2 2.42) — as the ends are stored.
        let to_ok = if bidirectional {
            self.item_writable(t.0, &t.1)
        } else {
            self.item_readable(t.0, &t.1)
        };
        let allowed = self.item_writable(f.0, &f.1) && to_ok;
        if !allowed && !e.any() {
            e.add(C::E4020, &[&self.user.username, &uid]);
        }
        if e.any() {
            return self.fail(e, index);
        }
        let stored = StoredRelationship {
            relationship_type: rt,
            from,
            to,
            bidirectional,
            created_at_client: r.created_at_client,
            from_national: false,
        };
        for (ty, item) in [&f, &t] {
            let te = self.te_of(*ty, item);
            self.touch(te.as_deref());
        }
        self.order.push((REL, uid.clone()));
        self.rels.insert(
            uid.clone(),
            Slot {
                stored,
                created_ms: None,
                dirty: true,
                deleted: false,
            },
        );
        self.outcome(REL, &uid, index, Kind::Created);
    }

    /// Each end exists, was not refused in this payload, and is what the relationship type's
    /// constraint on that side names (entity kind, and tracked entity type).
    fn check_ends(
        &self,
        e: &mut Errs,
        uid: &str,
        rt: &str,
        rt_obj: &Obj,
        ends: [(&(TrackerType, String), &str); 2],
    ) {
        for ((ty, item), side) in ends {
            if self.failed.contains(item) {
                e.add(C::E5000, &["Relationship", uid, ty.display_name(), item]);
                continue;
            }
            if self.exists(*ty, item) != Exists::Live {
                e.add(C::E4012, &[ty.display_name(), item]);
                continue;
            }
            let Some(Value::Object(c)) = rt_obj.get(side) else {
                continue;
            };
            let want = match str_of(c, "relationshipEntity") {
                Some("TRACKED_ENTITY_INSTANCE") => TE,
                Some("PROGRAM_INSTANCE") => EN,
                Some("PROGRAM_STAGE_INSTANCE") => EV,
                _ => *ty,
            };
            if want != *ty {
                e.add(C::E4010, &[rt, want.display_name(), ty.display_name()]);
                continue;
            }
            if *ty == TE {
                if let Some(want_tet) = ref_id(c.get("trackedEntityType")) {
                    let found = self.te_tet(item).unwrap_or_default();
                    if found != want_tet {
                        e.add(C::E4014, &[rt, &want_tet, &found]);
                    }
                }
            }
        }
    }

    /// The org units an item lives in, as stored (or as planned by this payload): its own, and
    /// for a tracked entity the owners of its programs (a patient transferred in is written by
    /// its new owner).
    fn item_org_units(&self, t: TrackerType, uid: &str) -> Vec<String> {
        let planned = match t {
            TE => self.tes.get(uid).map(|s| {
                let mut ous = vec![s.stored.org_unit.clone()];
                ous.extend(s.stored.program_owners.iter().map(|o| o.org_unit.clone()));
                ous
            }),
            EN => self.ens.get(uid).map(|s| vec![s.stored.org_unit.clone()]),
            EV => self.evs.get(uid).map(|s| vec![s.stored.org_unit.clone()]),
            REL => None,
        };
        if let Some(p) = planned {
            return p;
        }
        let Ok(u) = Uid::try_from(uid) else {
            return Vec::new();
        };
        let stored = match t {
            TE => self.cat.tes.get(&u).map(|m| {
                let mut ous = vec![m.org_unit];
                ous.extend(m.owners.iter().map(|(_, o)| *o));
                ous
            }),
            EN => self.cat.enrollments.get(&u).map(|m| vec![m.org_unit]),
            EV => self.cat.events.get(&u).map(|m| vec![m.org_unit]),
            REL => None,
        };
        stored
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    pub(super) fn item_writable(&self, t: TrackerType, uid: &str) -> bool {
        self.item_org_units(t, uid)
            .iter()
            .any(|ou| self.can_capture(ou))
    }

    fn item_readable(&self, t: TrackerType, uid: &str) -> bool {
        self.item_org_units(t, uid)
            .iter()
            .any(|ou| self.can_capture(ou) || self.user.can_search_in(ou))
    }

    fn te_tet(&self, te: &str) -> Option<String> {
        if let Some(s) = self.tes.get(te) {
            return Some(s.stored.tracked_entity_type.clone());
        }
        self.cat
            .tes
            .get(&Uid::try_from(te).ok()?)
            .map(|m| m.tet.to_string())
    }

    /// The tracked entity an item belongs to.
    pub(super) fn te_of(&self, t: TrackerType, uid: &str) -> Option<String> {
        match t {
            TE => Some(uid.to_string()),
            EN => self
                .ens
                .get(uid)
                .map(|s| s.stored.tracked_entity.clone())
                .or_else(|| {
                    let m = self.cat.enrollments.get(&Uid::try_from(uid).ok()?)?;
                    Some(m.te.to_string())
                }),
            EV => self
                .evs
                .get(uid)
                .and_then(|s| s.stored.tracked_entity.clone())
                .or_else(|| {
                    let m = self.cat.events.get(&Uid::try_from(uid).ok()?)?;
                    m.te.map(|t| t.to_string())
                }),
            REL => None,
        }
    }

    fn duplicate(
        &self,
        rt: &str,
        f: &(TrackerType, String),
        t: &(TrackerType, String),
        bidirectional: bool,
    ) -> bool {
        let same = |a: &(TrackerType, String), b: &(TrackerType, String)| {
            (a == f && b == t) || (bidirectional && a == t && b == f)
        };
        for s in self.rels.values() {
            if s.deleted || s.stored.relationship_type != rt {
                continue;
            }
            if let (Some(a), Some(b)) = (s.stored.from.single(), s.stored.to.single()) {
                if same(&a, &b) {
                    return true;
                }
            }
        }
        let (Ok(fu), Ok(rtu)) = (Uid::try_from(f.1.as_str()), Uid::try_from(rt)) else {
            return false;
        };
        self.cat.relationships_of(fu).iter().any(|r| {
            self.cat.relationships.get(r).is_some_and(|m| {
                !m.stamps.deleted
                    && m.rel_type == rtu
                    && same(
                        &(m.from.0, m.from.1.to_string()),
                        &(m.to.0, m.to.1.to_string()),
                    )
            })
        })
    }
}
