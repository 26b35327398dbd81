//! The uplink socket's pull half: what national sent for the box, handed to `serve` to apply.
//!
//! The uplink reads national (it never listens); `serve` owns the store, so the uplink posts a
//! [`MetadataPull`] on the socket and `serve` imports it through the same checks as
//! `POST /api/metadata`. The pull's bookkeeping ([`PullState`]) is kept by `serve` only once
//! the import it describes went through, so a cut anywhere makes the next round fetch again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest metadata pull `serve` reads (a whole country's program with its options fits).
pub const MAX_PULL_BYTES: usize = 48 * 1024 * 1024;

/// What one source (a national URL the pull reads) last gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Source {
    /// National's `ETag` for the answer, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// What the answer named, by collection (`organisationUnits`, `programs`, `dataSets`,
    /// `users`, `userGroups`): needed when the next answer is 304 and brings no body.
    pub named: BTreeMap<String, Vec<String>>,
}

/// The pull's bookkeeping, kept by `serve` with the metadata it describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullState {
    /// By source path (`/api/organisationUnits/…`).
    pub sources: BTreeMap<String, Source>,
    /// National's clock when the last applied pull started: later changes are newer than it.
    pub watermark: Option<String>,
    /// When metadata from national was last applied, ms since the epoch.
    pub applied_ms: Option<u64>,
}

impl PullState {
    /// Every id the sources named in `collection`, once each.
    pub fn named(&self, collection: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .sources
            .values()
            .flat_map(|s| s.named.get(collection).into_iter().flatten().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// An object national deleted (`/api/deletedObjects`), by collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub collection: String,
    pub uid: String,
}

/// One pull for `serve` to apply: the package (only what changed, already fitted to the box),
/// national's deletions, and the state to keep once both went through.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataPull {
    pub package: serde_json::Map<String, Value>,
    pub deletions: Vec<Deletion>,
    pub state: PullState,
}

/// What `serve` did with a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullOutcome {
    /// `applied`, `unchanged` or `refused`.
    pub result: String,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Why the package was refused (the import's first errors), or why parts were left out.
    pub messages: Vec<String>,
    /// Stored values that refer to an option or a stage element national's metadata no
    /// longer has (kept, and still sent), counted after the metadata changed.
    pub stale_values: u64,
}

impl PullOutcome {
    pub fn refused(&self) -> bool {
        self.result == "refused"
    }
}

/// How the metadata pull went, for the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataReport {
    /// When this outcome happened, ms since the epoch.
    pub at_ms: u64,
    pub outcome: PullOutcome,
}

/// A staff member's first login on the box, for the uplink to check at national
/// (`GET /v1/logins/next`, long-polled). The password lives in memory only, on both sides.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginQuestion {
    pub id: u64,
    pub username: String,
    /// The password's bytes, base64 (a tablet may send Latin-1).
    pub password_b64: String,
}

impl std::fmt::Debug for LoginQuestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginQuestion")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// National's word on a [`LoginQuestion`] (`POST /v1/logins/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginVerdict {
    Right,
    Wrong,
    Unavailable,
}

/// How long `serve` holds a long poll open with no question before answering 204.
pub const LOGIN_POLL_SECS: u64 = 20;

/// Which approval states the box needs (`GET /v1/approvals`): the workflows of its data sets,
/// their recent periods and the org units they are assigned to, one query per workflow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalQuery {
    pub wf: String,
    pub pe: Vec<String>,
    pub ou: Vec<String>,
}

/// National's answer to one [`ApprovalQuery`] (`POST /v1/approvals`): every state it gave;
/// a combination of the query it gave none for has none on the box either.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalStates {
    pub query: ApprovalQuery,
    pub states: Vec<Value>,
}

/// What `serve` did with one [`ApprovalStates`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ApprovalsRecorded {
    pub changed: usize,
}

/// The most states one [`ApprovalStates`] may carry.
pub const MAX_APPROVAL_STATES: usize = 20_000;

/// How many recent periods of a data set the box asks approval states for.
pub const APPROVAL_PERIODS: i32 = 12;

/// A pool of values national reserved for the box (`GET /v1/reserved`): a generated attribute,
/// the org-unit code its pattern was resolved with, and how many unexpired values it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservedPool {
    pub attribute: String,
    pub org_unit_code: Option<String>,
    pub have: usize,
}

/// Values national reserved for the box (`POST /v1/reserved`), good for `expiry_days`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservedBlock {
    pub attribute: String,
    pub org_unit_code: Option<String>,
    pub values: Vec<String>,
    pub expiry_days: u32,
}

/// What `serve` did with one [`ReservedBlock`]: values new to the box.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ReservedAdded {
    pub added: usize,
}

/// What the data pull needs from `serve` (`GET /v1/data`): the box's data sets, and national's
/// time the last data pull covered (`None` before the first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataPlan {
    pub data_sets: Vec<String>,
    /// Programs with registration, and event programs, assigned to the box's org units.
    pub tracker_programs: Vec<String>,
    pub event_programs: Vec<String>,
    pub watermark: Option<String>,
}

/// National's changed values of one data set (`POST /v1/data/values`), with what the merge
/// needs to compare times: national's zone and the box's clock minus national's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NationalValues {
    pub data_set: String,
    pub zone: String,
    pub skew_secs: i64,
    pub values: Vec<Value>,
}

/// National's changed tracker objects of one page (`POST /v1/data/tracker`): tracked entities
/// with their enrollments and events nested, or events; times read in `zone`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NationalTracker {
    pub zone: String,
    pub skew_secs: i64,
    pub tracked_entities: Vec<Value>,
    pub events: Vec<Value>,
}

/// The most objects one [`NationalTracker`] may carry.
pub const MAX_NATIONAL_OBJECTS: usize = 5_000;

/// The most values one [`NationalValues`] may carry.
pub const MAX_NATIONAL_VALUES: usize = 200_000;

/// What `serve` did with national's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MergeReport {
    pub applied: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub conflicts: u64,
}

impl MergeReport {
    pub fn add(&mut self, other: MergeReport) {
        self.applied += other.applied;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
        self.conflicts += other.conflicts;
    }
}

/// National's time the data pull has covered (`POST /v1/data/watermark`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataWatermark {
    pub watermark: String,
}
