//! Reserved values for generated attributes:
//! `GET /api/trackedEntityAttributes/{uid}/generateAndReserve?numberToReserve=N[&ORG_UNIT_CODE=]`
//! and `…/generate`.
//!
//! A value is handed out at most once: every value given to a tablet is recorded in the store's
//! keyed-hash index `rv.<attribute>` (no value in clear on disk) and checked before it is given,
//! and values already held by a tracked entity are skipped.
//!
//! How a box avoids colliding with the national server and with other boxes:
//! 1. **Blocks reserved from national** (preferred): while online, the uplink reserves values
//!    with the national server's own `generateAndReserve` and stores them with
//!    [`Tracker::add_reserved_block`]; tablets get those first. National has recorded them as
//!    reserved, so nobody else gets them.
//! 2. **A box-specific slice** (offline fallback): `SEQUENTIAL` values generated on the box come
//!    from the upper half of the pattern's range, cut into `box_slots` slices, of which this box
//!    uses slice `box_number` (config `[tracker]`). National counts up from 1 in the lower half;
//!    two boxes never share a slice. `RANDOM` values are drawn from the whole space and checked
//!    against everything this box knows; a clash with a value generated elsewhere is caught by
//!    the national server's unique check (E1064) at upload, never silently merged.

use axum::Extension;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use clinicbox_api::ApiState;
use clinicbox_api::query::Query;
use clinicbox_dhis2::tracker::ReservedValue;
use clinicbox_dhis2::{Dhis2Timestamp, Uid};
use clinicbox_store::{Collection, ReadView, WriteError};
use clinicbox_web::error::json_response;
use clinicbox_web::{ApiError, ApiResult, AuthUser};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::meta::{bool_of, str_of};
use crate::textpattern::{DateParts, Segment, TextPattern, random_space, random_value};
use crate::{NationalError, Tracker};

pub const RESERVED: Collection = Collection::named("reservedValues");
const MAX_PER_REQUEST: usize = 1000;
/// The longest value a national block may carry.
const MAX_VALUE_LEN: usize = 255;
/// The most values one national pool keeps.
const MAX_POOL: usize = 10_000;
/// The most national pools the box keeps (attributes times org-unit codes).
const MAX_POOLS: usize = 500;

/// One pool of values national reserved for this box (see [`Tracker::national_pools`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NationalPool {
    pub attribute: String,
    /// The `ORG_UNIT_CODE` the pattern was resolved with, when it has one.
    pub org_unit_code: Option<String>,
    /// Unexpired values not yet handed out.
    pub have: usize,
}

fn index_name(attribute: &str) -> String {
    format!("rv.{attribute}")
}

fn key_digest(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Per (attribute, key) counter state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeqState {
    /// Next SEQUENTIAL number to try.
    next: u64,
    /// Values handed out for this key (RANDOM space accounting).
    issued: u64,
}

/// Values reserved from the national server for one (attribute, key).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    pub key: String,
    /// (value, expiry ms) not yet handed out.
    pub values: Vec<(String, u64)>,
}

fn seq_key(attribute: &str, key: &str) -> String {
    format!("seq/{attribute}/{}", key_digest(key))
}

fn pool_key(attribute: &str, key: &str) -> String {
    format!("pool/{attribute}/{}", key_digest(key))
}

/// This box's SEQUENTIAL range `[start, end)` for `digits` digits.
pub fn box_range(digits: usize, box_number: u32, box_slots: u32) -> (u64, u64) {
    let space = 10u64.saturating_pow(u32::try_from(digits).unwrap_or(12));
    let half = space / 2;
    let slots = u64::from(box_slots.max(1));
    let slice = ((space - half) / slots).max(1);
    let start = half + u64::from(box_number) * slice;
    (start.min(space), (start + slice).min(space))
}

fn date_parts(state: &ApiState, ms: u64) -> DateParts {
    let t = Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(0), state.zone())
        .or_else(|_| Dhis2Timestamp::from_epoch_ms(0, state.zone()));
    let dt = t.map(|t| t.datetime()).ok();
    DateParts {
        year: dt.map_or(1970, |d| i32::from(d.year())),
        month: dt.map_or(1, |d| u32::try_from(d.month()).unwrap_or(1)),
        day: dt.map_or(1, |d| u32::try_from(d.day()).unwrap_or(1)),
        hour: dt.map_or(0, |d| u32::try_from(d.hour()).unwrap_or(0)),
        minute: dt.map_or(0, |d| u32::try_from(d.minute()).unwrap_or(0)),
        second: dt.map_or(0, |d| u32::try_from(d.second()).unwrap_or(0)),
    }
}

