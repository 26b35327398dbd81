//! Linux `power_supply` class (`/sys/class/power_supply/*`) as a power source.
//!
//! Units per the kernel ABI (`Documentation/ABI/testing/sysfs-class-power`): `capacity` in %,
//! `voltage_now` in µV, `current_now` in µA (negative = discharging on most drivers),
//! `energy_now` µWh, `power_now` µW, `charge_now` µAh, `time_to_empty_now` s.
//! Mains presence comes from a `Mains` supply's `online`; without one, from the battery's
//! `status` (`Discharging` = on battery).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::SysfsConfig;
use crate::reading::{Line, Reading};
use crate::source::{PowerSource, SourceError};

/// Reads one battery (and, if present, one mains supply) from sysfs.
pub struct SysfsSource {
    cfg: SysfsConfig,
}

impl SysfsSource {
    pub fn new(cfg: SysfsConfig) -> Self {
        SysfsSource { cfg }
    }

    /// Find a supply by configured name or by `type`.
    fn find(&self, name: Option<&str>, types: &[&str]) -> Result<Option<PathBuf>, SourceError> {
        if let Some(n) = name {
            let p = self.cfg.root.join(n);
            return if p.exists() {
                Ok(Some(p))
            } else {
                Err(SourceError::Unreachable(format!(
                    "{} does not exist",
                    p.display()
                )))
            };
        }
        let entries = std::fs::read_dir(&self.cfg.root).map_err(|e| {
            SourceError::Unreachable(format!("cannot list {}: {e}", self.cfg.root.display()))
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let ty = read_str(p, "type").unwrap_or_default();
                // Peripheral batteries (mice, tablets over USB) have scope=Device.
                let device = read_str(p, "scope").is_some_and(|s| s == "Device");
                types.contains(&ty.as_str()) && !device
            })
            .collect();
        found.sort();
        Ok(found.into_iter().next())
    }
}

fn read_str(dir: &Path, attr: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(attr))
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_i64(dir: &Path, attr: &str) -> Option<i64> {
    read_str(dir, attr).and_then(|s| s.parse().ok())
}

impl PowerSource for SysfsSource {
    fn describe(&self) -> String {
        format!("sysfs:{}", self.cfg.battery.as_deref().unwrap_or("auto"))
    }

    async fn read(&mut self) -> Result<Reading, SourceError> {
        let battery = self.find(self.cfg.battery.as_deref(), &["Battery", "UPS"])?;
        let mains = self.find(self.cfg.mains.as_deref(), &["Mains"])?;
        if battery.is_none() && mains.is_none() {
            return Err(SourceError::NoData(format!(
                "no battery or mains supply under {}",
                self.cfg.root.display()
            )));
        }
        let mut r = Reading::unknown("");
        let mut words = Vec::new();
        if let Some(m) = &mains {
            match read_i64(m, "online") {
                Some(1) => r.line = Line::Online,
                Some(0) => r.line = Line::OnBattery,
                _ => {}
            }
            words.push(format!(
                "mains online={}",
                read_str(m, "online").unwrap_or_default()
            ));
        }
        if let Some(b) = &battery {
            let status = read_str(b, "status").unwrap_or_default();
            if r.line == Line::Unknown {
                r.line = match status.as_str() {
                    "Discharging" => Line::OnBattery,
                    "Charging" | "Full" | "Not charging" => Line::Online,
                    _ => Line::Unknown,
                };
            }
            r.low_battery = read_str(b, "capacity_level").is_some_and(|l| l == "Critical");
            r.charge_percent = read_i64(b, "capacity").map(|c| c as f32);
            r.voltage_v = read_i64(b, "voltage_now").map(|uv| uv as f32 / 1e6);
            r.runtime = runtime(b);
            words.push(format!("battery status={status}"));
        }
        r.raw_status = words.join(", ");
        Ok(r)
    }
}

/// Remaining runtime: the driver's own estimate, else energy/power or charge/current.
fn runtime(b: &Path) -> Option<Duration> {
    if let Some(s) = read_i64(b, "time_to_empty_now").filter(|s| *s > 0) {
        return Some(Duration::from_secs(s.unsigned_abs()));
    }
    let hours = match (read_i64(b, "energy_now"), read_i64(b, "power_now")) {
        (Some(e), Some(p)) if p != 0 => Some(e as f64 / (p.unsigned_abs() as f64)),
        _ => match (read_i64(b, "charge_now"), read_i64(b, "current_now")) {
            (Some(q), Some(i)) if i < 0 => Some(q as f64 / (i.unsigned_abs() as f64)),
            _ => None,
        },
    }?;
    // Only meaningful while discharging.
    (read_str(b, "status").as_deref() == Some("Discharging") && hours.is_finite())
        .then(|| Duration::from_secs_f64(hours * 3600.0))
}
