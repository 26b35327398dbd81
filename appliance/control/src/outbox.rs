//! The uplink socket's protocol: how `clinicbox uplink` reads the box's outbox from
//! `clinicbox serve` and tells it what national confirmed.
//!
//! HTTP/1.1 over a Unix socket (`[uplink] socket`, default [`DEFAULT_UPLINK_SOCKET`], mode 0660,
//! group of the uplink's user), JSON bodies, every path under [`VERSION_PREFIX`]:
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/outbox?max_bytes=N&zone=Z` | [`Batch`]: the changes after the confirmed position, rendered as DHIS2 payloads (times the box stamped in national's zone `Z`) |
//! | `POST /v1/confirm` [`Confirm`] | [`Position`] after the move; 409 if `after` is not the position (another round moved it) |
//! | `GET /v1/position` | [`Position`] |
//! | `POST /v1/report` [`UplinkReport`] | 204; what the status page shows about the uplink |
//! | `GET /v1/files/{uid}` | the bytes of a file resource in the batch (`application/octet-stream`) |
//!
//! A batch is read-only: nothing moves until a confirm names the batch's `after` and `upto`, so
//! an uplink killed at any instant re-reads the same changes (re-sending is harmless: every
//! object carries its UID and national upserts). The protocol is versioned in the path, so a
//! daemon and an uplink from different releases fail with 404, not with a misread.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where `serve` listens for the uplink by default (on the image a setgid directory of the
/// uplink's group, made by tmpfiles).
pub const DEFAULT_UPLINK_SOCKET: &str = "/run/clinicbox-uplink/uplink.sock";
/// The file name of the socket inside a demo box's data directory.
pub const DEMO_SOCKET_NAME: &str = "uplink.sock";
/// The path prefix of this protocol version.
pub const VERSION_PREFIX: &str = "/v1";
/// The most a batch may hold, whatever the uplink asks for.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The largest request body `serve` reads on this socket.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// The most parked objects one confirm may carry.
pub const MAX_PARKED_PER_CONFIRM: usize = 20_000;

/// The kinds of object the uplink sends, as the status page counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectKind {
    FileResource,
    TrackedEntity,
    Enrollment,
    Event,
    Relationship,
    DataValue,
    Registration,
    /// A tablet moved a patient's program owner on the box (`PUT /api/tracker/ownership/transfer`);
    /// its key is `trackedEntity/program`.
    OwnershipTransfer,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 8] = [
        ObjectKind::FileResource,
        ObjectKind::TrackedEntity,
        ObjectKind::Enrollment,
        ObjectKind::Event,
        ObjectKind::Relationship,
        ObjectKind::DataValue,
        ObjectKind::Registration,
        ObjectKind::OwnershipTransfer,
    ];

    /// The plural DHIS2 uses for the collection (`trackedEntities`, `dataValues`, …).
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::FileResource => "fileResources",
            ObjectKind::TrackedEntity => "trackedEntities",
            ObjectKind::Enrollment => "enrollments",
            ObjectKind::Event => "events",
            ObjectKind::Relationship => "relationships",
            ObjectKind::DataValue => "dataValues",
            ObjectKind::Registration => "completeDataSetRegistrations",
            ObjectKind::OwnershipTransfer => "ownershipTransfers",
        }
    }
}

/// The outbox from `after` to `upto`, rendered for national.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The confirmed position this batch starts after (echo it in [`Confirm::after`]).
    pub after: u64,
    /// The last change this batch covers (confirm it once national confirmed everything in it).
    pub upto: u64,
    /// The last change in the log when the batch was read: `upto == end` means nothing is
    /// left after this batch.
    pub end: u64,
    /// File resources uploaded by tablets, sent before the values that reference them (the
    /// bytes come from `GET /v1/files/{uid}`).
    #[serde(default)]
    pub files: Vec<FileRef>,
    /// Tracker objects to create or update, a flat `POST /api/tracker` body (parents first).
    pub tracker: TrackerPart,
    /// Tracker objects deleted on the box: only UIDs, for `importStrategy=DELETE`.
    pub tracker_deletions: TrackerPart,
    /// Aggregate data values, DHIS2 `dataValues[]` entries (`deleted: true` for deletions).
    pub data_values: Vec<Value>,
    /// Complete registrations (`completed: false` for an un-completion).
    pub registrations: Vec<Value>,
    /// Program owners moved on the box, sent after the tracker objects they name (national
    /// transfers only what it holds).
    #[serde(default)]
    pub transfers: Vec<OwnershipTransfer>,
    /// Changes in the range that national does not take (metadata, job reports, …), not
    /// counting the outbox's own position records. A batch with nothing to send is worth
    /// confirming only when this is above zero; confirming moves the position, which is itself
    /// a change, so confirming empty batches for nothing would never end.
    #[serde(default)]
    pub skipped: u64,
    /// Parked objects sent again in this batch because what they depend on went through
    /// (they move no position: a round sends them even when nothing new is pending).
    #[serde(default)]
    pub retried: u64,
}

impl Batch {
    /// True when the batch holds nothing to send (it may still move the position past
    /// changes national does not need, see [`Batch::skipped`]).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.tracker.is_empty()
            && self.tracker_deletions.is_empty()
            && self.data_values.is_empty()
            && self.registrations.is_empty()
            && self.transfers.is_empty()
    }
}

/// A file resource to send to national (`POST /api/fileResources?uid=…&domain=…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRef {
    pub uid: String,
    pub name: String,
    pub content_type: String,
    pub content_length: u64,
    /// `DATA_VALUE` (event values, tracked entity attributes) or another DHIS2 domain.
    pub domain: String,
}

