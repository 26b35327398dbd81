//! Benchmark: one tablet's login + full metadata sync of the demo package over loopback HTTP,
//! against the real router and store, compared in the same run with a peer that serves the very
//! same response bytes from a hash map (the floor: HTTP, TCP and JSON transfer only). Prints
//! total time per sync, requests/s, the ratio to the peer, and peak RSS.
//!
//! `cargo test -p clinicbox-api --release --test sync_bench -- --ignored --nocapture`
//! (`./build.sh bench` runs it). Bounded: a fixed number of syncs, loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SYNCS: usize = 30;

/// A minimal HTTP/1.1 keep-alive client (one connection, like OkHttp's pool for one host).
struct Client {
    stream: BufReader<TcpStream>,
    auth: String,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr, auth: String) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            stream: BufReader::new(s),
            auth,
        }
    }

    /// GET `path`; returns (status, body).
    async fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nUser-Agent: com.dhis2/1.14.0/3.4.1/Android_34\r\nAccept: application/json\r\n\r\n",
            self.auth
        );
        self.stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = Some(v.trim().parse::<usize>().unwrap());
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await.unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0u8; n + 2];
                self.stream.read_exact(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body = vec![0u8; len.unwrap_or(0)];
            self.stream.read_exact(&mut body).await.unwrap();
        }
        (status, body)
    }
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `SYNCS` full syncs; returns (per-sync durations, requests, bytes).
async fn run(addr: std::net::SocketAddr, seq: &[String]) -> (Vec<Duration>, usize, usize) {
    let mut times = Vec::new();
    let (mut reqs, mut bytes) = (0, 0);
    for _ in 0..SYNCS {
        let mut c =
            Client::connect(addr, common::basic(common::ANDROID.0, common::ANDROID.1)).await;
        let t = Instant::now();
        for path in seq {
            let (status, body) = c.get(path).await;
            assert_eq!(status, 200, "{path}");
            reqs += 1;
            bytes += body.len();
        }
        times.push(t.elapsed());
    }
    (times, reqs, bytes)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture (./build.sh bench)"]
async fn bench_tablet_metadata_sync() {
    let rss_start = peak_rss_kib();
    let b = common::Box::demo().await;
    let seq = common::sync_sequence();
    let box_addr = serve(b.app.clone()).await;

    // Cold: the first sync pays one Argon2id verification.
    let mut cold = Client::connect(
        box_addr,
        common::basic(common::ANDROID.0, common::ANDROID.1),
    )
    .await;
    let t = Instant::now();
    let mut recorded: HashMap<String, Vec<u8>> = HashMap::new();
    for path in &seq {
        let (status, body) = cold.get(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        recorded.insert(path.clone(), body);
    }
    let cold_sync = t.elapsed();

    let (mut box_times, reqs, bytes) = run(box_addr, &seq).await;
    let rss_box = peak_rss_kib();

    // The peer: the same bytes from memory.
    let recorded = Arc::new(recorded);
    let peer = Router::new().fallback(move |req: Request| {
        let recorded = recorded.clone();
        async move {
            let key = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let body = recorded.get(&key).cloned().unwrap_or_default();
            Response::builder()
                .header("content-type", "application/json;charset=UTF-8")
                .body(Body::from(body))
                .unwrap()
        }
    });
    let peer_addr = serve(peer).await;
    let (mut peer_times, _, _) = run(peer_addr, &seq).await;

    let total_box: Duration = box_times.iter().sum();
    let total_peer: Duration = peer_times.iter().sum();
    let med_box = median(&mut box_times);
    let med_peer = median(&mut peer_times);
    let per_sync = seq.len();
    println!();
    println!(
        "tablet metadata sync of the demo package over loopback ({SYNCS} syncs, {per_sync} requests each, {} KiB per sync)",
        bytes / SYNCS / 1024
    );
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<44} {:>12} {:>12} {:>12}",
        "", "median sync", "requests/s", "total"
    );
    println!(
        "{:<44} {:>9.2} ms {:>12.0} {:>9.1} ms",
        "clinicbox-api (router + store snapshot)",
        med_box.as_secs_f64() * 1e3,
        reqs as f64 / total_box.as_secs_f64(),
        total_box.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>9.2} ms {:>12.0} {:>9.1} ms",
        "peer: same bytes from a hash map",
        med_peer.as_secs_f64() * 1e3,
        reqs as f64 / total_peer.as_secs_f64(),
        total_peer.as_secs_f64() * 1e3
    );
    println!(
        "ratio clinicbox/peer (median sync time): {:.2}x",
        med_box.as_secs_f64() / med_peer.as_secs_f64()
    );
    // A figure line for `./build.sh bench`'s table (format: tests/bench/src/figures.rs).
    println!(
        "FIGURE\tsync\tmetadata sync of the demo package\t{:.3}\tms\tsame bytes from a hash map\t{:.3}",
        med_box.as_secs_f64() * 1e3,
        med_peer.as_secs_f64() * 1e3
    );
    println!(
        "first (cold) sync incl. one Argon2id password check: {:.1} ms",
        cold_sync.as_secs_f64() * 1e3
    );
    println!(
        "peak RSS: {} KiB at start, {} KiB after the box's syncs (whole test process)",
        rss_start, rss_box
    );
}
