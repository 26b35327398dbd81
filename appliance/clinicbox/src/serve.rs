//! `clinicbox serve`: open the store, serve HTTP, report to systemd, stop cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clinicbox_store::{NewKeySlot, Store, Unlock};

use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::unlock;

/// Where `--demo` keeps its data when no `--data-dir` is given: under the working directory.
pub const DEMO_DATA_DIR: &str = "demo-data";
/// The port `--demo` listens on (loopback) when no `--listen` is given.
pub const DEMO_PORT: u16 = 8080;

/// Command-line overrides for `serve`.
#[derive(Debug, Clone, Default)]
pub struct ServeOverrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Vec<SocketAddr>,
    pub demo: bool,
}

/// Applies `serve`'s command-line overrides (and the demo defaults) to a loaded configuration.
pub fn apply_overrides(mut cfg: Config, o: &ServeOverrides) -> Config {
    if o.demo {
        cfg.data_dir = PathBuf::from(DEMO_DATA_DIR);
        cfg.http.listen = vec![SocketAddr::from(([127, 0, 0, 1], DEMO_PORT))];
        cfg.store.credential = None;
        cfg.store.pin_file = None;
        cfg.store.key_file = None;
        cfg.box_info.name = "clinicbox-demo".into();
        cfg.box_info.clinic_name = "Riverside Clinic A (demo)".into();
    }
    if let Some(d) = &o.data_dir {
        cfg.data_dir = d.clone();
    }
    if !o.listen.is_empty() {
        cfg.http.listen = o.listen.clone();
    }
    if o.demo {
        cfg.store.key_file = Some(demo_key_path(&cfg.data_dir));
        crate::presence::demo_overrides(&mut cfg);
        // A demo box has no /run/clinicbox: keep its control socket next to its data.
        cfg.power.control_socket = cfg.data_dir.join("control.sock");
        cfg.uplink.socket = demo_uplink_socket(&cfg.data_dir);
    }
    cfg
}

/// Where a demo box (and `clinicbox uplink --demo` beside it) keeps the uplink socket.
pub fn demo_uplink_socket(data_dir: &Path) -> PathBuf {
    data_dir.join(clinicbox_control::outbox::DEMO_SOCKET_NAME)
}

fn demo_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo.key")
}

