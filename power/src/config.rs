//! `[power]` configuration: one typed struct, every field defaulted.
//!
//! The same schema is used by the `[power]` section of the hardware profiles in `hw/` (the
//! board's defaults) and by `/etc/clinicbox/clinicbox.toml` (the site's overrides); see
//! [`PowerConfig::from_layers`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the power process needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerConfig {
    /// Where the power state comes from. Default: NUT on 127.0.0.1:3493, UPS `ups`.
    pub source: SourceConfig,
    /// When the box counts as on battery / critical.
    pub policy: PolicyConfig,
    /// What happens once critical.
    pub shutdown: ShutdownConfig,
    /// The daemon's control socket. Default `/run/clinicbox/control.sock`.
    pub control_socket: PathBuf,
    /// Directory for the power process's own small state (the measured shutdown time).
    /// Default `/var/lib/clinicbox/power`.
    pub state_dir: PathBuf,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            source: SourceConfig::default(),
            policy: PolicyConfig::default(),
            shutdown: ShutdownConfig::default(),
            control_socket: PathBuf::from(clinicbox_control::DEFAULT_SOCKET_PATH),
            state_dir: PathBuf::from("/var/lib/clinicbox/power"),
        }
    }
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TOML in {path}: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid [power] settings: {0}")]
    Invalid(String),
}

impl PowerConfig {
    /// Build the config from the `[power]` table of a hardware profile (board defaults) and the
    /// `[power]` table of the site config (overrides), merged key by key; tables merge
    /// recursively, other values replace. Either may be absent.
    pub fn from_layers(
        profile: Option<&toml::Table>,
        site: Option<&toml::Table>,
    ) -> Result<Self, ConfigError> {
        let mut merged = toml::Table::new();
        for layer in [profile, site].into_iter().flatten() {
            merge(&mut merged, layer);
        }
        // A site that switches source kind must not inherit the other kind's fields.
        if let (Some(p), Some(s)) = (profile, site) {
            let kind = |t: &toml::Table| {
                t.get("source")
                    .and_then(|s| s.get("kind"))
                    .and_then(|k| k.as_str())
                    .map(str::to_owned)
            };
            if let (Some(pk), Some(sk)) = (kind(p), kind(s))
                && pk != sk
                && let Some(src) = s.get("source")
            {
                merged.insert("source".into(), src.clone());
            }
        }
        let cfg: PowerConfig = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read the `[power]` table of a TOML file (`None` if the file has none).
    pub fn power_table(path: &Path) -> Result<Option<toml::Table>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table = text.parse().map_err(|e| ConfigError::Toml {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        match table.get("power") {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t.clone())),
            Some(_) => Err(ConfigError::Invalid(format!(
                "{}: `power` must be a table",
                path.display()
            ))),
        }
    }

    /// Load from a hardware profile and a site config file, as `clinicbox power` does.
    pub fn load(profile: Option<&Path>, site: Option<&Path>) -> Result<Self, ConfigError> {
        let profile = profile.map(Self::power_table).transpose()?.flatten();
        let site = site.map(Self::power_table).transpose()?.flatten();
        Self::from_layers(profile.as_ref(), site.as_ref())
    }

