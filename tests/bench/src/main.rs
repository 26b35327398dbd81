//! `clinicbox-bench store`: durable single-record writes from many concurrent writers (tablets
//! posting at once), through the ClinicBox store, raw redb and SQLite (WAL, synchronous=FULL),
//! on the same records and the same disk, in one run. Prints records/s and the ratio.
//!
//! Set `CLINICBOX_BENCH_DIR` to run on the real medium (an SD card, an SSD); the default is a
//! temporary directory. Absolute figures depend on fsync cost; the ratios are what transfer.

/// Counts the bytes allocated, so a structure's memory is measured exactly (resident memory
/// keeps what the allocator holds on to after a free).
#[global_allocator]
static ALLOCATED: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Bytes allocated now.
pub(crate) fn allocated() -> usize {
    ALLOCATED.allocated()
}

mod aggregate;
mod backup;
mod exhaustion;
mod figures;
mod memory;
mod pull;
mod restart;
mod scale;
mod serve_memory;
mod tablets;
mod tracker;
mod uplink;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;
use clinicbox_store::{Collection, NewKeySlot, Store};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, clap::Subcommand)]
enum Bench {
    /// Concurrent durable single-record writes: store vs raw redb vs SQLite.
    Store {
        /// Concurrent writers.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Records each writer writes, one durable write at a time.
        #[arg(long, default_value_t = 300)]
        per_writer: usize,
    },
    /// A monthly data set upload and download through the API vs the store's raw rate.
    Aggregate {
        /// Values in the data set.
        #[arg(long, default_value_t = 500)]
        values: usize,
        /// Months imported (each a fresh data set), then re-posted and changed.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// What one logged-in tablet can cost: a 12 MB value, stored reports, 300,000 empty
    /// objects; answer sizes, store growth and memory next to an ordinary upload.
    Exhaustion,
    /// The uplink on a bad LTE link vs the Android app's way: bytes per event and per data
    /// value, push time, peak RSS (needs `clinicbox` and `national_standin` built alongside).
    Uplink {
        /// Patients (each: tracked entity, enrollment, two events, three notes).
        #[arg(long, default_value_t = 300)]
        patients: u32,
    },
    /// The uplink's pull on a bad LTE link: the first full metadata pull, a round with nothing
    /// changed, a change at national until a tablet sees it (needs `clinicbox` and
    /// `national_standin` built alongside).
    Pull,
    /// A backup and a restore next to copying the store file: time and size.
    Backup {
        /// Patients in the store (each: tracked entity, enrollment, two events).
        #[arg(long, default_value_t = 100_000)]
        patients: u32,
    },
    /// The store's resident memory after reading every record of `patients` patients, with the
    /// database's default page cache next to the box's bound.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        patients: u32,
    },
    /// The tracker catalog's start-up on a store of `patients` patients: from its snapshot and
    /// the changes after it, next to a rebuild from every record.
    Restart {
        #[arg(long, default_value_t = 100_000)]
        patients: u32,
    },
    /// A tablet's requests on a small box and a large one: "anything new?", a page of 50, the
    /// full download, the restart and the store's bytes per patient, with their ratios.
    Scale {
        #[arg(long, default_value_t = 1_000)]
        small: u32,
        #[arg(long, default_value_t = 100_000)]
        large: u32,
    },
    /// One tablet and `tablets` tablets uploading at once, on this disk and with every sync of
    /// the store taking `sync_ms` (an SD card's fsync): patients/s, latency, writes per commit.
    Tablets {
        #[arg(long, default_value_t = 10)]
        sync_ms: u64,
        #[arg(long, default_value_t = 20)]
        tablets: usize,
    },
    /// The real daemon's resident memory holding `patients` patients, after start and after
    /// twenty tablets, next to an empty demo box's (needs `clinicbox` built alongside).
    ServeMemory {
        #[arg(long, default_value_t = 100_000)]
        patients: u32,
    },
    /// One process of `memory`: opens DIR with a MIB cache and reads every record twice.
    #[command(hide = true)]
    MemoryScan {
        dir: std::path::PathBuf,
        cache_mib: usize,
    },
    /// Prints the figure lines of a `./build.sh bench` log as one table with their ratios.
    Table {
        /// The log of the benchmark run.
        log: std::path::PathBuf,
    },
    /// Tracker upload (one POST of 200 TEs + 200 enrollments + 1,000 events) vs the store's
    /// raw write, download of 500 TEs, search at 10k TEs, peak RSS.
    Tracker {
        /// Upload rounds (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Tracked entities in the store for the search measurement.
        #[arg(long, default_value_t = 10_000)]
        search_tes: usize,
    },
}

