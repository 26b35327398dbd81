//! Power end to end: the real `clinicbox serve` (demo box) and the real `clinicbox power`, both
//! as processes, against a real NUT upsd + dummy-ups playing OL → OB → OB LB. A value a tablet
//! wrote while the box ran on battery is acknowledged, the power process quiesces the daemon
//! (writes then get 503 + Retry-After), commands the UPS load cycle and runs its power-off
//! hook; then the box loses power (SIGKILL) and, restarted on the same data, still has the
//! value.

#[path = "../../power/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use clinicbox_control::{ControlClient, PowerState};
use clinicbox_tests::{BoxBuilder, RunningBox, binary};
use serde_json::{Value, json};
use support::{EventLog, NutServer, nut_available, start_tap};

const ANDROID: (&str, &str) = ("android", "Android123");
const DS: &str = "cbDsOpdMon1";
const CLINIC_A: &str = "cbClinicA01";
const DEFAULT_COC: &str = "HllvX50cXC0";

fn send(
    b: &RunningBox,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ANDROID.0, ANDROID.1))
    );
    let bytes = body.map(|v| serde_json::to_vec(v).expect("json"));
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "application/json"),
    ];
    if bytes.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = b.request(method, path, &headers, bytes.as_deref().unwrap_or(b""));
    let retry_after = r.header("retry-after").map(str::to_owned);
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, retry_after, v)
}

fn one_value(pe: &str, value: &str) -> Value {
    json!({"dataSet": DS, "dataValues": [{
        "dataElement": "cbDeAggOpd1", "period": pe, "orgUnit": CLINIC_A,
        "categoryOptionCombo": "cbCocFemale", "attributeOptionCombo": DEFAULT_COC,
        "value": value, "storedBy": "android", "followup": false
    }]})
}

fn stored_value(b: &RunningBox, pe: &str) -> Option<String> {
    let (status, _, v) = send(
        b,
        "GET",
        &format!("/api/dataValueSets?dataSet={DS}&period={pe}&orgUnit={CLINIC_A}&paging=false"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    v["dataValues"].as_array()?.iter().find_map(|d| {
        (d["dataElement"] == "cbDeAggOpd1" && d["categoryOptionCombo"] == "cbCocFemale")
            .then(|| d["value"].as_str().unwrap_or_default().to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_acknowledged_on_battery_survives_the_ups_shutdown_and_power_cut() {
    if !nut_available() {
        return;
    }
    let first = BoxBuilder::demo();
    let data = first.dir().join("data");
    let b = tokio::task::block_in_place(|| first.start());
    let (_, _, info) = send(&b, "GET", "/api/system/info?fields=serverDate", None);
    let date = info["serverDate"].as_str().expect("serverDate").to_string();
    let pe = format!("{}{}", &date[0..4], &date[5..7]);

    let nut = NutServer::start(
        "ups.status: OL\nbattery.charge: 100\nTIMER 6\n\
         ups.status: OB DISCHRG\nbattery.charge: 80\nTIMER 12\n\
         ups.status: OB DISCHRG LB\nbattery.charge: 40\n",
    )
    .await;
    let work = tempfile::tempdir().expect("tempdir");
    let log = EventLog::new(work.path().join("events.log"));
    let tap = start_tap(nut.port, log.clone()).await;
    let socket = data.join("control.sock");
    let site = work.path().join("clinicbox.toml");
    std::fs::write(
        &site,
        format!(
            "[power]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n\n\
             [power.source]\nkind = \"nut\"\nport = {tap}\nups = \"ups1\"\nrole = \"primary\"\n\
             username = \"{}\"\npassword = \"{}\"\n\n\
             [power.policy]\npoll_interval_ms = 250\non_battery_delay_ms = 1000\n\n\
             [power.shutdown]\ncommand = [\"/bin/sh\", \"-c\", \"echo poweroff >> '{}'\"]\n",
            socket.display(),
            work.path().join("power").display(),
            support::ADMIN.0,
            support::ADMIN.1,
            log.path().display()
        ),
    )
    .expect("site config");
    let power_log = work.path().join("power.log");
    let mut power = Command::new(binary())
        .arg("--config")
        .arg(&site)
        .arg("power")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&power_log).expect("log"))
        .spawn()
        .expect("spawn clinicbox power");

    // The daemon learns "on battery" from the power process over the control socket.
    let mut control = ControlClient::new(&socket, Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = control.status().await
            && s.power.as_ref().map(|p| p.state) == Some(PowerState::OnBattery)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never heard of on battery; power log:\n{}",
            std::fs::read_to_string(&power_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A tablet writes while the box runs on battery: acknowledged.
    let (status, _, r) = send(
        &b,
        "POST",
        "/api/dataValueSets",
        Some(&one_value(&pe, "42")),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["response"]["importCount"]["imported"], 1, "{r}");

    // Low battery: quiesce, load cycle, power-off hook.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.contains("poweroff") {
        assert!(
            Instant::now() < deadline,
            "no power-off; power log:\n{}",
            std::fs::read_to_string(&power_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plog = std::fs::read_to_string(&power_log).unwrap_or_default();
    assert!(plog.contains("daemon quiesced"), "{plog}");
    let pos = |needle: &str| log.position(needle).unwrap_or(usize::MAX);
    assert!(
        pos("nut> INSTCMD ups1 shutdown.return") < pos("poweroff"),
        "{:?}",
        log.lines()
    );

    // The daemon refuses writes now, telling the tablet when to retry.
    let (status, retry_after, _) = send(
        &b,
        "POST",
        "/api/dataValueSets",
        Some(&one_value(&pe, "43")),
    );
    assert_eq!(status, 503);
    assert!(retry_after.is_some(), "503 carries Retry-After");

    // The UPS cuts the power.
    let kept = b.kill();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(power.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let exit = tokio::task::block_in_place(|| power.wait()).expect("wait power");
    assert!(
        exit.success(),
        "clinicbox power exits 0 on SIGTERM after its power-off: {exit}"
    );
    drop(nut);

    // Mains returns; the box boots on the same data.
    let b = tokio::task::block_in_place(|| BoxBuilder::demo_at(data.display().to_string()).start());
    assert_eq!(stored_value(&b, &pe).as_deref(), Some("42"));
    tokio::task::block_in_place(|| b.stop());
    drop(kept);
}
