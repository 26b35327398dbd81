//! The LAN DNS responder: the box's own names resolve to its LAN address with no internet.
//!
//! Design:
//! - Binds only the LAN interface's addresses (never `0.0.0.0`), and answers only clients whose
//!   source address is inside a LAN subnet (or loopback, for the box itself). Anything else is
//!   `REFUSED`: the box is never an open resolver towards the WAN.
//! - Own names (the public name, e.g. `<box-id>.<clinics-domain>`, and the short local names):
//!   authoritative `A`/`AAAA` with the LAN interface's current routable addresses, read per
//!   query so a DHCP change needs no restart. Other types for those names: empty `NOERROR`.
//! - Other names: forwarded to one upstream at a time when [`ForwardPolicy`] allows it
//!   (`auto`: only while an uplink exists), `REFUSED` otherwise, `SERVFAIL` when every upstream
//!   failed. Nothing is cached: the responder holds no state a tablet could poison.
//!
//! Limitations: no DNSSEC; forwarded answers over UDP are retried over TCP when truncated.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::lan::{self, LanAddr};
use crate::{DiscoveryError, DnsConfig, ForwardPolicy};

/// A running responder; [`LanDns::shutdown`] stops it.
pub struct LanDns {
    server: ServerFuture<Handler>,
    /// What it listens on, for logs and tests.
    pub listening: Vec<SocketAddr>,
}

impl LanDns {
    /// Binds UDP and TCP on every address of `interface` (IPv6 link-local excluded) and serves.
    pub async fn start(cfg: &DnsConfig, interface: &str) -> Result<Self, DiscoveryError> {
        let handler = Handler::new(cfg, interface)?;
        let addrs = lan::interface_addrs(interface)?;
        let mut server = ServerFuture::new(handler);
        let mut listening = Vec::new();
        for addr in addrs
            .iter()
            .filter(|a| a.is_routable() || a.ip.is_loopback())
        {
            let sa = SocketAddr::new(addr.ip, cfg.port);
            let udp = UdpSocket::bind(sa)
                .await
                .map_err(|e| DiscoveryError::Bind(sa, e))?;
            let tcp = TcpListener::bind(sa)
                .await
                .map_err(|e| DiscoveryError::Bind(sa, e))?;
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5));
            listening.push(sa);
        }
        if listening.is_empty() {
            return Err(DiscoveryError::NoLanAddress(interface.to_owned()));
        }
        for sa in &listening {
            info!(dns.listen = %sa, "LAN DNS: answering on {sa} (udp+tcp)");
        }
        Ok(Self { server, listening })
    }

    /// Stops accepting queries and waits for in-flight ones.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            warn!("LAN DNS: shutdown: {e}");
        }
    }
}

/// The box's names, normalised to lower case and fully qualified.
fn own_names(cfg: &DnsConfig) -> Result<Vec<LowerName>, DiscoveryError> {
    cfg.public_name
        .iter()
        .chain(cfg.local_names.iter())
        .map(|n| {
            let fqdn = if n.ends_with('.') {
                n.clone()
            } else {
                format!("{n}.")
            };
            Name::from_utf8(&fqdn)
                .map(|name| LowerName::from(&name))
                .map_err(|e| DiscoveryError::BadName(n.clone(), e.to_string()))
        })
        .collect()
}

struct Handler {
    names: Vec<LowerName>,
    interface: String,
    ttl: u32,
    forward: ForwardPolicy,
    upstream: Vec<SocketAddr>,
    upstream_timeout: Duration,
}

/// What the responder decided for one query.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Own(Vec<IpAddr>),
    Forward,
    Refuse,
}

impl Handler {
    fn new(cfg: &DnsConfig, interface: &str) -> Result<Self, DiscoveryError> {
        Ok(Self {
            names: own_names(cfg)?,
            interface: interface.to_owned(),
            ttl: cfg.ttl_secs,
            forward: cfg.forward,
            upstream: cfg.upstream.clone(),
            upstream_timeout: Duration::from_millis(cfg.upstream_timeout_ms.max(100)),
        })
    }

