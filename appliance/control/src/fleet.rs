//! The fleet's check-in, kept in national's dataStore: the box writes what it is and how it
//! stands to `clinicbox-fleet/<box id>` at every uplink round, and reads what remote admins want
//! of it from `clinicbox-fleet-config/<box id>`. Boxes behind CGNAT cannot be reached, so every
//! exchange is the box's own request over the uplink; national is already there and already
//! holds the admins' accounts.
//!
//! On the uplink socket (`clinicbox_control::outbox`):
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/fleet/check-in` | [`CheckIn`] as `serve` sees the box (the uplink adds the round's figures) |
//! | `POST /v1/fleet/config` [`RemoteConfig`] | [`ConfigEcho`]: what the box did with it |
//!
//! A check-in never carries patient data, user names, tokens or messages national sent:
//! figures, versions and times only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The dataStore namespace boxes check in to (one key per box id).
pub const CHECK_IN_NAMESPACE: &str = "clinicbox-fleet";
/// The dataStore namespace remote admins write a box's wishes to (one key per box id).
pub const CONFIG_NAMESPACE: &str = "clinicbox-fleet-config";
/// The largest remote configuration the uplink reads; anything bigger is refused unread.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024;
/// The longest `by` or reason kept from a remote configuration.
pub const MAX_TEXT_CHARS: usize = 200;

/// One box's check-in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckIn {
    pub box_id: String,
    pub clinic_name: String,
    /// The software version running.
    pub version: String,
    /// The root slot the box booted from (`a` or `b`), when it runs from an A/B image.
    #[serde(default)]
    pub slot: Option<String>,
    /// When the machine last booted (ms since the epoch, by the box's clock).
    #[serde(default)]
    pub booted_at_ms: Option<u64>,
    pub uptime_secs: u64,
    #[serde(default)]
    pub disk: Option<Disk>,
    /// Mains and battery, from the power daemon; `None`: power is not watched.
    #[serde(default)]
    pub power: Option<Power>,
    /// The box's clock minus national's, in seconds, at this round.
    #[serde(default)]
    pub clock_offset_secs: Option<i64>,
    /// When national last confirmed everything the box had to send (ms since the epoch).
    #[serde(default)]
    pub last_sync_ms: Option<u64>,
    /// Records national has not confirmed yet.
    pub pending: u64,
    /// Records national refused, kept on the box for an admin.
    pub parked: u64,
    /// When the certificate tablets see expires (ms since the epoch), and what is wrong with it.
    #[serde(default)]
    pub certificate_expires_ms: Option<i64>,
    #[serde(default)]
    pub certificate_problem: Option<String>,
    /// Tablets seen on the LAN, and how many of them have not synced for the box's stale days.
    pub tablets_seen: u64,
    pub tablets_stale: u64,
    /// Those stale tablets (at most [`MAX_STALE_LISTED`], longest silent first): what is only
    /// on them is the one copy nobody protects. Device and time only, no account.
    #[serde(default)]
    pub stale_tablets: Vec<StaleTablet>,
    #[serde(default)]
    pub last_backup: Option<Backup>,
    /// The last remote configuration the box read, and what it did with it.
    #[serde(default)]
    pub remote_config: Option<ConfigEcho>,
    /// The uplink's last update check as the status page says it (up to date, downloading,
    /// ready to install, or why it failed), at most [`MAX_TEXT_CHARS`]; `None`: updates are
    /// off or none ran yet.
    #[serde(default)]
    pub update: Option<String>,
    /// The last time a new release did not come up healthy and the box went back to its old
    /// slot by itself.
    #[serde(default)]
    pub last_rollback: Option<Rollback>,
    /// When the box wrote this (its clock).
    pub checked_in_at_ms: u64,
}

/// The most stale tablets one check-in lists.
pub const MAX_STALE_LISTED: usize = 20;

/// A tablet that has not synced for a while.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaleTablet {
    /// The app and device, as its requests named them.
    pub device: String,
    pub last_seen_ms: u64,
}

/// The data partition's room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// The power supply as the power daemon last reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Power {
    /// `on line`, `on battery`, …
    pub state: String,
    #[serde(default)]
    pub detail: Option<String>,
}

/// A release that came back: which, from which slot, when (the box's clock) and why, at most
/// [`MAX_TEXT_CHARS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub version: String,
    pub slot: String,
    pub at_ms: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The last backup written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    pub at_ms: u64,
    pub bytes: u64,
}

/// What a remote admin wants of one box (`clinicbox-fleet-config/<box id>`). The box applies a
/// revision once, only if every setting in it is valid, and never an older revision than the
/// one it applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteConfig {
    /// Grows with every change the admin makes.
    pub revision: u64,
    /// Who made the change (free text the admin's tools write; kept in the box's audit trail).
    #[serde(default)]
    pub by: Option<String>,
    /// The settings to change; one not named here keeps the box's own configuration.
    #[serde(default)]
    pub settings: RemoteSettings,
}

