//! Raspberry Pi: each slot has its own boot partition (FAT: firmware, kernel, initrd, device
//! trees, `config.txt`, `cmdline.txt`), and `autoboot.txt` on the first partition names the
//! default one and the one a `tryboot` restart boots once. The firmware counts nothing, so the
//! installer keeps the count in a marker beside the boot files, `clinicbox-slot.txt`:
//!
//! ```text
//! version 0.2.0
//! tries 1          written with the slot; 0 once the tryboot restart is asked for;
//!                  gone once the slot booted healthy (blessed)
//! ```
//!
//! A tryboot that is not healthy restarts (the boot check) or hangs (the watchdog); either way
//! the next boot is the default slot's, which then finds the new slot's marker at `tries 0`:
//! a rollback, as a NUC's entry with no tries left is.
//!
//! The partitions are mounted by `clinicbox update` (the slot being written read-write, the
//! running one read-only); here they are folders.

use std::fs;
use std::path::{Path, PathBuf};

use crate::UpdateError;
use crate::boot::{Entry, Slot, field, sync_dir};
use crate::bundle::Manifest;

const MARKER: &str = "clinicbox-slot.txt";
const CMDLINE: &str = "cmdline.txt";
const TRIAL_NOTE: &str = "trial.txt";

/// The slots' boot partitions, mounted.
#[derive(Debug, Clone)]
pub struct Tryboot {
    /// Slot A's and slot B's boot partitions.
    pub dirs: [PathBuf; 2],
}

impl Tryboot {
    pub fn files_dir(&self, slot: Slot) -> PathBuf {
        self.dirs[slot.index()].clone()
    }

    fn marker(&self, slot: Slot) -> PathBuf {
        self.files_dir(slot).join(MARKER)
    }

    /// The slot's marker as an entry; none for a slot the installer never wrote (the one the
    /// box was flashed with).
    pub fn entries(&self, slot: Slot) -> Result<Vec<Entry>, UpdateError> {
        let path = self.marker(slot);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(UpdateError::io(&path)(e)),
        };
        Ok(vec![Entry {
            file: path,
            version: field(&text, "version"),
            tries_left: field(&text, "tries").and_then(|t| t.parse().ok()),
        }])
    }

    /// `trial.txt` in the slot's boot partition (mark-good writes it there on a tryboot that
    /// is not healthy): its release, then the reason.
    pub fn take_trial_note(&self, slot: Slot) -> Result<Option<(String, String)>, UpdateError> {
        crate::boot::take_note(&self.files_dir(slot).join(TRIAL_NOTE))
    }

    /// Removes the marker and the command line: a tryboot of a half-written partition finds no
    /// `cmdline.txt` naming a root and stops; the next reset boots the default slot.
    pub fn retire(&self, slot: Slot) -> Result<(), UpdateError> {
        let dir = self.files_dir(slot);
        for name in [MARKER, CMDLINE] {
            match fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(UpdateError::io(dir.join(name))(e));
                }
                _ => {}
            }
        }
        sync_dir(&dir)
    }

    /// Writes the slot's `cmdline.txt` (its root, its name, the release's command line), then
    /// its marker with one try.
    pub fn commit(
        &self,
        slot: Slot,
        partuuid: &str,
        manifest: &Manifest,
    ) -> Result<PathBuf, UpdateError> {
        let dir = self.files_dir(slot);
        let cmdline = format!(
            "root=PARTUUID={partuuid} ro clinicbox.slot={} {}\n",
            slot.letter(),
            manifest.cmdline
        );
        let path = dir.join(CMDLINE);
        clinicbox_process::write_atomic(&path, cmdline.as_bytes(), 0o644)
            .map_err(UpdateError::io(&path))?;
        self.write_marker(slot, &manifest.version, Some(1))
    }

    /// The slot's try is spent: written just before the tryboot restart is asked for, so a
    /// tryboot that never comes back healthy reads as a rollback.
    pub fn spend_try(&self, slot: Slot) -> Result<(), UpdateError> {
        let version = self.version(slot)?;
        self.write_marker(slot, &version, Some(0)).map(drop)
    }

    /// The slot booted healthy: its marker keeps the version, without tries.
    pub fn bless(&self, slot: Slot) -> Result<(), UpdateError> {
        let version = self.version(slot)?;
        self.write_marker(slot, &version, None).map(drop)
    }

    fn version(&self, slot: Slot) -> Result<String, UpdateError> {
        self.entries(slot)?
            .into_iter()
            .find_map(|e| e.version)
            .ok_or_else(|| {
                UpdateError::Install(format!(
                    "slot {slot}'s boot partition has no release marker"
                ))
            })
    }

    fn write_marker(
        &self,
        slot: Slot,
        version: &str,
        tries: Option<u32>,
    ) -> Result<PathBuf, UpdateError> {
        let mut text = format!("version {version}\n");
        if let Some(t) = tries {
            text.push_str(&format!("tries {t}\n"));
        }
        let path = self.marker(slot);
        clinicbox_process::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(UpdateError::io(&path))?;
        sync_dir(&self.files_dir(slot))?;
        Ok(path)
    }
}

