//! Tablets find the box with zero typing: the real daemon in one network namespace, independent
//! real clients in another, joined by a veth pair (the clinic LAN):
//! avahi-daemon + avahi-browse/avahi-resolve (DNS-SD, host name, goodbye, name conflicts),
//! dig (the LAN DNS responder, forwarding, refusal), openssl s_client and a rustls client
//! (HTTPS with the installed certificate, reloaded without restart).
//!
//! Needs root and Debian's iproute2, avahi-daemon, avahi-utils, dbus, dnsutils, openssl
//! (`.ci/run` installs them). Without them: `SKIPPED` outside CI, a failure in CI.
//! mDNS never runs in the host namespace: it would multicast on the machine's real network.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clinicbox_tests::{BoxBuilder, RunningBox, http_request, in_netns, init_store};

const BOX_IP: &str = "10.231.0.1";
const CLIENT_IP: &str = "10.231.0.2";
const BOX_IP6: &str = "fd00:cb::1";
const PUBLIC_NAME: &str = "box-0042.clinics.test";
const INSTANCE: &str = "Kisumu Health Centre [box-0042]";

// ---------------------------------------------------------------------------------------------
// Prerequisites

/// True when the test can run; prints `SKIPPED` (or panics in CI) otherwise.
fn prerequisites(test: &str) -> bool {
    clinicbox_tests::prerequisites(
        test,
        &[
            "ip",
            "avahi-daemon",
            "avahi-browse",
            "avahi-resolve",
            "avahi-publish",
            "dbus-daemon",
            "dig",
            "openssl",
            "unshare",
            "ss",
        ],
        true,
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    ok(Command::new("ip").args(args))
}

/// Polls `f` until it returns `Some` or `limit` passes (a bound on waiting, not a timing assert).
fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// The clinic LAN: two namespaces and a veth pair

/// `box` ns (interface `lan0`, 10.231.0.1/24, fd00:cb::1/64) and `client` ns (`cli0`,
/// 10.231.0.2/24). Deleted on drop, which also deletes the veth pair.
struct Lan {
    box_ns: String,
    client_ns: String,
}

impl Lan {
    fn new(tag: &str) -> Lan {
        let id = std::process::id() % 100_000;
        let lan = Lan {
            box_ns: format!("cbd{id}{tag}b"),
            client_ns: format!("cbd{id}{tag}c"),
        };
        lan.delete();
        let (vb, vc) = (format!("v{id}{tag}b"), format!("v{id}{tag}c"));
        ip(&["netns", "add", &lan.box_ns]);
        ip(&["netns", "add", &lan.client_ns]);
        ip(&["link", "add", &vb, "type", "veth", "peer", "name", &vc]);
        ip(&["link", "set", &vb, "netns", &lan.box_ns]);
        ip(&["link", "set", &vc, "netns", &lan.client_ns]);
        let (b, c) = (lan.box_ns.as_str(), lan.client_ns.as_str());
        ip(&["-n", b, "link", "set", &vb, "name", "lan0"]);
        ip(&["-n", c, "link", "set", &vc, "name", "cli0"]);
        ip(&[
            "-n",
            b,
            "addr",
            "add",
            &format!("{BOX_IP}/24"),
            "dev",
            "lan0",
        ]);
        ip(&[
            "-n",
            b,
            "addr",
            "add",
            &format!("{BOX_IP6}/64"),
            "dev",
            "lan0",
            "nodad",
        ]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "cli0",
        ]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            "fd00:cb::2/64",
            "dev",
            "cli0",
            "nodad",
        ]);
        for (ns, dev) in [(b, "lo"), (b, "lan0"), (c, "lo"), (c, "cli0")] {
            ip(&["-n", ns, "link", "set", dev, "multicast", "on", "up"]);
        }
        lan
    }

    fn delete(&self) {
        for ns in [&self.box_ns, &self.client_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// A command inside the client namespace.
    fn client(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client_ns, prog]);
        c
    }

    /// `dig @box` from the client namespace; returns dig's full output.
    fn dig(&self, args: &[&str]) -> String {
        let mut c = self.client("dig");
        c.args(["+time=2", "+tries=1"]).args(args);
        String::from_utf8_lossy(&run(&mut c).stdout).into_owned()
    }

    /// Runs `f` on a thread inside the client namespace (setns affects only that thread).
    fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.client_ns, f)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.delete();
    }
}

