//! The outbox: the store's change log read as "what national has not confirmed yet".
//!
//! The position (every change up to `confirmed` reached national or is parked) and the parked
//! objects are records of their own, written durably when the uplink confirms a batch and
//! nothing else moves them, so a power cut at any instant leaves either the old position (the
//! batch is sent again: harmless, national upserts by UID) or the new one.

use std::collections::{BTreeMap, HashSet};

use clinicbox_api::Snapshot;
use clinicbox_control::outbox::{
    Batch, Confirm, FileRef, MAX_BATCH_BYTES, ObjectKind, OwnershipTransfer, Parked, Position,
    TrackerPart,
};
use clinicbox_dhis2::ServerTimeZone;
use clinicbox_dhis2::tracker::TrackerType;
use clinicbox_dhis2::value_type::excerpt_message;
use clinicbox_store::{Collection, ReadView, Store, StoreError};
use clinicbox_tracker::outbox::ForNational;
use clinicbox_tracker::{NationalError, Tracker};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The uplink's position (one record, key [`POSITION_KEY`]).
pub const UPLINK: Collection = Collection::named("uplink");
/// Objects national refused, keyed `<kind>/<uid>`; a tombstone once a later send succeeded.
pub const PARKED: Collection = Collection::named("uplinkParked");
const POSITION_KEY: &str = "position";
/// Changes read per batch at most, so a batch after a big metadata import stays quick.
const MAX_CHANGES_PER_BATCH: usize = 50_000;
/// How far `pending` counts by kind before it says "at least".
const PENDING_SCAN_LIMIT: usize = 20_000;
/// What one ownership transfer costs on the link, about: one small PUT.
const TRANSFER_BYTES: usize = 200;
/// National's code for "not persisted because an object it references was not".
const DEPENDENCY_FAILED: &str = "E5000";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("rendering a record: {0}")]
    Render(#[from] NationalError),
    #[error("the position is {current}, not {claimed}: another round moved it")]
    Moved { current: u64, claimed: u64 },
    #[error("{0}")]
    Invalid(String),
}

/// The durable position record.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPosition {
    pub confirmed: u64,
    /// When a confirm last carried objects national accepted (box clock, ms).
    #[serde(default)]
    pub last_sent_ms: Option<u64>,
}

/// What the outbox holds, for the status page.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStatus {
    pub confirmed: u64,
    pub end: u64,
    pub last_sent_ms: Option<u64>,
    /// Changes not yet confirmed, by kind (each object once).
    pub pending: BTreeMap<ObjectKind, u64>,
    /// True when more changes wait than were counted.
    pub pending_at_least: bool,
    pub parked: Vec<Parked>,
}

/// The kind of object a change is about, if national takes it.
pub fn kind_of(collection: &str) -> Option<ObjectKind> {
    if let Some(t) = clinicbox_tracker::outbox::tracker_type(collection) {
        return Some(match t {
            TrackerType::TrackedEntity => ObjectKind::TrackedEntity,
            TrackerType::Enrollment => ObjectKind::Enrollment,
            TrackerType::Event => ObjectKind::Event,
            TrackerType::Relationship => ObjectKind::Relationship,
        });
    }
    if collection == Collection::FILE_RESOURCES.name() {
        Some(ObjectKind::FileResource)
    } else if collection == clinicbox_tracker::outbox::TRANSFERS.name() {
        Some(ObjectKind::OwnershipTransfer)
    } else if collection == clinicbox_aggregate::records::DATA_VALUES.name() {
        Some(ObjectKind::DataValue)
    } else if collection == clinicbox_aggregate::records::REGISTRATIONS.name() {
        Some(ObjectKind::Registration)
    } else {
        None
    }
}

fn tracker_type(kind: ObjectKind) -> Option<TrackerType> {
    match kind {
        ObjectKind::TrackedEntity => Some(TrackerType::TrackedEntity),
        ObjectKind::Enrollment => Some(TrackerType::Enrollment),
        ObjectKind::Event => Some(TrackerType::Event),
        ObjectKind::Relationship => Some(TrackerType::Relationship),
        _ => None,
    }
}

fn is_own(collection: &str) -> bool {
    collection == UPLINK.name()
        || collection == PARKED.name()
        || collection == clinicbox_api::conflicts::CONFLICTS.name()
}

/// What every object of one batch renders against.
struct RenderCtx<'a> {
    read: &'a ReadView,
    snap: &'a Snapshot,
    /// National's zone, for the times the box stamped itself.
    national: Option<&'a ServerTimeZone>,
}

