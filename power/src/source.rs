//! The one small trait every power source implements, and the source chosen by configuration.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::config::{PowerConfig, SourceConfig};
use crate::gauge::{GaugeSource, Ina219Gauge, Max1704xGauge};
use crate::nut::NutSource;
use crate::reading::{Line, Reading};
use crate::sysfs::SysfsSource;

/// Why a source could not be read or could not carry out a command.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the power source: {0}")]
    Unreachable(String),
    /// A read did not come back in time (a wedged I2C bus); the loop stops petting the
    /// watchdog while this lasts.
    #[error("the power source does not answer: {0}")]
    Stuck(String),
    /// The source answered but its data is stale or not there yet (NUT `DATA-STALE`,
    /// `DRIVER-NOT-CONNECTED`).
    #[error("the power source has no current data: {0}")]
    NoData(String),
    #[error("the power source refused: {0}")]
    Refused(String),
    /// The configured source is not there at all (a UPS HAT not fitted).
    #[error("no UPS gauge found: {0}")]
    Absent(String),
    #[error("this power source cannot {0}")]
    Unsupported(&'static str),
    #[error("power source I/O error: {0}")]
    Io(String),
}

/// A power source: something that says whether mains is present and how much battery is left.
///
/// Only `read` is required. Sources that can act on the UPS (NUT) override the rest.
pub trait PowerSource: Send + 'static {
    /// A short name for logs and the status page, e.g. `nut:ups@127.0.0.1:3493`.
    fn describe(&self) -> String;

    /// Read the current state. Must not block for longer than the source's own I/O timeout.
    fn read(&mut self) -> impl Future<Output = Result<Reading, SourceError>> + Send;

    /// Tell the other hosts on this UPS to shut down (NUT primary: `FSD`).
    fn set_forced_shutdown(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send {
        async { Err(SourceError::Unsupported("set FSD")) }
    }

    /// Other hosts still attached to the UPS, not counting this one (NUT `NUMLOGINS` - 1).
    fn other_hosts(&mut self) -> impl Future<Output = Result<u32, SourceError>> + Send {
        async { Ok(0) }
    }

    /// Ask the UPS to cut the load and restore it when mains returns. Tries `commands` in
    /// order; returns the one that was accepted.
    fn cycle_load(
        &mut self,
        commands: &[String],
    ) -> impl Future<Output = Result<String, SourceError>> + Send {
        let _ = commands;
        async { Err(SourceError::Unsupported("cycle the load")) }
    }
}

/// A box without a UPS: always on line, never critical.
#[derive(Debug, Default)]
pub struct NoSource;

impl PowerSource for NoSource {
    fn describe(&self) -> String {
        "none".into()
    }
    async fn read(&mut self) -> Result<Reading, SourceError> {
        let mut r = Reading::unknown("no power source configured");
        r.line = Line::Online;
        Ok(r)
    }
}

/// The source chosen by `[power.source]`.
pub enum AnySource {
    Nut(NutSource),
    Sysfs(SysfsSource),
    Ina219(GaugeSource<Ina219Gauge<linux_embedded_hal::I2cdev>>),
    Max1704x(GaugeSource<Max1704xGauge<linux_embedded_hal::I2cdev>>),
    None(NoSource),
    /// A gauge whose I2C bus is not there (a Pi running without its UPS HAT, or before the
    /// I2C driver loaded): looked for again every [`absent_retry`] until it appears.
    Absent(AbsentSource),
}

/// How often a missing I2C bus is looked for again: every 15 polls (30 s by default).
pub fn absent_retry(cfg: &PowerConfig) -> Duration {
    cfg.policy.poll_interval() * 15
}

/// The configured gauge, not yet found.
pub struct AbsentSource {
    cfg: PowerConfig,
    error: String,
    retry_at: Instant,
}

impl AbsentSource {
    /// Try again once the retry time has come: the opened source, or why not (yet).
    fn reopen(&mut self) -> Result<AnySource, SourceError> {
        if Instant::now() < self.retry_at {
            return Err(SourceError::Absent(self.error.clone()));
        }
        self.retry_at = Instant::now() + absent_retry(&self.cfg);
        match AnySource::open_present(&self.cfg) {
            Ok(source) => Ok(source),
            Err(OpenError::BusMissing(e)) => {
                self.error = e;
                Err(SourceError::Absent(self.error.clone()))
            }
            Err(OpenError::Source(e)) => Err(e),
        }
    }
}

/// Why [`AnySource::open_present`] failed.
enum OpenError {
    /// The I2C bus device is not there; worth waiting for.
    BusMissing(String),
    /// Anything else: a configuration mistake.
    Source(SourceError),
}

