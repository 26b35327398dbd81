//! systemd integration: readiness, status and the service watchdog. Every call is a no-op
//! (logged once) when the process was not started by systemd.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd (if it is listening) that the service is ready, with a status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the status line `systemctl status` shows.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// The interval at which to pet the watchdog (half of `WatchdogSec`), if one is configured.
pub fn watchdog_interval() -> Option<Duration> {
    // `watchdog_enabled` checks WATCHDOG_PID against our pid, so a child never pets our dog.
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Pets the watchdog.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}
