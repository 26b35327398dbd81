//! Imports share commits. Every import joins a queue; whichever import takes the catalog's
//! write lock plans every import waiting, one after another in arrival order, and writes them
//! all in one store commit (one fsync on an SD card for twenty tablets, where each used to pay
//! its own). Each import is planned exactly as it would have been alone after the ones before
//! it: the catalog already holds their changes (applied under the lock, with provisional
//! times) and the planner reads their records from the batch's [`Overlay`] before the store.
//! Nobody else sees any of it until the commit is durable: the write lock is held from the
//! first plan to the catalog's final update, so readers and `serverDate` never get ahead of
//! the store. If the commit fails, the catalog is put back as it was and every import of the
//! batch gets the error, as when a commit of one failed.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use clinicbox_store::{Collection, ReadView, StoreError, WriteCtx, WriteError};
use clinicbox_web::{ApiError, AuthUser};
use tokio::sync::oneshot;

use super::plan::{self, Body, Write};
use super::{Flat, FromNational, ImportParams, Imported, write_one};
use crate::Tracker;
use crate::catalog::{Catalog, Change, Prior};
use crate::files::FileOwner;
use crate::jobs::{self, JobRecord};
use clinicbox_dhis2::tracker::ImportMode;

/// Imports planned and committed together at most: bounds a commit's size and the memory of
/// its overlay; the rest wait for the next holder of the lock (their own tasks are queued for
/// it).
pub(crate) const MAX_BATCH: usize = 32;

/// One import waiting for its turn.
pub(crate) struct Ticket {
    pub user: AuthUser,
    pub params: ImportParams,
    pub flat: Flat,
    pub record_job: bool,
    pub national: Option<FromNational>,
    pub started: Instant,
    pub reply: oneshot::Sender<Result<Imported, ApiError>>,
}

/// What earlier imports of a batch wrote and the store has not committed yet.
#[derive(Default)]
pub(crate) struct Overlay {
    /// (collection, UID) → the record's JSON as planned, and its creation time (0: this commit).
    records: HashMap<(Collection, String), (Vec<u8>, u64)>,
    /// File resources assigned to a record.
    files: HashMap<String, FileOwner>,
}

impl Overlay {
    pub fn record(&self, c: Collection, uid: &str) -> Option<(&[u8], u64)> {
        self.records
            .get(&(c, uid.to_string()))
            .map(|(b, created)| (b.as_slice(), *created))
    }

    pub fn file_owner(&self, file: &str) -> Option<&FileOwner> {
        self.files.get(file)
    }

    fn add(&mut self, read: &ReadView, writes: &[Write]) {
        for w in writes {
            let (c, json) = match &w.body {
                Body::TrackedEntity(b) => (Collection::TRACKED_ENTITIES, serde_json::to_vec(b)),
                Body::Enrollment(b) => (Collection::ENROLLMENTS, serde_json::to_vec(b)),
                Body::Event(b) => (Collection::EVENTS, serde_json::to_vec(b)),
                Body::Relationship(b) => (Collection::RELATIONSHIPS, serde_json::to_vec(b)),
                Body::FileAssignment(owner) => {
                    self.files
                        .entry(w.uid.clone())
                        .or_insert_with(|| owner.clone());
                    continue;
                }
            };
            let Ok(json) = json else { continue };
            let key = (c, w.uid.clone());
            let created = match self.records.get(&key) {
                Some((_, created)) => *created,
                None => read
                    .get(c, &w.uid)
                    .ok()
                    .flatten()
                    .map_or(0, |r| r.created_ms),
            };
            self.records.insert(key, (json, created));
        }
    }
}

/// What an import of the batch waits for after the commit: its answer and catalog changes.
struct Waiting {
    reply: oneshot::Sender<Result<Imported, ApiError>>,
    report: clinicbox_dhis2::tracker::TrackerImportReport,
    changes: Vec<Change>,
    started: Instant,
    user: String,
    objects: usize,
    written: usize,
}

/// An import planned, waiting for the batch's commit.
struct Planned {
    user: AuthUser,
    params: ImportParams,
    record_job: bool,
    national: Option<FromNational>,
    started: Instant,
    reply: oneshot::Sender<Result<Imported, ApiError>>,
    objects: usize,
    writes: Vec<Write>,
    changes: Vec<Change>,
    report: clinicbox_dhis2::tracker::TrackerImportReport,
}

