//! The two root slots and the boot loader that chooses between them.
//!
//! NUC (systemd-boot): each slot has its kernel and initrd under `clinicbox/<slot>/` on the
//! ESP and one entry, `loader/entries/clinicbox-<slot>[+left[-done]].conf`. Entries carry
//! `sort-key clinicbox` and their release's `version`, so the loader boots the newest slot
//! that still has tries left; a new entry starts with `+tries`, the loader counts a try at
//! each boot, and `systemd-bless-boot` drops the counter once the boot was declared healthy.
//! An entry with no tries left sorts after the others: the old slot boots by itself.
//!
//! Raspberry Pi: [`crate::tryboot`].

use std::fs;
use std::path::{Path, PathBuf};

use crate::UpdateError;
use crate::bundle::Manifest;

/// A root slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    /// 0 for A, 1 for B: where the slot is in a pair.
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot a kernel command line booted (`clinicbox.slot=a`).
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        cmdline
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix("clinicbox.slot="))
            .and_then(Slot::parse)
    }

    /// The slot this machine booted.
    pub fn running() -> Result<Slot, UpdateError> {
        let cmdline =
            fs::read_to_string("/proc/cmdline").map_err(UpdateError::io("/proc/cmdline"))?;
        Slot::from_cmdline(&cmdline).ok_or_else(|| {
            UpdateError::Install(
                "the kernel command line names no clinicbox.slot: not an A/B image".into(),
            )
        })
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter().to_ascii_uppercase())
    }
}

/// Where a slot's root partition is (a udev link under `/dev/disk`: `by-partlabel/root-<slot>`
/// on the NUC's GPT, `by-partuuid/<disk id>-0N` on a Pi's MBR), and its PARTUUID (what the
/// kernel's `root=` names) from the `by-partuuid` link to the same device.
#[derive(Debug, Clone)]
pub struct Disks {
    /// `/dev/disk`.
    pub links: PathBuf,
    /// Slot A's and slot B's root partitions, under `links`.
    pub roots: [PathBuf; 2],
}

impl Disks {
    /// The NUC's GPT: `by-partlabel/root-a` and `root-b` under `links`.
    pub fn by_label(links: PathBuf) -> Disks {
        Disks {
            links,
            roots: [
                PathBuf::from("by-partlabel/root-a"),
                PathBuf::from("by-partlabel/root-b"),
            ],
        }
    }

    pub fn device(&self, slot: Slot) -> PathBuf {
        self.links.join(&self.roots[slot.index()])
    }

    pub fn partuuid(&self, slot: Slot) -> Result<String, UpdateError> {
        let device = self.device(slot);
        let target = fs::canonicalize(&device).map_err(UpdateError::io(&device))?;
        let dir = self.links.join("by-partuuid");
        let links = fs::read_dir(&dir).map_err(UpdateError::io(&dir))?;
        links
            .filter_map(Result::ok)
            .find(|l| fs::canonicalize(l.path()).is_ok_and(|t| t == target))
            .and_then(|l| l.file_name().into_string().ok())
            .ok_or_else(|| UpdateError::Install(format!("no PARTUUID for {}", device.display())))
    }
}

/// One slot's entry as the loader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub file: PathBuf,
    pub version: Option<String>,
    /// Tries left; `None`: the entry was blessed (a good boot) or never counted.
    pub tries_left: Option<u32>,
}

impl Entry {
    /// Tried as often as it was allowed and never declared healthy.
    pub fn is_bad(&self) -> bool {
        self.tries_left == Some(0)
    }
}

/// The boot loader that chooses between the slots.
#[derive(Debug, Clone)]
pub enum Loader {
    /// NUC: systemd-boot's entries on the ESP, with boot counting.
    SystemdBoot(SystemdBoot),
    /// Raspberry Pi: each slot's boot partition, and the firmware's one-time `tryboot`.
    Tryboot(crate::tryboot::Tryboot),
}

impl Loader {
    /// The folder the slot's boot files go in.
    pub fn files_dir(&self, slot: Slot) -> PathBuf {
        match self {
            Loader::SystemdBoot(l) => l.files_dir(slot),
            Loader::Tryboot(l) => l.files_dir(slot),
        }
    }

