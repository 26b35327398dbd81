//! NUT as a power source: this box as a upsmon-style client of a `upsd` (its own, driving a
//! USB/serial UPS, or another host's).

mod client;
mod wire;

use std::time::Duration;

pub use client::{NutClient, NutError};
pub use wire::{quote, split};

use crate::config::{NutConfig, NutRole};
use crate::reading::Reading;
use crate::source::{PowerSource, SourceError};

/// A NUT UPS, read over one persistent connection that is re-established (and re-logged-in)
/// after any failure.
pub struct NutSource {
    cfg: NutConfig,
    password: Option<String>,
    conn: Option<NutClient>,
    logged_in: bool,
}

impl NutSource {
    /// Reads `password_file` if set; connects lazily on the first `read`.
    pub fn new(cfg: NutConfig) -> Result<Self, SourceError> {
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| SourceError::Io(format!("cannot read {}: {e}", path.display())))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(NutSource {
            cfg,
            password,
            conn: None,
            logged_in: false,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.io_timeout_ms)
    }

    async fn connection(&mut self) -> Result<&mut NutClient, SourceError> {
        if self.conn.is_none() {
            let mut c = NutClient::connect(&self.cfg.host, self.cfg.port, self.timeout())
                .await
                .map_err(|e| SourceError::Unreachable(e.to_string()))?;
            self.logged_in = false;
            if let Some(user) = &self.cfg.username {
                let pass = self.password.as_deref().unwrap_or_default();
                c.authenticate(user, pass)
                    .await
                    .map_err(|e| SourceError::Refused(format!("login as {user}: {e}")))?;
                // LOGIN makes the primary wait for this box before cutting power; without the
                // right it is only monitoring, which still works.
                match c.login(&self.cfg.ups).await {
                    Ok(()) => self.logged_in = true,
                    Err(e) => tracing::warn!(
                        nut.ups = %self.cfg.ups,
                        error = %e,
                        "LOGIN to UPS {} refused ({e}); monitoring only",
                        self.cfg.ups
                    ),
                }
                if self.cfg.role == NutRole::Primary
                    && let Err(e) = c.primary(&self.cfg.ups).await
                {
                    tracing::warn!(
                        nut.ups = %self.cfg.ups,
                        error = %e,
                        "PRIMARY on UPS {} refused ({e}); FSD will not reach other hosts",
                        self.cfg.ups
                    );
                }
            }
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SourceError::Unreachable("no connection".into()))
    }

    /// Map a client error, dropping the connection when it is no longer usable.
    fn fail(&mut self, e: NutError) -> SourceError {
        match e.code() {
            Some("DATA-STALE" | "DRIVER-NOT-CONNECTED") => SourceError::NoData(e.to_string()),
            Some(_) => SourceError::Refused(e.to_string()),
            None => {
                self.conn = None;
                SourceError::Unreachable(e.to_string())
            }
        }
    }

    /// A variable that may legitimately be missing (`VAR-NOT-SUPPORTED`).
    async fn optional_var(&mut self, var: &str) -> Result<Option<String>, SourceError> {
        let ups = self.cfg.ups.clone();
        let c = self.connection().await?;
        match c.get_var(&ups, var).await {
            Ok(v) => Ok(Some(v)),
            Err(NutError::Server(code)) if code == "VAR-NOT-SUPPORTED" => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl PowerSource for NutSource {
    fn describe(&self) -> String {
        format!("nut:{}@{}:{}", self.cfg.ups, self.cfg.host, self.cfg.port)
    }

    async fn read(&mut self) -> Result<Reading, SourceError> {
        let status = self
            .optional_var("ups.status")
            .await?
            .ok_or_else(|| SourceError::NoData("ups.status not supported".into()))?;
        let mut r = Reading::from_nut_status(&status);
        r.charge_percent = self
            .optional_var("battery.charge")
            .await?
            .and_then(|v| v.trim().parse().ok());
        r.runtime = self
            .optional_var("battery.runtime")
            .await?
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        r.voltage_v = self
            .optional_var("battery.voltage")
            .await?
            .and_then(|v| v.trim().parse().ok());
        Ok(r)
    }

    async fn set_forced_shutdown(&mut self) -> Result<(), SourceError> {
        if self.cfg.role != NutRole::Primary {
            return Err(SourceError::Unsupported("set FSD as a secondary"));
        }
        let ups = self.cfg.ups.clone();
        let c = self.connection().await?;
        match c.fsd(&ups).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn other_hosts(&mut self) -> Result<u32, SourceError> {
        let ups = self.cfg.ups.clone();
        let c = self.connection().await?;
        match c.num_logins(&ups).await {
            Ok(n) => Ok(n.saturating_sub(u32::from(self.logged_in))),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn cycle_load(&mut self, commands: &[String]) -> Result<String, SourceError> {
        if self.cfg.role != NutRole::Primary {
            return Err(SourceError::Unsupported(
                "cycle the load as a secondary (the primary does)",
            ));
        }
        let ups = self.cfg.ups.clone();
        let mut refusals = Vec::new();
        for cmd in commands {
            let c = self.connection().await?;
            match c.instcmd(&ups, cmd).await {
                Ok(()) => return Ok(cmd.clone()),
                Err(e) => {
                    refusals.push(format!("{cmd}: {e}"));
                    let e = self.fail(e);
                    if matches!(e, SourceError::Unreachable(_)) {
                        return Err(e);
                    }
                }
            }
        }
        Err(SourceError::Refused(refusals.join("; ")))
    }
}
