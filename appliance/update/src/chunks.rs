//! Content-defined chunks: a release as the list of chunks each part is cut into, so a box
//! downloads only the chunks its running slot does not hold (RAUC's adaptive updates, casync's
//! chunk store).
//!
//! Each part (boot files, then the root image, in the manifest's order) is cut with FastCDC
//! (4 KiB minimum, 16 KiB average, 64 KiB maximum): cut points follow the content, so a file
//! that moved inside the root file system still yields the chunks it did. A repository keeps
//! every chunk once, by the SHA-256 of its bytes, deflated, at `targets/chunks/<ab>/<hash>`;
//! the release's index (`clinicbox-<board>-<version>.chunks`) is a signed target like the
//! bundle, so a chunk is trusted because the signed index names its hash, never by its path.
//!
//! The index file:
//!
//! ```text
//! CLINICBOX-CHUNKS\n            magic
//! u32 manifest length, then the bundle's Manifest as JSON
//! per part: u32 count, then count × (32-byte SHA-256, u32 length)      all big-endian
//! ```
//!
//! A box keeps the index of each slot it wrote (or cut from the slot itself, for the slot it
//! was flashed with): the seed its next update is measured against.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use sha2::{Digest, Sha256};

use crate::UpdateError;
use crate::bundle::{Manifest, Part};

pub const MIN_CHUNK: usize = 4 * 1024;
pub const AVG_CHUNK: usize = 16 * 1024;
pub const MAX_CHUNK: usize = 64 * 1024;
const MAGIC: &[u8] = b"CLINICBOX-CHUNKS\n";
const MAX_MANIFEST_BYTES: u32 = 64 * 1024;
/// An index this large describes 16 GiB, more than any slot (`hw/*.toml` root_slot_size).
pub const MAX_INDEX_BYTES: u64 = 160 << 20;
/// Where a repository (and a staged folder) keeps chunks, under `targets/`.
pub const CHUNK_DIR: &str = "chunks";

/// One chunk: the SHA-256 of its bytes and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunk {
    pub sha256: [u8; 32],
    pub len: u32,
}

impl Chunk {
    pub fn hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Its file under a repository's `targets/`: `chunks/<first two hex digits>/<hash>`.
    pub fn path_in(&self, targets: &Path) -> PathBuf {
        let hex = self.hex();
        targets.join(CHUNK_DIR).join(&hex[..2]).join(hex)
    }

    /// Its path relative to `targets/`, as a mirror's URL names it.
    pub fn url_path(&self) -> String {
        let hex = self.hex();
        format!("{CHUNK_DIR}/{}/{hex}", &hex[..2])
    }
}

/// A release (or a slot) as chunks: the manifest and, per part in the manifest's order (boot
/// files, then the root), the chunks that make it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub manifest: Manifest,
    pub parts: Vec<Vec<Chunk>>,
}

impl Index {
    /// The manifest's parts in the index's order.
    pub fn manifest_parts(m: &Manifest) -> Vec<&Part> {
        m.boot
            .iter()
            .map(|f| &f.part)
            .chain(std::iter::once(&m.root))
            .collect()
    }

    /// Every chunk once, in the order first seen.
    pub fn distinct(&self) -> Vec<Chunk> {
        let mut seen = std::collections::HashSet::new();
        self.parts
            .iter()
            .flatten()
            .filter(|c| seen.insert(c.sha256))
            .copied()
            .collect()
    }

    /// Where each chunk sits: part number and byte offset (the first place, when repeated).
    pub fn locations(&self) -> HashMap<[u8; 32], (usize, u64, u32)> {
        let mut at = HashMap::new();
        for (p, chunks) in self.parts.iter().enumerate() {
            let mut offset = 0u64;
            for c in chunks {
                at.entry(c.sha256).or_insert((p, offset, c.len));
                offset += u64::from(c.len);
            }
        }
        at
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(MAGIC)?;
        let manifest = serde_json::to_vec(&self.manifest)?;
        out.write_all(
            &u32::try_from(manifest.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        )?;
        out.write_all(&manifest)?;
        for chunks in &self.parts {
            let count = u32::try_from(chunks.len()).map_err(io::Error::other)?;
            out.write_all(&count.to_be_bytes())?;
            for c in chunks {
                out.write_all(&c.sha256)?;
                out.write_all(&c.len.to_be_bytes())?;
            }
        }
        Ok(())
    }

    /// Writes the index to `path` whole (temporary file, rename).
    pub fn save(&self, path: &Path) -> Result<(), UpdateError> {
        let mut bytes = Vec::new();
        self.write(&mut bytes).map_err(UpdateError::io(path))?;
        clinicbox_process::write_atomic(path, &bytes, 0o644).map_err(UpdateError::io(path))
    }

    /// Reads an index, refusing one whose chunks do not add up to its manifest's parts.
    pub fn read(input: impl Read) -> Result<Index, UpdateError> {
        let mut input = input.take(MAX_INDEX_BYTES);
        let mut magic = [0u8; MAGIC.len()];
        read_exact(&mut input, &mut magic)?;
        if magic != MAGIC {
            return Err(bad("not a chunk index"));
        }
        let len = read_u32(&mut input)?;
        if len > MAX_MANIFEST_BYTES {
            return Err(bad(format!("a manifest of {len} bytes")));
        }
        let mut manifest = vec![0u8; len as usize];
        read_exact(&mut input, &mut manifest)?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest).map_err(|e| bad(format!("its manifest: {e}")))?;
        if let Some(why) = manifest.problem() {
            return Err(bad(why));
        }
        let mut parts = Vec::new();
        for part in Index::manifest_parts(&manifest) {
            parts.push(read_part(&mut input, part)?);
        }
        let mut rest = [0u8; 1];
        if input.read(&mut rest).map_err(|e| bad(e.to_string()))? != 0 {
            return Err(bad("bytes after the last part"));
        }
        Ok(Index { manifest, parts })
    }

