//! `POST /api/tracker`: parse, flatten, validate against metadata, the user and the stored
//! objects, merge, then write everything that passed in one durable store commit together with
//! the job report.
//!
//! Design: the whole import runs under the catalog's write lock (one tracker import at a time).
//! Validation and merging read the catalog and a store snapshot taken under the lock, so they
//! see exactly the committed state; the commit then only writes. This keeps the store's writer
//! thread free of validation work and makes unique-value, non-repeatable-stage and
//! single-active-enrollment checks race-free across tablets.

mod plan;

use std::time::Instant;

use clinicbox_api::conflicts::Conflict;
use clinicbox_api::query::Query;
use clinicbox_dhis2::Uid;
use clinicbox_dhis2::tracker::{
    AtomicMode, Enrollment, Event, ImportMode, ImportStrategy, Relationship, ReportMode,
    TrackedEntity, TrackerImportReport, TrackerPayload,
};
use clinicbox_store::{Collection, WriteError};
use clinicbox_web::{ApiError, AuthUser};
use serde::{Deserialize, Serialize};

use crate::Tracker;
use crate::catalog::Change;
use crate::jobs::{self, JobRecord};
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
    /// the same commit.
    pub(crate) async fn import_inner(
        &self,
        user: AuthUser,
        params: ImportParams,
        flat: Flat,
        record_job: bool,
        national: Option<FromNational>,
    ) -> Result<Imported, ApiError> {
        let started = Instant::now();
        let objects = flat.len();
        let mut catalog = self.inner.catalog.write().await;
        let read = self.store().read()?;
        let now_ms = self.store().server_time_ms();
        let snap = user.snapshot.clone();
        let overrides = self.overrides_for(&user.uid);
        let outcome = plan::Planner::run(
            &user,
            &snap,
            &catalog,
            &read,
            params,
            self.zone(),
            now_ms,
            &overrides,
            flat,
        );
        drop(read);
        let validated = started.elapsed();
        let plan::Outcome {
            writes,
            changes,
            mut report,
        } = outcome;
        let commit_writes = params.import_mode == ImportMode::Commit && !writes.is_empty();
        if !commit_writes && !record_job {
            return Ok(Imported {
                job_id: None,
                report,
            });
        }
        report.timings_stats = Some(serde_json::json!({
            "timers": {
                "validation": format!("{:.3} sec.", validated.as_secs_f64()),
            }
        }));
        let zone = self.zone().clone();
        let job_report = report.clone();
        let user_uid = user.uid.clone();
        let username = user.username.clone();
        let writes = if commit_writes { writes } else { Vec::new() };
        let written = writes.len();
        let commit_started = Instant::now();
        let committed = self
            .store()
            .write(move |ctx| {
                let now = ctx.now_ms();
                for w in writes {
                    let marked = national
                        .as_ref()
                        .is_some_and(|n| !n.keep_box.contains(&w.uid));
                    write_one(ctx, w, now, &zone, marked)?;
                }
                for c in national.iter().flat_map(|n| &n.conflicts) {
                    clinicbox_api::conflicts::record(
                        ctx,
                        &Conflict {
                            at_ms: now,
                            ..c.clone()
                        },
                    )?;
                }
                if record_job {
                    let job = JobRecord {
                        id: String::new(),
                        created_ms: now,
                        user: user_uid,
                        username,
                        params,
                        report: job_report,
                    };
                    return jobs::store_job(ctx, job).map(Some);
                }
                Ok::<_, clinicbox_store::StoreError>(None)
            })
            .await
            .map_err(|e| match e {
                WriteError::Rejected(e) | WriteError::Store(e) => ApiError::Store(e),
            })?;
        let commit_time = commit_started.elapsed();
        if commit_writes {
            let at = committed.commit.at_ms;
            let changes: Vec<Change> = changes.into_iter().map(|c| c.at(at)).collect();
            catalog.apply(changes);
        }
        drop(catalog);
        let total = started.elapsed();
        if let Some(t) = report.timings_stats.as_mut() {
            t["timers"]["commit"] = format!("{:.3} sec.", commit_time.as_secs_f64()).into();
            t["timers"]["totalImport"] = format!("{:.3} sec.", total.as_secs_f64()).into();
        }
        tracing::info!(
            user.uid = %user.uid,
            objects,
            written,
            status = ?report.status,
            duration_ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
            "tracker import"
        );
        Ok(Imported {
            job_id: committed.value,
            report,
        })
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
