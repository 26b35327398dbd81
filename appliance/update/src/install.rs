//! Writing a verified release into the slot the box is not running from.
//!
//! The order is what makes a cut at any instant harmless:
//! 1. the slot's boot entry is removed: from here until step 4 nothing boots that slot;
//! 2. the boot files and the root image are written, each part checked against the bundle's
//!    manifest as it streams, the whole bundle against its signed length and SHA-256 (or,
//!    from chunks, the index against its signed length and SHA-256, each chunk against its
//!    hash: [`delta`]);
//! 3. everything written is read back past the page cache, compared with the manifest and cut
//!    into chunks: the slot's index, kept for the next update ([`seed`]);
//! 4. the entry is written whole (temporary file, rename): the one step that makes the new
//!    slot bootable, with its tries.
//!
//! Cut before 4, the box boots the slot it runs and the next attempt starts over.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use semver::Version;

use crate::boot::{Disks, Loader, Slot, sync_dir};
use crate::bundle::{self, BootFile, Checked, Manifest, Part, Sink};
use crate::chunks::{self, Chunk, Index};
use crate::seed::{self, SlotChunks};
use crate::state::{Record, State};
use crate::{Release, Source, TargetFile, UpdateError, Verified, delta};

const BUFFER: usize = 1 << 20;

/// What a box's slots look like to an installer.
#[derive(Debug, Clone)]
pub struct Layout {
    pub boot: Loader,
    pub disks: Disks,
}

/// A release written and bootable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub slot: Slot,
    pub version: String,
    pub entry: PathBuf,
}

/// An installation asked for: a repository in a folder (what the uplink staged, a USB stick's
/// `clinicbox-update/`) and the box as it runs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub from: &'a Path,
    pub board: &'a str,
    pub running: &'a Version,
    pub running_slot: Slot,
    /// The root metadata the running release ships, trusted until the repository rotates it.
    pub shipped_root: &'a [u8],
    /// The time to judge expiry by ([`crate::ClockFloor::now`]).
    pub now: Timestamp,
    pub layout: &'a Layout,
    /// `state.json` and the installer's own `trusted/` metadata.
    pub state_dir: &'a Path,
}

/// What [`from_folder`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The folder offers nothing newer for this board.
    Nothing,
    /// The newest release rolled back on this box before; it is not installed again.
    Refused(Version),
    /// Written before and still bootable: nothing to write.
    Ready(Installed),
    Installed(Installed),
}

/// Verifies the repository in `req.from` against the installer's own trusted metadata (never
/// the uplink's), chooses the newest release for the board that the folder holds (the uplink
/// stages one release, a remote admin's pin rather than the newest) and writes it into the
/// other slot, unless that slot holds it already.
pub async fn from_folder(req: Request<'_>) -> Result<Outcome, UpdateError> {
    let source = Source::folder(req.from)?;
    let trusted = req.state_dir.join("trusted");
    let repo = crate::verify(&source, &trusted, req.shipped_root, req.now).await?;
    let Some((release, held)) = crate::newer(&repo, req.board, req.running)
        .into_iter()
        .find_map(|r| held(&repo, req.from, &r).map(|h| (r, h)))
    else {
        return Ok(Outcome::Nothing);
    };
    let mut state = State::load(req.state_dir);
    if state.is_refused(&release.version.to_string()) {
        return Ok(Outcome::Refused(release.version));
    }
    let slot = req.running_slot.other();
    // Used up its tries there, and the boot check has not recorded it yet.
    let version = release.version.to_string();
    let came_back = req
        .layout
        .boot
        .entries(slot)?
        .iter()
        .any(|e| e.is_bad() && e.version.as_deref() == Some(&version));
    if came_back {
        return Ok(Outcome::Refused(release.version));
    }
    if let Some(ready) = already_installed(&state, &release, slot, req.layout)? {
        return Ok(Outcome::Ready(ready));
    }
    let installed = write_slot(&req, held, release, slot).await?;
    let now_ms = Timestamp::now().as_millisecond();
    state.installed = Some(Record::new(&installed.version, slot, None, now_ms));
    state.save(req.state_dir)?;
    Ok(Outcome::Installed(installed))
}

