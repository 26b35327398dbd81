//! The systemd watchdog is petted only while the power loop is healthy (its source answers), so
//! a wedged I2C bus or a stuck read gets the process restarted by systemd; and a gauge read that
//! hangs is cut off without stacking more reads behind it.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clinicbox_power::config::{PolicyConfig, SourceConfig};
use clinicbox_power::gauge::{FuelGauge, GaugeSample, GaugeSource};
use clinicbox_power::{Line, PowerConfig, PowerLoop, PowerSource, Reading, SourceError};
use clinicbox_process::Notifier;

/// Answers while `healthy`, else fails the way a hung gauge does.
struct Switchable {
    healthy: Arc<AtomicBool>,
}

impl PowerSource for Switchable {
    fn describe(&self) -> String {
        "test".into()
    }
    async fn read(&mut self) -> Result<Reading, SourceError> {
        if self.healthy.load(Ordering::Acquire) {
            let mut r = Reading::unknown("OL");
            r.line = Line::Online;
            Ok(r)
        } else {
            Err(SourceError::Stuck("test bus wedged".into()))
        }
    }
}

/// Messages the loop sends over `window` of the runtime's paused clock, read as they come so
/// the socket's small queue never fills.
async fn collect(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

fn pets(msgs: &[String]) -> usize {
    msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count()
}

/// On tokio's paused clock: the loop's timers, its health window and the notifier's pet rate
/// all run on it, so the windows below are exact however loaded the machine is.
#[tokio::test(start_paused = true)]
async fn watchdog_is_petted_only_while_the_source_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let cfg = PowerConfig {
        source: SourceConfig::None,
        policy: PolicyConfig {
            poll_interval_ms: 100,
            ..PolicyConfig::default()
        },
        control_socket: dir.path().join("nobody.sock"),
        state_dir: dir.path().join("state"),
        ..PowerConfig::default()
    };
    let healthy = Arc::new(AtomicBool::new(true));
    let power_loop = PowerLoop::new(
        cfg,
        Switchable {
            healthy: healthy.clone(),
        },
    )
    .with_watchdog(Notifier::to_socket(&notify, Duration::from_millis(400)));
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(power_loop.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));

    let first = collect(&sock, Duration::from_secs(2)).await;
    assert!(first.iter().any(|m| m.contains("READY=1")), "{first:?}");
    assert!(pets(&first) >= 3, "healthy loop pets: {first:?}");

    // The source stops answering. The loop tolerates it for 3 × its read timeout (here
    // 3 × 2 s), then stops petting.
    healthy.store(false, Ordering::Release);
    let _grace = collect(&sock, Duration::from_millis(6500)).await;
    let silent = collect(&sock, Duration::from_secs(2)).await;
    assert_eq!(
        pets(&silent),
        0,
        "no pets while the source is stuck: {silent:?}"
    );

    // It answers again: petting resumes.
    healthy.store(true, Ordering::Release);
    let again = collect(&sock, Duration::from_secs(2)).await;
    assert!(pets(&again) >= 3, "petting resumes: {again:?}");

    stop_tx.send_replace(true);
    run.await.expect("join");
}

/// A gauge whose reads block until released.
struct Hanging {
    release: Arc<AtomicBool>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl FuelGauge for Hanging {
    fn kind(&self) -> &'static str {
        "hanging"
    }
    fn sample(&mut self) -> Result<GaugeSample, String> {
        self.calls.fetch_add(1, Ordering::AcqRel);
        let start = Instant::now();
        while !self.release.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(GaugeSample {
            line: Line::Online,
            voltage_v: Some(8.0),
            current_ma: Some(10.0),
            charge_percent: Some(90.0),
            charge_rate: None,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_gauge_read_is_cut_off_and_not_stacked() {
    let release = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gauge = Hanging {
        release: release.clone(),
        calls: calls.clone(),
    };
    let mut src = GaugeSource::new(gauge, None, Duration::from_millis(200));
    assert!(matches!(src.read().await, Err(SourceError::Stuck(_))));
    for _ in 0..5 {
        assert!(matches!(src.read().await, Err(SourceError::Stuck(_))));
    }
    assert_eq!(
        calls.load(Ordering::Acquire),
        1,
        "no second read behind the hung one"
    );
    // Released, the hung read finishes on its own thread; the next read after it answers
    // (asked again a bounded number of times: the thread finishes when the machine lets it).
    release.store(true, Ordering::Release);
    let mut answered = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(r) = src.read().await {
            answered = Some(r);
            break;
        }
    }
    let r = answered.expect("a read answers after the release");
    assert_eq!(r.charge_percent, Some(90.0));
}