/// The outbox of one box.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    tracker: Tracker,
}

impl Outbox {
    /// The latest `limit` values changed on both sides, and how many there are.
    pub fn conflicts(
        &self,
        limit: usize,
    ) -> Result<(Vec<clinicbox_api::conflicts::Conflict>, usize), OutboxError> {
        Ok(clinicbox_api::conflicts::latest(
            &self.store.read()?,
            limit,
        )?)
    }

    /// The tracker the outbox reads (the uplink socket's reserved values go to it too).
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn new(tracker: Tracker) -> Outbox {
        Outbox {
            store: tracker.store().clone(),
            tracker,
        }
    }

    fn stored_position(read: &ReadView) -> Result<StoredPosition, StoreError> {
        Ok(read
            .get(UPLINK, POSITION_KEY)?
            .and_then(|r| r.json().ok())
            .unwrap_or_default())
    }

    pub fn position(&self) -> Result<Position, OutboxError> {
        let read = self.store.read()?;
        Ok(Position {
            confirmed: Self::stored_position(&read)?.confirmed,
            end: read.last_seq()?,
            parked: parked(&read)?.len(),
            on_battery: false,
        })
    }

    /// The changes after the confirmed position, rendered, up to about `max_bytes` (at least
    /// one object, so a huge one still moves).
    pub fn batch(
        &self,
        max_bytes: usize,
        national: Option<&ServerTimeZone>,
    ) -> Result<Batch, OutboxError> {
        let max_bytes = max_bytes.clamp(1, MAX_BATCH_BYTES);
        // One metadata snapshot for the whole batch: every object renders against it.
        let snap = self.tracker.api().metadata().snapshot()?;
        let read = self.store.read()?;
        let ctx = RenderCtx {
            read: &read,
            snap: &snap,
            national,
        };
        let after = Self::stored_position(&read)?.confirmed;
        let end = read.last_seq()?;
        let mut batch = Batch {
            after,
            upto: after,
            end,
            ..Batch::default()
        };
        let mut seen = HashSet::new();
        let (mut bytes, mut scanned) = (0usize, 0usize);
        // Objects refused only because what they depend on was, which has since gone through.
        for p in parked(&read)?.into_iter().filter(|p| p.retry) {
            if bytes >= max_bytes {
                break;
            }
            if seen.insert((p.kind, p.uid.clone())) {
                bytes += self.add(&ctx, &mut batch, &mut seen, p.kind, &p.uid)?;
                batch.retried += 1;
            }
        }
        'scan: while batch.upto < end && scanned < MAX_CHANGES_PER_BATCH {
            let changes = read.changes_since(batch.upto, 1024)?;
            if changes.is_empty() {
                break;
            }
            for ch in changes {
                if bytes >= max_bytes || scanned >= MAX_CHANGES_PER_BATCH {
                    break 'scan;
                }
                scanned += 1;
                batch.upto = ch.seq;
                let Some(kind) = kind_of(&ch.collection) else {
                    if !is_own(&ch.collection) {
                        batch.skipped += 1;
                    }
                    continue;
                };
                if !seen.insert((kind, ch.key.clone())) {
                    continue;
                }
                bytes += self.add(&ctx, &mut batch, &mut seen, kind, &ch.key)?;
            }
        }
        Ok(batch)
    }

    /// Renders one changed object into the batch, and before it the files its values name;
    /// returns the size in bytes.
    fn add(
        &self,
        ctx: &RenderCtx<'_>,
        batch: &mut Batch,
        seen: &mut HashSet<(ObjectKind, String)>,
        kind: ObjectKind,
        key: &str,
    ) -> Result<usize, OutboxError> {
        let read = ctx.read;
        let rendered = match tracker_type(kind) {
            Some(t) => {
                match clinicbox_tracker::outbox::render(
                    &self.tracker,
                    read,
                    ctx.snap,
                    t,
                    key,
                    ctx.national,
                )? {
                    Some(ForNational::Upsert(v)) => Some((list(&mut batch.tracker, t), v)),
                    Some(ForNational::Delete(v)) => {
                        Some((list(&mut batch.tracker_deletions, t), v))
                    }
                    None => None,
                }
            }
            None if kind == ObjectKind::OwnershipTransfer => {
                let Some(t) = clinicbox_tracker::outbox::transfer(read, key)? else {
                    batch.skipped += 1;
                    return Ok(0);
                };
                batch.transfers.push(OwnershipTransfer {
                    tracked_entity: t.tracked_entity,
                    program: t.program,
                    org_unit: t.org_unit,
                });
                return Ok(TRANSFER_BYTES);
            }
            None if kind == ObjectKind::FileResource => {
                let Some(file) = file_ref(read, key)? else {
                    return Ok(0);
                };
                let size = usize::try_from(file.content_length).unwrap_or(usize::MAX);
                batch.files.push(file);
                return Ok(size);
            }
            None if kind == ObjectKind::DataValue => {
                clinicbox_aggregate::outbox::data_value(read, key)?
                    .map(|v| with_data_set(ctx.snap, v))
                    .map(|v| (&mut batch.data_values, v))
            }
            None => clinicbox_aggregate::outbox::registration(read, key)?
                .map(|v| (&mut batch.registrations, v)),
        };
        let Some((list, value)) = rendered else {
            // Nothing national needs (gone, or national's own version): the position still
            // moves past it.
            batch.skipped += 1;
            return Ok(0);
        };
        let mut size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
        // The object is rendered as it is now, so it may name a file uploaded after the change
        // this batch covers: that file goes in this batch too (national refuses a value whose
        // file it does not hold, E1084; a file it already holds is skipped).
        for uid in file_candidates(&value) {
            let key = (ObjectKind::FileResource, uid.to_string());
            if seen.contains(&key) {
                continue;
            }
            if let Some(file) = file_ref(read, uid)? {
                seen.insert(key);
                size += usize::try_from(file.content_length).unwrap_or(usize::MAX);
                batch.files.push(file);
            }
        }
        list.push(value);
        Ok(size)
    }

    /// The bytes of a file resource, for the uplink to send.
    pub fn file_bytes(&self, uid: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        let read = self.store.read()?;
        Ok(read
            .get(Collection::FILE_BLOBS, uid)?
            .filter(|r| !r.deleted)
            .map(|r| r.body))
    }

    /// Moves the position from `c.after` to `c.upto`, parks what national refused and forgets
    /// earlier refusals of what it accepted, in one durable write.
    pub async fn confirm(&self, c: Confirm) -> Result<Position, OutboxError> {
        if c.upto < c.after {
            return Err(OutboxError::Invalid(format!(
                "upto {} is before after {}",
                c.upto, c.after
            )));
        }
        // Parked because something they reference was refused (E5000): sent again once
        // anything parked goes through. Read here: only a confirm changes parked objects, and
        // a concurrent confirm fails the position check below.
        let dependents: Vec<String> = parked(&self.store.read()?)?
            .into_iter()
            .filter(|p| p.code == DEPENDENCY_FAILED && !p.retry)
            .map(|p| parked_key(p.kind, &p.uid))
            .collect();
        let result = self
            .store
            .write(move |ctx| -> Result<(), OutboxError> {
                let mut pos: StoredPosition = ctx
                    .get(UPLINK, POSITION_KEY)?
                    .and_then(|r| r.json().ok())
                    .unwrap_or_default();
                if pos.confirmed != c.after {
                    return Err(OutboxError::Moved {
                        current: pos.confirmed,
                        claimed: c.after,
                    });
                }
                let now = ctx.now_ms();
                let mut released = false;
                for (kind, uid) in &c.sent {
                    released |= ctx.delete(PARKED, &parked_key(*kind, uid))?;
                }
                for p in c.parked {
                    let key = parked_key(p.kind, &p.uid);
                    let attempts = ctx
                        .get(PARKED, &key)?
                        .filter(|r| !r.deleted)
                        .and_then(|r| r.json::<Parked>().ok())
                        .map_or(0, |old| old.attempts);
                    let parked = Parked {
                        message: excerpt_message(&p.message).into_owned(),
                        attempts: attempts.saturating_add(1),
                        at_ms: now,
                        retry: false,
                        ..p
                    };
                    ctx.put_json(PARKED, &key, &parked)?;
                }
                if released {
                    for key in &dependents {
                        let Some(mut p) = ctx
                            .get(PARKED, key)?
                            .filter(|r| !r.deleted)
                            .and_then(|r| r.json::<Parked>().ok())
                        else {
                            continue;
                        };
                        if p.code == DEPENDENCY_FAILED && !p.retry {
                            p.retry = true;
                            ctx.put_json(PARKED, key, &p)?;
                        }
                    }
                }
                pos.confirmed = c.upto;
                if !c.sent.is_empty() {
                    pos.last_sent_ms = Some(now);
                }
                ctx.put_json(UPLINK, POSITION_KEY, &pos)?;
                Ok(())
            })
            .await;
        match result {
            Ok(_) => self.position(),
            Err(clinicbox_store::WriteError::Rejected(e)) => Err(e),
            Err(clinicbox_store::WriteError::Store(e)) => Err(e.into()),
        }
    }

    /// Position, pending counts by kind (bounded scan) and parked objects.
    pub fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let read = self.store.read()?;
        let pos = Self::stored_position(&read)?;
        let end = read.last_seq()?;
        let mut seen = HashSet::new();
        let mut pending: BTreeMap<ObjectKind, u64> = BTreeMap::new();
        let (mut at, mut scanned) = (pos.confirmed, 0usize);
        while at < end && scanned < PENDING_SCAN_LIMIT {
            let changes = read.changes_since(at, 1024)?;
            let Some(last) = changes.last() else { break };
            at = last.seq;
            scanned += changes.len();
            for ch in changes {
                if let Some(kind) = kind_of(&ch.collection)
                    && seen.insert((kind, ch.key))
                {
                    *pending.entry(kind).or_default() += 1;
                }
            }
        }
        Ok(OutboxStatus {
            confirmed: pos.confirmed,
            end,
            last_sent_ms: pos.last_sent_ms,
            pending,
            pending_at_least: at < end,
            parked: parked(&read)?,
        })
    }
}