    /// The slot's entries as the loader sees them.
    pub fn entries(&self, slot: Slot) -> Result<Vec<Entry>, UpdateError> {
        match self {
            Loader::SystemdBoot(l) => l.entries(slot),
            Loader::Tryboot(l) => l.entries(slot),
        }
    }

    /// Why a trial boot of the slot was not healthy, left by its boot check; removed once read.
    pub fn take_trial_note(&self, slot: Slot) -> Result<Option<(String, String)>, UpdateError> {
        match self {
            Loader::SystemdBoot(l) => l.take_trial_note(slot),
            Loader::Tryboot(l) => l.take_trial_note(slot),
        }
    }

    /// Makes the slot unbootable while it is rewritten.
    pub fn retire(&self, slot: Slot) -> Result<(), UpdateError> {
        match self {
            Loader::SystemdBoot(l) => l.retire(slot),
            Loader::Tryboot(l) => l.retire(slot),
        }
    }

    /// Makes the slot bootable with `manifest`'s release, its tries counted: the last step
    /// of an install.
    pub fn commit(
        &self,
        slot: Slot,
        partuuid: &str,
        manifest: &Manifest,
    ) -> Result<PathBuf, UpdateError> {
        match self {
            Loader::SystemdBoot(l) => l.commit(slot, partuuid, manifest),
            Loader::Tryboot(l) => l.commit(slot, partuuid, manifest),
        }
    }

    /// Just before restarting into `slot` for its trial: the Pi spends its one try (the
    /// firmware counts nothing); systemd-boot counts by itself.
    pub fn spend_try(&self, slot: Slot) -> Result<(), UpdateError> {
        match self {
            Loader::SystemdBoot(_) => Ok(()),
            Loader::Tryboot(l) => l.spend_try(slot),
        }
    }

    /// After a healthy boot of `slot`: the Pi's marker loses its count (systemd-bless-boot
    /// renames a NUC's entry by itself). A slot with no marker (as flashed) has nothing to do.
    pub fn bless(&self, slot: Slot) -> Result<(), UpdateError> {
        match self {
            Loader::SystemdBoot(_) => Ok(()),
            Loader::Tryboot(l) if l.entries(slot)?.is_empty() => Ok(()),
            Loader::Tryboot(l) => l.bless(slot),
        }
    }

    /// What `systemctl reboot` is given to boot the new slot: the Pi's firmware boots the
    /// tryboot partition only when asked (`0 tryboot`); systemd-boot picks the newest entry.
    pub fn reboot_argument(&self) -> Option<&'static str> {
        match self {
            Loader::SystemdBoot(_) => None,
            Loader::Tryboot(_) => Some("0 tryboot"),
        }
    }
}

/// systemd-boot's entries on the ESP.
#[derive(Debug, Clone)]
pub struct SystemdBoot {
    pub esp: PathBuf,
    /// Tries a new entry gets (`hw/*.toml` boot_tries).
    pub tries: u32,
}

impl SystemdBoot {
    fn entries_dir(&self) -> PathBuf {
        self.esp.join("loader/entries")
    }

    /// The folder of the slot's kernel and initrd.
    pub fn files_dir(&self, slot: Slot) -> PathBuf {
        self.esp.join("clinicbox").join(slot.letter().to_string())
    }

    /// The slot's entries (one, unless a cut left a second).
    pub fn entries(&self, slot: Slot) -> Result<Vec<Entry>, UpdateError> {
        let dir = self.entries_dir();
        let mut out = Vec::new();
        for item in fs::read_dir(&dir).map_err(UpdateError::io(&dir))? {
            let item = item.map_err(UpdateError::io(&dir))?;
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(tries_left) = entry_counter(&name, slot) else {
                continue;
            };
            let text = fs::read_to_string(item.path()).unwrap_or_default();
            out.push(Entry {
                file: item.path(),
                version: field(&text, "version"),
                tries_left,
            });
        }
        Ok(out)
    }

