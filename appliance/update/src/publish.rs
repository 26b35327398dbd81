//! Signing releases into a TUF repository: what `clinicbox-publish` runs on the release
//! machine. Never on a box: a box holds no signing key.
//!
//! The keys, as TUF splits them: root keys (offline, `root_threshold` of them sign a root; a
//! new root is signed by the old root's threshold and its own), and one key each for targets,
//! snapshot and timestamp. The timestamp key is the one a publishing machine keeps online, to
//! re-sign the short-lived timestamp; the root keys never touch it. Keys are Ed25519 in PKCS#8
//! (DER), one file each, mode 0600.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use jiff::Timestamp;
use semver::Version;
use serde_json::Value;
use tough::editor::RepositoryEditor;
use tough::editor::signed::{PathExists, SignedRole};
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Target};
use tough::sign::Sign;
use tough::{ExpirationEnforcement, FilesystemTransport, RepositoryLoader};

use crate::{Source, UpdateError};

/// The signing keys' files.
#[derive(Debug, Clone)]
pub struct Keys {
    pub root: Vec<PathBuf>,
    pub root_threshold: u64,
    pub targets: PathBuf,
    pub snapshot: PathBuf,
    pub timestamp: PathBuf,
}

impl Keys {
    /// The keys in `dir` as [`Keys::generate`] names them: `root-1.pk8`…, `targets.pk8`,
    /// `snapshot.pk8`, `timestamp.pk8`.
    pub fn in_folder(dir: &Path, root_count: usize, root_threshold: u64) -> Keys {
        Keys {
            root: (1..=root_count)
                .map(|i| dir.join(format!("root-{i}.pk8")))
                .collect(),
            root_threshold,
            targets: dir.join("targets.pk8"),
            snapshot: dir.join("snapshot.pk8"),
            timestamp: dir.join("timestamp.pk8"),
        }
    }

    /// Makes a new key for every file of [`Keys::in_folder`] that does not exist yet.
    pub fn generate(
        dir: &Path,
        root_count: usize,
        root_threshold: u64,
    ) -> Result<Keys, UpdateError> {
        std::fs::create_dir_all(dir).map_err(UpdateError::io(dir))?;
        let keys = Keys::in_folder(dir, root_count, root_threshold);
        let all = keys
            .root
            .iter()
            .chain([&keys.targets, &keys.snapshot, &keys.timestamp]);
        for path in all.filter(|p| !p.exists()) {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|e| UpdateError::Publish(format!("generating a key: {e}")))?;
            clinicbox_process::write_atomic(path, pkcs8.as_ref(), 0o600)
                .map_err(UpdateError::io(path))?;
        }
        Ok(keys)
    }

    fn sources<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<Box<dyn KeySource>> {
        paths
            .into_iter()
            .map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>)
            .collect()
    }

    fn online(&self) -> Vec<Box<dyn KeySource>> {
        Keys::sources([&self.targets, &self.snapshot, &self.timestamp])
    }
}

/// When each role's signatures run out.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    pub targets: Timestamp,
    pub snapshot: Timestamp,
    pub timestamp: Timestamp,
}