    /// Reject settings that cannot work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if p.poll_interval_ms == 0 {
            return bad("policy.poll_interval_ms must be > 0".into());
        }
        if !(1..=crate::filter::MAX_WINDOW).contains(&p.filter_window) {
            return bad(format!(
                "policy.filter_window must be 1..={}",
                crate::filter::MAX_WINDOW
            ));
        }
        if !(0.0..=100.0).contains(&p.charge_floor_percent) {
            return bad("policy.charge_floor_percent must be 0..=100".into());
        }
        if p.runtime_safety_factor < 1.0 {
            return bad("policy.runtime_safety_factor must be >= 1".into());
        }
        if p.dead_time_ms < p.poll_interval_ms {
            return bad("policy.dead_time_ms must be at least one poll interval".into());
        }
        if self.shutdown.command.is_empty() {
            return bad("shutdown.command must name a program".into());
        }
        if let SourceConfig::Nut(n) = &self.source {
            if n.ups.is_empty() || n.ups.contains(char::is_whitespace) {
                return bad("source.ups must be a single NUT UPS name".into());
            }
            if n.role == NutRole::Primary && n.username.is_none() {
                return bad(
                    "source.role = \"primary\" needs source.username/password (upsmon primary)"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Which power source the box reads, with its settings. `kind` picks the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// A NUT `upsd`, local (USB/serial UPS) or another host's.
    Nut(NutConfig),
    /// Linux `/sys/class/power_supply` (NUC battery, HATs with kernel drivers).
    Sysfs(SysfsConfig),
    /// INA219 current/voltage monitor on I2C (e.g. Waveshare UPS HAT).
    Ina219(Ina219Config),
    /// MAX17043/MAX17048-family fuel gauge on I2C (e.g. Geekworm X-series HATs).
    Max1704x(Max1704xConfig),
    /// No power source: the box always counts as on line. For boxes without a UPS.
    None,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Nut(NutConfig::default())
    }
}

/// A NUT server and UPS.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NutConfig {
    /// upsd host. Default `127.0.0.1`.
    pub host: String,
    /// upsd TCP port. Default 3493.
    pub port: u16,
    /// UPS name on that upsd. Default `ups`.
    pub ups: String,
    /// upsd.users account (needs `upsmon primary` for `role = "primary"`). Default none:
    /// read-only monitoring.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// File holding the password (first line), instead of `password`.
    pub password_file: Option<PathBuf>,
    /// `primary`: this box drives the UPS (sets FSD for the other hosts on it and commands the
    /// load cycle); needs `username`/`password` of an `upsmon primary` account. `secondary`:
    /// another host does; this box only follows. Default `secondary`.
    pub role: NutRole,
    /// Timeout for one network exchange, in milliseconds. Default 3000.
    pub io_timeout_ms: u64,
}

impl std::fmt::Debug for NutConfig {
    // Hand-written so that the password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NutConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("ups", &self.ups)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("role", &self.role)
            .field("io_timeout_ms", &self.io_timeout_ms)
            .finish()
    }
}

impl Default for NutConfig {
    fn default() -> Self {
        NutConfig {
            host: "127.0.0.1".into(),
            port: 3493,
            ups: "ups".into(),
            username: None,
            password: None,
            password_file: None,
            role: NutRole::Secondary,
            io_timeout_ms: 3000,
        }
    }
}

/// upsmon's two roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NutRole {
    Primary,
    Secondary,
}

/// Linux power_supply class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SysfsConfig {
    /// Default `/sys/class/power_supply`.
    pub root: PathBuf,
    /// Battery/UPS supply name (e.g. `BAT0`). Default: the first supply of type Battery or UPS.
    pub battery: Option<String>,
    /// Mains supply name (e.g. `AC`, `ADP1`). Default: the first supply of type Mains.
    pub mains: Option<String>,
}

impl Default for SysfsConfig {
    fn default() -> Self {
        SysfsConfig {
            root: PathBuf::from("/sys/class/power_supply"),
            battery: None,
            mains: None,
        }
    }
}

/// INA219-based UPS HAT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ina219Config {
    /// I2C bus device. Default `/dev/i2c-1`.
    pub bus: PathBuf,
    /// 7-bit address. Default 0x42 (Waveshare UPS HAT).
    pub address: u8,
    /// Shunt resistor in milliohms. Default 100.
    pub shunt_milliohm: u32,
    /// Li-ion cells in series. Default 2.
    pub cells: u8,
    /// Battery current below this (mA, negative = discharging) means on battery. Default -50.
    pub on_battery_below_ma: f32,
    /// Optional file whose content is `1` when mains is present (a power_supply `online` file
    /// or an exported GPIO `value`); overrides the current-based guess.
    pub online_path: Option<PathBuf>,
    /// Open-circuit voltage per cell → charge, as `[millivolts, percent]` pairs, ascending.
    pub cell_curve: Vec<[f32; 2]>,
}

