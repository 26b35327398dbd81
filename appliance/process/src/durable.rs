//! Replacing a small file so that a power cut leaves the old one or the new one, whole.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to a temporary file beside `path` (created with `mode`), syncs it, renames it
/// over `path` and syncs the folder, so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_replaced_whole_with_its_mode() {
        let dir = std::env::temp_dir().join(format!("durable-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        write_atomic(&path, b"old", 0o600).expect("first");
        write_atomic(&path, b"new", 0o600).expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.join("state.json.tmp").exists(), "no temporary left");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
