//! Tracker import jobs: the POST reply's job id, `GET /api/tracker/jobs/{id}` notifications and
//! `GET /api/tracker/jobs/{id}/report`.
//!
//! Imports run to completion (durably committed) before the POST is answered, so a job is
//! complete as soon as a tablet can know its id. The job record is written in the same store
//! commit as the imported data: a report exists exactly when its data does, and both survive a
//! restart (DHIS2 keeps them in memory; tablets poll after reconnecting).
//!
//! Storage is a ring of [`RING`] slots in the `trackerJobs` collection, so job reports use
//! bounded space without tombstones. The job id encodes its slot: `J` + 3 base-62 digits + 7
//! random characters (a valid 11-character UID); an id whose slot was reused answers 404.
//! Reports are bounded by bytes as well as by count: when the ring's reports would pass
//! [`MAX_TOTAL_BYTES`], the oldest are dropped first (a tablet polls its report within
//! minutes; posts of refused objects must not fill the disk with reports). A report is never
//! trimmed: the Capture app takes an object missing from the errors as synced.

use clinicbox_dhis2::tracker::{JobNotification, TrackerImportReport};
use clinicbox_dhis2::{Dhis2Timestamp, ServerTimeZone, Uid};
use clinicbox_store::{Collection, ReadView, StoreError, WriteCtx};
use serde::{Deserialize, Serialize};

use crate::import::ImportParams;

pub const JOBS: Collection = Collection::named("trackerJobs");
/// Jobs kept; at 50 syncs an hour this is more than three days of a busy clinic.
pub const RING: u32 = 4096;
/// Bytes the stored reports may take together.
pub const MAX_TOTAL_BYTES: u64 = 32 * 1024 * 1024;
const NEXT: &str = "next";
/// The stored size of each slot's report (a `Vec<u32>` of `RING` entries).
const SIZES: &str = "sizes";
const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A finished import as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub id: String,
    pub created_ms: u64,
    pub user: String,
    pub username: String,
    pub params: ImportParams,
    pub report: TrackerImportReport,
}

fn slot_key(slot: u32) -> String {
    format!("slot{slot:04}")
}

fn encode_slot(slot: u32) -> [u8; 3] {
    let b = DIGITS.len() as u32;
    [
        DIGITS[(slot / (b * b) % b) as usize],
        DIGITS[(slot / b % b) as usize],
        DIGITS[(slot % b) as usize],
    ]
}

/// The slot a job id points to.
pub fn slot_of(id: &str) -> Option<u32> {
    let b = id.as_bytes();
    if b.len() != 11 || b[0] != b'J' || !Uid::is_valid(id) {
        return None;
    }
    let digit = |c: u8| DIGITS.iter().position(|d| *d == c).map(|p| p as u32);
    let base = DIGITS.len() as u32;
    let slot = digit(b[1])? * base * base + digit(b[2])? * base + digit(b[3])?;
    (slot < RING).then_some(slot)
}

fn new_id(slot: u32) -> String {
    let rand = Uid::generate();
    let mut id = Vec::with_capacity(11);
    id.push(b'J');
    id.extend_from_slice(&encode_slot(slot));
    id.extend_from_slice(&rand.as_str().as_bytes()[4..]);
    String::from_utf8(id).unwrap_or_else(|_| rand.to_string())
}

/// Stores a finished job inside the import's commit; returns its id.
pub fn store_job(ctx: &mut WriteCtx<'_>, mut job: JobRecord) -> Result<String, StoreError> {
    let next = ctx
        .get(JOBS, NEXT)?
        .and_then(|r| r.json::<u64>().ok())
        .unwrap_or(0);
    let slot = u32::try_from(next % u64::from(RING)).unwrap_or(0);
    job.id = new_id(slot);
    let body = serde_json::to_vec(&job).map_err(|source| StoreError::Json {
        collection: JOBS.name().into(),
        key: slot_key(slot),
        source,
    })?;
    let mut sizes = ctx
        .get(JOBS, SIZES)?
        .and_then(|r| r.json::<Vec<u32>>().ok())
        .filter(|s| s.len() == RING as usize)
        .unwrap_or_else(|| vec![0; RING as usize]);
    sizes[slot as usize] = u32::try_from(body.len()).unwrap_or(u32::MAX);
    for old in evictions(&sizes, slot) {
        // Overwritten, not deleted: the ring stays free of tombstones; its id answers 404.
        ctx.put(JOBS, &slot_key(old), b"{}".to_vec())?;
        sizes[old as usize] = 0;
    }
    ctx.put_json(JOBS, SIZES, &sizes)?;
    ctx.put_json(JOBS, NEXT, &(next + 1))?;
    ctx.put(JOBS, &slot_key(slot), body)?;
    Ok(job.id)
}