/// [`install`] on a blocking thread, with the slots' indexes kept in step: the written slot's
/// replaced, the running slot's dropped when it proved wrong.
async fn write_slot(
    req: &Request<'_>,
    held: Held,
    release: Release,
    slot: Slot,
) -> Result<Installed, UpdateError> {
    // What the slot held is going: so is its index.
    let slot_index = seed::index_path(req.state_dir, slot);
    remove_if_present(&slot_index)?;
    let seed = match &held {
        Held::Chunks { .. } => {
            seed::running(req.state_dir, req.running_slot, &req.running.to_string())
                .and_then(|i| SlotChunks::open(req.layout, req.running_slot, &i).ok())
        }
        Held::Bundle { .. } => None,
    };
    let layout = req.layout.clone();
    let written =
        tokio::task::spawn_blocking(move || install(&held, seed.as_ref(), &release, slot, &layout))
            .await
            .map_err(|e| UpdateError::Install(format!("the writer stopped: {e}")))?;
    match written {
        Ok((installed, index)) => {
            index.save(&slot_index)?;
            Ok(installed)
        }
        Err(e @ UpdateError::SeedChanged(_)) => {
            // The running slot's index is wrong: without it, the uplink fetches the whole
            // bundle next, and the next healthy boot cuts the index again.
            remove_if_present(&seed::index_path(req.state_dir, req.running_slot))?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The release in `slot` when the state says it was written there and its entry still has
/// tries left (or was blessed).
fn already_installed(
    state: &State,
    release: &Release,
    slot: Slot,
    layout: &Layout,
) -> Result<Option<Installed>, UpdateError> {
    let version = release.version.to_string();
    let recorded = state
        .installed
        .as_ref()
        .is_some_and(|r| r.version == version && r.slot == slot.letter().to_string());
    if !recorded {
        return Ok(None);
    }
    let entry = layout
        .boot
        .entries(slot)?
        .into_iter()
        .find(|e| e.version.as_deref() == Some(version.as_str()) && !e.is_bad());
    Ok(entry.map(|e| Installed {
        slot,
        version,
        entry: e.file,
    }))
}

/// What a folder holds of a release: its bundle, or its chunk index (the uplink staged only
/// the chunks the running slot lacks).
#[derive(Debug, Clone)]
pub enum Held {
    Bundle { file: PathBuf, signed: TargetFile },
    Chunks { index: PathBuf, signed: TargetFile },
}

/// The bundle when the folder has it (a USB stick), else the chunk index when it has that.
fn held(repo: &Verified, from: &Path, release: &Release) -> Option<Held> {
    let targets = from.join("targets");
    let present = |name: &str| {
        let signed = repo.target_file(name).ok()?;
        let file = targets.join(&signed.file);
        file.is_file().then_some((file, signed))
    };
    if let Some((file, signed)) = present(&release.name) {
        return Some(Held::Bundle { file, signed });
    }
    let index = crate::chunk_index(repo, release)?;
    present(&index.name).map(|(index, signed)| Held::Chunks { index, signed })
}

fn remove_if_present(path: &Path) -> Result<(), UpdateError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(UpdateError::io(path)(e)),
        _ => Ok(()),
    }
}

/// Writes `release` (what the folder holds of it, checked against its signed length and
/// SHA-256; chunks the running slot has taken from `seed`) into `slot`, which must not be the
/// running one, and makes it the slot the loader boots next. Returns the slot's chunk index,
/// cut from what was read back.
pub fn install(
    held: &Held,
    seed: Option<&SlotChunks>,
    release: &Release,
    slot: Slot,
    layout: &Layout,
) -> Result<(Installed, Index), UpdateError> {
    let mut writer = SlotWriter {
        release,
        slot,
        layout,
        device: layout.disks.device(slot),
    };
    let manifest = match held {
        Held::Bundle { file, signed } => {
            let input =
                BufReader::with_capacity(BUFFER, File::open(file).map_err(UpdateError::io(file))?);
            let mut whole =
                Checked::with_hash(input, "the release's file", signed.length, signed.sha256);
            let manifest = bundle::read(&mut whole, &mut writer)?;
            whole.finish()?;
            manifest
        }
        Held::Chunks { index, signed } => {
            let targets = index.parent().unwrap_or(Path::new("."));
            let source = delta::ChunkSource { seed, targets };
            delta::read(index, signed, &source, &mut writer)?
        }
    };
    tracing::info!(%slot, "reading the slot back");
    let index = writer.read_back(&manifest)?;
    let partuuid = layout.disks.partuuid(slot)?;
    let entry = layout.boot.commit(slot, &partuuid, &manifest)?;
    tracing::info!(%slot, version = %manifest.version, entry = %entry.display(), "boot entry written");
    let installed = Installed {
        slot,
        version: manifest.version,
        entry,
    };
    Ok((installed, index))
}

struct SlotWriter<'a> {
    release: &'a Release,
    slot: Slot,
    layout: &'a Layout,
    device: PathBuf,
}

