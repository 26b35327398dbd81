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
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed, Target};
use tough::sign::Sign;
use tough::{ExpirationEnforcement, FilesystemTransport, RepositoryLoader};

use crate::bundle;
use crate::chunks;
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

    /// The keys in `dir` with every `root-N.pk8` it holds (N from 1 up, until one is missing):
    /// the current keys a rotation signs the new root with.
    pub fn present(dir: &Path) -> Keys {
        let count = (1..)
            .take_while(|i| dir.join(format!("root-{i}.pk8")).exists())
            .count();
        Keys::in_folder(dir, count, 1)
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
    let root = root_of(keys, NonZeroU64::MIN, root_expires)?;
    let signed = sign_root(root, keys, None).await?;
    let metadata = repo.join("metadata");
    signed.write(&metadata, true).await.map_err(publish_error)?;
    std::fs::create_dir_all(repo.join("targets")).map_err(UpdateError::io(repo))?;
    Ok(metadata.join("1.root.json"))
}

/// Rotates keys: a root one version up naming `new`'s keys, signed by the threshold of the
/// current root's keys (`old`) and of its own, so a box that trusts the current root accepts
/// it; then targets, snapshot and timestamp re-signed with `new`'s online keys, one version
/// up. Keys `new` shares with `old` (same files copied over) stay. Returns the new root's path.
pub async fn rotate(
    repo: &Path,
    old: &Keys,
    new: &Keys,
    root_expires: Timestamp,
    expiry: Expiry,
) -> Result<PathBuf, UpdateError> {
    let metadata = repo.join("metadata");
    // Loaded before the new root is written: the roles still verify against the old one.
    let current = existing(repo).await?;
    let old_root_path = latest_root(&metadata)?;
    let old_root: Signed<Root> = read_json(&old_root_path)?;
    let version = old_root.signed.version.saturating_add(1);
    let root = root_of(new, version, root_expires)?;
    let signed = sign_root(root, new, Some((&old_root.signed, old))).await?;
    signed.write(&metadata, true).await.map_err(publish_error)?;
    let new_root_path = metadata.join(format!("{version}.root.json"));
    if let Some(current) = current {
        let next = current.timestamp().signed.version.saturating_add(1);
        let editor = RepositoryEditor::from_repo(&new_root_path, current)
            .await
            .map_err(publish_error)?;
        resign(editor, new, next, expiry)
            .await?
            .write(&metadata)
            .await
            .map_err(publish_error)?;
    }
    Ok(new_root_path)
}

/// Re-signs the timestamp alone, one version up and expiring at `expires`, with only the
/// timestamp key (the one a publishing machine keeps online): the snapshot and targets it
/// names stay as they are. Returns the timestamp's new version.
pub async fn refresh_timestamp(
    repo: &Path,
    timestamp_key: &Path,
    expires: Timestamp,
) -> Result<u64, UpdateError> {
    let current = existing(repo)
        .await?
        .ok_or_else(|| UpdateError::Publish(format!("nothing published in {}", repo.display())))?;
    let mut timestamp = current.timestamp().signed.clone();
    timestamp.version = timestamp.version.saturating_add(1);
    timestamp.expires = expires;
    let holder = KeyHolder::Root(current.root().signed.clone());
    let keys = Keys::sources([&timestamp_key.to_path_buf()]);
    let signed = SignedRole::new(timestamp, &holder, &keys, &SystemRandom::new())
        .await
        .map_err(publish_error)?;
    // Whole or not at all: a mirror serves this file while it is replaced.
    let path = repo.join("metadata").join("timestamp.json");
    clinicbox_process::write_atomic(&path, signed.buffer(), 0o644)
        .map_err(UpdateError::io(&path))?;
    Ok(signed.signed().signed.version.get())
}