/// Starts a repository in `repo` (`metadata/1.root.json`, `targets/`), its root expiring at
/// `root_expires`. Its copy of `1.root.json` is what a release ships as its trusted root.
pub async fn create(
    repo: &Path,
    keys: &Keys,
    root_expires: Timestamp,
) -> Result<PathBuf, UpdateError> {
    let mut root = Root {
        spec_version: "1.0.0".to_owned(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires: root_expires,
        keys: Default::default(),
        roles: Default::default(),
        _extra: Default::default(),
    };
    let roles = [
        (RoleType::Root, keys.root.clone(), keys.root_threshold),
        (RoleType::Targets, vec![keys.targets.clone()], 1),
        (RoleType::Snapshot, vec![keys.snapshot.clone()], 1),
        (RoleType::Timestamp, vec![keys.timestamp.clone()], 1),
    ];
    for (role, paths, threshold) in roles {
        let mut keyids = Vec::new();
        for path in &paths {
            let bytes = std::fs::read(path).map_err(UpdateError::io(path))?;
            let key = tough::sign::parse_keypair(&bytes)
                .map_err(|e| UpdateError::Publish(format!("{}: {e}", path.display())))?
                .tuf_key();
            let id = key.key_id().map_err(publish_error)?;
            root.keys.insert(id.clone(), key);
            keyids.push(id);
        }
        let threshold = NonZeroU64::new(threshold)
            .filter(|t| t.get() <= keyids.len() as u64)
            .ok_or_else(|| {
                UpdateError::Publish(format!(
                    "{role:?}: threshold {threshold} of {}",
                    keyids.len()
                ))
            })?;
        root.roles.insert(
            role,
            RoleKeys {
                keyids,
                threshold,
                _extra: Default::default(),
            },
        );
    }
    let holder = KeyHolder::Root(root.clone());
    let signed = SignedRole::new(
        root,
        &holder,
        &Keys::sources(&keys.root),
        &SystemRandom::new(),
    )
    .await
    .map_err(publish_error)?;
    let metadata = repo.join("metadata");
    signed.write(&metadata, true).await.map_err(publish_error)?;
    std::fs::create_dir_all(repo.join("targets")).map_err(UpdateError::io(repo))?;
    Ok(metadata.join("1.root.json"))
}

/// Signs `bundle` into `repo` as `board`'s release `version`: a new targets, snapshot and
/// timestamp, each one version up, the bundle stored by its SHA-256.
pub async fn add_release(
    repo: &Path,
    keys: &Keys,
    bundle: &Path,
    board: &str,
    version: &Version,
    expiry: Expiry,
) -> Result<String, UpdateError> {
    let metadata = repo.join("metadata");
    let root = latest_root(&metadata)?;
    let (mut editor, next) = match existing(repo).await? {
        Some(current) => {
            let next = current.timestamp().signed.version.saturating_add(1);
            let editor = RepositoryEditor::from_repo(&root, current).await;
            (editor.map_err(publish_error)?, next)
        }
        None => (
            RepositoryEditor::new(&root).await.map_err(publish_error)?,
            NonZeroU64::MIN,
        ),
    };
    let name = format!("clinicbox-{board}-{version}.bundle");
    let mut target = Target::from_path(bundle).await.map_err(publish_error)?;
    target
        .custom
        .insert("board".into(), Value::String(board.into()));
    target
        .custom
        .insert("version".into(), Value::String(version.to_string()));
    editor
        .add_target(name.as_str(), target)
        .map_err(publish_error)?;
    editor.targets_version(next).map_err(publish_error)?;
    editor
        .targets_expires(expiry.targets)
        .map_err(publish_error)?;
    editor
        .snapshot_version(next)
        .snapshot_expires(expiry.snapshot)
        .timestamp_version(next)
        .timestamp_expires(expiry.timestamp);
    let signed = editor.sign(&keys.online()).await.map_err(publish_error)?;
    let target_name = tough::TargetName::new(name.as_str()).map_err(publish_error)?;
    signed
        .copy_target(
            bundle,
            &repo.join("targets"),
            PathExists::Skip,
            Some(&target_name),
        )
        .await
        .map_err(publish_error)?;
    signed.write(&metadata).await.map_err(publish_error)?;
    Ok(name)
}

/// The repository as published so far, if anything was.
async fn existing(repo: &Path) -> Result<Option<tough::Repository>, UpdateError> {
    let metadata = repo.join("metadata");
    if !metadata.join("timestamp.json").exists() {
        return Ok(None);
    }
    let first = std::fs::read(metadata.join("1.root.json")).map_err(UpdateError::io(&metadata))?;
    let source = Source::folder(repo)?;
    // Its own publisher reads it: expired roles are what it is about to re-sign.
    let loaded = RepositoryLoader::new(&first, source.metadata, source.targets)
        .transport(FilesystemTransport)
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(publish_error)?;
    Ok(Some(loaded))
}

/// `metadata/N.root.json` with the highest N.
fn latest_root(metadata: &Path) -> Result<PathBuf, UpdateError> {
    let entries = std::fs::read_dir(metadata).map_err(UpdateError::io(metadata))?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_suffix(".root.json")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
        .ok_or_else(|| UpdateError::Publish(format!("no root in {}", metadata.display())))
}

fn publish_error(e: impl std::fmt::Display) -> UpdateError {
    UpdateError::Publish(e.to_string())
}