fn install_error(reason: String) -> UpdateError {
    UpdateError::Install(reason)
}

impl Sink for SlotWriter<'_> {
    fn manifest(&mut self, m: &Manifest) -> Result<(), UpdateError> {
        if m.board != self.release.board || m.version != self.release.version.to_string() {
            return Err(install_error(format!(
                "the bundle is {} {}, but was signed as {} {}",
                m.board, m.version, self.release.board, self.release.version
            )));
        }
        let room = device_size(&self.device)?;
        if m.root.bytes > room {
            return Err(install_error(format!(
                "the root image is {} bytes; slot {} holds {room}",
                m.root.bytes, self.slot
            )));
        }
        tracing::info!(slot = %self.slot, version = %m.version, "removing the slot's boot entry, then writing it");
        self.layout.boot.retire(self.slot)?;
        let dir = self.layout.boot.files_dir(self.slot);
        fs::create_dir_all(&dir).map_err(UpdateError::io(&dir))
    }

    fn boot_file(&mut self, file: &BootFile, data: &mut dyn Read) -> Result<(), UpdateError> {
        let dir = self.layout.boot.files_dir(self.slot);
        let path = dir.join(&file.name);
        let mut out = File::create(&path).map_err(UpdateError::io(&path))?;
        copy(data, &mut out, &path)?;
        out.sync_all().map_err(UpdateError::io(&path))?;
        sync_dir(&dir)
    }

    fn root(&mut self, part: &Part, data: &mut dyn Read) -> Result<(), UpdateError> {
        let path = &self.device;
        tracing::info!(slot = %self.slot, device = %path.display(), mib = part.bytes >> 20, "writing the root image");
        let mut out = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(UpdateError::io(path))?;
        copy(data, &mut out, path)?;
        out.sync_all().map_err(UpdateError::io(path))
    }
}

impl SlotWriter<'_> {
    /// Reads what was written back from the device, not from the page cache, compares it
    /// with the manifest and cuts it into chunks: the slot's index.
    fn read_back(&self, m: &Manifest) -> Result<Index, UpdateError> {
        let dir = self.layout.boot.files_dir(self.slot);
        let mut parts = Vec::new();
        for file in &m.boot {
            parts.push(cut_written(&dir.join(&file.name), &file.part, &file.name)?);
        }
        let slot = format!("slot {}", self.slot);
        parts.push(cut_written(&self.device, &m.root, &slot)?);
        Ok(Index {
            manifest: m.clone(),
            parts,
        })
    }
}

fn cut_written(path: &Path, part: &Part, what: &str) -> Result<Vec<Chunk>, UpdateError> {
    let file = File::open(path).map_err(UpdateError::io(path))?;
    // Written pages are clean after the sync; dropping them makes the read come from the disk.
    posix_fadvise(file.as_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(|e| UpdateError::io(path)(e.into()))?;
    let reader = BufReader::with_capacity(BUFFER, file).take(part.bytes);
    let mut checked = Checked::new(reader, &format!("{what} as written"), part)?;
    let (chunks, _) = chunks::cut(&mut checked, |_, _| Ok(()))?;
    checked.finish()?;
    Ok(chunks)
}

fn copy(data: &mut dyn Read, out: &mut File, path: &Path) -> Result<(), UpdateError> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The reader failed: a part too long, a broken archive, a chunk that is missing
            // or does not match (which says so itself).
            Err(e) => {
                let message = e.to_string();
                return Err(
                    match e.into_inner().map(|inner| inner.downcast::<UpdateError>()) {
                        Some(Ok(own)) => *own,
                        _ => UpdateError::BadBundle(message),
                    },
                );
            }
        };
        out.write_all(&buf[..n]).map_err(UpdateError::io(path))?;
    }
}

/// The bytes a block device (or, in tests, a file) holds.
fn device_size(path: &Path) -> Result<u64, UpdateError> {
    let mut f = File::open(path).map_err(UpdateError::io(path))?;
    f.seek(SeekFrom::End(0)).map_err(UpdateError::io(path))
}