    fn decide(&self, src: IpAddr, name: &LowerName, rtype: RecordType, lan: &[LanAddr]) -> Verdict {
        let from_lan = src.is_loopback() || lan.iter().any(|a| a.contains(src));
        if !from_lan {
            return Verdict::Refuse;
        }
        if self.names.contains(name) {
            let ips = lan
                .iter()
                .filter(|a| a.is_routable())
                .map(|a| a.ip)
                .filter(|ip| match rtype {
                    RecordType::A => ip.is_ipv4(),
                    RecordType::AAAA => ip.is_ipv6(),
                    RecordType::ANY => true,
                    _ => false,
                })
                .collect();
            return Verdict::Own(ips);
        }
        let forward = match self.forward {
            ForwardPolicy::Never => false,
            ForwardPolicy::Always => true,
            ForwardPolicy::Auto => lan::has_uplink(&self.interface),
        };
        if forward {
            Verdict::Forward
        } else {
            Verdict::Refuse
        }
    }

    /// Upstreams for this query: the configured ones, else resolv.conf minus loopback and the
    /// box's own addresses (which would loop back to this responder).
    fn upstreams(&self, lan: &[LanAddr]) -> Vec<SocketAddr> {
        if !self.upstream.is_empty() {
            return self.upstream.clone();
        }
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        lan::resolv_conf_nameservers(&text)
            .into_iter()
            .filter(|ip| !ip.is_loopback() && !lan.iter().any(|a| a.ip == *ip))
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
    }

    async fn forward(&self, query: &Query, lan: &[LanAddr]) -> Option<Message> {
        for upstream in self.upstreams(lan) {
            match timeout(self.upstream_timeout, forward_one(query, upstream)).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => {
                    debug!(dns.upstream = %upstream, "LAN DNS: upstream {upstream} failed: {e}")
                }
                Err(_) => {
                    debug!(dns.upstream = %upstream, "LAN DNS: upstream {upstream} timed out")
                }
            }
        }
        None
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let reply_code = |code| {
            let mut h = Header::response_from_request(request.header());
            h.set_response_code(code);
            h
        };
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            let msg = builder.error_msg(request.header(), ResponseCode::NotImp);
            return send(&mut response, msg).await;
        }
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(request.header(), ResponseCode::FormErr);
            return send(&mut response, msg).await;
        };
        let lan = lan::interface_addrs(&self.interface).unwrap_or_default();
        let name = info.query.name();
        let rtype = info.query.query_type();
        match self.decide(request.src().ip(), name, rtype, &lan) {
            Verdict::Own(ips) => {
                let owner = Name::from(name.clone());
                let records: Vec<Record> = ips
                    .into_iter()
                    .map(|ip| {
                        let rdata = match ip {
                            IpAddr::V4(v4) => RData::A(A(v4)),
                            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                        };
                        Record::from_rdata(owner.clone(), self.ttl, rdata)
                    })
                    .collect();
                let mut header = reply_code(ResponseCode::NoError);
                header.set_authoritative(true);
                header.set_recursion_available(self.forward != ForwardPolicy::Never);
                let msg = builder.build(header, records.iter(), [], [], []);
                send(&mut response, msg).await
            }
            Verdict::Refuse => {
                debug!(dns.src = %request.src(), "LAN DNS: refused {name} {rtype}");
                let msg = builder.error_msg(request.header(), ResponseCode::Refused);
                send(&mut response, msg).await
            }
            Verdict::Forward => match self.forward(info.query.original(), &lan).await {
                Some(reply) => {
                    let mut header = reply_code(reply.response_code());
                    header.set_recursion_available(true);
                    header.set_truncated(reply.truncated());
                    let msg = builder.build(
                        header,
                        reply.answers().iter(),
                        reply.name_servers().iter(),
                        [],
                        reply.additionals().iter(),
                    );
                    send(&mut response, msg).await
                }
                None => {
                    let msg = builder.error_msg(request.header(), ResponseCode::ServFail);
                    send(&mut response, msg).await
                }
            },
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            debug!("LAN DNS: sending a reply failed: {e}");
            let mut header = Header::new();
            header.set_response_code(ResponseCode::ServFail);
            header.into()
        }
    }
}

