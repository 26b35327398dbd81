//! The long-running uplink: a round when the WAN link comes up, then every `interval_secs`;
//! after a failure, exponential backoff with jitter; paused on battery if configured.

use std::collections::BTreeMap;
use std::time::Duration;

use clinicbox_control::outbox::{ObjectKind, UplinkReport};
use clinicbox_process::{Notifier, Signals};

use crate::config::OnBattery;
use crate::local::LocalBox;
use crate::national::National;
use crate::{UplinkConfig, UplinkError, round};

/// How often the link, the battery and the watchdog are looked at while waiting.
const TICK: Duration = Duration::from_secs(2);
/// How often a paused uplink looks whether mains power is back.
const BATTERY_CHECK: Duration = Duration::from_secs(10);
/// The first wait after a failed round.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);

/// What the daemon loop needs besides the configuration.
pub struct Daemon {
    pub cfg: UplinkConfig,
    /// The LAN interface, never counted as a WAN link.
    pub lan_interface: Option<String>,
    pub notifier: Notifier,
}

/// Whether a WAN link is up: a default route via `[uplink] interface`, or with `any` via any
/// interface but the LAN and loopback.
pub fn link_up(interface: &str, lan: Option<&str>) -> bool {
    clinicbox_discovery::lan::default_route_interfaces()
        .iter()
        .any(|i| match interface {
            "any" => Some(i.as_str()) != lan && i != "lo",
            want => i == want,
        })
}

/// `base * 2^failures`, capped, then scaled by a random factor in [0.5, 1.5) so a fleet that
/// lost national at once does not come back at once.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = FIRST_BACKOFF.saturating_mul(1u32 << failures.min(16));
    let capped = exp.min(max.max(FIRST_BACKOFF));
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let jitter = 0.5 + f64::from(u16::from_le_bytes(b)) / 65536.0;
    capped.mul_f64(jitter)
}