/// Names the value's data set when exactly one of its org unit's data sets holds its data
/// element (the uplink sends one request per data set and period, so a locked or approved set
/// holds up no other); otherwise national works it out.
fn with_data_set(snap: &Snapshot, mut v: Value) -> Value {
    let (Some(de), Some(ou)) = (
        v.get("dataElement").and_then(Value::as_str),
        v.get("orgUnit").and_then(Value::as_str),
    ) else {
        return v;
    };
    let holds = |ds: &&String| {
        snap.get("dataSets", ds)
            .and_then(|d| d.get("dataSetElements"))
            .and_then(Value::as_array)
            .is_some_and(|els| {
                els.iter()
                    .any(|e| e.pointer("/dataElement/id").and_then(Value::as_str) == Some(de))
            })
    };
    let mut sets = snap.data_sets_of_org_unit(ou).iter().filter(holds);
    if let (Some(ds), None) = (sets.next(), sets.next()) {
        v["dataSet"] = Value::String(ds.clone());
    }
    v
}

fn list(part: &mut TrackerPart, t: TrackerType) -> &mut Vec<Value> {
    match t {
        TrackerType::TrackedEntity => &mut part.tracked_entities,
        TrackerType::Enrollment => &mut part.enrollments,
        TrackerType::Event => &mut part.events,
        TrackerType::Relationship => &mut part.relationships,
    }
}

