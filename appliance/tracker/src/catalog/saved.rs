//! The catalog saved in the store, so that `serve` starts without reading every tracker record:
//! after a clean stop, and every few thousand changes while it runs, the catalog's entries are
//! written (encrypted like every record) as of a change-log position; at start they are read
//! back and only the tracker records changed after that position are read again. A saved copy
//! that does not check out (another format, a digest or a count that does not match) is
//! ignored and the catalog is built from every record, as before.
//!
//! Writing: the entries are compressed (UIDs of the same few org units, programs and stages
//! repeat on every line: about a tenth of the size), the chunks go into the slot the header does
//! not name, one commit each, then the header names them (one more commit), so a cut at any
//! point leaves the previous copy whole; then the other slot's chunks are emptied.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use clinicbox_dhis2::Uid;
use clinicbox_store::{Collection, ReadView, Store, StoreError, WriteError};
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Catalog, EnMeta, EvMeta, RelMeta, TRACKER_COLLECTIONS, TeMeta};

/// Where the saved catalog lives (`header`, and chunks `a.NNNNNN` / `b.NNNNNN`).
pub const SAVED: Collection = Collection::named("trackerCatalog");
const HEADER: &str = "header";
/// Bumped whenever the encoding of the entries changes: an older copy is then ignored.
/// 2: a tracked entity's value digests without their attribute UIDs (the digest covers it).
/// 3: no value digests (they moved to the store's index, `values.rs`). Same encoding as 2, so
/// a copy of 2 still loads; the number changed so that a release that reads only 2, rolled
/// back to, builds its catalog from the records instead of trusting a copy with no values.
const FORMAT: u32 = 3;
/// The formats this build loads.
const LOADS: [u32; 2] = [2, 3];
/// One record per chunk: a save's memory is the encoded catalog plus one chunk.
const CHUNK_BYTES: usize = 4 << 20;
/// Change-log entries read per step of the replay.
const REPLAY_STEP: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    format: u32,
    /// Every tracker change up to this change-log position is in the saved entries.
    seq: u64,
    /// `a` or `b`.
    slot: char,
    chunks: u32,
    /// The chunks' length together (compressed).
    bytes: u64,
    /// The encoded entries' length, uncompressed: the most a load inflates.
    raw_bytes: u64,
    /// Hex SHA-256 of the chunks in order: they belong together and to this header.
    sha256: String,
}

/// The entries as encoded, each list sorted by UID, so a load puts them in the order
/// [`Catalog::build`] reads the store (parents' child lists come out the same).
#[derive(Serialize)]
struct EntriesRef<'a> {
    tes: Vec<(&'a Uid, &'a TeMeta)>,
    enrollments: Vec<(&'a Uid, &'a EnMeta)>,
    events: Vec<(&'a Uid, &'a EvMeta)>,
    relationships: Vec<(&'a Uid, &'a RelMeta)>,
}

#[derive(Deserialize)]
struct Entries {
    tes: Vec<(Uid, TeMeta)>,
    enrollments: Vec<(Uid, EnMeta)>,
    events: Vec<(Uid, EvMeta)>,
    relationships: Vec<(Uid, RelMeta)>,
}

fn sorted<M>(m: &std::collections::HashMap<Uid, M>) -> Vec<(&Uid, &M)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_unstable_by_key(|(u, _)| **u);
    v
}

