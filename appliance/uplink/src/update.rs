//! Fetching an update while the link is up: the uplink is the only process that reaches the
//! WAN, so it verifies the mirror's TUF repository and downloads the chosen release into a
//! staging folder on `/data`; `clinicbox update` (no network) verifies that folder again and
//! writes the slot.
//!
//! A release is hundreds of megabytes over LTE that drops: the download goes to
//! `<file>.part` and each attempt asks only for what is missing (`Range`), across rounds and
//! reboots, with no retry cap (a round that loses the link ends; the next one resumes). The
//! whole file is checked against the signed length and SHA-256 before it takes its name.
//! A pass downloads for a bounded slice of time, so rounds keep pushing the clinic's data
//! while a release arrives over many of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clinicbox_update::chunks::{self, Chunk, Index};
use clinicbox_update::{ClockFloor, Recording, Release, Source, TargetFile, UpdateError};
use futures_util::StreamExt;
use jiff::Timestamp;
use semver::Version;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

use crate::{UplinkConfig, UplinkError};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("the update mirror: {0}")]
    Mirror(String),
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error("staging {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The whole file did not match what was signed; the partial download was dropped.
    #[error("the downloaded {0} does not match its signed hash; it will be fetched again")]
    Corrupt(String),
    /// The pass's time was up; the download resumes at the next pass.
    #[error("downloading {name}: {have} of {length} bytes so far")]
    Paused {
        name: String,
        have: u64,
        length: u64,
        /// Bytes a second during this pass: what the time left is judged by.
        per_sec: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a staging pass left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// Nothing newer than the running release for this board.
    Nothing,
    /// The newest release came back to the old slot on this box: it is not fetched again.
    RolledBack(Version),
    /// The release is whole and verified in `staging/targets/` (its bundle, or its chunk
    /// index and the chunks the running slot lacks), its metadata in `staging/metadata/`.
    Ready {
        release: Release,
        /// Bytes staged for it: what came over the link.
        fetched: u64,
    },
}

/// tough's transport over the uplink's HTTPS client.
#[derive(Debug, Clone)]
pub struct HttpsTransport {
    http: reqwest::Client,
}

impl HttpsTransport {
    pub fn new(http: reqwest::Client) -> HttpsTransport {
        HttpsTransport { http }
    }
}

#[tough::async_trait]
impl Transport for HttpsTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let fail = |kind, e: String| TransportError::new_with_cause(kind, &url, e);
        let mut resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| fail(TransportErrorKind::Other, e.to_string()))?;
        let status = resp.status();
        // A file that is not there ends the walk up the root chain; object stores answer 403.
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Err(fail(TransportErrorKind::FileNotFound, status.to_string()));
        }
        if !status.is_success() {
            return Err(fail(TransportErrorKind::Other, status.to_string()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| fail(TransportErrorKind::Other, e.to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > clinicbox_update::MAX_METADATA_BYTES {
                return Err(fail(TransportErrorKind::Other, "too large".into()));
            }
        }
        let once = futures_util::stream::once(async move { Ok(tough::Bytes::from(body)) });
        Ok(Box::pin(once))
    }
}

/// Brings `<dir>/<file>` to the signed target: resumes `<file>.part`, checks the whole file,
/// then renames it. Already whole: nothing is fetched. Past `until`, it stops where it is.
pub async fn download(
    http: &reqwest::Client,
    url: &Url,
    dir: &Path,
    target: &TargetFile,
    until: Option<tokio::time::Instant>,
) -> Result<PathBuf, StageError> {
    let done = dir.join(&target.file);
    if tokio::fs::try_exists(&done).await.unwrap_or(false) {
        return Ok(done);
    }
    let part = dir.join(format!("{}.part", target.file));
    let mut have = match tokio::fs::metadata(&part).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    if have > target.length {
        have = 0;
    }
    if have < target.length {
        let started = tokio::time::Instant::now();
        let before = have;
        let have = fetch_from(http, url, &part, have, target.length, until).await?;
        if have < target.length {
            let secs = started.elapsed().as_secs().max(1);
            return Err(StageError::Paused {
                name: target.file.clone(),
                have,
                length: target.length,
                per_sec: have.saturating_sub(before) / secs,
            });
        }
    }
    if sha256_of(&part).await? != target.sha256 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(StageError::Corrupt(target.file.clone()));
    }
    tokio::fs::rename(&part, &done).await.map_err(io(&done))?;
    Ok(done)
}

