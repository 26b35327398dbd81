//! The decision: on line → on battery → critical → shutting down.
//!
//! Pure and clock-free (every call takes `now`), so every rule is unit-tested without waiting.
//!
//! Critical = on battery (confirmed, see [`LineDebouncer`]) and
//! (the UPS's low-battery flag, or filtered runtime ≤ the runtime floor, or filtered charge ≤ the
//! charge floor, or time on battery ≥ the optional maximum); or FSD (a latch: once seen it
//! stays, as in upsd); or no usable reading for the dead time while last seen on battery.
//! Unknown or missing data alone is never critical.
//!
//! The runtime floor is sized from the measured shutdown time: `max(runtime_floor_min,
//! factor × measured)`, so a box whose shutdown got slower asks for more margin by itself.

use std::fmt;
use std::time::{Duration, Instant};

use clinicbox_control::PowerState;

use crate::config::PolicyConfig;
use crate::filter::{LineDebouncer, Median, plausible_charge};
use crate::reading::{Line, Reading};

/// Why the box decided to shut down.
#[derive(Debug, Clone, PartialEq)]
pub enum CriticalReason {
    /// The UPS raised its low-battery flag while on battery.
    LowBattery,
    ChargeBelowFloor {
        percent: f32,
        floor: f32,
    },
    RuntimeBelowFloor {
        runtime: Duration,
        floor: Duration,
    },
    /// The UPS's primary ordered a forced shutdown (FSD).
    ForcedShutdown,
    /// No usable reading for the dead time while last seen on battery.
    CommunicationLost {
        for_: Duration,
    },
    /// On battery for longer than `max_on_battery_s`.
    MaxTimeOnBattery {
        for_: Duration,
    },
}

impl CriticalReason {
    /// Whether returning mains may cancel the shutdown. FSD is a latch: the primary has
    /// already told every host to go down.
    pub fn cancellable(&self) -> bool {
        !matches!(self, CriticalReason::ForcedShutdown)
    }
}

impl fmt::Display for CriticalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CriticalReason::LowBattery => write!(f, "the UPS reports its battery low"),
            CriticalReason::ChargeBelowFloor { percent, floor } => {
                write!(f, "battery at {percent:.0}% (floor {floor:.0}%)")
            }
            CriticalReason::RuntimeBelowFloor { runtime, floor } => write!(
                f,
                "about {} s of battery left (floor {} s)",
                runtime.as_secs(),
                floor.as_secs()
            ),
            CriticalReason::ForcedShutdown => write!(f, "forced shutdown (FSD) set on the UPS"),
            CriticalReason::CommunicationLost { for_ } => write!(
                f,
                "no contact with the UPS for {} s while on battery",
                for_.as_secs()
            ),
            CriticalReason::MaxTimeOnBattery { for_ } => {
                write!(f, "on battery for {} min", for_.as_secs() / 60)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Normal,
    Critical(CriticalReason),
    ShuttingDown(CriticalReason),
}

/// The policy's view after one observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub state: PowerState,
    /// Confirmed line state.
    pub line: Line,
    pub charge_percent: Option<f32>,
    pub runtime: Option<Duration>,
    pub on_battery_for: Duration,
    /// Set exactly once, on the observation that made the box critical.
    pub decided: Option<CriticalReason>,
    /// Mains is confirmed back, data is fresh and no FSD is latched: a shutdown that has not
    /// passed its point of no return should be cancelled.
    pub mains_back: bool,
    pub flapping: bool,
    /// One line for staff.
    pub detail: String,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
    runtime_floor: Duration,
    line: LineDebouncer,
    charge: Median,
    runtime: Median,
    started: Instant,
    last_good: Option<Instant>,
    on_battery_since: Option<Instant>,
    fsd_latched: bool,
    phase: Phase,
}

