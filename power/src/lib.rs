#![doc = include_str!("../README.md")]

pub mod config;
pub mod filter;
pub mod gauge;
pub mod nut;
pub mod policy;
pub mod reading;
pub mod runner;
pub mod shutdown;
pub mod source;
pub mod state;
pub mod sysfs;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use config::PowerConfig;
pub use reading::{Line, Reading};
pub use runner::{LoopOutcome, PowerLoop};
pub use source::{AnySource, PowerSource, SourceError};

/// Errors starting the power process.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the power source: {0}")]
    Source(#[from] SourceError),
}

/// What `clinicbox power` runs: open the configured source and run the power loop until
/// `stop` resolves or the box has been powered off.
pub async fn run(
    cfg: PowerConfig,
    stop: impl Future<Output = ()>,
) -> Result<LoopOutcome, PowerError> {
    cfg.validate()?;
    let source = AnySource::open(&cfg)?;
    Ok(PowerLoop::new(cfg, source).run(stop).await)
}

/// Load `[power]` from an optional hardware profile and the site config (see
/// [`PowerConfig::from_layers`]).
pub fn load_config(profile: Option<&Path>, site: Option<&Path>) -> Result<PowerConfig, PowerError> {
    Ok(PowerConfig::load(profile, site)?)
}

/// Where the image installs the board profile (`hw/<board>.toml`).
pub const DEFAULT_BOARD_PROFILE: &str = "/usr/lib/clinicbox/board.toml";
/// The site configuration.
pub const DEFAULT_SITE_CONFIG: &str = "/etc/clinicbox/clinicbox.toml";
/// After the power-off command succeeded, how long to wait for the system to stop this process
/// before giving up (and exiting with an error, so systemd restarts it and it tries again).
const POWER_OFF_GRACE: Duration = Duration::from_secs(300);

/// Config for `clinicbox power`: explicit paths, else the default paths that exist.
pub fn load_config_for(
    board: Option<&Path>,
    site: Option<&Path>,
) -> Result<PowerConfig, PowerError> {
    let existing = |p: &str| Some(PathBuf::from(p)).filter(|p| p.exists());
    let board = board
        .map(Path::to_path_buf)
        .or_else(|| existing(DEFAULT_BOARD_PROFILE));
    let site = site
        .map(Path::to_path_buf)
        .or_else(|| existing(DEFAULT_SITE_CONFIG));
    let shown = |p: &Option<PathBuf>| {
        p.as_deref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
    };
    let (board_shown, site_shown) = (shown(&board), shown(&site));
    tracing::info!(
        board = %board_shown,
        site = %site_shown,
        "power configuration from board profile {board_shown} and site config {site_shown}"
    );
    load_config(board.as_deref(), site.as_deref())
}

/// `clinicbox power`: run until SIGTERM/SIGINT. After a successful power-off command, keep
/// running (quietly, still READY) until the system stops the process, so that systemd does
/// not restart it into a second shutdown while the first one is under way.
pub async fn run_until_signal(cfg: PowerConfig) -> Result<LoopOutcome, PowerError> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signals =
        clinicbox_process::Signals::install().map_err(|e| SourceError::Io(e.to_string()))?;
    signals.on_first(move || {
        let _ = tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let outcome = run(cfg, stopped(rx.clone())).await?;
    if let LoopOutcome::PoweredOff { .. } = &outcome {
        tracing::warn!("power-off requested; waiting for the system to stop");
        let wd = clinicbox_process::Notifier::from_env();
        let wait = async {
            loop {
                wd.pet();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        };
        tokio::select! {
            _ = stopped(rx) => {}
            _ = tokio::time::timeout(POWER_OFF_GRACE, wait) => {
                return Ok(LoopOutcome::PowerOffFailed(format!(
                    "the system did not power off within {} s", POWER_OFF_GRACE.as_secs()
                )));
            }
        }
    }
    Ok(outcome)
}
