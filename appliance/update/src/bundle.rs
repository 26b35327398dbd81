//! A release's file, the target a repository signs: one slot's root file system and boot
//! files, in a tar archive whose first member, `bundle.json`, says what follows and how large
//! and what hash each part is.
//!
//! ```text
//! bundle.json        the Manifest below
//! boot/<name>        each boot file, as the slot's boot loader reads it (NUC: vmlinuz, initrd.img)
//! root.img.gz        the root file system image, gzip
//! ```
//!
//! The bundle as a whole is checked against its signed SHA-256 while it is read; the hashes
//! inside are what an installer checks again after it wrote the slot, reading it back.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::UpdateError;

/// The bundle layout this release reads and writes.
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "bundle.json";
const ROOT: &str = "root.img.gz";
const BOOT_DIR: &str = "boot/";
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// A Pi's boot partition: firmware, kernel, initrd, device trees, config.txt.
const MAX_BOOT_FILES: usize = 64;
const MAX_BOOT_FILE_BYTES: u64 = 256 << 20;
/// Larger than any slot a board profile gives (`hw/*.toml` root_slot_size).
const MAX_ROOT_BYTES: u64 = 16 << 30;
const MAX_CMDLINE: usize = 1024;

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub board: String,
    pub version: String,
    /// What the kernel command line holds besides the slot's root and name (console, panic…).
    pub cmdline: String,
    /// The root file system image, uncompressed.
    pub root: Part,
    /// In the order they follow in the archive.
    pub boot: Vec<BootFile>,
}

/// Size and SHA-256 (hex) of one part, as written to the slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFile {
    pub name: String,
    #[serde(flatten)]
    pub part: Part,
}

impl Manifest {
    /// Why this manifest cannot be installed from, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.format != FORMAT {
            return Some(format!(
                "bundle format {} (this release reads {FORMAT})",
                self.format
            ));
        }
        if semver::Version::parse(&self.version).is_err() {
            return Some(format!("version {:?} is not a version", self.version));
        }
        if self.cmdline.len() > MAX_CMDLINE || self.cmdline.contains(['\n', '\r']) {
            return Some("its kernel command line is too long or has a line break".into());
        }
        if self.root.bytes > MAX_ROOT_BYTES {
            return Some(format!("a root of {} bytes", self.root.bytes));
        }
        if self.boot.is_empty() || self.boot.len() > MAX_BOOT_FILES {
            return Some(format!("{} boot files", self.boot.len()));
        }
        let bad_name = self.boot.iter().find(|f| !is_plain_name(&f.name));
        if let Some(f) = bad_name {
            return Some(format!("boot file name {:?}", f.name));
        }
        let parts = std::iter::once(&self.root).chain(self.boot.iter().map(|f| &f.part));
        parts
            .into_iter()
            .find(|p| p.sha256.len() != 64 || hex::decode(&p.sha256).is_err())
            .map(|p| format!("hash {:?}", p.sha256))
    }
}

/// A file name a boot partition can hold and nothing can climb out of.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn bad(reason: impl Into<String>) -> UpdateError {
    UpdateError::BadBundle(reason.into())
}

/// Where a bundle's parts go, in the order they arrive.
pub trait Sink {
    /// The manifest, checked: refuse it here (another board, an older version) before
    /// anything is written.
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), UpdateError>;
    /// One boot file's bytes, checked against the manifest as they are read.
    fn boot_file(&mut self, file: &BootFile, data: &mut dyn Read) -> Result<(), UpdateError>;
    /// The root image's bytes, uncompressed.
    fn root(&mut self, part: &Part, data: &mut dyn Read) -> Result<(), UpdateError>;
}

/// Reads a bundle from `input` into `sink`. Every part's length and hash are checked as it
/// streams; a part that does not match ends the read with an error, and the sink must treat
/// what it wrote so far as garbage.
pub fn read(input: impl Read, sink: &mut dyn Sink) -> Result<Manifest, UpdateError> {
    let mut archive = tar::Archive::new(input);
    let mut entries = archive
        .entries()
        .map_err(|e| bad(format!("not a bundle: {e}")))?;
    let mut next = |want: &str| -> Result<tar::Entry<'_, _>, UpdateError> {
        let entry = entries
            .next()
            .ok_or_else(|| bad(format!("it ends before {want}")))?
            .map_err(|e| bad(format!("reading {want}: {e}")))?;
        let path = entry.path_bytes().into_owned();
        if path != want.as_bytes() || entry.header().entry_type() != tar::EntryType::Regular {
            let shown = String::from_utf8_lossy(&path)
                .chars()
                .take(80)
                .collect::<String>();
            return Err(bad(format!("{shown:?} where {want} belongs")));
        }
        Ok(entry)
    };
    let manifest: Manifest = {
        let entry = next(MANIFEST)?;
        let mut text = Vec::new();
        entry
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| bad(format!("reading {MANIFEST}: {e}")))?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&text).map_err(|e| bad(format!("{MANIFEST}: {e}")))?
    };
    if let Some(problem) = manifest.problem() {
        return Err(bad(problem));
    }
    sink.manifest(&manifest)?;
    for file in &manifest.boot {
        let what = format!("{BOOT_DIR}{}", file.name);
        let entry = next(&what)?;
        if file.part.bytes > MAX_BOOT_FILE_BYTES {
            return Err(bad(format!("{what} is {} bytes", file.part.bytes)));
        }
        let mut checked = Checked::new(entry, &what, &file.part)?;
        sink.boot_file(file, &mut checked)?;
        checked.finish()?;
    }
    let entry = next(ROOT)?;
    let mut checked = Checked::new(GzDecoder::new(entry), "the root image", &manifest.root)?;
    sink.root(&manifest.root, &mut checked)?;
    checked.finish()?;
    Ok(manifest)
}