impl Catalog {
    /// The catalog's entries, encoded (the indexes are rebuilt from them on load).
    pub fn encode(&self) -> Vec<u8> {
        let entries = EntriesRef {
            tes: sorted(&self.tes),
            enrollments: sorted(&self.enrollments),
            events: sorted(&self.events),
            relationships: sorted(&self.relationships),
        };
        // Only maps of plain values: encoding into memory cannot fail.
        postcard::to_allocvec(&entries).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Catalog> {
        let e: Entries = postcard::from_bytes(bytes).ok()?;
        let mut c = Catalog::default();
        for (u, m) in e.tes {
            c.put_te(u, m);
        }
        for (u, m) in e.enrollments {
            c.put_enrollment(u, m);
        }
        for (u, m) in e.events {
            c.put_event(u, m);
        }
        for (u, m) in e.relationships {
            c.put_relationship(u, m);
        }
        Some(c)
    }

    /// How many entries of each tracker collection the catalog holds.
    fn counts(&self) -> [u64; 4] {
        [
            self.tes.len() as u64,
            self.enrollments.len() as u64,
            self.events.len() as u64,
            self.relationships.len() as u64,
        ]
    }
}

fn chunk_key(slot: char, i: usize) -> String {
    format!("{slot}.{i:06}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(read: &ReadView) -> Result<Option<Header>, StoreError> {
    Ok(read
        .get(SAVED, HEADER)?
        .filter(|r| !r.deleted)
        .and_then(|r| r.json::<Header>().ok()))
}

/// How many tracker records changed after the saved copy (every one when none is saved),
/// counting up to `at_most`: the saved copy's own writes and other collections' do not count.
pub fn changed_since_saved(read: &ReadView, at_most: u64) -> Result<u64, StoreError> {
    let mut n = 0;
    tracker_changes_after(read, header(read)?.map_or(0, |h| h.seq), |_, _| {
        n += 1;
        n < at_most
    })?;
    Ok(n.min(at_most))
}

/// Whether a saved copy exists and no tracker record changed after it.
pub fn up_to_date(read: &ReadView) -> Result<bool, StoreError> {
    let Some(h) = header(read)? else {
        return Ok(false);
    };
    let mut changed = false;
    tracker_changes_after(read, h.seq, |_, _| {
        changed = true;
        false
    })?;
    Ok(!changed)
}

/// Walks the change log after `seq`, oldest first, calling `visit` with each change to a
/// tracker record until it returns false.
fn tracker_changes_after(
    read: &ReadView,
    seq: u64,
    mut visit: impl FnMut(Collection, String) -> bool,
) -> Result<(), StoreError> {
    let mut after = seq;
    loop {
        let step = read.changes_since(after, REPLAY_STEP)?;
        let Some(last) = step.last() else {
            return Ok(());
        };
        after = last.seq;
        for ch in step {
            let tracker = TRACKER_COLLECTIONS
                .iter()
                .find(|c| c.name() == ch.collection);
            if let Some(c) = tracker
                && !visit(*c, ch.key)
            {
                return Ok(());
            }
        }
    }
}

async fn commit<F>(store: &Store, f: F) -> Result<(), StoreError>
where
    F: FnOnce(&mut clinicbox_store::WriteCtx<'_>) -> Result<(), StoreError> + Send + 'static,
{
    store.write(f).await.map(|_| ()).map_err(|e| match e {
        WriteError::Rejected(e) | WriteError::Store(e) => e,
    })
}

fn compress(raw: &[u8]) -> Vec<u8> {
    let mut z = DeflateEncoder::new(Vec::new(), Compression::fast());
    // Writing into memory cannot fail.
    let _ = z.write_all(raw);
    z.finish().unwrap_or_default()
}

fn inflate(stored: &[u8], raw_bytes: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    DeflateDecoder::new(stored)
        .take(raw_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 == raw_bytes).then_some(out)
}

/// Saves `encoded` (from [`Catalog::encode`]) as the catalog as of change-log position `seq`.
pub async fn save(store: &Store, seq: u64, encoded: Vec<u8>) -> Result<(), StoreError> {
    let old = header(&store.read()?)?;
    let slot = if old.as_ref().is_some_and(|h| h.slot == 'a') {
        'b'
    } else {
        'a'
    };
    let raw_bytes = encoded.len() as u64;
    let Ok(packed) = tokio::task::spawn_blocking(move || compress(&encoded)).await else {
        tracing::warn!("compressing the tracker catalog failed: not saved");
        return Ok(());
    };
    let chunks: Vec<Vec<u8>> = packed.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
    let header = Header {
        format: FORMAT,
        seq,
        slot,
        chunks: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
        bytes: packed.len() as u64,
        raw_bytes,
        sha256: hex(&Sha256::digest(&packed)),
    };
    drop(packed);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let key = chunk_key(slot, i);
        commit(store, move |ctx| ctx.put(SAVED, &key, chunk)).await?;
    }
    commit(store, move |ctx| ctx.put_json(SAVED, HEADER, &header)).await?;
    // The previous copy is no longer named: give its space back.
    if let Some(old) = old.filter(|h| h.slot != slot) {
        commit(store, move |ctx| {
            (0..old.chunks as usize)
                .try_for_each(|i| ctx.put_tombstone(SAVED, &chunk_key(old.slot, i), Vec::new()))
        })
        .await?;
    }
    Ok(())
}

/// What the saved copy takes in the store (its chunks), for the benchmark.
pub fn stored_bytes(read: &ReadView) -> Result<u64, StoreError> {
    Ok(header(read)?.map_or(0, |h| h.bytes))
}

/// What a load did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// The change-log position the saved copy was taken at.
    pub seq: u64,
    /// Tracker records read again because they changed after it.
    pub replayed: u64,
}

/// The saved catalog brought up to date with the changes after it, or `None` when there is no
/// saved copy or it does not check out (the caller then builds the catalog from every record).
pub fn load(read: &ReadView) -> Result<Option<(Catalog, Loaded)>, StoreError> {
    let Some(h) = header(read)? else {
        return Ok(None);
    };
    if !LOADS.contains(&h.format) {
        tracing::info!(
            format = h.format,
            "the saved tracker catalog has another format"
        );
        return Ok(None);
    }
    let Some(mut catalog) = read_entries(read, &h)? else {
        tracing::warn!(
            "the saved tracker catalog does not check out: building it from the records"
        );
        return Ok(None);
    };
    let replayed = replay(read, &mut catalog, h.seq)?;
    let mut stored = [0u64; 4];
    for (n, c) in stored.iter_mut().zip(TRACKER_COLLECTIONS) {
        *n = read.count(c)?;
    }
    if catalog.counts() != stored {
        tracing::warn!(
            "the saved tracker catalog and the store hold different counts: building it from the records"
        );
        return Ok(None);
    }
    Ok(Some((
        catalog,
        Loaded {
            seq: h.seq,
            replayed,
        },
    )))
}

fn read_entries(read: &ReadView, h: &Header) -> Result<Option<Catalog>, StoreError> {
    let mut bytes = Vec::with_capacity(usize::try_from(h.bytes).unwrap_or(0).min(1 << 30));
    for i in 0..h.chunks as usize {
        match read.get(SAVED, &chunk_key(h.slot, i))? {
            Some(r) if !r.deleted => bytes.extend_from_slice(&r.body),
            _ => return Ok(None),
        }
    }
    if bytes.len() as u64 != h.bytes || hex(&Sha256::digest(&bytes)) != h.sha256 {
        return Ok(None);
    }
    Ok(inflate(&bytes, h.raw_bytes).and_then(|raw| Catalog::decode(&raw)))
}

/// Reads again every tracker record changed after `seq`; returns how many.
fn replay(read: &ReadView, catalog: &mut Catalog, seq: u64) -> Result<u64, StoreError> {
    let mut changed: BTreeSet<(Collection, String)> = BTreeSet::new();
    tracker_changes_after(read, seq, |c, key| {
        changed.insert((c, key));
        true
    })?;
    for (c, key) in &changed {
        if let Some(rec) = read.get(*c, key)? {
            catalog.put_record(*c, key, &rec);
        }
    }
    Ok(changed.len() as u64)
}

#[cfg(test)]
pub(super) mod tests {
    use clinicbox_store::{NewKeySlot, StoreError, WriteCtx};

