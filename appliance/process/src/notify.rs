//! systemd readiness, status and watchdog (sd_notify). Silent no-ops outside systemd.
//! One `Notifier` per process; pet it only from a loop iteration that proved the process
//! healthy, so a hung process stops petting and systemd restarts it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock: the real one in a process, a paused one in tests that step time.
use tokio::time::Instant;

use sd_notify::NotifyState;

#[derive(Debug)]
enum Target {
    /// `NOTIFY_SOCKET` from the environment (systemd), through sd-notify.
    Env,
    /// A datagram socket given explicitly (tests).
    Path(PathBuf),
    Off,
}

/// Notifies systemd; pets the watchdog at most four times per `WatchdogSec`.
#[derive(Debug)]
pub struct Notifier {
    target: Target,
    interval: Option<Duration>,
    last_pet: Mutex<Option<Instant>>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` / `WATCHDOG_USEC` as set by systemd.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let interval = sd_notify::watchdog_enabled();
        static SAID: std::sync::Once = std::sync::Once::new();
        if !enabled {
            SAID.call_once(|| {
                tracing::info!(
                    "NOTIFY_SOCKET not set: not running under systemd, skipping sd_notify"
                )
            });
        } else if let Some(i) = interval {
            tracing::info!(
                watchdog_ms = i.as_millis() as u64,
                "systemd watchdog armed ({} ms)",
                i.as_millis()
            );
        }
        Notifier {
            target: if enabled { Target::Env } else { Target::Off },
            interval,
            last_pet: Mutex::new(None),
        }
    }

    /// Notify a given datagram socket, as systemd's would be, with this watchdog interval.
    pub fn to_socket(path: impl Into<PathBuf>, interval: Duration) -> Self {
        Notifier {
            target: Target::Path(path.into()),
            interval: Some(interval),
            last_pet: Mutex::new(None),
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// How often a healthy loop should call [`Notifier::pet`] (a quarter of `WatchdogSec`), or
    /// `None` when no watchdog is armed.
    pub fn pet_interval(&self) -> Option<Duration> {
        self.interval.map(|i| i / 4)
    }

    /// Call only from a healthy loop iteration.
    pub fn pet(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let Ok(mut last) = self.last_pet.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < interval / 4) {
            return;
        }
        *last = Some(Instant::now());
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState]) {
        let result = match &self.target {
            Target::Off => Ok(()),
            Target::Env => sd_notify::notify(states),
            Target::Path(p) => {
                let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
                std::os::unix::net::UnixDatagram::unbound()
                    .and_then(|sock| sock.send_to(msg.as_bytes(), p).map(|_| ()))
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "sd_notify failed: {e}");
        }
    }
}