/// Values of an object that may be file resource UIDs: `value` of its `dataValues[]` and
/// `attributes[]`, or its own `value` (an aggregate data value), when shaped like a UID.
fn file_candidates(v: &Value) -> Vec<&str> {
    let own = v.get("value").into_iter();
    let nested = ["dataValues", "attributes"]
        .into_iter()
        .filter_map(|k| v.get(k).and_then(Value::as_array))
        .flatten()
        .filter_map(|item| item.get("value"));
    own.chain(nested)
        .filter_map(Value::as_str)
        .filter(|s| clinicbox_dhis2::Uid::is_valid(s))
        .collect()
}

/// A file resource as national takes it; `None` for a deleted or unreadable one.
fn file_ref(read: &ReadView, uid: &str) -> Result<Option<FileRef>, StoreError> {
    let Some(rec) = read
        .get(Collection::FILE_RESOURCES, uid)?
        .filter(|r| !r.deleted)
    else {
        return Ok(None);
    };
    Ok(rec
        .json::<clinicbox_api::files::StoredFile>()
        .ok()
        .map(|f| FileRef {
            uid: uid.to_string(),
            name: f.name,
            content_type: f.content_type,
            content_length: f.content_length,
            domain: f.domain,
        }))
}

fn parked_key(kind: ObjectKind, uid: &str) -> String {
    format!("{}/{uid}", kind.plural())
}

fn parked(read: &ReadView) -> Result<Vec<Parked>, StoreError> {
    Ok(read
        .scan(PARKED)?
        .filter_map(|item| item.ok())
        .filter(|(_, rec)| !rec.deleted)
        .filter_map(|(_, rec)| rec.json::<Parked>().ok())
        .collect())
}
