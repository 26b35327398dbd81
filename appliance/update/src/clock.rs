//! The time a box can vouch for, when judging whether signed metadata has expired.
//!
//! TUF's expiry dates stop a freeze attack (old, validly signed metadata replayed to hold a box
//! on a vulnerable release), but only against a clock that is right. A box's clock is wrong
//! after a long outage: a Pi has no real-time clock and comes back at the time it last saved, a
//! NUC with a flat CMOS battery in 2000. Bottlerocket's updater then refuses every update (its
//! metadata store remembers a later time than the clock's, or the metadata looks expired from
//! the future). Here the box keeps a floor on `/data` that only moves forward, raised only
//! from time it can trust: a clock synchronised over the network, national's `serverDate`, and
//! the time the running release was built. Expiry is judged against the later of the floor
//! and the system clock, unless the unsynchronised clock is implausibly far ahead (a garbage
//! real-time clock), when the floor alone judges.
//!
//! What this gives up, said plainly: a box whose clock lags and that has not seen a trusted
//! time for a while accepts metadata that expired since its floor. A replay is still bounded by
//! the floor, and versions never go back (the trusted metadata's versions, and the release
//! running), so the worst is being held on the release it has, never sent to an older one.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

use crate::UpdateError;

/// How far past the floor an unsynchronised clock is still believed.
const PLAUSIBLE_AHEAD: SignedDuration = SignedDuration::from_hours(400 * 24);

/// The latest time the box can vouch for, kept in a file.
#[derive(Debug, Clone)]
pub struct ClockFloor {
    path: PathBuf,
    floor: Timestamp,
}

impl ClockFloor {
    /// The floor kept at `path` (none yet: `release_built`), never earlier than the time the
    /// running release was built.
    pub fn open(path: &Path, release_built: Timestamp) -> Result<ClockFloor, UpdateError> {
        let kept = match std::fs::read_to_string(path) {
            Ok(s) => s.trim().parse::<i64>().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(UpdateError::io(path)(e)),
        };
        // An unreadable floor is treated as missing: the release's build time still bounds it.
        let kept = kept.and_then(|s| Timestamp::from_second(s).ok());
        Ok(ClockFloor {
            path: path.to_owned(),
            floor: kept.map_or(release_built, |k| k.max(release_built)),
        })
    }

    pub fn floor(&self) -> Timestamp {
        self.floor
    }

    /// The time to judge expiry by, given the system clock and whether it is synchronised.
    pub fn now(&self, system: Timestamp, synchronised: bool) -> Timestamp {
        let believable = synchronised || system <= self.floor + PLAUSIBLE_AHEAD;
        if believable {
            system.max(self.floor)
        } else {
            self.floor
        }
    }

    /// Moves the floor to `trusted` if that is later (a synchronised clock, national's
    /// `serverDate`), durably.
    pub fn raise(&mut self, trusted: Timestamp) -> Result<(), UpdateError> {
        if trusted <= self.floor {
            return Ok(());
        }
        let text = format!("{}\n", trusted.as_second());
        clinicbox_process::write_atomic(&self.path, text.as_bytes(), 0o644)
            .map_err(UpdateError::io(&self.path))?;
        self.floor = trusted;
        Ok(())
    }
}

/// Whether systemd-timesyncd has synchronised the clock since boot.
pub fn clock_synchronised() -> bool {
    Path::new("/run/systemd/timesync/synchronized").exists()
}

/// Where an image says when it was built (`"built"`, written by image/build/customise.sh).
pub const IMAGE_MANIFEST: &str = "/usr/share/clinicbox/manifest.json";

/// When the running release was built, from its image's manifest: no repository this box
/// accepts can have expired before then. Outside an image, the epoch (no floor).
pub fn release_built(manifest: &Path) -> Timestamp {
    std::fs::read(manifest)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("built")?.as_str()?.parse().ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn the_floor_only_moves_forward_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("clock-floor");
        let built = at("2026-11-01T00:00:00Z");
        let mut floor = ClockFloor::open(&path, built).expect("open");
        assert_eq!(floor.floor(), built, "nothing kept yet: the build time");
        floor.raise(at("2026-12-01T00:00:00Z")).expect("raise");
        floor
            .raise(at("2026-11-15T00:00:00Z"))
            .expect("lower is ignored");
        let again = ClockFloor::open(&path, built).expect("reopen");
        assert_eq!(again.floor(), at("2026-12-01T00:00:00Z"));
    }

    #[test]
    fn a_clock_that_went_back_is_judged_by_the_floor() {
        let dir = tempfile::tempdir().expect("dir");
        let floor =
            ClockFloor::open(&dir.path().join("f"), at("2026-12-01T00:00:00Z")).expect("open");
        // A NUC with a flat CMOS battery.
        let now = floor.now(at("2000-01-01T00:00:00Z"), false);
        assert_eq!(now, at("2026-12-01T00:00:00Z"));
        // A clock a little ahead of the floor is believed, synchronised or not.
        let later = at("2027-01-10T00:00:00Z");
        assert_eq!(floor.now(later, false), later);
        // A garbage clock years ahead is not, unless it is synchronised.
        let garbage = at("2099-01-01T00:00:00Z");
        assert_eq!(floor.now(garbage, false), floor.floor());
        assert_eq!(floor.now(garbage, true), garbage);
    }
}