/// The settings a remote admin may change. Anything else needs a technician or an update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteSettings {
    /// The hour (0–23, the box's zone) of the nightly backup to a stick left plugged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nightly_backup_hour: Option<u8>,
    /// Days after which a tablet not seen is called stale on the status page (1–365).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_tablet_days: Option<u32>,
    /// The release the box should run (`0.2.0`): the uplink stages that one from the update
    /// mirror instead of the newest, and never one older than what runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_version: Option<String>,
    /// The maintenance window: the hours `[start, end)` (0–23, the box's zone; it may wrap
    /// past midnight) in which the box restarts into a release it installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_hours: Option<[u8; 2]>,
}

impl RemoteSettings {
    /// Why these settings cannot be applied, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if let Some(h) = self.nightly_backup_hour.filter(|h| *h > 23) {
            return Some(format!("nightlyBackupHour {h} is not an hour (0-23)"));
        }
        if let Some(d) = self.stale_tablet_days.filter(|d| !(1..=365).contains(d)) {
            return Some(format!("staleTabletDays {d} is not between 1 and 365"));
        }
        if let Some([start, end]) = self.reboot_hours {
            if start > 23 || end > 23 || start == end {
                return Some(format!(
                    "rebootHours [{start}, {end}] is not a window of hours (0-23, start and end apart)"
                ));
            }
        }
        if let Some(v) = self.desired_version.as_deref().filter(|v| !is_version(v)) {
            let shown: String = v.chars().take(40).collect();
            return Some(format!(
                "desiredVersion {shown:?} is not a version (like 0.2.0)"
            ));
        }
        None
    }

    /// The settings as `name = value` lines, for the audit trail.
    pub fn described(&self) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::new();
        if let Some(h) = self.nightly_backup_hour {
            out.insert("nightlyBackupHour", h.to_string());
        }
        if let Some(d) = self.stale_tablet_days {
            out.insert("staleTabletDays", d.to_string());
        }
        if let Some(v) = &self.desired_version {
            out.insert("desiredVersion", v.clone());
        }
        if let Some([start, end]) = self.reboot_hours {
            out.insert("rebootHours", format!("{start}:00-{end}:00"));
        }
        out
    }
}

/// `MAJOR.MINOR.PATCH`, each a number, with an optional `-pre` of letters, digits, dots and
/// hyphens (what semantic versioning allows a release to be called), at most 64 characters.
fn is_version(v: &str) -> bool {
    let (core, pre) = v.split_once('-').unwrap_or((v, ""));
    let numbers: Vec<&str> = core.split('.').collect();
    v.len() <= 64
        && numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && pre
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// What the box did with a remote configuration, echoed in its next check-in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigEcho {
    /// The revision in force on the box (0: none was ever applied).
    pub applied_revision: u64,
    #[serde(default)]
    pub applied_at_ms: Option<u64>,
    #[serde(default)]
    pub applied_by: Option<String>,
    /// The settings in force from remote configuration.
    #[serde(default)]
    pub settings: RemoteSettings,
    /// The last revision refused, and why.
    #[serde(default)]
    pub refused_revision: Option<u64>,
    #[serde(default)]
    pub refused_because: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_desired_version_must_be_a_version() {
        let with = |v: &str| RemoteSettings {
            desired_version: Some(v.into()),
            ..Default::default()
        };
        assert_eq!(with("0.2.0").problem(), None);
        assert_eq!(with("1.10.3-rc.1").problem(), None);
        for bad in ["latest", "0.2", "0.2.0.1", "v0.2.0", "0.2.0-<script>"] {
            assert!(with(bad).problem().is_some(), "{bad}");
        }
    }

    #[test]
    fn a_maintenance_window_must_be_hours_apart() {
        let with = |h: [u8; 2]| RemoteSettings {
            reboot_hours: Some(h),
            ..Default::default()
        };
        assert_eq!(with([2, 5]).problem(), None);
        assert_eq!(with([22, 4]).problem(), None, "past midnight");
        for bad in [[3, 3], [24, 2], [1, 25]] {
            assert!(with(bad).problem().is_some(), "{bad:?}");
        }
    }

    #[test]
    fn settings_out_of_range_are_named() {
        let bad = RemoteSettings {
            nightly_backup_hour: Some(24),
            ..Default::default()
        };
        assert!(
            bad.problem()
                .is_some_and(|p| p.contains("nightlyBackupHour"))
        );
        let bad = RemoteSettings {
            stale_tablet_days: Some(0),
            ..Default::default()
        };
        assert!(bad.problem().is_some_and(|p| p.contains("staleTabletDays")));
        let good = RemoteSettings {
            nightly_backup_hour: Some(3),
            stale_tablet_days: Some(14),
            desired_version: Some("0.2.0".into()),
            reboot_hours: Some([2, 5]),
        };
        assert_eq!(good.problem(), None);
    }

    #[test]
    fn unknown_settings_are_refused_when_read() {
        let text = r#"{"revision": 2, "settings": {"nightlyBackupHour": 1, "sshEnabled": true}}"#;
        assert!(serde_json::from_str::<RemoteConfig>(text).is_err());
        let text = r#"{"revision": 2, "by": "hq", "settings": {"nightlyBackupHour": 1}}"#;
        let c: RemoteConfig = serde_json::from_str(text).expect("valid");
        assert_eq!(c.settings.nightly_backup_hour, Some(1));
    }
}
