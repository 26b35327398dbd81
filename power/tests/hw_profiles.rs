//! The `[power]` sections of the board profiles in `hw/` load into a valid `PowerConfig`,
//! choose the source the board needs, and take site overrides.

use std::path::PathBuf;

use clinicbox_power::PowerConfig;
use clinicbox_power::config::{MaxChip, NutRole, SourceConfig};

fn profile(board: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../hw")
        .join(format!("{board}.toml"))
}

fn load(board: &str) -> PowerConfig {
    let path = profile(board);
    assert!(
        PowerConfig::power_table(&path)
            .expect("readable profile")
            .is_some(),
        "{} has no [power] section",
        path.display()
    );
    PowerConfig::load(Some(&path), None).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn nuc_uses_local_nut_as_primary_and_cycles_the_load() {
    let cfg = load("nuc");
    let SourceConfig::Nut(n) = &cfg.source else {
        panic!("nuc: {:?}", cfg.source)
    };
    assert_eq!(
        (n.host.as_str(), n.port, n.role),
        ("127.0.0.1", 3493, NutRole::Primary)
    );
    assert!(n.password_file.is_some(), "primary needs credentials");
    assert_eq!(
        cfg.shutdown.load_cycle_instcmds,
        vec!["shutdown.return".to_string()]
    );
}

#[test]
fn pi4_uses_an_ina219_hat() {
    let cfg = load("pi4");
    let SourceConfig::Ina219(i) = &cfg.source else {
        panic!("pi4: {:?}", cfg.source)
    };
    assert_eq!((i.address, i.cells), (0x42, 2));
}

#[test]
fn pi5_uses_a_max17048_hat() {
    let cfg = load("pi5");
    let SourceConfig::Max1704x(m) = &cfg.source else {
        panic!("pi5: {:?}", cfg.source)
    };
    assert_eq!(m.chip, MaxChip::Max17048);
}

#[test]
fn every_board_powers_off_through_the_unprivileged_request_file() {
    for board in ["nuc", "pi4", "pi5"] {
        let cfg = load(board);
        assert_eq!(
            cfg.shutdown.command,
            vec![
                "/usr/bin/touch".to_string(),
                "/run/clinicbox-power/poweroff".to_string()
            ],
            "{board}"
        );
        assert_eq!(cfg.state_dir, PathBuf::from("/data/power"), "{board}");
    }
}

#[test]
fn a_site_config_switches_a_pi_to_a_usb_ups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("clinicbox.toml");
    std::fs::write(
        &site,
        "data_dir = \"/data/clinicbox\"\n\n[power.source]\nkind = \"nut\"\nups = \"eaton\"\n\n[power.policy]\ncharge_floor_percent = 40\n",
    )
    .expect("write");
    let cfg = PowerConfig::load(Some(&profile("pi4")), Some(&site)).expect("load");
    let SourceConfig::Nut(n) = &cfg.source else {
        panic!("{:?}", cfg.source)
    };
    assert_eq!(n.ups, "eaton");
    assert_eq!(cfg.policy.charge_floor_percent, 40.0);
    assert_eq!(
        cfg.policy.filter_window, 7,
        "the board's other policy keys stay"
    );
}
