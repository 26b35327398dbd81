#![doc = include_str!("../README.md")]

mod cipher;
mod clock;
mod collection;
mod compress;
mod error;
mod format;
mod keyslot;
mod read;
mod record;
mod slow_sync;
mod snapshot;
mod store;
mod tables;
mod write;

pub use collection::{Collection, DataValueKey};
pub use error::{KeySlotError, StoreError, UnlockError, WriteError};
pub use format::{FormatInfo, inspect_format};
pub use keyslot::{
    KeySlotInfo, KeySlotKind, MIN_PIN_LEN, NewKeySlot, PinCost, RecoveryKey, Unlock,
};
pub use read::{ReadView, Records};
pub use record::{Change, Record};
pub use snapshot::SnapshotInfo;
pub use store::{
    DB_FILE, DEFAULT_CACHE_BYTES, Store, StoreOptions, StoreSpace, StoreStats, TableSpace,
};
pub use write::{CommitInfo, Committed, WriteCtx};
pub use zeroize::Zeroizing;
