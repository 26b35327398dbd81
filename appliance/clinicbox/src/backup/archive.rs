//! The archive inside a backup's encryption: a tar of the store's snapshot and the copied files,
//! then `manifest.json` naming every file with its size and SHA-256. Reading it back checks
//! every name (no path outside the target), every size and digest against the manifest, and
//! that the manifest came last; age's stream authentication already refuses a tampered or cut
//! file, so a damaged backup is refused whole.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The archive's format, in the manifest.
pub const FORMAT: u32 = 1;
/// The manifest's name in the archive (always the last entry).
pub const MANIFEST: &str = "manifest.json";
/// Most entries a backup may hold, so a hostile file cannot make a restore list forever.
const MAX_ENTRIES: usize = 10_000;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The box's DHIS2 system id.
    pub box_id: String,
    pub box_name: String,
    /// When the store's snapshot was taken (ms since the epoch, the store's clock).
    pub created_ms: u64,
    /// The store's last sequence number in the snapshot.
    pub last_seq: u64,
    /// The `clinicbox` version that wrote it.
    pub version: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the data directory, `/`-separated.
    pub path: String,
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the backup is damaged or incomplete: {0}")]
    Damaged(String),
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the archive of `files` (path in the archive, path on disk) to `out`, then the
/// manifest (`base` with the files filled in); returns the writer and the manifest.
pub fn pack<W: Write>(
    out: W,
    files: &[(String, PathBuf)],
    mut base: Manifest,
) -> Result<(W, Manifest), ArchiveError> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, path) in files {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        let mut hashing = HashingReader {
            inner: (&mut f).take(len),
            hash: Sha256::new(),
        };
        tar.append_data(&mut header, name, &mut hashing)?;
        base.files.push(FileEntry {
            path: name.clone(),
            bytes: len,
            sha256: hex::encode(hashing.hash.finalize()),
        });
    }
    let manifest = serde_json::to_vec_pretty(&base).map_err(std::io::Error::other)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, MANIFEST, manifest.as_slice())?;
    Ok((tar.into_inner()?, base))
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// A path from the archive, as a relative path with no `..`, no root, nothing odd.
fn safe_path(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let ok = !name.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// Unpacks the archive from `input` into `dest` (an empty directory) and checks it against its
/// manifest; returns the manifest.
pub fn unpack<R: Read>(input: R, dest: &Path) -> Result<Manifest, ArchiveError> {
    let damaged = |m: String| ArchiveError::Damaged(m);
    let mut tar = tar::Archive::new(input);
    let mut seen: Vec<FileEntry> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    for (n, entry) in tar.entries()?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(damaged(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry?;
        if manifest.is_some() {
            return Err(damaged("an entry after the manifest".into()));
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == MANIFEST {
            let mut text = Vec::new();
            (&mut entry).take(1 << 20).read_to_end(&mut text)?;
            let m: Manifest = serde_json::from_slice(&text)
                .map_err(|e| damaged(format!("the manifest does not read: {e}")))?;
            manifest = Some(m);
            continue;
        }
        let rel = safe_path(&name).ok_or_else(|| damaged(format!("an entry named {name:?}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(damaged(format!("{name} is not a plain file")));
        }
        let path = dest.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = Hashing {
            inner: std::fs::File::create(&path)?,
            hash: Sha256::new(),
            bytes: 0,
        };
        std::io::copy(&mut entry, &mut out)?;
        out.inner.sync_all()?;
        seen.push(FileEntry {
            path: name,
            bytes: out.bytes,
            sha256: hex::encode(out.hash.finalize()),
        });
    }
    let manifest =
        manifest.ok_or_else(|| damaged("no manifest: the backup was cut short".into()))?;
    if manifest.format != FORMAT {
        return Err(damaged(format!(
            "backup format {} (this clinicbox reads {FORMAT})",
            manifest.format
        )));
    }
    if manifest.files != seen {
        return Err(damaged("the files differ from the manifest".into()));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Manifest {
        Manifest {
            format: FORMAT,
            box_id: "cbBox000001".into(),
            box_name: "kisumu-1".into(),
            created_ms: 1,
            last_seq: 7,
            version: "test".into(),
            files: Vec::new(),
        }
    }

    #[test]
    fn an_archive_reads_back_as_written_and_a_changed_byte_is_refused() {
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::write(src.path().join("a"), b"alpha").expect("write");
        std::fs::write(src.path().join("b"), vec![7u8; 3000]).expect("write");
        let files = vec![
            ("store.redb".to_string(), src.path().join("a")),
            ("tls/self-signed.pem".to_string(), src.path().join("b")),
        ];
        let (bytes, _) = pack(Vec::new(), &files, base()).expect("pack");
        let dest = tempfile::tempdir().expect("tempdir");
        let m = unpack(bytes.as_slice(), dest.path()).expect("unpack");
        assert_eq!(m.files.len(), 2);
        assert_eq!(
            std::fs::read(dest.path().join("store.redb")).expect("read"),
            b"alpha"
        );
        // A byte of a file changed (the tar checksum covers only headers): refused.
        let mut bad = bytes.clone();
        bad[512] ^= 1;
        let dest = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            unpack(bad.as_slice(), dest.path()),
            Err(ArchiveError::Damaged(_))
        ));
        // Cut before the manifest: refused.
        let dest = tempfile::tempdir().expect("tempdir");
        assert!(unpack(&bytes[..2048], dest.path()).is_err());
    }

    #[test]
    fn names_that_leave_the_target_are_refused() {
        assert!(safe_path("../etc/passwd").is_none());
        assert!(safe_path("/etc/passwd").is_none());
        assert!(safe_path("tls/../../x").is_none());
        assert_eq!(safe_path("tls/a.pem"), Some(PathBuf::from("tls/a.pem")));
    }
}