/// Whether the file at `path` starts as a bundle does (a tar archive whose first member is
/// `bundle.json`); whether it is a good one, only [`read`] says.
pub fn looks_like_bundle(path: &Path) -> Result<bool, UpdateError> {
    let file = File::open(path).map_err(UpdateError::io(path))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let first = archive.entries().ok().and_then(|mut e| e.next());
    Ok(matches!(first, Some(Ok(entry)) if *entry.path_bytes() == *MANIFEST.as_bytes()))
}

/// A reader that counts and hashes what passes through it, refusing to pass more than the
/// length it expects; [`Checked::finish`] reads what the consumer left and compares.
pub struct Checked<R> {
    inner: R,
    what: String,
    hasher: Sha256,
    seen: u64,
    bytes: u64,
    sha256: [u8; 32],
}

impl<R: Read> Checked<R> {
    pub fn new(inner: R, what: &str, part: &Part) -> Result<Checked<R>, UpdateError> {
        let sha256 = hex::decode(&part.sha256)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| bad(format!("{what}: hash {:?}", part.sha256)))?;
        Ok(Checked::with_hash(inner, what, part.bytes, sha256))
    }

    pub fn with_hash(inner: R, what: &str, bytes: u64, sha256: [u8; 32]) -> Checked<R> {
        Checked {
            inner,
            what: what.to_owned(),
            hasher: Sha256::new(),
            seen: 0,
            bytes,
            sha256,
        }
    }

    /// Reads what is left, then checks the length and hash of everything read.
    pub fn finish(mut self) -> Result<R, UpdateError> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| bad(format!("{}: {e}", self.what)))?;
        if self.seen != self.bytes {
            return Err(bad(format!(
                "{} is {} bytes, not the {} it was signed with",
                self.what, self.seen, self.bytes
            )));
        }
        if self.hasher.finalize().as_slice() != self.sha256 {
            return Err(bad(format!("{} does not match its hash", self.what)));
        }
        Ok(self.inner)
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is longer than {} bytes", self.what, self.bytes),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// SHA-256 and length of a file, reading it once.
pub fn hash_file(path: &Path) -> Result<Part, UpdateError> {
    let mut file = BufReader::new(File::open(path).map_err(UpdateError::io(path))?);
    hash_reader(&mut file).map_err(UpdateError::io(path))
}

