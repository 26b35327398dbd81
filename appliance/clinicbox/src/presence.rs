//! How the box presents itself on the LAN besides plain HTTP: HTTPS next to it, DNS-SD and the
//! LAN DNS responder, and its own status page. `serve` calls [`prepare`] before binding HTTP,
//! [`Prepared::wrap`] on its router, [`Prepared::start`] once HTTP is bound and
//! [`Presence::shutdown`] when told to stop.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use clinicbox_discovery::{Advertisement, Discovery, DiscoveryWatch, lan};
use clinicbox_statuspage::{
    AdminCheck, BoxInfo, CertView, DiscoveryView, PowerView, Source, StatusBuilder, StatusState,
    Tablets,
};
use clinicbox_store::Store;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::tls::{self, CertSource, Certificates};

/// `--demo`'s HTTPS port when HTTP is on [`crate::serve::DEMO_PORT`].
pub const DEMO_HTTPS_PORT: u16 = 8443;
/// `--demo`'s LAN DNS port (on loopback).
pub const DEMO_DNS_PORT: u16 = 8053;

/// Demo defaults: HTTPS on its own loopback port next to HTTP, DNS on loopback, no mDNS (it
/// would join the multicast group on the developer's real network while starting).
pub fn demo_overrides(cfg: &mut Config) {
    let http = cfg
        .http
        .listen
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    // The fixed companion ports only next to the default HTTP port: a second demo or a test
    // harness on another port gets an ephemeral HTTPS port (printed) and no DNS, not a clash.
    let default_port = http.port() == crate::serve::DEMO_PORT;
    let https_port = if default_port { DEMO_HTTPS_PORT } else { 0 };
    cfg.tls.listen = vec![SocketAddr::new(http.ip(), https_port)];
    cfg.discovery.mdns = false;
    cfg.discovery.interface = Some("lo".to_owned());
    cfg.discovery.dns.enabled = default_port;
    cfg.discovery.dns.port = DEMO_DNS_PORT;
    // Forwarding would send the developer's queries to real upstream resolvers.
    cfg.discovery.dns.forward = clinicbox_discovery::ForwardPolicy::Never;
}

/// Discovery as started (with the DNS names it answers), filled in by [`Prepared::start`].
type SharedDiscovery = Arc<Mutex<Option<(DiscoveryWatch, Vec<String>)>>>;

/// What was set up before HTTP is bound.
pub struct Prepared {
    cfg: Config,
    status: StatusState,
    tablets: Tablets,
    certs: Option<Arc<Certificates>>,
    urls: Arc<Mutex<Urls>>,
    discovery: SharedDiscovery,
}

#[derive(Default)]
struct Urls {
    served: Vec<String>,
    https_port: Option<u16>,
    http_base: Option<String>,
}

/// What the status page shows that other parts of `serve` own.
pub struct PageSources {
    pub power: Source<Option<PowerView>>,
    pub uplink: Source<Option<clinicbox_statuspage::UplinkView>>,
    pub restart: crate::setup::Restart,
    pub own_backup: crate::backup::InServe,
    /// Settings a remote admin changed.
    pub remote: crate::fleet::RemoteNow,
}