    pub fn load(path: &Path) -> Result<Index, UpdateError> {
        let file = File::open(path).map_err(UpdateError::io(path))?;
        Index::read(BufReader::new(file))
    }
}

fn read_part(input: &mut impl Read, part: &Part) -> Result<Vec<Chunk>, UpdateError> {
    let count = u64::from(read_u32(input)?);
    if count > part.bytes / MIN_CHUNK as u64 + 1 {
        return Err(bad(format!("{count} chunks for {} bytes", part.bytes)));
    }
    let mut chunks = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    for _ in 0..count {
        let mut sha256 = [0u8; 32];
        read_exact(input, &mut sha256)?;
        let len = read_u32(input)?;
        if len == 0 || len as usize > MAX_CHUNK {
            return Err(bad(format!("a chunk of {len} bytes")));
        }
        total += u64::from(len);
        chunks.push(Chunk { sha256, len });
    }
    if total != part.bytes {
        return Err(bad(format!(
            "chunks of {total} bytes for a part of {}",
            part.bytes
        )));
    }
    Ok(chunks)
}

fn read_u32(input: &mut impl Read) -> Result<u32, UpdateError> {
    let mut b = [0u8; 4];
    read_exact(input, &mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), UpdateError> {
    input
        .read_exact(buf)
        .map_err(|e| bad(format!("cut short: {e}")))
}

fn bad(reason: impl Into<String>) -> UpdateError {
    UpdateError::BadChunks(reason.into())
}

/// Cuts `input` into chunks, handing each chunk's bytes to `each`; returns the chunks and the
/// part's length and SHA-256.
pub fn cut(
    input: impl Read,
    mut each: impl FnMut(&Chunk, &[u8]) -> Result<(), UpdateError>,
) -> Result<(Vec<Chunk>, Part), UpdateError> {
    let mut whole = Sha256::new();
    let mut bytes = 0u64;
    let mut chunks = Vec::new();
    let cdc = fastcdc::v2020::StreamCDC::new(input, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK);
    for piece in cdc {
        let piece = piece.map_err(|e| bad(format!("reading: {e}")))?;
        whole.update(&piece.data);
        bytes += piece.data.len() as u64;
        let chunk = Chunk {
            sha256: Sha256::digest(&piece.data).into(),
            len: u32::try_from(piece.data.len()).map_err(|_| bad("a chunk over 4 GiB"))?,
        };
        each(&chunk, &piece.data)?;
        chunks.push(chunk);
    }
    let part = Part {
        bytes,
        sha256: hex::encode(whole.finalize()),
    };
    Ok((chunks, part))
}

/// Stores a chunk under `targets/` unless it is there already (chunks are shared between
/// releases), deflated, written whole.
pub fn store(targets: &Path, chunk: &Chunk, data: &[u8]) -> Result<(), UpdateError> {
    let path = chunk.path_in(targets);
    if path.exists() {
        return Ok(());
    }
    let mut z = ZlibEncoder::new(Vec::with_capacity(data.len() / 2), Compression::default());
    z.write_all(data).map_err(UpdateError::io(&path))?;
    let packed = z.finish().map_err(UpdateError::io(&path))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(UpdateError::io(dir))?;
    }
    clinicbox_process::write_atomic(&path, &packed, 0o644).map_err(UpdateError::io(&path))
}

/// A stored chunk's bytes, inflated and checked against its length and hash.
pub fn unpack(chunk: &Chunk, packed: impl Read) -> Result<Vec<u8>, UpdateError> {
    let mut data = Vec::with_capacity(chunk.len as usize);
    ZlibDecoder::new(packed)
        .take(MAX_CHUNK as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| bad(format!("chunk {}: {e}", chunk.hex())))?;
    check(chunk, &data)?;
    Ok(data)
}

