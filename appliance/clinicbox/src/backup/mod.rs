//! `clinicbox backup --to DIR` and `clinicbox restore FILE --data-dir NEWDIR`.
//!
//! A backup asks the running `serve` for a consistent snapshot of the store (control socket;
//! tablets keep writing meanwhile), adds what the data directory's layout says a replacement
//! needs (`layout.rs`), and writes one file: an age-encrypted archive (`archive.rs`) that the
//! ministry's HQ keys and each recovery key of the box open (`recipients.rs`). The file is
//! written under a temporary name, made durable, then renamed, so a stick pulled out mid-write
//! leaves the earlier backups and no file that looks complete; the last `[backup] keep` stay.
//!
//! A restore makes a new data directory from a backup: the file is decrypted with an HQ
//! identity or a recovery key, every file is checked against the manifest, the store must open,
//! and only then does the directory take its name.

pub mod archive;
pub mod layout;
pub mod recipients;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// `[backup]`: where backups are encrypted to and how many a folder keeps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// The ministry's HQ keys (age X25519 recipients, `age1…`) every backup opens with.
    pub hq_recipients: Vec<String>,
    /// Backups of this box kept in a folder; older ones are removed after a new one is written.
    pub keep: usize,
    /// How long `serve` may take to copy the store (seconds).
    pub snapshot_timeout_secs: u64,
    /// Where the image mounts a USB stick for backups: the admin page's "Back up now" and the
    /// nightly backup write there while a stick is mounted. Unset: neither is offered.
    pub stick_folder: Option<PathBuf>,
    /// Whether `stick_folder` counts as a stick only while something is mounted on it (a plain
    /// folder is then "no stick"). Off for a demo writing to an ordinary folder.
    pub stick_must_be_mounted: bool,
    /// The hour (0–23, box time) of the nightly backup to a stick left plugged in; unset: none.
    pub nightly_hour: Option<u8>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            hq_recipients: Vec::new(),
            keep: 5,
            snapshot_timeout_secs: 1800,
            stick_folder: None,
            stick_must_be_mounted: true,
            nightly_hour: Some(2),
        }
    }
}

/// The last backup, as `serve` keeps it for the status page (record `system/lastBackup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// The folder it went to (a stick's mount point); the file name says the rest.
    pub folder: String,
    pub bytes: u64,
    pub at_ms: u64,
}

const LAST_BACKUP: (clinicbox_store::Collection, &str) =
    (clinicbox_store::Collection::named("system"), "lastBackup");

impl LastBackup {
    /// The record for a backup written to `file` (a path; only its folder is kept, bounded).
    pub fn new(file: &str, bytes: u64, at_ms: u64) -> LastBackup {
        let folder = Path::new(file)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        LastBackup {
            folder: clinicbox_dhis2::value_type::excerpt(&folder).into_owned(),
            bytes,
            at_ms,
        }
    }

    pub fn put(
        &self,
        ctx: &mut clinicbox_store::WriteCtx<'_>,
    ) -> Result<(), clinicbox_store::StoreError> {
        ctx.put_json(LAST_BACKUP.0, LAST_BACKUP.1, self)
    }

    /// The last backup recorded in the store, if any.
    pub fn read(store: &clinicbox_store::Store) -> Option<LastBackup> {
        store
            .read()
            .ok()?
            .get(LAST_BACKUP.0, LAST_BACKUP.1)
            .ok()??
            .json()
            .ok()
    }
}

/// What one backup wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    pub manifest: archive::Manifest,
}

