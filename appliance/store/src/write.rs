//! Group commit: one writer thread runs every write closure and commits them together.
//!
//! Callers hand the writer a closure. The writer takes every closure that is waiting, runs them
//! one after another against one redb write transaction, commits it durably (one fsync for the
//! whole group) and only then answers each caller. A closure that returns `Err` has its own
//! writes discarded and the others are unaffected, because writes are buffered per closure and
//! reach redb only after the closure succeeded. Closures run serially, so a read-modify-write
//! inside one closure can never interleave with another's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use redb::{Database, ReadableTable, WriteTransaction};
use serde::Serialize;

use crate::cipher::Cipher;
use crate::collection::check_key;
use crate::record::{Change, Record};
use crate::store::Shared;
use crate::tables::{self, BLIND_INDEX, CHANGELOG, CHANGELOG_BY_TIME, META};
use crate::{Collection, StoreError};

/// How many waiting closures one commit takes at most.
const MAX_GROUP: usize = 2048;

pub(crate) type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> Completion + Send>;

pub(crate) enum Msg {
    Job(Job),
    Close(mpsc::SyncSender<()>),
}

/// What a closure leaves for the writer: `Some(reply)` keeps its writes and is answered once the
/// group's commit is durable (or failed); `None` means it rejected itself and already answered.
pub(crate) type Completion = Option<Box<dyn FnOnce(Result<CommitInfo, StoreError>) + Send>>;

/// Where a write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The store's last sequence number after the commit.
    pub last_seq: u64,
    /// The commit's server time (ms).
    pub at_ms: u64,
}

/// A closure's result together with the commit it was part of.
#[derive(Debug, Clone)]
pub struct Committed<T> {
    pub value: T,
    pub commit: CommitInfo,
}

/// One change to the keyed-hash index, applied in the order the writers made them.
enum IndexOp {
    Add(Vec<u8>),
    Remove(Vec<u8>),
    /// Every entry of one index (its `name ‖ 0x00` prefix).
    Clear(Vec<u8>),
}

#[derive(Default)]
struct Pending {
    records: HashMap<(Collection, String), Record>,
    order: Vec<(Collection, String)>,
    index: Vec<IndexOp>,
    meta: Vec<(&'static str, Vec<u8>)>,
    /// The commit rebuilds derived data ([`WriteCtx::mark_derived_current`]).
    derived: bool,
}

impl Pending {
    fn put(&mut self, c: Collection, key: String, r: Record) {
        if self.records.insert((c, key.clone()), r).is_none() {
            self.order.push((c, key));
        }
    }

    fn absorb(&mut self, other: Pending) {
        let Pending {
            mut records,
            order,
            index,
            meta,
            derived,
        } = other;
        for k in order {
            if let Some(r) = records.remove(&k) {
                self.put(k.0, k.1, r);
            }
        }
        self.index.extend(index);
        self.meta.extend(meta);
        self.derived |= derived;
    }
}

/// A write closure's view: reads see committed data plus everything written before it in the
/// same group; writes are buffered until the closure returns `Ok`.
pub struct WriteCtx<'a> {
    txn: &'a WriteTransaction,
    cipher: &'a Cipher,
    now_ms: u64,
    group: &'a Pending,
    mine: Pending,
}

