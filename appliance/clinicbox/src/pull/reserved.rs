//! Values national reserved for the box: which pools the box keeps and how full they are, and
//! storing a block the uplink reserved (tablets get those before the box's own slice).

use clinicbox_control::pull::{ReservedBlock, ReservedPool};
use clinicbox_tracker::Tracker;

use super::PullError;

const DAY_MS: u64 = 86_400_000;

pub async fn pools(tracker: &Tracker) -> Result<Vec<ReservedPool>, PullError> {
    let pools = tracker.national_pools().await?;
    Ok(pools
        .into_iter()
        .map(|p| ReservedPool {
            attribute: p.attribute,
            org_unit_code: p.org_unit_code,
            have: p.have,
        })
        .collect())
}

/// Stores a block; its values expire a day before national lets them go, so a box whose
/// clock runs a little ahead never hands out a value national has released.
pub async fn add(tracker: &Tracker, block: ReservedBlock) -> Result<usize, PullError> {
    let days = u64::from(block.expiry_days.saturating_sub(1));
    let expiry_ms = tracker.store().server_time_ms() + days * DAY_MS;
    tracker
        .add_national_values(
            &block.attribute,
            block.org_unit_code.as_deref(),
            block.values,
            expiry_ms,
        )
        .await
        .map_err(PullError::from)
}
