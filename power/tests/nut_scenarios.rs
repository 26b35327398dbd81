//! The power scenarios from issue 7, against a real NUT server: `upsd` with the `dummy-ups`
//! driver playing a scripted sequence, the power loop as `clinicbox power` runs it, a fake
//! daemon on the control socket, and a power-off command that only writes to the event log.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use clinicbox_control::PowerState;
use clinicbox_power::config::{NutRole, SourceConfig};
use clinicbox_power::nut::NutSource;
use clinicbox_power::state::StateFile;
use clinicbox_power::{LoopOutcome, PowerConfig, PowerLoop};
use support::*;
use tokio::sync::watch;

/// dummy-ups's timers run from its start, while upsd still shows `WAIT` for about two
/// seconds; the first state therefore lasts 6 s so the loop (started once upsd shows real
/// data) sees it first.
fn sequence(first_status: &str, body: &str) -> String {
    format!(
        "ups.status: {first_status}\nbattery.charge: 100\nbattery.runtime: 3000\nTIMER 6\n{body}"
    )
}

struct Rig {
    nut: NutServer,
    log: EventLog,
    daemon: Arc<FakeDaemon>,
    cfg: PowerConfig,
    _dir: tempfile::TempDir,
}

async fn rig(seq: &str, behaviour: QuiesceBehaviour, with_daemon: bool) -> Option<Rig> {
    if !nut_available() {
        return None;
    }
    let nut = NutServer::start(seq).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EventLog::new(dir.path().join("events.log"));
    let tap = start_tap(nut.port, log.clone()).await;
    let cfg = test_config(dir.path(), tap, &log);
    let daemon = Arc::new(FakeDaemon {
        log: log.clone(),
        reports: Mutex::new(Vec::new()),
        accepting: Mutex::new(true),
        behaviour,
    });
    if with_daemon {
        start_daemon(&cfg.control_socket, daemon.clone()).await;
    }
    Some(Rig {
        nut,
        log,
        daemon,
        cfg,
        _dir: dir,
    })
}

fn nut_source(cfg: &PowerConfig) -> NutSource {
    let SourceConfig::Nut(n) = &cfg.source else {
        panic!("test config is NUT")
    };
    NutSource::new(n.clone()).expect("nut source")
}

fn states_of(seen: &Arc<Mutex<Vec<(PowerState, String)>>>) -> Vec<PowerState> {
    seen.lock().expect("lock").iter().map(|(s, _)| *s).collect()
}

/// Position of `want` in `states` after position `after`.
fn after(states: &[PowerState], after: usize, want: PowerState) -> Option<usize> {
    states
        .iter()
        .skip(after)
        .position(|s| *s == want)
        .map(|p| p + after)
}

