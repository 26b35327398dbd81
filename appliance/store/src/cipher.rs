//! Value encryption: XChaCha20-Poly1305 under the data-encryption key (DEK).
//!
//! Format of a stored value: `[version = 1][nonce: 24 bytes][ciphertext ‖ tag: 16 bytes]`.
//! The associated data binds each value to where it lives (`table ‖ 0x00 ‖ key`), so a value
//! copied to another key or table fails authentication instead of being read as that record.
//! Nonces are random: 192 bits make collisions negligible without a persistent counter,
//! which a power cut could roll back.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::StoreError;

const VALUE_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
pub(crate) const KEY_LEN: usize = 32;

/// The random data-encryption key. Never written anywhere except wrapped in key slots.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct DataKey(pub(crate) [u8; KEY_LEN]);

impl DataKey {
    pub(crate) fn generate() -> Result<DataKey, StoreError> {
        let mut k = [0u8; KEY_LEN];
        random(&mut k)?;
        Ok(DataKey(k))
    }
}

pub(crate) fn random(buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(buf).map_err(|_| StoreError::Random)
}

/// Encrypts and decrypts record values, and computes blind-index tokens.
pub(crate) struct Cipher {
    aead: XChaCha20Poly1305,
    blind_key: [u8; KEY_LEN],
}

impl Drop for Cipher {
    fn drop(&mut self) {
        self.blind_key.zeroize();
    }
}

impl Cipher {
    pub(crate) fn new(dek: &DataKey) -> Cipher {
        let hk = Hkdf::<Sha256>::new(Some(b"clinicbox-store-v1"), &dek.0);
        let mut value_key = [0u8; KEY_LEN];
        let mut blind_key = [0u8; KEY_LEN];
        // Both lengths are far below HKDF-SHA256's limit of 8160 bytes.
        hk.expand(b"value encryption", &mut value_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hk.expand(b"blind index", &mut blind_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let aead = XChaCha20Poly1305::new_from_slice(&value_key)
            .expect("XChaCha20-Poly1305 takes a 32-byte key");
        value_key.zeroize();
        Cipher { aead, blind_key }
    }

    pub(crate) fn seal(
        &self,
        table: &str,
        key: &[u8],
        plain: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let aad = aad(table, key);
        let ct = self
            .aead
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Database("encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VALUE_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub(crate) fn open(
        &self,
        table: &str,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let tampered = || StoreError::Tampered {
            collection: table.to_owned(),
            key: String::from_utf8_lossy(key).into_owned(),
        };
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VALUE_VERSION {
            return Err(tampered());
        }
        let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| tampered())?;
        self.aead
            .decrypt(
                &nonce,
                Payload {
                    msg: ct,
                    aad: &aad(table, key),
                },
            )
            .map_err(|_| tampered())
    }

    /// A keyed hash of `value` for index `index`: equal values give equal tokens, but the token
    /// reveals nothing about the value without the DEK.
    pub(crate) fn blind(&self, index: &str, value: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.blind_key)
            .expect("HMAC accepts keys of any length");
        mac.update(index.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn aad(table: &str, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(table.len() + 1 + key.len());
    a.extend_from_slice(table.as_bytes());
    a.push(0);
    a.extend_from_slice(key);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&DataKey([7u8; KEY_LEN]))
    }

    #[test]
    fn sealed_values_open_only_at_their_own_key() {
        let c = cipher();
        let sealed = c.seal("c.events", b"ev1", b"hello").expect("seal");
        assert_eq!(c.open("c.events", b"ev1", &sealed).expect("open"), b"hello");
        assert!(c.open("c.events", b"ev2", &sealed).is_err());
        assert!(c.open("c.enrollments", b"ev1", &sealed).is_err());
    }

    #[test]
    fn flipped_bits_are_detected() {
        let c = cipher();
        let mut sealed = c.seal("t", b"k", b"hello").expect("seal");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(
            c.open("t", b"k", &sealed),
            Err(StoreError::Tampered { .. })
        ));
    }

    #[test]
    fn another_key_cannot_open() {
        let sealed = cipher().seal("t", b"k", b"hello").expect("seal");
        let other = Cipher::new(&DataKey([8u8; KEY_LEN]));
        assert!(other.open("t", b"k", &sealed).is_err());
    }

    #[test]
    fn blind_tokens_are_deterministic_and_keyed() {
        let c = cipher();
        assert_eq!(c.blind("name", "Amina"), c.blind("name", "Amina"));
        assert_ne!(c.blind("name", "Amina"), c.blind("name", "Amina "));
        assert_ne!(c.blind("name", "Amina"), c.blind("phone", "Amina"));
        let other = Cipher::new(&DataKey([8u8; KEY_LEN]));
        assert_ne!(c.blind("name", "Amina"), other.blind("name", "Amina"));
    }
}