/// The file name of a backup of `box_id` taken at `at_ms`: sortable by time.
fn file_name(box_id: &str, at_ms: u64) -> String {
    let t = jiff::Timestamp::from_millisecond(i64::try_from(at_ms).unwrap_or(0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("clinicbox-{box_id}-{}.backup", t.strftime("%Y%m%dT%H%M%SZ"))
}

/// Writes one backup of the box whose data is in `data_dir` (served by the `serve` listening on
/// `control_socket`) into `to`.
pub fn backup(
    data_dir: &Path,
    control_socket: &Path,
    box_name: &str,
    cfg: &BackupConfig,
    to: &Path,
) -> anyhow::Result<Written> {
    let timeout = Duration::from_secs(cfg.snapshot_timeout_secs);
    backup_with(
        data_dir,
        box_name,
        cfg,
        to,
        || snapshot(control_socket, timeout),
        |written, at_ms| report(control_socket, written, at_ms),
    )
}

/// The backups `serve` takes itself: the control socket's snapshot for `clinicbox backup`, the
/// admin page's "Back up now" and the nightly backup to a stick.
#[derive(Clone)]
pub struct InServe {
    store: clinicbox_store::Store,
    data_dir: PathBuf,
    box_id: String,
    box_name: String,
    cfg: BackupConfig,
}

impl InServe {
    pub fn new(store: clinicbox_store::Store, cfg: &crate::config::Config, box_id: &str) -> Self {
        InServe {
            store,
            data_dir: cfg.data_dir.clone(),
            box_id: box_id.to_string(),
            box_name: cfg.box_info.name.clone(),
            cfg: cfg.backup.clone(),
        }
    }

    /// A consistent copy of the store in the staging file (blocking: the copy takes a while).
    pub fn snapshot(&self) -> anyhow::Result<clinicbox_control::SnapshotOutcome> {
        let staging = layout::staging_file(&self.data_dir);
        if let Some(dir) = staging.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let at_ms = self.store.server_time_ms();
        let info = self.store.snapshot_to(&staging)?;
        tracing::info!(
            bytes = info.bytes,
            last_seq = info.last_seq,
            "store snapshot taken for a backup"
        );
        Ok(clinicbox_control::SnapshotOutcome {
            path: staging.display().to_string(),
            bytes: info.bytes,
            last_seq: info.last_seq,
            box_id: self.box_id.clone(),
            at_ms,
        })
    }

    /// The stick's folder when a stick is there to write to.
    pub fn stick(&self) -> Option<PathBuf> {
        stick(&self.cfg)
    }

    /// Backs the box up to the plugged-in stick (blocking), and records it for the status page.
    pub fn to_stick(&self) -> anyhow::Result<Written> {
        let to = self.stick().context("no USB stick is plugged in")?;
        let record = |written: &Written, at_ms: u64| {
            let last = LastBackup::new(&written.path.display().to_string(), written.bytes, at_ms);
            if let Err(e) = self.store.write_blocking(move |ctx| last.put(ctx)) {
                tracing::warn!(error = %e, "the backup is written but not recorded: {e}");
            }
        };
        backup_with(
            &self.data_dir,
            &self.box_name,
            &self.cfg,
            &to,
            || self.snapshot(),
            record,
        )
    }
}

/// A stick's folder when a stick is there to write to.
fn stick(cfg: &BackupConfig) -> Option<PathBuf> {
    let folder = cfg.stick_folder.as_ref()?;
    if !folder.is_dir() {
        return None;
    }
    if cfg.stick_must_be_mounted {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(folder).ok()?.dev();
        let parent = folder
            .parent()
            .and_then(|p| std::fs::metadata(p).ok())?
            .dev();
        if dev == parent {
            return None;
        }
    }
    Some(folder.clone())
}

fn backup_with(
    data_dir: &Path,
    box_name: &str,
    cfg: &BackupConfig,
    to: &Path,
    take: impl FnOnce() -> anyhow::Result<clinicbox_control::SnapshotOutcome>,
    record: impl FnOnce(&Written, u64),
) -> anyhow::Result<Written> {
    let mut recipients = recipients::parse(&cfg.hq_recipients)?;
    recipients.extend(recipients::recovery_recipients(data_dir)?);
    recipients.extend(recipients::demo_hq_recipient(data_dir));
    if recipients.is_empty() {
        bail!(
            "nobody could open this backup: name the ministry's keys in [backup] hq_recipients, or add a recovery key (`clinicbox keys add-recovery`)"
        );
    }
    std::fs::create_dir_all(to).with_context(|| format!("cannot write to {}", to.display()))?;
    let files = layout::copied_files(data_dir)
        .with_context(|| format!("reading {}", data_dir.display()))?;
    tracing::info!("backup: copying the store while the box keeps serving");
    let snap = take()?;
    tracing::info!(
        bytes = snap.bytes,
        "backup: store copied ({} MB); encrypting it to {}",
        snap.bytes / 1_000_000,
        to.display()
    );
    let staging = PathBuf::from(&snap.path);
    let mut all = vec![(layout::STORE_FILE.to_string(), staging.clone())];
    all.extend(files);
    let base = archive::Manifest {
        format: archive::FORMAT,
        box_id: snap.box_id.clone(),
        box_name: box_name.to_string(),
        created_ms: snap.at_ms,
        last_seq: snap.last_seq,
        version: clinicbox_process::running_release(),
        files: Vec::new(),
    };
    let name = file_name(&snap.box_id, snap.at_ms);
    let written = write_encrypted(to, &name, &recipients, &all, base);
    let _ = std::fs::remove_file(&staging);
    let written = written?;
    prune(to, &snap.box_id, cfg.keep.max(1))?;
    record(&written, snap.at_ms);
    Ok(written)
}

/// Asks `serve` for a snapshot of the store.
fn snapshot(
    control_socket: &Path,
    timeout: Duration,
) -> anyhow::Result<clinicbox_control::SnapshotOutcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = clinicbox_control::ControlClient::new(control_socket, timeout);
        client.snapshot(timeout).await
    })
    .with_context(|| {
        format!(
            "asking `clinicbox serve` for a copy of the store over {} (is it running?)",
            control_socket.display()
        )
    })
}

