//! A Raspberry Pi's boot partitions, mounted while `clinicbox update` works on them and
//! unmounted when it is done (the firmware reads them; nothing else mounts them).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clinicbox_update::InstallConfig;
use clinicbox_update::boot::Slot;

/// How a command uses the slots' boot partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Both writable: installing (the other slot) and recording a boot (markers, notes).
    Write,
    /// Only the running slot, read-only: cutting it into chunks.
    ReadRunning,
}

/// The mounted boot partitions; unmounted on drop.
pub struct BootMounts {
    mounted: Vec<PathBuf>,
}

impl BootMounts {
    /// Mounts what `access` needs, when the box has boot partitions (`[update]
    /// boot_partitions`: a Pi); nothing otherwise.
    pub fn mount(u: &InstallConfig, running: Slot, access: Access) -> anyhow::Result<BootMounts> {
        let mut mounts = BootMounts {
            mounted: Vec::new(),
        };
        let Some(parts) = &u.boot_partitions else {
            return Ok(mounts);
        };
        for slot in [Slot::A, Slot::B] {
            let options = match access {
                Access::Write => "rw,nodev,nosuid,noexec,sync",
                Access::ReadRunning if slot == running => "ro,nodev,nosuid,noexec",
                Access::ReadRunning => continue,
            };
            let device = u.disks.join(&parts[slot.index()]);
            let at = dir(u, slot);
            std::fs::create_dir_all(&at).with_context(|| at.display().to_string())?;
            let status = Command::new("mount")
                .args(["-t", "vfat", "-o", options])
                .arg(&device)
                .arg(&at)
                .status()
                .context("mount")?;
            if !status.success() {
                bail!(
                    "mounting {} on {}: {status}",
                    device.display(),
                    at.display()
                );
            }
            mounts.mounted.push(at);
        }
        Ok(mounts)
    }
}

/// Where slot `slot`'s boot partition is mounted.
pub fn dir(u: &InstallConfig, slot: Slot) -> PathBuf {
    u.boot_mounts.join(format!("boot-{}", slot.letter()))
}

impl Drop for BootMounts {
    fn drop(&mut self) {
        for at in self.mounted.drain(..).rev() {
            unmount(&at);
        }
    }
}

fn unmount(at: &Path) {
    match Command::new("umount").arg(at).status() {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(mount = %at.display(), "umount: {s}"),
        Err(e) => tracing::warn!(mount = %at.display(), error = %e, "umount"),
    }
}