fn hash_reader(input: &mut impl Read) -> io::Result<Part> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(Part {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// What a new bundle is made of.
#[derive(Debug, Clone)]
pub struct Contents {
    pub board: String,
    pub version: semver::Version,
    pub cmdline: String,
    /// The root file system image.
    pub root: PathBuf,
    /// The boot files, each kept under its own file name.
    pub boot: Vec<PathBuf>,
}

/// Writes the bundle of `contents` to `out` (on the release machine). The root image is
/// compressed into a temporary file beside `out` first: a tar member states its size before
/// its bytes.
pub fn write(contents: &Contents, out: &Path) -> Result<Manifest, UpdateError> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let packed = tempfile::NamedTempFile::new_in(dir).map_err(UpdateError::io(dir))?;
    let root = compress(&contents.root, packed.path())?;
    let mut boot = Vec::new();
    for path in &contents.boot {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_plain_name(n))
            .ok_or_else(|| bad(format!("boot file name {}", path.display())))?;
        boot.push(BootFile {
            name: name.to_owned(),
            part: hash_file(path)?,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        board: contents.board.clone(),
        version: contents.version.to_string(),
        cmdline: contents.cmdline.clone(),
        root,
        boot,
    };
    if let Some(problem) = manifest.problem() {
        return Err(bad(problem));
    }
    let file = File::create(out).map_err(UpdateError::io(out))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| bad(e.to_string()))?;
    append(&mut tar, MANIFEST, &mut &json[..], json.len() as u64).map_err(UpdateError::io(out))?;
    for (path, file) in contents.boot.iter().zip(&manifest.boot) {
        let mut input = File::open(path).map_err(UpdateError::io(path))?;
        let name = format!("{BOOT_DIR}{}", file.name);
        append(&mut tar, &name, &mut input, file.part.bytes).map_err(UpdateError::io(path))?;
    }
    let mut input = File::open(packed.path()).map_err(UpdateError::io(packed.path()))?;
    let len = input
        .metadata()
        .map_err(UpdateError::io(packed.path()))?
        .len();
    append(&mut tar, ROOT, &mut input, len).map_err(UpdateError::io(out))?;
    let mut w = tar.into_inner().map_err(UpdateError::io(out))?;
    w.flush().map_err(UpdateError::io(out))?;
    w.get_ref().sync_all().map_err(UpdateError::io(out))?;
    Ok(manifest)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &mut dyn Read,
    len: u64,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(len);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
}

/// Gzips `root` into `into`, returning the uncompressed size and hash.
fn compress(root: &Path, into: &Path) -> Result<Part, UpdateError> {
    let input = File::open(root).map_err(UpdateError::io(root))?;
    let out = File::create(into).map_err(UpdateError::io(into))?;
    let mut gz = GzEncoder::new(io::BufWriter::new(out), Compression::default());
    let mut tee = Tee {
        inner: BufReader::new(input),
        out: &mut gz,
    };
    let part = hash_reader(&mut tee).map_err(UpdateError::io(root))?;
    gz.finish()
        .and_then(|mut w| w.flush())
        .map_err(UpdateError::io(into))?;
    Ok(part)
}

/// A reader that copies what it reads into `out`.
struct Tee<'a, R, W> {
    inner: R,
    out: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what arrives, for the checks.
    #[derive(Default)]
    struct Kept {
        boot: Vec<(String, Vec<u8>)>,
        root: Vec<u8>,
    }

    impl Sink for Kept {
        fn manifest(&mut self, _: &Manifest) -> Result<(), UpdateError> {
            Ok(())
        }
        fn boot_file(&mut self, f: &BootFile, data: &mut dyn Read) -> Result<(), UpdateError> {
            let mut v = Vec::new();
            data.read_to_end(&mut v).map_err(|e| bad(e.to_string()))?;
            self.boot.push((f.name.clone(), v));
            Ok(())
        }
        fn root(&mut self, _: &Part, data: &mut dyn Read) -> Result<(), UpdateError> {
            data.read_to_end(&mut self.root)
                .map_err(|e| bad(e.to_string()))?;
            Ok(())
        }
    }

    fn contents(dir: &Path) -> Contents {
        let root: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("root.ext4"), &root).expect("root");
        std::fs::write(dir.join("vmlinuz"), b"kernel").expect("kernel");
        std::fs::write(dir.join("initrd.img"), b"initrd").expect("initrd");
        Contents {
            board: "nuc".into(),
            version: "0.2.0".parse().expect("version"),
            cmdline: "console=ttyS0 panic=10".into(),
            root: dir.join("root.ext4"),
            boot: vec![dir.join("vmlinuz"), dir.join("initrd.img")],
        }
    }

    #[test]
    fn a_bundle_reads_back_what_was_put_in() {
        let dir = tempfile::tempdir().expect("dir");
        let c = contents(dir.path());
        let written = write(&c, &dir.path().join("b.bundle")).expect("write");
        let mut kept = Kept::default();
        let file = File::open(dir.path().join("b.bundle")).expect("open");
        let read = read(file, &mut kept).expect("read");
        assert_eq!(read, written);
        assert_eq!(read.boot[0].name, "vmlinuz");
        assert_eq!(kept.boot[1], ("initrd.img".into(), b"initrd".to_vec()));
        assert_eq!(kept.root, std::fs::read(&c.root).expect("root"));
    }

    #[test]
    fn a_part_that_does_not_match_its_manifest_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let c = contents(dir.path());
        let path = dir.path().join("b.bundle");
        write(&c, &path).expect("write");
        let mut bytes = std::fs::read(&path).expect("bytes");
        // The kernel's bytes follow the manifest's 512-byte header and padded body.
        let at = bytes
            .windows(6)
            .position(|w| w == b"kernel")
            .expect("kernel in the archive");
        bytes[at] = b'K';
        let e = read(&bytes[..], &mut Kept::default()).expect_err("tampered");
        assert!(e.to_string().contains("boot/vmlinuz does not match"), "{e}");
    }

    #[test]
    fn members_out_of_order_or_with_paths_are_refused() {
        let mut tar = tar::Builder::new(Vec::new());
        append(&mut tar, "root.img.gz", &mut &b""[..], 0).expect("append");
        let bytes = tar.into_inner().expect("tar");
        let e = read(&bytes[..], &mut Kept::default()).expect_err("no manifest first");
        assert!(e.to_string().contains("where bundle.json belongs"), "{e}");
        assert!(!is_plain_name("../EFI"));
        assert!(!is_plain_name(".hidden"));
        assert!(is_plain_name("initrd.img"));
    }
}
