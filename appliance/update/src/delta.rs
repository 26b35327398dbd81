//! Installing from chunks: a release's signed index, each chunk taken from the running slot
//! when it holds it ([`SlotChunks`]) and from the staged folder otherwise, every chunk checked
//! against its hash and every part against the manifest as it streams into the same
//! [`Sink`] a bundle feeds.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::bundle::{Checked, Manifest, Sink};
use crate::chunks::{self, Chunk, Index};
use crate::seed::SlotChunks;
use crate::{TargetFile, UpdateError};

/// Where chunks come from: the running slot first, then the staged folder's `targets/`.
pub struct ChunkSource<'a> {
    pub seed: Option<&'a SlotChunks>,
    pub targets: &'a Path,
}

impl ChunkSource<'_> {
    fn get(&self, chunk: &Chunk) -> Result<Vec<u8>, UpdateError> {
        if let Some(data) = self.seed.and_then(|s| s.get(chunk)) {
            return Ok(data);
        }
        let path = chunk.path_in(self.targets);
        match File::open(&path) {
            Ok(file) => chunks::unpack(chunk, BufReader::new(file)),
            // The slot's index named it, and the slot no longer holds it.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && self.seed.is_some_and(|s| s.has(chunk)) =>
            {
                Err(UpdateError::SeedChanged(format!(
                    "chunk {} no longer matches its index",
                    chunk.hex()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(UpdateError::BadChunks(format!(
                "chunk {} is neither in the running slot nor staged",
                chunk.hex()
            ))),
            Err(e) => Err(UpdateError::io(path)(e)),
        }
    }
}

/// Reads the index at `index_file` (checked against its signed length and SHA-256) and feeds
/// each part, assembled from its chunks, to `sink`.
pub fn read(
    index_file: &Path,
    signed: &TargetFile,
    source: &ChunkSource<'_>,
    sink: &mut dyn Sink,
) -> Result<Manifest, UpdateError> {
    let input = BufReader::new(File::open(index_file).map_err(UpdateError::io(index_file))?);
    let mut whole = Checked::with_hash(input, "the chunk index", signed.length, signed.sha256);
    let index = Index::read(&mut whole)?;
    whole.finish()?;
    sink.manifest(&index.manifest)?;
    let m = &index.manifest;
    for (file, chunks) in m.boot.iter().zip(&index.parts) {
        let what = format!("boot/{}", file.name);
        let mut checked = Checked::new(Assembled::new(chunks, source), &what, &file.part)?;
        sink.boot_file(file, &mut checked)?;
        checked.finish()?;
    }
    let root = index.parts.last().map_or(&[][..], Vec::as_slice);
    let mut checked = Checked::new(Assembled::new(root, source), "the root image", &m.root)?;
    sink.root(&m.root, &mut checked)?;
    checked.finish()?;
    Ok(index.manifest)
}

/// One part's bytes, chunk after chunk.
struct Assembled<'a> {
    chunks: std::slice::Iter<'a, Chunk>,
    source: &'a ChunkSource<'a>,
    buf: Vec<u8>,
    at: usize,
}

impl<'a> Assembled<'a> {
    fn new(chunks: &'a [Chunk], source: &'a ChunkSource<'a>) -> Assembled<'a> {
        Assembled {
            chunks: chunks.iter(),
            source,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Assembled<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            let Some(chunk) = self.chunks.next() else {
                return Ok(0);
            };
            self.buf = self.source.get(chunk).map_err(io::Error::other)?;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