/// Appends bytes `have..length` of `url` to `part`, until the answer ends or `until`; how many
/// bytes the part then holds. A mirror that ignores `Range` sends the whole file, which then
/// replaces the part.
async fn fetch_from(
    http: &reqwest::Client,
    url: &Url,
    part: &Path,
    have: u64,
    length: u64,
    until: Option<tokio::time::Instant>,
) -> Result<u64, StageError> {
    let mirror = |e: reqwest::Error| StageError::Mirror(e.to_string());
    let mut req = http.get(url.clone());
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().await.map_err(mirror)?;
    let status = resp.status();
    let mut at = match status {
        reqwest::StatusCode::PARTIAL_CONTENT => have,
        s if s.is_success() => 0,
        s => return Err(StageError::Mirror(format!("{url}: {s}"))),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(at == 0)
        .open(part)
        .await
        .map_err(io(part))?;
    if at > 0 {
        file.set_len(at).await.map_err(io(part))?;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(at))
            .await
            .map_err(io(part))?;
    }
    let result = async {
        while let Some(chunk) = resp.chunk().await.map_err(mirror)? {
            if at + chunk.len() as u64 > length {
                return Err(StageError::Mirror(format!("{url}: longer than signed")));
            }
            file.write_all(&chunk).await.map_err(io(part))?;
            at += chunk.len() as u64;
            if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                break;
            }
        }
        Ok(at)
    }
    .await;
    // What arrived is kept for the next attempt, cut or not.
    file.sync_data().await.map_err(io(part))?;
    result
}

async fn sha256_of(path: &Path) -> Result<[u8; 32], StageError> {
    let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await.map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// "about 3 h 10 min left at 18 KB/s": the rest of a download at this pass's rate (LTE's
/// rate changes by the hour; it is a hint, not a promise).
fn time_left(rest: u64, per_sec: u64) -> String {
    if per_sec == 0 {
        return "no progress in the last pass".into();
    }
    let minutes = (rest / per_sec).div_ceil(60);
    let (h, m) = (minutes / 60, minutes % 60);
    let when = match (h, m) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    };
    format!("about {when} left at {} KB/s", per_sec / 1000)
}

/// "7.2 MB": a download's size as a person reads it.
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// How long one pass may download before the round loop takes over again.
const PASS_SLICE: Duration = Duration::from_secs(10 * 60);

/// The uplink's update checks, as `[uplink.update]` configures them.
pub struct Checker {
    http: reqwest::Client,
    mirror: Url,
    board: String,
    dir: PathBuf,
    root: Vec<u8>,
    floor: ClockFloor,
    running: Version,
    installer_state: PathBuf,
}

