//! I2C fuel gauges on Raspberry Pi UPS HATs, read through embedded-hal drivers.
//!
//! - INA219 (Waveshare UPS HATs and clones): battery pack voltage and shunt current. Charge is
//!   estimated from the per-cell voltage with a configurable curve; a discharge current means
//!   on battery.
//! - MAX17043/MAX17048/MAX17049 (Geekworm X-series and others): the chip's own state of charge;
//!   the 48/49 also report a charge rate, negative while discharging.
//!
//! Gauges are generic over `embedded_hal::i2c::I2c`, so tests drive them with
//! `embedded-hal-mock` transaction lists recorded from real boards. Reads are blocking I2C
//! ioctls, so [`GaugeSource`] runs them on tokio's blocking pool with a timeout, and never
//! stacks a second read on top of one that hangs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embedded_hal::i2c::I2c;
use ina219::SyncIna219;
use ina219::address::Address;
use ina219::calibration::UnCalibrated;
use max170xx::{Max17043, Max17048, Max17049};

use crate::config::{Ina219Config, Max1704xConfig, MaxChip};
use crate::filter::plausible_voltage;
use crate::reading::{Line, Reading};
use crate::source::{PowerSource, SourceError};

/// One sample from a gauge, before filtering.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeSample {
    pub line: Line,
    pub voltage_v: Option<f32>,
    pub current_ma: Option<f32>,
    pub charge_percent: Option<f32>,
    /// %/hour, negative while discharging (MAX17048/49).
    pub charge_rate: Option<f32>,
}

/// A blocking fuel gauge.
pub trait FuelGauge: Send + 'static {
    fn kind(&self) -> &'static str;
    fn sample(&mut self) -> Result<GaugeSample, String>;
}

/// Charge from a per-cell voltage by linear interpolation on `curve` (`[mV, %]`, ascending).
pub fn charge_from_cell_mv(curve: &[[f32; 2]], mv: f32) -> Option<f32> {
    let (first, last) = (curve.first()?, curve.last()?);
    if mv <= first[0] {
        return Some(first[1]);
    }
    if mv >= last[0] {
        return Some(last[1]);
    }
    curve.windows(2).find_map(|w| {
        let ([v0, p0], [v1, p1]) = (w[0], w[1]);
        (mv >= v0 && mv <= v1 && v1 > v0).then(|| p0 + (p1 - p0) * (mv - v0) / (v1 - v0))
    })
}

enum InaState<I2C> {
    /// Not (yet) initialised: the chip was absent or failed its reset check.
    Bus(I2C),
    Ready(SyncIna219<I2C, UnCalibrated>),
    /// Only while moving between the two.
    Empty,
}

/// INA219 voltage/current monitor.
pub struct Ina219Gauge<I2C> {
    state: InaState<I2C>,
    address: Address,
    shunt_milliohm: u32,
    cells: u8,
    curve: Vec<[f32; 2]>,
    on_battery_below_ma: f32,
}

impl<I2C: I2c + Send + 'static> Ina219Gauge<I2C> {
    /// The chip is reset and checked on the first sample (and again after a failed check), so
    /// a HAT that comes up late is picked up.
    pub fn new(i2c: I2C, cfg: &Ina219Config) -> Result<Self, SourceError> {
        let address = Address::from_byte(cfg.address).map_err(|e| {
            SourceError::Io(format!("invalid INA219 address {:#x}: {e}", cfg.address))
        })?;
        if cfg.cells == 0 || cfg.shunt_milliohm == 0 {
            return Err(SourceError::Io("INA219 cells and shunt must be > 0".into()));
        }
        Ok(Ina219Gauge {
            state: InaState::Bus(i2c),
            address,
            shunt_milliohm: cfg.shunt_milliohm,
            cells: cfg.cells,
            curve: cfg.cell_curve.clone(),
            on_battery_below_ma: cfg.on_battery_below_ma,
        })
    }

    fn ready(&mut self) -> Result<&mut SyncIna219<I2C, UnCalibrated>, String> {
        if let InaState::Bus(_) = self.state {
            let InaState::Bus(bus) = std::mem::replace(&mut self.state, InaState::Empty) else {
                return Err("INA219 state lost".into());
            };
            match SyncIna219::new(bus, self.address) {
                Ok(dev) => self.state = InaState::Ready(dev),
                Err(e) => {
                    let msg = format!("INA219 init failed: {:?}", e.reason);
                    self.state = InaState::Bus(e.device);
                    return Err(msg);
                }
            }
        }
        match &mut self.state {
            InaState::Ready(dev) => Ok(dev),
            _ => Err("INA219 not initialised".into()),
        }
    }
}