    /// The note the boot check of a trial boot leaves on the ESP when the slot is not healthy
    /// (`clinicbox/trial-<slot>.txt`: its release, then the reason), removed once read. The
    /// ESP is written by the slot's own script, so a release whose binary or data partition
    /// is broken still says why.
    pub fn take_trial_note(&self, slot: Slot) -> Result<Option<(String, String)>, UpdateError> {
        let path = self
            .esp
            .join("clinicbox")
            .join(format!("trial-{}.txt", slot.letter()));
        take_note(&path)
    }

    /// Removes the slot's entries, so that nothing boots it while it is rewritten.
    pub fn retire(&self, slot: Slot) -> Result<(), UpdateError> {
        for entry in self.entries(slot)? {
            fs::remove_file(&entry.file).map_err(UpdateError::io(&entry.file))?;
        }
        sync_dir(&self.entries_dir())
    }

    /// Writes the slot's entry for `manifest`'s release, with all its tries: from here on
    /// the loader boots it first.
    pub fn commit(
        &self,
        slot: Slot,
        partuuid: &str,
        manifest: &Manifest,
    ) -> Result<PathBuf, UpdateError> {
        let s = slot.letter();
        let mut text = format!(
            "title      ClinicBox {v} (slot {slot})\nsort-key   clinicbox\nversion    {v}\n",
            v = manifest.version
        );
        for file in &manifest.boot {
            let key = if file.name.starts_with("initrd") {
                "initrd"
            } else {
                "linux"
            };
            text.push_str(&format!("{key:<10} /clinicbox/{s}/{}\n", file.name));
        }
        text.push_str(&format!(
            "options    root=PARTUUID={partuuid} ro clinicbox.slot={s} {}\n",
            manifest.cmdline
        ));
        let path = self
            .entries_dir()
            .join(format!("clinicbox-{s}+{}.conf", self.tries));
        clinicbox_process::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(UpdateError::io(&path))?;
        Ok(path)
    }
}

/// A trial note (its release on the first line, then the reason), removed once read.
pub(crate) fn take_note(path: &Path) -> Result<Option<(String, String)>, UpdateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(UpdateError::io(path)(e)),
    };
    fs::remove_file(path).map_err(UpdateError::io(path))?;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
    let mut lines = text.lines();
    let version = lines.next().unwrap_or_default().trim().to_owned();
    let reason = lines.collect::<Vec<_>>().join(" ").trim().to_owned();
    Ok(Some((version, reason)))
}

/// `Some(tries left)` when `name` is an entry of `slot`: `clinicbox-a.conf` (`None` left:
/// blessed), `clinicbox-a+3.conf`, `clinicbox-a+0-3.conf`.
fn entry_counter(name: &str, slot: Slot) -> Option<Option<u32>> {
    let rest = name
        .strip_prefix("clinicbox-")?
        .strip_prefix(slot.letter())?
        .strip_suffix(".conf")?;
    if rest.is_empty() {
        return Some(None);
    }
    let counter = rest.strip_prefix('+')?;
    let left = counter.split('-').next()?;
    left.parse().ok().map(Some)
}

pub(crate) fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().to_owned())
    })
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(UpdateError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_carry_the_slot_and_its_tries() {
        assert_eq!(entry_counter("clinicbox-a.conf", Slot::A), Some(None));
        assert_eq!(entry_counter("clinicbox-a+3.conf", Slot::A), Some(Some(3)));
        assert_eq!(
            entry_counter("clinicbox-b+0-3.conf", Slot::B),
            Some(Some(0))
        );
        assert_eq!(entry_counter("clinicbox-b+0-3.conf", Slot::A), None);
        assert_eq!(entry_counter("clinicbox-ab.conf", Slot::A), None);
    }

    #[test]
    fn the_slot_comes_from_the_command_line() {
        let line = "initrd=\\clinicbox\\b\\initrd.img root=PARTUUID=x ro clinicbox.slot=b panic=10";
        assert_eq!(Slot::from_cmdline(line), Some(Slot::B));
        assert_eq!(Slot::from_cmdline("root=/dev/sda1"), None);
    }
}