/// Whether `path` (a device tree property, `/proc/device-tree/chosen/bootloader/tryboot`) says
/// this boot is a tryboot: a big-endian 1.
pub fn is_tryboot(property: &Path) -> bool {
    fs::read(property).is_ok_and(|b| b.len() >= 4 && b[..4] == [0, 0, 0, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{FORMAT, Part};

    fn manifest(version: &str) -> Manifest {
        Manifest {
            format: FORMAT,
            board: "pi4".into(),
            version: version.into(),
            cmdline: "rootfstype=ext4 rootwait panic=10".into(),
            root: Part {
                bytes: 1,
                sha256: "0".repeat(64),
            },
            boot: Vec::new(),
        }
    }

    #[test]
    fn a_slot_written_spent_and_blessed_reads_back_as_the_loader_counts() {
        let dir = tempfile::tempdir().expect("dir");
        let t = Tryboot {
            dirs: [dir.path().join("a"), dir.path().join("b")],
        };
        fs::create_dir_all(&t.dirs[1]).expect("b");
        assert!(t.entries(Slot::B).expect("entries").is_empty());
        t.commit(Slot::B, "c11cb0c5-06", &manifest("0.2.0"))
            .expect("commit");
        let cmdline = fs::read_to_string(t.dirs[1].join(CMDLINE)).expect("cmdline");
        assert_eq!(
            cmdline,
            "root=PARTUUID=c11cb0c5-06 ro clinicbox.slot=b rootfstype=ext4 rootwait panic=10\n"
        );
        let tries = |t: &Tryboot| t.entries(Slot::B).expect("entries")[0].tries_left;
        assert_eq!(tries(&t), Some(1));
        t.spend_try(Slot::B).expect("spend");
        assert_eq!(tries(&t), Some(0));
        assert!(t.entries(Slot::B).expect("entries")[0].is_bad());
        t.bless(Slot::B).expect("bless");
        let e = &t.entries(Slot::B).expect("entries")[0];
        assert_eq!((e.version.as_deref(), e.tries_left), (Some("0.2.0"), None));
        t.retire(Slot::B).expect("retire");
        assert!(t.entries(Slot::B).expect("entries").is_empty());
        assert!(!t.dirs[1].join(CMDLINE).exists());
    }

    #[test]
    fn only_a_big_endian_one_is_a_tryboot() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("tryboot");
        assert!(!is_tryboot(&p));
        fs::write(&p, [0, 0, 0, 1]).expect("write");
        assert!(is_tryboot(&p));
        fs::write(&p, [0, 0, 0, 0]).expect("write");
        assert!(!is_tryboot(&p));
    }
}