/// Loads (or creates) the certificate and builds the status page's state. `api` supplies the
/// DHIS2 user model: the status page's admin actions need a DHIS2 admin login.
pub fn prepare(
    cfg: &Config,
    store: &Store,
    api: &clinicbox_api::ApiState,
    from: PageSources,
) -> anyhow::Result<Prepared> {
    let PageSources {
        power,
        uplink,
        restart,
        own_backup,
        remote,
    } = from;
    let certs = if cfg.tls.enabled {
        Some(
            Certificates::load(&cfg.tls, &cfg.data_dir, self_signed_names(cfg))
                .context("loading TLS certificates")?,
        )
    } else {
        None
    };
    let tablets = Tablets::persistent(cfg.data_dir.join("tablets-seen.json"));
    {
        let tablets = tablets.clone();
        api.observe_logins(Arc::new(move |seen| {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            tablets.record(seen.username, seen.user_agent, seen.addr, now_ms);
        }));
    }
    let urls: Arc<Mutex<Urls>> = Arc::default();
    let discovery: SharedDiscovery = Arc::default();

    let info = BoxInfo {
        box_id: cfg.box_info.name.clone(),
        clinic_name: cfg.box_info.clinic_name.clone(),
        version: clinicbox_process::running_release(),
        dhis2_version: clinicbox_dhis2::system_info::DHIS2_VERSION.to_owned(),
        slot: crate::fleet::booted_slot(),
    };
    let capture = {
        let (urls, certs, cfg) = (Arc::clone(&urls), certs.clone(), cfg.clone());
        Arc::new(move || {
            capture_url(
                &cfg,
                certs.as_deref(),
                &urls.lock().unwrap_or_else(PoisonError::into_inner),
            )
        })
    };
    let served = {
        let urls = Arc::clone(&urls);
        Arc::new(move || {
            urls.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .served
                .clone()
        })
    };
    let view = Arc::clone(&discovery);
    let mut b = StatusBuilder::new(cfg.status.clone(), info, capture)
        .served_urls(served)
        .store(store.clone())
        .tablets(tablets.clone())
        .admin(admin_check(api.clone()))
        .setup(Arc::new(
            crate::setup::BoxSetup::new(api.clone(), crate::setup::keys_dir(&cfg.data_dir))
                .with_restore(cfg.data_dir.clone(), restart),
        ))
        .power(power)
        .backup(backup_view(store.clone()))
        .uplink(uplink)
        .rollback(rollback_view(cfg.update.state_dir.clone()))
        .stale_tablet_days(Arc::new(move || remote.get().stale_tablet_days))
        .discovery(Arc::new(move || {
            discovery_view(view.lock().unwrap_or_else(PoisonError::into_inner).as_ref())
        }));
    if cfg.backup.stick_folder.is_some() {
        b = b.backup_now(backup_now(own_backup));
    }
    if let Some(c) = &certs {
        let (a, b2) = (Arc::clone(c), Arc::clone(c));
        b = b.certificate(
            Arc::new(move || cert_view(&a.status())),
            Arc::new(move || b2.check_for_changes()),
        );
    }
    Ok(Prepared {
        cfg: cfg.clone(),
        status: b.build(),
        tablets,
        certs,
        urls,
        discovery,
    })
}

fn discovery_view(d: Option<&(DiscoveryWatch, Vec<String>)>) -> DiscoveryView {
    let Some((w, dns_names)) = d else {
        return DiscoveryView::default();
    };
    let announced = w.announced();
    let listening = w.dns_listening();
    DiscoveryView {
        interface: w.interface().map(str::to_owned),
        mdns_host: announced.as_ref().map(|a| a.host_name.clone()),
        mdns_services: announced.map(|a| a.services).unwrap_or_default(),
        dns_names: if listening.is_empty() {
            Vec::new()
        } else {
            dns_names.clone()
        },
        dns_listening: listening.iter().map(ToString::to_string).collect(),
    }
}

/// An admin is a DHIS2 user the API authenticates (same password checks and failed-login
/// limits as `/api`) who may import metadata.
fn admin_check(api: clinicbox_api::ApiState) -> AdminCheck {
    Arc::new(move |headers: HeaderMap, addr: Option<SocketAddr>| {
        let api = api.clone();
        Box::pin(async move {
            let mut req = axum::http::Request::new(());
            *req.headers_mut() = headers;
            if let Some(a) = addr {
                req.extensions_mut().insert(ConnectInfo(a));
            }
            let (mut parts, ()) = req.into_parts();
            clinicbox_api::AuthUser::from_request_parts(&mut parts, &api)
                .await
                .ok()
                .filter(|u| u.is_admin())
                .map(|u| u.username.clone())
        })
    })
}

