//! Consistent read snapshots.

use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use crate::cipher::Cipher;
use crate::record::{Change, Record};
use crate::tables::{self, BLIND_INDEX, CHANGELOG, CHANGELOG_BY_TIME};
use crate::{Collection, StoreError};

/// A snapshot of the store: everything committed when it was taken, nothing after.
pub struct ReadView {
    txn: ReadTransaction,
    cipher: Arc<Cipher>,
}

impl ReadView {
    pub(crate) fn new(txn: ReadTransaction, cipher: Arc<Cipher>) -> ReadView {
        ReadView { txn, cipher }
    }

    /// One record, tombstones included.
    pub fn get(&self, c: Collection, key: &str) -> Result<Option<Record>, StoreError> {
        let Some(table) = self.table(c)? else {
            return Ok(None);
        };
        match table.get(key)? {
            Some(v) => Ok(Some(self.decode(c, key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every record of a collection in key order, tombstones included.
    pub fn scan(&self, c: Collection) -> Result<Records, StoreError> {
        self.scan_prefix(c, "")
    }

    /// The records whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, c: Collection, prefix: &str) -> Result<Records, StoreError> {
        let range = match self.table(c)? {
            Some(t) => Some(t.range::<&str>(prefix..)?),
            None => None,
        };
        Ok(Records {
            range,
            collection: c,
            prefix: prefix.to_owned(),
            cipher: self.cipher.clone(),
        })
    }

    /// How many records (tombstones included) a collection holds.
    pub fn count(&self, c: Collection) -> Result<u64, StoreError> {
        Ok(match self.table(c)? {
            Some(t) => t.len()?,
            None => 0,
        })
    }

    /// Keys filed under `value` in the keyed-hash index `index`.
    pub fn index_lookup(&self, index: &str, value: &str) -> Result<Vec<String>, StoreError> {
        let token = self.cipher.blind(index, value);
        let prefix = tables::index_key(index, &token, "");
        let table = match self.txn.open_table(BLIND_INDEX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut keys = Vec::new();
        for entry in table.range::<&[u8]>(prefix.as_slice()..)? {
            let (k, _) = entry?;
            let k = k.value();
            if !k.starts_with(&prefix) {
                break;
            }
            keys.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(keys)
    }

    /// Up to `limit` change-log entries after sequence number `after_seq`, oldest first.
    pub fn changes_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let table = match self.txn.open_table(CHANGELOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.range(after_seq.saturating_add(1)..)?.take(limit) {
            let (k, v) = entry?;
            let seq = k.value();
            let plain = self
                .cipher
                .open("_changelog", &seq.to_le_bytes(), v.value())?;
            out.push(Change::decode(seq, &plain)?);
        }
        Ok(out)
    }

    /// The sequence number of the last change in this snapshot (0 if none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let table = match self.txn.open_table(CHANGELOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        Ok(table.last()?.map(|(k, _)| k.value()).unwrap_or(0))
    }

    /// The first sequence number committed at or after `ms`, if any. With `changes_since(seq-1)`
    /// this lists everything a tablet with `updatedAfter=ms` has not seen.
    pub fn first_seq_at_or_after(&self, ms: u64) -> Result<Option<u64>, StoreError> {
        let table = match self.txn.open_table(CHANGELOG_BY_TIME) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table
            .range(ms..)?
            .next()
            .transpose()?
            .map(|(_, v)| v.value()))
    }

    /// Keys of `c` written at or after server time `ms` (each once, in first-change order).
    pub fn keys_changed_since(&self, c: Collection, ms: u64) -> Result<Vec<String>, StoreError> {
        let Some(first) = self.first_seq_at_or_after(ms)? else {
            return Ok(Vec::new());
        };
        let mut seen = std::collections::HashSet::new();
        let mut keys = Vec::new();
        let mut after = first - 1;
        loop {
            let batch = self.changes_since(after, 4096)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for ch in batch {
                if ch.collection == c.name() && seen.insert(ch.key.clone()) {
                    keys.push(ch.key);
                }
            }
        }
        Ok(keys)
    }

    fn table(
        &self,
        c: Collection,
    ) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, StoreError> {
        match self.txn.open_table(tables::collection_table(c)) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn decode(&self, c: Collection, key: &str, sealed: &[u8]) -> Result<Record, StoreError> {
        let plain = self.cipher.open(&c.table_name(), key.as_bytes(), sealed)?;
        Record::decode(c.name(), key, &plain)
    }
}

/// Iterator over a collection's records: `(key, record)` in key order.
pub struct Records {
    range: Option<redb::Range<'static, &'static str, &'static [u8]>>,
    collection: Collection,
    prefix: String,
    cipher: Arc<Cipher>,
}

impl Iterator for Records {
    type Item = Result<(String, Record), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let range = self.range.as_mut()?;
        let entry = match range.next()? {
            Ok(e) => e,
            Err(e) => return Some(Err(e.into())),
        };
        let key = entry.0.value().to_owned();
        if !key.starts_with(&self.prefix) {
            self.range = None;
            return None;
        }
        let c = self.collection;
        let rec = self
            .cipher
            .open(&c.table_name(), key.as_bytes(), entry.1.value())
            .and_then(|plain| Record::decode(c.name(), &key, &plain));
        Some(rec.map(|r| (key, r)))
    }
}