/// Runs the daemon until SIGTERM/SIGINT (or a shutdown request), then stops cleanly.
pub async fn run(cfg: Config, demo: bool) -> anyhow::Result<()> {
    // Before anything else: a SIGTERM that arrives while the store opens or the listeners
    // bind is held here and acted on once there is something to stop cleanly.
    let signals =
        clinicbox_process::Signals::install().context("installing the SIGTERM/SIGINT handlers")?;
    let notifier = Arc::new(clinicbox_process::Notifier::from_env());
    // The HTTP ports first: a port in use is said before anything is written (a demo would
    // otherwise create and fill a whole store, then fail).
    let mut listeners = Vec::new();
    for addr in &cfg.http.listen {
        let listener =
            crate::listen::bind(*addr).with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(listener);
    }
    if crate::backup::finish_restore(&cfg.data_dir)
        .with_context(|| format!("finishing a restore in {}", cfg.data_dir.display()))?
    {
        tracing::info!(
            "a backup restored on the first-setup page took the place of this box's data"
        );
    }
    let store = open_store(&cfg, demo).await?;
    if demo {
        crate::backup::recipients::demo_hq_identity(&cfg.data_dir)
            .context("writing the demo's HQ backup identity")?;
    }
    let api = clinicbox_api::ApiState::new(store.clone(), cfg.api.clone())
        .await
        .context("starting the DHIS2 API")?;
    if demo {
        load_demo(&api).await?;
    }
    let own_backup = crate::backup::InServe::new(store.clone(), &cfg, api.system_id());
    let tracker = clinicbox_tracker::Tracker::start(api.clone(), cfg.tracker.clone())
        .await
        .context("starting the tracker")?;
    let lc = Lifecycle::new(
        store.clone(),
        cfg.http.retry_after_secs,
        crate::lifecycle::BodyLimits {
            idle: Duration::from_secs(cfg.http.body_idle_secs.max(1)),
            max_bytes: cfg.http.max_body_bytes,
        },
    );
    {
        let lc = lc.clone();
        signals.on_first(move || lc.request_shutdown());
    }
    // The power process's latest report (control socket), for the status page.
    let power = PowerShared::default();

    // The uplink's socket: the outbox for `clinicbox uplink`, its reports for the status page.
    let outbox = crate::outbox::Outbox::new(tracker.clone());
    let uplink = crate::uplink_socket::UplinkShared::default();
    let remote = crate::fleet::RemoteNow::load(&store).context("reading remote settings")?;
    let presence = crate::presence::prepare(
        &cfg,
        &store,
        &api,
        crate::presence::PageSources {
            power: power_view(&power),
            uplink: crate::uplink_socket::view(outbox.clone(), uplink.clone()),
            restart: {
                let lc = lc.clone();
                Arc::new(move || lc.request_shutdown())
            },
            own_backup: own_backup.clone(),
            remote: remote.clone(),
        },
    )?;
    let fleet = crate::fleet::Fleet::new(
        store.clone(),
        presence.status().clone(),
        cfg.data_dir.clone(),
        remote.clone(),
    );
    spawn_uplink_socket(&cfg, &outbox, &api, &uplink, &power, &lc, fleet).await;
    let app = crate::app::router(crate::app::AppParts {
        lifecycle: lc.clone(),
        api,
        tracker: tracker.clone(),
        status: presence.status().clone(),
        limits: crate::app::RequestLimits {
            max_uri_bytes: cfg.http.max_uri_bytes,
        },
    });
    let limits = connection_limits(&cfg);
    let http = axum_server::Handle::new();
    let mut http_bound = Vec::new();
    let mut servers = Vec::new();
    for listener in listeners {
        let local = listener.local_addr()?;
        http_bound.push(local);
        tracing::info!(url = %format!("http://{local}/"), "serving HTTP");
        // Tests and technicians read this line; keep its shape.
        println!("ClinicBox: serving http://{local}/");
        let (app, handle) = (app.clone(), http.clone());
        servers.push(tokio::spawn(async move {
            crate::listen::serve_http(listener, app, handle, limits).await
        }));
    }

    // HTTPS, DNS-SD, LAN DNS and the status page (presence.rs).
    let presence = presence.start(app.clone(), &http_bound, limits).await?;

    spawn_watchdog(lc.clone(), notifier.clone());
    spawn_nightly_backup(&cfg, own_backup.clone(), lc.clone(), remote.clone());
    spawn_catalog_saves(tracker.clone(), lc.clone());
    spawn_control_socket(&cfg, lc.clone(), power.clone(), own_backup, remote).await;
    notifier.ready(&format!("serving {} listener(s)", servers.len()));
    if demo {
        println!(
            "ClinicBox demo: the store's key file is {} next to its data, for demonstration only.",
            demo_key_path(&cfg.data_dir).display()
        );
    }

    lc.shutdown_requested().await;
    notifier.stopping();
    tracing::info!("shutting down: finishing in-flight requests");
    // One deadline for the whole stop (`drain_secs`, below the unit's TimeoutStopSec), however
    // many slow clients hold connections open: each step gets what the earlier ones left.
    let stop_by = tokio::time::Instant::now() + Duration::from_secs(cfg.http.drain_secs);
    let left = || stop_by.saturating_duration_since(tokio::time::Instant::now());
    // HTTP and HTTPS drain together: running requests finish, idle and slow connections are
    // closed at the deadline.
    http.graceful_shutdown(Some(left()));
    presence.shutdown(left()).await;
    let drained = tokio::time::timeout(left(), futures_all(servers))
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            drain_secs = cfg.http.drain_secs,
            "requests still running at the drain deadline"
        );
    }
    // The next start reads the catalog back instead of every tracker record.
    match tokio::time::timeout(left(), tracker.save_catalog()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the tracker catalog was not saved"),
        Err(_) => tracing::warn!("the tracker catalog was not saved before the stop deadline"),
    }
    // The writes still running get what is left, and the store always gets its close.
    let report = lc.quiesce(left()).await;
    if !report.store_closed {
        anyhow::bail!("the store did not close cleanly");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn futures_all(handles: Vec<tokio::task::JoinHandle<std::io::Result<()>>>) {
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
            Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
        }
    }
}