/// One system under test: `write` must return only once the record is durable.
trait Peer: Sync {
    fn name(&self) -> &'static str;
    fn write(&self, key: &str, body: &[u8]) -> anyhow::Result<()>;
}

struct ClinicBoxStore(Store);

impl Peer for ClinicBoxStore {
    fn name(&self) -> &'static str {
        "clinicbox-store (encrypted, group commit)"
    }
    fn write(&self, key: &str, body: &[u8]) -> anyhow::Result<()> {
        let (key, body) = (key.to_owned(), body.to_vec());
        self.0
            .write_blocking(move |ctx| ctx.put(Collection::EVENTS, &key, body))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}

struct RawRedb(redb::Database);

const RAW: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("events");

impl Peer for RawRedb {
    fn name(&self) -> &'static str {
        "raw redb (one transaction per record)"
    }
    fn write(&self, key: &str, body: &[u8]) -> anyhow::Result<()> {
        let txn = self.0.begin_write()?;
        txn.open_table(RAW)?.insert(key, body)?;
        txn.commit()?;
        Ok(())
    }
}

struct Sqlite(std::path::PathBuf);

impl Sqlite {
    fn open(path: &Path) -> anyhow::Result<rusqlite::Connection> {
        let c = rusqlite::Connection::open(path)?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "FULL")?;
        c.busy_timeout(Duration::from_secs(60))?;
        Ok(c)
    }
}

thread_local! {
    static SQLITE: std::cell::RefCell<Option<rusqlite::Connection>> = const { std::cell::RefCell::new(None) };
}

impl Peer for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite (WAL, synchronous=FULL, connection per writer)"
    }
    fn write(&self, key: &str, body: &[u8]) -> anyhow::Result<()> {
        SQLITE.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Sqlite::open(&self.0)?);
            }
            let c = slot.as_ref().expect("just opened");
            c.execute(
                "INSERT INTO events (key, body) VALUES (?1, ?2)",
                (key, body),
            )?;
            Ok(())
        })
    }
}

fn record(i: usize) -> Vec<u8> {
    // 292 bytes of event JSON, as in the feasibility measurements.
    let mut s = format!(
        "{{\"event\":\"ev{i:09}\",\"program\":\"IpHINAT79UW\",\"programStage\":\"A03MvHHogjR\",\"orgUnit\":\"DiszpKrYNg8\",\"status\":\"COMPLETED\",\"occurredAt\":\"2026-11-21T10:00:00.000\",\"dataValues\":[{{\"dataElement\":\"a3kGcGDCuk6\",\"value\":\"{i}\"}}]"
    );
    while s.len() < 291 {
        s.push(' ');
    }
    s.push('}');
    s.into_bytes()
}

