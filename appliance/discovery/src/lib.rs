#![doc = include_str!("../README.md")]

pub mod config;
pub mod dns;
pub mod lan;
pub mod mdns;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::{DiscoveryConfig, DnsConfig, ForwardPolicy};
pub use dns::LanDns;
pub use mdns::{AnnouncedNames, Announcer};

/// What the box tells the LAN about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// Stable box id, e.g. `box-0001`.
    pub box_id: String,
    /// The clinic's name as staff know it.
    pub clinic_name: String,
    /// The DHIS2 version the box presents to tablets, e.g. `2.42.1`.
    pub dhis2_version: String,
    /// The URL to type into the Capture app.
    pub server_url: String,
    /// Port of plain HTTP, if served.
    pub http_port: Option<u16>,
    /// Port of HTTPS, if served.
    pub https_port: Option<u16>,
}

impl Advertisement {
    /// The port in [`Advertisement::server_url`] (explicit or the scheme's default).
    pub fn url_port(&self) -> Option<u16> {
        let (scheme, rest) = self.server_url.split_once("://")?;
        let authority = rest.split('/').next()?;
        let port = authority.rsplit_once(':').and_then(|(host, p)| {
            // `[::1]` alone has colons but no port.
            (!host.is_empty() && !p.contains(']')).then(|| p.parse().ok())?
        });
        port.or(match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })
    }
}

/// Errors starting discovery. Each names what failed for which input.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("listing network interfaces: {0}")]
    Interfaces(#[source] nix::Error),
    #[error("mDNS: {0}")]
    Mdns(#[source] mdns_sd::Error),
    #[error("starting a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("LAN interface {0} has no usable address")]
    NoLanAddress(String),
    #[error("invalid DNS name {0:?}: {1}")]
    BadName(String, String),
}

/// mDNS and LAN DNS together, following the LAN interface's addresses.
pub struct Discovery {
    announcer: Option<Announcer>,
    dns_task: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    dns_listening: Arc<Mutex<Vec<SocketAddr>>>,
    interface: Option<String>,
}

impl Discovery {
    /// Starts what the config enables. `listen_ip` is the daemon's HTTP listen address, used
    /// to find the LAN interface when none is configured. Failures are logged and leave that
    /// part off: tablets can still type the URL, so discovery never stops the box serving.
    pub async fn start(
        cfg: &DiscoveryConfig,
        ad: &Advertisement,
        listen_ip: Option<IpAddr>,
    ) -> Self {
        let mut this = Self {
            announcer: None,
            dns_task: None,
            dns_listening: Arc::default(),
            interface: None,
        };
        let interface = match &cfg.interface {
            Some(i) => Some(i.clone()),
            None => listen_ip
                .filter(|ip| !ip.is_unspecified())
                .and_then(|ip| lan::interface_of(ip).ok().flatten()),
        };
        let Some(interface) = interface else {
            warn!(
                "discovery: no LAN interface configured ([discovery] interface), mDNS and LAN DNS are off"
            );
            return this;
        };
        if cfg.mdns {
            match Announcer::start(cfg, &interface, ad) {
                Ok(a) => this.announcer = Some(a),
                Err(e) => warn!("discovery: DNS-SD not started: {e}"),
            }
        }
        if cfg.dns.enabled {
            let (stop_tx, stop_rx) = watch::channel(false);
            let period = Duration::from_secs(u64::from(cfg.address_check_secs.max(1)));
            let task = tokio::spawn(run_dns(
                cfg.dns.clone(),
                interface.clone(),
                period,
                stop_rx,
                Arc::clone(&this.dns_listening),
            ));
            this.dns_task = Some((stop_tx, task));
        }
        this.interface = Some(interface);
        this
    }

    /// The LAN interface in use, if any.
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    /// The mDNS names in use now (None when mDNS is off).
    pub fn announced(&self) -> Option<AnnouncedNames> {
        self.announcer.as_ref().map(Announcer::names)
    }

    /// Where the LAN DNS responder listens now.
    pub fn dns_listening(&self) -> Vec<SocketAddr> {
        self.dns_listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A cheap, cloneable view of what is announced, for status pages.
    pub fn watch(&self) -> DiscoveryWatch {
        DiscoveryWatch {
            interface: self.interface.clone(),
            names: self.announcer.as_ref().map(Announcer::names_shared),
            dns_listening: Arc::clone(&self.dns_listening),
        }
    }

    /// Goodbye on mDNS, then stop DNS.
    pub async fn shutdown(self) {
        if let Some(a) = self.announcer {
            // Blocking waits of at most a second per service; keep them off the runtime.
            let _ = tokio::task::spawn_blocking(move || a.shutdown()).await;
        }
        if let Some((stop, task)) = self.dns_task {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// What [`Discovery`] announces now; follows renames and DNS rebinds.
#[derive(Clone, Default)]
pub struct DiscoveryWatch {
    interface: Option<String>,
    names: Option<Arc<Mutex<AnnouncedNames>>>,
    dns_listening: Arc<Mutex<Vec<SocketAddr>>>,
}

impl DiscoveryWatch {
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }
    /// None when mDNS is off.
    pub fn announced(&self) -> Option<AnnouncedNames> {
        self.names
            .as_ref()
            .map(|n| n.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }
    pub fn dns_listening(&self) -> Vec<SocketAddr> {
        self.dns_listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Serves DNS on the LAN addresses and rebinds when they change (DHCP on the LAN side).
async fn run_dns(
    cfg: DnsConfig,
    interface: String,
    period: Duration,
    mut stop: watch::Receiver<bool>,
    listening: Arc<Mutex<Vec<SocketAddr>>>,
) {
    let mut current: Option<(Vec<lan::LanAddr>, Option<LanDns>)> = None;
    loop {
        let addrs: Vec<_> = lan::interface_addrs(&interface)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.is_routable() || a.ip.is_loopback())
            .collect();
        let changed = current.as_ref().is_none_or(|(old, _)| *old != addrs);
        if changed {
            if let Some((_, Some(old))) = current.take() {
                info!("LAN DNS: {interface} addresses changed, rebinding");
                old.shutdown().await;
            }
            let server = if addrs.is_empty() {
                warn!("LAN DNS: {interface} has no address yet, waiting");
                None
            } else {
                match LanDns::start(&cfg, &interface).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        warn!("LAN DNS: not serving on {interface}: {e}");
                        None
                    }
                }
            };
            *listening.lock().unwrap_or_else(PoisonError::into_inner) = server
                .as_ref()
                .map(|s| s.listening.clone())
                .unwrap_or_default();
            // A failed bind is retried on the next address change only, to keep logs quiet.
            current = Some((addrs, server));
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
    }
    if let Some((_, Some(server))) = current {
        server.shutdown().await;
    }
    info!("LAN DNS: stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(url: &str) -> Advertisement {
        Advertisement {
            box_id: "b".into(),
            clinic_name: "c".into(),
            dhis2_version: "2.42.1".into(),
            server_url: url.into(),
            http_port: None,
            https_port: None,
        }
    }

    #[test]
    fn url_ports() {
        assert_eq!(ad("https://box.example.org").url_port(), Some(443));
        assert_eq!(ad("http://192.168.8.1:8080/").url_port(), Some(8080));
        assert_eq!(ad("http://[fd00::1]/").url_port(), Some(80));
        assert_eq!(ad("http://[fd00::1]:81").url_port(), Some(81));
        assert_eq!(ad("nonsense").url_port(), None);
    }
}
