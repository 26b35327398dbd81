//! What a slot holds, as chunks: the seed an update is measured against.
//!
//! The installer keeps `slot-<a|b>.chunks` in its state folder for each slot it wrote (cut
//! from what it read back), and cuts the running slot itself when it has none (the slot the
//! box was flashed with). The uplink reads the running slot's file to download only the
//! chunks it lacks; the installer reads those chunks from the running slot again and checks
//! each against its hash before it writes it. The root is mounted read-only, so a slot's
//! bytes stay what its index says.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::UpdateError;
use crate::boot::Slot;
use crate::bundle::{BootFile, FORMAT, Manifest};
use crate::chunks::{self, Chunk, Index};
use crate::install::Layout;

/// The index of what `slot` holds, kept by the installer.
pub fn index_path(state_dir: &Path, slot: Slot) -> PathBuf {
    state_dir.join(format!("slot-{}.chunks", slot.letter()))
}

/// The running slot's index, when it is the index of the release that runs (anything else is
/// no seed: the whole bundle is fetched).
pub fn running(state_dir: &Path, slot: Slot, version: &str) -> Option<Index> {
    Index::load(&index_path(state_dir, slot))
        .ok()
        .filter(|i| i.manifest.version == version)
}

/// The index of whichever slot holds the release `version` (what the uplink measures a
/// download against; it does not know which slot runs, and the release that runs is in one).
pub fn holding(state_dir: &Path, version: &str) -> Option<Index> {
    [Slot::A, Slot::B]
        .into_iter()
        .find_map(|slot| running(state_dir, slot, version))
}

/// Makes sure the running slot has its index: cut from the slot (its boot files and its root
/// file system) when there is none for the release that runs. Returns whether it cut one.
pub fn ensure(
    layout: &Layout,
    state_dir: &Path,
    slot: Slot,
    board: &str,
    version: &str,
) -> Result<bool, UpdateError> {
    if running(state_dir, slot, version).is_some() {
        return Ok(false);
    }
    let index = cut_slot(layout, slot, board, version)?;
    std::fs::create_dir_all(state_dir).map_err(UpdateError::io(state_dir))?;
    index.save(&index_path(state_dir, slot))?;
    Ok(true)
}

/// Cuts what `slot` holds into chunks: the files in its boot folder (by name) and its root
/// file system, as long as the ext4 superblock says it is.
pub fn cut_slot(
    layout: &Layout,
    slot: Slot,
    board: &str,
    version: &str,
) -> Result<Index, UpdateError> {
    let dir = layout.boot.files_dir(slot);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(UpdateError::io(&dir))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut boot = Vec::new();
    let mut parts = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let file = File::open(&path).map_err(UpdateError::io(&path))?;
        let (chunks, part) = chunks::cut(BufReader::new(file), |_, _| Ok(()))?;
        boot.push(BootFile { name, part });
        parts.push(chunks);
    }
    let device = layout.disks.device(slot);
    let len = ext4_bytes(&device)?;
    let file = File::open(&device).map_err(UpdateError::io(&device))?;
    let (chunks, root) = chunks::cut(BufReader::with_capacity(1 << 20, file).take(len), |_, _| {
        Ok(())
    })?;
    parts.push(chunks);
    Ok(Index {
        manifest: Manifest {
            format: FORMAT,
            board: board.to_owned(),
            version: version.to_owned(),
            cmdline: String::new(),
            root,
            boot,
        },
        parts,
    })
}

/// The size of the ext4 file system at the start of `device` (block count × block size, from
/// its superblock), no more than the device holds.
pub fn ext4_bytes(device: &Path) -> Result<u64, UpdateError> {
    let mut file = File::open(device).map_err(UpdateError::io(device))?;
    let mut sb = [0u8; 1024];
    file.read_exact_at(&mut sb, 1024)
        .map_err(UpdateError::io(device))?;
    let le32 = |at: usize| {
        u64::from(u32::from_le_bytes([
            sb[at],
            sb[at + 1],
            sb[at + 2],
            sb[at + 3],
        ]))
    };
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Err(UpdateError::Install(format!(
            "{} holds no ext4 file system",
            device.display()
        )));
    }
    const INCOMPAT_64BIT: u64 = 0x80;
    let high = if le32(0x60) & INCOMPAT_64BIT != 0 {
        le32(0x150)
    } else {
        0
    };
    let blocks = (high << 32) | le32(0x04);
    let block_size = 1024u64 << le32(0x18).min(6);
    // A block device's metadata says 0 bytes; its end says how many it holds.
    let size = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
        .map_err(UpdateError::io(device))?;
    Ok(blocks.saturating_mul(block_size).min(size))
}

/// The chunks a slot holds, read back from the slot itself: its boot files on the ESP and its
/// root partition, at the places its index says.
pub struct SlotChunks {
    at: HashMap<[u8; 32], (usize, u64, u32)>,
    files: Vec<File>,
    slot: Slot,
}

impl SlotChunks {
    pub fn open(layout: &Layout, slot: Slot, index: &Index) -> Result<SlotChunks, UpdateError> {
        let dir = layout.boot.files_dir(slot);
        let mut files = Vec::new();
        for f in &index.manifest.boot {
            let path = dir.join(&f.name);
            files.push(File::open(&path).map_err(UpdateError::io(&path))?);
        }
        let device = layout.disks.device(slot);
        files.push(File::open(&device).map_err(UpdateError::io(&device))?);
        Ok(SlotChunks {
            at: index.locations(),
            files,
            slot,
        })
    }

    pub fn has(&self, chunk: &Chunk) -> bool {
        self.at.contains_key(&chunk.sha256)
    }

    /// The chunk's bytes from the slot, if the slot has it and it still matches its hash.
    pub fn get(&self, chunk: &Chunk) -> Option<Vec<u8>> {
        let (part, offset, len) = *self.at.get(&chunk.sha256)?;
        let mut data = vec![0u8; len as usize];
        self.files[part].read_exact_at(&mut data, offset).ok()?;
        match chunks::check(chunk, &data) {
            Ok(()) => Some(data),
            Err(_) => {
                tracing::warn!(slot = %self.slot, chunk = %chunk.hex(), "a chunk of the running slot no longer matches its index");
                None
            }
        }
    }
}