    use super::*;

    /// A new store keyed by a key file in `dir` (also for `values.rs`'s tests).
    pub(in crate::catalog) fn store(dir: &std::path::Path) -> Store {
        let slot = NewKeySlot::KeyFile {
            path: dir.join("test.key"),
            label: "test".into(),
            create: true,
        };
        Store::create(&dir.join("data"), slot).expect("store").0
    }

    fn patient(ctx: &mut WriteCtx<'_>, p: u32, name: &str) -> Result<(), StoreError> {
        let ms = ctx.now_ms();
        let te = format!(
            r#"{{"trackedEntityType":"cbTetPerson","orgUnit":"cbClinicA01","attributes":[{{"attribute":"cbAttrFirst","value":"{name}","createdMs":{ms},"updatedMs":{ms}}}]}}"#
        );
        ctx.put(
            Collection::TRACKED_ENTITIES,
            &format!("te{p:09}"),
            te.into_bytes(),
        )?;
        let en = format!(
            r#"{{"trackedEntity":"te{p:09}","program":"cbPrgOpd001","orgUnit":"cbClinicA01","status":"ACTIVE","enrolledAt":"2026-12-01T09:00:00.000"}}"#
        );
        ctx.put(
            Collection::ENROLLMENTS,
            &format!("en{p:09}"),
            en.into_bytes(),
        )?;
        let ev = format!(
            r#"{{"enrollment":"en{p:09}","trackedEntity":"te{p:09}","program":"cbPrgOpd001","programStage":"cbStgTriage","orgUnit":"cbClinicA01","status":"ACTIVE"}}"#
        );
        ctx.put(Collection::EVENTS, &format!("ev{p:09}"), ev.into_bytes())
    }