/// The connection rules of every listener, from `[http]`.
fn connection_limits(cfg: &Config) -> crate::listen::ConnectionLimits {
    crate::listen::ConnectionLimits {
        header_timeout: Duration::from_secs(cfg.http.header_timeout_secs.max(1)),
    }
}

async fn open_store(cfg: &Config, demo: bool) -> anyhow::Result<Store> {
    let dir = cfg.data_dir.clone();
    let options = cfg.store.options();
    if demo && !Store::exists(&dir) {
        let key = demo_key_path(&dir);
        let store = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let slot = NewKeySlot::KeyFile {
                path: key,
                label: "demo (insecure: next to the data)".into(),
                create: true,
            };
            Store::create_with(&dir, slot, options)
                .map(|(s, _)| s)
                .map_err(anyhow::Error::from)
        })
        .await??;
        println!(
            "ClinicBox demo: created a new store in {}",
            cfg.data_dir.display()
        );
        return Ok(store);
    }
    let secret: Unlock = unlock::from_config(&cfg.store)?;
    let store = tokio::task::spawn_blocking(move || Store::open_with(&dir, &secret, options))
        .await?
        .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    Ok(store)
}

/// Loads the demo metadata, users and Android settings into a demo store (idempotent).
async fn load_demo(api: &clinicbox_api::ApiState) -> anyhow::Result<()> {
    let report = clinicbox_api::demo::load_demo(api)
        .await
        .context("loading the demo metadata")?;
    println!(
        "ClinicBox demo: metadata loaded ({}); users admin/district and android/Android123",
        clinicbox_api::admin::summarize(&report)
    );
    Ok(())
}

/// Pets systemd's watchdog while the runtime answers and the store's writer is alive; a hung or
/// broken daemon stops petting and systemd restarts it.
fn spawn_watchdog(lc: Arc<Lifecycle>, notifier: Arc<clinicbox_process::Notifier>) {
    let Some(every) = notifier.pet_interval() else {
        tracing::debug!("no systemd watchdog configured");
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if lc.store().is_healthy() {
                notifier.pet();
            } else {
                tracing::error!("store writer is not running; no longer petting the watchdog");
            }
        }
    });
}

/// The latest report from `clinicbox power`, shared between the control socket and the
/// status page.
pub type PowerShared = Arc<std::sync::Mutex<Option<clinicbox_control::PowerReport>>>;

/// The status page's view of [`PowerShared`] (`None` until the power process reports).
pub fn power_view(
    power: &PowerShared,
) -> clinicbox_statuspage::Source<Option<clinicbox_statuspage::PowerView>> {
    let power = power.clone();
    Arc::new(move || {
        let report = power
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        Some(clinicbox_statuspage::PowerView {
            state: report.state.label().to_string(),
            detail: Some(report.detail),
        })
    })
}

/// The daemon's side of the control socket: power reports go to the status page, quiesce and
/// resume to the lifecycle.
pub struct DaemonControl {
    lc: Arc<Lifecycle>,
    power: PowerShared,
    /// Snapshots of the store for `clinicbox backup`.
    backup: crate::backup::InServe,
    /// Remote settings, for the installer's maintenance window.
    remote: crate::fleet::RemoteNow,
}

impl DaemonControl {
    pub fn new(
        lc: Arc<Lifecycle>,
        power: PowerShared,
        backup: crate::backup::InServe,
        remote: crate::fleet::RemoteNow,
    ) -> Self {
        DaemonControl {
            lc,
            power,
            backup,
            remote,
        }
    }
}

