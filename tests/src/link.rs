//! A bad LTE link between the uplink and national, as a TCP proxy on loopback.
//!
//! This machine's kernel has no `sch_netem`, so `tc netem` cannot shape a namespace's link
//! here; the proxy gives the same effects at the TCP level, in both directions: a one-way delay
//! before each burst, a rate limit, stalls standing for lost segments (a retransmission
//! timeout each), and connections cut at a random byte (an answer lost after national applied
//! the request, a request cut half-way). Every random choice comes from a seed, so a failure
//! can be replayed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How bad the link is.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// One-way delay before each burst (a request, an answer).
    pub delay: Duration,
    /// Bits per second, each direction.
    pub rate_bps: u64,
    /// Share of 1,460-byte segments lost; each loss costs `rto`.
    pub loss: f64,
    /// The retransmission timeout a lost segment costs.
    pub rto: Duration,
    /// Share of bursts (requests going up, answers coming down) cut at a random byte of their
    /// first 512 bytes: the connection dies both ways.
    pub cut: f64,
}

impl Profile {
    /// The bad day: 800 ms, 80 kbit/s, 20 % loss; `cut` of the connections cut.
    pub fn lte_bad_day(cut: f64) -> Profile {
        Profile {
            delay: Duration::from_millis(800),
            rate_bps: 80_000,
            loss: 0.20,
            rto: Duration::from_millis(400),
            cut,
        }
    }
}

/// Bytes that crossed the link (payload, both directions), connections and cuts.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub up_bytes: AtomicU64,
    pub down_bytes: AtomicU64,
    pub connections: AtomicU64,
    pub cuts: AtomicU64,
}

/// A running link: connect to [`LossyLink::addr`] to reach the target through it.
pub struct LossyLink {
    pub addr: SocketAddr,
    pub stats: Arc<LinkStats>,
    stop: Arc<AtomicBool>,
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn chance(state: &mut u64, p: f64) -> bool {
    (next(state) % 1_000_000) as f64 / 1_000_000.0 < p
}

impl LossyLink {
    /// Starts the proxy on 127.0.0.1 in front of `target`.
    pub fn start(target: SocketAddr, profile: Profile, seed: u64) -> LossyLink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the link");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(LinkStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = seed | 1;
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        st.connections.fetch_add(1, Ordering::Relaxed);
                        let seed = next(&mut rng);
                        let st = st.clone();
                        std::thread::spawn(move || carry(client, target, profile, seed, st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        LossyLink { addr, stats, stop }
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection: two pumps; a cut in either direction closes both.
fn carry(client: TcpStream, target: SocketAddr, p: Profile, seed: u64, stats: Arc<LinkStats>) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let cut = Arc::new(AtomicBool::new(false));
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (cut_up, st_up) = (cut.clone(), stats.clone());
    let up = std::thread::spawn(move || {
        Pump {
            p,
            cut: &cut_up,
            stats: &st_up,
            up: true,
        }
        .run(client, server, seed)
    });
    Pump {
        p,
        cut: &cut,
        stats: &stats,
        up: false,
    }
    .run(s2, c2, seed.rotate_left(17));
    let _ = up.join();
}

/// One direction of a connection.
struct Pump<'a> {
    p: Profile,
    cut: &'a AtomicBool,
    stats: &'a LinkStats,
    up: bool,
}

impl Pump<'_> {
    fn run(&self, mut from: TcpStream, mut to: TcpStream, seed: u64) {
        let (p, mut rng) = (self.p, seed | 1);
        let mut buf = [0u8; 1460];
        let (mut sent, mut cut_at) = (0u64, None);
        let mut last = Instant::now() - p.delay;
        let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
        while !self.cut.load(Ordering::Relaxed) {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(_) => break,
            };
            // A new burst after a quiet spell pays the one-way delay, and may be cut.
            let mut wait = Duration::ZERO;
            if last.elapsed() > p.delay {
                wait = p.delay;
                cut_at = chance(&mut rng, p.cut).then(|| sent + next(&mut rng) % 512);
            }
            wait += Duration::from_secs_f64(n as f64 * 8.0 / p.rate_bps as f64);
            if chance(&mut rng, p.loss) {
                wait += p.rto;
            }
            std::thread::sleep(wait);
            if cut_at.is_some_and(|at| sent + n as u64 > at) {
                self.cut.store(true, Ordering::Relaxed);
                self.stats.cuts.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n as u64;
            let counter = if self.up {
                &self.stats.up_bytes
            } else {
                &self.stats.down_bytes
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            last = Instant::now();
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}
