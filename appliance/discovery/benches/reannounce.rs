//! How fast a new LAN address reaches the network: the time from an address change on the
//! box's LAN interface to the first mDNS packet that carries the new A record, for ClinicBox's
//! announcer (mdns-sd, nudged within 200 ms of a new address) and, as the peer measured in the same run,
//! avahi-daemon (netlink-driven). Goal (appliance-anchors.md G5.3): within 2 s.
//!
//! Runs as root in two network namespaces it creates and deletes (never in the host's, which
//! would multicast on the machine's real network):
//! `cargo bench -p clinicbox-discovery --bench reannounce` (rounds: `REANNOUNCE_ROUNDS`, default 5).

use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clinicbox_discovery::{Advertisement, Announcer, DiscoveryConfig};
use hickory_server::proto::op::Message;
use hickory_server::proto::rr::RData;

const BOX_NS: &str = "cbreannb";
const CLIENT_NS: &str = "cbreannc";

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

fn setup() {
    teardown();
    ip(&["netns", "add", BOX_NS]);
    ip(&["netns", "add", CLIENT_NS]);
    ip(&[
        "link", "add", "cbreanb", "type", "veth", "peer", "name", "cbreanc",
    ]);
    ip(&["link", "set", "cbreanb", "netns", BOX_NS]);
    ip(&["link", "set", "cbreanc", "netns", CLIENT_NS]);
    ip(&["-n", BOX_NS, "link", "set", "cbreanb", "name", "lan0"]);
    ip(&["-n", CLIENT_NS, "link", "set", "cbreanc", "name", "cli0"]);
    ip(&[
        "-n",
        CLIENT_NS,
        "addr",
        "add",
        "10.231.0.2/24",
        "dev",
        "cli0",
    ]);
    for (ns, dev) in [
        (BOX_NS, "lo"),
        (BOX_NS, "lan0"),
        (CLIENT_NS, "lo"),
        (CLIENT_NS, "cli0"),
    ] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
}

