//! Data changed at national since the last data pull: for each of the box's data sets,
//! `GET /api/dataValueSets?lastUpdated=…&includeDeleted=true` over the box's org units and
//! their children, merged by `serve` (national's values win over nothing the box has not sent;
//! a value changed on both sides goes to the later change, both kept for an admin). The
//! watermark is national's `serverDate` at the round's start, less an overlap for national's
//! transactions still committing, kept only once every data set was merged: a cut pull is
//! asked again, and merging a value twice changes nothing.

use clinicbox_control::pull::{MergeReport, NationalValues};
use serde_json::Value;

use crate::UplinkError;
use crate::local::LocalBox;
use crate::national::{National, NationalInfo};

/// How far back of national's clock the next pull starts again.
const OVERLAP_SECS: i64 = 300;
/// Before the first data pull: everything national has.
const BEGINNING: &str = "1970-01-01";

/// Pulls and merges national's changed data values; returns what the merges did.
pub async fn pull(
    local: &LocalBox,
    national: &National,
    info: &NationalInfo,
    roots: &[String],
    skew_secs: i64,
) -> Result<MergeReport, UplinkError> {
    let zone = info.server_time_zone_id.clone().ok_or_else(|| {
        UplinkError::Protocol("national gave no serverTimeZoneId to read its times in".into())
    })?;
    let next = info
        .server_date
        .as_deref()
        .and_then(|d| earlier(d, OVERLAP_SECS))
        .ok_or_else(|| UplinkError::Protocol("national gave no readable serverDate".into()))?;
    let plan = local.data_plan().await?;
    let since = plan.watermark.unwrap_or_else(|| BEGINNING.into());
    let mut report = MergeReport::default();
    for data_set in plan.data_sets {
        let mut query = vec![("dataSet", data_set.clone())];
        query.extend(roots.iter().map(|r| ("orgUnit", r.clone())));
        query.extend([
            ("children", "true".to_string()),
            ("lastUpdated", since.clone()),
            ("includeDeleted", "true".to_string()),
        ]);
        let query = serde_urlencoded::to_string(&query)
            .map_err(|e| UplinkError::Protocol(e.to_string()))?;
        let answer = national
            .get_json(&format!("/api/dataValueSets?{query}"))
            .await?;
        let values = match answer.get("dataValues") {
            Some(Value::Array(v)) => v.clone(),
            None | Some(Value::Null) => continue,
            Some(_) => {
                return Err(UplinkError::Protocol(
                    "national's dataValues are not a list".into(),
                ));
            }
        };
        if values.is_empty() {
            continue;
        }
        let body = NationalValues {
            data_set,
            zone: zone.clone(),
            skew_secs,
            values,
        };
        report.add(local.merge_values(&body).await?);
    }
    local.keep_data_watermark(&next).await?;
    Ok(report)
}

/// `yyyy-MM-ddTHH:mm:ss.SSS` `secs` earlier.
fn earlier(date: &str, secs: i64) -> Option<String> {
    let dt: jiff::civil::DateTime = date.parse().ok()?;
    let dt = dt.checked_sub(jiff::SignedDuration::from_secs(secs)).ok()?;
    Some(dt.strftime("%Y-%m-%dT%H:%M:%S%.3f").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_steps_back_across_midnight() {
        assert_eq!(
            earlier("2026-12-07T00:02:00.250", 300).as_deref(),
            Some("2026-12-06T23:57:00.250")
        );
        assert_eq!(earlier("not a date", 300), None);
    }
}
