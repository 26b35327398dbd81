use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[update]`: how `clinicbox update` (the root one-shot that installs releases) finds the
/// slots and where it keeps its state. What to fetch and where it is staged is
/// `[uplink.update]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstallConfig {
    /// The boot loader that chooses between the root slots: `"systemd-boot"` (NUC). Unset
    /// (the default): the box has no A/B slots (a demo box) and installs nothing.
    pub boot: Option<BootLoader>,
    /// Where the EFI system partition is mounted. Default `/efi`.
    pub esp: PathBuf,
    /// Boots a new slot gets to come up healthy before the loader goes back to the old one
    /// (the image sets it from `hw/<board>.toml` boot_tries). Default 3.
    pub tries: u32,
    /// udev's links to the disk's partitions (`by-partlabel/root-a`, `by-partuuid/…`).
    /// Default `/dev/disk`.
    pub disks: PathBuf,
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
}

impl Default for InstallConfig {
    fn default() -> Self {
        InstallConfig {
            boot: None,
            esp: PathBuf::from("/efi"),
            tries: 3,
            disks: PathBuf::from("/dev/disk"),
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
