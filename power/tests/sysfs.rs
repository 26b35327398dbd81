//! The sysfs source against fake `/sys/class/power_supply` trees written by the test.

use std::path::Path;
use std::time::Duration;

use clinicbox_power::config::SysfsConfig;
use clinicbox_power::sysfs::SysfsSource;
use clinicbox_power::{Line, PowerSource, SourceError};

fn supply(root: &Path, name: &str, attrs: &[(&str, &str)]) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (k, v) in attrs {
        // The kernel terminates every attribute with a newline.
        std::fs::write(dir.join(k), format!("{v}\n")).expect("write attr");
    }
}

fn source(root: &Path) -> SysfsSource {
    SysfsSource::new(SysfsConfig {
        root: root.to_path_buf(),
        battery: None,
        mains: None,
    })
}

/// A NUC-like laptop board: ACAD (Mains) + BAT0 (Battery) with energy counters.
fn nuc_tree(root: &Path, online: &str, status: &str, capacity: &str) {
    supply(root, "ACAD", &[("type", "Mains"), ("online", online)]);
    supply(
        root,
        "BAT0",
        &[
            ("type", "Battery"),
            ("status", status),
            ("capacity", capacity),
            ("capacity_level", "Normal"),
            ("voltage_now", "11850000"),
            ("energy_now", "20000000"),
            ("power_now", "10000000"),
        ],
    );
    // A wireless mouse's battery must be ignored.
    supply(
        root,
        "hidpp_battery_0",
        &[
            ("type", "Battery"),
            ("scope", "Device"),
            ("status", "Discharging"),
            ("capacity", "3"),
        ],
    );
}

#[tokio::test]
async fn mains_online_is_on_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    nuc_tree(dir.path(), "1", "Charging", "87");
    let r = source(dir.path()).read().await.expect("read");
    assert_eq!(r.line, Line::Online);
    assert_eq!(r.charge_percent, Some(87.0));
    assert_eq!(r.voltage_v, Some(11.85));
    assert!(!r.low_battery);
    // Not discharging: no runtime estimate.
    assert_eq!(r.runtime, None);
}

#[tokio::test]
async fn mains_offline_is_on_battery_with_runtime_from_energy_and_power() {
    let dir = tempfile::tempdir().expect("tempdir");
    nuc_tree(dir.path(), "0", "Discharging", "64");
    let r = source(dir.path()).read().await.expect("read");
    assert_eq!(r.line, Line::OnBattery);
    assert_eq!(
        r.charge_percent,
        Some(64.0),
        "the mouse battery (3%) is ignored"
    );
    // 20 Wh at 10 W = 2 h.
    assert_eq!(r.runtime, Some(Duration::from_secs(7200)));
}

#[tokio::test]
async fn without_a_mains_supply_the_battery_status_decides() {
    let dir = tempfile::tempdir().expect("tempdir");
    supply(
        dir.path(),
        "BAT1",
        &[
            ("type", "Battery"),
            ("status", "Discharging"),
            ("capacity", "12"),
            ("capacity_level", "Critical"),
            ("charge_now", "500000"),
            ("current_now", "-1000000"),
        ],
    );
    let r = source(dir.path()).read().await.expect("read");
    assert_eq!(r.line, Line::OnBattery);
    assert!(
        r.low_battery,
        "capacity_level Critical is the low-battery flag"
    );
    // 0.5 Ah at 1 A = 30 min.
    assert_eq!(r.runtime, Some(Duration::from_secs(1800)));

    std::fs::write(dir.path().join("BAT1/status"), "Full\n").expect("write");
    let r = source(dir.path()).read().await.expect("read");
    assert_eq!(r.line, Line::Online);
}

#[tokio::test]
async fn ups_class_supply_and_driver_runtime_estimate() {
    let dir = tempfile::tempdir().expect("tempdir");
    supply(
        dir.path(),
        "ups0",
        &[
            ("type", "UPS"),
            ("status", "Discharging"),
            ("capacity", "55"),
            ("time_to_empty_now", "900"),
        ],
    );
    let r = source(dir.path()).read().await.expect("read");
    assert_eq!(r.line, Line::OnBattery);
    assert_eq!(r.runtime, Some(Duration::from_secs(900)));
}

#[tokio::test]
async fn named_supplies_and_missing_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    nuc_tree(dir.path(), "1", "Full", "100");
    let mut named = SysfsSource::new(SysfsConfig {
        root: dir.path().to_path_buf(),
        battery: Some("BAT0".into()),
        mains: Some("ACAD".into()),
    });
    assert_eq!(named.read().await.expect("read").line, Line::Online);

    let mut wrong = SysfsSource::new(SysfsConfig {
        root: dir.path().to_path_buf(),
        battery: Some("BAT9".into()),
        mains: None,
    });
    assert!(matches!(
        wrong.read().await,
        Err(SourceError::Unreachable(_))
    ));

    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        source(empty.path()).read().await,
        Err(SourceError::NoData(_))
    ));
}

#[tokio::test]
async fn garbage_values_are_missing_not_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    supply(
        dir.path(),
        "BAT0",
        &[
            ("type", "Battery"),
            ("status", "Unknown"),
            ("capacity", "n/a"),
        ],
    );
    let r = source(dir.path()).read().await.expect("read");
    assert_eq!(r.line, Line::Unknown);
    assert_eq!(r.charge_percent, None);
}
