//! The `[tracker]` section of the daemon's configuration.

use serde::{Deserialize, Serialize};

/// Tracker settings. Every field has a default, so an empty section is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// This box's number among the boxes that share one national server (0-based). Locally
    /// generated `SEQUENTIAL` values come from this box's own slice of the upper half of the
    /// pattern's range, so two boxes, or a box and the national server (which counts up from
    /// 1), never hand out the same value. Default 0.
    pub box_number: u32,
    /// How many slices the upper half of a `SEQUENTIAL` range is cut into (the most boxes one
    /// national server can have). Default 100.
    pub box_slots: u32,
    /// Days a reserved value stays valid on the tablet (DHIS2's default is 60).
    pub reserved_value_expiry_days: u32,
    /// Largest file resource in bytes (default 10 MB, the Android settings' default).
    pub max_file_bytes: usize,
    /// Hours a "break the glass" ownership override lasts (DHIS2's default is 3).
    pub ownership_override_hours: u32,
    /// Most items one `POST /api/tracker` may hold: every array element at any depth (objects,
    /// attribute and data values, notes, program owners, geometry coordinates). Larger payloads
    /// are refused whole with 413 before they are parsed. DHIS2 has no such limit; the Capture
    /// app sends far fewer. Default 50000.
    pub max_objects_per_import: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            box_number: 0,
            box_slots: 100,
            reserved_value_expiry_days: 60,
            max_file_bytes: 10_000_000,
            ownership_override_hours: 3,
            max_objects_per_import: 50_000,
        }
    }
}