// ---------------------------------------------------------------------------------------------
// An independent DNS-SD client: avahi-daemon with its own system bus, in the client namespace

struct Avahi {
    dir: tempfile::TempDir,
    ns: String,
    children: Vec<Child>,
}

impl Avahi {
    fn start(lan: &Lan) -> Avahi {
        let dir = tempfile::tempdir().expect("tempdir");
        let bus = dir.path().join("system_bus_socket");
        let dbus_conf = dir.path().join("dbus.conf");
        // A private system bus that lets root own names: only avahi and the test use it.
        fs::write(
            &dbus_conf,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig><type>system</type>\
                 <listen>unix:path={}</listen><auth>EXTERNAL</auth><policy context=\"default\">\
                 <allow user=\"*\"/><allow own=\"*\"/><allow send_destination=\"*\"/><allow receive_sender=\"*\"/>\
                 </policy></busconfig>\n",
                bus.display()
            ),
        )
        .expect("dbus.conf");
        let mut a = Avahi {
            ns: lan.client_ns.clone(),
            children: Vec::new(),
            dir,
        };
        let dbus = lan
            .client("dbus-daemon")
            .arg(format!("--config-file={}", dbus_conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        a.children.push(dbus);
        eventually(Duration::from_secs(10), "the test's D-Bus socket", || {
            bus.exists().then_some(())
        });

        let conf = a.dir.path().join("avahi-daemon.conf");
        fs::write(
            &conf,
            "[server]\nhost-name=clinic-tablet\nuse-ipv4=yes\nuse-ipv6=yes\nallow-interfaces=cli0\nenable-dbus=yes\n\
             ratelimit-interval-usec=0\n[wide-area]\nenable-wide-area=no\n[publish]\npublish-hinfo=no\npublish-workstation=no\n",
        )
        .expect("avahi conf");
        fs::create_dir_all("/run/avahi-daemon").expect("mount point");
        let log = fs::File::create(a.dir.path().join("avahi.log")).expect("log");
        // Its own mount namespace with a private /run/avahi-daemon, so its pid file and socket
        // never meet another avahi-daemon on this machine.
        let script = format!(
            "mount -t tmpfs tmpfs /run/avahi-daemon && exec avahi-daemon -f {} --no-chroot --no-drop-root --no-rlimits",
            conf.display()
        );
        let daemon = lan
            .client("unshare")
            .args(["-m", "sh", "-c", &script])
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", bus.display()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("avahi-daemon");
        a.children.push(daemon);
        eventually(Duration::from_secs(15), "avahi-daemon startup", || {
            a.log().contains("Server startup complete").then_some(())
        });
        a
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("avahi.log")).unwrap_or_default()
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, prog]).env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!(
                "unix:path={}",
                self.dir.path().join("system_bus_socket").display()
            ),
        );
        c
    }

    /// `avahi-browse -rpt TYPE`: the resolved services.
    fn browse(&self, service_type: &str) -> Vec<Resolved> {
        let out = run(self
            .cmd("timeout")
            .args(["10", "avahi-browse", "-rpt", service_type]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(Resolved::parse)
            .collect()
    }

    /// Browses until a resolved IPv4 service matches `pred`.
    fn find(&self, service_type: &str, pred: impl Fn(&Resolved) -> bool) -> Resolved {
        eventually(Duration::from_secs(20), service_type, || {
            self.browse(service_type)
                .into_iter()
                .find(|r| r.protocol == "IPv4" && pred(r))
        })
    }

    /// A long-running `avahi-browse -rp TYPE` whose lines are collected.
    fn watch(&mut self, service_type: &str) -> Arc<Mutex<Vec<String>>> {
        let mut child = self
            .cmd("avahi-browse")
            .args(["-rp", service_type])
            .stdout(Stdio::piped())
            .spawn()
            .expect("browse");
        let out = child.stdout.take().expect("stdout");
        self.children.push(child);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(l);
            }
        });
        lines
    }

    /// Publishes a service from the client side (a conflicting device).
    fn publish(&mut self, name: &str, service_type: &str, port: u16, txt: &str) {
        let child = self
            .cmd("avahi-publish")
            .args(["-s", name, service_type, &port.to_string(), txt])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("avahi-publish");
        self.children.push(child);
    }
}