/// A flat tracker payload, each object already in DHIS2's import shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrackerPart {
    #[serde(default)]
    pub tracked_entities: Vec<Value>,
    #[serde(default)]
    pub enrollments: Vec<Value>,
    #[serde(default)]
    pub events: Vec<Value>,
    #[serde(default)]
    pub relationships: Vec<Value>,
}

impl TrackerPart {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.tracked_entities.len()
            + self.enrollments.len()
            + self.events.len()
            + self.relationships.len()
    }
}

/// One object national refused, kept for an operator until a later change on the box re-queues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parked {
    pub kind: ObjectKind,
    /// The UID, or for a data value its `de/pe/ou/coc/aoc` key, for a registration `ds/pe/ou/aoc`.
    pub uid: String,
    /// National's error code (`E1000`, `E7640`, …).
    pub code: String,
    /// National's message, cut to a bounded length.
    pub message: String,
    /// How many rounds national refused it (filled in by `serve`).
    #[serde(default)]
    pub attempts: u32,
    /// When it was last refused, ms since the epoch (filled in by `serve`).
    #[serde(default)]
    pub at_ms: u64,
    /// Send it again without a change on the box: it was refused only because an object it
    /// depends on was (E5000), and that object has since gone through (set by `serve`).
    #[serde(default)]
    pub retry: bool,
}

/// A program owner moved on the box: national's `PUT /api/tracker/ownership/transfer` with these
/// three. Re-sending is harmless: national answers "already the owner" and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipTransfer {
    pub tracked_entity: String,
    pub program: String,
    pub org_unit: String,
}

impl OwnershipTransfer {
    /// The outbox key: `trackedEntity/program`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tracked_entity, self.program)
    }
}

/// What national confirmed for one batch: move the position from `after` to `upto`, keep
/// `parked` for an operator, and forget earlier rejections of the objects in `sent`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    pub after: u64,
    pub upto: u64,
    #[serde(default)]
    pub parked: Vec<Parked>,
    /// Objects national accepted in this batch, as `(kind, uid)`.
    #[serde(default)]
    pub sent: Vec<(ObjectKind, String)>,
}

/// Where the uplink stands, as `serve` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// Every change up to this one reached national (or is parked).
    pub confirmed: u64,
    /// The last change in the log.
    pub end: u64,
    /// Objects parked.
    pub parked: usize,
    /// The box runs on its battery (as the power process last reported).
    #[serde(default)]
    pub on_battery: bool,
}

/// The uplink's own view, sent after every round and on every state change, for the status page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UplinkReport {
    /// `waiting for link`, `connecting`, `sending`, `idle`, `backing off`, `stopped: <reason>`.
    pub state: String,
    /// The last round's error, if it failed (one line, no secrets).
    #[serde(default)]
    pub last_error: Option<String>,
    /// When a round last reached national and confirmed everything pending, ms since the epoch.
    #[serde(default)]
    pub last_success_ms: Option<u64>,
    /// National's DHIS2 version, as `/api/system/info` said.
    #[serde(default)]
    pub national_version: Option<String>,
    /// Totals since the uplink started.
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
    /// Objects national accepted since the uplink started, by kind.
    #[serde(default)]
    pub pushed: std::collections::BTreeMap<ObjectKind, u64>,
    /// The box's clock minus national's (`serverDate`), in seconds, when last connected.
    #[serde(default)]
    pub clock_skew_secs: Option<i64>,
    /// The last update check: up to date, downloading (how far), ready to install, or why it
    /// failed. `None`: updates are off.
    #[serde(default)]
    pub update: Option<String>,
}
