//! The power loop: read the source, decide, tell the daemon, pet the watchdog.
//!
//! It runs in its own process (`clinicbox power`) so a busy or hung daemon cannot stop it.
//! Talking to the daemon happens off the loop (a reporter task; the shutdown sequence in its
//! own task), so the loop keeps reading the source — and can cancel a shutdown when mains
//! returns — whatever the daemon does.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clinicbox_control::{ControlClient, PowerReport, PowerState};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::config::PowerConfig;
use crate::policy::{Assessment, Policy};
use crate::shutdown::{Shutdown, ShutdownOutcome};
use crate::source::{PowerSource, SourceError};
use crate::state::StateFile;
use clinicbox_process::Notifier;

/// Timeout for one report to the daemon.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// How the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum LoopOutcome {
    /// Asked to stop (SIGTERM); nothing was shut down by us.
    Stopped,
    /// The power-off command ran successfully.
    PoweredOff { load_cycle: Option<String> },
    /// The power-off command failed; the reason was logged.
    PowerOffFailed(String),
}

/// One power loop over one source.
pub struct PowerLoop<S> {
    cfg: PowerConfig,
    source: Arc<Mutex<S>>,
    describe: String,
    reports: watch::Sender<PowerReport>,
    watchdog: Option<Notifier>,
}

impl<S: PowerSource> PowerLoop<S> {
    pub fn new(cfg: PowerConfig, source: S) -> Self {
        let describe = source.describe();
        let (reports, _) = watch::channel(PowerReport {
            state: PowerState::Unknown,
            source: describe.clone(),
            charge_percent: None,
            runtime_s: None,
            on_battery_s: 0,
            detail: "Starting".into(),
            observed_at_unix_s: unix_now(),
        });
        PowerLoop {
            cfg,
            source: Arc::new(Mutex::new(source)),
            describe,
            reports,
            watchdog: None,
        }
    }

    /// Notify this watchdog instead of systemd's from the environment (tests).
    pub fn with_watchdog(mut self, watchdog: Notifier) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// Follow the loop's reports (tests, and anything in-process that wants them).
    pub fn subscribe(&self) -> watch::Receiver<PowerReport> {
        self.reports.subscribe()
    }

    /// Run until `stop` resolves or the box has been powered off.
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> LoopOutcome {
        let watchdog = self.watchdog.take().unwrap_or_else(Notifier::from_env);
        let cfg = &self.cfg;
        let poll = cfg.policy.poll_interval();
        let io_timeout = poll.max(Duration::from_secs(1)) * 2;
        let state = StateFile::new(&cfg.state_dir);
        let measured = state.measured_shutdown();
        let mut policy = Policy::new(&cfg.policy, measured, Instant::now());
        tracing::info!(
            power.source = %self.describe,
            runtime_floor_s = policy.runtime_floor().as_secs(),
            measured_shutdown_ms = measured.map(|d| d.as_millis() as u64),
            "power loop started: source {}, shuts down at {:.0}% charge or {} s runtime left",
            self.describe,
            cfg.policy.charge_floor_percent,
            policy.runtime_floor().as_secs()
        );

        let reporter = tokio::spawn(report_to_daemon(
            ControlClient::new(&cfg.control_socket, REPORT_TIMEOUT),
            self.reports.subscribe(),
            Duration::from_secs(cfg.policy.report_interval_s.max(1)),
        ));
        watchdog.ready(&format!("watching {}", self.describe));

        let (mains_tx, mains_rx) = watch::channel(false);
        let mut shutdown: Option<JoinHandle<ShutdownOutcome>> = None;
        let mut last_state = PowerState::Unknown;
        let mut last_error: Option<String> = None;
        // tokio's clock, so tests can step it; the policy keeps the wall clock's.
        let mut last_response = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);