impl Policy {
    /// `measured_shutdown`: how long the last real shutdown took, if known.
    pub fn new(cfg: &PolicyConfig, measured_shutdown: Option<Duration>, now: Instant) -> Self {
        let shutdown = measured_shutdown.unwrap_or(Duration::from_secs(cfg.expected_shutdown_s));
        let runtime_floor = Duration::from_secs(cfg.runtime_floor_min_s)
            .max(shutdown.mul_f32(cfg.runtime_safety_factor));
        Policy {
            cfg: cfg.clone(),
            runtime_floor,
            line: LineDebouncer::new(
                Duration::from_millis(cfg.on_battery_delay_ms),
                Duration::from_millis(cfg.mains_return_delay_ms),
            ),
            charge: Median::new(cfg.filter_window),
            runtime: Median::new(cfg.filter_window),
            started: now,
            last_good: None,
            on_battery_since: None,
            fsd_latched: false,
            phase: Phase::Normal,
        }
    }

    /// The runtime below which the box shuts down.
    pub fn runtime_floor(&self) -> Duration {
        self.runtime_floor
    }

    /// Feed one observation: a reading, or `None` when the source could not be read.
    pub fn observe(&mut self, now: Instant, reading: Option<&Reading>) -> Assessment {
        if let Some(r) = reading {
            self.take(now, r);
        }
        let confirmed = self.line.confirmed();
        match confirmed {
            Line::OnBattery => {
                self.on_battery_since.get_or_insert(now);
            }
            Line::Online => self.on_battery_since = None,
            Line::Unknown => {}
        }
        let on_battery_for = self
            .on_battery_since
            .map(|t| now.duration_since(t))
            .unwrap_or_default();
        let data_age = now.duration_since(self.last_good.unwrap_or(self.started));
        let fresh = data_age < Duration::from_millis(self.cfg.dead_time_ms);
        let charge = self.charge.value();
        let runtime = self
            .runtime
            .value()
            .map(|s| Duration::from_secs_f32(s.max(0.0)));

        let mut decided = None;
        if self.phase == Phase::Normal
            && let Some(reason) = self.critical_reason(
                reading,
                confirmed,
                charge,
                runtime,
                on_battery_for,
                data_age,
            )
        {
            self.phase = Phase::Critical(reason.clone());
            decided = Some(reason);
        }

        let state = match &self.phase {
            Phase::ShuttingDown(_) => PowerState::ShuttingDown,
            Phase::Critical(_) => PowerState::Critical,
            Phase::Normal => match confirmed {
                Line::Online if fresh => PowerState::OnLine,
                Line::OnBattery => PowerState::OnBattery,
                _ => PowerState::Unknown,
            },
        };
        let flapping = self.line.flapping(now);
        let detail = self.detail(state, charge, runtime, on_battery_for, data_age, flapping);
        Assessment {
            state,
            line: confirmed,
            charge_percent: charge,
            runtime,
            on_battery_for,
            decided,
            mains_back: confirmed == Line::Online && fresh && !self.fsd_latched,
            flapping,
            detail,
        }
    }

    /// The runner started the shutdown sequence.
    pub fn begin_shutdown(&mut self) {
        if let Phase::Critical(r) = &self.phase {
            self.phase = Phase::ShuttingDown(r.clone());
        }
    }

    /// The shutdown sequence was cancelled before its point of no return (mains came back).
    pub fn shutdown_cancelled(&mut self) {
        self.phase = Phase::Normal;
    }

    /// Whether FSD has been seen.
    pub fn fsd_latched(&self) -> bool {
        self.fsd_latched
    }

    /// The reason behind the current shutdown, if any.
    pub fn shutdown_reason(&self) -> Option<&CriticalReason> {
        match &self.phase {
            Phase::Normal => None,
            Phase::Critical(r) | Phase::ShuttingDown(r) => Some(r),
        }
    }