fn cert_view(s: &tls::CertStatus) -> CertView {
    CertView {
        source: match s.source {
            CertSource::Installed => "installed".to_owned(),
            CertSource::SelfSigned => "self-signed".to_owned(),
        },
        subject: s.subject.clone(),
        names: s.names.clone(),
        not_after: s.not_after,
        sha256: s.sha256.clone(),
        problem: s.problem.clone(),
    }
}

/// Names the self-signed certificate covers: every name the box answers to.
fn self_signed_names(cfg: &Config) -> Vec<String> {
    let d = &cfg.discovery;
    let mut names: Vec<String> = d.dns.public_name.iter().cloned().collect();
    names.extend(d.dns.local_names.iter().cloned());
    names.push(format!("{}.local", d.host_name));
    names.push("localhost".to_owned());
    for a in cfg.http.listen.iter().chain(&cfg.tls.listen) {
        if !a.ip().is_unspecified() && !names.contains(&a.ip().to_string()) {
            names.push(a.ip().to_string());
        }
    }
    names
}

/// The URL for the Capture app: the configured one; else `https://<public name>` while an
/// installed certificate serves (the only HTTPS the app accepts); else plain HTTP to the LAN
/// address, which today's app accepts.
fn capture_url(cfg: &Config, certs: Option<&Certificates>, urls: &Urls) -> String {
    if let Some(u) = &cfg.status.capture_url {
        return u.clone();
    }
    if let (Some(name), Some(port), Some(c)) =
        (&cfg.discovery.dns.public_name, urls.https_port, certs)
        && c.status().source == CertSource::Installed
    {
        return if port == 443 {
            format!("https://{name}")
        } else {
            format!("https://{name}:{port}")
        };
    }
    urls.http_base.clone().unwrap_or_default()
}