impl Checker {
    /// `None` when updates are off (no `mirror_url`).
    pub fn from_config(cfg: &UplinkConfig) -> Result<Option<Checker>, UplinkError> {
        let u = &cfg.update;
        let Some(mirror) = &u.mirror_url else {
            return Ok(None);
        };
        let bad = |m: String| UplinkError::Config(format!("[uplink.update] {m}"));
        let mirror = Url::parse(mirror).map_err(|e| bad(format!("mirror_url: {e}")))?;
        let board = u
            .board
            .clone()
            .ok_or_else(|| bad("board is not set".into()))?;
        let root = std::fs::read(&u.root_file)
            .map_err(|e| bad(format!("root_file {}: {e}", u.root_file.display())))?;
        let floor_file = u.dir.join("clock-floor");
        std::fs::create_dir_all(&u.dir).map_err(|e| bad(format!("{}: {e}", u.dir.display())))?;
        let floor = ClockFloor::open(
            &floor_file,
            clinicbox_update::release_built(Path::new(clinicbox_update::IMAGE_MANIFEST)),
        )
        .map_err(|e| bad(e.to_string()))?;
        // Redirects are followed (mirrors sit behind CDNs): what arrives is verified anyway.
        let http = crate::national::https_client(cfg)?
            .read_timeout(Duration::from_secs(cfg.request_timeout_secs.max(5)))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| bad(format!("cannot build the HTTPS client: {e}")))?;
        let running = Version::parse(&clinicbox_process::running_release())
            .map_err(|e| bad(format!("the running version: {e}")))?;
        Ok(Some(Checker {
            http,
            mirror,
            board,
            dir: u.dir.clone(),
            root,
            floor,
            running,
            installer_state: u.installer_state_dir.clone(),
        }))
    }

    /// One pass: the mirror verified and, if it offers a newer release (the `wanted` one, when
    /// a remote admin pinned it), up to a slice of its download. `national_now` is national's
    /// clock from the round (a time the box can trust).
    pub async fn pass(
        &mut self,
        national_now: Option<Timestamp>,
        wanted: Option<&Version>,
    ) -> Result<Staged, StageError> {
        if let Some(t) = national_now {
            self.floor.raise(t)?;
        }
        let now = self
            .floor
            .now(Timestamp::now(), clinicbox_update::clock_synchronised());
        let until = tokio::time::Instant::now() + PASS_SLICE;
        // The download stops itself at `until`; this bounds the rest too (a mirror that
        // trickles its metadata).
        tokio::time::timeout(2 * PASS_SLICE, self.stage(now, wanted, until))
            .await
            .unwrap_or_else(|_| {
                Err(StageError::Mirror(
                    "the mirror is too slow to answer".into(),
                ))
            })
    }

    /// Verifies the mirror's repository against the uplink's own trusted copy and, if it
    /// offers this board a newer release, downloads it into `staging/targets/` (resuming),
    /// with the metadata it verified in `staging/metadata/`.
    async fn stage(
        &self,
        now: Timestamp,
        wanted: Option<&Version>,
        until: tokio::time::Instant,
    ) -> Result<Staged, StageError> {
        let source = Source::remote(&self.mirror)?;
        let staging = self.dir.join("staging");
        let metadata = staging.join("metadata");
        // Only what this pass verified stays beside the target.
        remove_dir_if_present(&metadata).await?;
        tokio::fs::create_dir_all(&metadata)
            .await
            .map_err(io(&metadata))?;
        let transport = Recording::new(HttpsTransport::new(self.http.clone()), metadata);
        let trusted = self.dir.join("trusted");
        let repo =
            clinicbox_update::verify_with(transport, &source, &trusted, &self.root, now).await?;
        let Some(release) = clinicbox_update::choose(&repo, &self.board, &self.running, wanted)?
        else {
            return Ok(Staged::Nothing);
        };
        let installer = clinicbox_update::state::State::load(&self.installer_state);
        if installer.is_refused(&release.version.to_string()) {
            let targets = staging.join("targets");
            if tokio::fs::try_exists(&targets).await.unwrap_or(false) {
                forget_other_releases(&targets, "").await?;
            }
            return Ok(Staged::RolledBack(release.version));
        }
        let targets = staging.join("targets");
        tokio::fs::create_dir_all(&targets)
            .await
            .map_err(io(&targets))?;
        let seed =
            clinicbox_update::seed::holding(&self.installer_state, &self.running.to_string());
        let by_chunks = clinicbox_update::chunk_index(&repo, &release);
        let fetched = match (seed, by_chunks) {
            (Some(seed), Some(index)) => {
                let index = repo.target_file(&index.name)?;
                forget_other_releases(&targets, &index.file).await?;
                let chunks = Chunks {
                    http: &self.http,
                    source: &source,
                    targets: &targets,
                };
                chunks.stage(&index, &seed, until).await?
            }
            _ => {
                let target = repo.target_file(&release.name)?;
                forget_other_releases(&targets, &target.file).await?;
                let url = source.target_url(&target.file)?;
                download(&self.http, &url, &targets, &target, Some(until)).await?;
                target.length
            }
        };
        Ok(Staged::Ready { release, fetched })
    }
}