/// Tells `serve` the backup was written, for the status page; a backup on the stick is what
/// counts, so a failure here is only said.
fn report(control_socket: &Path, written: &Written, at_ms: u64) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    let file = written.path.display().to_string();
    let told = rt.block_on(async {
        let mut client =
            clinicbox_control::ControlClient::new(control_socket, Duration::from_secs(10));
        client.backup_written(&file, written.bytes, at_ms).await
    });
    if let Err(e) = told {
        eprintln!("the backup is written, but the status page was not told: {e}");
    }
}

/// Encrypts the archive of `files` into `to/name`, through a temporary name (the benchmark
/// calls it on its own snapshot).
pub fn write_encrypted(
    to: &Path,
    name: &str,
    recipients: &[age::x25519::Recipient],
    files: &[(String, PathBuf)],
    base: archive::Manifest,
) -> anyhow::Result<Written> {
    let path = to.join(name);
    let partial = to.join(format!(".{name}.partial"));
    let result = (|| -> anyhow::Result<archive::Manifest> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)?;
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))?;
        let out = encryptor.wrap_output(std::io::BufWriter::new(file))?;
        let (out, manifest) = archive::pack(out, files, base)?;
        let file = out.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(manifest)
    })();
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            let full = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
            });
            if full {
                bail!(
                    "{} is full: free some space (or use another stick) and try again",
                    to.display()
                );
            }
            return Err(e.context(format!("writing {}", path.display())));
        }
    };
    std::fs::rename(&partial, &path)?;
    // The file again, then its folder: on a FAT stick a rename writes a fresh directory entry
    // (no size, no first cluster) that only the file's own sync fills in; a stick pulled out
    // before that holds an empty backup under the right name.
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::File::open(to)?.sync_all())
        .with_context(|| format!("syncing {}", path.display()))?;
    let bytes = std::fs::metadata(&path)?.len();
    Ok(Written {
        path,
        bytes,
        manifest,
    })
}

/// Keeps the `keep` newest backups of `box_id` in `dir`.
fn prune(dir: &Path, box_id: &str, keep: usize) -> anyhow::Result<()> {
    let prefix = format!("clinicbox-{box_id}-");
    let mut ours: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".backup"))
        .collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    for old in &ours[..excess] {
        std::fs::remove_file(dir.join(old))?;
    }
    Ok(())
}

/// How a restore opens the backup.
pub enum RestoreKey {
    /// An age identity file of the ministry's HQ.
    HqIdentity(PathBuf),
    /// The same identity as text (typed or pasted on the first-setup page).
    HqIdentityText(clinicbox_store::Zeroizing<String>),
    /// The box's printed recovery key.
    RecoveryKey(clinicbox_store::Zeroizing<String>),
}