impl Default for Ina219Config {
    fn default() -> Self {
        Ina219Config {
            bus: PathBuf::from("/dev/i2c-1"),
            address: 0x42,
            shunt_milliohm: 100,
            cells: 2,
            on_battery_below_ma: -50.0,
            online_path: None,
            cell_curve: default_cell_curve(),
        }
    }
}

/// A typical Li-ion (18650) discharge curve per cell under light load.
pub fn default_cell_curve() -> Vec<[f32; 2]> {
    vec![
        [3000.0, 0.0],
        [3300.0, 5.0],
        [3450.0, 10.0],
        [3600.0, 25.0],
        [3700.0, 45.0],
        [3800.0, 60.0],
        [3900.0, 72.0],
        [4000.0, 83.0],
        [4100.0, 93.0],
        [4200.0, 100.0],
    ]
}

/// MAX1704x fuel gauge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Max1704xConfig {
    /// I2C bus device. Default `/dev/i2c-1`.
    pub bus: PathBuf,
    /// Which chip. Default `max17048`.
    pub chip: MaxChip,
    /// As for INA219: a file saying `1` while mains is present. Without it, MAX17048/49 infer
    /// discharge from the charge rate; MAX17043/44 cannot tell and report line state unknown.
    pub online_path: Option<PathBuf>,
    /// Charge rate (%/hour) below which a MAX17048/49 counts as discharging. Default -1.0.
    pub on_battery_below_rate: f32,
}

impl Default for Max1704xConfig {
    fn default() -> Self {
        Max1704xConfig {
            bus: PathBuf::from("/dev/i2c-1"),
            chip: MaxChip::Max17048,
            online_path: None,
            on_battery_below_rate: -1.0,
        }
    }
}

/// Supported MAX1704x chips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxChip {
    /// Also MAX17040/MAX17041 (same registers).
    Max17043,
    Max17048,
    Max17049,
}

/// Decision thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// How often the source is read, in milliseconds. Default 2000.
    pub poll_interval_ms: u64,
    /// On battery must hold this long before the box acts on it (apcupsd ONBATTERYDELAY), so
    /// flapping OL/OB is ignored. Default 5000.
    pub on_battery_delay_ms: u64,
    /// Mains must hold this long before the box counts as back on line (and a shutdown that has
    /// not passed its point of no return is cancelled). Default 10000.
    pub mains_return_delay_ms: u64,
    /// Critical at or below this filtered charge while on battery. Default 20.
    pub charge_floor_percent: f32,
    /// Runtime floor is never below this many seconds (apcupsd MINUTES = 3). Default 180.
    pub runtime_floor_min_s: u64,
    /// Runtime floor = factor × measured shutdown time, if larger. Default 3.
    pub runtime_safety_factor: f32,
    /// Shutdown time assumed until one has been measured, in seconds. Default 60.
    pub expected_shutdown_s: u64,
    /// Critical if nothing usable was read for this long while last seen on battery (NUT
    /// DEADTIME). Default 15000.
    pub dead_time_ms: u64,
    /// Shut down after this long on battery whatever the charge (apcupsd TIMEOUT); 0 = off.
    /// Default 0.
    pub max_on_battery_s: u64,
    /// Readings in the median filter for charge and runtime (1..=16). Default 5.
    pub filter_window: usize,
    /// How often the daemon is sent the power state when nothing changes, in seconds.
    /// Default 30.
    pub report_interval_s: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            poll_interval_ms: 2000,
            on_battery_delay_ms: 5000,
            mains_return_delay_ms: 10_000,
            charge_floor_percent: 20.0,
            runtime_floor_min_s: 180,
            runtime_safety_factor: 3.0,
            expected_shutdown_s: 60,
            dead_time_ms: 15_000,
            max_on_battery_s: 0,
            filter_window: 5,
            report_interval_s: 30,
        }
    }
}