/// A root naming `keys`: the root keys with their threshold, one key each for the others.
fn root_of(keys: &Keys, version: NonZeroU64, expires: Timestamp) -> Result<Root, UpdateError> {
    let mut root = Root {
        spec_version: "1.0.0".to_owned(),
        consistent_snapshot: true,
        version,
        expires,
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
    Ok(root)
}

/// Signs `root` with its own root keys and, for a rotation, with the previous root's: each
/// side must reach its threshold (tough leaves that check to the caller for a root).
async fn sign_root(
    root: Root,
    keys: &Keys,
    previous: Option<(&Root, &Keys)>,
) -> Result<SignedRole<Root>, UpdateError> {
    let rng = SystemRandom::new();
    let own = KeyHolder::Root(root.clone());
    let mut signed = SignedRole::new(root.clone(), &own, &Keys::sources(&keys.root), &rng)
        .await
        .map_err(publish_error)?;
    enough("the new root", &root, signed.signed().signatures.len())?;
    if let Some((old_root, old_keys)) = previous {
        let holder = KeyHolder::Root(old_root.clone());
        let by_old = SignedRole::new(root, &holder, &Keys::sources(&old_keys.root), &rng)
            .await
            .map_err(publish_error)?;
        enough(
            "the current root",
            old_root,
            by_old.signed().signatures.len(),
        )?;
        signed = signed
            .add_old_signatures(by_old.signed().signatures.clone())
            .map_err(publish_error)?;
    }
    Ok(signed)
}

fn enough(whose: &str, root: &Root, signatures: usize) -> Result<(), UpdateError> {
    let threshold = root
        .roles
        .get(&RoleType::Root)
        .map_or(1, |r| r.threshold.get());
    if (signatures as u64) < threshold {
        return Err(UpdateError::Publish(format!(
            "{whose} needs {threshold} of its root keys; {signatures} found"
        )));
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, UpdateError> {
    let bytes = std::fs::read(path).map_err(UpdateError::io(path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| UpdateError::Publish(format!("{}: {e}", path.display())))
}

/// Signs `bundle` into `repo` as `board`'s release `version`: a new targets, snapshot and
/// timestamp, each one version up, the bundle stored by its SHA-256, and beside it the
/// release's chunk index (`clinicbox-<board>-<version>.chunks`) with every chunk the
/// repository did not hold yet.
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
    // The chunks first: a box that reads the new metadata finds every chunk it names.
    let targets = repo.join("targets");
    let index_file = tempfile::NamedTempFile::new_in(repo).map_err(UpdateError::io(repo))?;
    let index_name = format!("clinicbox-{board}-{version}.chunks");
    let mut files = vec![(bundle, name.clone())];
    if bundle::looks_like_bundle(bundle)? {
        let index = {
            let (bundle, targets) = (bundle.to_owned(), targets.clone());
            tokio::task::spawn_blocking(move || chunks::index_bundle(&bundle, Some(&targets)))
                .await
                .map_err(publish_error)??
        };
        index.save(index_file.path())?;
        let mut index_target = Target::from_path(index_file.path())
            .await
            .map_err(publish_error)?;
        for (key, value) in crate::release::chunk_index_fields(board, version) {
            index_target.custom.insert(key.into(), Value::String(value));
        }
        editor
            .add_target(index_name.as_str(), index_target)
            .map_err(publish_error)?;
        files.push((index_file.path(), index_name));
    } else {
        tracing::warn!(
            "{} is not a bundle: signed without chunks",
            bundle.display()
        );
    }
    let signed = resign(editor, keys, next, expiry).await?;
    for (file, name) in files {
        let target_name = tough::TargetName::new(name.as_str()).map_err(publish_error)?;
        signed
            .copy_target(file, &targets, PathExists::Skip, Some(&target_name))
            .await
            .map_err(publish_error)?;
    }
    signed.write(&metadata).await.map_err(publish_error)?;
    Ok(name)
}

/// Targets, snapshot and timestamp signed at version `next` with `keys`' online keys.
async fn resign(
    mut editor: RepositoryEditor,
    keys: &Keys,
    next: NonZeroU64,
    expiry: Expiry,
) -> Result<tough::editor::signed::SignedRepository, UpdateError> {
    editor.targets_version(next).map_err(publish_error)?;
    editor
        .targets_expires(expiry.targets)
        .map_err(publish_error)?;
    editor
        .snapshot_version(next)
        .snapshot_expires(expiry.snapshot)
        .timestamp_version(next)
        .timestamp_expires(expiry.timestamp);
    editor.sign(&keys.online()).await.map_err(publish_error)
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
