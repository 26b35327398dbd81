//! A repository verified against the metadata this box trusted last.
//!
//! tough walks the root chain, checks signatures and thresholds, that versions never go back
//! (against the last trusted timestamp, snapshot and targets) and that the snapshot and the
//! targets are the ones the timestamp names (no mix-and-match). Expiry is left to us, judged
//! against [`crate::ClockFloor`]: tough's own check trusts the system clock, and refuses
//! everything once it has seen a later time than the clock shows.
//!
//! tough loads into a scratch copy of the trusted metadata; only metadata that verified and
//! has not expired replaces what is kept, one file at a time, each whole. A cut between two
//! files leaves older versions, which are still true lower bounds.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use jiff::Timestamp;
use tokio::io::AsyncWriteExt;
use tough::{
    ExpirationEnforcement, FilesystemTransport, Limits, Repository, RepositoryLoader, TargetName,
};
use url::Url;

use crate::UpdateError;

/// The roles' files as the box keeps them, in the order they are replaced (the root first: the
/// others are checked against it).
const KEPT: [&str; 4] = [
    "root.json",
    "targets.json",
    "snapshot.json",
    "timestamp.json",
];

/// The largest metadata file any role may be (the targets role, which lists every release);
/// transports that buffer a file refuse anything larger before tough sees it.
pub const MAX_METADATA_BYTES: usize = 4 * 1024 * 1024;

/// Metadata this large is an attack, not a repository (a few targets a year).
const LIMITS: Limits = Limits {
    max_root_size: 256 * 1024,
    max_targets_size: MAX_METADATA_BYTES as u64,
    max_timestamp_size: 64 * 1024,
    max_snapshot_size: 256 * 1024,
    max_root_updates: 64,
};

/// Where a repository is: `metadata/` and `targets/` under one base, as `clinicbox-publish`
/// writes it, a mirror serves it, the uplink stages it and a USB stick carries it.
#[derive(Debug, Clone)]
pub struct Source {
    pub(crate) metadata: Url,
    pub(crate) targets: Url,
}

impl Source {
    /// A repository in a folder (read with tough's file transport).
    pub fn folder(dir: &Path) -> Result<Source, UpdateError> {
        let dir = std::fs::canonicalize(dir).map_err(UpdateError::io(dir))?;
        let base = Url::from_directory_path(&dir)
            .map_err(|()| UpdateError::BadLocation(dir.display().to_string()))?;
        Source::remote(&base)
    }

    /// A repository under `base` (`https://updates.example.org/clinicbox/`).
    pub fn remote(base: &Url) -> Result<Source, UpdateError> {
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let join = |sub: &str| {
            base.join(sub)
                .map_err(|_| UpdateError::BadLocation(base.to_string()))
        };
        Ok(Source {
            metadata: join("metadata/")?,
            targets: join("targets/")?,
        })
    }

    /// Where the repository keeps `file` among its targets.
    pub fn target_url(&self, file: &str) -> Result<Url, UpdateError> {
        self.targets
            .join(file)
            .map_err(|_| UpdateError::BadLocation(file.to_owned()))
    }
}

/// A repository whose metadata verified and has not expired.
#[derive(Debug)]
pub struct Verified {
    repo: Repository,
}

/// Verifies the repository in the folder `source` against what `trusted` (a folder on
/// `/data`) holds, or the root shipped with the release when it holds nothing yet, judging
/// expiry at `now`; the verified metadata becomes what `trusted` holds.
pub async fn verify(
    source: &Source,
    trusted: &Path,
    shipped_root: &[u8],
    now: Timestamp,
) -> Result<Verified, UpdateError> {
    verify_with(FilesystemTransport, source, trusted, shipped_root, now).await
}

