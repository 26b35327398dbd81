//! Who can open a backup: the ministry's HQ keys (age X25519 recipients named in `[backup]
//! hq_recipients`), and each recovery key of the box. A recovery key is 128 random bits printed
//! once; the age identity of a backup is derived from it (HKDF-SHA256), and only its public
//! half is kept on the box (`backup-recipients.txt`), so a backup never needs the key itself.

use std::path::Path;
use std::str::FromStr;

use age::x25519::{Identity, Recipient};
use bech32::ToBase32;

use super::layout::RECOVERY_RECIPIENTS;

const HKDF_SALT: &[u8] = b"clinicbox-backup-recovery-v1";
const HKDF_INFO: &[u8] = b"age x25519 identity";

#[derive(Debug, thiserror::Error)]
pub enum RecipientError {
    #[error("`{0}` is not an age X25519 recipient (age1…)")]
    NotARecipient(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The recovery key as typed: hex digits, any case, with or without dashes and spaces.
fn normalise(recovery_key: &str) -> String {
    recovery_key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The age identity a recovery key opens backups with.
pub fn recovery_identity(recovery_key: &str) -> Identity {
    let ikm = normalise(recovery_key);
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), ikm.as_bytes());
    let mut secret = clinicbox_store::Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit: expand cannot fail here.
    let _ = hk.expand(HKDF_INFO, secret.as_mut());
    let text = clinicbox_store::Zeroizing::new(
        bech32::encode(
            "age-secret-key-",
            secret.to_base32(),
            bech32::Variant::Bech32,
        )
        .unwrap_or_default()
        .to_uppercase(),
    );
    Identity::from_str(&text).unwrap_or_else(|_| Identity::generate())
}

/// Parses HQ recipients (`age1…`).
pub fn parse(list: &[String]) -> Result<Vec<Recipient>, RecipientError> {
    list.iter()
        .map(|r| {
            Recipient::from_str(r.trim()).map_err(|_| RecipientError::NotARecipient(r.clone()))
        })
        .collect()
}

/// The recovery keys' recipients kept in `data_dir` (none when the box has no recovery key).
pub fn recovery_recipients(data_dir: &Path) -> Result<Vec<Recipient>, RecipientError> {
    let path = data_dir.join(RECOVERY_RECIPIENTS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RecipientError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    parse(&lines)
}

/// Records the recipient of a new recovery key in `data_dir`, so later backups open with it.
pub fn remember_recovery_key(
    data_dir: &Path,
    slot: u32,
    recovery_key: &str,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let recipient = recovery_identity(recovery_key).to_public();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join(RECOVERY_RECIPIENTS))?;
    writeln!(f, "{recipient} # recovery key, slot {slot}")?;
    f.sync_all()
}

/// A demo box's stand-in for the ministry's HQ key: an age identity kept next to the demo data
/// (insecure, like the demo's key file), so a demo box's backups can be restored with
/// `--hq-identity <data dir>/hq.key`. Written once.
pub fn demo_hq_identity(data_dir: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(super::layout::DEMO_HQ_KEY);
    if path.exists() {
        return Ok(());
    }
    // Demo boxes made before the key took its documented name keep the key they had.
    let earlier = data_dir.join("demo-hq.key");
    if earlier.exists() {
        return std::fs::rename(earlier, path);
    }
    let identity = Identity::generate();
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    use age::secrecy::ExposeSecret;
    writeln!(f, "# demo only: the ministry's HQ key of a demo box")?;
    writeln!(f, "# public key: {}", identity.to_public())?;
    writeln!(f, "{}", identity.to_string().expose_secret())?;
    f.sync_all()
}

/// The age identity in `text` (an identity file's contents, or one pasted in): its first
/// `AGE-SECRET-KEY-…` line.
pub fn identity_in(text: &str) -> Option<Identity> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))?;
    Identity::from_str(line).ok()
}

/// The demo HQ key's recipient, when `data_dir` is a demo box's.
pub fn demo_hq_recipient(data_dir: &Path) -> Option<Recipient> {
    let text = std::fs::read_to_string(data_dir.join(super::layout::DEMO_HQ_KEY)).ok()?;
    identity_in(&text).map(|i| i.to_public())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_key_gives_the_same_identity_however_it_is_typed() {
        let a = recovery_identity("0A1B-2C3D-4E5F-6071-8293-A4B5-C6D7-E8F9");
        let b = recovery_identity("0a1b2c3d 4e5f6071 8293a4b5 c6d7e8f9");
        let other = recovery_identity("1111-2C3D-4E5F-6071-8293-A4B5-C6D7-E8F9");
        assert_eq!(a.to_public().to_string(), b.to_public().to_string());
        assert_ne!(a.to_public().to_string(), other.to_public().to_string());
        assert!(a.to_public().to_string().starts_with("age1"));
    }

    #[test]
    fn recovery_recipients_are_kept_beside_the_data_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(recovery_recipients(dir.path()).expect("none").is_empty());
        remember_recovery_key(dir.path(), 2, "0A1B-2C3D-4E5F-6071-8293-A4B5-C6D7-E8F9")
            .expect("remember");
        let got = recovery_recipients(dir.path()).expect("read");
        let want = recovery_identity("0a1b2c3d4e5f60718293a4b5c6d7e8f9").to_public();
        assert_eq!(
            got.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![want.to_string()]
        );
        assert!(parse(&["not-a-key".into()]).is_err());
    }
}
