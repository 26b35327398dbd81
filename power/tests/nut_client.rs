//! The NUT client and source against a real upsd + dummy-ups.

mod support;

use std::time::Duration;

use clinicbox_power::config::{NutConfig, NutRole};
use clinicbox_power::nut::{NutClient, NutSource};
use clinicbox_power::{Line, PowerSource, SourceError};
use support::*;

const STEADY_OB: &str =
    "ups.status: OB DISCHRG\nbattery.charge: 87\nbattery.runtime: 1234\nbattery.voltage: 26.4\n";

fn cfg(port: u16, user: Option<(&str, &str)>, role: NutRole) -> NutConfig {
    NutConfig {
        host: "127.0.0.1".into(),
        port,
        ups: UPS.into(),
        username: user.map(|u| u.0.to_string()),
        password: user.map(|u| u.1.to_string()),
        password_file: None,
        role,
        io_timeout_ms: 2000,
    }
}

#[tokio::test]
async fn reads_status_charge_runtime_and_voltage() {
    if !nut_available() {
        return;
    }
    let nut = NutServer::start(STEADY_OB).await;
    let mut src = NutSource::new(cfg(nut.port, None, NutRole::Secondary)).expect("source");
    let r = src.read().await.expect("read");
    assert_eq!(r.line, Line::OnBattery);
    assert_eq!(r.charge_percent, Some(87.0));
    assert_eq!(r.runtime, Some(Duration::from_secs(1234)));
    assert_eq!(r.voltage_v, Some(26.4));
    assert_eq!(r.raw_status, "OB DISCHRG");
    assert_eq!(src.describe(), format!("nut:ups1@127.0.0.1:{}", nut.port));
}

#[tokio::test]
async fn protocol_subset_list_login_numlogins() {
    if !nut_available() {
        return;
    }
    let nut = NutServer::start(STEADY_OB).await;
    let mut c = NutClient::connect("127.0.0.1", nut.port, Duration::from_secs(2))
        .await
        .expect("connect");
    let upses = c.list_ups().await.expect("LIST UPS");
    assert_eq!(upses, vec![("ups1".to_string(), "test UPS".to_string())]);
    let vars = c.list_var(UPS).await.expect("LIST VAR");
    assert!(
        vars.contains(&("ups.status".to_string(), "OB DISCHRG".to_string())),
        "{vars:?}"
    );
    assert_eq!(c.num_logins(UPS).await.expect("NUMLOGINS"), 0);

    // A primary logged in: it counts itself out of "other hosts"; a second host counts.
    let mut primary = NutSource::new(cfg(nut.port, Some(ADMIN), NutRole::Primary)).expect("source");
    primary.read().await.expect("read");
    assert_eq!(c.num_logins(UPS).await.expect("NUMLOGINS"), 1);
    assert_eq!(primary.other_hosts().await.expect("other hosts"), 0);
    let mut secondary = NutSource::new(cfg(
        nut.port,
        Some(("watcher", "watcherpass")),
        NutRole::Secondary,
    ))
    .expect("source");
    secondary.read().await.expect("read");
    assert_eq!(primary.other_hosts().await.expect("other hosts"), 1);

    // Errors come back typed.
    let err = c
        .get_var("nope", "ups.status")
        .await
        .expect_err("unknown ups");
    assert_eq!(err.code(), Some("UNKNOWN-UPS"));
    let err = c.fsd(UPS).await.expect_err("FSD without credentials");
    assert_eq!(err.code(), Some("USERNAME-REQUIRED"));
}