impl PolicyConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// The shutdown sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Program and arguments that power the box off (no shell), like upsmon's SHUTDOWNCMD.
    /// Default `["systemctl", "poweroff"]`.
    pub command: Vec<String>,
    /// Deadline for `command` to return, in milliseconds. Default 30000.
    pub command_timeout_ms: u64,
    /// Deadline for the daemon to quiesce, in milliseconds. Default 20000.
    pub quiesce_deadline_ms: u64,
    /// Deadline for sync(2), in milliseconds. Default 15000.
    pub sync_deadline_ms: u64,
    /// As NUT primary: how long to wait for the other hosts on the UPS to log out after FSD,
    /// in milliseconds (NUT HOSTSYNC). Default 15000.
    pub host_sync_ms: u64,
    /// NUT instant commands tried in order to make the UPS cut the load and restore it when
    /// mains returns, so the box always boots again. Default `["shutdown.return"]`.
    /// Empty = never cycle the load.
    pub load_cycle_instcmds: Vec<String>,
    /// Program (and arguments) that does the same on boards without NUT (a HAT's power-cut
    /// line). Default none.
    pub load_cycle_command: Vec<String>,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            command: vec!["systemctl".into(), "poweroff".into()],
            command_timeout_ms: 30_000,
            quiesce_deadline_ms: 20_000,
            sync_deadline_ms: 15_000,
            host_sync_ms: 15_000,
            load_cycle_instcmds: vec!["shutdown.return".into()],
            load_cycle_command: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().expect("toml")
    }

    #[test]
    fn empty_section_gives_defaults() {
        let cfg = PowerConfig::from_layers(None, None).expect("defaults");
        assert_eq!(cfg, PowerConfig::default());
        assert!(matches!(cfg.source, SourceConfig::Nut(_)));
    }

    #[test]
    fn site_overrides_profile_key_by_key() {
        let profile = table(
            r#"
            [source]
            kind = "ina219"
            address = 0x43
            [policy]
            charge_floor_percent = 30
            "#,
        );
        let site = table(
            r#"
            [source]
            kind = "ina219"
            cells = 3
            [policy]
            poll_interval_ms = 1000
            "#,
        );
        let cfg = PowerConfig::from_layers(Some(&profile), Some(&site)).expect("merge");
        let SourceConfig::Ina219(i) = &cfg.source else {
            panic!("kind lost: {:?}", cfg.source)
        };
        assert_eq!((i.address, i.cells), (0x43, 3));
        assert_eq!(cfg.policy.charge_floor_percent, 30.0);
        assert_eq!(cfg.policy.poll_interval_ms, 1000);
    }

    #[test]
    fn switching_kind_drops_the_profiles_source_fields() {
        let profile = table("[source]\nkind = \"ina219\"\naddress = 0x43\n");
        let site = table("[source]\nkind = \"nut\"\nhost = \"10.1.1.1\"\nups = \"big\"\n");
        let cfg = PowerConfig::from_layers(Some(&profile), Some(&site)).expect("switch");
        let SourceConfig::Nut(n) = cfg.source else {
            panic!("not nut")
        };
        assert_eq!((n.host.as_str(), n.ups.as_str()), ("10.1.1.1", "big"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(PowerConfig::from_layers(None, Some(&table("pol_icy = 1"))).is_err());
        assert!(
            PowerConfig::from_layers(None, Some(&table("[source]\nkind = \"nut\"\nprot = 1")))
                .is_err()
        );
        assert!(
            PowerConfig::from_layers(None, Some(&table("[policy]\nfilter_window = 99"))).is_err()
        );
        assert!(
            PowerConfig::from_layers(
                None,
                Some(&table("[source]\nkind = \"nut\"\nrole = \"primary\""))
            )
            .is_err(),
            "primary without credentials must be refused"
        );
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let n = NutConfig {
            password: Some("hunter2".into()),
            ..NutConfig::default()
        };
        assert!(!format!("{n:?}").contains("hunter2"));
    }
}
