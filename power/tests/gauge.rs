//! I2C fuel gauges against recorded register traffic (embedded-hal-mock): no bus exists on the
//! build machine, so the driver-level mock replays exactly the I2C transactions a board would
//! answer, and fails the test if the driver asks for anything else.
//!
//! Register values follow the datasheet encodings: INA219 bus voltage = 4 mV LSB in bits 15..3
//! (bit 1 = conversion ready), shunt voltage = signed 10 µV LSB; MAX17048 VCELL = 78.125 µV LSB,
//! SOC = 1/256 %, CRATE = signed 0.208 %/h; MAX17043 VCELL = 1.25 mV LSB in bits 15..4.

use std::time::Duration;

use clinicbox_power::config::{Ina219Config, Max1704xConfig, MaxChip};
use clinicbox_power::gauge::{GaugeSource, Ina219Gauge, Max1704xGauge};
use clinicbox_power::{Line, PowerSource, SourceError};
use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

const INA: u8 = 0x42;
const MAX: u8 = 0x36;

/// INA219 init as the driver does it: write the configuration with the reset bit, then read the
/// configuration back until it is the power-on default (0x399F).
fn ina_init() -> Vec<T> {
    vec![
        T::write(INA, vec![0x00, 0xB9, 0x9F]),
        T::write_read(INA, vec![0x00], vec![0x39, 0x9F]),
    ]
}

fn ina_sample(bus: u16, shunt: i16) -> Vec<T> {
    vec![
        T::write_read(INA, vec![0x02], bus.to_be_bytes().to_vec()),
        T::write_read(INA, vec![0x01], shunt.to_be_bytes().to_vec()),
    ]
}

/// Bus voltage register for `mv` with the conversion-ready bit set.
fn bus_reg(mv: u16) -> u16 {
    ((mv / 4) << 3) | 0b10
}

fn ina_source(mock: &Mock) -> GaugeSource<Ina219Gauge<Mock>> {
    let cfg = Ina219Config::default(); // 0x42, 100 mΩ, 2 cells, -50 mA
    let gauge = Ina219Gauge::new(mock.clone(), &cfg).expect("gauge");
    GaugeSource::new(gauge, None, Duration::from_secs(2))
}

#[tokio::test]
async fn ina219_discharging_is_on_battery_with_charge_from_the_cell_curve() {
    // 7.80 V pack (3.90 V/cell), -620 mA (shunt -62 mV).
    let mut expect = ina_init();
    expect.extend(ina_sample(bus_reg(7800), -6200));
    let mut mock = Mock::new(&expect);
    let mut src = ina_source(&mock);
    let r = src.read().await.expect("read");
    assert_eq!(r.line, Line::OnBattery);
    assert_eq!(r.voltage_v, Some(7.8));
    assert_eq!(r.charge_percent, Some(72.0));
    assert!(r.raw_status.contains("-620 mA"), "{}", r.raw_status);
    mock.done();
}

#[tokio::test]
async fn ina219_charging_is_on_line_and_init_happens_once() {
    let mut expect = ina_init();
    expect.extend(ina_sample(bus_reg(8200), 3000)); // +300 mA
    expect.extend(ina_sample(bus_reg(8204), 2900));
    let mut mock = Mock::new(&expect);
    let mut src = ina_source(&mock);
    assert_eq!(src.read().await.expect("read").line, Line::Online);
    assert_eq!(src.read().await.expect("read").line, Line::Online);
    mock.done();
}

#[tokio::test]
async fn ina219_zero_volt_read_gives_no_voltage_and_no_charge() {
    // The classic bad read that shut boxes down (geeekpi/upsplus#14).
    let mut expect = ina_init();
    expect.extend(ina_sample(0b10, -6200));
    let mut mock = Mock::new(&expect);
    let mut src = ina_source(&mock);
    let r = src.read().await.expect("read");
    assert_eq!(r.voltage_v, None);
    assert_eq!(r.charge_percent, None);
    mock.done();
}

