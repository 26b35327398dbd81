//! A Pi whose UPS HAT is not fitted (its I2C bus does not exist) still runs: the power loop
//! reports READY, keeps petting its watchdog, tells the daemon "No UPS found", and looks for
//! the bus again until it appears. A restart loop here would keep the boot check from ever
//! marking an update good.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clinicbox_control::PowerState;
use clinicbox_power::source::AnySource;
use clinicbox_power::{PowerConfig, PowerLoop, PowerSource, SourceError};
use clinicbox_process::Notifier;

fn pi4_with_bus(dir: &Path, bus: &Path) -> PowerConfig {
    let board = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hw/pi4.toml");
    let site = dir.join("clinicbox.toml");
    std::fs::write(
        &site,
        format!(
            "[power]\nstate_dir = {:?}\ncontrol_socket = {:?}\n\
             [power.source]\nbus = {:?}\n\
             [power.policy]\npoll_interval_ms = 100\ndead_time_ms = 1000\n",
            dir.join("state"),
            dir.join("nobody.sock"),
            bus
        ),
    )
    .expect("write site config");
    PowerConfig::load(Some(&board), Some(&site)).expect("pi4 profile with site overrides")
}

#[tokio::test]
async fn a_missing_i2c_bus_is_not_a_start_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = pi4_with_bus(dir.path(), &dir.path().join("i2c-1"));
    let mut source = AnySource::open(&cfg).expect("a missing bus opens as an absent source");
    assert_eq!(source.describe(), "i2c:ina219");
    let err = source.read().await.expect_err("nothing to read");
    assert!(matches!(err, SourceError::Absent(_)), "{err}");
    assert!(err.to_string().contains("i2c-1"), "{err}");
}

#[tokio::test]
async fn a_configuration_mistake_still_fails_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The bus path exists but is a directory: not a HAT that is missing, a wrong path.
    let cfg = pi4_with_bus(dir.path(), dir.path());
    assert!(AnySource::open(&cfg).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_hat_the_loop_stays_ready_and_looks_for_the_bus_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = dir.path().join("i2c-1");
    let cfg = pi4_with_bus(dir.path(), &bus);
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");

    let source = AnySource::open(&cfg).expect("absent source");
    let power_loop = PowerLoop::new(cfg, source)
        .with_watchdog(Notifier::to_socket(&notify, Duration::from_millis(400)));
    let mut reports = power_loop.subscribe();
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(power_loop.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));

    // READY, then pets, while nothing can be read.
    let mut msgs = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && msgs
            .iter()
            .filter(|m: &&String| m.contains("WATCHDOG=1"))
            .count()
            < 3
    {
        if let Ok(n) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(msgs.iter().any(|m| m.contains("READY=1")), "{msgs:?}");
    assert!(
        msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "the loop must keep petting without its HAT: {msgs:?}"
    );
    let r = reports
        .wait_for(|r| r.detail.contains("No UPS found"))
        .await
        .expect("report")
        .clone();
    assert_eq!(r.state, PowerState::Unknown);
    assert!(
        r.detail.contains("without battery protection"),
        "{}",
        r.detail
    );

    // The bus appears (here a plain file: it opens, and the INA219's ioctls then fail, which
    // is an I/O error rather than "absent"): the loop found it and stops saying "No UPS".
    std::fs::write(&bus, b"").expect("create bus");
    tokio::time::timeout(
        Duration::from_secs(30),
        reports.wait_for(|r| !r.detail.contains("No UPS found")),
    )
    .await
    .expect("the bus is looked for again")
    .expect("report");

    stop_tx.send_replace(true);
    run.await.expect("loop");
}
