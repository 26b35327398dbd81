//! DNS-SD over mDNS with `mdns-sd`: the box's host name and its three services.
//!
//! Design:
//! - Only the LAN interface is enabled; everything else (uplink, loopback) is disabled before
//!   any service is registered, so no record ever leaves on the WAN side.
//! - Addresses are not fixed: `addr_auto` lets mdns-sd follow DHCP, and the address check runs
//!   every [`DiscoveryConfig::address_check_secs`], so a new address is announced within about
//!   that time (measured by `benches/reannounce.rs`).
//! - Names are a pure function of the config and box id, so they are the same after every
//!   restart. On a conflict mdns-sd picks the deterministic `Name (2)` / `host-2`; the names in
//!   use are kept in [`AnnouncedNames`] for the status page and logged.
//! - [`Announcer::shutdown`] unregisters every service, which sends goodbye packets (TTL 0).
//!
//! Limitations: mdns-sd joins the multicast group on every interface while it starts, before
//! the interface selection applies (see `feasibility.md` §4); the LAN-only restriction holds
//! for every record it sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo, UnregisterStatus};
use tracing::{debug, info, warn};

use crate::{Advertisement, DiscoveryConfig, DiscoveryError};

/// The custom DNS-SD type tablets and tools can browse for (≤ 15 characters, RFC 6335).
pub const CLINICBOX_SERVICE: &str = "_clinicbox._tcp.local.";
pub const HTTP_SERVICE: &str = "_http._tcp.local.";
pub const HTTPS_SERVICE: &str = "_https._tcp.local.";

/// DNS-SD instance names are at most 63 bytes (RFC 6763 §4.1.1).
const INSTANCE_NAME_MAX: usize = 63;

/// The names the box is announced under right now (they change only on a conflict).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnouncedNames {
    /// e.g. `clinicbox.local.`
    pub host_name: String,
    /// Full service instance names, e.g. `Kisumu HC [box-0001]._clinicbox._tcp.local.`
    pub services: Vec<String>,
}

/// A running DNS-SD responder. Drop without [`Announcer::shutdown`] sends no goodbye.
pub struct Announcer {
    daemon: ServiceDaemon,
    stop_nudge: Arc<AtomicBool>,
    /// Full names as registered (before any conflict rename): what `unregister` takes.
    registered: Vec<String>,
    names: Arc<Mutex<AnnouncedNames>>,
}

impl Announcer {
    /// Starts mDNS on `interface` and announces the box.
    pub fn start(
        cfg: &DiscoveryConfig,
        interface: &str,
        ad: &Advertisement,
    ) -> Result<Self, DiscoveryError> {
        let host_name = format!("{}.local.", cfg.host_name.trim_end_matches(".local"));
        let instance = cfg
            .instance_name
            .clone()
            .unwrap_or_else(|| default_instance_name(&ad.clinic_name, &ad.box_id));
        let instance = truncate_utf8(&instance, INSTANCE_NAME_MAX).to_owned();

        let daemon = ServiceDaemon::new().map_err(DiscoveryError::Mdns)?;
        // Order matters: the daemon applies commands in order, so the selection is in force
        // before the first probe of any registered name.
        daemon
            .disable_interface(IfKind::All)
            .map_err(DiscoveryError::Mdns)?;
        daemon
            .enable_interface(IfKind::Name(interface.to_owned()))
            .map_err(DiscoveryError::Mdns)?;
        if !cfg.ipv6 {
            daemon
                .disable_interface(IfKind::IPv6)
                .map_err(DiscoveryError::Mdns)?;
        }
        daemon
            .set_ip_check_interval(cfg.address_check_secs.max(1))
            .map_err(DiscoveryError::Mdns)?;
        let events = daemon.monitor().map_err(DiscoveryError::Mdns)?;

        let mut registered = Vec::new();
        for (ty, port, txt) in services(ad) {
            let mut info = ServiceInfo::new(ty, &instance, &host_name, "", port, &txt[..])
                .map_err(DiscoveryError::Mdns)?
                .enable_addr_auto();
            info.set_interfaces(vec![IfKind::Name(interface.to_owned())]);
            registered.push(info.get_fullname().to_owned());
            daemon.register(info).map_err(DiscoveryError::Mdns)?;
            info!(service.type = ty, service.port = port, "DNS-SD: announcing {instance} as {ty} on {interface}");
        }

        let names = Arc::new(Mutex::new(AnnouncedNames {
            host_name: host_name.clone(),
            services: registered.clone(),
        }));
        let watched = Arc::clone(&names);
        std::thread::Builder::new()
            .name("mdns-events".to_owned())
            .spawn(move || watch_events(&events, &watched))
            .map_err(DiscoveryError::Thread)?;

        let stop_nudge = Arc::new(AtomicBool::new(false));
        let (d, stop, iface, ipv6) = (
            daemon.clone(),
            Arc::clone(&stop_nudge),
            interface.to_owned(),
            cfg.ipv6,
        );
        std::thread::Builder::new()
            .name("mdns-nudge".to_owned())
            .spawn(move || nudge_on_new_addresses(&d, &iface, ipv6, &stop))
            .map_err(DiscoveryError::Thread)?;

        info!(mdns.host = %host_name, mdns.interface = interface, "DNS-SD: host name {host_name}");
        Ok(Self {
            daemon,
            stop_nudge,
            registered,
            names,
        })
    }