impl Tracker {
    /// Plans and commits every import in `batch` (see the module docs). Holds `catalog`, the
    /// catalog's write lock, throughout.
    pub(crate) async fn run_batch(&self, catalog: &mut Catalog, batch: Vec<Ticket>) {
        let read = match self.store().read() {
            Ok(r) => r,
            Err(e) => return fail_all(batch.into_iter().map(|t| t.reply), &e),
        };
        let now_ms = self.store().server_time_ms();
        let mut overlay = Overlay::default();
        let mut priors: Vec<Prior> = Vec::new();
        let mut seen = HashSet::new();
        let mut planned = Vec::new();
        for t in batch {
            let Ticket {
                user,
                params,
                flat,
                record_job,
                national,
                started,
                reply,
            } = t;
            let objects = flat.len();
            let overrides = self.overrides_for(&user.uid);
            let snap = user.snapshot.clone();
            let outcome = plan::Planner::run(
                &user,
                &snap,
                catalog,
                &read,
                &overlay,
                params,
                self.zone(),
                now_ms,
                &overrides,
                flat,
            );
            let commit_writes =
                params.import_mode == ImportMode::Commit && !outcome.writes.is_empty();
            if !commit_writes && !record_job {
                let _ = reply.send(Ok(Imported {
                    job_id: None,
                    report: outcome.report,
                }));
                continue;
            }
            let mut report = outcome.report;
            report.timings_stats = Some(serde_json::json!({
                "timers": {
                    "validation": format!("{:.3} sec.", started.elapsed().as_secs_f64()),
                }
            }));
            let (writes, changes) = if commit_writes {
                (outcome.writes, outcome.changes)
            } else {
                (Vec::new(), Vec::new())
            };
            // The next imports of the batch see this one, as they would after its commit.
            overlay.add(&read, &writes);
            for ch in &changes {
                if seen.insert(ch.key()) {
                    priors.push(catalog.prior(ch));
                }
            }
            catalog.apply_provisional(changes.iter().cloned().map(|c| c.at(now_ms)).collect());
            planned.push(Planned {
                user,
                params,
                record_job,
                national,
                started,
                reply,
                objects,
                writes,
                changes,
                report,
            });
        }
        drop(read);
        if planned.is_empty() {
            return;
        }
        self.commit_batch(catalog, planned, priors).await;
    }

    async fn commit_batch(&self, catalog: &mut Catalog, planned: Vec<Planned>, priors: Vec<Prior>) {
        let zone = self.zone().clone();
        let mut replies = Vec::new();
        let mut work = Vec::new();
        for p in planned {
            let job = p.record_job.then(|| JobRecord {
                id: String::new(),
                created_ms: 0,
                user: p.user.uid.clone(),
                username: p.user.username.clone(),
                params: p.params,
                report: p.report.clone(),
            });
            replies.push(Waiting {
                reply: p.reply,
                report: p.report,
                changes: p.changes,
                started: p.started,
                user: p.user.uid,
                objects: p.objects,
                written: p.writes.len(),
            });
            work.push((p.writes, p.national, job));
        }
        let commit_started = Instant::now();
        let committed = self
            .store()
            .write(move |ctx| {
                let mut jobs = Vec::new();
                for (writes, national, job) in work {
                    jobs.push(write_import(ctx, writes, national.as_ref(), job, &zone)?);
                }
                Ok::<_, StoreError>(jobs)
            })
            .await;
        let commit_time = commit_started.elapsed();
        let committed = match committed {
            Ok(c) => c,
            Err(WriteError::Rejected(e) | WriteError::Store(e)) => {
                for p in priors {
                    catalog.restore(p);
                }
                catalog.settle();
                return fail_all(replies.into_iter().map(|w| w.reply), &e);
            }
        };
        // The batch's values are in the store's index now.
        catalog.settle();
        let at = committed.commit.at_ms;
        let shared = replies.len();
        for (w, job_id) in replies.into_iter().zip(committed.value) {
            let Waiting {
                reply,
                mut report,
                changes,
                started,
                user,
                objects,
                written,
            } = w;
            catalog.apply(changes.into_iter().map(|c| c.at(at)).collect());
            let total = started.elapsed();
            if let Some(t) = report.timings_stats.as_mut() {
                t["timers"]["commit"] = format!("{:.3} sec.", commit_time.as_secs_f64()).into();
                t["timers"]["totalImport"] = format!("{:.3} sec.", total.as_secs_f64()).into();
            }
            tracing::info!(
                user.uid = %user,
                objects,
                written,
                status = ?report.status,
                imports_in_commit = shared,
                duration_ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
                "tracker import"
            );
            let _ = reply.send(Ok(Imported { job_id, report }));
        }
    }
}

/// Every import of a batch whose commit failed gets the failure.
fn fail_all(
    replies: impl Iterator<Item = oneshot::Sender<Result<Imported, ApiError>>>,
    e: &StoreError,
) {
    tracing::error!(error = %e, "a tracker import commit failed");
    for r in replies {
        let _ = r.send(Err(ApiError::Internal(format!("storage failure: {e}"))));
    }
}

/// Writes one import's records, national's conflicts and its job report; returns the job id.
fn write_import(
    ctx: &mut WriteCtx<'_>,
    writes: Vec<Write>,
    national: Option<&FromNational>,
    job: Option<JobRecord>,
    zone: &clinicbox_dhis2::ServerTimeZone,
) -> Result<Option<String>, StoreError> {
    let now = ctx.now_ms();
    for w in writes {
        let marked = national.is_some_and(|n| !n.keep_box.contains(&w.uid));
        write_one(ctx, w, now, zone, marked)?;
    }
    for c in national.iter().flat_map(|n| &n.conflicts) {
        clinicbox_api::conflicts::record(
            ctx,
            &clinicbox_api::conflicts::Conflict {
                at_ms: now,
                ..c.clone()
            },
        )?;
    }
    match job {
        Some(job) => jobs::store_job(
            ctx,
            JobRecord {
                created_ms: now,
                ..job
            },
        )
        .map(Some),
        None => Ok(None),
    }
}