fn run(peer: &dyn Peer, writers: usize, per_writer: usize) -> anyhow::Result<f64> {
    let barrier = Arc::new(Barrier::new(writers));
    let start = std::sync::Mutex::new(None::<Instant>);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let barrier = barrier.clone();
                let start = &start;
                s.spawn(move || -> anyhow::Result<()> {
                    if barrier.wait().is_leader() {
                        *start.lock().expect("lock") = Some(Instant::now());
                    }
                    for i in 0..per_writer {
                        let n = w * per_writer + i;
                        peer.write(&format!("ev{n:09}"), &record(n))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(())
    })?;
    let started = start
        .lock()
        .expect("lock")
        .ok_or_else(|| anyhow::anyhow!("no start"))?;
    Ok((writers * per_writer) as f64 / started.elapsed().as_secs_f64())
}

fn bench_store(writers: usize, per_writer: usize) -> anyhow::Result<()> {
    let base = std::env::var_os("CLINICBOX_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b)?,
        None => tempfile::tempdir()?,
    };
    println!(
        "clinicbox-bench store: {writers} concurrent writers x {per_writer} durable single-record writes (292-byte records)"
    );
    println!(
        "directory: {}  machine: {} cores",
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let (store, _) = Store::create(
        &dir.path().join("store"),
        NewKeySlot::KeyFile {
            path: dir.path().join("store.key"),
            label: "bench".into(),
            create: true,
        },
    )?;
    let ours = ClinicBoxStore(store);
    let ours_rate = run(&ours, writers, per_writer)?;
    let stats = ours.0.stats()?;
    ours.0.close()?;

    let raw = RawRedb(redb::Database::create(dir.path().join("raw.redb"))?);
    let raw_rate = run(&raw, writers, per_writer)?;

    let sqlite_path = dir.path().join("bench.sqlite");
    Sqlite::open(&sqlite_path)?.execute(
        "CREATE TABLE events (key TEXT PRIMARY KEY, body BLOB NOT NULL)",
        (),
    )?;
    let sqlite = Sqlite(sqlite_path);
    let sqlite_rate = run(&sqlite, writers, per_writer)?;

    println!();
    println!("{:<56} {:>12}", "peer", "records/s");
    println!("{:<56} {:>12.0}", ours.name(), ours_rate);
    println!("{:<56} {:>12.0}", raw.name(), raw_rate);
    println!("{:<56} {:>12.0}", sqlite.name(), sqlite_rate);
    println!();
    println!(
        "store commits: {} for {} writes ({:.1} writes per fsync)",
        stats.commits,
        stats.writes,
        stats.writes as f64 / stats.commits.max(1) as f64
    );
    println!(
        "ratio clinicbox-store / SQLite(WAL, FULL): {:.2} (target >= 1.0)",
        ours_rate / sqlite_rate
    );
    println!(
        "ratio clinicbox-store / raw redb:          {:.2}",
        ours_rate / raw_rate
    );
    let name = format!("durable writes, {writers} writers");
    figures::figure(
        "store",
        &name,
        ours_rate,
        "rec/s",
        "SQLite (WAL, FULL)",
        sqlite_rate,
    );
    figures::figure("store", &name, ours_rate, "rec/s", "raw redb", raw_rate);
    Ok(())
}

/// Points the tests' helpers at the `clinicbox` built next to this binary (./build.sh bench),
/// unless `CLINICBOX_BIN` names one.
/// A new store in `data` opened by the demo's own key file next to it (`data/demo.key`), so
/// `serve --demo` and the benchmarks' own readers open it too.
fn demo_store(data: &std::path::Path) -> anyhow::Result<clinicbox_store::Store> {
    let (store, _) = clinicbox_store::Store::create(
        data,
        clinicbox_store::NewKeySlot::KeyFile {
            path: data.join("demo.key"),
            label: "bench".into(),
            create: true,
        },
    )?;
    Ok(store)
}

fn use_binaries_beside_this_one() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    if std::env::var_os("CLINICBOX_BIN").is_none() {
        clinicbox_tests::set_binary(dir.join("clinicbox"));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Store {
            writers,
            per_writer,
        } => bench_store(writers, per_writer),
        Bench::Aggregate { values, rounds } => aggregate::run(values, rounds),
        Bench::Tracker { rounds, search_tes } => tracker::run(rounds, search_tes),
        Bench::Exhaustion => exhaustion::run(),
        Bench::Uplink { patients } => uplink::run(patients),
        Bench::Pull => pull::run(),
        Bench::Table { log } => figures::table(&log),
        Bench::Backup { patients } => backup::run(patients),
        Bench::Memory { patients } => memory::run(patients),
        Bench::MemoryScan { dir, cache_mib } => memory::scan(&dir, cache_mib),
        Bench::Restart { patients } => restart::run(patients),
        Bench::Scale { small, large } => scale::run(small, large),
        Bench::ServeMemory { patients } => serve_memory::run(patients),
        Bench::Tablets { sync_ms, tablets } => tablets::run(sync_ms, tablets),
    }
}
