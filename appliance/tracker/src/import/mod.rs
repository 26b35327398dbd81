//! `POST /api/tracker`: parse, flatten, validate against metadata, the user and the stored
//! objects, merge, then write everything that passed in one durable store commit together with
//! the job report.
//!
//! Design: imports are planned under the catalog's write lock, one after another, and every
//! import waiting when the lock is taken shares one commit (`batch.rs`). Validation and merging
//! read the catalog and a store snapshot taken under the lock, plus what earlier imports of the
//! same batch planned, so each sees exactly the state it would have seen alone after them; the
//! commit then only writes. This keeps the store's writer thread free of validation work and
//! makes unique-value, non-repeatable-stage and single-active-enrollment checks race-free
//! across tablets.

pub(crate) mod batch;
mod plan;

use std::time::Instant;

use clinicbox_api::conflicts::Conflict;
use clinicbox_api::query::Query;
use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{
    AtomicMode, Enrollment, Event, ImportMode, ImportStrategy, Relationship, ReportMode,
    TrackedEntity, TrackerImportReport, TrackerPayload,
};
use clinicbox_store::Collection;
use clinicbox_web::{ApiError, AuthUser};
use serde::{Deserialize, Serialize};

use crate::Tracker;
use crate::model::Stamp;

pub use plan::{Body, Write};

/// The import's query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportParams {
    pub import_strategy: ImportStrategy,
    pub atomic_mode: AtomicMode,
    pub import_mode: ImportMode,
    pub report_mode: ReportMode,
    #[serde(rename = "async")]
    pub run_async: bool,
}

impl Default for ImportParams {
    fn default() -> Self {
        ImportParams {
            import_strategy: ImportStrategy::CreateAndUpdate,
            atomic_mode: AtomicMode::All,
            import_mode: ImportMode::Commit,
            report_mode: ReportMode::Errors,
            run_async: true,
        }
    }
}

fn enum_param<T: for<'de> Deserialize<'de>>(
    q: &Query,
    key: &str,
    valid: &str,
) -> Result<Option<T>, ApiError> {
    match q.get(key) {
        None | Some("") => Ok(None),
        Some(v) => serde_json::from_value(serde_json::Value::from(v.to_ascii_uppercase()))
            .map(Some)
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "Value '{v}' is not valid for parameter {key}. Valid values are: [{valid}]"
                ))
            }),
    }
}

impl ImportParams {
    /// DHIS2's defaults: CREATE_AND_UPDATE, atomicMode ALL, COMMIT, reportMode ERRORS, async.
    pub fn from_query(q: &Query) -> Result<ImportParams, ApiError> {
        let d = ImportParams::default();
        Ok(ImportParams {
            import_strategy: enum_param(
                q,
                "importStrategy",
                "CREATE, UPDATE, CREATE_AND_UPDATE, DELETE",
            )?
            .unwrap_or(d.import_strategy),
            atomic_mode: enum_param(q, "atomicMode", "ALL, OBJECT")?.unwrap_or(d.atomic_mode),
            import_mode: enum_param(q, "importMode", "COMMIT, VALIDATE")?.unwrap_or(d.import_mode),
            report_mode: enum_param(q, "reportMode", "FULL, ERRORS, WARNINGS")?
                .unwrap_or(d.report_mode),
            run_async: q.bool("async", true)?,
        })
    }
}

/// The payload with nested children moved into the flat lists, parents filled in and missing
/// UIDs generated (as DHIS2 does).
#[derive(Debug, Default)]
pub struct Flat {
    pub tracked_entities: Vec<TrackedEntity>,
    pub enrollments: Vec<Enrollment>,
    pub events: Vec<Event>,
    pub relationships: Vec<Relationship>,
}

fn ensure_uid(u: &mut Option<String>) -> String {
    match u {
        Some(s) if !s.is_empty() => s.clone(),
        _ => {
            let g = Uid::generate().to_string();
            *u = Some(g.clone());
            g
        }
    }
}

impl Flat {
    pub fn from_payload(p: TrackerPayload) -> Flat {
        let mut f = Flat::default();
        for mut te in p.tracked_entities {
            let te_uid = ensure_uid(&mut te.tracked_entity);
            for en in std::mem::take(&mut te.enrollments) {
                f.push_enrollment(en, Some(&te_uid));
            }
            f.relationships.append(&mut te.relationships);
            f.tracked_entities.push(te);
        }
        for en in p.enrollments {
            f.push_enrollment(en, None);
        }
        for ev in p.events {
            f.push_event(ev, None, None, None);
        }
        f.relationships.extend(p.relationships);
        for r in &mut f.relationships {
            ensure_uid(&mut r.relationship);
        }
        f
    }

    fn push_enrollment(&mut self, mut en: Enrollment, te: Option<&str>) {
        let en_uid = ensure_uid(&mut en.enrollment);
        if let Some(te) = te {
            en.tracked_entity.get_or_insert_with(|| te.to_string());
        }
        let te_uid = en.tracked_entity.clone();
        let program = en.program.clone();
        for ev in std::mem::take(&mut en.events) {
            self.push_event(ev, Some(&en_uid), te_uid.as_deref(), program.as_deref());
        }
        self.relationships.append(&mut en.relationships);
        self.enrollments.push(en);
    }

    fn push_event(
        &mut self,
        mut ev: Event,
        enrollment: Option<&str>,
        te: Option<&str>,
        program: Option<&str>,
    ) {
        ensure_uid(&mut ev.event);
        if let Some(e) = enrollment {
            ev.enrollment.get_or_insert_with(|| e.to_string());
        }
        if let Some(t) = te {
            ev.tracked_entity.get_or_insert_with(|| t.to_string());
        }
        if let Some(p) = program {
            ev.program.get_or_insert_with(|| p.to_string());
        }
        self.relationships.append(&mut ev.relationships);
        self.events.push(ev);
    }