        let outcome = loop {
            tokio::select! {
                _ = &mut stop => break LoopOutcome::Stopped,
                done = wait_shutdown(&mut shutdown) => {
                    shutdown = None;
                    match done {
                        ShutdownOutcome::Cancelled => {
                            policy.shutdown_cancelled();
                            tracing::warn!("back on mains: shutdown cancelled, daemon resumed");
                        }
                        ShutdownOutcome::PoweredOff { load_cycle } => {
                            break LoopOutcome::PoweredOff { load_cycle };
                        }
                        ShutdownOutcome::PowerOffFailed(e) => break LoopOutcome::PowerOffFailed(e),
                    }
                }
                _ = ticker.tick() => {
                    let read = tokio::time::timeout(io_timeout, async {
                        self.source.lock().await.read().await
                    })
                    .await;
                    let mut absent = false;
                    let reading = match read {
                        Ok(Ok(r)) => {
                            last_response = tokio::time::Instant::now();
                            if last_error.take().is_some() {
                                tracing::info!(power.source = %self.describe, "power source answers again ({})", r.raw_status);
                            }
                            Some(r)
                        }
                        Ok(Err(e)) => {
                            // An answer, even an error, means the loop and the source's I/O work.
                            if !matches!(e, SourceError::Stuck(_)) {
                                last_response = tokio::time::Instant::now();
                            }
                            absent = matches!(e, SourceError::Absent(_));
                            note_error(&mut last_error, &self.describe, &e.to_string());
                            None
                        }
                        Err(_) => {
                            note_error(&mut last_error, &self.describe, "read timed out");
                            None
                        }
                    };
                    if let Some(r) = &reading {
                        tracing::debug!(power.status = %r.raw_status, charge = ?r.charge_percent, "reading");
                    }
                    let mut a = policy.observe(Instant::now(), reading.as_ref());
                    if absent && a.state == PowerState::Unknown {
                        a.detail = format!(
                            "No UPS found ({}): the box runs without battery protection",
                            last_error.as_deref().unwrap_or("not there")
                        );
                    }
                    mains_tx.send_replace(a.mains_back);
                    if a.state != last_state {
                        log_transition(last_state, &a);
                        watchdog.status(&a.detail);
                        last_state = a.state;
                    }
                    if let Some(reason) = &a.decided
                        && shutdown.is_none()
                    {
                        tracing::error!(power.reason = %reason, "power critical: {reason}");
                        policy.begin_shutdown();
                        let job = Shutdown {
                            cfg: cfg.shutdown.clone(),
                            reason: reason.clone(),
                            control: ControlClient::new(&cfg.control_socket, REPORT_TIMEOUT),
                            source: self.source.clone(),
                            mains_back: mains_rx.clone(),
                            state: state.clone(),
                        };
                        shutdown = Some(tokio::spawn(job.run()));
                    }
                    let shown = if shutdown.is_some() { PowerState::ShuttingDown } else { a.state };
                    self.reports.send_replace(self.report(&a, shown));
                    // Healthy = the source has answered recently; a wedged bus or a stuck read
                    // stops the petting and lets systemd restart this process.
                    if last_response.elapsed() <= io_timeout * 3 {
                        watchdog.pet();
                    }
                }
            }
        };
        watchdog.stopping();
        reporter.abort();
        outcome
    }

    fn report(&self, a: &Assessment, state: PowerState) -> PowerReport {
        PowerReport {
            state,
            source: self.describe.clone(),
            charge_percent: a.charge_percent.map(|c| (c * 10.0).round() / 10.0),
            runtime_s: a.runtime.map(|r| r.as_secs()),
            on_battery_s: a.on_battery_for.as_secs(),
            detail: a.detail.clone(),
            observed_at_unix_s: unix_now(),
        }
    }
}

async fn wait_shutdown(job: &mut Option<JoinHandle<ShutdownOutcome>>) -> ShutdownOutcome {
    match job {
        Some(handle) => match handle.await {
            Ok(outcome) => outcome,
            Err(e) => ShutdownOutcome::PowerOffFailed(format!("shutdown task failed: {e}")),
        },
        None => std::future::pending().await,
    }
}

fn note_error(last: &mut Option<String>, source: &str, msg: &str) {
    // Log each new kind of failure once, not every poll.
    if last.as_deref() != Some(msg) {
        tracing::warn!(power.source = %source, error = %msg, "cannot read power source {source}: {msg}");
        *last = Some(msg.to_string());
    }
}

fn log_transition(from: PowerState, a: &Assessment) {
    match a.state {
        PowerState::OnBattery | PowerState::Critical | PowerState::ShuttingDown => tracing::warn!(
            power.state = %a.state,
            "power: {from} -> {}: {}",
            a.state,
            a.detail
        ),
        _ => tracing::info!(power.state = %a.state, "power: {from} -> {}: {}", a.state, a.detail),
    }
}

async fn report_to_daemon(
    mut client: ControlClient,
    mut reports: watch::Receiver<PowerReport>,
    every: Duration,
) {
    let mut failing = false;
    let mut last_sent: Option<PowerReport> = None;
    loop {
        let report = reports.borrow_and_update().clone();
        // Unchanged apart from the timestamp: wait for the heartbeat instead.
        let same = last_sent.as_ref().is_some_and(|l| {
            l.state == report.state
                && l.detail == report.detail
                && l.charge_percent == report.charge_percent
        });
        if !same || failing {
            match client.report_power(report.clone()).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("daemon reachable again on {}", client.path().display());
                    }
                    failing = false;
                    last_sent = Some(report);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot report power state to the daemon: {e}");
                    }
                    failing = true;
                }
            }
        }
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(every) => { last_sent = None; }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
