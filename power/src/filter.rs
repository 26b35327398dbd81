//! Filters for the faults users report from real gauges and UPSes.
//!
//! - 0 V / 0 % reads and out-of-range values are dropped as implausible (`geeekpi/upsplus#14`).
//! - Jumps such as 99 % → 17 % right after unplugging (`PiSupply/PiJuice#180`) are smoothed by a
//!   median over a small fixed window: a value moves the result only once it has persisted for
//!   more than half the window.
//! - Flapping OL/OB is handled by [`LineDebouncer`]: a new line state counts only after it has
//!   held for a delay.
//!
//! All buffers are fixed-capacity (`heapless`), so the filters never allocate.

use std::time::{Duration, Instant};

use heapless::Deque;

use crate::reading::Line;

/// Largest median window.
pub const MAX_WINDOW: usize = 16;

/// Median of the last `window` plausible samples.
#[derive(Debug, Clone)]
pub struct Median {
    window: usize,
    samples: Deque<f32, MAX_WINDOW>,
    rejected: u64,
}

impl Median {
    /// `window` is clamped to `1..=MAX_WINDOW`.
    pub fn new(window: usize) -> Self {
        Median {
            window: window.clamp(1, MAX_WINDOW),
            samples: Deque::new(),
            rejected: 0,
        }
    }

    /// Add a sample if `plausible`; returns whether it was kept.
    pub fn push(&mut self, value: f32, plausible: bool) -> bool {
        if !plausible || !value.is_finite() {
            self.rejected += 1;
            return false;
        }
        while self.samples.len() >= self.window {
            self.samples.pop_front();
        }
        // Cannot fail: we just made room.
        let _ = self.samples.push_back(value);
        true
    }

    /// Median of the window, `None` while empty. With an even count, the lower middle value
    /// (the conservative one for charge and runtime).
    pub fn value(&self) -> Option<f32> {
        let mut sorted: heapless::Vec<f32, MAX_WINDOW> = self.samples.iter().copied().collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable_by(f32::total_cmp);
        Some(sorted[(sorted.len() - 1) / 2])
    }

    /// How many samples were dropped as implausible so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

/// Is a state-of-charge sample believable? 0 % without the UPS's own low-battery flag is the
/// classic bad read; so is anything outside 0–100.
pub fn plausible_charge(percent: f32, low_battery_flag: bool) -> bool {
    percent.is_finite() && (0.0..=100.0).contains(&percent) && (percent > 0.0 || low_battery_flag)
}

/// Is a voltage sample believable? A battery never reads 0 V while the box is running.
pub fn plausible_voltage(volts: f32) -> bool {
    volts.is_finite() && volts > 0.5
}

/// Confirms a change of line state only after it held for a delay; records flapping.
#[derive(Debug, Clone)]
pub struct LineDebouncer {
    to_battery: Duration,
    to_online: Duration,
    confirmed: Line,
    candidate: Option<(Line, Instant)>,
    last_raw: Line,
    /// Instants of raw OL↔OB changes, newest last.
    changes: Deque<Instant, MAX_WINDOW>,
}

/// Raw OL↔OB changes within this window…
const FLAP_WINDOW: Duration = Duration::from_secs(120);
/// …at least this many make the line "flapping" (reported to staff; the debounce already
/// keeps it from driving decisions).
const FLAP_COUNT: usize = 4;

impl LineDebouncer {
    pub fn new(to_battery: Duration, to_online: Duration) -> Self {
        LineDebouncer {
            to_battery,
            to_online,
            confirmed: Line::Unknown,
            candidate: None,
            last_raw: Line::Unknown,
            changes: Deque::new(),
        }
    }