fn url(scheme: &str, ip: IpAddr, port: u16) -> String {
    let default = if scheme == "https" { 443 } else { 80 };
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    if port == default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// The addresses a bound `addr` is reachable at: itself, or the LAN's for a wildcard bind.
fn reachable(addr: SocketAddr, lan: &[IpAddr]) -> Vec<IpAddr> {
    if addr.ip().is_unspecified() {
        lan.iter()
            .copied()
            .filter(|ip| ip.is_ipv4() == addr.is_ipv4())
            .collect()
    } else {
        vec![addr.ip()]
    }
}

/// The port of the first bind reachable from the LAN (wildcard or a LAN address): a
/// loopback-only listener must not be announced.
fn lan_port(bound: &[SocketAddr], lan: &[IpAddr]) -> Option<u16> {
    bound
        .iter()
        .find(|a| a.ip().is_unspecified() || lan.contains(&a.ip()))
        .map(SocketAddr::port)
}

impl Prepared {
    /// The status page's state (tests, other wiring).
    pub fn status(&self) -> &StatusState {
        &self.status
    }

    /// Binds HTTPS, prints every URL, and starts discovery. `http` are the bound HTTP addresses.
    pub async fn start(
        self,
        app: Router,
        http: &[SocketAddr],
        limits: crate::listen::ConnectionLimits,
    ) -> anyhow::Result<Presence> {
        let handle = axum_server::Handle::new();
        let mut https_tasks = Vec::new();
        let mut https_bound = Vec::new();
        let mut reloader = None;
        if let Some(certs) = &self.certs {
            let config = certs.server_config()?;
            for addr in &self.cfg.tls.listen {
                let listener = crate::listen::bind(*addr)
                    .with_context(|| format!("cannot listen on {addr} (HTTPS)"))?;
                let local = listener.local_addr()?;
                tracing::info!(url = %format!("https://{local}/"), "serving HTTPS");
                // Tests and technicians read this line; keep its shape.
                println!("ClinicBox: serving https://{local}/");
                https_bound.push(local);
                let (config, app, handle) = (Arc::clone(&config), app.clone(), handle.clone());
                https_tasks.push(tokio::spawn(async move {
                    if let Err(e) =
                        crate::listen::serve_https(listener, config, app, handle, limits).await
                    {
                        tracing::error!(error = %e, "HTTPS server failed");
                    }
                }));
            }
            reloader =
                Some(certs.spawn_reloader(Duration::from_secs(self.cfg.tls.reload_check_secs)));
        }

        // The LAN's addresses, for URLs of wildcard binds and for discovery.
        let first_ip = http
            .iter()
            .chain(&https_bound)
            .map(SocketAddr::ip)
            .find(|ip| !ip.is_unspecified());
        let interface = self
            .cfg
            .discovery
            .interface
            .clone()
            .or_else(|| first_ip.and_then(|ip| lan::interface_of(ip).ok().flatten()));
        let lan_ips: Vec<IpAddr> = interface
            .as_deref()
            .and_then(|i| lan::interface_addrs(i).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.is_routable() || a.ip.is_loopback())
            .map(|a| a.ip)
            .collect();
        {
            let mut u = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
            u.https_port = https_bound.first().map(SocketAddr::port);
            for a in http {
                for ip in reachable(*a, &lan_ips) {
                    u.served.push(url("http", ip, a.port()));
                }
            }
            u.http_base = u
                .served
                .iter()
                .find(|s| !s.contains('['))
                .or(u.served.first())
                .cloned();
            for a in &https_bound {
                if let Some(name) = &self.cfg.discovery.dns.public_name
                    && !a.ip().is_loopback()
                {
                    let port = if a.port() == 443 {
                        String::new()
                    } else {
                        format!(":{}", a.port())
                    };
                    u.served.push(format!("https://{name}{port}"));
                }
                for ip in reachable(*a, &lan_ips) {
                    u.served.push(url("https", ip, a.port()));
                }
            }
        }
        let snapshot = self.status.snapshot();
        println!("ClinicBox: tablets use {}", snapshot.capture_url);
        tracing::info!(url = %snapshot.capture_url, "the Capture app's server URL");

        let ad = Advertisement {
            box_id: self.cfg.box_info.name.clone(),
            clinic_name: self.cfg.box_info.clinic_name.clone(),
            dhis2_version: snapshot.info.dhis2_version.clone(),
            server_url: snapshot.capture_url.clone(),
            http_port: lan_port(http, &lan_ips),
            https_port: lan_port(&https_bound, &lan_ips),
        };
        let mut dcfg = self.cfg.discovery.clone();
        dcfg.interface = interface.clone();
        let discovery = Discovery::start(&dcfg, &ad, first_ip).await;
        let dns_names: Vec<String> = dcfg
            .dns
            .public_name
            .iter()
            .chain(&dcfg.dns.local_names)
            .cloned()
            .collect();

        *self
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((discovery.watch(), dns_names));

        // Tablets seen: at most one SD-card write a minute.
        let flusher = {
            let tablets = self.tablets.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let t = tablets.clone();
                    let _ = tokio::task::spawn_blocking(move || t.flush()).await;
                }
            })
        };
        Ok(Presence {
            handle,
            https_tasks,
            reloader,
            flusher,
            discovery,
            tablets: self.tablets,
        })
    }
}

/// The running HTTPS listeners, discovery and background tasks.
pub struct Presence {
    handle: axum_server::Handle<SocketAddr>,
    https_tasks: Vec<JoinHandle<()>>,
    reloader: Option<JoinHandle<()>>,
    flusher: JoinHandle<()>,
    discovery: Discovery,
    tablets: Tablets,
}

impl Presence {
    /// Goodbye on mDNS first (tablets stop finding the box), then drain HTTPS for at most
    /// `drain`, then save the tablets seen.
    pub async fn shutdown(self, drain: Duration) {
        self.discovery.shutdown().await;
        self.handle.graceful_shutdown(Some(drain));
        for t in self.https_tasks {
            let _ = tokio::time::timeout(drain, t).await;
        }
        if let Some(r) = self.reloader {
            r.abort();
        }
        self.flusher.abort();
        let tablets = self.tablets;
        let _ = tokio::task::spawn_blocking(move || tablets.flush()).await;
    }
}