    fn take(&mut self, now: Instant, r: &Reading) {
        if r.forced_shutdown {
            self.fsd_latched = true;
        }
        if r.line != Line::Unknown || r.charge_percent.is_some() {
            self.last_good = Some(now);
        }
        self.line.observe(now, r.line);
        if let Some(c) = r.charge_percent {
            self.charge.push(c, plausible_charge(c, r.low_battery));
        }
        if let Some(rt) = r.runtime {
            // 0 s without the low-battery flag is a bad read, like 0 %.
            self.runtime
                .push(rt.as_secs_f32(), !rt.is_zero() || r.low_battery);
        }
    }

    fn critical_reason(
        &self,
        reading: Option<&Reading>,
        confirmed: Line,
        charge: Option<f32>,
        runtime: Option<Duration>,
        on_battery_for: Duration,
        data_age: Duration,
    ) -> Option<CriticalReason> {
        if self.fsd_latched {
            return Some(CriticalReason::ForcedShutdown);
        }
        if self.line.last_raw() == Line::OnBattery
            && data_age >= Duration::from_millis(self.cfg.dead_time_ms)
        {
            return Some(CriticalReason::CommunicationLost { for_: data_age });
        }
        if confirmed != Line::OnBattery {
            return None;
        }
        if reading.is_some_and(|r| r.low_battery && r.line == Line::OnBattery) {
            return Some(CriticalReason::LowBattery);
        }
        if let Some(rt) = runtime
            && rt <= self.runtime_floor
        {
            return Some(CriticalReason::RuntimeBelowFloor {
                runtime: rt,
                floor: self.runtime_floor,
            });
        }
        if let Some(c) = charge
            && c <= self.cfg.charge_floor_percent
        {
            return Some(CriticalReason::ChargeBelowFloor {
                percent: c,
                floor: self.cfg.charge_floor_percent,
            });
        }
        if self.cfg.max_on_battery_s > 0
            && on_battery_for >= Duration::from_secs(self.cfg.max_on_battery_s)
        {
            return Some(CriticalReason::MaxTimeOnBattery {
                for_: on_battery_for,
            });
        }
        None
    }

