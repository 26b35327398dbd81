//! Key slots: the data-encryption key (DEK) wrapped under several independent secrets, as LUKS
//! does. Adding, removing or re-keying a slot rewrites only the slot table, never the data.
//!
//! A slot stores `kdf` parameters, a 24-byte nonce and `XChaCha20-Poly1305(KEK, DEK)` with
//! associated data `clinicbox-keyslot-v1 ‖ id ‖ kind`, so a slot's parameters cannot be swapped
//! with another slot's. The slot table is JSON in the store's plaintext `meta` table: it holds
//! only salts, costs and wrapped keys.

use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::cipher::{DataKey, KEY_LEN, random};
use crate::{KeySlotError, StoreError, UnlockError};

/// Shortest PIN/passphrase a PIN slot accepts.
pub const MIN_PIN_LEN: usize = 6;
const SALT_LEN: usize = 16;
const RECOVERY_BYTES: usize = 16;

/// What kind of secret opens a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeySlotKind {
    /// A PIN or passphrase typed by a person, stretched with Argon2id.
    Pin,
    /// A high-entropy recovery key shown once at creation, for printing.
    Recovery,
    /// The contents of a file (demo, development, or a key kept on separate media or sealed by a TPM).
    KeyFile,
}

impl KeySlotKind {
    fn as_str(self) -> &'static str {
        match self {
            KeySlotKind::Pin => "pin",
            KeySlotKind::Recovery => "recovery",
            KeySlotKind::KeyFile => "keyFile",
        }
    }
}

/// Argon2id cost of a PIN slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinCost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl PinCost {
    /// 64 MiB, 3 passes: about half a second on a Raspberry Pi 4.
    pub const DEFAULT: PinCost = PinCost {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
    /// Cheap parameters for tests only: never use for a real box.
    pub const INSECURE_FOR_TESTS: PinCost = PinCost {
        m_kib: 64,
        t: 1,
        p: 1,
    };
}

/// A secret that unlocks the store.
pub enum Unlock {
    Pin(Zeroizing<String>),
    RecoveryKey(Zeroizing<String>),
    KeyFile(PathBuf),
}

impl Unlock {
    pub fn pin(pin: impl Into<String>) -> Unlock {
        Unlock::Pin(Zeroizing::new(pin.into()))
    }
    pub fn recovery_key(key: impl Into<String>) -> Unlock {
        Unlock::RecoveryKey(Zeroizing::new(key.into()))
    }
    pub fn key_file(path: impl Into<PathBuf>) -> Unlock {
        Unlock::KeyFile(path.into())
    }
}

/// A slot to add.
pub enum NewKeySlot {
    Pin {
        pin: Zeroizing<String>,
        label: String,
        cost: PinCost,
    },
    /// Generates a recovery key; it is returned once and never stored.
    Recovery { label: String },
    /// Uses the file's contents; with `create`, writes 32 random bytes there first (mode 0600).
    KeyFile {
        path: PathBuf,
        label: String,
        create: bool,
    },
}

/// What a slot says about itself, for `clinicbox keys list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySlotInfo {
    pub id: u32,
    pub kind: KeySlotKind,
    pub label: String,
    pub created_ms: u64,
}

/// A recovery key in its printable form: 8 groups of 4 hex digits.
pub struct RecoveryKey(Zeroizing<String>);

impl RecoveryKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryKey(…)")
    }
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "alg", rename_all = "camelCase")]
enum Kdf {
    #[serde(rename = "argon2id")]
    Argon2id {
        #[serde(flatten)]
        cost: PinCost,
        salt: String,
    },
    #[serde(rename = "hkdf-sha256")]
    HkdfSha256 { salt: String },
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredSlot {
    id: u32,
    kind: KeySlotKind,
    label: String,
    created_ms: u64,
    kdf: Kdf,
    nonce: String,
    wrapped: String,
}

/// The slot table as stored in `meta`.
#[derive(Serialize, Deserialize, Clone, Default)]
pub(crate) struct SlotTable {
    version: u32,
    next_id: u32,
    slots: Vec<StoredSlot>,
}

impl SlotTable {
    pub(crate) fn from_json(bytes: &[u8]) -> Result<SlotTable, KeySlotError> {
        let t: SlotTable =
            serde_json::from_slice(bytes).map_err(|e| KeySlotError::Corrupt(e.to_string()))?;
        if t.version != 1 {
            return Err(KeySlotError::Corrupt(format!("version {}", t.version)));
        }
        Ok(t)
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("slot table serialises")
    }