async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_order(log: &EventLog, events: &[&str]) {
    let mut last = None;
    for e in events {
        let pos = log
            .position(e)
            .unwrap_or_else(|| panic!("event {e:?} missing; log:\n{}", log.lines().join("\n")));
        if let Some((prev, prev_pos)) = last {
            assert!(
                pos > prev_pos,
                "{e:?} happened before {prev:?}; log:\n{}",
                log.lines().join("\n")
            );
        }
        last = Some((e, pos));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ol_ob_lb_quiesces_cycles_the_load_and_powers_off() {
    let seq = sequence(
        "OL",
        "ups.status: OB DISCHRG\nbattery.charge: 90\nbattery.runtime: 2500\nTIMER 3\n\
         ups.status: OB DISCHRG LB\nbattery.charge: 60\nbattery.runtime: 1500\n",
    );
    let Some(r) = rig(&seq, QuiesceBehaviour::Immediate, true).await else {
        return;
    };
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let seen = record_states(power_loop.subscribe());
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = run_bounded(power_loop, stop, Duration::from_secs(90)).await;

    // dummy-ups cannot do instant commands, so upsd refuses shutdown.return (CMD-NOT-SUPPORTED);
    // what matters here is that it was sent, before the power-off.
    assert_eq!(outcome, LoopOutcome::PoweredOff { load_cycle: None });
    let states = states_of(&seen);
    let ol = after(&states, 0, PowerState::OnLine).expect("saw on line");
    let ob = after(&states, ol, PowerState::OnBattery).expect("saw on battery after on line");
    after(&states, ob, PowerState::ShuttingDown).expect("saw shutting down after on battery");
    assert!(
        r.daemon.seen_state(PowerState::OnBattery),
        "daemon was told about on battery"
    );
    assert_order(
        &r.log,
        &[
            "nut> LOGIN ups1",
            "nut> PRIMARY ups1",
            "daemon: quiesce",
            "daemon: quiesced",
            "nut> FSD ups1",
            "nut> INSTCMD ups1 shutdown.return",
            "poweroff",
        ],
    );
    assert!(!r.log.contains("daemon: resume"));
    assert!(
        StateFile::new(&r.cfg.state_dir)
            .measured_shutdown()
            .is_some(),
        "the shutdown time is recorded for the next runtime floor"
    );
    // upsd latched FSD for the other hosts.
    assert!(r.nut.status().await.unwrap_or_default().contains("FSD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mains_returning_before_the_point_of_no_return_cancels() {
    let seq = sequence(
        "OL",
        "ups.status: OB DISCHRG\nbattery.charge: 80\nTIMER 3\n\
         ups.status: OB DISCHRG LB\nbattery.charge: 50\nTIMER 3\n\
         ups.status: OL CHRG\nbattery.charge: 51\n",
    );
    // The daemon's quiesce lasts until mains is back (and confirmed), so the cancel happens
    // at the check before the point of no return, whatever the machine's speed.
    let (release_tx, release) = watch::channel(false);
    let Some(r) = rig(&seq, QuiesceBehaviour::HoldUntil(release), true).await else {
        return;
    };
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let seen = record_states(power_loop.subscribe());
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(run_bounded(power_loop, stop, Duration::from_secs(90)));

    let log = r.log.clone();
    wait_until("the quiesce request", Duration::from_secs(40), || {
        log.contains("daemon: quiesce")
    })
    .await;
    r.nut
        .wait_status(|s| s.starts_with("OL"), Duration::from_secs(40))
        .await;
    // Longer than mains_return_delay_ms (1 s) plus a few polls.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    release_tx.send_replace(true);

    let s2 = seen.clone();
    wait_until(
        "back on line after the cancel",
        Duration::from_secs(30),
        move || {
            let st = states_of(&s2);
            after(&st, 0, PowerState::ShuttingDown)
                .and_then(|i| after(&st, i, PowerState::OnLine))
                .is_some()
        },
    )
    .await;
    stop_tx.send_replace(true);
    let outcome = run.await.expect("join");

    assert_eq!(outcome, LoopOutcome::Stopped);
    assert_order(&r.log, &["daemon: quiesce", "daemon: resume"]);
    for never in ["poweroff", "nut> INSTCMD", "nut> FSD"] {
        assert!(
            !r.log.contains(never),
            "{never:?} must not happen after a cancel"
        );
    }
    assert!(
        *r.daemon.accepting.lock().expect("lock"),
        "daemon accepts writes again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_mains_does_not_shut_down() {
    let flaps = "ups.status: OB DISCHRG LB\nbattery.charge: 15\nTIMER 1\n\
                 ups.status: OL CHRG\nTIMER 1\n"
        .repeat(8);
    let seq = sequence("OL", &format!("{flaps}ups.status: OL\n"));
    let Some(mut r) = rig(&seq, QuiesceBehaviour::Immediate, true).await else {
        return;
    };
    // Each OB lasts about a second; on battery must hold three.
    r.cfg.policy.on_battery_delay_ms = 3000;
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let seen = record_states(power_loop.subscribe());
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(run_bounded(power_loop, stop, Duration::from_secs(120)));

    // Follow upsd until the flapping is over: OL for 4 s after at least three OBs.
    let mut obs = 0;
    let mut last_ob = tokio::time::Instant::now();
    let mut prev = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let s = r.nut.status().await.unwrap_or_default();
        let ob = |st: &str| st.split_whitespace().any(|w| w == "OB");
        if ob(&s) {
            last_ob = tokio::time::Instant::now();
            if !ob(&prev) {
                obs += 1;
            }
        }
        prev = s;
        if obs >= 3 && last_ob.elapsed() > Duration::from_secs(4) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sequence did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send_replace(true);
    let outcome = run.await.expect("join");

    assert_eq!(outcome, LoopOutcome::Stopped);
    assert!(
        !r.log.contains("daemon: quiesce"),
        "no quiesce while flapping"
    );
    assert!(!r.log.contains("poweroff"), "no power-off while flapping");
    let st = seen.lock().expect("lock").clone();
    assert!(
        !st.iter()
            .any(|(s, _)| matches!(s, PowerState::Critical | PowerState::ShuttingDown)),
        "{st:?}"
    );
    let last = st.last().expect("some state");
    assert_eq!(last.0, PowerState::OnLine);
    assert!(
        last.1.contains("unstable"),
        "flapping is shown to staff: {:?}",
        last.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsd_set_by_another_host_is_obeyed() {
    let seq = sequence("OL", "ups.status: OL\nbattery.charge: 100\n");
    let Some(mut r) = rig(&seq, QuiesceBehaviour::Immediate, true).await else {
        return;
    };
    // This box is a secondary; another host is the UPS's primary.
    if let SourceConfig::Nut(n) = &mut r.cfg.source {
        n.role = NutRole::Secondary;
        n.username = Some("watcher".into());
        n.password = Some("watcherpass".into());
    }
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let seen = record_states(power_loop.subscribe());
    let (_stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(run_bounded(power_loop, stop, Duration::from_secs(60)));

    let s2 = seen.clone();
    wait_until("on line", Duration::from_secs(20), move || {
        states_of(&s2).contains(&PowerState::OnLine)
    })
    .await;
    let mut other = r.nut.other_host().await;
    other.fsd(UPS).await.expect("FSD from the other host");
    let outcome = run.await.expect("join");

    assert_eq!(outcome, LoopOutcome::PoweredOff { load_cycle: None });
    assert_order(&r.log, &["nut> LOGIN ups1", "daemon: quiesce", "poweroff"]);
    assert!(
        !r.log.contains("daemon: resume"),
        "FSD is a latch: mains on line does not cancel"
    );
    assert!(
        !r.log.contains("nut> INSTCMD"),
        "a secondary leaves the UPS to its primary"
    );
    assert!(
        !r.log.contains("nut> FSD"),
        "a secondary does not set FSD itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsd_gone_while_on_battery_is_critical_after_the_dead_time() {
    let seq = sequence("OB DISCHRG", "ups.status: OB DISCHRG\nbattery.charge: 90\n");
    let Some(mut r) = rig(&seq, QuiesceBehaviour::Immediate, true).await else {
        return;
    };
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let seen = record_states(power_loop.subscribe());
    let (_stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(run_bounded(power_loop, stop, Duration::from_secs(60)));

    let s2 = seen.clone();
    wait_until("on battery", Duration::from_secs(20), move || {
        states_of(&s2).contains(&PowerState::OnBattery)
    })
    .await;
    r.nut.kill_upsd();
    let outcome = run.await.expect("join");

    assert!(
        matches!(outcome, LoopOutcome::PoweredOff { .. }),
        "{outcome:?}"
    );
    assert_order(&r.log, &["daemon: quiesce", "poweroff"]);
    let st = seen.lock().expect("lock").clone();
    let last = st.last().expect("state");
    assert_eq!(last.0, PowerState::ShuttingDown);
    assert!(last.1.contains("no contact"), "reason shown: {:?}", last.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsd_gone_while_on_line_is_not_critical() {
    let seq = sequence("OL", "ups.status: OL\nbattery.charge: 100\n");
    let Some(mut r) = rig(&seq, QuiesceBehaviour::Immediate, true).await else {
        return;
    };
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let seen = record_states(power_loop.subscribe());
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(run_bounded(power_loop, stop, Duration::from_secs(60)));

    let s2 = seen.clone();
    wait_until("on line", Duration::from_secs(20), move || {
        states_of(&s2).contains(&PowerState::OnLine)
    })
    .await;
    r.nut.kill_upsd();
    let s3 = seen.clone();
    wait_until(
        "unknown after the dead time",
        Duration::from_secs(20),
        move || states_of(&s3).last() == Some(&PowerState::Unknown),
    )
    .await;
    // Twice the dead time more: still nothing may happen.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop_tx.send_replace(true);
    let outcome = run.await.expect("join");

    assert_eq!(outcome, LoopOutcome::Stopped);
    assert!(!r.log.contains("daemon: quiesce"));
    assert!(!r.log.contains("poweroff"));
    let st = seen.lock().expect("lock").clone();
    assert!(
        st.last().expect("state").1.contains("not answered"),
        "{st:?}"
    );
    assert!(
        r.daemon.seen_state(PowerState::Unknown),
        "daemon was told the UPS is unreachable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_daemon_does_not_block_the_power_off() {
    let seq = sequence(
        "OB DISCHRG LB",
        "ups.status: OB DISCHRG LB\nbattery.charge: 10\n",
    );
    // The daemon never finishes its quiesce.
    let (_never_tx, never) = watch::channel(false);
    let Some(mut r) = rig(&seq, QuiesceBehaviour::HoldUntil(never), true).await else {
        return;
    };
    r.cfg.shutdown.quiesce_deadline_ms = 1500;
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = run_bounded(power_loop, stop, Duration::from_secs(60)).await;

    assert!(
        matches!(outcome, LoopOutcome::PoweredOff { .. }),
        "{outcome:?}"
    );
    assert_order(
        &r.log,
        &[
            "daemon: quiesce",
            "nut> INSTCMD ups1 shutdown.return",
            "poweroff",
        ],
    );
    assert!(!r.log.contains("daemon: quiesced"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_at_all_still_powers_off() {
    let seq = sequence(
        "OB DISCHRG LB",
        "ups.status: OB DISCHRG LB\nbattery.charge: 10\n",
    );
    let Some(r) = rig(&seq, QuiesceBehaviour::Immediate, false).await else {
        return;
    };
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = run_bounded(power_loop, stop, Duration::from_secs(60)).await;
    assert!(
        matches!(outcome, LoopOutcome::PoweredOff { .. }),
        "{outcome:?}"
    );
    assert!(r.log.contains("poweroff"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_power_off_command_is_reported() {
    let seq = sequence(
        "OB DISCHRG LB",
        "ups.status: OB DISCHRG LB\nbattery.charge: 10\n",
    );
    let Some(mut r) = rig(&seq, QuiesceBehaviour::Immediate, true).await else {
        return;
    };
    r.cfg.shutdown.command = vec!["/bin/false".into()];
    let power_loop = PowerLoop::new(r.cfg.clone(), nut_source(&r.cfg));
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = run_bounded(power_loop, stop, Duration::from_secs(60)).await;
    assert!(
        matches!(outcome, LoopOutcome::PowerOffFailed(_)),
        "{outcome:?}"
    );
}