    fn detail(
        &self,
        state: PowerState,
        charge: Option<f32>,
        runtime: Option<Duration>,
        on_battery_for: Duration,
        data_age: Duration,
        flapping: bool,
    ) -> String {
        let charge_s = charge.map(|c| format!("battery {c:.0}%"));
        let runtime_s = runtime.map(|r| format!("about {} min left", r.as_secs() / 60));
        let values: Vec<String> = [charge_s, runtime_s].into_iter().flatten().collect();
        let values = if values.is_empty() {
            String::new()
        } else {
            format!(" ({})", values.join(", "))
        };
        let mut s = match state {
            PowerState::OnLine => format!("On mains power{values}"),
            PowerState::OnBattery => format!(
                "On battery for {} min{values}; the box shuts down cleanly at {:.0}% or {} min left",
                on_battery_for.as_secs() / 60,
                self.cfg.charge_floor_percent,
                self.runtime_floor.as_secs().div_ceil(60)
            ),
            PowerState::Critical | PowerState::ShuttingDown => format!(
                "Shutting down cleanly: {}",
                self.shutdown_reason()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            PowerState::Unknown if self.last_good.is_none() => {
                "Waiting for the first reading from the power source".to_string()
            }
            PowerState::Unknown => format!(
                "The power source has not answered for {} s",
                data_age.as_secs()
            ),
        };
        if flapping {
            s.push_str("; mains is unstable (switching on and off)");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            on_battery_delay_ms: 4000,
            mains_return_delay_ms: 6000,
            dead_time_ms: 15_000,
            ..PolicyConfig::default()
        }
    }

    fn r(status: &str, charge: Option<f32>, runtime_s: Option<u64>) -> Reading {
        let mut r = Reading::from_nut_status(status);
        r.charge_percent = charge;
        r.runtime = runtime_s.map(Duration::from_secs);
        r
    }

    struct Clock(Instant);
    impl Clock {
        fn at(&self, s: u64) -> Instant {
            self.0 + Duration::from_secs(s)
        }
    }

    #[test]
    fn ol_ob_lb_goes_critical_once() {
        let c = Clock(Instant::now());
        let mut p = Policy::new(&cfg(), None, c.at(0));
        assert_eq!(
            p.observe(c.at(0), Some(&r("OL", Some(100.0), None))).state,
            PowerState::OnLine
        );
        assert_eq!(
            p.observe(c.at(2), Some(&r("OB", Some(99.0), None))).state,
            PowerState::OnLine
        );
        let a = p.observe(c.at(6), Some(&r("OB", Some(98.0), None)));
        assert_eq!(a.state, PowerState::OnBattery);
        assert!(a.decided.is_none());
        let a = p.observe(c.at(8), Some(&r("OB LB", Some(60.0), None)));
        assert_eq!(a.state, PowerState::Critical);
        assert_eq!(a.decided, Some(CriticalReason::LowBattery));
        p.begin_shutdown();
        let a = p.observe(c.at(10), Some(&r("OB LB", Some(59.0), None)));
        assert_eq!(a.state, PowerState::ShuttingDown);
        assert!(a.decided.is_none(), "decided only once");
    }

    #[test]
    fn lb_during_a_short_ob_flap_is_ignored() {
        let c = Clock(Instant::now());
        let mut p = Policy::new(&cfg(), None, c.at(0));
        p.observe(c.at(0), Some(&r("OL", Some(40.0), None)));
        for i in 1..30u64 {
            let s = if i % 2 == 1 { "OB LB" } else { "OL" };
            let a = p.observe(c.at(i * 2), Some(&r(s, Some(40.0), None)));
            assert!(a.decided.is_none(), "flap {i} must not shut down");
            assert_eq!(a.state, PowerState::OnLine);
        }
        let a = p.observe(c.at(61), Some(&r("OL", Some(40.0), None)));
        assert!(a.flapping);
        assert!(a.detail.contains("unstable"), "{}", a.detail);
    }

    #[test]
    fn charge_floor_uses_the_median_not_a_single_jump() {
        let c = Clock(Instant::now());
        let mut p = Policy::new(&cfg(), None, c.at(0));
        p.observe(c.at(0), Some(&r("OB", Some(95.0), None)));
        for i in 1..=4 {
            p.observe(c.at(i), Some(&r("OB", Some(95.0), None)));
        }
        // Two glitch reads of 17% and a 0% read do not trigger.
        for (i, v) in [(5, 17.0), (6, 0.0), (7, 17.0)] {
            let a = p.observe(c.at(i), Some(&r("OB", Some(v), None)));
            assert!(a.decided.is_none(), "glitch at {i}s");
        }
        // A lasting low charge does.
        let mut decided = None;
        for i in 8..14 {
            decided = decided.or(p.observe(c.at(i), Some(&r("OB", Some(15.0), None))).decided);
        }
        assert!(
            matches!(decided, Some(CriticalReason::ChargeBelowFloor { .. })),
            "{decided:?}"
        );
    }

    #[test]
    fn runtime_floor_is_sized_from_the_measured_shutdown() {
        let c = Clock(Instant::now());
        let p = Policy::new(&cfg(), Some(Duration::from_secs(100)), c.at(0));
        assert_eq!(p.runtime_floor(), Duration::from_secs(300));
        let p = Policy::new(&cfg(), Some(Duration::from_secs(10)), c.at(0));
        assert_eq!(
            p.runtime_floor(),
            Duration::from_secs(180),
            "never below the minimum"
        );

        let mut p = Policy::new(&cfg(), Some(Duration::from_secs(100)), c.at(0));
        p.observe(c.at(0), Some(&r("OB", Some(90.0), Some(900))));
        let mut decided = None;
        for i in 1..10 {
            decided = decided.or(p
                .observe(c.at(i), Some(&r("OB", Some(90.0), Some(250))))
                .decided);
        }
        assert!(
            matches!(decided, Some(CriticalReason::RuntimeBelowFloor { .. })),
            "{decided:?}"
        );
    }

    #[test]
    fn fsd_is_obeyed_on_line_and_latched() {
        let c = Clock(Instant::now());
        let mut p = Policy::new(&cfg(), None, c.at(0));
        p.observe(c.at(0), Some(&r("OL", Some(100.0), None)));
        let a = p.observe(c.at(2), Some(&r("FSD OL", Some(100.0), None)));
        assert_eq!(a.decided, Some(CriticalReason::ForcedShutdown));
        assert!(!CriticalReason::ForcedShutdown.cancellable());
        p.begin_shutdown();
        let a = p.observe(c.at(20), Some(&r("OL", Some(100.0), None)));
        assert!(!a.mains_back, "FSD latch forbids cancelling");
        assert!(p.fsd_latched());
    }

    #[test]
    fn lost_contact_on_battery_is_critical_after_dead_time_but_not_on_line() {
        let c = Clock(Instant::now());
        let mut p = Policy::new(&cfg(), None, c.at(0));
        p.observe(c.at(0), Some(&r("OB", Some(90.0), None)));
        assert!(
            p.observe(c.at(10), None).decided.is_none(),
            "before dead time"
        );
        let a = p.observe(c.at(15), None);
        assert!(
            matches!(a.decided, Some(CriticalReason::CommunicationLost { .. })),
            "{a:?}"
        );

        let mut p = Policy::new(&cfg(), None, c.at(0));
        p.observe(c.at(0), Some(&r("OL", Some(90.0), None)));
        for i in 1..100 {
            let a = p.observe(c.at(i * 5), None);
            assert!(a.decided.is_none());
        }
        let a = p.observe(c.at(600), None);
        assert_eq!(a.state, PowerState::Unknown);
        assert!(a.detail.contains("not answered"), "{}", a.detail);
    }

    #[test]
    fn wait_and_missing_values_are_never_critical() {
        let c = Clock(Instant::now());
        let mut p = Policy::new(&cfg(), None, c.at(0));
        for i in 0..100 {
            let a = p.observe(c.at(i), Some(&r("WAIT", None, None)));
            assert!(a.decided.is_none());
            assert_eq!(a.state, PowerState::Unknown);
        }
        // On battery with no charge/runtime data at all: on battery, not critical.
        let mut p = Policy::new(&cfg(), None, c.at(0));
        for i in 0..100 {
            let a = p.observe(c.at(i), Some(&r("OB", None, None)));
            assert!(a.decided.is_none());
        }
    }

    #[test]
    fn mains_back_is_reported_for_cancel_after_the_return_delay() {
        let c = Clock(Instant::now());
        let mut p = Policy::new(&cfg(), None, c.at(0));
        p.observe(c.at(0), Some(&r("OB", Some(30.0), None)));
        let a = p.observe(c.at(1), Some(&r("OB LB", Some(30.0), None)));
        assert!(a.decided.is_some());
        p.begin_shutdown();
        assert!(
            !p.observe(c.at(2), Some(&r("OL", Some(30.0), None)))
                .mains_back
        );
        assert!(
            p.observe(c.at(8), Some(&r("OL", Some(30.0), None)))
                .mains_back
        );
        p.shutdown_cancelled();
        let a = p.observe(c.at(9), Some(&r("OL", Some(30.0), None)));
        assert_eq!(a.state, PowerState::OnLine);
        assert!(a.decided.is_none());
    }

    #[test]
    fn max_time_on_battery() {
        let c = Clock(Instant::now());
        let cfg = PolicyConfig {
            max_on_battery_s: 600,
            ..cfg()
        };
        let mut p = Policy::new(&cfg, None, c.at(0));
        p.observe(c.at(0), Some(&r("OB", Some(90.0), None)));
        assert!(
            p.observe(c.at(599), Some(&r("OB", Some(90.0), None)))
                .decided
                .is_none()
        );
        assert!(matches!(
            p.observe(c.at(600), Some(&r("OB", Some(90.0), None)))
                .decided,
            Some(CriticalReason::MaxTimeOnBattery { .. })
        ));
    }
}