/// Held by a tracked entity of snapshot `read` (or of the running import batch), or already
/// handed out.
fn taken(read: &ReadView, cat: &Catalog, attr_uid: Uid, value: &str) -> Result<bool, ApiError> {
    Ok(!cat.holders(read, attr_uid, value)?.is_empty()
        || !read
            .index_lookup(&index_name(attr_uid.as_str()), value)?
            .is_empty())
}

/// The key national's values are kept under: the pattern with everything but its generated
/// segment resolved (DHIS2's reserved-value key).
fn key_of(
    tp: &TextPattern,
    org_unit_code: Option<&str>,
    date: &DateParts,
) -> Result<String, ApiError> {
    tp.resolve(org_unit_code, date, None)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

impl Tracker {
    /// The pattern of a generated attribute.
    fn pattern_of(&self, attribute: &str) -> Result<TextPattern, ApiError> {
        let snap = self.api().metadata().snapshot()?;
        let attr = snap
            .get("trackedEntityAttributes", attribute)
            .ok_or_else(|| {
                ApiError::NotFound(format!("TrackedEntityAttribute not found: {attribute}"))
            })?;
        let pattern = str_of(attr, "pattern").unwrap_or("").trim();
        if !bool_of(attr, "generated") || pattern.is_empty() {
            return Err(ApiError::Conflict(format!(
                "TrackedEntityAttribute {attribute} is not generated"
            )));
        }
        TextPattern::parse(pattern).map_err(|e| ApiError::Conflict(e.to_string()))
    }

    /// The pools of national values the box keeps: one per generated attribute, and for a
    /// pattern with `ORG_UNIT_CODE` one per code of the box's org units; with how many
    /// unexpired values each holds now.
    pub async fn national_pools(&self) -> Result<Vec<NationalPool>, NationalError> {
        let snap = self.api().metadata().snapshot()?;
        let codes: Vec<String> = snap
            .objects("organisationUnits")
            .filter_map(|(_, ou)| str_of(ou, "code").map(str::to_string))
            .take(MAX_POOLS)
            .collect();
        let now = self.store().server_time_ms();
        let date = date_parts(self.api(), now);
        let read = self.store().read()?;
        let mut pools = Vec::new();
        for (uid, attr) in snap.objects("trackedEntityAttributes") {
            if !bool_of(attr, "generated") {
                continue;
            }
            let Ok(tp) = self.pattern_of(uid) else {
                continue;
            };
            let per_code: Vec<Option<&str>> = if tp.needs_org_unit_code() {
                codes.iter().map(|c| Some(c.as_str())).collect()
            } else {
                vec![None]
            };
            for code in per_code {
                let key = key_of(&tp, code, &date)?;
                let have = read
                    .get(RESERVED, &pool_key(uid, &key))?
                    .and_then(|r| r.json::<Block>().ok())
                    .map_or(0, |b| b.values.iter().filter(|(_, exp)| *exp > now).count());
                pools.push(NationalPool {
                    attribute: uid.to_string(),
                    org_unit_code: code.map(str::to_string),
                    have,
                });
            }
            if pools.len() >= MAX_POOLS {
                break;
            }
        }
        Ok(pools)
    }

    /// Stores values national reserved for this box (see the module docs), good until
    /// `expiry_ms`. A value already in the pool, already handed out or held by a tracked
    /// entity is skipped, so a block sent twice adds nothing. Returns how many were added.
    pub async fn add_national_values(
        &self,
        attribute: &str,
        org_unit_code: Option<&str>,
        values: Vec<String>,
        expiry_ms: u64,
    ) -> Result<usize, NationalError> {
        if values.len() > MAX_PER_REQUEST || values.iter().any(|v| v.len() > MAX_VALUE_LEN) {
            return Err(NationalError::Invalid(format!(
                "a block holds at most {MAX_PER_REQUEST} values of at most {MAX_VALUE_LEN} bytes"
            )));
        }
        let tp = self.pattern_of(attribute)?;
        let attr_uid = Uid::try_from(attribute)
            .map_err(|_| NationalError::Invalid(format!("Invalid UID: {attribute}")))?;
        let _guard = self.inner.reserve_lock.lock().await;
        let now = self.store().server_time_ms();
        let key = key_of(&tp, org_unit_code, &date_parts(self.api(), now))?;
        let k = pool_key(attribute, &key);
        let fresh: Vec<String> = {
            // The snapshot is taken under the catalog's lock, so it holds every commit the
            // catalog does.
            let cat = self.catalog().read().await;
            let read = self.store().read()?;
            let mut fresh = Vec::new();
            for v in values {
                if !taken(&read, &cat, attr_uid, &v)? && !fresh.contains(&v) {
                    fresh.push(v);
                }
            }
            fresh
        };
        let written = self
            .store()
            .write(move |ctx| {
                let mut block = ctx
                    .get(RESERVED, &k)?
                    .and_then(|r| r.json::<Block>().ok())
                    .unwrap_or_default();
                block.key = key;
                block.values.retain(|(_, exp)| *exp > now);
                let before = block.values.len();
                for v in fresh {
                    if block.values.len() < MAX_POOL && !block.values.iter().any(|(x, _)| *x == v) {
                        block.values.push((v, expiry_ms));
                    }
                }
                let added = block.values.len() - before;
                ctx.put_json(RESERVED, &k, &block)?;
                Ok::<_, clinicbox_store::StoreError>(added)
            })
            .await
            .map_err(|e| match e {
                WriteError::Rejected(e) | WriteError::Store(e) => ApiError::Store(e),
            })?;
        Ok(written.value)
    }

    /// Reserves `n` values of a generated attribute; they are never handed out again.
    pub async fn reserve(
        &self,
        attribute: &str,
        n: usize,
        org_unit_code: Option<&str>,
        expiry_days: u32,
    ) -> Result<Vec<ReservedValue>, ApiError> {
        let tp = self.pattern_of(attribute)?;
        let generated = tp.generated().cloned().ok_or_else(|| {
            ApiError::Conflict(format!(
                "The pattern of {attribute} has no generated segment"
            ))
        })?;
        if tp.needs_org_unit_code() && org_unit_code.is_none() {
            return Err(ApiError::BadRequest(
                "Missing required values: ORG_UNIT_CODE".into(),
            ));
        }
        let _guard = self.inner.reserve_lock.lock().await;
        let now = self.store().server_time_ms();
        let date = date_parts(self.api(), now);
        let key = key_of(&tp, org_unit_code, &date)?;
        let attr_uid = Uid::try_from(attribute)
            .map_err(|_| ApiError::BadRequest(format!("Invalid UID: {attribute}")))?;
        let cat = self.catalog().read().await;
        let read = self.store().read()?;
        let mut values: Vec<String> = Vec::new();
        // 1. Blocks reserved from national.
        let pk = pool_key(attribute, &key);
        let mut block = read
            .get(RESERVED, &pk)?
            .and_then(|r| r.json::<Block>().ok())
            .unwrap_or_default();
        let pool_before = block.values.len();
        block.values.retain(|(_, exp)| *exp > now);
        while values.len() < n && !block.values.is_empty() {
            let (v, _) = block.values.remove(0);
            if !taken(&read, &cat, attr_uid, &v)? && !values.contains(&v) {
                values.push(v);
            }
        }
        let pool_changed = block.values.len() != pool_before;
        // 2. Generated on the box.
        let sk = seq_key(attribute, &key);
        let mut state = read
            .get(RESERVED, &sk)?
            .and_then(|r| r.json::<SeqState>().ok())
            .unwrap_or_default();
        let cfg = self.config();
        match &generated {
            Segment::Sequential(digits) => {
                let (start, end) = box_range(*digits, cfg.box_number, cfg.box_slots);
                state.next = state.next.max(start);
                while values.len() < n && state.next < end {
                    let number = format!("{:0width$}", state.next, width = *digits);
                    state.next += 1;
                    let v = tp
                        .resolve(org_unit_code, &date, Some(&number))
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                    if !taken(&read, &cat, attr_uid, &v)? {
                        values.push(v);
                    }
                }
            }
            Segment::Random(fmt) => {
                let space = random_space(fmt);
                let mut attempts = 0;
                while values.len() < n
                    && u128::from(state.issued) + (values.len() as u128) < space
                    && attempts < n * 20 + 100
                {
                    attempts += 1;
                    let g = random_value(fmt);
                    let v = tp
                        .resolve(org_unit_code, &date, Some(&g))
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                    if !values.contains(&v) && !taken(&read, &cat, attr_uid, &v)? {
                        values.push(v);
                    }
                }
            }
            _ => {}
        }
        drop(cat);
        drop(read);
        if values.len() < n {
            return Err(ApiError::Conflict(format!(
                "Not enough values left to reserve {n} values."
            )));
        }
        state.issued += values.len() as u64;
        let attribute_s = attribute.to_string();
        let to_write = values.clone();
        self.store()
            .write(move |ctx| {
                for v in &to_write {
                    ctx.index_add(&index_name(&attribute_s), v, &attribute_s)?;
                }
                ctx.put_json(RESERVED, &sk, &state)?;
                if pool_changed {
                    ctx.put_json(RESERVED, &pk, &block)?;
                }
                Ok::<_, clinicbox_store::StoreError>(())
            })
            .await
            .map_err(|e| match e {
                WriteError::Rejected(e) | WriteError::Store(e) => ApiError::Store(e),
            })?;
        let zone = self.zone();
        let ts = |ms: u64| {
            Dhis2Timestamp::from_epoch_ms(i64::try_from(ms).unwrap_or(0), zone)
                .map_err(|e| ApiError::Internal(e.to_string()))
        };
        let created = ts(now)?;
        let expiry = ts(now + u64::from(expiry_days.max(1)) * 86_400_000)?;
        Ok(values
            .into_iter()
            .map(|value| ReservedValue {
                owner_object: "TRACKEDENTITYATTRIBUTE".into(),
                owner_uid: attribute.to_string(),
                key: key.clone(),
                value,
                created,
                expiry_date: expiry,
            })
            .collect())
    }
}

fn count(q: &Query) -> Result<usize, ApiError> {
    let n = q.positive("numberToReserve", 1)?;
    if n > MAX_PER_REQUEST {
        return Err(ApiError::BadRequest(format!(
            "You can only reserve up to {MAX_PER_REQUEST} values in a single request"
        )));
    }
    Ok(n)
}

/// `GET /api/trackedEntityAttributes/{uid}/generateAndReserve`.
pub async fn generate_and_reserve(
    Extension(t): Extension<Tracker>,
    _user: AuthUser,
    Path(uid): Path<String>,
    q: Query,
) -> ApiResult<Response> {
    let n = count(&q)?;
    let days = match q.get("expiration") {
        None | Some("") => t.config().reserved_value_expiry_days,
        Some(_) => u32::try_from(q.positive("expiration", 60)?).unwrap_or(60),
    };
    let values = t
        .reserve(
            &uid,
            n,
            q.get("ORG_UNIT_CODE").filter(|v| !v.is_empty()),
            days,
        )
        .await?;
    tracing::info!(attribute.uid = %uid, count = values.len(), "reserved values handed out");
    Ok(json_response(StatusCode::OK, &values))
}

/// `GET /api/trackedEntityAttributes/{uid}/generate`: one value, reserved for three days.
pub async fn generate(
    Extension(t): Extension<Tracker>,
    _user: AuthUser,
    Path(uid): Path<String>,
    q: Query,
) -> ApiResult<Response> {
    let mut values = t
        .reserve(&uid, 1, q.get("ORG_UNIT_CODE").filter(|v| !v.is_empty()), 3)
        .await?;
    let v = values
        .pop()
        .ok_or_else(|| ApiError::Conflict("Not enough values left to reserve 1 values.".into()))?;
    Ok(json_response(StatusCode::OK, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_ranges_are_disjoint_and_above_half() {
        let (a0, a1) = box_range(6, 0, 100);
        let (b0, b1) = box_range(6, 1, 100);
        assert_eq!((a0, a1), (500_000, 505_000));
        assert_eq!((b0, b1), (505_000, 510_000));
        let (l0, l1) = box_range(6, 99, 100);
        assert_eq!(l1, 1_000_000);
        assert!(l0 < l1);
    }
}