    async fn write<F>(s: &Store, f: F)
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        commit(s, f).await.expect("write");
    }

    async fn save_now(s: &Store) {
        let read = s.read().expect("read");
        let encoded = Catalog::build(&read).expect("build").encode();
        save(s, read.last_seq().expect("seq"), encoded)
            .await
            .expect("save");
    }

    #[tokio::test]
    async fn a_saved_catalog_loads_as_the_records_build_it_and_takes_later_changes() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(dir.path());
        write(&s, |ctx| (0..30).try_for_each(|p| patient(ctx, p, "Amina"))).await;
        save_now(&s).await;
        let (loaded, report) = load(&s.read().expect("read"))
            .expect("load")
            .expect("saved");
        assert_eq!(report.replayed, 0);
        assert_eq!(
            loaded,
            Catalog::build(&s.read().expect("read")).expect("build")
        );

        // After the save: a new patient, a renamed one, a deleted event.
        write(&s, |ctx| {
            patient(ctx, 30, "Baraka")?;
            patient(ctx, 3, "Wanjiru")?;
            ctx.delete(Collection::EVENTS, "ev000000007").map(|_| ())
        })
        .await;
        let read = s.read().expect("read");
        let (loaded, report) = load(&read).expect("load").expect("saved");
        assert_eq!(
            report.replayed, 7,
            "three records of patient 30, three of patient 3, one event"
        );
        assert_eq!(loaded, Catalog::build(&read).expect("build"));
    }

    #[tokio::test]
    async fn only_tracker_changes_after_the_save_count_towards_the_next() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(dir.path());
        write(&s, |ctx| (0..3).try_for_each(|p| patient(ctx, p, "Amina"))).await;
        assert_eq!(
            changed_since_saved(&s.read().expect("read"), 100).expect("n"),
            9
        );
        save_now(&s).await;
        assert_eq!(
            changed_since_saved(&s.read().expect("read"), 100).expect("n"),
            0
        );
        write(&s, |ctx| {
            ctx.put(Collection::METADATA, "programs/x", b"{}".to_vec())
        })
        .await;
        assert_eq!(
            changed_since_saved(&s.read().expect("read"), 100).expect("n"),
            0
        );
        write(&s, |ctx| patient(ctx, 7, "Baraka")).await;
        assert_eq!(
            changed_since_saved(&s.read().expect("read"), 2).expect("n"),
            2,
            "capped"
        );
    }

    #[tokio::test]
    async fn a_saved_catalog_that_does_not_check_out_is_not_used() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(dir.path());
        assert!(
            load(&s.read().expect("read")).expect("load").is_none(),
            "nothing saved"
        );
        write(&s, |ctx| (0..5).try_for_each(|p| patient(ctx, p, "Amina"))).await;
        save_now(&s).await;
        let slot = header(&s.read().expect("read"))
            .expect("h")
            .expect("h")
            .slot;
        write(&s, move |ctx| {
            ctx.put(SAVED, &chunk_key(slot, 0), b"not the catalog".to_vec())
        })
        .await;
        assert!(load(&s.read().expect("read")).expect("load").is_none());
    }

    #[tokio::test]
    async fn a_save_cut_before_its_header_leaves_the_previous_copy_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(dir.path());
        write(&s, |ctx| (0..5).try_for_each(|p| patient(ctx, p, "Amina"))).await;
        save_now(&s).await;
        let before = header(&s.read().expect("read")).expect("h").expect("h");
        // The next save writes the other slot; cut before its header.
        let other = if before.slot == 'a' { 'b' } else { 'a' };
        write(&s, move |ctx| {
            ctx.put(SAVED, &chunk_key(other, 0), b"half".to_vec())
        })
        .await;
        let read = s.read().expect("read");
        let (loaded, _) = load(&read).expect("load").expect("the previous copy");
        assert_eq!(loaded, Catalog::build(&read).expect("build"));
    }
}