impl<I2C> FuelGauge for Ina219Gauge<I2C>
where
    I2C: I2c + Send + 'static,
{
    fn kind(&self) -> &'static str {
        "ina219"
    }

    fn sample(&mut self) -> Result<GaugeSample, String> {
        let shunt_milliohm = self.shunt_milliohm as f32;
        let dev = self.ready()?;
        let bus = dev
            .bus_voltage()
            .map_err(|e| format!("INA219 bus voltage: {e}"))?;
        let shunt = dev
            .shunt_voltage()
            .map_err(|e| format!("INA219 shunt voltage: {e}"))?;
        let volts = f32::from(bus.voltage_mv()) / 1000.0;
        // µV / mΩ = mA.
        let current_ma = shunt.shunt_voltage_uv() as f32 / shunt_milliohm;
        let plausible = plausible_voltage(volts);
        let charge = plausible
            .then(|| charge_from_cell_mv(&self.curve, volts * 1000.0 / f32::from(self.cells)))
            .flatten();
        Ok(GaugeSample {
            line: if current_ma < self.on_battery_below_ma {
                Line::OnBattery
            } else {
                Line::Online
            },
            voltage_v: plausible.then_some(volts),
            current_ma: Some(current_ma),
            charge_percent: charge,
            charge_rate: None,
        })
    }
}

enum MaxDev<I2C> {
    M43(Max17043<I2C>),
    M48(Max17048<I2C>),
    M49(Max17049<I2C>),
}

/// MAX1704x ModelGauge fuel gauge.
pub struct Max1704xGauge<I2C> {
    dev: MaxDev<I2C>,
    on_battery_below_rate: f32,
}

impl<I2C: I2c + Send + 'static> Max1704xGauge<I2C> {
    pub fn new(i2c: I2C, cfg: &Max1704xConfig) -> Self {
        let dev = match cfg.chip {
            MaxChip::Max17043 => MaxDev::M43(Max17043::new(i2c)),
            MaxChip::Max17048 => MaxDev::M48(Max17048::new(i2c)),
            MaxChip::Max17049 => MaxDev::M49(Max17049::new(i2c)),
        };
        Max1704xGauge {
            dev,
            on_battery_below_rate: cfg.on_battery_below_rate,
        }
    }
}

impl<I2C> FuelGauge for Max1704xGauge<I2C>
where
    I2C: I2c + Send + 'static,
    I2C::Error: std::fmt::Debug,
{
    fn kind(&self) -> &'static str {
        match self.dev {
            MaxDev::M43(_) => "max17043",
            MaxDev::M48(_) => "max17048",
            MaxDev::M49(_) => "max17049",
        }
    }

    fn sample(&mut self) -> Result<GaugeSample, String> {
        let err = |what: &str, e: &dyn std::fmt::Debug| format!("{what}: {e:?}");
        let (soc, volts, rate) = match &mut self.dev {
            MaxDev::M43(d) => (
                d.soc().map_err(|e| err("MAX17043 SOC", &e))?,
                d.voltage().map_err(|e| err("MAX17043 VCELL", &e))?,
                None,
            ),
            MaxDev::M48(d) => (
                d.soc().map_err(|e| err("MAX17048 SOC", &e))?,
                d.voltage().map_err(|e| err("MAX17048 VCELL", &e))?,
                Some(d.charge_rate().map_err(|e| err("MAX17048 CRATE", &e))?),
            ),
            MaxDev::M49(d) => (
                d.soc().map_err(|e| err("MAX17049 SOC", &e))?,
                d.voltage().map_err(|e| err("MAX17049 VCELL", &e))?,
                Some(d.charge_rate().map_err(|e| err("MAX17049 CRATE", &e))?),
            ),
        };
        let line = match rate {
            Some(r) if r < self.on_battery_below_rate => Line::OnBattery,
            Some(_) => Line::Online,
            None => Line::Unknown,
        };
        // The SOC register can read above 100 % right after a full charge.
        let soc = soc.min(100.0);
        Ok(GaugeSample {
            line,
            voltage_v: plausible_voltage(volts).then_some(volts),
            current_ma: None,
            charge_percent: plausible_voltage(volts).then_some(soc),
            charge_rate: rate,
        })
    }
}

