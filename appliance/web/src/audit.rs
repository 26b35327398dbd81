//! The box's audit trail: who changed what on the box, and when. Kept in the store (so it
//! survives restarts and travels in backups), bounded to the last [`CAPACITY`] entries: a ring
//! of numbered records, so adding one never scans the trail.

use clinicbox_store::{Collection, ReadView, Store, StoreError, WriteCtx};
use serde::{Deserialize, Serialize};

/// How many entries the trail keeps.
pub const CAPACITY: u64 = 2_000;
/// The longest `who` or `detail` kept (longer text is cut, so nothing sent is stored unbounded).
const MAX_CHARS: usize = 300;

const TRAIL: Collection = Collection::named("auditTrail");
const NEXT: (Collection, &str) = (Collection::named("system"), "auditNext");

/// One change made on the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// The entry's number in the trail (orders entries made in the same millisecond).
    #[serde(default)]
    pub n: u64,
    pub at_ms: u64,
    /// Who: an account name, `fleet config by <name>`, `technician (command line)`.
    pub who: String,
    /// What, in a few words (`remote configuration applied`).
    pub action: String,
    /// The change itself, without secrets or patient data.
    pub detail: String,
}

impl AuditEntry {
    pub fn new(who: &str, action: &str, detail: &str) -> AuditEntry {
        AuditEntry {
            n: 0,
            at_ms: 0,
            who: bounded(who),
            action: bounded(action),
            detail: bounded(detail),
        }
    }
}

fn bounded(s: &str) -> String {
    s.chars().take(MAX_CHARS).collect()
}

/// Adds `entry` to the trail in the caller's write (stamped with the write's clock), replacing
/// the oldest entry once the trail is full.
pub fn append(ctx: &mut WriteCtx<'_>, mut entry: AuditEntry) -> Result<(), StoreError> {
    let next: u64 = match ctx.get(NEXT.0, NEXT.1)? {
        Some(r) => r.json().unwrap_or(0),
        None => 0,
    };
    entry.at_ms = ctx.now_ms();
    entry.n = next;
    tracing::info!(
        audit.who = %entry.who,
        audit.action = %entry.action,
        "audit: {} by {}: {}",
        entry.action,
        entry.who,
        entry.detail
    );
    ctx.put_json(TRAIL, &format!("{:05}", next % CAPACITY), &entry)?;
    ctx.put_json(NEXT.0, NEXT.1, &(next + 1))
}

/// Adds `entry` to the trail in a write of its own. Best effort: a change already made is not
/// undone because the trail could not be written; that is logged.
pub async fn record(store: &Store, entry: AuditEntry) {
    if let Err(e) = store.write(move |ctx| append(ctx, entry)).await {
        tracing::warn!(error = %e, "the audit trail was not written: {e}");
    }
}

/// The trail's newest `limit` entries, newest first.
pub fn recent(read: &ReadView, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let mut all: Vec<AuditEntry> = read
        .scan(TRAIL)?
        .filter_map(|r| r.ok())
        .filter_map(|(_, rec)| rec.json().ok())
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.n));
    all.truncate(limit);
    Ok(all)
}
