//! Reserved values from national: for each pool the box keeps (a generated attribute, and an
//! org-unit code when its pattern has one), a pool fallen below half its target is topped up
//! with national's own `generateAndReserve` as the sync account. National records them as
//! reserved, so no other box and no national form hands them out; the box hands them to
//! tablets before its own slice. A block lost between national and the box is only a gap.

use clinicbox_control::pull::ReservedBlock;
use serde_json::Value;

use crate::UplinkError;
use crate::local::LocalBox;
use crate::national::National;

/// The days national keeps a reserved value for the box (DHIS2's default expiration).
const EXPIRY_DAYS: u32 = 60;
/// The most values one `generateAndReserve` asks for (DHIS2's limit per request).
const MAX_PER_REQUEST: usize = 1000;

/// Tops up every pool under half of `target`; returns how many values were new to the box.
pub async fn top_up(
    local: &LocalBox,
    national: &National,
    target: usize,
) -> Result<usize, UplinkError> {
    if target == 0 {
        return Ok(0);
    }
    let mut added = 0;
    for pool in local.reserved_pools().await? {
        if pool.have * 2 >= target {
            continue;
        }
        let n = (target - pool.have).min(MAX_PER_REQUEST);
        let mut query = vec![
            ("numberToReserve", n.to_string()),
            ("expiration", EXPIRY_DAYS.to_string()),
        ];
        if let Some(code) = &pool.org_unit_code {
            query.push(("ORG_UNIT_CODE", code.clone()));
        }
        let query = serde_urlencoded::to_string(&query)
            .map_err(|e| UplinkError::Protocol(e.to_string()))?;
        let path = format!(
            "/api/trackedEntityAttributes/{}/generateAndReserve?{query}",
            pool.attribute
        );
        let values = values_of(&national.get_json(&path).await?, n)?;
        let block = ReservedBlock {
            attribute: pool.attribute,
            org_unit_code: pool.org_unit_code,
            values,
            expiry_days: EXPIRY_DAYS,
        };
        added += local.add_reserved(&block).await?;
    }
    Ok(added)
}

/// The values of a `generateAndReserve` answer: at most the `n` asked for.
fn values_of(answer: &Value, n: usize) -> Result<Vec<String>, UplinkError> {
    let list = answer
        .as_array()
        .ok_or_else(|| UplinkError::Protocol("national's reserved values are not a list".into()))?;
    if list.len() > n {
        return Err(UplinkError::Protocol(format!(
            "national reserved {} values when {n} were asked",
            list.len()
        )));
    }
    Ok(list
        .iter()
        .filter_map(|v| v.get("value").and_then(Value::as_str).map(str::to_string))
        .collect())
}