#[tokio::test]
async fn ina219_absent_then_present_is_retried() {
    let mut expect = vec![T::write(INA, vec![0x00, 0xB9, 0x9F]).with_error(ErrorKind::Other)];
    expect.extend(ina_init());
    expect.extend(ina_sample(bus_reg(7400), -5000));
    let mut mock = Mock::new(&expect);
    let mut src = ina_source(&mock);
    assert!(matches!(src.read().await, Err(SourceError::Io(_))));
    assert_eq!(src.read().await.expect("second read").line, Line::OnBattery);
    mock.done();
}

fn max_source(
    mock: &Mock,
    chip: MaxChip,
    online: Option<std::path::PathBuf>,
) -> GaugeSource<Max1704xGauge<Mock>> {
    let cfg = Max1704xConfig {
        chip,
        online_path: online.clone(),
        ..Max1704xConfig::default()
    };
    GaugeSource::new(
        Max1704xGauge::new(mock.clone(), &cfg),
        online,
        Duration::from_secs(2),
    )
}

#[tokio::test]
async fn max17048_negative_charge_rate_is_on_battery() {
    let expect = vec![
        T::write_read(MAX, vec![0x04], vec![0x3A, 0x80]), // SOC 58.5 %
        T::write_read(MAX, vec![0x02], vec![0xC4, 0xE0]), // VCELL 50400 * 78.125 µV = 3.9375 V
        T::write_read(MAX, vec![0x16], vec![0xFF, 0xC0]), // CRATE -64 * 0.208 = -13.3 %/h
    ];
    let mut mock = Mock::new(&expect);
    let mut src = max_source(&mock, MaxChip::Max17048, None);
    let r = src.read().await.expect("read");
    assert_eq!(r.line, Line::OnBattery);
    assert_eq!(r.charge_percent, Some(58.5));
    assert_eq!(r.voltage_v, Some(3.9375));
    mock.done();
}

#[tokio::test]
async fn max17048_charging_is_on_line_and_soc_above_100_is_clamped() {
    let expect = vec![
        T::write_read(MAX, vec![0x04], vec![0x64, 0x80]), // 100.5 %
        T::write_read(MAX, vec![0x02], vec![0xD2, 0xF0]), // 4.2 V
        T::write_read(MAX, vec![0x16], vec![0x00, 0x10]), // +3.3 %/h
    ];
    let mut mock = Mock::new(&expect);
    let mut src = max_source(&mock, MaxChip::Max17048, None);
    let r = src.read().await.expect("read");
    assert_eq!(r.line, Line::Online);
    assert_eq!(r.charge_percent, Some(100.0));
    mock.done();
}

#[tokio::test]
async fn max17043_cannot_tell_mains_unless_told_by_a_file() {
    let sample = || {
        vec![
            T::write_read(MAX, vec![0x04], vec![0x5A, 0x00]), // 90 %
            T::write_read(MAX, vec![0x02], vec![0xC3, 0x50]), // (0xC35 = 3125) / 800 = 3.906 V
        ]
    };
    let mut mock = Mock::new(&sample());
    let mut src = max_source(&mock, MaxChip::Max17043, None);
    let r = src.read().await.expect("read");
    assert_eq!(
        r.line,
        Line::Unknown,
        "no charge-rate register: unknown, never critical"
    );
    assert_eq!(r.charge_percent, Some(90.0));
    mock.done();

    let dir = tempfile::tempdir().expect("tempdir");
    let online = dir.path().join("online");
    std::fs::write(&online, "0\n").expect("write");
    let mut expect = sample();
    expect.extend(sample());
    let mut mock = Mock::new(&expect);
    let mut src = max_source(&mock, MaxChip::Max17043, Some(online.clone()));
    assert_eq!(src.read().await.expect("read").line, Line::OnBattery);
    std::fs::write(&online, "1\n").expect("write");
    assert_eq!(src.read().await.expect("read").line, Line::Online);
    mock.done();
}

#[tokio::test]
async fn i2c_error_is_an_error_not_a_reading() {
    let expect =
        vec![T::write_read(MAX, vec![0x04], vec![0x00, 0x00]).with_error(ErrorKind::Other)];
    let mut mock = Mock::new(&expect);
    let mut src = max_source(&mock, MaxChip::Max17048, None);
    assert!(matches!(src.read().await, Err(SourceError::Io(_))));
    mock.done();
}