/// The admin page's "Back up now" to the stick in `[backup] stick_folder`.
fn backup_now(own: crate::backup::InServe) -> clinicbox_statuspage::BackupNow {
    let for_stick = own.clone();
    clinicbox_statuspage::BackupNow {
        stick: Arc::new(move || for_stick.stick().map(|p| p.display().to_string())),
        run: Arc::new(move || {
            own.to_stick()
                .map(|w| format!("Backed up to {} ({} bytes).", w.path.display(), w.bytes))
                .map_err(|e| format!("The backup failed: {e:#}"))
        }),
    }
}

/// The status page's view of the last backup `clinicbox backup` reported.
fn backup_view(
    store: clinicbox_store::Store,
) -> clinicbox_statuspage::Source<Option<clinicbox_statuspage::BackupView>> {
    std::sync::Arc::new(move || {
        crate::backup::LastBackup::read(&store).map(|b| clinicbox_statuspage::BackupView {
            at_ms: b.at_ms,
            bytes: b.bytes,
            folder: b.folder,
        })
    })
}

/// The installer's last recorded rollback (`[update] state_dir`/state.json, written by the boot
/// check as root; read whole at each snapshot, it is a few hundred bytes).
fn rollback_view(
    state_dir: std::path::PathBuf,
) -> clinicbox_statuspage::Source<Option<clinicbox_statuspage::RollbackView>> {
    Arc::new(move || {
        let r = clinicbox_update::state::State::load(&state_dir).last_rollback?;
        Some(clinicbox_statuspage::RollbackView {
            version: r.version,
            slot: r.slot,
            at_ms: r.at_ms,
            reason: r.reason,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_drop_default_ports_and_bracket_ipv6() {
        assert_eq!(url("http", [10, 0, 0, 1].into(), 80), "http://10.0.0.1");
        assert_eq!(
            url("https", [10, 0, 0, 1].into(), 8443),
            "https://10.0.0.1:8443"
        );
        assert_eq!(
            url("http", "fd00::1".parse().expect("ip"), 8080),
            "http://[fd00::1]:8080"
        );
    }

    #[test]
    fn wildcard_binds_expand_to_lan_addresses() {
        let lan: Vec<IpAddr> = vec![[10, 0, 0, 1].into(), "fd00::1".parse().expect("ip")];
        assert_eq!(
            reachable("0.0.0.0:80".parse().expect("sa"), &lan),
            vec![IpAddr::from([10, 0, 0, 1])]
        );
        assert_eq!(
            reachable("127.0.0.1:80".parse().expect("sa"), &lan),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
    }

    #[test]
    fn demo_gets_its_own_https_port_and_no_mdns() {
        let mut cfg = Config::default();
        cfg.http.listen = vec!["127.0.0.1:8080".parse().expect("sa")];
        demo_overrides(&mut cfg);
        assert_eq!(
            cfg.tls.listen,
            vec!["127.0.0.1:8443".parse::<SocketAddr>().expect("sa")]
        );
        assert!(!cfg.discovery.mdns);
        assert!(cfg.discovery.dns.enabled);
        assert_eq!(
            cfg.discovery.dns.forward,
            clinicbox_discovery::ForwardPolicy::Never
        );
        for other in ["127.0.0.1:0", "127.0.0.1:18080"] {
            cfg.http.listen = vec![other.parse().expect("sa")];
            demo_overrides(&mut cfg);
            assert_eq!(cfg.tls.listen[0].port(), 0, "{other}");
            assert!(!cfg.discovery.dns.enabled, "{other}");
        }
    }

    #[test]
    fn capture_url_prefers_installed_https_by_name() {
        let mut cfg = Config::default();
        let urls = Urls {
            served: vec![],
            https_port: Some(443),
            http_base: Some("http://10.0.0.1".into()),
        };
        assert_eq!(capture_url(&cfg, None, &urls), "http://10.0.0.1");
        cfg.status.capture_url = Some("http://clinicbox.lan".into());
        assert_eq!(capture_url(&cfg, None, &urls), "http://clinicbox.lan");
    }
}
