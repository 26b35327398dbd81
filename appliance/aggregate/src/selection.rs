//! The "which data" part of the aggregate read endpoints: data sets, periods (ids or a date
//! range), org units (optionally with descendants), `lastUpdated`; each checked against the
//! user's data-view scope with DHIS2's messages.

use std::collections::HashSet;

use clinicbox_api::query::Query;
use clinicbox_dhis2::{Dhis2Timestamp, Period};
use clinicbox_web::{ApiError, AuthUser};
use jiff::civil::Date;

use crate::periods::Now;
use crate::rules::with_descendants;

/// Periods asked for: explicit ids, or every period inside `[start, end]`.
#[derive(Debug, Clone, Default)]
pub struct Periods {
    pub ids: Vec<Period>,
    pub range: Option<(Date, Date)>,
}

impl Periods {
    /// Parses `period` (ids, comma-separated or repeated) and `startDate`/`endDate`.
    pub fn parse(q: &Query, key: &str) -> Result<Periods, ApiError> {
        let mut ids = Vec::new();
        for p in q.list(key) {
            ids.push(
                Period::parse(&p)
                    .map_err(|_| ApiError::Conflict(format!("Period is invalid: `{p}`")))?,
            );
        }
        let date = |k: &str| -> Result<Option<Date>, ApiError> {
            match q.get(k).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => Dhis2Timestamp::parse_lenient(s)
                    .map(|t| Some(t.datetime().date()))
                    .map_err(|_| ApiError::Conflict(format!("Invalid {k}: `{s}`"))),
            }
        };
        let range = match (date("startDate")?, date("endDate")?) {
            (Some(a), Some(b)) => Some((a, b)),
            (None, None) => None,
            _ => {
                return Err(ApiError::Conflict(
                    "Start date and end date must both be specified".into(),
                ));
            }
        };
        Ok(Periods { ids, range })
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.range.is_none()
    }

    /// Whether period id `pe` is selected (everything when nothing was asked for).
    pub fn matches(&self, pe: &str) -> bool {
        if self.ids.iter().any(|p| p.id() == pe) {
            return true;
        }
        match (&self.range, Period::parse(pe)) {
            (Some((a, b)), Ok(p)) => p.start_date() >= *a && p.end_date() <= *b,
            _ => self.is_empty(),
        }
    }

    /// Key prefixes to scan under `head` (`head/pe/` per id, or all of `head/`).
    pub fn prefixes(&self, head: &str) -> Vec<String> {
        if self.range.is_none() && !self.ids.is_empty() {
            self.ids
                .iter()
                .map(|p| format!("{head}/{}/", p.id()))
                .collect()
        } else {
            vec![format!("{head}/")]
        }
    }
}

/// `lastUpdated=<timestamp>` or `lastUpdatedDuration=<n>[smhdw]` as server milliseconds.
pub fn last_updated(q: &Query, now: &Now) -> Result<Option<u64>, ApiError> {
    if let Some(s) = q.get("lastUpdated").filter(|s| !s.is_empty()) {
        let ms = Dhis2Timestamp::parse_lenient(s)
            .ok()
            .and_then(|t| t.to_epoch_ms(&now.zone).ok())
            .ok_or_else(|| ApiError::Conflict(format!("Invalid lastUpdated: `{s}`")))?;
        return Ok(Some(u64::try_from(ms).unwrap_or(0)));
    }
    if let Some(s) = q.get("lastUpdatedDuration").filter(|s| !s.is_empty()) {
        let bad = || ApiError::Conflict(format!("Invalid lastUpdatedDuration: `{s}`"));
        let last = s.char_indices().last().map_or(0, |(i, _)| i);
        let (n, unit) = s.split_at(last);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        return Ok(Some(now.ms.saturating_sub(n.saturating_mul(secs * 1000))));
    }
    Ok(None)
}

/// The org units of `orgUnit`/`ou` (with descendants when `children`), all in the user's
/// data-view scope; 409 with DHIS2's message otherwise.
pub fn org_units(
    user: &AuthUser,
    requested: &[String],
    children: bool,
) -> Result<HashSet<String>, ApiError> {
    let snap = &user.snapshot;
    for ou in requested {
        if !snap.contains("organisationUnits", ou) {
            return Err(ApiError::Conflict(format!(
                "Organisation unit does not exist: `{ou}`"
            )));
        }
        if !user.can_view_in(ou) {
            return Err(ApiError::Conflict(format!(
                "User is not allowed to view org unit: `{ou}`"
            )));
        }
    }
    Ok(if children {
        with_descendants(snap, requested)
    } else {
        requested.iter().cloned().collect()
    })
}

/// Data sets of `dataSet` that exist and whose data the user may read.
pub fn readable_data_sets(user: &AuthUser, ids: &[String]) -> Result<(), ApiError> {
    for ds in ids {
        let obj = user
            .snapshot
            .get("dataSets", ds)
            .ok_or_else(|| ApiError::Conflict(format!("Data set does not exist: `{ds}`")))?;
        if !user.access_to(obj).data.read {
            return Err(ApiError::Conflict(format!(
                "User is not allowed to read data for data set: `{ds}`"
            )));
        }
    }
    Ok(())
}
