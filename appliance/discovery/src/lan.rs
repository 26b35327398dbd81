//! The LAN interface as the kernel sees it now: its addresses and subnets, and whether the box
//! has an uplink. Read fresh on each call (a `getifaddrs` is microseconds) so DHCP changes on
//! the LAN and an LTE dongle coming and going need no event plumbing.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::ifaddrs::getifaddrs;

use crate::DiscoveryError;

/// One address on the LAN interface with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LanAddr {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl LanAddr {
    /// Whether `other` is inside this address's subnet.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.ip, other) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let bits = u32::from(self.prefix_len.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let bits = u32::from(self.prefix_len.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    /// Worth handing to a tablet in a DNS answer: not link-local (unusable without a scope id).
    pub fn is_routable(&self) -> bool {
        match self.ip {
            IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified(),
            IpAddr::V6(v6) => !is_ipv6_link_local(v6) && !v6.is_unspecified(),
        }
    }
}

fn is_ipv6_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The addresses on `interface`, IPv4 first, sorted. Empty if the interface has none or is
/// missing (a USB Wi-Fi stick unplugged): callers treat that as "LAN down", not as an error.
pub fn interface_addrs(interface: &str) -> Result<Vec<LanAddr>, DiscoveryError> {
    let mut out = Vec::new();
    for ifa in getifaddrs().map_err(DiscoveryError::Interfaces)? {
        if ifa.interface_name != interface {
            continue;
        }
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            let ip: Ipv4Addr = a.ip();
            let prefix_len = u32::from(m.ip()).count_ones() as u8;
            out.push(LanAddr {
                ip: IpAddr::V4(ip),
                prefix_len,
            });
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let prefix_len = u128::from(m.ip()).count_ones() as u8;
            out.push(LanAddr {
                ip: IpAddr::V6(a.ip()),
                prefix_len,
            });
        }
    }
    out.sort_by_key(|a| (a.ip.is_ipv6(), a.ip));
    out.dedup();
    Ok(out)
}

/// The interface that owns `ip`, if any: lets the daemon pick its LAN interface from the HTTP
/// listen address when none is configured.
pub fn interface_of(ip: IpAddr) -> Result<Option<String>, DiscoveryError> {
    for ifa in getifaddrs().map_err(DiscoveryError::Interfaces)? {
        let Some(addr) = ifa.address else { continue };
        let found = match ip {
            IpAddr::V4(v4) => addr.as_sockaddr_in().is_some_and(|a| a.ip() == v4),
            IpAddr::V6(v6) => addr.as_sockaddr_in6().is_some_and(|a| a.ip() == v6),
        };
        if found {
            return Ok(Some(ifa.interface_name));
        }
    }
    Ok(None)
}

/// Whether the box has an uplink: an IPv4 or IPv6 default route through an interface other
/// than the LAN. Read from procfs so it follows an LTE dongle without a netlink listener.
pub fn has_uplink(lan_interface: &str) -> bool {
    let v4 = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    default_route_ifaces_v4(&v4)
        .chain(default_route_ifaces_v6(&v6))
        .any(|iface| iface != lan_interface && iface != "lo")
}

/// Every interface with an IPv4 or IPv6 default route, from procfs.
pub fn default_route_interfaces() -> Vec<String> {
    let v4 = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    let mut out: Vec<String> = default_route_ifaces_v4(&v4)
        .chain(default_route_ifaces_v6(&v6))
        .map(str::to_string)
        .collect();
    out.dedup();
    out
}

/// Interfaces with a default route in `/proc/net/route` text
/// (`Iface Destination Gateway Flags …`, destination and mask `00000000`).
fn default_route_ifaces_v4(text: &str) -> impl Iterator<Item = &str> {
    text.lines().skip(1).filter_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let up = cols
            .get(3)
            .and_then(|f| u16::from_str_radix(f, 16).ok())
            .is_some_and(|f| f & 1 == 1);
        (cols.len() > 7 && cols[1] == "00000000" && cols[7] == "00000000" && up).then(|| cols[0])
    })
}

/// Interfaces with a default route in `/proc/net/ipv6_route` text (destination `::/0`, a
/// gateway set, not the kernel's unreachable entry on `lo`).
fn default_route_ifaces_v6(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let zero = "00000000000000000000000000000000";
        (cols.len() == 10 && cols[0] == zero && cols[1] == "00" && cols[4] != zero).then(|| cols[9])
    })
}

/// The `nameserver` addresses in resolv.conf text.
pub fn resolv_conf_nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|ip| ip.split('%').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_membership() {
        let a = LanAddr {
            ip: "10.20.0.1".parse().expect("ip"),
            prefix_len: 24,
        };
        assert!(a.contains("10.20.0.77".parse().expect("ip")));
        assert!(!a.contains("10.20.1.77".parse().expect("ip")));
        assert!(!a.contains("::1".parse().expect("ip")));
        let b = LanAddr {
            ip: "fd00::1".parse().expect("ip"),
            prefix_len: 64,
        };
        assert!(b.contains("fd00::abcd".parse().expect("ip")));
        assert!(!b.contains("fd01::abcd".parse().expect("ip")));
    }

    #[test]
    fn link_local_is_not_handed_out() {
        assert!(
            !LanAddr {
                ip: "fe80::1".parse().expect("ip"),
                prefix_len: 64
            }
            .is_routable()
        );
        assert!(
            !LanAddr {
                ip: "169.254.3.4".parse().expect("ip"),
                prefix_len: 16
            }
            .is_routable()
        );
        assert!(
            LanAddr {
                ip: "192.168.8.1".parse().expect("ip"),
                prefix_len: 24
            }
            .is_routable()
        );
    }

    #[test]
    fn default_routes_from_procfs() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t0008A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  wwan0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_ifaces_v4(v4).collect::<Vec<_>>(), ["wwan0"]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wwan0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(default_route_ifaces_v6(v6).collect::<Vec<_>>(), ["wwan0"]);
    }

    #[test]
    fn nameservers_from_resolv_conf() {
        let text = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch lan\nnameserver fe80::1%eth0\n";
        let got = resolv_conf_nameservers(text);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], "192.0.2.1".parse::<IpAddr>().expect("ip"));
    }
}