/// Whether `data` is the chunk's bytes.
pub fn check(chunk: &Chunk, data: &[u8]) -> Result<(), UpdateError> {
    if data.len() != chunk.len as usize || Sha256::digest(data).as_slice() != chunk.sha256 {
        return Err(bad(format!(
            "chunk {} does not match its hash",
            chunk.hex()
        )));
    }
    Ok(())
}

/// A bundle's index: its parts read (and checked against its manifest) and cut into chunks,
/// each new one stored under `store_in` (a repository's `targets/`) when given.
pub fn index_bundle(bundle: &Path, store_in: Option<&Path>) -> Result<Index, UpdateError> {
    let file = File::open(bundle).map_err(UpdateError::io(bundle))?;
    let mut cutter = Cutter {
        store_in,
        parts: Vec::new(),
    };
    let manifest = crate::bundle::read(BufReader::new(file), &mut cutter)?;
    Ok(Index {
        manifest,
        parts: cutter.parts,
    })
}

struct Cutter<'a> {
    store_in: Option<&'a Path>,
    parts: Vec<Vec<Chunk>>,
}

impl Cutter<'_> {
    fn cut(&mut self, data: &mut dyn Read) -> Result<(), UpdateError> {
        let (chunks, _) = cut(data, |c, bytes| match self.store_in {
            Some(targets) => store(targets, c, bytes),
            None => Ok(()),
        })?;
        self.parts.push(chunks);
        Ok(())
    }
}

impl crate::bundle::Sink for Cutter<'_> {
    fn manifest(&mut self, _: &Manifest) -> Result<(), UpdateError> {
        Ok(())
    }

    fn boot_file(
        &mut self,
        _: &crate::bundle::BootFile,
        data: &mut dyn Read,
    ) -> Result<(), UpdateError> {
        self.cut(data)
    }

    fn root(&mut self, _: &Part, data: &mut dyn Read) -> Result<(), UpdateError> {
        self.cut(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{BootFile, FORMAT};

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn index_of(boot: &[u8], root: &[u8]) -> Index {
        let (boot_chunks, boot_part) = cut(boot, |_, _| Ok(())).expect("cut");
        let (root_chunks, root_part) = cut(root, |_, _| Ok(())).expect("cut");
        Index {
            manifest: Manifest {
                format: FORMAT,
                board: "nuc".into(),
                version: "0.2.0".into(),
                cmdline: String::new(),
                root: root_part,
                boot: vec![BootFile {
                    name: "vmlinuz".into(),
                    part: boot_part,
                }],
            },
            parts: vec![boot_chunks, root_chunks],
        }
    }

    #[test]
    fn an_index_reads_back_and_a_moved_block_keeps_its_chunks() {
        let root = bytes(1 << 20, 1);
        let index = index_of(&bytes(100_000, 2), &root);
        let mut file = Vec::new();
        index.write(&mut file).expect("write");
        assert_eq!(Index::read(file.as_slice()).expect("read"), index);

        // 64 KiB inserted near the start: what follows is cut the same way again.
        let mut moved = bytes(64 * 1024, 3);
        moved.extend_from_slice(&root);
        let (after, _) = cut(moved.as_slice(), |_, _| Ok(())).expect("cut");
        let before: std::collections::HashSet<_> = index.parts[1].iter().collect();
        let kept: u64 = after
            .iter()
            .filter(|c| before.contains(c))
            .map(|c| u64::from(c.len))
            .sum();
        assert!(kept > 900 * 1024, "{kept} of 1 MiB found again");
    }

    #[test]
    fn an_index_that_does_not_add_up_is_refused() {
        let index = index_of(&bytes(10_000, 2), &bytes(200_000, 1));
        let mut file = Vec::new();
        index.write(&mut file).expect("write");
        // The root's first chunk one byte longer than it was.
        let mut wrong = index.clone();
        wrong.parts[1][0].len += 1;
        let mut bytes_wrong = Vec::new();
        wrong.write(&mut bytes_wrong).expect("write");
        assert!(Index::read(bytes_wrong.as_slice()).is_err());
        assert!(Index::read(&file[..file.len() - 1]).is_err(), "cut short");
        let mut longer = file.clone();
        longer.push(0);
        assert!(Index::read(longer.as_slice()).is_err(), "trailing bytes");
    }

    #[test]
    fn a_stored_chunk_unpacks_only_to_its_own_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let data = bytes(20_000, 9);
        let (chunks, _) = cut(data.as_slice(), |c, d| store(dir.path(), c, d)).expect("cut");
        let first = chunks[0];
        let file = std::fs::read(first.path_in(dir.path())).expect("stored");
        assert_eq!(
            unpack(&first, file.as_slice()).expect("unpack"),
            &data[..first.len as usize]
        );
        let other = Chunk {
            sha256: [7; 32],
            ..first
        };
        assert!(unpack(&other, file.as_slice()).is_err());
    }
}