impl Drop for Avahi {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One `=` line of `avahi-browse -p` output.
#[derive(Debug, Clone)]
struct Resolved {
    protocol: String,
    name: String,
    host: String,
    address: String,
    port: u16,
    txt: Vec<String>,
}

impl Resolved {
    fn parse(line: &str) -> Option<Resolved> {
        let f: Vec<&str> = line.splitn(10, ';').collect();
        if f.len() < 10 || f[0] != "=" {
            return None;
        }
        Some(Resolved {
            protocol: f[2].to_owned(),
            name: unescape(f[3]),
            host: f[6].to_owned(),
            address: f[7].to_owned(),
            port: f[8].parse().ok()?,
            txt: f[9]
                .split("\" \"")
                .map(|t| t.trim_matches('"').to_owned())
                .collect(),
        })
    }

    fn txt(&self, key: &str) -> Option<&str> {
        self.txt
            .iter()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
    }
}

/// avahi's `\DDD` decimal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(n) = std::str::from_utf8(&b[i + 1..i + 4])
                .unwrap_or("x")
                .parse::<u8>()
            {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Certificates: a test CA standing in for Let's Encrypt

struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    der: Vec<u8>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ClinicBox test CA");
        let cert = params.self_signed(&key).expect("ca");
        TestCa {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Installs a fresh leaf for `name` the way an ACME client would: new files renamed over
    /// the old ones. Returns the leaf's DER.
    fn install(&self, tls_dir: &Path, name: &str) -> Vec<u8> {
        fs::create_dir_all(tls_dir).expect("tls dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        fs::write(
            tls_dir.join("fullchain.pem.new"),
            format!("{}{}", leaf.pem(), self.pem),
        )
        .expect("cert");
        fs::write(tls_dir.join("privkey.pem.new"), key.serialize_pem()).expect("key");
        // Key first, then the certificate: the box may see a mismatched pair in between and
        // must keep serving the old one until both are in place.
        fs::rename(tls_dir.join("privkey.pem.new"), tls_dir.join("privkey.pem")).expect("rename");
        fs::rename(
            tls_dir.join("fullchain.pem.new"),
            tls_dir.join("fullchain.pem"),
        )
        .expect("rename");
        leaf.der().to_vec()
    }
}

/// A TLS handshake with a rustls client trusting only `ca`, then `GET path`.
/// Returns (the server's leaf certificate, the protocol version, the HTTP response text).
fn rustls_get(
    ca: &[u8],
    addr: &str,
    name: &str,
    path: &str,
) -> Result<(Vec<u8>, String, String), String> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.to_vec()))
        .map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), server).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    // A peer closing without close_notify after the response is fine here.
    let _ = tls.read_to_end(&mut body);
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no peer certificate")?;
    let version = format!("{:?}", conn.protocol_version());
    Ok((leaf, version, String::from_utf8_lossy(&body).into_owned()))
}

// ---------------------------------------------------------------------------------------------
// The box

fn box_config(extra: &str) -> String {
    format!(
        "data_dir = \"{{dir}}/data\"\n\
         [box]\nname = \"box-0042\"\nclinic_name = \"Kisumu Health Centre\"\n\
         [store]\nkey_file = \"{{dir}}/store.key\"\n\
         [http]\nlisten = [\"0.0.0.0:80\"]\ndrain_secs = 2\n\
         [tls]\nlisten = [\"0.0.0.0:443\"]\nreload_check_secs = 1\n\
         [discovery]\ninterface = \"lan0\"\nhost_name = \"kisumu-box\"\n\
         [discovery.dns]\npublic_name = \"{PUBLIC_NAME}\"\nlocal_names = [\"clinicbox.lan\"]\n{extra}"
    )
}