#[tokio::test]
async fn instcmd_reaches_the_driver_through_real_upsd() {
    if !nut_available() {
        return;
    }
    let nut = NutServer::start(STEADY_OB).await;
    let mut src = NutSource::new(cfg(nut.port, Some(ADMIN), NutRole::Primary)).expect("source");

    // dummy-ups implements no shutdown.return: upsd refuses it, and the refusal is reported.
    match src.cycle_load(&["shutdown.return".into()]).await {
        Err(SourceError::Refused(m)) => assert!(m.contains("CMD-NOT-SUPPORTED"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The fallback list is walked in order; dummy-ups does list load.off, and upsd passes the
    // command to the driver and logs it. (load.off is only a stand-in here: a real box keeps
    // shutdown.return so that the load comes back.)
    let accepted = src
        .cycle_load(&["shutdown.return".into(), "load.off".into()])
        .await
        .expect("load.off accepted");
    assert_eq!(accepted, "load.off");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !nut.log("upsd.log").contains("did load.off on ups1") {
        assert!(
            std::time::Instant::now() < deadline,
            "upsd.log:\n{}",
            nut.log("upsd.log")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn secondary_never_sets_fsd_or_cycles_the_load() {
    if !nut_available() {
        return;
    }
    let nut = NutServer::start(STEADY_OB).await;
    let mut src = NutSource::new(cfg(
        nut.port,
        Some(("watcher", "watcherpass")),
        NutRole::Secondary,
    ))
    .expect("source");
    assert!(matches!(
        src.set_forced_shutdown().await,
        Err(SourceError::Unsupported(_))
    ));
    assert!(matches!(
        src.cycle_load(&["shutdown.return".into()]).await,
        Err(SourceError::Unsupported(_))
    ));
    assert!(!nut.status().await.unwrap_or_default().contains("FSD"));
}

#[tokio::test]
async fn wrong_password_still_monitors_but_cannot_act() {
    if !nut_available() {
        return;
    }
    let nut = NutServer::start(STEADY_OB).await;
    let mut src =
        NutSource::new(cfg(nut.port, Some((ADMIN.0, "wrong")), NutRole::Primary)).expect("source");
    assert_eq!(src.read().await.expect("read").line, Line::OnBattery);
    match src.set_forced_shutdown().await {
        Err(SourceError::Refused(m)) => assert!(m.contains("ACCESS-DENIED"), "{m}"),
        other => panic!("expected ACCESS-DENIED, got {other:?}"),
    }
}

#[tokio::test]
async fn password_file_is_read() {
    if !nut_available() {
        return;
    }
    let nut = NutServer::start(STEADY_OB).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("nut.pass");
    std::fs::write(&pw, format!("{}\n", ADMIN.1)).expect("write");
    let mut c = cfg(nut.port, Some(ADMIN), NutRole::Primary);
    c.password = None;
    c.password_file = Some(pw);
    let mut src = NutSource::new(c).expect("source");
    src.read().await.expect("read");
    src.set_forced_shutdown()
        .await
        .expect("FSD with the file's password");
    nut.wait_status(|s| s.contains("FSD"), Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn dead_driver_is_no_data_and_dead_upsd_is_unreachable() {
    if !nut_available() {
        return;
    }
    let mut nut = NutServer::start(STEADY_OB).await;
    let mut src = NutSource::new(cfg(nut.port, None, NutRole::Secondary)).expect("source");
    src.read().await.expect("read");
    nut.kill_driver();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match src.read().await {
            Err(SourceError::NoData(_)) => break,
            Ok(_) => {}
            Err(e) => panic!("expected no data, got {e:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upsd never reported the driver gone"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nut.kill_upsd();
    assert!(matches!(src.read().await, Err(SourceError::Unreachable(_))));
    // And stays so, reconnecting each time without hanging.
    assert!(matches!(src.read().await, Err(SourceError::Unreachable(_))));
}

#[tokio::test]
async fn unknown_ups_is_refused() {
    if !nut_available() {
        return;
    }
    let nut = NutServer::start(STEADY_OB).await;
    let mut c = cfg(nut.port, None, NutRole::Secondary);
    c.ups = "nope".into();
    let mut src = NutSource::new(c).expect("source");
    match src.read().await {
        Err(SourceError::Refused(m)) => assert!(m.contains("UNKNOWN-UPS"), "{m}"),
        other => panic!("expected UNKNOWN-UPS, got {other:?}"),
    }
}