    pub(crate) fn new() -> SlotTable {
        SlotTable {
            version: 1,
            next_id: 0,
            slots: Vec::new(),
        }
    }

    pub(crate) fn infos(&self) -> Vec<KeySlotInfo> {
        self.slots
            .iter()
            .map(|s| KeySlotInfo {
                id: s.id,
                kind: s.kind,
                label: s.label.clone(),
                created_ms: s.created_ms,
            })
            .collect()
    }

    /// Finds the DEK with `unlock`. A wrong secret leaves everything as it was.
    pub(crate) fn unlock(&self, unlock: &Unlock) -> Result<(DataKey, u32), StoreError> {
        let (kind, secret, what) = match unlock {
            Unlock::Pin(pin) => (
                KeySlotKind::Pin,
                Zeroizing::new(pin.as_bytes().to_vec()),
                "PIN",
            ),
            Unlock::RecoveryKey(k) => (KeySlotKind::Recovery, parse_recovery(k)?, "recovery key"),
            Unlock::KeyFile(path) => (KeySlotKind::KeyFile, read_key_file(path)?, "key file"),
        };
        for slot in self.slots.iter().filter(|s| s.kind == kind) {
            let kek = derive(&slot.kdf, &secret)?;
            if let Some(dek) = unwrap_dek(slot, &kek) {
                return Ok((dek, slot.id));
            }
        }
        Err(UnlockError::WrongKey(what).into())
    }

    /// Adds a slot for `dek`; returns the new slot and, for a recovery slot, the key to print.
    pub(crate) fn add(
        &mut self,
        dek: &DataKey,
        new: NewKeySlot,
        now_ms: u64,
    ) -> Result<(KeySlotInfo, Option<RecoveryKey>), StoreError> {
        let mut salt = [0u8; SALT_LEN];
        random(&mut salt)?;
        let salt = hex::encode(salt);
        let (kind, label, kdf, secret, recovery) = match new {
            NewKeySlot::Pin { pin, label, cost } => {
                if pin.chars().count() < MIN_PIN_LEN {
                    return Err(KeySlotError::PinTooShort { min: MIN_PIN_LEN }.into());
                }
                let secret = Zeroizing::new(pin.as_bytes().to_vec());
                (
                    KeySlotKind::Pin,
                    label,
                    Kdf::Argon2id { cost, salt },
                    secret,
                    None,
                )
            }
            NewKeySlot::Recovery { label } => {
                let mut raw = Zeroizing::new([0u8; RECOVERY_BYTES]);
                random(raw.as_mut())?;
                let printable = format_recovery(raw.as_ref());
                let secret = Zeroizing::new(raw.to_vec());
                let kdf = Kdf::HkdfSha256 { salt };
                (
                    KeySlotKind::Recovery,
                    label,
                    kdf,
                    secret,
                    Some(RecoveryKey(printable)),
                )
            }
            NewKeySlot::KeyFile {
                path,
                label,
                create,
            } => {
                if create {
                    write_new_key_file(&path)?;
                }
                let secret = read_key_file(&path)?;
                (
                    KeySlotKind::KeyFile,
                    label,
                    Kdf::HkdfSha256 { salt },
                    secret,
                    None,
                )
            }
        };
        let id = self.next_id;
        let kek = derive(&kdf, &secret)?;
        let mut nonce = [0u8; 24];
        random(&mut nonce)?;
        let wrapped = XChaCha20Poly1305::new_from_slice(kek.as_ref())
            .expect("32-byte key")
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &dek.0,
                    aad: &slot_aad(id, kind),
                },
            )
            .map_err(|_| KeySlotError::Kdf("wrapping failed".into()))?;
        self.slots.push(StoredSlot {
            id,
            kind,
            label,
            created_ms: now_ms,
            kdf,
            nonce: hex::encode(nonce),
            wrapped: hex::encode(wrapped),
        });
        self.next_id += 1;
        let info = self.infos().pop().expect("slot just pushed");
        Ok((info, recovery))
    }

    pub(crate) fn remove(&mut self, id: u32) -> Result<(), KeySlotError> {
        let pos = self
            .slots
            .iter()
            .position(|s| s.id == id)
            .ok_or(KeySlotError::NoSuchSlot(id))?;
        if self.slots.len() == 1 {
            return Err(KeySlotError::LastSlot(id));
        }
        self.slots.remove(pos);
        Ok(())
    }

    pub(crate) fn kind_of(&self, id: u32) -> Result<KeySlotKind, KeySlotError> {
        self.slots
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.kind)
            .ok_or(KeySlotError::NoSuchSlot(id))
    }
}