impl From<SourceError> for OpenError {
    fn from(e: SourceError) -> Self {
        OpenError::Source(e)
    }
}

impl AnySource {
    /// Open the configured source. Configuration mistakes fail here, at start-up, loudly. A
    /// gauge whose I2C bus does not exist is not a mistake the daemon can fix by restarting:
    /// the box runs on without battery protection (the loop reports the power state as
    /// unknown, the status page says why) and looks for the bus again every [`absent_retry`].
    pub fn open(cfg: &PowerConfig) -> Result<Self, SourceError> {
        match Self::open_present(cfg) {
            Ok(source) => Ok(source),
            Err(OpenError::Source(e)) => Err(e),
            Err(OpenError::BusMissing(error)) => {
                tracing::warn!(
                    error = %error,
                    "the configured UPS gauge is not there ({error}); running without battery \
                     protection, looking for it again every {} s",
                    absent_retry(cfg).as_secs()
                );
                Ok(AnySource::Absent(AbsentSource {
                    cfg: cfg.clone(),
                    error,
                    retry_at: Instant::now() + absent_retry(cfg),
                }))
            }
        }
    }

    fn open_present(cfg: &PowerConfig) -> Result<Self, OpenError> {
        let poll = cfg.policy.poll_interval();
        Ok(match &cfg.source {
            SourceConfig::Nut(n) => AnySource::Nut(NutSource::new(n.clone())?),
            SourceConfig::Sysfs(s) => AnySource::Sysfs(SysfsSource::new(s.clone())),
            SourceConfig::Ina219(c) => {
                let bus = open_i2c(&c.bus)?;
                let gauge = Ina219Gauge::new(bus, c)?;
                AnySource::Ina219(GaugeSource::new(
                    gauge,
                    c.online_path.clone(),
                    io_timeout(poll),
                ))
            }
            SourceConfig::Max1704x(c) => {
                let bus = open_i2c(&c.bus)?;
                let gauge = Max1704xGauge::new(bus, c);
                AnySource::Max1704x(GaugeSource::new(
                    gauge,
                    c.online_path.clone(),
                    io_timeout(poll),
                ))
            }
            SourceConfig::None => AnySource::None(NoSource),
        })
    }
}

fn io_timeout(poll: Duration) -> Duration {
    poll.max(Duration::from_secs(2))
}

fn open_i2c(path: &std::path::Path) -> Result<linux_embedded_hal::I2cdev, OpenError> {
    if !path.exists() {
        return Err(OpenError::BusMissing(format!(
            "no I2C bus {}",
            path.display()
        )));
    }
    linux_embedded_hal::I2cdev::new(path)
        .map_err(|e| SourceError::Io(format!("cannot open I2C bus {}: {e}", path.display())).into())
}

impl PowerSource for AnySource {
    fn describe(&self) -> String {
        match self {
            AnySource::Nut(s) => s.describe(),
            AnySource::Sysfs(s) => s.describe(),
            AnySource::Ina219(s) => s.describe(),
            AnySource::Max1704x(s) => s.describe(),
            AnySource::None(s) => s.describe(),
            AnySource::Absent(a) => match a.cfg.source {
                SourceConfig::Ina219(_) => "i2c:ina219".into(),
                SourceConfig::Max1704x(_) => "i2c:max1704x".into(),
                _ => "absent".into(),
            },
        }
    }
    async fn read(&mut self) -> Result<Reading, SourceError> {
        if let AnySource::Absent(a) = self {
            *self = a.reopen()?;
            tracing::info!(power.source = %self.describe(), "the UPS gauge has appeared");
        }
        match self {
            AnySource::Nut(s) => s.read().await,
            AnySource::Sysfs(s) => s.read().await,
            AnySource::Ina219(s) => s.read().await,
            AnySource::Max1704x(s) => s.read().await,
            AnySource::None(s) => s.read().await,
            AnySource::Absent(a) => Err(SourceError::Absent(a.error.clone())),
        }
    }
    async fn set_forced_shutdown(&mut self) -> Result<(), SourceError> {
        match self {
            AnySource::Nut(s) => s.set_forced_shutdown().await,
            _ => Err(SourceError::Unsupported("set FSD")),
        }
    }
    async fn other_hosts(&mut self) -> Result<u32, SourceError> {
        match self {
            AnySource::Nut(s) => s.other_hosts().await,
            _ => Ok(0),
        }
    }
    async fn cycle_load(&mut self, commands: &[String]) -> Result<String, SourceError> {
        match self {
            AnySource::Nut(s) => s.cycle_load(commands).await,
            _ => Err(SourceError::Unsupported("cycle the load")),
        }
    }
}
