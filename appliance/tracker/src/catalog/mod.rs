//! The in-memory catalog: for every tracker object, the few facts that queries filter, sort and
//! validate on (type, org unit, program, status, parents, times, deletion). Which entities
//! hold an attribute value is kept in the store ([`values`]), not here; only an import batch's
//! own values, not committed yet, are, until the batch ends. It holds no readable personal
//! data. At start it is read back from its copy saved in the store plus the tracker records
//! changed since ([`saved`]), or built from every record when no saved copy checks out.
//!
//! Invariant: while the tracker's import lock is not held, the catalog describes exactly the
//! committed store. Imports hold the lock from validation through the durable commit to
//! [`Catalog::apply`], and readers take the lock only to copy candidate lists, so a tablet that
//! read `serverDate` after a commit always finds that commit in the catalog.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{EnrollmentStatus, EventStatus, TrackerType};
use clinicbox_store::{Collection, ReadView, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use crate::model::{StoredEnrollment, StoredEvent, StoredRelationship, StoredTrackedEntity};

pub mod saved;
pub mod values;

/// The collections the catalog describes, in the order a build reads them.
pub const TRACKER_COLLECTIONS: [Collection; 4] = [
    Collection::TRACKED_ENTITIES,
    Collection::ENROLLMENTS,
    Collection::EVENTS,
    Collection::RELATIONSHIPS,
];

/// 16 bytes of SHA-256 over an attribute's UID and its lower-cased value.
pub type ValueDigest = [u8; 16];

/// The entities holding one value: nearly always one, kept inline (no allocation each).
type Holders = SmallVec<[Uid; 1]>;

/// A parent's children (enrollments of an entity, events of an enrollment): usually one or
/// two, kept inline.
type Children = SmallVec<[Uid; 2]>;

pub fn digest(attribute: &str, value: &str) -> ValueDigest {
    let mut h = Sha256::new();
    h.update(attribute.as_bytes());
    h.update([0]);
    h.update(value.to_lowercase().as_bytes());
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Store times and deletion of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamps {
    pub created_ms: u64,
    pub updated_ms: u64,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeMeta {
    pub tet: Uid,
    pub org_unit: Uid,
    pub owners: Vec<(Uid, Uid)>,
    /// Digests of its attribute values (each covers the attribute too), carried by an import's
    /// [`Change`] for the batch's provisional view ([`te_meta_with_values`]); empty in the
    /// catalog itself.
    pub values: Vec<ValueDigest>,
    pub stamps: Stamps,
}

impl TeMeta {
    /// The org unit that owns the entity for `program` (its registering org unit if none).
    pub fn owner(&self, program: Option<Uid>) -> Uid {
        program
            .and_then(|p| self.owners.iter().find(|(pp, _)| *pp == p).map(|(_, o)| *o))
            .unwrap_or(self.org_unit)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnMeta {
    pub te: Uid,
    pub program: Uid,
    pub org_unit: Uid,
    pub status: EnrollmentStatus,
    pub follow_up: bool,
    pub enrolled_at: clinicbox_dhis2::Dhis2Timestamp,
    pub occurred_at: Option<clinicbox_dhis2::Dhis2Timestamp>,
    pub stamps: Stamps,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvMeta {
    pub enrollment: Option<Uid>,
    pub te: Option<Uid>,
    pub program: Uid,
    pub stage: Uid,
    pub org_unit: Uid,
    pub status: EventStatus,
    pub occurred_at: Option<clinicbox_dhis2::Dhis2Timestamp>,
    pub scheduled_at: Option<clinicbox_dhis2::Dhis2Timestamp>,
    pub stamps: Stamps,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelMeta {
    pub rel_type: Uid,
    pub from: (TrackerType, Uid),
    pub to: (TrackerType, Uid),
    pub stamps: Stamps,
}

/// See the module docs.
#[derive(Debug, Default, PartialEq)]
pub struct Catalog {
    pub tes: HashMap<Uid, TeMeta>,
    pub enrollments: HashMap<Uid, EnMeta>,
    pub events: HashMap<Uid, EvMeta>,
    pub relationships: HashMap<Uid, RelMeta>,
    te_enrollments: HashMap<Uid, Children>,
    enrollment_events: HashMap<Uid, Children>,
    item_relationships: HashMap<Uid, Children>,
    /// Values held by entities an import batch changed and has not committed yet: digest →
    /// entities, and entity → its digests (empty if deleted). Empty outside a batch.
    provisional: HashMap<ValueDigest, Holders>,
    provisional_tes: HashMap<Uid, Vec<ValueDigest>>,
    /// Tracked entities and events by last update: a tablet's "anything new since T?" reads
    /// what changed, not everything the box holds.
    tes_by_update: BTreeSet<(u64, Uid)>,
    events_by_update: BTreeSet<(u64, Uid)>,
    /// Tracked entities newest created first, ties by UID: the order of a tablet's download,
    /// so a page is read from where it starts instead of sorting every entity.
    tes_by_created: BTreeSet<(Reverse<u64>, Uid)>,
    /// Changes with every apply and restore: a page cursor from an older generation is stale.
    generation: Generation,
}

/// A count of changes; not part of what the catalog describes, so two catalogs of the same
/// store compare equal whatever their histories.
#[derive(Debug, Default, Clone, Copy)]
struct Generation(u64);

impl PartialEq for Generation {
    fn eq(&self, _: &Generation) -> bool {
        true
    }
}

fn uid(s: &str) -> Option<Uid> {
    Uid::try_from(s).ok()
}

fn forget_child(map: &mut HashMap<Uid, Children>, parent: Uid, child: Uid) {
    if let Some(v) = map.get_mut(&parent) {
        v.retain(|c| *c != child);
        if v.is_empty() {
            map.remove(&parent);
        }
    }
}

fn push_unique(map: &mut HashMap<Uid, Children>, parent: Uid, child: Uid) {
    let v = map.entry(parent).or_default();
    if !v.contains(&child) {
        v.push(child);
    }
}

/// A change to apply after a commit.
#[derive(Debug, Clone)]
pub enum Change {
    Te(Uid, TeMeta),
    Enrollment(Uid, EnMeta),
    Event(Uid, EvMeta),
    Relationship(Uid, RelMeta),
}

/// What the catalog held for an object before a change that is not committed yet, to put
/// back if the commit fails.
#[derive(Debug, Clone)]
pub enum Prior {
    Te(Uid, Option<TeMeta>),
    Enrollment(Uid, Option<EnMeta>),
    Event(Uid, Option<EvMeta>),
    Relationship(Uid, Option<RelMeta>),
}

impl Change {
    /// The object it is about (its kind and UID).
    pub fn key(&self) -> (std::mem::Discriminant<Change>, Uid) {
        let (Change::Te(u, _)
        | Change::Enrollment(u, _)
        | Change::Event(u, _)
        | Change::Relationship(u, _)) = self;
        (std::mem::discriminant(self), *u)
    }

    /// Fills the commit time into the stamps (0 = "this commit").
    pub fn at(mut self, now: u64) -> Change {
        let s = match &mut self {
            Change::Te(_, m) => &mut m.stamps,
            Change::Enrollment(_, m) => &mut m.stamps,
            Change::Event(_, m) => &mut m.stamps,
            Change::Relationship(_, m) => &mut m.stamps,
        };
        if s.created_ms == 0 {
            s.created_ms = now;
        }
        s.updated_ms = now;
        self
    }
}

impl Catalog {
    /// Reads every tracker record of a snapshot (at start, when no saved catalog can be used).
    pub fn build(read: &ReadView) -> Result<Catalog, StoreError> {
        let mut c = Catalog::default();
        for collection in TRACKER_COLLECTIONS {
            for item in read.scan(collection)? {
                let (key, rec) = item?;
                c.put_record(collection, &key, &rec);
            }
        }
        Ok(c)
    }

    /// Puts what a stored tracker record says; an unreadable one is skipped (and logged).
    pub fn put_record(&mut self, c: Collection, key: &str, rec: &clinicbox_store::Record) {
        let Some(u) = uid(key) else {
            tracing::warn!(collection = %c.name(), uid = %key, "skipping a record whose key is not a UID");
            return;
        };
        let s = stamps(rec);
        let meta = match c {
            Collection::TRACKED_ENTITIES => rec
                .json::<StoredTrackedEntity>()
                .ok()
                .map(|te| te_meta(&te, s).map(|m| Change::Te(u, m))),
            Collection::ENROLLMENTS => rec
                .json::<StoredEnrollment>()
                .ok()
                .map(|e| en_meta(&e, s).map(|m| Change::Enrollment(u, m))),
            Collection::EVENTS => rec
                .json::<StoredEvent>()
                .ok()
                .map(|e| ev_meta(&e, s).map(|m| Change::Event(u, m))),
            Collection::RELATIONSHIPS => rec
                .json::<StoredRelationship>()
                .ok()
                .map(|r| rel_meta(&r, s).map(|m| Change::Relationship(u, m))),
            _ => return,
        };
        match meta {
            Some(Some(change)) => self.apply(vec![change]),
            Some(None) => {}
            None => {
                tracing::warn!(collection = %c.name(), uid = %key, "skipping an unreadable tracker record");
            }
        }
    }

    pub fn apply(&mut self, changes: Vec<Change>) {
        self.generation.0 += 1;
        for ch in changes {
            match ch {
                Change::Te(u, m) => self.put_te(u, m),
                Change::Enrollment(u, m) => self.put_enrollment(u, m),
                Change::Event(u, m) => self.put_event(u, m),
                Change::Relationship(u, m) => self.put_relationship(u, m),
            }
        }
    }

    /// [`Catalog::apply`] for changes an import batch has planned and not committed yet: the
    /// values they hold answer [`Catalog::holders`] until [`Catalog::settle`].
    pub fn apply_provisional(&mut self, changes: Vec<Change>) {
        for ch in &changes {
            if let Change::Te(u, m) = ch {
                self.hold_provisionally(*u, m);
            }
        }
        self.apply(changes);
    }

    fn hold_provisionally(&mut self, u: Uid, m: &TeMeta) {
        if let Some(old) = self.provisional_tes.remove(&u) {
            for k in old {
                if let Some(v) = self.provisional.get_mut(&k) {
                    v.retain(|h| *h != u);
                    if v.is_empty() {
                        self.provisional.remove(&k);
                    }
                }
            }
        }
        let held = if m.stamps.deleted {
            Vec::new()
        } else {
            m.values.clone()
        };
        for k in &held {
            let v = self.provisional.entry(*k).or_default();
            if !v.contains(&u) {
                v.push(u);
            }
        }
        self.provisional_tes.insert(u, held);
    }

    /// Ends an import batch: its values are committed (and in the store's index) or undone.
    pub fn settle(&mut self) {
        self.provisional.clear();
        self.provisional_tes.clear();
    }

    /// What the catalog holds now for the object `ch` is about.
    pub fn prior(&self, ch: &Change) -> Prior {
        match ch {
            Change::Te(u, _) => Prior::Te(*u, self.tes.get(u).cloned()),
            Change::Enrollment(u, _) => Prior::Enrollment(*u, self.enrollments.get(u).cloned()),
            Change::Event(u, _) => Prior::Event(*u, self.events.get(u).cloned()),
            Change::Relationship(u, _) => {
                Prior::Relationship(*u, self.relationships.get(u).cloned())
            }
        }
    }

    /// Puts back what [`Catalog::prior`] saw (forgetting an object it did not hold).
    pub fn restore(&mut self, p: Prior) {
        self.generation.0 += 1;
        match p {
            Prior::Te(u, Some(m)) => self.put_te(u, m),
            Prior::Te(u, None) => self.forget_te(u),
            Prior::Enrollment(u, Some(m)) => self.put_enrollment(u, m),
            Prior::Enrollment(u, None) => {
                if let Some(m) = self.enrollments.remove(&u) {
                    forget_child(&mut self.te_enrollments, m.te, u);
                }
            }
            Prior::Event(u, Some(m)) => self.put_event(u, m),
            Prior::Event(u, None) => {
                if let Some(m) = self.events.remove(&u) {
                    self.events_by_update.remove(&(m.stamps.updated_ms, u));
                    if let Some(e) = m.enrollment {
                        forget_child(&mut self.enrollment_events, e, u);
                    }
                }
            }
            Prior::Relationship(u, Some(m)) => self.put_relationship(u, m),
            Prior::Relationship(u, None) => {
                if let Some(m) = self.relationships.remove(&u) {
                    forget_child(&mut self.item_relationships, m.from.1, u);
                    forget_child(&mut self.item_relationships, m.to.1, u);
                }
            }
        }
    }

    fn forget_te(&mut self, u: Uid) {
        let Some(old) = self.tes.remove(&u) else {
            return;
        };
        self.tes_by_update.remove(&(old.stamps.updated_ms, u));
        self.tes_by_created
            .remove(&(Reverse(old.stamps.created_ms), u));
    }

    pub fn put_te(&mut self, u: Uid, mut m: TeMeta) {
        self.forget_te(u);
        m.values = Vec::new();
        self.tes_by_update.insert((m.stamps.updated_ms, u));
        self.tes_by_created
            .insert((Reverse(m.stamps.created_ms), u));
        self.tes.insert(u, m);
    }

    pub fn put_enrollment(&mut self, u: Uid, m: EnMeta) {
        push_unique(&mut self.te_enrollments, m.te, u);
        self.enrollments.insert(u, m);
    }

    pub fn put_event(&mut self, u: Uid, m: EvMeta) {
        if let Some(e) = m.enrollment {
            push_unique(&mut self.enrollment_events, e, u);
        }
        if let Some(old) = self.events.get(&u) {
            self.events_by_update.remove(&(old.stamps.updated_ms, u));
        }
        self.events_by_update.insert((m.stamps.updated_ms, u));
        self.events.insert(u, m);
    }

    /// Tracked entities updated at or after `ms`, oldest update first.
    pub fn tes_updated_since(&self, ms: u64) -> impl Iterator<Item = Uid> + '_ {
        self.tes_by_update
            .range((ms, Uid::RANGE_START)..)
            .map(|(_, u)| *u)
    }

    /// Every tracked entity, newest created first, ties by UID (the order of
    /// `order=createdAt:desc`).
    pub fn tes_newest_first(&self) -> impl Iterator<Item = Uid> + '_ {
        self.tes_newest_first_from(None).map(|(_, u)| u)
    }

    /// [`Catalog::tes_newest_first`] from `(created, uid)` on (inclusive), with each entity's
    /// creation time: where a page cursor resumes.
    pub fn tes_newest_first_from(
        &self,
        from: Option<(u64, Uid)>,
    ) -> impl Iterator<Item = (u64, Uid)> + '_ {
        let start = from.map_or(std::ops::Bound::Unbounded, |(ms, u)| {
            std::ops::Bound::Included((Reverse(ms), u))
        });
        self.tes_by_created
            .range((start, std::ops::Bound::Unbounded))
            .map(|(Reverse(ms), u)| (*ms, *u))
    }

    /// Changes whenever the catalog does.
    pub fn generation(&self) -> u64 {
        self.generation.0
    }

    /// Events updated at or after `ms`, oldest update first.
    pub fn events_updated_since(&self, ms: u64) -> impl Iterator<Item = Uid> + '_ {
        self.events_by_update
            .range((ms, Uid::RANGE_START)..)
            .map(|(_, u)| *u)
    }

    pub fn put_relationship(&mut self, u: Uid, m: RelMeta) {
        push_unique(&mut self.item_relationships, m.from.1, u);
        push_unique(&mut self.item_relationships, m.to.1, u);
        self.relationships.insert(u, m);
    }

    pub fn enrollments_of(&self, te: Uid) -> &[Uid] {
        self.te_enrollments.get(&te).map_or(&[], |c| c.as_slice())
    }

    pub fn events_of(&self, enrollment: Uid) -> &[Uid] {
        self.enrollment_events
            .get(&enrollment)
            .map_or(&[], |c| c.as_slice())
    }

    pub fn relationships_of(&self, item: Uid) -> &[Uid] {
        self.item_relationships
            .get(&item)
            .map_or(&[], |c| c.as_slice())
    }

    /// Live tracked entities holding `value` for `attribute` (case-insensitive), by UID: those
    /// of snapshot `read` (the store's index), as changed by the running batch's own imports.
    pub fn holders(
        &self,
        read: &ReadView,
        attribute: Uid,
        value: &str,
    ) -> Result<Vec<Uid>, StoreError> {
        let mut out = values::holders(read, attribute, value)?;
        if !self.provisional_tes.is_empty() {
            out.retain(|u| !self.provisional_tes.contains_key(u));
            if let Some(h) = self.provisional.get(&digest(attribute.as_str(), value)) {
                out.extend(h.iter().copied());
                out.sort_unstable();
            }
        }
        Ok(out)
    }
}

pub fn stamps(rec: &clinicbox_store::Record) -> Stamps {
    Stamps {
        created_ms: rec.created_ms,
        updated_ms: rec.updated_ms,
        deleted: rec.deleted,
    }
}

/// The entity's catalog entry, without value digests: the catalog keeps none, and a start
/// that reads every entity need not hash their values ([`te_meta_with_values`] for a batch).
pub fn te_meta(te: &StoredTrackedEntity, stamps: Stamps) -> Option<TeMeta> {
    Some(TeMeta {
        tet: uid(&te.tracked_entity_type)?,
        org_unit: uid(&te.org_unit)?,
        owners: te
            .program_owners
            .iter()
            .filter_map(|o| Some((uid(&o.program)?, uid(&o.org_unit)?)))
            .collect(),
        values: Vec::new(),
        stamps,
    })
}

/// [`te_meta`] with the digests of its attribute values, for an import batch's provisional
/// view ([`Catalog::apply_provisional`]).
pub fn te_meta_with_values(te: &StoredTrackedEntity, stamps: Stamps) -> Option<TeMeta> {
    let mut m = te_meta(te, stamps)?;
    m.values = te
        .attributes
        .iter()
        .filter(|a| uid(&a.attribute).is_some())
        .map(|a| digest(&a.attribute, &a.value))
        .collect();
    Some(m)
}

pub fn en_meta(e: &StoredEnrollment, stamps: Stamps) -> Option<EnMeta> {
    Some(EnMeta {
        te: uid(&e.tracked_entity)?,
        program: uid(&e.program)?,
        org_unit: uid(&e.org_unit)?,
        status: e.status,
        follow_up: e.follow_up,
        enrolled_at: e.enrolled_at,
        occurred_at: e.occurred_at,
        stamps,
    })
}

pub fn ev_meta(e: &StoredEvent, stamps: Stamps) -> Option<EvMeta> {
    Some(EvMeta {
        enrollment: e.enrollment.as_deref().and_then(uid),
        te: e.tracked_entity.as_deref().and_then(uid),
        program: uid(&e.program)?,
        stage: uid(&e.program_stage)?,
        org_unit: uid(&e.org_unit)?,
        status: e.status,
        occurred_at: e.occurred_at,
        scheduled_at: e.scheduled_at,
        stamps,
    })
}

pub fn rel_meta(r: &StoredRelationship, stamps: Stamps) -> Option<RelMeta> {
    let (ft, fu) = r.from.single()?;
    let (tt, tu) = r.to.single()?;
    Some(RelMeta {
        rel_type: uid(&r.relationship_type)?,
        from: (ft, uid(&fu)?),
        to: (tt, uid(&tu)?),
        stamps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_changed_since_a_time_is_read_from_the_update_index_each_entity_once() {
        let mut cat = Catalog::default();
        let te = |n: u8| Uid::try_from(format!("teIndex{n:04}").as_str()).expect("uid");
        let meta = |updated: u64| TeMeta {
            tet: te(99),
            org_unit: te(98),
            owners: Vec::new(),
            values: Vec::new(),
            stamps: Stamps {
                created_ms: 1,
                updated_ms: updated,
                deleted: false,
            },
        };
        cat.put_te(te(1), meta(100));
        cat.put_te(te(2), meta(200));
        cat.put_te(te(1), meta(300));
        let since = |ms| cat.tes_updated_since(ms).collect::<Vec<_>>();
        assert_eq!(since(150), vec![te(2), te(1)]);
        assert_eq!(since(250), vec![te(1)]);
        assert_eq!(since(0).len(), 2, "an entity updated twice is listed once");
        assert!(since(301).is_empty());
        let newest: Vec<_> = cat.tes_newest_first().collect();
        assert_eq!(newest, vec![te(1), te(2)], "both created at 1: by UID");
        cat.forget_te(te(1));
        assert_eq!(cat.tes_newest_first().collect::<Vec<_>>(), vec![te(2)]);
    }
}