/// A box with an initialised store in `dir` (kept across restarts by the caller).
fn start_box(lan: &Lan, dir: &Path, extra: &str) -> RunningBox {
    let b = BoxBuilder::new()
        .netns(&lan.box_ns)
        .listen("0.0.0.0:80")
        .config(&box_config(extra).replace("{dir}", &dir.display().to_string()));
    let data = dir.join("data");
    if !data.join(clinicbox_store::DB_FILE).exists() {
        init_store(&data, &dir.join("store.key"), &["--no-recovery"]);
    }
    b.start()
}

fn status_json(lan: &Lan) -> serde_json::Value {
    lan.in_client(|| http_request(&format!("{BOX_IP}:80"), "GET", "/status.json", &[], b"").json())
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn tablets_find_the_box_by_dns_sd_and_dns_and_reach_it_over_https() {
    if !prerequisites("discovery") {
        return;
    }
    let lan = Lan::new("a");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let leaf = ca.install(&dir.path().join("data/tls"), PUBLIC_NAME);
    fs::write(dir.path().join("ca.pem"), &ca.pem).expect("ca.pem");
    let b = start_box(&lan, dir.path(), "");
    let avahi = Avahi::start(&lan);

    // DNS-SD: the custom service with the box's identity, and the conventional ones.
    let cb = avahi.find("_clinicbox._tcp", |r| r.name == INSTANCE);
    assert_eq!(cb.host, "kisumu-box.local");
    assert_eq!(cb.address, BOX_IP);
    assert_eq!(
        cb.port, 443,
        "the installed certificate makes https the tablets' URL: {cb:?}"
    );
    assert_eq!(cb.txt("id"), Some("box-0042"));
    assert_eq!(
        cb.txt("url"),
        Some(format!("https://{PUBLIC_NAME}").as_str())
    );
    assert_eq!(cb.txt("clinic"), Some("Kisumu Health Centre"));
    assert!(
        cb.txt("dhis2").is_some_and(|v| v.starts_with("2.")),
        "{cb:?}"
    );
    let https = avahi.find("_https._tcp", |r| r.name == INSTANCE);
    assert_eq!((https.port, https.txt("path")), (443, Some("/")));
    let http = avahi.find("_http._tcp", |r| r.name == INSTANCE);
    assert_eq!((http.port, http.txt("path")), (80, Some("/")));
    // The host name resolves (avahi asks with a multicast query; Android's resolver asks with
    // a one-shot unicast query, which mdns-sd ≥ 0.19.2 answers).
    let resolved = ok(avahi
        .cmd("avahi-resolve")
        .args(["-4", "-n", "kisumu-box.local"]));
    assert!(resolved.contains(BOX_IP), "{resolved}");

    // The LAN DNS responder: the box's names, A and AAAA, authoritative.
    for name in [PUBLIC_NAME, "clinicbox.lan", "CLINICBOX.LAN"] {
        let a = lan.dig(&[&format!("@{BOX_IP}"), "+short", name, "A"]);
        assert_eq!(a.trim(), BOX_IP, "{name}: {a}");
    }
    let aaaa = lan.dig(&[&format!("@{BOX_IP}"), "+short", PUBLIC_NAME, "AAAA"]);
    assert_eq!(aaaa.trim(), BOX_IP6);
    let full = lan.dig(&[&format!("@{BOX_IP}"), PUBLIC_NAME, "A"]);
    assert!(full.contains("flags: qr aa"), "{full}");
    // No uplink in this namespace: other names are refused, not left hanging.
    let other = lan.dig(&[&format!("@{BOX_IP}"), "example.org", "A"]);
    assert!(other.contains("status: REFUSED"), "{other}");

    // HTTPS: openssl with the test CA verifies the installed certificate for the public name.
    let s_client = run(lan
        .client("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("{BOX_IP}:443"),
            "-servername",
            PUBLIC_NAME,
        ])
        .arg("-CAfile")
        .arg(dir.path().join("ca.pem"))
        .args(["-verify_return_error", "-verify_hostname", PUBLIC_NAME])
        .stdin(Stdio::null()));
    let text = String::from_utf8_lossy(&s_client.stdout);
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "{text}{}",
        String::from_utf8_lossy(&s_client.stderr)
    );
    assert!(text.contains(PUBLIC_NAME));
    // TLS 1.1 is refused even when the client would allow it.
    let old = run(lan
        .client("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("{BOX_IP}:443"),
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ])
        .stdin(Stdio::null()));
    assert!(!old.status.success(), "a TLS 1.1 handshake succeeded");

    // A rustls client sees the same certificate, and the page says which one is in use.
    let ca_der = ca.der.clone();
    let (peer, version, resp) = lan
        .in_client(|| {
            rustls_get(
                &ca_der,
                &format!("{BOX_IP}:443"),
                PUBLIC_NAME,
                "/status.json",
            )
        })
        .expect("rustls");
    assert_eq!(peer, leaf);
    assert_eq!(version, "Some(TLSv1_3)");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let status = status_json(&lan);
    assert_eq!(status["certificate"]["source"], "installed");
    assert_eq!(status["capture_url"], format!("https://{PUBLIC_NAME}"));

    // A renewal is picked up without a restart.
    let renewed = ca.install(&dir.path().join("data/tls"), PUBLIC_NAME);
    let ca_der = ca.der.clone();
    eventually(Duration::from_secs(15), "the renewed certificate", || {
        let (peer, _, _) = lan
            .in_client(|| rustls_get(&ca_der, &format!("{BOX_IP}:443"), PUBLIC_NAME, "/"))
            .ok()?;
        (peer == renewed).then_some(())
    });

    // The LAN address changes (a new DHCP lease: the old one goes, then the new one comes;
    // deleting a primary address first would also delete a secondary in its subnet): mDNS
    // re-announces and DNS follows.
    ip(&[
        "-n",
        &lan.box_ns,
        "addr",
        "del",
        &format!("{BOX_IP}/24"),
        "dev",
        "lan0",
    ]);
    ip(&[
        "-n",
        &lan.box_ns,
        "addr",
        "add",
        "10.231.0.5/24",
        "dev",
        "lan0",
    ]);
    eventually(Duration::from_secs(15), "the new address over mDNS", || {
        let out = run(avahi
            .cmd("avahi-resolve")
            .args(["-4", "-n", "kisumu-box.local"]));
        String::from_utf8_lossy(&out.stdout)
            .contains("10.231.0.5")
            .then_some(())
    });
    eventually(Duration::from_secs(15), "DNS on the new address", || {
        let a = lan.dig(&["@10.231.0.5", "+short", PUBLIC_NAME, "A"]);
        (a.trim() == "10.231.0.5").then_some(())
    });
    drop(avahi);
    b.stop();
}