/// A gauge as a [`PowerSource`].
pub struct GaugeSource<G> {
    gauge: Arc<Mutex<G>>,
    kind: &'static str,
    online_path: Option<PathBuf>,
    timeout: Duration,
    in_flight: Arc<AtomicBool>,
}

impl<G: FuelGauge> GaugeSource<G> {
    /// `online_path`: optional file reading `1` while mains is present, which overrides the
    /// gauge's own guess. `timeout` bounds one blocking read.
    pub fn new(gauge: G, online_path: Option<PathBuf>, timeout: Duration) -> Self {
        GaugeSource {
            kind: gauge.kind(),
            gauge: Arc::new(Mutex::new(gauge)),
            online_path,
            timeout,
            in_flight: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<G: FuelGauge> PowerSource for GaugeSource<G> {
    fn describe(&self) -> String {
        format!("i2c:{}", self.kind)
    }

    async fn read(&mut self) -> Result<Reading, SourceError> {
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return Err(SourceError::Stuck(
                "previous I2C read is still hanging".into(),
            ));
        }
        let gauge = self.gauge.clone();
        let in_flight = self.in_flight.clone();
        let task = tokio::task::spawn_blocking(move || {
            let r = match gauge.lock() {
                Ok(mut g) => g.sample(),
                Err(_) => Err("gauge lock poisoned".to_string()),
            };
            in_flight.store(false, Ordering::Release);
            r
        });
        let sample = match tokio::time::timeout(self.timeout, task).await {
            Err(_) => {
                return Err(SourceError::Stuck(format!(
                    "I2C read took longer than {:?}",
                    self.timeout
                )));
            }
            Ok(Err(join)) => {
                self.in_flight.store(false, Ordering::Release);
                return Err(SourceError::Io(format!("I2C read task failed: {join}")));
            }
            Ok(Ok(r)) => r.map_err(SourceError::Io)?,
        };
        let mut line = sample.line;
        if let Some(p) = &self.online_path {
            line = match std::fs::read_to_string(p).map(|s| s.trim().to_string()) {
                Ok(s) if s == "1" => Line::Online,
                Ok(s) if s == "0" => Line::OnBattery,
                Ok(_) | Err(_) => Line::Unknown,
            };
        }
        let mut words = vec![format!("{line:?}")];
        if let Some(v) = sample.voltage_v {
            words.push(format!("{v:.2} V"));
        }
        if let Some(i) = sample.current_ma {
            words.push(format!("{i:.0} mA"));
        }
        if let Some(r) = sample.charge_rate {
            words.push(format!("{r:.1} %/h"));
        }
        Ok(Reading {
            line,
            low_battery: false,
            forced_shutdown: false,
            charge_percent: sample.charge_percent,
            runtime: None,
            voltage_v: sample.voltage_v,
            raw_status: words.join(" "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_curve_interpolates_and_clamps() {
        let c = crate::config::default_cell_curve();
        assert_eq!(charge_from_cell_mv(&c, 2500.0), Some(0.0));
        assert_eq!(charge_from_cell_mv(&c, 4300.0), Some(100.0));
        assert_eq!(charge_from_cell_mv(&c, 3700.0), Some(45.0));
        let mid = charge_from_cell_mv(&c, 3750.0).expect("value");
        assert!((mid - 52.5).abs() < 0.01, "{mid}");
        assert_eq!(charge_from_cell_mv(&[], 3700.0), None);
    }
}