    pub fn len(&self) -> usize {
        self.tracked_entities.len()
            + self.enrollments.len()
            + self.events.len()
            + self.relationships.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an import of national's data adds (see `from_national.rs`).
pub(crate) struct FromNational {
    /// Objects the box changed and national has not confirmed: written unmarked, so the
    /// merged version is sent.
    pub keep_box: std::collections::HashSet<String>,
    pub conflicts: Vec<Conflict>,
}

/// The outcome of one import.
pub struct Imported {
    pub job_id: Option<String>,
    pub report: TrackerImportReport,
}

impl Tracker {
    /// Validates and imports a payload as `user`. With `record_job`, the report is stored as a
    /// job (in the same commit as the data) and its id returned. The import is durable when
    /// this returns.
    pub async fn import(
        &self,
        user: AuthUser,
        params: ImportParams,
        payload: TrackerPayload,
        record_job: bool,
    ) -> Result<Imported, ApiError> {
        // A spawned task finishes (and updates the catalog) even if the client disconnects.
        let this = self.clone();
        let flat = Flat::from_payload(payload);
        tokio::spawn(async move {
            this.import_inner(user, params, flat, record_job, None)
                .await
        })
        .await
        .map_err(|e| ApiError::Internal(format!("import task failed: {e}")))?
    }

    /// Validates and imports `flat` as `user`; with `national`, its records are marked as
    /// national's own (but for the UIDs it keeps for the box) and its conflicts are written in
    /// the same commit. It may share that commit with other imports (`batch.rs`).
    pub(crate) async fn import_inner(
        &self,
        user: AuthUser,
        params: ImportParams,
        flat: Flat,
        record_job: bool,
        national: Option<FromNational>,
    ) -> Result<Imported, ApiError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.import_queue().push(batch::Ticket {
            user,
            params,
            flat,
            record_job,
            national,
            started: Instant::now(),
            reply,
        });
        let mut answer = answer;
        loop {
            tokio::select! {
                biased;
                // Taken and committed by another import's batch: no need to queue for the lock.
                done = &mut answer => {
                    return done.map_err(|_| ApiError::Internal("the import was dropped".into()))?;
                }
                // Whoever gets the lock takes every import waiting (ours, unless an earlier
                // holder did); by the time it lets go, ours is answered.
                mut catalog = self.inner.catalog.write() => {
                    let waiting: Vec<_> = {
                        let mut queue = self.import_queue();
                        let n = queue.len().min(batch::MAX_BATCH);
                        queue.drain(..n).collect()
                    };
                    if !waiting.is_empty() {
                        self.run_batch(&mut catalog, waiting).await;
                    }
                }
            }
        }
    }
}

/// Records the file's owner (first one wins: the planner refused files owned elsewhere).
fn assign_file(
    ctx: &mut clinicbox_store::WriteCtx<'_>,
    uid: &str,
    owner: crate::files::FileOwner,
) -> Result<(), clinicbox_store::StoreError> {
    let Some(rec) = ctx.get(Collection::FILE_RESOURCES, uid)? else {
        return Ok(());
    };
    let mut f: crate::files::StoredFile =
        rec.json()
            .map_err(|source| clinicbox_store::StoreError::Json {
                collection: Collection::FILE_RESOURCES.name().into(),
                key: uid.into(),
                source,
            })?;
    if f.assigned_to.is_none() {
        f.assigned_to = Some(owner);
        ctx.put_json(Collection::FILE_RESOURCES, uid, &f)?;
    }
    Ok(())
}

/// Writes one planned record; `national` marks it as national's own version (see
/// `from_national.rs`), and every other write clears the mark.
fn write_one(
    ctx: &mut clinicbox_store::WriteCtx<'_>,
    w: Write,
    now: u64,
    zone: &clinicbox_dhis2::ServerTimeZone,
    national: bool,
) -> Result<(), clinicbox_store::StoreError> {
    fn body<T: Stamp + Serialize>(
        mut b: T,
        now: u64,
        zone: &clinicbox_dhis2::ServerTimeZone,
    ) -> Result<Vec<u8>, clinicbox_store::StoreError> {
        b.stamp(now, zone);
        serde_json::to_vec(&b).map_err(|e| clinicbox_store::StoreError::Malformed {
            collection: "tracker".into(),
            key: String::new(),
            reason: e.to_string(),
        })
    }
    let (coll, bytes) = match w.body {
        Body::FileAssignment(owner) => return assign_file(ctx, &w.uid, owner),
        Body::TrackedEntity(mut b) => {
            b.from_national = national;
            // Before the put: the index unfiles what the record being replaced held.
            crate::catalog::values::write(ctx, &w.uid, (!w.tombstone).then_some(&*b))?;
            (Collection::TRACKED_ENTITIES, body(*b, now, zone)?)
        }
        Body::Enrollment(mut b) => {
            b.from_national = national;
            (Collection::ENROLLMENTS, body(*b, now, zone)?)
        }
        Body::Event(mut b) => {
            b.from_national = national;
            (Collection::EVENTS, body(*b, now, zone)?)
        }
        Body::Relationship(mut b) => {
            b.from_national = national;
            (Collection::RELATIONSHIPS, body(*b, now, zone)?)
        }
    };
    if w.tombstone {
        ctx.put_tombstone(coll, &w.uid, bytes)
    } else {
        ctx.put(coll, &w.uid, bytes)
    }
}