#[test]
fn the_box_says_goodbye_and_keeps_its_name_across_restarts_and_conflicts() {
    if !prerequisites("discovery") {
        return;
    }
    let lan = Lan::new("g");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut avahi = Avahi::start(&lan);
    let ours = |r: &Resolved| r.txt("id") == Some("box-0042");

    let b = start_box(&lan, dir.path(), "");
    assert_eq!(avahi.find("_clinicbox._tcp", ours).name, INSTANCE);
    // Goodbye: a browser that watches sees the service leave when the box stops.
    let lines = avahi.watch("_clinicbox._tcp");
    eventually(
        Duration::from_secs(10),
        "the watcher to see the box",
        || {
            lines
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.starts_with('='))
                .then_some(())
        },
    );
    b.stop();
    eventually(
        Duration::from_secs(5),
        "a goodbye (removal) for the box's service",
        || {
            lines
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.starts_with("-;") && unescape(l).contains(INSTANCE))
                .then_some(())
        },
    );

    // Restart: the same name.
    let b = start_box(&lan, dir.path(), "");
    assert_eq!(avahi.find("_clinicbox._tcp", ours).name, INSTANCE);
    b.stop();

    // Another device takes the name while the box is off: the box yields to it with the
    // deterministic "(2)" suffix, and gets the same name again after a restart.
    avahi.publish(INSTANCE, "_clinicbox._tcp", 9999, "id=impostor");
    avahi.find("_clinicbox._tcp", |r| r.txt("id") == Some("impostor"));
    let renamed = format!("{INSTANCE} (2)");
    for _ in 0..2 {
        let b = start_box(&lan, dir.path(), "");
        let found = avahi.find("_clinicbox._tcp", ours);
        assert_eq!(found.name, renamed);
        b.stop();
        eventually(
            Duration::from_secs(10),
            "the goodbye before the next start",
            || (!avahi.browse("_clinicbox._tcp").iter().any(ours)).then_some(()),
        );
    }
}