/// How many chunk requests are in flight at once: enough to hide an LTE round trip.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Staging a release as chunks: its index, then each chunk the running slot's index lacks.
struct Chunks<'a> {
    http: &'a reqwest::Client,
    source: &'a Source,
    targets: &'a Path,
}

impl Chunks<'_> {
    /// Brings the staged chunks to what the release needs beyond `seed`; the bytes staged.
    /// The index waits as `<file>.pending` until every chunk is there: the installer takes a
    /// staged index as a release whose chunks are all staged.
    async fn stage(
        &self,
        index: &TargetFile,
        seed: &Index,
        until: tokio::time::Instant,
    ) -> Result<u64, StageError> {
        let url = self.source.target_url(&index.file)?;
        let done = self.targets.join(&index.file);
        let pending = TargetFile {
            file: format!("{}.pending", index.file),
            ..index.clone()
        };
        let file = match tokio::fs::try_exists(&done).await {
            Ok(true) => done.clone(),
            _ => download(self.http, &url, self.targets, &pending, Some(until)).await?,
        };
        let have = seed.locations();
        let needed: Vec<Chunk> = Index::load(&file)?
            .distinct()
            .into_iter()
            .filter(|c| !have.contains_key(&c.sha256))
            .collect();
        self.forget_unneeded(&needed).await?;
        self.fetch_missing(&needed, &index.file, until).await?;
        if file != done {
            tokio::fs::rename(&file, &done).await.map_err(io(&done))?;
        }
        let mut staged = index.length;
        for c in &needed {
            let path = c.path_in(self.targets);
            staged += tokio::fs::metadata(&path).await.map_err(io(&path))?.len();
        }
        Ok(staged)
    }

    /// Fetches the `needed` chunks not staged yet, a few at a time, until `until`.
    async fn fetch_missing(
        &self,
        needed: &[Chunk],
        name: &str,
        until: tokio::time::Instant,
    ) -> Result<(), StageError> {
        let started = tokio::time::Instant::now();
        let total: u64 = needed.iter().map(|c| u64::from(c.len)).sum();
        let (mut have, mut fetched) = (0u64, 0u64);
        let mut missing = Vec::new();
        for c in needed {
            let staged = tokio::fs::try_exists(c.path_in(self.targets)).await;
            match staged {
                Ok(true) => have += u64::from(c.len),
                _ => missing.push(*c),
            }
        }
        let mut fetches = futures_util::stream::iter(missing)
            .map(|c| async move { self.fetch(&c).await.map(|()| c) })
            .buffer_unordered(CHUNKS_IN_FLIGHT);
        while let Some(done) = fetches.next().await {
            let c = done?;
            have += u64::from(c.len);
            fetched += u64::from(c.len);
            if tokio::time::Instant::now() >= until && have < total {
                let secs = started.elapsed().as_secs().max(1);
                return Err(StageError::Paused {
                    name: name.to_owned(),
                    have,
                    length: total,
                    per_sec: fetched / secs,
                });
            }
        }
        Ok(())
    }

    /// One chunk, checked against its hash before it takes its name.
    async fn fetch(&self, c: &Chunk) -> Result<(), StageError> {
        let url = self.source.target_url(&c.url_path())?;
        let mirror = |e: reqwest::Error| StageError::Mirror(e.to_string());
        let mut resp = self.http.get(url.clone()).send().await.map_err(mirror)?;
        if !resp.status().is_success() {
            return Err(StageError::Mirror(format!("{url}: {}", resp.status())));
        }
        let mut packed = Vec::new();
        while let Some(part) = resp.chunk().await.map_err(mirror)? {
            packed.extend_from_slice(&part);
            // Deflate never grows a chunk by much; anything larger is not the chunk.
            if packed.len() > 2 * chunks::MAX_CHUNK {
                return Err(StageError::Mirror(format!("{url}: larger than a chunk")));
            }
        }
        if chunks::unpack(c, packed.as_slice()).is_err() {
            return Err(StageError::Corrupt(c.url_path()));
        }
        let path = c.path_in(self.targets);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        let write = path.clone();
        tokio::task::spawn_blocking(move || clinicbox_process::write_atomic(&write, &packed, 0o644))
            .await
            .map_err(|e| StageError::Mirror(e.to_string()))?
            .map_err(io(&path))
    }

    /// Removes staged chunks an earlier release needed and this one does not.
    async fn forget_unneeded(&self, needed: &[Chunk]) -> Result<(), StageError> {
        let keep: std::collections::HashSet<String> = needed.iter().map(Chunk::hex).collect();
        let dir = self.targets.join(chunks::CHUNK_DIR);
        let Ok(mut fans) = tokio::fs::read_dir(&dir).await else {
            return Ok(());
        };
        while let Some(fan) = fans.next_entry().await.map_err(io(&dir))? {
            let mut files = tokio::fs::read_dir(fan.path()).await.map_err(io(&dir))?;
            while let Some(f) = files.next_entry().await.map_err(io(&dir))? {
                let name = f.file_name();
                if !name.to_str().is_some_and(|n| keep.contains(n)) {
                    tokio::fs::remove_file(f.path())
                        .await
                        .map_err(io(&f.path()))?;
                }
            }
        }
        Ok(())
    }
}

