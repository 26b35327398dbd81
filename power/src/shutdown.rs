//! The shutdown sequence, every step with a deadline.
//!
//! 1. Ask the daemon to quiesce (503 + `Retry-After` for writes, drain, close the store).
//!    A hung or absent daemon costs at most the deadline.
//! 2. `sync(2)`, bounded.
//! 3. If mains is back and the reason allows it (not FSD): cancel — resume the daemon, return.
//!    **Point of no return** after this check.
//! 4. As NUT primary: set FSD so the other hosts on the UPS shut down; wait (bounded) until they
//!    have logged out (NUT HOSTSYNC).
//! 5. Record how long this took, for the next runtime floor.
//! 6. Command the UPS to cycle the load (`shutdown.return`): it cuts power after its own delay
//!    and restores it when mains returns, so the box always boots again, even when mains came
//!    back in the meantime (`nut#3229`, `nut#1950`).
//! 7. `sync(2)` again, then run the power-off command (like upsmon's SHUTDOWNCMD).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clinicbox_control::ControlClient;
use tokio::sync::{Mutex, watch};

use crate::config::ShutdownConfig;
use crate::policy::CriticalReason;
use crate::source::{PowerSource, SourceError};
use crate::state::StateFile;

/// How the sequence ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ShutdownOutcome {
    /// The power-off command was run and returned success.
    PoweredOff {
        /// The load-cycle command the UPS accepted, if any.
        load_cycle: Option<String>,
    },
    /// Mains returned before the point of no return; the daemon was resumed.
    Cancelled,
    /// The power-off command failed or timed out.
    PowerOffFailed(String),
}

/// Everything the sequence needs.
pub struct Shutdown<S> {
    pub cfg: ShutdownConfig,
    pub reason: CriticalReason,
    pub control: ControlClient,
    pub source: Arc<Mutex<S>>,
    /// True while mains is confirmed back (from the power loop's policy).
    pub mains_back: watch::Receiver<bool>,
    pub state: StateFile,
}

impl<S: PowerSource> Shutdown<S> {
    pub async fn run(mut self) -> ShutdownOutcome {
        let started = Instant::now();
        let reason = self.reason.to_string();
        tracing::warn!(power.reason = %reason, "shutdown sequence started: {reason}");

        // 1. Quiesce the daemon.
        let deadline = Duration::from_millis(self.cfg.quiesce_deadline_ms);
        match self.control.quiesce(deadline, &reason).await {
            Ok(o) => tracing::info!(
                elapsed_ms = o.elapsed_ms,
                drained = o.drained,
                "daemon quiesced in {} ms (drained: {})",
                o.elapsed_ms,
                o.drained
            ),
            Err(e) => tracing::error!(
                error = %e,
                "daemon did not quiesce ({e}); going on so the battery does not run out first"
            ),
        }
        if self.should_cancel() {
            return self.cancel().await;
        }

        // 2. Flush everything to the media.
        sync_within(Duration::from_millis(self.cfg.sync_deadline_ms)).await;
        if self.should_cancel() {
            return self.cancel().await;
        }
        tracing::warn!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "point of no return passed; the box powers off now"
        );

        // 4. Tell the other hosts on this UPS, and give them time to go down.
        self.sync_other_hosts().await;

        // 5. Remember how long a shutdown takes here.
        let measured = started.elapsed();
        if let Err(e) = self.state.record_shutdown(measured) {
            tracing::warn!(error = %e, "cannot record the shutdown time: {e}");
        }

        // 6. Make sure the box comes back.
        let load_cycle = self.cycle_load().await;

