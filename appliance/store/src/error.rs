//! Typed errors of the store. Messages name what failed; they never carry record contents.

use std::path::PathBuf;

/// Anything that can go wrong inside the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no ClinicBox store in {0} (create one with `clinicbox keys init` or `serve --demo`)")]
    NotFound(PathBuf),
    #[error("a ClinicBox store already exists in {0}")]
    AlreadyExists(PathBuf),
    #[error("the store in {path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("unlock failed: {0}")]
    Unlock(#[from] UnlockError),
    #[error("key slot error: {0}")]
    KeySlot(#[from] KeySlotError),
    #[error("record {collection}/{key} failed authentication (wrong key or tampered data)")]
    Tampered { collection: String, key: String },
    #[error("record {collection}/{key} is malformed: {reason}")]
    Malformed {
        collection: String,
        key: String,
        reason: String,
    },
    #[error("record {collection}/{key} is not valid JSON for the requested type: {source}")]
    Json {
        collection: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid collection or key: {0}")]
    InvalidKey(String),
    #[error("the commit failed and nothing of it was applied: {0}")]
    CommitFailed(String),
    #[error("the store is closed")]
    Closed,
    #[error("store format version {found} is not supported (this build reads {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error(
        "this store was changed by a newer release and needs store format {needs} to be read; \
         this build reads format {reads} (run the newer release, or restore a backup made before it)"
    )]
    NeedsNewerRelease { needs: u32, reads: u32 },
    #[error("the operating system's random generator failed")]
    Random,
    #[error("database error: {0}")]
    Database(String),
    #[error("the snapshot cannot copy this store: {0}")]
    Snapshot(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a store could not be unlocked. A wrong key changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error("no key slot accepts this {0}")]
    WrongKey(&'static str),
    #[error("the key file {path} could not be read: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key file {0} is too short (at least 32 bytes are needed)")]
    KeyFileTooShort(PathBuf),
    #[error("the recovery key is not well formed (expected 8 groups of 4 hex digits)")]
    MalformedRecoveryKey,
}

/// Errors of key-slot management (`clinicbox keys`).
#[derive(Debug, thiserror::Error)]
pub enum KeySlotError {
    #[error("key slot {0} does not exist")]
    NoSuchSlot(u32),
    #[error("key slot {0} is the last one; removing it would make the store unreadable")]
    LastSlot(u32),
    #[error("key slot {0} is not a PIN slot")]
    NotPin(u32),
    #[error("the PIN must have at least {min} characters")]
    PinTooShort { min: usize },
    #[error("key slot table is corrupt: {0}")]
    Corrupt(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// A write closure's own rejection, or a store failure that aborted the commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The closure returned `Err`: none of its writes were applied.
    #[error("write rejected")]
    Rejected(E),
    /// The commit failed: nothing of this group was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> WriteError<E> {
    /// Flattens a write error when the closure's error type can absorb store errors.
    pub fn flatten(self) -> E
    where
        E: From<StoreError>,
    {
        match self {
            WriteError::Rejected(e) => e,
            WriteError::Store(e) => E::from(e),
        }
    }
}

macro_rules! db_error_from {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.to_string())
            }
        })*
    };
}

db_error_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError,
);
