use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[update]`: how `clinicbox update` (the root one-shot that installs releases) finds the
/// slots and where it keeps its state. What to fetch and where it is staged is
/// `[uplink.update]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstallConfig {
    /// The boot loader that chooses between the root slots: `"systemd-boot"` (NUC) or
    /// `"rpi-tryboot"` (Raspberry Pi). Unset (the default): the box has no A/B slots (a demo
    /// box) and installs nothing.
    pub boot: Option<BootLoader>,
    /// Where the EFI system partition is mounted. Default `/efi`.
    pub esp: PathBuf,
    /// Boots a new slot gets to come up healthy before the loader goes back to the old one
    /// (the image sets it from `hw/<board>.toml` boot_tries). Default 3.
    pub tries: u32,
    /// udev's links to the disk's partitions (`by-partlabel/root-a`, `by-partuuid/…`).
    /// Default `/dev/disk`.
    pub disks: PathBuf,
    /// Slot A's and B's root partitions, under `disks`. Default the NUC's GPT labels,
    /// `["by-partlabel/root-a", "by-partlabel/root-b"]`; a Pi's MBR has none, so its image
    /// names them by PARTUUID (`by-partuuid/c11cb0c5-05`, `-06`).
    pub root_partitions: [PathBuf; 2],
    /// Raspberry Pi: slot A's and B's boot partitions (FAT), under `disks`. Default none.
    pub boot_partitions: Option<[PathBuf; 2]>,
    /// Raspberry Pi: where `clinicbox update` mounts the boot partitions while it works
    /// (`boot-a`, `boot-b` inside). Default `/run/clinicbox-update`.
    pub boot_mounts: PathBuf,
    /// The installer's folder on `/data`: `state.json`, `trusted/` (the repository metadata
    /// it trusted last, apart from the uplink's) and `clock-floor`. Default `/data/update`.
    pub state_dir: PathBuf,
    /// The hours (box's local time, start inclusive, end exclusive) in which `--reboot
    /// window` restarts the box into an installed release. Default `[2, 5]`.
    pub reboot_hours: [u8; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum BootLoader {
    #[serde(rename = "systemd-boot")]
    SystemdBoot,
    #[serde(rename = "rpi-tryboot")]
    RpiTryboot,
}

impl Default for InstallConfig {
    fn default() -> Self {
        InstallConfig {
            boot: None,
            esp: PathBuf::from("/efi"),
            tries: 3,
            disks: PathBuf::from("/dev/disk"),
            root_partitions: [
                PathBuf::from("by-partlabel/root-a"),
                PathBuf::from("by-partlabel/root-b"),
            ],
            boot_partitions: None,
            boot_mounts: PathBuf::from("/run/clinicbox-update"),
            state_dir: PathBuf::from("/data/update"),
            reboot_hours: [2, 5],
        }
    }
}

impl InstallConfig {
    /// Whether `hour` (0–23) is inside `reboot_hours` (a window may wrap past midnight).
    pub fn may_reboot_at(&self, hour: u8) -> bool {
        let [start, end] = self.reboot_hours;
        if start <= end {
            (start..end).contains(&hour)
        } else {
            hour >= start || hour < end
        }
    }
}