fn teardown() {
    for ns in [BOX_NS, CLIENT_NS] {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

fn enter(ns: &str) {
    let fd = fs::File::open(format!("/run/netns/{ns}")).expect("netns");
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Listens for mDNS in the client namespace and reports when an A record for `wanted` shows up.
fn sniffer() -> (mpsc::Sender<Ipv4Addr>, mpsc::Receiver<Instant>) {
    let (want_tx, want_rx) = mpsc::channel::<Ipv4Addr>();
    let (seen_tx, seen_rx) = mpsc::channel();
    std::thread::spawn(move || {
        enter(CLIENT_NS);
        let sock = UdpSocket::bind("0.0.0.0:5353").expect("bind 5353");
        sock.join_multicast_v4(
            &Ipv4Addr::new(224, 0, 0, 251),
            &Ipv4Addr::new(10, 231, 0, 2),
        )
        .expect("join");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut wanted = None;
        let mut buf = [0u8; 9000];
        loop {
            match want_rx.try_recv() {
                Ok(w) => wanted = Some(w),
                Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let Ok(n) = sock.recv(&mut buf) else { continue };
            let at = Instant::now();
            let Some(w) = wanted else { continue };
            let Ok(msg) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let has = msg
                .answers()
                .iter()
                .chain(msg.additionals())
                .any(|r| matches!(r.data(), RData::A(a) if a.0 == w));
            if has {
                wanted = None;
                let _ = seen_tx.send(at);
            }
        }
    });
    (want_tx, seen_rx)
}

/// Moves the box to a new address (old one dropped first, as a DHCP client does) and returns
/// the time until the new A record was on the wire.
fn round(
    i: u32,
    want: &mpsc::Sender<Ipv4Addr>,
    seen: &mpsc::Receiver<Instant>,
) -> Option<Duration> {
    let old = format!("10.231.0.{}/24", 10 + (i + 99) % 100);
    let new = Ipv4Addr::new(10, 231, 0, (10 + i % 100) as u8);
    while seen.try_recv().is_ok() {}
    want.send(new).ok()?;
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let _ = Command::new("ip")
        .args(["-n", BOX_NS, "addr", "del", &old, "dev", "lan0"])
        .stderr(Stdio::null())
        .status();
    ip(&[
        "-n",
        BOX_NS,
        "addr",
        "add",
        &format!("{new}/24"),
        "dev",
        "lan0",
    ]);
    let at = seen.recv_timeout(Duration::from_secs(10)).ok()?;
    Some(at.saturating_duration_since(t0))
}

fn measure(
    name: &str,
    rounds: u32,
    want: &mpsc::Sender<Ipv4Addr>,
    seen: &mpsc::Receiver<Instant>,
) -> Vec<Duration> {
    let mut v = Vec::new();
    for i in 1..=rounds {
        match round(i, want, seen) {
            Some(d) => v.push(d),
            None => println!("{name}: round {i}: no announcement within 10 s"),
        }
        // Let the responder settle (probing, rate limits) before the next change.
        std::thread::sleep(Duration::from_millis(1500));
    }
    v.sort();
    v
}

fn clinicbox(
    rounds: u32,
    want: &mpsc::Sender<Ipv4Addr>,
    seen: &mpsc::Receiver<Instant>,
) -> Vec<Duration> {
    ip(&[
        "-n",
        BOX_NS,
        "addr",
        "add",
        "10.231.0.109/24",
        "dev",
        "lan0",
    ]);
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // The announcer's thread is created inside the box namespace (threads inherit it).
    let t = std::thread::spawn(move || {
        enter(BOX_NS);
        let cfg = DiscoveryConfig {
            host_name: "bench-box".into(),
            ipv6: false,
            ..DiscoveryConfig::default()
        };
        let ad = Advertisement {
            box_id: "bench".into(),
            clinic_name: "Bench".into(),
            dhis2_version: "2.42.3".into(),
            server_url: "http://10.231.0.10".into(),
            http_port: Some(80),
            https_port: None,
        };
        let a = Announcer::start(&cfg, "lan0", &ad).expect("announcer");
        tx.send(()).expect("started");
        let _ = stop_rx.recv();
        a.shutdown();
    });
    rx.recv().expect("announcer started");
    std::thread::sleep(Duration::from_secs(2));
    let v = measure("clinicbox", rounds, want, seen);
    let _ = stop_tx.send(());
    t.join().expect("announcer thread");
    let _ = Command::new("ip")
        .args(["-n", BOX_NS, "addr", "flush", "dev", "lan0"])
        .status();
    v
}

fn avahi(
    rounds: u32,
    want: &mpsc::Sender<Ipv4Addr>,
    seen: &mpsc::Receiver<Instant>,
) -> Option<Vec<Duration>> {
    if Command::new("avahi-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("avahi-daemon not installed: no peer figures");
        return None;
    }
    ip(&[
        "-n",
        BOX_NS,
        "addr",
        "add",
        "10.231.0.109/24",
        "dev",
        "lan0",
    ]);
    let dir = std::env::temp_dir().join(format!("cb-reannounce-{}", std::process::id()));
    fs::create_dir_all(&dir).ok()?;
    let bus = dir.join("bus");
    fs::write(
        dir.join("dbus.conf"),
        format!(
            "<busconfig><type>system</type><listen>unix:path={}</listen><auth>EXTERNAL</auth><policy context=\"default\">\
             <allow user=\"*\"/><allow own=\"*\"/><allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>",
            bus.display()
        ),
    )
    .ok()?;
    fs::write(
        dir.join("avahi.conf"),
        "[server]\nhost-name=bench-avahi\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=lan0\nratelimit-interval-usec=0\n[wide-area]\nenable-wide-area=no\n",
    )
    .ok()?;
    fs::create_dir_all("/run/avahi-daemon").ok()?;
    let mut children: Vec<Child> = Vec::new();
    let spawn = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", BOX_NS])
            .args(args)
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", bus.display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    children.push(
        spawn(&[
            "dbus-daemon",
            &format!("--config-file={}", dir.join("dbus.conf").display()),
            "--nofork",
            "--nopidfile",
        ])
        .ok()?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let script = format!(
        "mount -t tmpfs tmpfs /run/avahi-daemon && exec avahi-daemon -f {} --no-chroot --no-drop-root --no-rlimits",
        dir.join("avahi.conf").display()
    );
    children.push(spawn(&["unshare", "-m", "sh", "-c", &script]).ok()?);
    std::thread::sleep(Duration::from_secs(3));
    let v = measure("avahi-daemon", rounds, want, seen);
    for c in children.iter_mut().rev() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = fs::remove_dir_all(&dir);
    Some(v)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(v: &[Duration]) -> String {
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(a), Some(m), Some(b)) => format!(
            "{:>8.0} {:>8.0} {:>8.0} {:>4}",
            ms(*a),
            ms(*m),
            ms(*b),
            v.len()
        ),
        _ => "       -        -        -    0".to_owned(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIPPED: reannounce needs root (network namespaces)");
        return;
    }
    let rounds = std::env::var("REANNOUNCE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    setup();
    let (want, seen) = sniffer();
    std::thread::sleep(Duration::from_millis(300));
    let ours = clinicbox(rounds, &want, &seen);
    let peer = avahi(rounds, &want, &seen);
    teardown();

    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!("\nre-announce after a LAN address change ({rounds} rounds, {cpu})");
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>4}",
        "responder", "min ms", "med ms", "max ms", "n"
    );
    println!("{:<28} {}", "clinicbox (mdns-sd + nudge)", summary(&ours));
    if let Some(p) = &peer {
        println!("{:<28} {}", "avahi-daemon (netlink)", summary(p));
        if let (Some(a), Some(b)) = (ours.get(ours.len() / 2), p.get(p.len() / 2)) {
            println!(
                "median ratio clinicbox / avahi-daemon: {:.2}",
                a.as_secs_f64() / b.as_secs_f64().max(1e-6)
            );
            // A figure line for `./build.sh bench`'s table (format: tests/bench/src/figures.rs).
            println!(
                "FIGURE\tdiscovery\tre-announce after an address change\t{:.3}\tms\tavahi-daemon\t{:.3}",
                a.as_secs_f64() * 1e3,
                b.as_secs_f64() * 1e3
            );
        }
    }
    let within = ours
        .iter()
        .filter(|d| **d <= Duration::from_secs(2))
        .count();
    println!(
        "clinicbox rounds within the 2 s goal: {within}/{}",
        ours.len()
    );
}
