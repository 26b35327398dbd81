//! The store's one clock. Every commit and every `serverDate` handed to a tablet come from it.
//!
//! Invariants:
//! 1. Timestamps never go backwards, also across restarts: the last commit's time is persisted,
//!    and a box whose wall clock was reset (a Pi without RTC after a power cut) continues from it.
//! 2. A `serverDate` is never later than the timestamp of a commit that is not yet visible to
//!    readers. A tablet that downloads everything `updatedAfter >= serverDate` therefore sees
//!    every commit it missed, including one that was in flight while it read the date.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) struct Clock {
    state: Mutex<State>,
}

struct State {
    last: u64,
    in_flight: Option<u64>,
}

impl Clock {
    pub(crate) fn starting_at(floor_ms: u64) -> Clock {
        Clock {
            state: Mutex::new(State {
                last: floor_ms,
                in_flight: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave `State` inconsistent (two plain writes).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time for a commit that is about to be built.
    pub(crate) fn begin_commit(&self) -> u64 {
        let mut s = self.lock();
        s.last = s.last.max(wall_ms());
        s.in_flight = Some(s.last);
        s.last
    }

    /// Called once the commit is visible to new readers (or has failed).
    pub(crate) fn end_commit(&self) {
        self.lock().in_flight = None;
    }

    /// The time a tablet may use as `serverDate`.
    pub(crate) fn server_time(&self) -> u64 {
        let mut s = self.lock();
        if let Some(t) = s.in_flight {
            return t;
        }
        s.last = s.last.max(wall_ms());
        s.last
    }
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_behind_the_floor_continues_from_the_floor() {
        let future = wall_ms() + 86_400_000;
        let c = Clock::starting_at(future);
        assert_eq!(c.server_time(), future);
        assert_eq!(c.begin_commit(), future);
    }

    #[test]
    fn server_time_does_not_pass_an_in_flight_commit() {
        let c = Clock::starting_at(0);
        let t = c.begin_commit();
        assert_eq!(c.server_time(), t);
        c.end_commit();
        assert!(c.server_time() >= t);
    }
}