        // 7. Power off.
        sync_within(Duration::from_millis(self.cfg.sync_deadline_ms)).await;
        self.power_off(load_cycle).await
    }

    fn should_cancel(&self) -> bool {
        self.reason.cancellable() && *self.mains_back.borrow()
    }

    async fn cancel(&mut self) -> ShutdownOutcome {
        tracing::warn!("mains returned before the point of no return; shutdown cancelled");
        if let Err(e) = self.control.resume("mains returned").await {
            tracing::error!(error = %e, "daemon did not resume after the cancelled shutdown: {e}");
        }
        ShutdownOutcome::Cancelled
    }

    async fn sync_other_hosts(&mut self) {
        // The source is locked per call, not for the whole wait, so the power loop keeps
        // reading (and petting the watchdog) meanwhile.
        match self.source.lock().await.set_forced_shutdown().await {
            Ok(()) => tracing::info!("FSD set on the UPS for the other hosts"),
            Err(SourceError::Unsupported(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not set FSD on the UPS: {e}");
                return;
            }
        }
        let limit = Instant::now() + Duration::from_millis(self.cfg.host_sync_ms);
        loop {
            let others = self.source.lock().await.other_hosts().await;
            match others {
                Ok(0) => {
                    tracing::info!("no other hosts left on the UPS");
                    return;
                }
                Ok(n) if Instant::now() >= limit => {
                    tracing::warn!(
                        hosts = n,
                        "{n} other host(s) still on the UPS after {} ms; going on",
                        self.cfg.host_sync_ms
                    );
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count the other hosts: {e}");
                    return;
                }
            }
        }
    }

    async fn cycle_load(&mut self) -> Option<String> {
        let mut accepted = None;
        if !self.cfg.load_cycle_instcmds.is_empty() {
            let mut source = self.source.lock().await;
            match source.cycle_load(&self.cfg.load_cycle_instcmds).await {
                Ok(cmd) => {
                    tracing::info!(nut.instcmd = %cmd, "UPS accepted {cmd}: it will restore power when mains returns");
                    accepted = Some(cmd);
                }
                Err(SourceError::Unsupported(what)) => {
                    tracing::info!("this power source cannot {what}");
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "the UPS refused to cycle the load ({e}); if mains returns before the battery \
                     is empty the box may stay off until someone presses its power button"
                ),
            }
        }
        if !self.cfg.load_cycle_command.is_empty() {
            match run_command(&self.cfg.load_cycle_command, Duration::from_secs(10)).await {
                Ok(()) => {
                    tracing::info!("load-cycle command succeeded");
                    accepted.get_or_insert_with(|| self.cfg.load_cycle_command.join(" "));
                }
                Err(e) => tracing::error!(error = %e, "load-cycle command failed: {e}"),
            }
        }
        accepted
    }

    async fn power_off(&mut self, load_cycle: Option<String>) -> ShutdownOutcome {
        let timeout = Duration::from_millis(self.cfg.command_timeout_ms);
        let command = self.cfg.command.join(" ");
        tracing::warn!(command = %command, "running the power-off command: {command}");
        match run_command(&self.cfg.command, timeout).await {
            Ok(()) => ShutdownOutcome::PoweredOff { load_cycle },
            Err(e) => {
                tracing::error!(error = %e, "power-off command failed: {e}");
                ShutdownOutcome::PowerOffFailed(e)
            }
        }
    }
}

/// `sync(2)` on the blocking pool; a dead SD card can make it hang, so give up waiting after
/// `deadline` (the call itself cannot be cancelled).
pub async fn sync_within(deadline: Duration) {
    let started = Instant::now();
    let task = tokio::task::spawn_blocking(nix::unistd::sync);
    match tokio::time::timeout(deadline, task).await {
        Ok(_) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "filesystems synced"
        ),
        Err(_) => tracing::error!(
            "sync did not finish within {} s; going on",
            deadline.as_secs_f32()
        ),
    }
}

/// Run `argv` (no shell) and wait up to `timeout` for a zero exit.
pub async fn run_command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => {
            let _ = child.start_kill();
            Err(format!("{program} did not finish within {timeout:?}"))
        }
        Ok(Err(e)) => Err(format!("waiting for {program}: {e}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
    }
}
