//! Which builds can open a store: the rule that lets an update roll back.
//!
//! A box that updates and then rolls back runs the older release on the store the newer one
//! has written. So the store records two numbers in `_meta`: `format`, the newest layout
//! that has written it, and `readableFrom`, the oldest build format that can still open it.
//! A build opens a store when `readableFrom` is at most its own format, whatever `format`
//! says: a newer release that only added what older builds ignore leaves `readableFrom`
//! alone, and the older release goes on with it. A change an older build would misread
//! raises `readableFrom`, and a release may raise it only once its slot is marked good
//! (until then the box may still go back); see the store's README, "Changing the format".

use std::path::Path;

use redb::ReadableDatabase;

use crate::StoreError;
use crate::tables::{self, META};

/// A store's format numbers, as `_meta` holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatInfo {
    /// The newest layout that has written the store.
    pub format: u32,
    /// The oldest build format that can open it.
    pub readable_from: u32,
}

impl FormatInfo {
    /// What this build writes into a store it creates.
    pub(crate) const fn this_build() -> FormatInfo {
        FormatInfo {
            format: tables::FORMAT_VERSION,
            readable_from: tables::READABLE_FROM,
        }
    }

    /// Reads the numbers from a store's `_meta` (no key needed: they are plaintext).
    pub(crate) fn read(
        meta: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<FormatInfo, StoreError> {
        let number = |k: &str| -> Result<Option<u32>, StoreError> {
            Ok(meta
                .get(k)?
                .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                .map(u32::from_le_bytes))
        };
        let format = number(tables::META_FORMAT)?.unwrap_or(0);
        let readable_from = number(tables::META_READABLE_FROM)?.unwrap_or(format);
        Ok(FormatInfo {
            format,
            readable_from,
        })
    }

    /// Refuses a store this build cannot read: none recorded, or one a newer release changed
    /// in a way this build would misread.
    pub(crate) fn check(self) -> Result<(), StoreError> {
        if self.format == 0 || self.readable_from == 0 {
            return Err(StoreError::UnsupportedFormat {
                found: self.format,
                supported: tables::FORMAT_VERSION,
            });
        }
        if self.readable_from > tables::FORMAT_VERSION {
            return Err(StoreError::NeedsNewerRelease {
                needs: self.readable_from,
                reads: tables::FORMAT_VERSION,
            });
        }
        Ok(())
    }
}

/// A store's format numbers, read without its key and without changing the file (what the
/// previous-release test checks a build left behind).
pub fn inspect_format(dir: &Path) -> Result<FormatInfo, StoreError> {
    let file = dir.join(crate::DB_FILE);
    if !file.is_file() {
        return Err(StoreError::NotFound(dir.to_owned()));
    }
    let db = redb::ReadOnlyDatabase::open(&file)?;
    let txn = db.begin_read()?;
    FormatInfo::read(&txn.open_table(META)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Collection, NewKeySlot, Store, Unlock};

    /// A store with one record, closed; its directory and key file.
    fn closed_store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("store.key");
        let (store, _) = Store::create(
            &dir.path().join("data"),
            NewKeySlot::KeyFile {
                path: key.clone(),
                label: "test".into(),
                create: true,
            },
        )
        .expect("create");
        store
            .write_blocking(|ctx| ctx.put(Collection::EVENTS, "evFormat001", b"{}".to_vec()))
            .expect("write");
        store.close().expect("close");
        (dir, key)
    }

    /// Sets (or, with `None`, removes) a format number as another release would have.
    fn set_meta(data: &Path, key: &str, value: Option<u32>) {
        let db = redb::Database::open(data.join(crate::DB_FILE)).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            match value {
                Some(v) => meta.insert(key, v.to_le_bytes().as_slice()).map(|_| ()),
                None => meta.remove(key).map(|_| ()),
            }
            .expect("edit");
        }
        txn.commit().expect("commit");
    }

    fn reads_its_record(data: &Path, key: &Path) -> bool {
        let store = Store::open(data, &Unlock::key_file(key)).expect("open");
        let found = store
            .read()
            .and_then(|r| r.get(Collection::EVENTS, "evFormat001"))
            .expect("read")
            .is_some();
        store.close().expect("close");
        found
    }

    #[test]
    fn a_new_store_says_which_builds_can_open_it() {
        let (dir, _) = closed_store();
        let info = inspect_format(&dir.path().join("data")).expect("inspect");
        assert_eq!(info, FormatInfo::this_build());
    }

    #[test]
    fn a_store_from_before_readable_from_existed_opens_as_its_format() {
        let (dir, key) = closed_store();
        let data = dir.path().join("data");
        set_meta(&data, tables::META_READABLE_FROM, None);
        let info = inspect_format(&data).expect("inspect");
        assert_eq!(info.readable_from, info.format);
        assert!(reads_its_record(&data, &key));
    }

    #[test]
    fn a_newer_release_that_only_added_leaves_the_store_to_this_one() {
        let (dir, key) = closed_store();
        let data = dir.path().join("data");
        set_meta(&data, tables::META_FORMAT, Some(tables::FORMAT_VERSION + 3));
        assert!(
            reads_its_record(&data, &key),
            "rolled back onto a newer store"
        );
        let info = inspect_format(&data).expect("inspect");
        assert_eq!(
            info.format,
            tables::FORMAT_VERSION + 3,
            "this build leaves `format` as it is"
        );
    }

    #[test]
    fn a_store_a_newer_release_changed_past_this_one_is_refused_and_left_as_it_was() {
        let (dir, key) = closed_store();
        let data = dir.path().join("data");
        set_meta(
            &data,
            tables::META_READABLE_FROM,
            Some(tables::FORMAT_VERSION + 1),
        );
        let before = std::fs::read(data.join(crate::DB_FILE)).expect("file");
        let Err(err) = Store::open(&data, &Unlock::key_file(&key)) else {
            panic!("a store needing a newer build opened");
        };
        assert!(
            matches!(err, StoreError::NeedsNewerRelease { needs, reads }
                if needs == tables::FORMAT_VERSION + 1 && reads == tables::FORMAT_VERSION),
            "{err}"
        );
        assert!(err.to_string().contains("newer release"), "{err}");
        let after = std::fs::read(data.join(crate::DB_FILE)).expect("file");
        assert!(before == after, "the refused store's file changed");
    }
}
