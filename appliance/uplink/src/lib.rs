#![doc = include_str!("../README.md")]

pub mod approvals;
pub mod config;
pub mod daemon;
pub mod data;
pub mod fleet;
pub mod local;
pub mod logins;
pub mod national;
pub mod outcome;
pub mod owners;
pub mod pull;
pub mod reserved;
pub mod round;
pub mod scope;
pub mod update;

pub use config::{OnBattery, UpdateConfig, UplinkConfig};
pub use daemon::Daemon;
pub use local::LocalBox;
pub use national::National;
pub use round::RoundSummary;

/// Why a round (or the uplink) stopped. Every message is one line a technician can act on;
/// none carries a token, a password or patient data.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("national is unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("national's answer was not understood: {0}")]
    Protocol(String),
    #[error("national refused a request as too large (HTTP 413)")]
    TooLarge,
    #[error("the box: {0}")]
    Local(String),
    #[error("another uplink round moved the position: {0}")]
    Moved(String),
}

/// `clinicbox uplink --once`: one round against national, without waiting for a link.
pub async fn run_once(cfg: &UplinkConfig) -> Result<RoundSummary, UplinkError> {
    let national = National::from_config(cfg)?;
    let local = LocalBox::new(&cfg.socket);
    let mut size = round::BatchSize::new(cfg.batch_bytes);
    let check_in = cfg.check_in_secs > 0;
    let mut result = round::run(&local, &national, &mut size, cfg.pull_plan(), check_in).await;
    if let Ok(summary) = &mut result {
        summary.update = match update::Checker::from_config(cfg) {
            Ok(Some(mut checker)) => {
                let wanted = update::wanted_from(summary).flatten();
                let pass = checker.pass(summary.national_now(), wanted.as_ref()).await;
                Some(update::describe(&pass))
            }
            Ok(None) => None,
            Err(e) => Some(format!("off: {e}")),
        };
    }
    let (sent, received) = national.bytes();
    let report = clinicbox_control::outbox::UplinkReport {
        state: if result.is_ok() {
            "idle".into()
        } else {
            "failed".into()
        },
        last_error: result.as_ref().err().map(ToString::to_string),
        last_success_ms: result.as_ref().ok().map(|_| daemon::now_ms()),
        national_version: result
            .as_ref()
            .ok()
            .and_then(|s| s.national.as_ref().map(|n| n.version.clone())),
        bytes_sent: sent,
        bytes_received: received,
        pushed: result
            .as_ref()
            .map(|s| s.pushed.clone())
            .unwrap_or_default(),
        clock_skew_secs: result.as_ref().ok().and_then(|s| s.clock_skew_secs),
        update: result.as_ref().ok().and_then(|s| s.update.clone()),
    };
    local.report(&report).await;
    result
}