/// The slots to drop, oldest first (the ones after `newest` in ring order), so that the
/// reports together stay within [`MAX_TOTAL_BYTES`]; the newest is always kept.
fn evictions(sizes: &[u32], newest: u32) -> Vec<u32> {
    let mut total: u64 = sizes.iter().map(|s| u64::from(*s)).sum();
    let mut out = Vec::new();
    for step in 1..RING {
        if total <= MAX_TOTAL_BYTES {
            break;
        }
        let slot = (newest + step) % RING;
        let size = u64::from(sizes[slot as usize]);
        if size > 0 {
            total -= size;
            out.push(slot);
        }
    }
    out
}

/// The job with this id, if it is still in the ring.
pub fn load_job(read: &ReadView, id: &str) -> Result<Option<(JobRecord, u64)>, StoreError> {
    let Some(slot) = slot_of(id) else {
        return Ok(None);
    };
    let Some(rec) = read.get(JOBS, &slot_key(slot))? else {
        return Ok(None);
    };
    let Ok(job) = rec.json::<JobRecord>() else {
        return Ok(None);
    };
    Ok((job.id == id).then_some((job, rec.updated_ms)))
}

/// The notifications DHIS2 lists for a finished tracker job, newest first.
pub fn notifications(job: &JobRecord, done_ms: u64, zone: &ServerTimeZone) -> Vec<JobNotification> {
    let time = Dhis2Timestamp::from_epoch_ms(i64::try_from(done_ms).unwrap_or(0), zone)
        .or_else(|_| Dhis2Timestamp::from_epoch_ms(0, zone));
    let Ok(time) = time else {
        return Vec::new();
    };
    let entry = |n: u8, message: String, completed: bool| {
        let mut uid = job.id.clone().into_bytes();
        if let Some(last) = uid.last_mut() {
            *last = DIGITS[usize::from(n) % DIGITS.len()];
        }
        let uid = String::from_utf8(uid).unwrap_or_default();
        JobNotification {
            uid: uid.clone(),
            level: "INFO".into(),
            category: "TRACKER_IMPORT_JOB".into(),
            time,
            message,
            completed,
            id: uid,
            data_type: None,
            data: None,
        }
    };
    vec![
        entry(1, job.report.summary(), true),
        entry(2, "Commit Transaction".into(), false),
        entry(3, "Running Validation".into(), false),
        entry(4, "Tracker import started".into(), false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_reports_go_first_when_the_ring_passes_its_byte_bound() {
        let mut sizes = vec![0u32; RING as usize];
        let big = u32::try_from(MAX_TOTAL_BYTES / 4).unwrap();
        // Slots 10..=14 hold big reports; 14 is the newest.
        sizes[10..=14].fill(big);
        // Five quarters: the oldest (10) goes.
        assert_eq!(evictions(&sizes, 14), vec![10]);
        // Within the bound: nothing goes.
        sizes[10] = 0;
        assert!(evictions(&sizes, 14).is_empty());
        // A single huge report is kept even alone; all older ones go.
        let mut sizes = vec![1u32; RING as usize];
        sizes[7] = u32::MAX;
        assert_eq!(evictions(&sizes, 7).len(), RING as usize - 1);
    }

    #[test]
    fn job_ids_are_uids_that_name_their_slot() {
        for slot in [0, 1, 61, 62, 3843, RING - 1] {
            let id = new_id(slot);
            assert!(Uid::is_valid(&id), "{id}");
            assert_eq!(slot_of(&id), Some(slot), "{id}");
        }
        assert_eq!(slot_of("Kj6vYde4LHh"), None);
        assert_eq!(slot_of("Jzzz0000000"), None);
    }
}