#[test]
fn dns_forwards_only_while_an_uplink_exists_and_only_for_the_lan() {
    if !prerequisites("discovery") {
        return;
    }
    let lan = Lan::new("d");
    let dir = tempfile::tempdir().expect("tempdir");
    // A fake upstream resolver in the client namespace: answers every A query with 192.0.2.77.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let upstream = {
        let (stop, ns) = (Arc::clone(&stop), lan.client_ns.clone());
        std::thread::spawn(move || {
            in_netns(&ns, || {
                let sock = UdpSocket::bind((CLIENT_IP, 53)).expect("bind upstream");
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                ready_tx.send(()).expect("ready");
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        if let Some(reply) = fake_answer(&buf[..n]) {
                            let _ = sock.send_to(&reply, from);
                        }
                    }
                }
            });
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("upstream ready");
    let b = start_box(
        &lan,
        dir.path(),
        &format!("upstream = [\"{CLIENT_IP}:53\"]\n"),
    );
    let at_box = format!("@{BOX_IP}");

    // Only the LAN side: nothing listens on a wildcard address.
    let listening =
        ok(Command::new("ip").args(["netns", "exec", &lan.box_ns, "ss", "-Hlun", "sport = :53"]));
    assert!(
        !listening.contains("0.0.0.0:53") && !listening.contains("*:53"),
        "{listening}"
    );
    assert!(listening.contains(&format!("{BOX_IP}:53")), "{listening}");

    // No uplink yet: refused.
    let out = lan.dig(&[&at_box, "example.org", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");

    // An LTE dongle comes up (a default route through another interface): forwarded.
    ip(&[
        "-n",
        &lan.box_ns,
        "link",
        "add",
        "wwan0",
        "type",
        "veth",
        "peer",
        "name",
        "wwan1",
    ]);
    ip(&[
        "-n",
        &lan.box_ns,
        "addr",
        "add",
        "10.232.0.1/24",
        "dev",
        "wwan0",
    ]);
    ip(&["-n", &lan.box_ns, "link", "set", "wwan0", "up"]);
    ip(&["-n", &lan.box_ns, "link", "set", "wwan1", "up"]);
    ip(&[
        "-n",
        &lan.box_ns,
        "route",
        "add",
        "default",
        "via",
        "10.232.0.2",
        "dev",
        "wwan0",
    ]);
    let out = lan.dig(&[&at_box, "+short", "example.org", "A"]);
    assert_eq!(out.trim(), "192.0.2.77");
    // The box's own names never leave the box.
    assert_eq!(
        lan.dig(&[&at_box, "+short", PUBLIC_NAME, "A"]).trim(),
        BOX_IP
    );

    // A client outside the LAN's subnets is refused everything: never an open resolver.
    ip(&[
        "-n",
        &lan.client_ns,
        "addr",
        "add",
        "10.233.0.2/24",
        "dev",
        "cli0",
    ]);
    ip(&[
        "-n",
        &lan.box_ns,
        "route",
        "add",
        "10.233.0.0/24",
        "dev",
        "lan0",
    ]);
    let out = lan.dig(&["-b", "10.233.0.2", &at_box, "example.org", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    let out = lan.dig(&["-b", "10.233.0.2", &at_box, PUBLIC_NAME, "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");

    // The uplink goes away: refused again.
    ip(&["-n", &lan.box_ns, "route", "del", "default"]);
    let out = lan.dig(&[&at_box, "example.org", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");

    b.stop();
    stop.store(true, Ordering::Relaxed);
    upstream.join().expect("upstream");
}

/// A DNS reply to `query` with one A record 192.0.2.77 (enough for a forwarding test).
fn fake_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: QNAME labels, then QTYPE and QCLASS.
    let mut i = 12;
    while *query.get(i)? != 0 {
        i += usize::from(query[i]) + 1;
    }
    let question = query.get(12..i + 5)?;
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&query[..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
    Some(r)
}
