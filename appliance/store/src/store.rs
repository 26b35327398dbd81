//! Opening, creating, unlocking and closing a store; the write and read entry points.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableHandle};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::cipher::{Cipher, DataKey};
use crate::clock::Clock;
use crate::format::FormatInfo;
use crate::keyslot::{KeySlotInfo, NewKeySlot, PinCost, RecoveryKey, SlotTable, Unlock};
use crate::read::ReadView;
use crate::tables::{self, META};
use crate::write::{self, CommitInfo, Committed, Job, Msg, WriteCtx};
use crate::{KeySlotError, KeySlotKind, StoreError, WriteError};

type Reply<T, E> = tokio::sync::oneshot::Receiver<Result<Committed<T>, WriteError<E>>>;

/// The database file inside the data directory.
pub const DB_FILE: &str = "store.redb";

/// State shared by the store handle and its writer thread.
pub(crate) struct Shared {
    pub(crate) cipher: Arc<Cipher>,
    pub(crate) clock: Clock,
    pub(crate) last_seq: AtomicU64,
    pub(crate) last_write_ms: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    /// Whether the derived data is current (see [`Store::derived_current`]): read at open,
    /// set by the commit that rebuilt it, and only while true do commits move the mark.
    pub(crate) derived_current: AtomicBool,
}

struct Inner {
    dir: PathBuf,
    db: Arc<Database>,
    shared: Arc<Shared>,
    dek: DataKey,
    unlocked_slot: u32,
    sender: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The encrypted record store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Figures for the status page and metrics.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    /// Records per collection (tombstones included).
    pub records: Vec<(String, u64)>,
    pub file_bytes: u64,
    pub last_seq: u64,
    /// Server time of the last commit in this process, 0 if none yet.
    pub last_write_ms: u64,
    pub commits: u64,
    pub writes: u64,
    pub failed_commits: u64,
}

/// Where the file's bytes go, table by table: what the benchmarks report as bytes per patient,
/// and what a technician reads when a card fills up.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableSpace {
    pub name: String,
    pub entries: u64,
    /// Keys and values as stored (sealed values included).
    pub stored_bytes: u64,
    /// Branch pages and other B-tree bookkeeping.
    pub metadata_bytes: u64,
    /// Unused room inside the table's pages.
    pub fragmented_bytes: u64,
}

/// See [`Store::space`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreSpace {
    pub tables: Vec<TableSpace>,
    /// Pages allocated in the file, times the page size.
    pub allocated_bytes: u64,
    pub file_bytes: u64,
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most memory redb keeps for cached pages (its own default is 1 GiB, half of a small
    /// Pi's memory: pages stay resident once read, so the box's memory would grow with its
    /// data).
    pub cache_bytes: usize,
    /// The least time every sync of the file takes. Zero on a box; the benchmarks set an SD
    /// card's fsync (milliseconds) to measure what group commit saves there.
    pub sync_delay: std::time::Duration,
}

/// The cache a store gets unless told otherwise: room for the B-trees' inner pages of years
/// of data, while the leaves of a full tablet download come from the OS page cache.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            sync_delay: std::time::Duration::ZERO,
        }
    }
}

impl Store {
    /// True when `dir` holds a store.
    pub fn exists(dir: &Path) -> bool {
        dir.join(DB_FILE).is_file()
    }

    /// Creates a new store in `dir` with one key slot. For a recovery slot, the printable key
    /// is returned once.
    pub fn create(
        dir: &Path,
        first_slot: NewKeySlot,
    ) -> Result<(Store, Option<RecoveryKey>), StoreError> {
        Store::create_with(dir, first_slot, StoreOptions::default())
    }