    /// The names in use now.
    pub fn names(&self) -> AnnouncedNames {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A handle that follows the names in use (they change on a conflict).
    pub fn names_shared(&self) -> Arc<Mutex<AnnouncedNames>> {
        Arc::clone(&self.names)
    }

    /// Says goodbye (TTL 0 for every record) and stops the responder.
    pub fn shutdown(self) {
        self.stop_nudge.store(true, Ordering::Relaxed);
        for fullname in &self.registered {
            match self.daemon.unregister(fullname) {
                Ok(rx) => match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(UnregisterStatus::OK) => debug!("DNS-SD: goodbye sent for {fullname}"),
                    other => warn!("DNS-SD: unregister {fullname}: {other:?}"),
                },
                Err(e) => warn!("DNS-SD: unregister {fullname}: {e}"),
            }
        }
        match self.daemon.shutdown() {
            Ok(rx) => {
                let _ = rx.recv_timeout(Duration::from_secs(1));
            }
            Err(e) => warn!("DNS-SD: shutdown: {e}"),
        }
        info!("DNS-SD: stopped after goodbye");
    }
}

/// `<clinic> [<box id>]`: readable in a service browser, and unique per box so two boxes on
/// one LAN never fight over a name.
pub fn default_instance_name(clinic_name: &str, box_id: &str) -> String {
    let clinic = clinic_name.trim();
    if clinic.is_empty() {
        format!("ClinicBox [{box_id}]")
    } else {
        // Keep the box id whole; shorten the clinic name if needed.
        let suffix = format!(" [{box_id}]");
        let room = INSTANCE_NAME_MAX.saturating_sub(suffix.len());
        format!("{}{suffix}", truncate_utf8(clinic, room).trim_end())
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

type Txt = Vec<(&'static str, String)>;

/// The services and their TXT records. `_clinicbox._tcp` points at the port of the URL the
/// tablets should use; `_http`/`_https` follow the DNS-SD convention of TXT `path=`.
fn services(ad: &Advertisement) -> Vec<(&'static str, u16, Txt)> {
    let mut out = Vec::new();
    let clinicbox_port = ad.url_port().or(ad.https_port).or(ad.http_port);
    if let Some(port) = clinicbox_port {
        out.push((
            CLINICBOX_SERVICE,
            port,
            vec![
                ("id", ad.box_id.clone()),
                ("dhis2", ad.dhis2_version.clone()),
                ("url", ad.server_url.clone()),
                ("clinic", ad.clinic_name.clone()),
                ("path", "/".to_owned()),
            ],
        ));
    }
    if let Some(port) = ad.http_port {
        out.push((HTTP_SERVICE, port, vec![("path", "/".to_owned())]));
    }
    if let Some(port) = ad.https_port {
        out.push((
            HTTPS_SERVICE,
            port,
            vec![
                ("path", "/".to_owned()),
                ("id", ad.box_id.clone()),
                ("api", "dhis2".to_owned()),
                ("ver", ad.dhis2_version.clone()),
            ],
        ));
    }
    out
}

/// mdns-sd notices a new address only at its next address check (up to a second later). A new
/// address seen here (`getifaddrs` every 200 ms: a local syscall, no traffic) is handed to it
/// at once with `enable_interface(Addr)`, which applies immediately and announces. The
/// selection resolves to this interface and address family, which is already enabled, so it
/// changes nothing else. Each call adds a selection inside mdns-sd, hence the cap.
fn nudge_on_new_addresses(daemon: &ServiceDaemon, interface: &str, ipv6: bool, stop: &AtomicBool) {
    const NUDGES_MAX: u32 = 256;
    let mut known = crate::lan::interface_addrs(interface).unwrap_or_default();
    let mut nudges = 0;
    while !stop.load(Ordering::Relaxed) && nudges < NUDGES_MAX {
        std::thread::sleep(Duration::from_millis(200));
        let now = crate::lan::interface_addrs(interface).unwrap_or_default();
        for a in now
            .iter()
            .filter(|a| !known.contains(a) && (ipv6 || a.ip.is_ipv4()))
        {
            debug!(mdns.ip = %a.ip, "DNS-SD: new LAN address, announcing now");
            if daemon.enable_interface(IfKind::Addr(a.ip)).is_err() {
                return;
            }
            nudges += 1;
        }
        known = now;
    }
}

fn watch_events(events: &mdns_sd::Receiver<DaemonEvent>, names: &Mutex<AnnouncedNames>) {
    // Ends when the daemon shuts down and drops the sender.
    while let Ok(event) = events.recv() {
        match event {
            DaemonEvent::NameChange(change) => {
                warn!(
                    mdns.original = %change.original,
                    mdns.new_name = %change.new_name,
                    "DNS-SD: name conflict on {}, {} is now {}",
                    change.intf_name, change.original, change.new_name
                );
                let mut names = names.lock().unwrap_or_else(PoisonError::into_inner);
                apply_rename(&mut names, &change.original, &change.new_name);
            }
            DaemonEvent::IpAdd(ip) => {
                info!(mdns.ip = %ip, "DNS-SD: LAN address {ip} added, announcing")
            }
            DaemonEvent::IpDel(ip) => info!(mdns.ip = %ip, "DNS-SD: LAN address {ip} removed"),
            DaemonEvent::Error(e) => warn!("DNS-SD: {e}"),
            _ => {}
        }
    }
}

fn apply_rename(names: &mut AnnouncedNames, original: &str, new_name: &str) {
    if names.host_name == original {
        new_name.clone_into(&mut names.host_name);
    }
    for s in names.services.iter_mut().filter(|s| s.as_str() == original) {
        new_name.clone_into(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad() -> Advertisement {
        Advertisement {
            box_id: "box-0001".into(),
            clinic_name: "Kisumu Health Centre".into(),
            dhis2_version: "2.42.1".into(),
            server_url: "https://box-0001.clinics.example.org".into(),
            http_port: Some(80),
            https_port: Some(443),
        }
    }

    #[test]
    fn instance_name_is_stable_and_bounded() {
        assert_eq!(
            default_instance_name("Kisumu HC", "box-0001"),
            "Kisumu HC [box-0001]"
        );
        assert_eq!(
            default_instance_name("  ", "box-0001"),
            "ClinicBox [box-0001]"
        );
        let long = "Ñ".repeat(60);
        let name = default_instance_name(&long, "box-0001");
        assert!(name.len() <= INSTANCE_NAME_MAX, "{}", name.len());
        assert!(name.ends_with(" [box-0001]"));
    }

    #[test]
    fn three_services_with_txt() {
        let s = services(&ad());
        let types: Vec<_> = s.iter().map(|(t, p, _)| (*t, *p)).collect();
        assert_eq!(
            types,
            [
                (CLINICBOX_SERVICE, 443),
                (HTTP_SERVICE, 80),
                (HTTPS_SERVICE, 443)
            ]
        );
        let txt = &s[0].2;
        assert!(txt.contains(&("id", "box-0001".into())));
        assert!(txt.contains(&("url", "https://box-0001.clinics.example.org".into())));
    }

    #[test]
    fn http_only_box_points_clinicbox_at_http() {
        let mut a = ad();
        a.https_port = None;
        a.server_url = "http://192.168.8.1:8080".into();
        let s = services(&a);
        assert_eq!(s[0].1, 8080);
        assert!(s.iter().all(|(t, _, _)| *t != HTTPS_SERVICE));
    }

    #[test]
    fn renames_follow_conflicts() {
        let mut names = AnnouncedNames {
            host_name: "clinicbox.local.".into(),
            services: vec!["A [b]._clinicbox._tcp.local.".into()],
        };
        apply_rename(&mut names, "clinicbox.local.", "clinicbox-2.local.");
        apply_rename(
            &mut names,
            "A [b]._clinicbox._tcp.local.",
            "A [b] (2)._clinicbox._tcp.local.",
        );
        assert_eq!(names.host_name, "clinicbox-2.local.");
        assert_eq!(names.services[0], "A [b] (2)._clinicbox._tcp.local.");
    }
}
