#![doc = include_str!("../README.md")]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod catalog;
pub mod config;
pub mod export;
pub mod files;
pub mod from_national;
pub mod import;
pub mod jobs;
pub mod meta;
pub mod model;
mod national_error;
pub mod outbox;
pub mod ownership;
pub mod reserved;
mod routes;
pub mod stale;
pub mod textpattern;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::{Extension, Router};
use clinicbox_api::ApiState;
use clinicbox_dhis2::ServerTimeZone;
use clinicbox_store::{Store, StoreError};
use clinicbox_web::ApiError;

pub use config::TrackerConfig;
pub use import::{ImportParams, Imported};
pub use national_error::NationalError;

use crate::catalog::Catalog;

struct Inner {
    api: ApiState,
    config: TrackerConfig,
    /// The catalog; its write lock is also the import lock (see `catalog` module docs).
    catalog: tokio::sync::RwLock<Catalog>,
    /// One reservation of generated values at a time.
    reserve_lock: tokio::sync::Mutex<()>,
    /// Imports waiting to be planned and committed together (`import/batch.rs`).
    import_queue: Mutex<Vec<import::batch::Ticket>>,
    /// One save of the catalog at a time (a periodic one and the stop's could meet).
    save_lock: tokio::sync::Mutex<()>,
    /// "Break the glass" grants: (user, entity, program) → expiry (store ms).
    overrides: Mutex<HashMap<(String, String, String), u64>>,
    /// Where tablets' downloads stopped (`export/cursor.rs`).
    cursors: export::cursor::Cursors,
}

/// The catalog from its saved copy and the changes after it, or built from every record;
/// first the attribute-value index, rebuilt if an older release wrote the store last.
fn load_catalog(
    store: &clinicbox_store::Store,
) -> Result<(Catalog, Option<catalog::saved::Loaded>), StoreError> {
    if let Some(filed) = catalog::values::rebuild_if_behind(store)? {
        tracing::info!(tracked_entities = filed, "attribute-value index rebuilt");
    }
    let read = store.read()?;
    Ok(match catalog::saved::load(&read)? {
        Some((c, loaded)) => (c, Some(loaded)),
        None => (Catalog::build(&read)?, None),
    })
}

/// The tracker service: shared state of every tracker endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

impl Tracker {
    /// Builds the catalog from the store (reads every tracker record once).
    pub async fn start(api: ApiState, config: TrackerConfig) -> Result<Tracker, ApiError> {
        let store = api.store().clone();
        let started = std::time::Instant::now();
        let (catalog, loaded) = tokio::task::spawn_blocking(move || load_catalog(&store))
            .await
            .map_err(|e| ApiError::Internal(format!("catalog build failed: {e}")))??;
        tracing::info!(
            tracked_entities = catalog.tes.len(),
            enrollments = catalog.enrollments.len(),
            events = catalog.events.len(),
            relationships = catalog.relationships.len(),
            from_saved_copy = loaded.is_some(),
            replayed = loaded.map_or(0, |l| l.replayed),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "tracker catalog loaded"
        );
        Ok(Tracker {
            inner: Arc::new(Inner {
                api,
                config,
                catalog: tokio::sync::RwLock::new(catalog),
                reserve_lock: tokio::sync::Mutex::new(()),
                save_lock: tokio::sync::Mutex::new(()),
                import_queue: Mutex::new(Vec::new()),
                overrides: Mutex::new(HashMap::new()),
                cursors: Default::default(),
            }),
        })
    }

    /// Saves the catalog in the store (see `catalog::saved`) unless no tracker record changed
    /// since the saved copy; returns the change-log position saved, if it saved. Writers wait
    /// while it is encoded (readers do not).
    pub async fn save_catalog(&self) -> Result<Option<u64>, StoreError> {
        let _one_at_a_time = self.inner.save_lock.lock().await;
        let (seq, encoded) = {
            // Under the lock no import is between its commit and its catalog update, so the
            // catalog holds exactly the tracker changes up to `seq`.
            let cat = self.inner.catalog.read().await;
            let read = self.store().read()?;
            if catalog::saved::up_to_date(&read)? {
                return Ok(None);
            }
            (read.last_seq()?, cat.encode())
        };
        let bytes = encoded.len();
        catalog::saved::save(self.store(), seq, encoded).await?;
        tracing::info!(seq, bytes, "tracker catalog saved");
        Ok(Some(seq))
    }

    /// How many tracker records changed since the saved catalog, counting up to `at_most`.
    pub fn changed_since_saved(&self, at_most: u64) -> Result<u64, StoreError> {
        catalog::saved::changed_since_saved(&self.store().read()?, at_most)
    }

    fn import_queue(&self) -> std::sync::MutexGuard<'_, Vec<import::batch::Ticket>> {
        self.inner
            .import_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn api(&self) -> &ApiState {
        &self.inner.api
    }
    pub fn store(&self) -> &Store {
        self.inner.api.store()
    }
    pub fn zone(&self) -> &ServerTimeZone {
        self.inner.api.zone()
    }
    pub fn config(&self) -> &TrackerConfig {
        &self.inner.config
    }
    pub fn catalog(&self) -> &tokio::sync::RwLock<Catalog> {
        &self.inner.catalog
    }

    pub(crate) fn cursors(&self) -> &export::cursor::Cursors {
        &self.inner.cursors
    }

    fn overrides_lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), u64>> {
        self.inner
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Grants `user` temporary ownership of `te` in `program`.
    pub fn grant_override(&self, user: &str, te: &str, program: &str) {
        let hours = u64::from(self.inner.config.ownership_override_hours.max(1));
        let until = self.store().server_time_ms() + hours * 3_600_000;
        self.overrides_lock()
            .insert((user.into(), te.into(), program.into()), until);
    }

    pub fn has_override(&self, user: &str, te: &str, program: &str) -> bool {
        let now = self.store().server_time_ms();
        self.overrides_lock()
            .get(&(user.into(), te.into(), program.into()))
            .is_some_and(|until| *until > now)
    }

    /// The user's live overrides as (entity, program) pairs.
    pub fn overrides_for(&self, user: &str) -> HashSet<(String, String)> {
        let now = self.store().server_time_ms();
        let mut map = self.overrides_lock();
        map.retain(|_, until| *until > now);
        map.keys()
            .filter(|(u, _, _)| u == user)
            .map(|(_, te, p)| (te.clone(), p.clone()))
            .collect()
    }
}

/// Every tracker route, for merging into the API router before its state is applied.
pub fn routes(tracker: Tracker) -> Router<ApiState> {
    routes::routes(tracker.inner.config.max_file_bytes).layer(Extension(tracker))
}

/// The tracker routes as a complete router (state applied), for merging into the daemon's.
pub fn router(tracker: Tracker) -> Router {
    let state = tracker.api().clone();
    routes(tracker).with_state(state)
}