impl WriteCtx<'_> {
    /// The server time this commit will carry; use it for `updatedAt` inside bodies.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The current record, tombstones included.
    pub fn get(&self, c: Collection, key: &str) -> Result<Option<Record>, StoreError> {
        let k = (c, key.to_owned());
        if let Some(r) = self
            .mine
            .records
            .get(&k)
            .or_else(|| self.group.records.get(&k))
        {
            return Ok(Some(r.clone()));
        }
        let table = self.txn.open_table(tables::collection_table(c))?;
        let name = c.table_name();
        match table.get(key)? {
            Some(v) => {
                let plain = self.cipher.open(&name, key.as_bytes(), v.value())?;
                Ok(Some(Record::decode(c.name(), key, &plain)?))
            }
            None => Ok(None),
        }
    }

    /// Writes a live record (creating it, updating it, or bringing back a tombstone; whether the
    /// latter is allowed is the caller's rule).
    pub fn put(&mut self, c: Collection, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.write_record(c, key, body, false)
    }

    /// Serialises `value` as JSON and writes it.
    pub fn put_json<T: Serialize>(
        &mut self,
        c: Collection,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec(value).map_err(|source| StoreError::Json {
            collection: c.name().into(),
            key: key.into(),
            source,
        })?;
        self.put(c, key, body)
    }

    /// Turns a record into a tombstone (keeping its body); false when there is no live record.
    pub fn delete(&mut self, c: Collection, key: &str) -> Result<bool, StoreError> {
        match self.get(c, key)? {
            Some(mut r) if !r.deleted => {
                r.deleted = true;
                r.updated_ms = self.now_ms;
                self.mine.put(c, key.to_owned(), r);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Writes a tombstone with `body`, whether or not the record existed (a deletion that arrives
    /// before, or instead of, the record itself).
    pub fn put_tombstone(
        &mut self,
        c: Collection,
        key: &str,
        body: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.write_record(c, key, body, true)
    }

    /// Buffers a record at this commit's time, keeping the first write's `created_ms`.
    fn write_record(
        &mut self,
        c: Collection,
        key: &str,
        body: Vec<u8>,
        deleted: bool,
    ) -> Result<(), StoreError> {
        check_key(key)?;
        let created_ms = self.get(c, key)?.map_or(self.now_ms, |r| r.created_ms);
        let r = Record {
            seq: 0,
            created_ms,
            updated_ms: self.now_ms,
            deleted,
            body,
        };
        self.mine.put(c, key.to_owned(), r);
        Ok(())
    }

    /// Adds `key` under `value` in the keyed-hash index `index` (see [`ReadView::index_lookup`]).
    ///
    /// [`ReadView::index_lookup`]: crate::ReadView::index_lookup
    pub fn index_add(&mut self, index: &str, value: &str, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        let token = self.cipher.blind(index, value);
        self.mine
            .index
            .push(IndexOp::Add(tables::index_key(index, &token, key)));
        Ok(())
    }

    /// Removes `key` from `value` in index `index`.
    pub fn index_remove(&mut self, index: &str, value: &str, key: &str) {
        let token = self.cipher.blind(index, value);
        self.mine
            .index
            .push(IndexOp::Remove(tables::index_key(index, &token, key)));
    }

    /// Empties index `index`: for a user rebuilding it whole, in the same commit as the adds
    /// that follow (see [`Store::derived_current`](crate::Store::derived_current)).
    pub fn index_clear(&mut self, index: &str) {
        self.mine
            .index
            .push(IndexOp::Clear(tables::index_prefix(index)));
    }

    /// Says this commit leaves the derived data current: the caller rebuilt it whole here
    /// (see [`Store::derived_current`](crate::Store::derived_current)).
    pub fn mark_derived_current(&mut self) {
        self.mine.derived = true;
    }

    pub(crate) fn meta_put(&mut self, key: &'static str, value: Vec<u8>) {
        self.mine.meta.push((key, value));
    }

    pub(crate) fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((_, v)) = self
            .mine
            .meta
            .iter()
            .chain(self.group.meta.iter())
            .rev()
            .find(|(k, _)| *k == key)
        {
            return Ok(Some(v.clone()));
        }
        let t = self.txn.open_table(META)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }
}

/// The writer thread's loop.
pub(crate) fn run(db: Arc<Database>, shared: Arc<Shared>, rx: mpsc::Receiver<Msg>) {
    let mut closing: Option<mpsc::SyncSender<()>> = None;
    while closing.is_none() {
        let first = match rx.recv() {
            Ok(Msg::Job(j)) => j,
            Ok(Msg::Close(ack)) => {
                closing = Some(ack);
                break;
            }
            Err(_) => break,
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push(j),
                Ok(Msg::Close(ack)) => {
                    closing = Some(ack);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_group(&db, &shared, jobs);
    }
    // Jobs queued behind a close are dropped unrun; dropping a job drops its reply channel,
    // so its caller gets `StoreError::Closed` rather than waiting forever.
    drop(rx);
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

fn commit_group(db: &Database, shared: &Shared, jobs: Vec<Job>) {
    let now_ms = shared.clock.begin_commit();
    let mut kept = Vec::with_capacity(jobs.len());
    let result = (|| -> Result<CommitInfo, StoreError> {
        let mut txn = db.begin_write()?;
        // Acknowledged means on disk: the commit returns only after fsync (redb's default,
        // named here so no change of default can weaken it).
        txn.set_durability(redb::Durability::Immediate)?;
        let mut group = Pending::default();
        for job in jobs {
            let mut ctx = WriteCtx {
                txn: &txn,
                cipher: &shared.cipher,
                now_ms,
                group: &group,
                mine: Pending::default(),
            };
            let completion = job(&mut ctx);
            let mine = ctx.mine;
            if let Some(reply) = completion {
                group.absorb(mine);
                kept.push(reply);
            }
        }
        let derived = group.derived || shared.derived_current.load(Ordering::Acquire);
        let last_seq = apply(&txn, &shared.cipher, group, now_ms, derived)?;
        txn.commit()?;
        if derived {
            shared.derived_current.store(true, Ordering::Release);
        }
        Ok(CommitInfo {
            last_seq,
            at_ms: now_ms,
        })
    })();
    shared.clock.end_commit();
    match result {
        Ok(info) => {
            shared.last_seq.store(info.last_seq, Ordering::Release);
            shared.last_write_ms.store(now_ms, Ordering::Release);
            shared.commits.fetch_add(1, Ordering::Relaxed);
            shared
                .writes
                .fetch_add(kept.len() as u64, Ordering::Relaxed);
            for reply in kept {
                reply(Ok(info));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writers = kept.len(), "store commit failed");
            shared.failed_commits.fetch_add(1, Ordering::Relaxed);
            let msg = e.to_string();
            for reply in kept {
                reply(Err(StoreError::CommitFailed(msg.clone())));
            }
        }
    }
}

fn apply(
    txn: &WriteTransaction,
    cipher: &Cipher,
    group: Pending,
    now_ms: u64,
    derived: bool,
) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let mut seq = meta
        .get(tables::META_LAST_SEQ)?
        .and_then(|v| tables::u64_le(v.value()))
        .unwrap_or(0);
    let first_seq = seq + 1;
    {
        let mut log = txn.open_table(CHANGELOG)?;
        let Pending {
            mut records,
            order,
            index,
            meta: meta_writes,
            derived: _,
        } = group;
        for (c, key) in order {
            let Some(mut r) = records.remove(&(c, key.clone())) else {
                continue;
            };
            seq += 1;
            r.seq = seq;
            let name = c.table_name();
            let sealed = cipher.seal(&name, key.as_bytes(), &r.encode())?;
            txn.open_table(tables::collection_table(c))?
                .insert(key.as_str(), sealed.as_slice())?;
            let change = Change {
                seq,
                at_ms: now_ms,
                collection: c.name().into(),
                key,
                deleted: r.deleted,
            };
            let sealed = cipher.seal("_changelog", &seq.to_le_bytes(), &change.encode())?;
            log.insert(seq, sealed.as_slice())?;
        }
        let mut idx = txn.open_table(BLIND_INDEX)?;
        for op in index {
            match op {
                IndexOp::Add(k) => {
                    idx.insert(k.as_slice(), ())?;
                }
                IndexOp::Remove(k) => {
                    idx.remove(k.as_slice())?;
                }
                IndexOp::Clear(prefix) => {
                    // The prefix ends in 0x00, so `… 0x01` is just past its last key.
                    let mut end = prefix.clone();
                    if let Some(last) = end.last_mut() {
                        *last = 1;
                    }
                    idx.retain_in::<&[u8], _>(prefix.as_slice()..end.as_slice(), |_, _| false)?;
                }
            }
        }
        for (k, v) in meta_writes {
            meta.insert(k, v.as_slice())?;
        }
    }
    if seq >= first_seq {
        let mut by_time = txn.open_table(CHANGELOG_BY_TIME)?;
        if by_time.get(now_ms)?.is_none() {
            by_time.insert(now_ms, first_seq)?;
        }
    }
    meta.insert(tables::META_LAST_SEQ, seq.to_le_bytes().as_slice())?;
    if derived {
        meta.insert(tables::META_DERIVED_THROUGH, seq.to_le_bytes().as_slice())?;
    }
    meta.insert(tables::META_CLOCK, now_ms.to_le_bytes().as_slice())?;
    Ok(seq)
}
