//! `[discovery]` in `clinicbox.toml`: how the box announces itself on the clinic LAN.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// How tablets find the box: DNS-SD (mDNS) and the LAN DNS responder.
///
/// Both only ever run on [`DiscoveryConfig::interface`], the clinic LAN: never on the uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// The LAN interface (e.g. `eth0`, `wlan0`). mDNS and DNS bind only here.
    /// Default: none, which turns both off with a warning: a box must never announce itself
    /// or answer DNS on an interface nobody chose.
    pub interface: Option<String>,
    /// DNS-SD announcements over mDNS. Default: `true`.
    pub mdns: bool,
    /// The mDNS host name without `.local` (letters, digits, hyphens). Default: `clinicbox`.
    pub host_name: String,
    /// The DNS-SD instance name shown in browsers (UTF-8, at most 63 bytes).
    /// Default: derived from the clinic's name and the box id, so it is the same after every
    /// restart and differs between two boxes on one LAN.
    pub instance_name: Option<String>,
    /// Announce IPv6 addresses too. Default: `true`.
    pub ipv6: bool,
    /// How often the LAN interface's addresses are checked, in seconds; an address change is
    /// re-announced within about this time. Default: `1`.
    pub address_check_secs: u32,
    /// The LAN DNS responder.
    pub dns: DnsConfig,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            interface: None,
            mdns: true,
            host_name: "clinicbox".to_owned(),
            instance_name: None,
            ipv6: true,
            address_check_secs: 1,
            dns: DnsConfig::default(),
        }
    }
}

/// `[discovery.dns]`: a small authoritative DNS responder for the box's own names, so a tablet
/// that gets its DNS server from the box (or from a router pointed at it) resolves the box's
/// public name to its LAN address with no internet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Run the responder. Default: `true`.
    pub enabled: bool,
    /// UDP and TCP port. Default: `53`.
    pub port: u16,
    /// The box's public name, e.g. `<box-id>.<clinics-domain>`: the name on its installed
    /// certificate. Default: none.
    pub public_name: Option<String>,
    /// Short names only meaningful on the clinic LAN. Default: `["clinicbox.lan"]`.
    pub local_names: Vec<String>,
    /// TTL of the answers, in seconds. Short, so a changed LAN address spreads fast. Default: `60`.
    pub ttl_secs: u32,
    /// What to do with names that are not the box's. Default: `auto`.
    pub forward: ForwardPolicy,
    /// Upstream resolvers for forwarded names. Default: empty, meaning the `nameserver` lines
    /// of `/etc/resolv.conf` (minus loopback and the box's own addresses), read per query.
    pub upstream: Vec<SocketAddr>,
    /// Give up on an upstream after this many milliseconds. Default: `2000`.
    pub upstream_timeout_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: 53,
            public_name: None,
            local_names: vec!["clinicbox.lan".to_owned()],
            ttl_secs: 60,
            forward: ForwardPolicy::Auto,
            upstream: Vec::new(),
            upstream_timeout_ms: 2000,
        }
    }
}

/// Whether the responder forwards names that are not the box's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardPolicy {
    /// Forward while the box has an uplink (a default route that is not via the LAN interface);
    /// refuse otherwise, so tablets fail fast instead of waiting on a dead link.
    Auto,
    /// Always forward (e.g. the LAN has its own router to the internet).
    Always,
    /// Answer only the box's names; refuse everything else.
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_defaults() {
        let cfg: DiscoveryConfig = toml::from_str("").expect("empty config");
        assert_eq!(cfg, DiscoveryConfig::default());
        assert_eq!(cfg.dns.forward, ForwardPolicy::Auto);
    }

    #[test]
    fn full_section_parses() {
        let cfg: DiscoveryConfig = toml::from_str(
            r#"
            interface = "wlan0"
            host_name = "kisumu-box"
            [dns]
            port = 5300
            public_name = "box-0001.clinics.example.org"
            local_names = ["clinicbox.lan", "box"]
            forward = "never"
            upstream = ["192.0.2.53:53"]
            "#,
        )
        .expect("config");
        assert_eq!(cfg.interface.as_deref(), Some("wlan0"));
        assert_eq!(cfg.dns.forward, ForwardPolicy::Never);
        assert_eq!(cfg.dns.local_names.len(), 2);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<DiscoveryConfig>("interfce = \"eth0\"").expect_err("typo");
        assert!(err.to_string().contains("interfce"), "{err}");
    }
}
