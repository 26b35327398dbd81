//! A consistent copy of the whole store, taken while writes go on: every table is copied from
//! one read transaction (redb's readers see one commit and never block the writer) into a new
//! file, entry by entry, sealed values as they are. The copy holds the same key slots, so it
//! opens with the same secrets; it is written under a temporary name, made durable, and only
//! then given its name, so a cut at any instant leaves no file that looks complete.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadTransaction, ReadableTable, TableDefinition, TableHandle};

use crate::StoreError;
use crate::tables::{BLIND_INDEX, CHANGELOG, CHANGELOG_BY_TIME, META};

/// Entries copied per write transaction of the copy, so memory stays bounded on a big store.
const BATCH: usize = 10_000;

/// What a snapshot copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub tables: u64,
    pub entries: u64,
    pub bytes: u64,
    /// The store's last sequence number the copy holds.
    pub last_seq: u64,
}

/// The kinds of table a store holds; a table of any other name stops the snapshot, so a table a
/// later version adds cannot be left out silently.
enum Kind {
    /// `&str → &[u8]`: `_meta` and every collection `c.<name>`.
    StrBytes,
    /// `u64 → &[u8]`: the change log.
    SeqBytes,
    /// `u64 → u64`: the change log by time.
    SeqSeq,
    /// `&[u8] → ()`: the blind index.
    Index,
}

fn kind(name: &str) -> Option<Kind> {
    match name {
        n if n == META.name() || n.starts_with("c.") => Some(Kind::StrBytes),
        n if n == CHANGELOG.name() => Some(Kind::SeqBytes),
        n if n == CHANGELOG_BY_TIME.name() => Some(Kind::SeqSeq),
        n if n == BLIND_INDEX.name() => Some(Kind::Index),
        _ => None,
    }
}

/// Copies every table readable in `txn` into a new database file `dest`.
pub(crate) fn copy(txn: &ReadTransaction, dest: &Path) -> Result<SnapshotInfo, StoreError> {
    if txn.list_multimap_tables()?.next().is_some() {
        return Err(StoreError::Snapshot(
            "the store holds a multimap table a snapshot does not know".into(),
        ));
    }
    let tmp = temporary(dest);
    let _ = std::fs::remove_file(&tmp);
    let db = Database::builder().create(&tmp)?;
    let mut info = SnapshotInfo::default();
    for handle in txn.list_tables()? {
        let name = handle.name().to_string();
        let k = kind(&name).ok_or_else(|| {
            StoreError::Snapshot(format!("table {name} is unknown to the snapshot"))
        })?;
        info.entries += match k {
            Kind::StrBytes => copy_table::<&str, &[u8]>(txn, &db, &name)?,
            Kind::SeqBytes => copy_table::<u64, &[u8]>(txn, &db, &name)?,
            Kind::SeqSeq => copy_table::<u64, u64>(txn, &db, &name)?,
            Kind::Index => copy_table::<&[u8], ()>(txn, &db, &name)?,
        };
        info.tables += 1;
    }
    let mut done = db.begin_write()?;
    done.set_durability(Durability::Immediate)?;
    done.commit()?;
    drop(db);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    };
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    info.bytes = std::fs::metadata(&tmp).map_err(io(&tmp))?.len();
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    if let Some(dir) = dest.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(info)
}

fn temporary(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

/// Copies one table in batches of [`BATCH`] entries; returns how many.
fn copy_table<K, V>(txn: &ReadTransaction, db: &Database, name: &str) -> Result<u64, StoreError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let def = TableDefinition::<K, V>::new(name);
    let source = txn.open_table(def)?;
    let mut entries = source.iter()?;
    let mut copied = 0u64;
    loop {
        // Not durable yet: one commit after the last table makes the whole copy durable.
        let mut write = db.begin_write()?;
        write.set_durability(Durability::None)?;
        let mut n = 0;
        {
            // Opened even when the source is empty: the copy has every table the store has.
            let mut table = write.open_table(def)?;
            for entry in entries.by_ref().take(BATCH) {
                let (k, v) = entry?;
                table.insert(k.value(), v.value())?;
                n += 1;
            }
        }
        write.commit()?;
        copied += n as u64;
        if n < BATCH {
            return Ok(copied);
        }
    }
}
