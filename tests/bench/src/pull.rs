//! `clinicbox-bench pull`: what the uplink's pull costs on a bad LTE link (800 ms one-way,
//! 80 kbit/s, 20 % loss), measured in one run against a stand-in national holding the demo's
//! metadata (reserved values off, so the rounds carry no blocks of patient IDs):
//! - the first full pull, next to the demo package's own size;
//! - a round with nothing changed (ETags and the change probe), next to the first pull (what
//!   every round would cost without them);
//! - one option renamed at national until a tablet reads the new name, next to the quiet round.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clinicbox_tests::clinic::{self, CLINIC_A, basic};
use clinicbox_tests::link::{LossyLink, Profile};
use clinicbox_tests::national::National;
use clinicbox_tests::{BoxBuilder, http_request};
use serde_json::json;

/// Bytes down, bytes up and time of one round through the link.
struct Round {
    down: u64,
    up: u64,
    time: Duration,
}

fn round(
    data: &Path,
    link: &LossyLink,
    national: &National,
    config: &Path,
) -> anyhow::Result<Round> {
    let s = &link.stats;
    let (d0, u0) = (
        s.down_bytes.load(Ordering::Relaxed),
        s.up_bytes.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let status = Command::new(clinicbox_tests::binary())
        .arg("--config")
        .arg(config)
        .args(["uplink", "--demo", "--data-dir"])
        .arg(data)
        .args(["--national-url", &format!("http://{}", link.addr)])
        .arg("--national-token-file")
        .arg(&national.token_file)
        .arg("--once")
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "uplink --once failed: {status}");
    Ok(Round {
        time: t0.elapsed(),
        down: s.down_bytes.load(Ordering::Relaxed) - d0,
        up: s.up_bytes.load(Ordering::Relaxed) - u0,
    })
}

/// What a tablet reads as the option's name.
fn option_name(url: &str) -> String {
    let auth = basic("android", "Android123");
    let r = http_request(
        url.trim_start_matches("http://"),
        "GET",
        "/api/options/cbOptOther1?fields=name",
        &[("Authorization", &auth)],
        b"",
    );
    r.json()["name"].as_str().unwrap_or("").to_string()
}

pub fn run() -> anyhow::Result<()> {
    crate::use_binaries_beside_this_one()?;
    let national = National::start(None);
    let package = clinic::demo_package();
    national.put_metadata(&package);
    national.assign_sync_user(&[CLINIC_A]);
    let b = BoxBuilder::demo().start();
    let data = b.dir().join("data");
    let config = b.dir().join("bench-uplink.toml");
    std::fs::write(&config, "[uplink]\nreserved_values = 0\n")?;
    let link = LossyLink::start(national.addr(), Profile::lte_bad_day(0.0), 11);

    let first = round(&data, &link, &national, &config)?;
    let quiet = round(&data, &link, &national, &config)?;
    national.put_metadata(&json!({"options": [{"id": "cbOptOther1", "code": "OTHER",
        "name": "Other diagnosis", "sortOrder": 5, "optionSet": {"id": "cbOsDiag001"}}]}));
    let t0 = Instant::now();
    let changed = round(&data, &link, &national, &config)?;
    anyhow::ensure!(
        option_name(b.url()) == "Other diagnosis",
        "the tablet does not see national's change"
    );
    let to_tablet = t0.elapsed();
    b.stop();

    let package_bytes = serde_json::to_vec(&package)?.len() as u64;
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{name:<48} {a:>10.1} {unit:<3} {b:>10.1} {unit:<3} {:>7.3}",
            a / b.max(f64::MIN_POSITIVE)
        );
        let (figure, baseline) = name.split_once(" / ").unwrap_or((name, "baseline"));
        crate::figures::figure("pull", figure, a, unit, baseline, b);
    };
    println!("\nuplink pull on a bad link (800 ms, 80 kbit/s, 20 % loss), demo metadata");
    println!(
        "{:<48} {:>14} {:>14} {:>7}",
        "", "measured", "baseline", "ratio"
    );
    let kib = |b: u64| b as f64 / 1024.0;
    row(
        "first pull, KiB down / demo package size",
        kib(first.down),
        kib(package_bytes),
        "KiB",
    );
    row(
        "first pull, KiB up / KiB down",
        kib(first.up),
        kib(first.down),
        "KiB",
    );
    row(
        "quiet round, KiB down+up / first pull",
        kib(quiet.down + quiet.up),
        kib(first.down + first.up),
        "KiB",
    );
    row(
        "quiet round, s / first pull",
        quiet.time.as_secs_f64(),
        first.time.as_secs_f64(),
        "s",
    );
    row(
        "option renamed at national → tablet, s / quiet",
        to_tablet.as_secs_f64(),
        quiet.time.as_secs_f64(),
        "s",
    );
    row(
        "that round, KiB down+up / quiet round",
        kib(changed.down + changed.up),
        kib(quiet.down + quiet.up),
        "KiB",
    );
    Ok(())
}
