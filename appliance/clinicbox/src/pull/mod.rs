//! The uplink socket's pull half in `serve`: metadata and users from national, applied through
//! the same import as `POST /api/metadata` and `clinicbox metadata import` (protocol:
//! `clinicbox_control::pull`).
//!
//! A package that would fail is refused whole and the box keeps serving what it had; the pull's
//! bookkeeping is written only after the import it describes went through.

pub mod approvals;
pub mod data;
pub mod reserved;

use std::collections::HashSet;

use clinicbox_api::ApiState;
use clinicbox_api::metadata::ImportError;
use clinicbox_api::metadata::import::{self, ImportParams, ImportStrategy};
use clinicbox_control::pull::{MetadataPull, PullOutcome, PullState};
use clinicbox_dhis2::{ImportReport, ImportStatus};
use clinicbox_store::StoreError;
use clinicbox_tracker::NationalError;
use serde_json::{Map, Value};

use crate::outbox::UPLINK;

/// The key of the pull's bookkeeping in the uplink's collection.
const PULL_KEY: &str = "pull";
/// How many of an import's errors a refusal names.
const MESSAGES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("the metadata import: {0}")]
    Import(#[from] ImportError),
    /// A request the box does not take (too large, out of range).
    #[error("{0}")]
    Invalid(String),
    /// The box could not keep what national sent.
    #[error("{0}")]
    Failed(String),
}

impl From<NationalError> for PullError {
    fn from(e: NationalError) -> PullError {
        match e {
            NationalError::Invalid(m) => PullError::Invalid(m),
            NationalError::Store(s) => PullError::Store(s),
            NationalError::Failed(m) => PullError::Failed(m),
        }
    }
}

/// The pull's bookkeeping as last kept (empty before the first pull).
pub fn state(api: &ApiState) -> Result<PullState, PullError> {
    state_in(api.store())
}

pub fn state_in(store: &clinicbox_store::Store) -> Result<PullState, PullError> {
    Ok(store
        .read()?
        .get(UPLINK, PULL_KEY)?
        .filter(|r| !r.deleted)
        .and_then(|r| r.json().ok())
        .unwrap_or_default())
}

/// Applies one pull: the package, then national's deletions, then the bookkeeping.
pub async fn apply(api: &ApiState, mut pull: MetadataPull) -> Result<PullOutcome, PullError> {
    let mut outcome = PullOutcome {
        result: "unchanged".into(),
        ..Default::default()
    };
    keep_local_accounts(api, &mut pull.package, &mut outcome.messages)?;
    if pull
        .package
        .values()
        .any(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        let package = Value::Object(std::mem::take(&mut pull.package));
        let report = import::import(api.metadata(), &package, ImportParams::default()).await?;
        if report.status == ImportStatus::Error {
            outcome.result = "refused".into();
            outcome.messages.extend(messages(&report));
            tracing::warn!(
                errors = outcome.messages.len(),
                "metadata from national refused: the box keeps its current metadata"
            );
            return Ok(outcome);
        }
        outcome.result = "applied".into();
        // DHIS2's "updated" counts identical objects too; the box says what it rewrote.
        outcome.created = report.stats.created;
        outcome.updated = report.written.saturating_sub(report.stats.created);
    }
    delete(api, &pull, &mut outcome).await?;
    if outcome.result == "applied" {
        pull.state.applied_ms = Some(now_ms());
    }
    keep_state(api, pull.state).await?;
    Ok(outcome)
}

/// A national user whose username an account made on this box already has is left out: the
/// box's account keeps working and the import goes on without it.
fn keep_local_accounts(
    api: &ApiState,
    package: &mut Map<String, Value>,
    messages: &mut Vec<String>,
) -> Result<(), PullError> {
    let snap = api.metadata().snapshot()?;
    if let Some(Value::Array(users)) = package.get_mut("users") {
        users.retain(|u| {
            let uid = u.get("id").and_then(Value::as_str).unwrap_or("");
            let name = u.get("username").and_then(Value::as_str).unwrap_or("");
            match snap.credential(name) {
                Some(c) if c.uid != uid => {
                    messages.push(format!(
                        "national user `{name}` has the username of an account made on this box; the box's account is kept"
                    ));
                    false
                }
                _ => true,
            }
        });
    }
    Ok(())
}

/// National's deletions of objects the box holds, each on its own: one still used by stored
/// metadata stays, and says so.
async fn delete(
    api: &ApiState,
    pull: &MetadataPull,
    outcome: &mut PullOutcome,
) -> Result<(), PullError> {
    let snap = api.metadata().snapshot()?;
    let mut package = Map::new();
    let mut seen = HashSet::new();
    for d in &pull.deletions {
        if snap.contains(&d.collection, &d.uid) && seen.insert((&d.collection, &d.uid)) {
            let list = package
                .entry(d.collection.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = list {
                a.push(serde_json::json!({"id": d.uid}));
            }
        }
    }
    if package.is_empty() {
        return Ok(());
    }
    outcome.messages.extend(unlink(api, &snap, &seen).await?);
    let params = ImportParams {
        strategy: ImportStrategy::Delete,
        atomic: false,
        ..Default::default()
    };
    let report = import::import(api.metadata(), &Value::Object(package), params).await?;
    outcome.deleted = report.stats.deleted;
    if report.stats.deleted > 0 {
        outcome.result = "applied".into();
    }
    outcome.messages.extend(messages(&report));
    Ok(())
}

/// As DHIS2 does when it deletes an object, the lists that name it (an option group's
/// options) stop naming it, so that the list does not hold the deletion up. A single
/// reference (a data element's option set) still does: that object stays, and says why.
async fn unlink(
    api: &ApiState,
    snap: &clinicbox_api::metadata::Snapshot,
    doomed: &HashSet<(&String, &String)>,
) -> Result<Vec<String>, PullError> {
    use clinicbox_dhis2::schema::{Cardinality, SCHEMAS};
    let gone = |target: &str, id: &str| doomed.iter().any(|(c, u)| *c == target && *u == id);
    let mut package = Map::new();
    for s in SCHEMAS {
        for (uid, obj) in snap.objects(s.plural) {
            if gone(s.plural, uid) {
                continue;
            }
            let mut fixed = obj.clone();
            let mut touched = false;
            for r in s.references {
                if r.cardinality != Cardinality::Many || r.path.contains('.') {
                    continue;
                }
                if let Some(Value::Array(list)) = fixed.get_mut(r.path) {
                    let before = list.len();
                    list.retain(|e| {
                        !e.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|id| gone(r.target, id))
                    });
                    touched |= list.len() != before;
                }
            }
            if touched {
                let list = package
                    .entry(s.plural.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = list {
                    a.push(Value::Object(fixed));
                }
            }
        }
    }
    if package.is_empty() {
        return Ok(Vec::new());
    }
    let report = import::import(
        api.metadata(),
        &Value::Object(package),
        ImportParams::default(),
    )
    .await?;
    Ok(messages(&report))
}

async fn keep_state(api: &ApiState, state: PullState) -> Result<(), PullError> {
    if self::state(api)? == state {
        return Ok(());
    }
    api.store()
        .write(move |ctx| ctx.put_json(UPLINK, PULL_KEY, &state))
        .await
        .map_err(|e| e.flatten())?;
    Ok(())
}

/// The first errors of an import, one line each.
fn messages(report: &ImportReport) -> Vec<String> {
    report
        .type_reports
        .iter()
        .flat_map(|t| &t.object_reports)
        .flat_map(|o| &o.error_reports)
        .take(MESSAGES)
        .map(|e| format!("{}: {}", e.error_code, e.message))
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