impl clinicbox_control::ControlHandler for DaemonControl {
    async fn report_power(
        &self,
        report: clinicbox_control::PowerReport,
    ) -> Result<(), clinicbox_control::HandlerError> {
        let mut last = self
            .power
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_ref().map(|r| r.state) != Some(report.state) {
            tracing::info!(power.state = %report.state, "power: {}: {}", report.state, report.detail);
        }
        *last = Some(report);
        Ok(())
    }

    async fn quiesce(
        &self,
        deadline: Duration,
        reason: String,
    ) -> Result<clinicbox_control::QuiesceOutcome, clinicbox_control::HandlerError> {
        tracing::warn!(power.reason = %reason, "quiesce requested by the power process: {reason}");
        let report = self.lc.quiesce(deadline).await;
        if !report.store_closed {
            return Err(clinicbox_control::HandlerError(
                "the store did not close cleanly".into(),
            ));
        }
        Ok(clinicbox_control::QuiesceOutcome {
            elapsed_ms: u64::try_from(report.took.as_millis()).unwrap_or(u64::MAX),
            drained: report.abandoned_writes == 0,
        })
    }

    async fn resume(&self, reason: String) -> Result<(), clinicbox_control::HandlerError> {
        tracing::info!(power.reason = %reason, "resume requested by the power process: {reason}");
        self.lc
            .resume()
            .map_err(|e| clinicbox_control::HandlerError(e.to_string()))
    }

    async fn snapshot(
        &self,
    ) -> Result<clinicbox_control::SnapshotOutcome, clinicbox_control::HandlerError> {
        let own = self.backup.clone();
        tokio::task::spawn_blocking(move || own.snapshot())
            .await
            .map_err(|e| clinicbox_control::HandlerError(e.to_string()))?
            .map_err(|e| clinicbox_control::HandlerError(format!("{e:#}")))
    }

    async fn backup_written(
        &self,
        file: String,
        bytes: u64,
        at_ms: u64,
    ) -> Result<(), clinicbox_control::HandlerError> {
        let record = crate::backup::LastBackup::new(&file, bytes, at_ms);
        tracing::info!(bytes, folder = %record.folder, "backup written");
        self.lc
            .store()
            .write(move |ctx| record.put(ctx))
            .await
            .map(|_| ())
            .map_err(|e| clinicbox_control::HandlerError(e.to_string()))
    }

    async fn status(&self) -> clinicbox_control::DaemonStatus {
        clinicbox_control::DaemonStatus {
            version: clinicbox_process::running_release(),
            accepting_writes: self.lc.accepting_writes(),
            power: self
                .power
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            reboot_hours: self.remote.get().reboot_hours,
        }
    }
}

/// Offers the uplink socket; without it the box still serves tablets, and says why the uplink
/// cannot reach it.
async fn spawn_uplink_socket(
    cfg: &Config,
    outbox: &crate::outbox::Outbox,
    api: &clinicbox_api::ApiState,
    uplink: &crate::uplink_socket::UplinkShared,
    power: &PowerShared,
    lc: &Arc<Lifecycle>,
    fleet: crate::fleet::Fleet,
) {
    let power = power.clone();
    let on_battery: crate::uplink_socket::OnBattery = Arc::new(move || {
        power
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|r| r.state == clinicbox_control::PowerState::OnBattery)
    });
    // Staff accounts national sent log in the first time through the uplink.
    let relay = Arc::new(crate::relay::LoginRelay::new(api.store().clone()));
    api.check_passwords_with(relay.clone());
    let app = crate::uplink_socket::router(
        outbox.clone(),
        api.clone(),
        relay,
        uplink.clone(),
        on_battery,
        fleet,
    );
    let lc = lc.clone();
    let stop = async move { lc.shutdown_requested().await };
    let path = &cfg.uplink.socket;
    if let Err(e) =
        crate::uplink_socket::serve(path, cfg.uplink.socket_group.clone(), app, stop).await
    {
        tracing::error!(
            socket.path = %path.display(),
            error = %e,
            "no uplink socket ({e}): nothing can be sent to national"
        );
    }
}