/// One forwarded query: UDP from a fresh socket (random source port) with a random id; the
/// reply must match both, else it is dropped. Truncated replies are retried over TCP.
async fn forward_one(query: &Query, upstream: SocketAddr) -> Result<Message, ForwardError> {
    let id = random_id()?;
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(query.clone());
    let bytes = msg.to_vec()?;

    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let reply = loop {
        let n = sock.recv(&mut buf).await?;
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.id() == id && reply.queries() == msg.queries() {
            break reply;
        }
    };
    if !reply.truncated() {
        return Ok(reply);
    }
    let mut tcp = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| ForwardError::Mismatch)?;
    tcp.write_all(&len.to_be_bytes()).await?;
    tcp.write_all(&bytes).await?;
    let len = usize::from(tcp.read_u16().await?);
    let mut buf = vec![0u8; len];
    tcp.read_exact(&mut buf).await?;
    let reply = Message::from_vec(&buf)?;
    if reply.id() != id || reply.queries() != msg.queries() {
        return Err(ForwardError::Mismatch);
    }
    Ok(reply)
}

fn random_id() -> Result<u16, ForwardError> {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).map_err(|_| ForwardError::Random)?;
    Ok(u16::from_ne_bytes(b))
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad DNS message: {0}")]
    Proto(#[from] hickory_server::proto::ProtoError),
    #[error("reply does not match the query")]
    Mismatch,
    #[error("no randomness for the query id")]
    Random,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(forward: ForwardPolicy) -> Handler {
        let cfg = DnsConfig {
            public_name: Some("Box-0001.Clinics.Example.org".into()),
            forward,
            ..DnsConfig::default()
        };
        Handler::new(&cfg, "does-not-exist0").expect("handler")
    }

    fn lan() -> Vec<LanAddr> {
        vec![
            LanAddr {
                ip: "10.20.0.1".parse().expect("ip"),
                prefix_len: 24,
            },
            LanAddr {
                ip: "fd00::1".parse().expect("ip"),
                prefix_len: 64,
            },
            LanAddr {
                ip: "fe80::1".parse().expect("ip"),
                prefix_len: 64,
            },
        ]
    }

    fn name(s: &str) -> LowerName {
        LowerName::from(&Name::from_utf8(s).expect("name"))
    }

    #[test]
    fn own_names_answer_case_insensitively_with_routable_addresses() {
        let h = handler(ForwardPolicy::Never);
        let client: IpAddr = "10.20.0.55".parse().expect("ip");
        let v = h.decide(
            client,
            &name("box-0001.clinics.example.org."),
            RecordType::A,
            &lan(),
        );
        assert_eq!(v, Verdict::Own(vec!["10.20.0.1".parse().expect("ip")]));
        let v = h.decide(client, &name("CLINICBOX.LAN."), RecordType::AAAA, &lan());
        assert_eq!(v, Verdict::Own(vec!["fd00::1".parse().expect("ip")]));
        let v = h.decide(client, &name("clinicbox.lan."), RecordType::MX, &lan());
        assert_eq!(v, Verdict::Own(vec![]));
    }

    #[test]
    fn never_an_open_resolver() {
        let h = handler(ForwardPolicy::Always);
        let wan: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(
            h.decide(wan, &name("example.org."), RecordType::A, &lan()),
            Verdict::Refuse
        );
        assert_eq!(
            h.decide(wan, &name("clinicbox.lan."), RecordType::A, &lan()),
            Verdict::Refuse
        );
        let client: IpAddr = "10.20.0.55".parse().expect("ip");
        assert_eq!(
            h.decide(client, &name("example.org."), RecordType::A, &lan()),
            Verdict::Forward
        );
    }

    #[test]
    fn other_names_refused_without_forwarding() {
        let h = handler(ForwardPolicy::Never);
        let client: IpAddr = "10.20.0.55".parse().expect("ip");
        assert_eq!(
            h.decide(client, &name("example.org."), RecordType::A, &lan()),
            Verdict::Refuse
        );
        // A name under the box's own is not the box's.
        let v = h.decide(
            client,
            &name("x.box-0001.clinics.example.org."),
            RecordType::A,
            &lan(),
        );
        assert_eq!(v, Verdict::Refuse);
    }

    #[test]
    fn bad_names_are_config_errors() {
        let cfg = DnsConfig {
            local_names: vec!["a..b".into()],
            ..DnsConfig::default()
        };
        assert!(matches!(
            Handler::new(&cfg, "x"),
            Err(DiscoveryError::BadName(..))
        ));
    }
}
