//! Changes made on both sides: when national and the box changed the same value since the
//! last round, the pull applies one rule (the later change wins, by the time each side
//! recorded it) and keeps both versions here, in the same write as the merge, for an admin.
//! One record per value (`<kind>/<key>/<field>`), so the collection grows no faster than the
//! values themselves.

use std::collections::HashSet;

use clinicbox_dhis2::ServerTimeZone;
use clinicbox_store::{Collection, ReadView, StoreError, WriteCtx};
use serde::{Deserialize, Serialize};

pub const CONFLICTS: Collection = Collection::named("uplinkConflicts");

/// Who the box names as the author of national's changes.
pub const NATIONAL: &str = "national";

/// How a merge of national's changes sees the box.
pub struct MergeContext {
    /// The outbox's confirmed position: a change after it has not reached national yet.
    pub confirmed_seq: u64,
    /// National's zone, for its times.
    pub zone: ServerTimeZone,
    /// The box's clock minus national's, in ms.
    pub skew_ms: i64,
    /// Usernames of the box's accounts (their values coming back are echoes).
    pub box_users: HashSet<String>,
}

impl MergeContext {
    /// Whether national's change (`national_ms`, its clock) came after the box's (`box_ms`,
    /// the box's clock); a change national gave no time for is not later.
    pub fn national_later(&self, box_ms: u64, national_ms: Option<i64>) -> bool {
        let box_ms = i64::try_from(box_ms).unwrap_or(i64::MAX) - self.skew_ms;
        national_ms.is_some_and(|n| n > box_ms)
    }

    /// A value national holds as stored by one of the box's users: the box's own change
    /// echoed back, not a change made at national.
    pub fn is_echo(&self, stored_by: Option<&str>) -> bool {
        stored_by.is_some_and(|by| self.box_users.contains(by))
    }
}

/// Which version a conflict kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The box's change is kept and sent to national.
    Box,
    /// National's change replaced the box's.
    National,
}

/// One value changed on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    /// `dataValue`, `trackedEntity`, `event`…
    pub kind: String,
    /// The object's key (a UID, or `de/pe/ou/coc/aoc` for a data value).
    pub key: String,
    /// The field within it (an attribute or data element), when the object has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The box's version (`None`: deleted or absent).
    pub on_box: Option<String>,
    pub at_national: Option<String>,
    pub chosen: Side,
    /// When the pull met it (box clock, ms).
    pub at_ms: u64,
}

impl Conflict {
    fn record_key(&self) -> String {
        match &self.field {
            Some(f) => format!("{}/{}/{f}", self.kind, self.key),
            None => format!("{}/{}", self.kind, self.key),
        }
    }
}

/// Keeps `c` (replacing an earlier conflict of the same value), inside the merge's write.
pub fn record(ctx: &mut WriteCtx<'_>, c: &Conflict) -> Result<(), StoreError> {
    ctx.put_json(CONFLICTS, &c.record_key(), c)
}

/// The latest `limit` conflicts, newest first, and how many there are.
pub fn latest(read: &ReadView, limit: usize) -> Result<(Vec<Conflict>, usize), StoreError> {
    let mut all = Vec::new();
    for item in read.scan(CONFLICTS)? {
        let (_, rec) = item?;
        if rec.deleted {
            continue;
        }
        if let Ok(c) = rec.json::<Conflict>() {
            all.push(c);
        }
    }
    let total = all.len();
    all.sort_by_key(|c| std::cmp::Reverse(c.at_ms));
    all.truncate(limit);
    Ok((all, total))
}