/// Tracker records changed after the saved catalog that make saving it again worth a second of
/// writing: after a power cut the next start reads at most about this many records again.
const CATALOG_SAVE_AFTER_CHANGES: u64 = 20_000;
const CATALOG_SAVE_CHECK: Duration = Duration::from_secs(300);

/// Saves the tracker catalog while the box runs, so a power cut costs a short replay at the
/// next start rather than a read of every record.
fn spawn_catalog_saves(tracker: clinicbox_tracker::Tracker, lc: Arc<Lifecycle>) {
    tokio::spawn(async move {
        let stop = lc.shutdown_requested();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(CATALOG_SAVE_CHECK);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let due = tracker
                .changed_since_saved(CATALOG_SAVE_AFTER_CHANGES)
                .is_ok_and(|n| n >= CATALOG_SAVE_AFTER_CHANGES);
            if due && let Err(e) = tracker.save_catalog().await {
                tracing::warn!(error = %e, "the tracker catalog was not saved");
            }
        }
    });
}

/// The nightly backup to a stick left plugged in (`[backup] stick_folder`): in the hour
/// `[backup] nightly_hour` of the box's time zone, unless a backup was written in the last 12
/// hours. Checked every 10 minutes; a failure is logged and tried again the next night.
fn spawn_nightly_backup(
    cfg: &Config,
    own: crate::backup::InServe,
    lc: Arc<Lifecycle>,
    remote: crate::fleet::RemoteNow,
) {
    if cfg.backup.stick_folder.is_none() {
        return;
    }
    let configured = cfg.backup.nightly_hour;
    let zone = jiff::tz::TimeZone::get(&cfg.api.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let store = lc.store().clone();
    tokio::spawn(async move {
        let stop = lc.shutdown_requested();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let now = jiff::Timestamp::now();
            let recent = crate::backup::LastBackup::read(&store).is_some_and(|b| {
                u64::try_from(now.as_millisecond())
                    .unwrap_or(0)
                    .saturating_sub(b.at_ms)
                    < 12 * 3_600_000
            });
            // A remote admin's hour wins over the configured one.
            let Some(hour) = remote.get().nightly_backup_hour.or(configured) else {
                continue;
            };
            let night = now.to_zoned(zone.clone()).hour() == i8::try_from(hour).unwrap_or(-1);
            if recent || !night || own.stick().is_none() {
                continue;
            }
            let own = own.clone();
            match tokio::task::spawn_blocking(move || own.to_stick()).await {
                Ok(Ok(w)) => tracing::info!(
                    bytes = w.bytes,
                    "nightly backup written to {}",
                    w.path.display()
                ),
                Ok(Err(e)) => tracing::warn!("the nightly backup failed: {e:#}"),
                Err(e) => tracing::warn!("the nightly backup stopped: {e}"),
            }
        }
    });
}

/// Serves the control socket (`[power] control_socket`) until shutdown. Failing to bind is
/// logged, not fatal: tablets keep being served, and the power process still syncs and powers
/// off without a quiesce.
pub async fn spawn_control_socket(
    cfg: &Config,
    lc: Arc<Lifecycle>,
    power: PowerShared,
    own_backup: crate::backup::InServe,
    remote: crate::fleet::RemoteNow,
) {
    let path = cfg.power.control_socket.clone();
    let opts = clinicbox_control::SocketOptions::default();
    match clinicbox_control::ControlListener::bind(&path, &opts).await {
        Ok(listener) => {
            tracing::info!(socket.path = %path.display(), "control socket at {}", path.display());
            let handler = Arc::new(DaemonControl::new(lc.clone(), power, own_backup, remote));
            tokio::spawn(clinicbox_control::serve(listener, handler, async move {
                lc.shutdown_requested().await
            }));
        }
        Err(e) => tracing::error!(
            socket.path = %path.display(),
            error = %e,
            "no control socket ({e}): the power process cannot quiesce this daemon before a power-off"
        ),
    }
}