    /// [`Store::create`] with `options`.
    pub fn create_with(
        dir: &Path,
        first_slot: NewKeySlot,
        options: StoreOptions,
    ) -> Result<(Store, Option<RecoveryKey>), StoreError> {
        if Store::exists(dir) {
            return Err(StoreError::AlreadyExists(dir.to_owned()));
        }
        let io = |source| StoreError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Only the service user reads the data directory: the file is ciphertext, but its size
        // and timing still say how busy the clinic is.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let dek = DataKey::generate()?;
        let mut slots = SlotTable::new();
        let (info, recovery) = slots.add(&dek, first_slot, crate::clock::wall_ms())?;
        let db = open_db(dir, true, options)?;
        let mut txn = db.begin_write()?;
        // The key slots must be on disk before the recovery key is shown to anyone.
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            let format = FormatInfo::this_build();
            meta.insert(tables::META_FORMAT, format.format.to_le_bytes().as_slice())?;
            meta.insert(
                tables::META_READABLE_FROM,
                format.readable_from.to_le_bytes().as_slice(),
            )?;
            meta.insert(tables::META_KEYSLOTS, slots.to_json().as_slice())?;
        }
        txn.commit()?;
        fsync_dir(dir)?;
        tracing::info!(data_dir = %dir.display(), "created a new store");
        let fresh = Unlocked {
            dek,
            slot: info.id,
            clock: 0,
            last_seq: 0,
            derived_current: true,
        };
        Ok((Store::start(dir, db, fresh)?, recovery))
    }

    /// Opens and unlocks the store in `dir`. A wrong secret gives an error and changes nothing.
    pub fn open(dir: &Path, unlock: &Unlock) -> Result<Store, StoreError> {
        Store::open_with(dir, unlock, StoreOptions::default())
    }

    /// [`Store::open`] with `options`.
    pub fn open_with(
        dir: &Path,
        unlock: &Unlock,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        if !Store::exists(dir) {
            return Err(StoreError::NotFound(dir.to_owned()));
        }
        // Unlock through a read-only open first: a wrong secret must leave the file
        // byte-for-byte as it was, and a read-write open already rewrites redb's header.
        // A file that needs crash repair cannot be opened read-only; repairing it changes no
        // committed data, so that case unlocks after the read-write open.
        let (db, unlocked) = match redb::ReadOnlyDatabase::open(dir.join(DB_FILE)) {
            Ok(ro) => {
                let unlocked = unlock_meta(&ro.begin_read()?, unlock)?;
                drop(ro);
                (open_db(dir, false, options)?, unlocked)
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked {
                    path: dir.join(DB_FILE),
                });
            }
            Err(_) => {
                let db = open_db(dir, false, options)?;
                let unlocked = unlock_meta(&db.begin_read()?, unlock)?;
                (db, unlocked)
            }
        };
        tracing::info!(
            data_dir = %dir.display(),
            key_slot = unlocked.slot,
            last_seq = unlocked.last_seq,
            derived_current = unlocked.derived_current,
            "store unlocked"
        );
        Store::start(dir, db, unlocked)
    }

    fn start(dir: &Path, db: Database, unlocked: Unlocked) -> Result<Store, StoreError> {
        let Unlocked {
            dek,
            slot,
            clock,
            last_seq,
            derived_current,
        } = unlocked;
        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            cipher: Arc::new(Cipher::new(&dek)),
            clock: Clock::starting_at(clock),
            last_seq: AtomicU64::new(last_seq),
            last_write_ms: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            derived_current: AtomicBool::new(derived_current),
        });
        let (sender, writer) = spawn_writer(dir, &db, &shared)?;
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                db,
                shared,
                dek,
                unlocked_slot: slot,
                sender: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Takes writes again after [`Store::close`] (a quiesce that was cancelled). No-op when open.
    pub fn resume(&self) -> Result<(), StoreError> {
        let mut sender = self.inner.sender.lock().unwrap_or_else(|p| p.into_inner());
        if sender.is_some() {
            return Ok(());
        }
        let (tx, writer) = spawn_writer(&self.inner.dir, &self.inner.db, &self.inner.shared)?;
        *self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer);
        *sender = Some(tx);
        tracing::info!(data_dir = %self.inner.dir.display(), "store reopened for writes");
        Ok(())
    }

    /// Whether the data users derive from records and keep beside them in the same commits
    /// (the tracker's attribute-value index) is current. False when the store was last written
    /// by a build that did not keep it (a release rolled back to, or one from before it
    /// existed): the user then rebuilds it whole in one commit that calls
    /// [`WriteCtx::mark_derived_current`](crate::WriteCtx::mark_derived_current). Until that
    /// commit no commit says the data is current, so a cut before it leaves the rebuild owed.
    pub fn derived_current(&self) -> bool {
        self.inner.shared.derived_current.load(Ordering::Acquire)
    }

    /// False when the writer thread died (a bug); the daemon then stops petting its watchdog.
    pub fn is_healthy(&self) -> bool {
        let open = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        !open || writer.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The key slot that unlocked this store.
    pub fn unlocked_slot(&self) -> u32 {
        self.inner.unlocked_slot
    }

    /// Server time (ms since the epoch) to hand a tablet as `serverDate`. Any commit that a
    /// reader cannot see yet carries a time at or after this one.
    pub fn server_time_ms(&self) -> u64 {
        self.inner.shared.clock.server_time()
    }

    /// Runs `f` in the next group commit and resolves after that commit is durable on disk.
    pub async fn write<T, E, F>(&self, f: F) -> Result<Committed<T>, WriteError<E>>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let rx = self.submit(f)?;
        rx.await
            .unwrap_or(Err(WriteError::Store(StoreError::Closed)))
    }

    /// [`Store::write`] for threads outside an async runtime (admin commands, tests).
    pub fn write_blocking<T, E, F>(&self, f: F) -> Result<Committed<T>, WriteError<E>>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let rx = self.submit(f)?;
        rx.blocking_recv()
            .unwrap_or(Err(WriteError::Store(StoreError::Closed)))
    }

    fn submit<T, E, F>(&self, f: F) -> Result<Reply<T, E>, StoreError>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |ctx| match f(ctx) {
            Ok(value) => Some(Box::new(move |r: Result<CommitInfo, StoreError>| {
                let _ = tx.send(
                    r.map(|commit| Committed { value, commit })
                        .map_err(WriteError::Store),
                );
            })),
            Err(e) => {
                let _ = tx.send(Err(WriteError::Rejected(e)));
                None
            }
        });
        let sender = self.inner.sender.lock().unwrap_or_else(|p| p.into_inner());
        sender
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(Msg::Job(job))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// A consistent snapshot for reading.
    pub fn read(&self) -> Result<ReadView, StoreError> {
        Ok(ReadView::new(
            self.inner.db.begin_read()?,
            self.inner.shared.cipher.clone(),
        ))
    }

    /// Writes a consistent copy of the whole store to `dest` (a file; its directory must
    /// exist) while writes go on: what one read transaction sees, every table, sealed values
    /// and key slots as they are, so the copy opens with the same secrets. Written under a
    /// temporary name and renamed once durable.
    pub fn snapshot_to(&self, dest: &Path) -> Result<crate::SnapshotInfo, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let last_seq = {
            let meta = txn.open_table(META)?;
            meta.get(tables::META_LAST_SEQ)?
                .and_then(|v| tables::u64_le(v.value()))
                .unwrap_or(0)
        };
        let info = crate::snapshot::copy(&txn, dest)?;
        Ok(crate::SnapshotInfo { last_seq, ..info })
    }

    /// Finishes every write already submitted, then refuses new ones. Idempotent.
    pub fn close(&self) -> Result<(), StoreError> {
        let sender = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(sender) = sender {
            let (ack_tx, ack_rx) = mpsc::sync_channel(1);
            if sender.send(Msg::Close(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = writer {
            let _ = w.join();
            tracing::info!(data_dir = %self.inner.dir.display(), "store closed");
        }
        Ok(())
    }

    /// Figures for the status page and metrics.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let mut records = Vec::new();
        for handle in txn.list_tables()? {
            let name = handle.name().to_owned();
            if let Some(collection) = name.strip_prefix("c.") {
                let def = redb::TableDefinition::<&str, &[u8]>::new(&name);
                records.push((collection.to_owned(), txn.open_table(def)?.len()?));
            }
        }
        let s = &self.inner.shared;
        let file_bytes = std::fs::metadata(self.inner.dir.join(DB_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(StoreStats {
            records,
            file_bytes,
            last_seq: s.last_seq.load(Ordering::Acquire),
            last_write_ms: s.last_write_ms.load(Ordering::Acquire),
            commits: s.commits.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            failed_commits: s.failed_commits.load(Ordering::Relaxed),
        })
    }

    /// Where the file's bytes go (see [`StoreSpace`]).
    pub fn space(&self) -> Result<StoreSpace, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let mut tables = Vec::new();
        for handle in txn.list_tables()? {
            let table = txn.open_untyped_table(handle)?;
            let stats = table.stats()?;
            tables.push(TableSpace {
                name: table.name().to_owned(),
                entries: table.len()?,
                stored_bytes: stats.stored_bytes(),
                metadata_bytes: stats.metadata_bytes(),
                fragmented_bytes: stats.fragmented_bytes(),
            });
        }
        drop(txn);
        let write = self.inner.db.begin_write()?;
        let stats = write.stats()?;
        write.abort()?;
        let file_bytes = std::fs::metadata(self.inner.dir.join(DB_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(StoreSpace {
            tables,
            allocated_bytes: stats.allocated_pages() * stats.page_size() as u64,
            file_bytes,
        })
    }

    /// The key slots, for `clinicbox keys list`.
    pub fn key_slots(&self) -> Result<Vec<KeySlotInfo>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let raw = meta
            .get(tables::META_KEYSLOTS)?
            .ok_or_else(|| KeySlotError::Corrupt("no key slot table".into()))?;
        Ok(SlotTable::from_json(raw.value())?.infos())
    }

    /// Adds a key slot; for a recovery slot the printable key is returned once.
    pub fn add_key_slot(
        &self,
        new: NewKeySlot,
    ) -> Result<(KeySlotInfo, Option<RecoveryKey>), StoreError> {
        let dek = self.inner.dek.clone();
        self.edit_slots(move |slots, now| slots.add(&dek, new, now))
    }

    /// Removes a key slot. The last slot cannot be removed.
    pub fn remove_key_slot(&self, id: u32) -> Result<(), StoreError> {
        self.edit_slots(move |slots, _| Ok(slots.remove(id)?))
    }

    /// Replaces PIN slot `id` by a slot for `new_pin` (same label). Data is not re-encrypted.
    pub fn change_pin(
        &self,
        id: u32,
        new_pin: Zeroizing<String>,
        cost: PinCost,
    ) -> Result<KeySlotInfo, StoreError> {
        let dek = self.inner.dek.clone();
        self.edit_slots(move |slots, now| {
            if slots.kind_of(id)? != KeySlotKind::Pin {
                return Err(KeySlotError::NotPin(id).into());
            }
            let label = slots
                .infos()
                .into_iter()
                .find(|s| s.id == id)
                .map(|s| s.label)
                .unwrap_or_default();
            let (info, _) = slots.add(
                &dek,
                NewKeySlot::Pin {
                    pin: new_pin,
                    label,
                    cost,
                },
                now,
            )?;
            slots.remove(id)?;
            Ok(info)
        })
    }

    fn edit_slots<T: Send + 'static>(
        &self,
        edit: impl FnOnce(&mut SlotTable, u64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let r = self.write_blocking(move |ctx| {
            let raw = ctx
                .meta_get(tables::META_KEYSLOTS)?
                .ok_or_else(|| KeySlotError::Corrupt("no key slot table".into()))?;
            let mut slots = SlotTable::from_json(&raw)?;
            let out = edit(&mut slots, ctx.now_ms())?;
            ctx.meta_put(tables::META_KEYSLOTS, slots.to_json());
            Ok::<T, StoreError>(out)
        });
        r.map(|c| c.value).map_err(WriteError::flatten)
    }
}

struct Unlocked {
    dek: DataKey,
    slot: u32,
    clock: u64,
    last_seq: u64,
    derived_current: bool,
}

fn unlock_meta(txn: &redb::ReadTransaction, unlock: &Unlock) -> Result<Unlocked, StoreError> {
    let meta = txn.open_table(META)?;
    let get = |k: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta.get(k)?.map(|v| v.value().to_vec()))
    };
    FormatInfo::read(&meta)?.check()?;
    let slots = get(tables::META_KEYSLOTS)?
        .ok_or_else(|| KeySlotError::Corrupt("no key slot table".into()))?;
    let (dek, slot) = SlotTable::from_json(&slots)?.unlock(unlock)?;
    let u64_of = |k| -> Result<u64, StoreError> {
        Ok(get(k)?.as_deref().and_then(tables::u64_le).unwrap_or(0))
    };
    let last_seq = u64_of(tables::META_LAST_SEQ)?;
    // A store with no record yet has nothing derived from records to be behind on.
    let derived_current = last_seq == 0 || u64_of(tables::META_DERIVED_THROUGH)? == last_seq;
    Ok(Unlocked {
        dek,
        slot,
        clock: u64_of(tables::META_CLOCK)?,
        last_seq,
        derived_current,
    })
}

fn spawn_writer(
    dir: &Path,
    db: &Arc<Database>,
    shared: &Arc<Shared>,
) -> Result<(mpsc::Sender<Msg>, JoinHandle<()>), StoreError> {
    let (tx, rx) = mpsc::channel();
    let (db, shared) = (db.clone(), shared.clone());
    let writer = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || write::run(db, shared, rx))
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
    Ok((tx, writer))
}

fn open_db(dir: &Path, create: bool, options: StoreOptions) -> Result<Database, StoreError> {
    let path = dir.join(DB_FILE);
    let mut builder = Database::builder();
    builder.set_cache_size(options.cache_bytes);
    let r = if !options.sync_delay.is_zero() {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)
            .map_err(redb::DatabaseError::from)
            .and_then(|file| crate::slow_sync::SlowSync::new(file, options.sync_delay))
            .and_then(|backend| builder.create_with_backend(backend))
    } else if create {
        builder.create(&path)
    } else {
        builder.open(&path)
    };
    r.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path },
        e => e.into(),
    })
}

/// Makes a newly created file's directory entry durable.
fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })
}