/// Stops a background task when the daemon's run ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Daemon {
    /// Runs until SIGTERM/SIGINT.
    pub async fn run(self, mut signals: Signals) -> Result<(), UplinkError> {
        let local = LocalBox::new(&self.cfg.socket);
        let mut report = UplinkReport {
            state: "starting".into(),
            ..UplinkReport::default()
        };
        // Without a national to send to, stay up and say why (a unit that exits would be
        // restarted forever, and the status page would only say "not running").
        let national = match National::from_config(&self.cfg) {
            Ok(n) => std::sync::Arc::new(n),
            Err(e) => {
                let state = format!("not configured: {e}");
                tracing::warn!("uplink {state}");
                self.notifier.ready(&state);
                return self.idle(&local, &mut report, &state, &mut signals).await;
            }
        };
        let relay = tokio::spawn(crate::logins::relay(
            local.clone(),
            national.clone(),
            self.cfg.interface.clone(),
            self.lan_interface.clone(),
        ));
        let _relay = AbortOnDrop(relay);
        self.notifier.ready("waiting for the WAN link");
        self.set_state(&local, &mut report, "waiting for the WAN link")
            .await;
        let mut failures = 0u32;
        let mut size = round::BatchSize::new(self.cfg.batch_bytes);
        let mut was_up = false;
        let mut wait = Duration::ZERO;
        let mut last_check_in = None;
        let mut updates = match crate::update::Checker::from_config(&self.cfg) {
            Ok(checker) => checker.map(UpdateSchedule::new),
            Err(e) => {
                tracing::warn!("updates are off: {e}");
                report.update = Some(format!("off: {e}"));
                None
            }
        };
        loop {
            if !self
                .wait_for_link(&local, &mut report, &mut signals, &mut was_up, wait)
                .await
            {
                return self.stop(&local, &mut report).await;
            }
            if self.cfg.on_battery == OnBattery::Pause
                && local.position().await.is_ok_and(|p| p.on_battery)
            {
                self.set_state(&local, &mut report, "paused: the box runs on battery")
                    .await;
                wait = BATTERY_CHECK;
                continue;
            }
            self.set_state(&local, &mut report, "sending").await;
            let check_in = self.cfg.check_in_secs > 0
                && last_check_in.is_none_or(|t: tokio::time::Instant| {
                    t.elapsed() >= Duration::from_secs(self.cfg.check_in_secs)
                });
            let round = round::run(&local, &national, &mut size, self.cfg.pull_plan(), check_in);
            let Some(result) = self.petting(round, &mut signals).await else {
                return self.stop(&local, &mut report).await;
            };
            let (sent, received) = national.bytes();
            report.bytes_sent = sent;
            report.bytes_received = received;
            match result {
                Ok(summary) => {
                    failures = 0;
                    if summary.checked_in {
                        last_check_in = Some(tokio::time::Instant::now());
                    }
                    add_pushed(&mut report.pushed, &summary.pushed);
                    let national_now = summary.national_now();
                    if let (Some(u), Some(wanted)) =
                        (updates.as_mut(), crate::update::wanted_from(&summary))
                    {
                        u.want(wanted);
                    }
                    report.national_version = summary.national.map(|n| n.version);
                    report.clock_skew_secs = summary.clock_skew_secs;
                    report.last_success_ms = Some(now_ms());
                    report.last_error = None;
                    if let Some(u) = updates
                        .as_mut()
                        .filter(|u| u.due(self.cfg.update.check_secs))
                    {
                        self.set_state(&local, &mut report, "checking for an update")
                            .await;
                        let pass = u.checker.pass(national_now, u.wanted.as_ref());
                        let Some(result) = self.petting(pass, &mut signals).await else {
                            return self.stop(&local, &mut report).await;
                        };
                        report.update = Some(crate::update::describe(&result));
                        u.done(&result);
                    }
                    wait = Duration::from_secs(self.cfg.interval_secs.max(1));
                    self.set_state(&local, &mut report, "idle").await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "uplink round failed: {e}");
                    report.last_error = Some(e.to_string());
                    wait = match e {
                        // Retrying will not help until someone fixes the credentials or
                        // national; try again at the normal pace, not faster.
                        UplinkError::Unauthorized(_) | UplinkError::Unsupported(_) => {
                            Duration::from_secs(self.cfg.interval_secs.max(60))
                        }
                        _ => backoff(failures, Duration::from_secs(self.cfg.max_backoff_secs)),
                    };
                    failures = failures.saturating_add(1);
                    let state = format!("backing off {} s", wait.as_secs());
                    self.set_state(&local, &mut report, &state).await;
                }
            }
        }
    }

    /// Runs `work` to its end, petting the watchdog meanwhile (every request in it has a
    /// timeout, so it always moves, but a round or a download on a slow link outlasts
    /// WatchdogSec); `None` when a stop signal came first.
    async fn petting<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        signals: &mut Signals,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => return Some(r),
                _ = signals.recv() => return None,
                _ = tokio::time::sleep(TICK) => self.notifier.pet(),
            }
        }
    }

    /// Waits out `wait` while the WAN link is up, or until it comes up (then at once), petting
    /// the watchdog; false when a stop signal came first.
    async fn wait_for_link(
        &self,
        local: &LocalBox,
        report: &mut UplinkReport,
        signals: &mut Signals,
        was_up: &mut bool,
        wait: Duration,
    ) -> bool {
        let mut waited = Duration::ZERO;
        loop {
            self.notifier.pet();
            let up = link_up(&self.cfg.interface, self.lan_interface.as_deref());
            if up && (!*was_up || waited >= wait) {
                *was_up = true;
                return true;
            }
            if !up && *was_up {
                self.set_state(local, report, "waiting for the WAN link")
                    .await;
            }
            *was_up = up;
            // serve keeps reports in memory: say it again now and then, in case it restarted.
            if waited.as_secs() % 60 == 0 && !waited.is_zero() {
                local.report(report).await;
            }
            tokio::select! {
                _ = signals.recv() => return false,
                _ = tokio::time::sleep(TICK) => waited += TICK,
            }
        }
    }

    /// Stays up, petting the watchdog and reporting `state`, until a stop signal.
    async fn idle(
        &self,
        local: &LocalBox,
        report: &mut UplinkReport,
        state: &str,
        signals: &mut Signals,
    ) -> Result<(), UplinkError> {
        let mut ticks = 0u64;
        loop {
            if ticks % 30 == 0 {
                self.set_state(local, report, state).await;
            }
            ticks += 1;
            self.notifier.pet();
            tokio::select! {
                _ = signals.recv() => return self.stop(local, report).await,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn set_state(&self, local: &LocalBox, report: &mut UplinkReport, state: &str) {
        report.state = state.to_string();
        self.notifier.status(state);
        local.report(report).await;
    }

    async fn stop(&self, local: &LocalBox, report: &mut UplinkReport) -> Result<(), UplinkError> {
        self.notifier.stopping();
        self.set_state(local, report, "stopped").await;
        Ok(())
    }
}

/// When the next update pass is due: every `check_secs`, and at the next round while a
/// download is unfinished (cut, paused or corrupt: it resumes or starts over).
struct UpdateSchedule {
    checker: crate::update::Checker,
    last: Option<tokio::time::Instant>,
    unfinished: bool,
    /// The release a remote admin pinned, as the last check-in applied it.
    wanted: Option<semver::Version>,
}

impl UpdateSchedule {
    fn new(checker: crate::update::Checker) -> UpdateSchedule {
        UpdateSchedule {
            checker,
            last: None,
            unfinished: false,
            wanted: None,
        }
    }

    /// A new pin is acted on at once, not at the next `check_secs`.
    fn want(&mut self, wanted: Option<semver::Version>) {
        if wanted != self.wanted {
            self.wanted = wanted;
            self.last = None;
        }
    }

    fn due(&self, check_secs: u64) -> bool {
        self.unfinished
            || self
                .last
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(check_secs))
    }

    fn done(&mut self, result: &Result<crate::update::Staged, crate::update::StageError>) {
        use crate::update::StageError;
        self.last = Some(tokio::time::Instant::now());
        self.unfinished = matches!(
            result,
            Err(StageError::Mirror(_) | StageError::Paused { .. } | StageError::Corrupt(_))
        );
    }
}

fn add_pushed(total: &mut BTreeMap<ObjectKind, u64>, round: &BTreeMap<ObjectKind, u64>) {
    for (k, n) in round {
        *total.entry(*k).or_default() += n;
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half_to_one_and_a_half() {
        let max = Duration::from_secs(1800);
        for failures in 0..30 {
            let base = FIRST_BACKOFF.saturating_mul(1 << failures.min(16)).min(max);
            let b = backoff(failures, max);
            assert!(
                b >= base.mul_f64(0.5) && b < base.mul_f64(1.5),
                "{failures}: {b:?}"
            );
        }
    }
}