/// [`verify`], reading the repository through `transport` (the uplink's HTTPS client).
pub async fn verify_with<T>(
    transport: T,
    source: &Source,
    trusted: &Path,
    shipped_root: &[u8],
    now: Timestamp,
) -> Result<Verified, UpdateError>
where
    T: tough::Transport + Send + Sync + 'static,
{
    tokio::fs::create_dir_all(trusted)
        .await
        .map_err(UpdateError::io(trusted))?;
    let root = match tokio::fs::read(trusted.join("root.json")).await {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => shipped_root.to_vec(),
        Err(e) => return Err(UpdateError::io(trusted.join("root.json"))(e)),
    };
    let scratch = tempfile::tempdir_in(trusted).map_err(UpdateError::io(trusted))?;
    for file in &KEPT[1..] {
        copy_if_present(&trusted.join(file), &scratch.path().join(file)).await?;
    }
    let repo = RepositoryLoader::new(&root, source.metadata.clone(), source.targets.clone())
        .transport(transport)
        .limits(LIMITS)
        .datastore(scratch.path())
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(|e| UpdateError::Untrusted(Box::new(e)))?;
    check_expiry(&repo, now)?;
    for file in KEPT {
        let bytes = tokio::fs::read(scratch.path().join(file))
            .await
            .map_err(UpdateError::io(scratch.path().join(file)))?;
        let kept = trusted.join(file);
        clinicbox_process::write_atomic(&kept, &bytes, 0o644).map_err(UpdateError::io(kept))?;
    }
    Ok(Verified { repo })
}

async fn copy_if_present(from: &Path, to: &Path) -> Result<(), UpdateError> {
    match tokio::fs::copy(from, to).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(UpdateError::io(from)(e)),
    }
}

fn check_expiry(repo: &Repository, now: Timestamp) -> Result<(), UpdateError> {
    let roles = [
        ("root", repo.root().signed.expires),
        ("timestamp", repo.timestamp().signed.expires),
        ("snapshot", repo.snapshot().signed.expires),
        ("targets", repo.targets().signed.expires),
    ];
    match roles.into_iter().find(|(_, expires)| *expires <= now) {
        Some((role, expired)) => Err(UpdateError::Expired { role, expired, now }),
        None => Ok(()),
    }
}

impl Verified {
    /// The targets the repository lists, with their custom fields.
    pub fn targets(&self) -> impl Iterator<Item = (&TargetName, &tough::schema::Target)> {
        self.repo.all_targets()
    }

    /// Target `name`'s signed length and SHA-256, and the file the repository keeps it in
    /// (`<sha256>.<name>`: consistent snapshots), for a download that resumes.
    pub fn target_file(&self, name: &str) -> Result<TargetFile, UpdateError> {
        let (_, target) = self
            .repo
            .all_targets()
            .find(|(n, _)| n.raw() == name)
            .ok_or_else(|| UpdateError::NoSuchTarget(name.to_owned()))?;
        let sha256: [u8; 32] =
            target
                .hashes
                .sha256
                .as_ref()
                .try_into()
                .map_err(|_| UpdateError::BadRelease {
                    name: name.to_owned(),
                    reason: "its SHA-256 is not 32 bytes".into(),
                })?;
        Ok(TargetFile {
            file: format!("{}.{name}", hex::encode(sha256)),
            length: target.length,
            sha256,
        })
    }

    /// Writes target `name` to `dest`, whole and verified (length and SHA-256 against the
    /// signed targets), or not at all: it is streamed to `dest.part`, which is renamed only
    /// after the last byte checked out.
    pub async fn save_target(&self, name: &str, dest: &Path) -> Result<(), UpdateError> {
        let target = TargetName::new(name).map_err(|_| UpdateError::NoSuchTarget(name.into()))?;
        let bad = |e| UpdateError::Target {
            name: name.to_owned(),
            source: Box::new(e),
        };
        let mut stream = self
            .repo
            .read_target(&target)
            .await
            .map_err(bad)?
            .ok_or_else(|| UpdateError::NoSuchTarget(name.to_owned()))?;
        let part = part_path(dest);
        let mut out = tokio::fs::File::create(&part)
            .await
            .map_err(UpdateError::io(&part))?;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    drop(out);
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(bad(e));
                }
            };
            out.write_all(&chunk)
                .await
                .map_err(UpdateError::io(&part))?;
        }
        out.sync_all().await.map_err(UpdateError::io(&part))?;
        tokio::fs::rename(&part, dest)
            .await
            .map_err(UpdateError::io(dest))
    }
}

/// A target as a download sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFile {
    /// Its file name among the repository's targets.
    pub file: String,
    pub length: u64,
    pub sha256: [u8; 32],
}

fn part_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}