async fn remove_dir_if_present(dir: &Path) -> Result<(), StageError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Removes what an earlier pass staged for another release (a newer one was published since),
/// so `/data` holds one release at most.
/// Files named after `file` stay (`.part`, `.pending`); so do the staged chunks when `file` is
/// a chunk index (those the new release needs are kept: [`Chunks::stage`]).
async fn forget_other_releases(targets: &Path, file: &str) -> Result<(), StageError> {
    let keep_chunks = file.ends_with(".chunks");
    let mut entries = tokio::fs::read_dir(targets).await.map_err(io(targets))?;
    while let Some(e) = entries.next_entry().await.map_err(io(targets))? {
        let name = e.file_name();
        if name == chunks::CHUNK_DIR {
            if !keep_chunks {
                tokio::fs::remove_dir_all(e.path())
                    .await
                    .map_err(io(&e.path()))?;
            }
        } else if file.is_empty() || !name.to_str().is_some_and(|n| n.starts_with(file)) {
            tokio::fs::remove_file(e.path())
                .await
                .map_err(io(&e.path()))?;
        }
    }
    Ok(())
}

/// The release a remote admin pinned (`desiredVersion` in the fleet configuration), as the
/// box applied it in this round's check-in; `None` when the round did not say.
pub fn wanted_from(summary: &crate::RoundSummary) -> Option<Option<Version>> {
    let echo = summary.fleet.as_ref()?;
    Some(
        echo.settings
            .desired_version
            .as_deref()
            .and_then(|v| Version::parse(v).ok()),
    )
}

/// The line the status page and `--once` show for a pass.
pub fn describe(result: &Result<Staged, StageError>) -> String {
    match result {
        Ok(Staged::Nothing) => format!("up to date ({})", clinicbox_process::running_release()),
        Ok(Staged::Ready { release, fetched }) if *fetched < release.length => format!(
            "{} downloaded and verified, ready to install ({} of the release's {}: the rest is in the running slot)",
            release.version,
            megabytes(*fetched),
            megabytes(release.length)
        ),
        Ok(Staged::Ready { release, .. }) => {
            format!(
                "{} downloaded and verified, ready to install",
                release.version
            )
        }
        Ok(Staged::RolledBack(v)) => format!(
            "{v} came back to the old slot on this box; waiting for a newer release ({} runs)",
            clinicbox_process::running_release()
        ),
        Err(StageError::Paused {
            have,
            length,
            per_sec,
            ..
        }) => format!(
            "downloading: {} of {} MiB, {}",
            have >> 20,
            length >> 20,
            time_left(length - have, *per_sec)
        ),
        Err(e) => format!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::time_left;

    #[test]
    fn the_time_left_is_said_at_this_pass_s_rate() {
        assert_eq!(
            time_left(200 << 20, 18_000),
            "about 3 h 15 min left at 18 KB/s"
        );
        assert_eq!(time_left(90_000, 1_000), "about 2 min left at 1 KB/s");
        assert_eq!(time_left(1 << 20, 0), "no progress in the last pass");
    }
}