/// Makes the data directory `new_dir` (absent or empty) from the backup `file`.
pub fn restore(file: &Path, new_dir: &Path, key: &RestoreKey) -> anyhow::Result<archive::Manifest> {
    if std::fs::read_dir(new_dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} is not empty: a restore only makes a new data directory",
            new_dir.display()
        );
    }
    let identity: Box<dyn age::Identity> = match key {
        RestoreKey::HqIdentity(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the HQ identity {}", path.display()))?;
            Box::new(
                recipients::identity_in(&text)
                    .with_context(|| format!("{} holds no age identity", path.display()))?,
            )
        }
        RestoreKey::HqIdentityText(text) => Box::new(
            recipients::identity_in(text)
                .context("that is not an age identity (AGE-SECRET-KEY-…)")?,
        ),
        RestoreKey::RecoveryKey(k) => Box::new(recipients::recovery_identity(k)),
    };
    let input = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let decryptor = age::Decryptor::new_buffered(input)
        .map_err(|e| anyhow::anyhow!("{} is not a ClinicBox backup: {e}", file.display()))?;
    let reader = decryptor
        .decrypt(std::iter::once(identity.as_ref()))
        .map_err(|e| anyhow::anyhow!("this key does not open {}: {e}", file.display()))?;
    let partial = partial_dir(new_dir);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let checked = archive::unpack(reader, &partial).and_then(|m| {
        opens(&partial, key).map_err(|e| archive::ArchiveError::Damaged(e.to_string()))?;
        Ok(m)
    });
    let manifest = match checked {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(anyhow::anyhow!("{}: {e}", file.display()));
        }
    };
    let _ = std::fs::remove_dir(new_dir);
    std::fs::rename(&partial, new_dir).with_context(|| format!("naming {}", new_dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(new_dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(manifest)
}

/// At start, before the store opens: a data directory restored on the first-setup page takes
/// the place of the box's fresh one, entry by entry (each a rename; a cut part-way resumes at
/// the next start). The fresh box's recovery keys waiting to be shown go: they open nothing now.
/// Returns whether a restore was finished.
pub fn finish_restore(data_dir: &Path) -> std::io::Result<bool> {
    let incoming = data_dir.join(layout::RESTORE_INCOMING);
    if !incoming.is_dir() {
        return Ok(false);
    }
    let mut names: Vec<_> = std::fs::read_dir(&incoming)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    // The store last, so a directory holding a store always holds its key files too.
    names.sort_by_key(|n| n.to_string_lossy() == layout::STORE_FILE);
    for name in names {
        let target = data_dir.join(&name);
        if target.is_dir() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::rename(incoming.join(&name), &target)?;
    }
    let keys = data_dir.join(layout::KEYS_DIR);
    for entry in std::fs::read_dir(&keys).into_iter().flatten().flatten() {
        if layout::rule(&entry.file_name().to_string_lossy()) == Some(layout::Rule::Never) {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::remove_dir(&incoming)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(true)
}

fn partial_dir(new_dir: &Path) -> PathBuf {
    let mut name = new_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    new_dir.with_file_name(name)
}

/// The restored store opens: with the recovery key, or with a key file the backup carried.
fn opens(dir: &Path, key: &RestoreKey) -> anyhow::Result<()> {
    let mut tries: Vec<clinicbox_store::Unlock> = Vec::new();
    if let RestoreKey::RecoveryKey(k) = key {
        tries.push(clinicbox_store::Unlock::RecoveryKey(k.clone()));
    }
    let key_files = [dir.join(layout::DEMO_KEY)]
        .into_iter()
        .chain(
            std::fs::read_dir(dir.join(layout::KEYS_DIR))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path())),
        )
        .filter(|p| p.is_file());
    tries.extend(key_files.map(|p| clinicbox_store::Unlock::key_file(&p)));
    for unlock in &tries {
        if let Ok(store) = clinicbox_store::Store::open(dir, unlock) {
            store.close()?;
            return Ok(());
        }
    }
    bail!("the store in the backup does not open with the recovery key or any key file it carries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_old_backups_beyond_keep_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        for ms in [3_000u64, 1_000, 2_000, 4_000] {
            std::fs::write(
                dir.path().join(file_name("cbBox000001", ms * 1_000_000)),
                b"x",
            )
            .expect("write");
        }
        std::fs::write(dir.path().join(file_name("cbOtherBox1", 1)), b"x").expect("write");
        prune(dir.path(), "cbBox000001", 2).expect("prune");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                file_name("cbBox000001", 3_000_000_000),
                file_name("cbBox000001", 4_000_000_000),
                file_name("cbOtherBox1", 1),
            ]
        );
    }
}