    /// Feed a raw line state; returns the confirmed one.
    ///
    /// The very first known state is taken at once (the box must know where it stands when it
    /// starts); later changes must hold for their delay. `Unknown` never replaces a known state.
    pub fn observe(&mut self, now: Instant, raw: Line) -> Line {
        if raw != Line::Unknown && self.last_raw != Line::Unknown && raw != self.last_raw {
            if self.changes.is_full() {
                self.changes.pop_front();
            }
            let _ = self.changes.push_back(now);
        }
        if raw != Line::Unknown {
            self.last_raw = raw;
        }
        match raw {
            Line::Unknown => {}
            _ if self.confirmed == Line::Unknown => {
                self.confirmed = raw;
                self.candidate = None;
            }
            _ if raw == self.confirmed => self.candidate = None,
            _ => {
                let since = match self.candidate {
                    Some((line, since)) if line == raw => since,
                    _ => {
                        self.candidate = Some((raw, now));
                        now
                    }
                };
                let delay = if raw == Line::OnBattery {
                    self.to_battery
                } else {
                    self.to_online
                };
                if now.duration_since(since) >= delay {
                    self.confirmed = raw;
                    self.candidate = None;
                }
            }
        }
        self.confirmed
    }

    pub fn confirmed(&self) -> Line {
        self.confirmed
    }

    /// The last known raw line state (ignores `Unknown`).
    pub fn last_raw(&self) -> Line {
        self.last_raw
    }

    /// True when the raw line changed state often in the last couple of minutes.
    pub fn flapping(&self, now: Instant) -> bool {
        self.changes
            .iter()
            .filter(|t| now.duration_since(**t) <= FLAP_WINDOW)
            .count()
            >= FLAP_COUNT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_a_short_jump_and_follows_a_lasting_one() {
        let mut m = Median::new(5);
        for v in [99.0, 99.0, 98.0, 98.0] {
            m.push(v, true);
        }
        // PiJuice-style 99% -> 17% glitch for two reads.
        m.push(17.0, true);
        m.push(17.0, true);
        assert!(m.value().expect("value") > 90.0);
        // A drop that lasts takes over once it is most of the window.
        m.push(17.0, true);
        assert_eq!(m.value(), Some(17.0));
    }

    #[test]
    fn implausible_reads_are_dropped() {
        let mut m = Median::new(3);
        assert!(!m.push(0.0, plausible_charge(0.0, false)));
        assert!(
            m.push(0.0, plausible_charge(0.0, true)),
            "0% with LB is real"
        );
        assert!(!m.push(f32::NAN, true));
        assert!(!plausible_charge(130.0, false));
        assert!(!plausible_voltage(0.0));
        assert!(plausible_voltage(7.4));
        assert_eq!(m.rejected(), 2);
    }

    #[test]
    fn empty_median_is_unknown() {
        assert_eq!(Median::new(4).value(), None);
    }

    #[test]
    fn debouncer_needs_the_change_to_hold() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut d = LineDebouncer::new(Duration::from_secs(5), Duration::from_secs(10));
        assert_eq!(
            d.observe(s(0), Line::Online),
            Line::Online,
            "first state at once"
        );
        assert_eq!(d.observe(s(1), Line::OnBattery), Line::Online);
        assert_eq!(
            d.observe(s(3), Line::Unknown),
            Line::Online,
            "unknown changes nothing"
        );
        assert_eq!(d.observe(s(5), Line::OnBattery), Line::Online);
        assert_eq!(d.observe(s(6), Line::OnBattery), Line::OnBattery);
        // Back on line needs 10 s.
        assert_eq!(d.observe(s(7), Line::Online), Line::OnBattery);
        assert_eq!(d.observe(s(16), Line::Online), Line::OnBattery);
        assert_eq!(d.observe(s(17), Line::Online), Line::Online);
    }

    #[test]
    fn flapping_never_confirms_and_is_detected() {
        let t0 = Instant::now();
        let mut d = LineDebouncer::new(Duration::from_secs(5), Duration::from_secs(10));
        d.observe(t0, Line::Online);
        for i in 1..=20u64 {
            let raw = if i % 2 == 0 {
                Line::Online
            } else {
                Line::OnBattery
            };
            assert_eq!(
                d.observe(t0 + Duration::from_secs(2 * i), raw),
                Line::Online
            );
        }
        assert!(d.flapping(t0 + Duration::from_secs(40)));
        assert!(!d.flapping(t0 + Duration::from_secs(400)));
    }
}
