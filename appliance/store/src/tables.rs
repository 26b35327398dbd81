//! The redb tables. Only collection values and change entries are sealed; the rest hold no
//! personal data by construction (UIDs, sequence numbers, times, keyed-hash tokens, key slots).

use redb::TableDefinition;

use crate::Collection;

/// Plaintext settings of the store itself: format, key slots, clock floor, last sequence.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("_meta");
/// seq → sealed [`Change`](crate::Change).
pub(crate) const CHANGELOG: TableDefinition<u64, &[u8]> = TableDefinition::new("_changelog");
/// commit time (ms) → first seq committed at that time.
pub(crate) const CHANGELOG_BY_TIME: TableDefinition<u64, u64> =
    TableDefinition::new("_changelog_by_time");
/// `index name ‖ 0x00 ‖ token (32 bytes) ‖ record key` → nothing.
pub(crate) const BLIND_INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("_index");

/// The store layout this build writes and reads (see [`crate::format`]).
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The oldest build format that can open what this build writes: raised only by a change an
/// older build would misread (a new record encoding, a table it would need to keep current),
/// never by an addition older builds ignore.
pub(crate) const READABLE_FROM: u32 = 1;
pub(crate) const META_FORMAT: &str = "format";
/// Absent in stores written before it existed: then the store's `format` itself.
pub(crate) const META_READABLE_FROM: &str = "readableFrom";
pub(crate) const META_KEYSLOTS: &str = "keyslots";
pub(crate) const META_CLOCK: &str = "clock";
pub(crate) const META_LAST_SEQ: &str = "lastSeq";
/// The `lastSeq` of the last commit made by a build that keeps derived data current (the
/// keyed-hash indexes its users maintain beside their records). Older builds write `lastSeq`
/// but not this, so `derivedThrough < lastSeq` says one of them wrote since.
pub(crate) const META_DERIVED_THROUGH: &str = "derivedThrough";

/// Names of collection tables, kept alive for the `TableDefinition`s that borrow them.
pub(crate) fn collection_table(
    c: Collection,
) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table_name_static(c))
}

fn table_name_static(c: Collection) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    // Collections are a small closed set of constants, so leaking one string each is bounded.
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    names
        .entry(c.name())
        .or_insert_with(|| Box::leak(c.table_name().into_boxed_str()))
}

/// Every key of index `index` starts with this, and none of any other index does.
pub(crate) fn index_prefix(index: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(index.len() + 1);
    k.extend_from_slice(index.as_bytes());
    k.push(0);
    k
}

pub(crate) fn index_key(index: &str, token: &[u8; 32], key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(index.len() + 33 + key.len());
    k.extend_from_slice(index.as_bytes());
    k.push(0);
    k.extend_from_slice(token);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn u64_le(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_le_bytes)
}
