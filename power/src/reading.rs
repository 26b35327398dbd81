//! One reading of a power source, in source-neutral terms.

use std::time::Duration;

/// Whether mains feeds the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Online,
    OnBattery,
    /// The source does not say (NUT `WAIT`, a gauge that cannot tell).
    Unknown,
}

/// What a source reported at one moment. Values are raw: the policy filters them.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub line: Line,
    /// The UPS's own low-battery flag (NUT `LB`, sysfs `capacity_level = Critical`).
    pub low_battery: bool,
    /// Forced shutdown requested by the UPS's primary (NUT `FSD`).
    pub forced_shutdown: bool,
    /// State of charge, percent.
    pub charge_percent: Option<f32>,
    /// Remaining runtime estimate.
    pub runtime: Option<Duration>,
    /// Battery voltage, volts (for plausibility checks and the status page).
    pub voltage_v: Option<f32>,
    /// The source's own words for the status, e.g. `OB DISCHRG LB`, for the journal.
    pub raw_status: String,
}

impl Reading {
    /// A reading that says nothing (no line state, no values).
    pub fn unknown(raw_status: impl Into<String>) -> Self {
        Reading {
            line: Line::Unknown,
            low_battery: false,
            forced_shutdown: false,
            charge_percent: None,
            runtime: None,
            voltage_v: None,
            raw_status: raw_status.into(),
        }
    }

    /// Parse a NUT `ups.status` value (`OL`, `OB DISCHRG LB`, `FSD OB`, `WAIT`, ...).
    pub fn from_nut_status(status: &str) -> Self {
        let mut r = Reading::unknown(status.trim());
        let (mut ol, mut ob) = (false, false);
        for token in status.split_whitespace() {
            match token {
                "OL" => ol = true,
                "OB" => ob = true,
                "LB" => r.low_battery = true,
                "FSD" => r.forced_shutdown = true,
                _ => {}
            }
        }
        r.line = match (ol, ob) {
            (true, false) => Line::Online,
            (false, true) => Line::OnBattery,
            // `WAIT`, nothing, or a contradiction: unknown, never a reason to shut down.
            _ => Line::Unknown,
        };
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nut_status_tokens() {
        let r = Reading::from_nut_status("OB DISCHRG LB");
        assert_eq!(r.line, Line::OnBattery);
        assert!(r.low_battery && !r.forced_shutdown);
        let r = Reading::from_nut_status("FSD OL");
        assert_eq!(r.line, Line::Online);
        assert!(r.forced_shutdown);
        assert_eq!(Reading::from_nut_status("WAIT").line, Line::Unknown);
        assert_eq!(Reading::from_nut_status("").line, Line::Unknown);
        assert_eq!(Reading::from_nut_status("OL OB").line, Line::Unknown);
        assert_eq!(Reading::from_nut_status("OL CHRG").line, Line::Online);
    }
}