fn slot_aad(id: u32, kind: KeySlotKind) -> Vec<u8> {
    format!("clinicbox-keyslot-v1\0{id}\0{}", kind.as_str()).into_bytes()
}

fn derive(kdf: &Kdf, secret: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, StoreError> {
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    let bad_salt = |_| KeySlotError::Corrupt("salt is not hex".into());
    match kdf {
        Kdf::Argon2id { cost, salt } => {
            let salt = hex::decode(salt).map_err(bad_salt)?;
            let params = Params::new(cost.m_kib, cost.t, cost.p, Some(KEY_LEN))
                .map_err(|e| KeySlotError::Kdf(e.to_string()))?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(secret, &salt, kek.as_mut())
                .map_err(|e| KeySlotError::Kdf(e.to_string()))?;
        }
        Kdf::HkdfSha256 { salt } => {
            let salt = hex::decode(salt).map_err(bad_salt)?;
            Hkdf::<Sha256>::new(Some(&salt), secret)
                .expand(b"clinicbox key slot", kek.as_mut())
                .map_err(|e| KeySlotError::Kdf(e.to_string()))?;
        }
    }
    Ok(kek)
}

fn unwrap_dek(slot: &StoredSlot, kek: &[u8; KEY_LEN]) -> Option<DataKey> {
    let nonce = XNonce::try_from(hex::decode(&slot.nonce).ok()?.as_slice()).ok()?;
    let wrapped = hex::decode(&slot.wrapped).ok()?;
    let mut plain = XChaCha20Poly1305::new_from_slice(kek)
        .ok()?
        .decrypt(
            &nonce,
            Payload {
                msg: &wrapped,
                aad: &slot_aad(slot.id, slot.kind),
            },
        )
        .ok()?;
    let dek = <[u8; KEY_LEN]>::try_from(plain.as_slice())
        .ok()
        .map(DataKey);
    plain.zeroize();
    dek
}

fn format_recovery(raw: &[u8]) -> Zeroizing<String> {
    let hex = Zeroizing::new(hex::encode(raw));
    let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|i| &hex[i..i + 4]).collect();
    Zeroizing::new(groups.join("-"))
}

fn parse_recovery(s: &str) -> Result<Zeroizing<Vec<u8>>, UnlockError> {
    let digits: Zeroizing<String> = Zeroizing::new(
        s.chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    );
    let raw = hex::decode(digits.as_bytes()).map_err(|_| UnlockError::MalformedRecoveryKey)?;
    if raw.len() != RECOVERY_BYTES {
        return Err(UnlockError::MalformedRecoveryKey);
    }
    Ok(Zeroizing::new(raw))
}

fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, UnlockError> {
    let bytes = std::fs::read(path).map_err(|source| UnlockError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    if bytes.len() < KEY_LEN {
        return Err(UnlockError::KeyFileTooShort(path.to_owned()));
    }
    Ok(Zeroizing::new(bytes))
}

fn write_new_key_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    random(key.as_mut())?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(key.as_ref()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(new: NewKeySlot) -> (SlotTable, DataKey, Option<RecoveryKey>) {
        let dek = DataKey([42u8; KEY_LEN]);
        let mut t = SlotTable::new();
        let (_, rk) = t.add(&dek, new, 1).expect("add");
        (t, dek, rk)
    }

    fn pin_slot(pin: &str) -> NewKeySlot {
        NewKeySlot::Pin {
            pin: Zeroizing::new(pin.into()),
            label: "clinic lead".into(),
            cost: PinCost::INSECURE_FOR_TESTS,
        }
    }

    #[test]
    fn pin_slot_unlocks_with_the_right_pin_only() {
        let (t, dek, _) = table_with(pin_slot("246810"));
        let (got, id) = t.unlock(&Unlock::pin("246810")).expect("unlock");
        assert_eq!(got.0, dek.0);
        assert_eq!(id, 0);
        assert!(matches!(
            t.unlock(&Unlock::pin("246811")),
            Err(StoreError::Unlock(UnlockError::WrongKey("PIN")))
        ));
    }

    #[test]
    fn recovery_key_is_printable_and_tolerant_of_case_and_spacing() {
        let (t, dek, rk) = table_with(NewKeySlot::Recovery {
            label: "printed".into(),
        });
        let rk = rk.expect("recovery key");
        assert_eq!(rk.as_str().len(), 39);
        let typed = rk.as_str().to_uppercase().replace('-', " ");
        assert_eq!(
            t.unlock(&Unlock::recovery_key(typed)).expect("unlock").0.0,
            dek.0
        );
        assert!(matches!(
            t.unlock(&Unlock::recovery_key("zz")),
            Err(StoreError::Unlock(UnlockError::MalformedRecoveryKey))
        ));
    }

    #[test]
    fn short_pins_are_refused() {
        let mut t = SlotTable::new();
        let err = t.add(&DataKey([1; KEY_LEN]), pin_slot("123"), 1).err();
        assert!(matches!(
            err,
            Some(StoreError::KeySlot(KeySlotError::PinTooShort { .. }))
        ));
    }

    #[test]
    fn the_last_slot_cannot_be_removed() {
        let (mut t, dek, _) = table_with(pin_slot("246810"));
        assert!(matches!(t.remove(0), Err(KeySlotError::LastSlot(0))));
        t.add(&dek, NewKeySlot::Recovery { label: "r".into() }, 2)
            .expect("add");
        t.remove(0).expect("remove pin slot");
        assert!(t.unlock(&Unlock::pin("246810")).is_err());
    }

    #[test]
    fn swapped_slot_parameters_fail() {
        let dek = DataKey([9; KEY_LEN]);
        let mut t = SlotTable::new();
        t.add(&dek, pin_slot("246810"), 1).expect("add");
        t.add(&dek, pin_slot("135790"), 1).expect("add");
        // Give slot 1 the wrapped key of slot 0: the AAD binds it to id 0, so it must not open.
        let wrapped0 = t.slots[0].wrapped.clone();
        let nonce0 = t.slots[0].nonce.clone();
        t.slots[1].wrapped = wrapped0;
        t.slots[1].nonce = nonce0;
        t.slots[1].kdf = t.slots[0].kdf.clone();
        t.slots.remove(0);
        assert!(t.unlock(&Unlock::pin("246810")).is_err());
    }

    #[test]
    fn key_file_slot_creates_a_private_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.key");
        let (t, dek, _) = table_with(NewKeySlot::KeyFile {
            path: path.clone(),
            label: "demo".into(),
            create: true,
        });
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            t.unlock(&Unlock::key_file(&path)).expect("unlock").0.0,
            dek.0
        );
        std::fs::write(&path, [0u8; 40]).expect("overwrite");
        assert!(t.unlock(&Unlock::key_file(&path)).is_err());
    }
}
