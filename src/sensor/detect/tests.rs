//! The detector against the simulator's faults, one kind at a time, and on
//! clean signals.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::fleet::replay;
use super::quality::FaultQuality;
use super::*;
use crate::sensor::device::DeviceType;
use crate::sensor::simulator::{Fleet, SimulatorSettings};

const INTERVAL: Duration = Duration::from_secs(60);

/// What one simulated run showed.
#[derive(Debug)]
struct Outcome {
    quality: FaultQuality,
    device_days: f64,
}

impl Outcome {
    fn false_alarms_per_device_day(&self) -> f64 {
        self.quality.false_alarms as f64 / self.device_days
    }
}

/// Runs `devices` devices of `types` for `days` with faults of `kinds`
/// (none when empty) through one detector each.
fn run(types: &[DeviceType], kinds: &[FaultKind], devices: u32, days: u64, seed: u64) -> Outcome {
    let start: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
    let settings = SimulatorSettings {
        num_devices: devices,
        interval: INTERVAL,
        device_types: types.to_vec(),
        anomaly_probability: 0.0,
        seed,
        fault_probability: if kinds.is_empty() { 0.0 } else { 0.0015 },
        fault_kinds: kinds.to_vec(),
    };
    let mut fleet = Fleet::new(&settings, start);
    let duration = Duration::from_secs(days * 86_400);
    let replayed = replay(&mut fleet, duration, INTERVAL, DetectorSettings::default());
    assert_eq!(
        replayed.readings + fleet.silenced(),
        u64::from(devices) * days * 1440
    );
    Outcome {
        quality: replayed.quality,
        device_days: f64::from(devices) * days as f64,
    }
}

const SENSORS: [DeviceType; 4] = [
    DeviceType::Temperature,
    DeviceType::Humidity,
    DeviceType::Pressure,
    DeviceType::Light,
];

/// Episodes of `kind` on 20 devices of `types` over 6 days: 90 % found, 90 %
/// of the alerts inside an episode, the median alert within `readings` of
/// the episode's start.
fn assert_detects(kind: FaultKind, types: &[DeviceType], readings: u64) {
    let outcome = run(types, &[kind], 20, 6, 11);
    let quality = &outcome.quality;
    let tally = quality.kinds().iter().find(|k| k.kind == kind).unwrap();
    assert!(
        tally.episodes >= 20,
        "{kind}: too few episodes to judge: {tally:?}"
    );
    assert_eq!(
        quality.episodes(),
        tally.episodes,
        "only {kind} was injected"
    );
    assert!(
        tally.recall() >= 0.9,
        "{kind}: recall {:.3}: {tally:?}",
        tally.recall()
    );
    assert!(
        quality.precision() >= 0.9,
        "{kind}: alerts outside episodes: {quality:?}"
    );
    let delay = tally.median_delay().unwrap();
    assert!(delay <= readings, "{kind}: median delay {delay}: {tally:?}");
}

#[test]
fn a_spike_inside_the_normal_range_is_found() {
    assert_detects(FaultKind::Spike, &SENSORS, 5);
}

#[test]
fn a_stuck_sensor_is_found() {
    assert_detects(FaultKind::Stuck, &SENSORS, 5);
}

#[test]
fn a_calibration_drift_is_found() {
    // Its offset is 3 to 6 σ after six readings: found by then.
    assert_detects(FaultKind::Drift, &SENSORS, 6);
}

#[test]
fn a_burst_of_noise_is_found() {
    assert_detects(FaultKind::NoiseBurst, &SENSORS, 5);
}

#[test]
fn a_level_shift_is_found() {
    assert_detects(FaultKind::LevelShift, &SENSORS, 5);
}

#[test]
fn a_silent_device_is_found() {
    assert_detects(FaultKind::Silence, &DeviceType::ALL, 5);
}

#[test]
fn values_of_the_wrong_time_of_day_are_found() {
    assert_detects(FaultKind::WrongTimeOfDay, &SENSORS, 5);
}

#[test]
fn clean_signals_raise_at_most_one_alert_per_device_and_day() {
    let outcome = run(&DeviceType::ALL, &[], 50, 3, 12);
    assert_eq!(outcome.quality.episodes(), 0);
    assert!(
        outcome.false_alarms_per_device_day() <= 1.0,
        "{} false alarms per device-day: {outcome:?}",
        outcome.false_alarms_per_device_day()
    );
}

#[test]
fn the_state_per_device_is_bounded_whatever_it_is_fed() {
    // Fixed fields only, no heap behind them: its size is its whole state.
    let size = std::mem::size_of::<DeviceDetector>();
    assert!(size <= 1024, "{size} bytes");
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let settings = DetectorSettings::default();
    let start: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
    for _ in 0..20 {
        let mut detector = DeviceDetector::new();
        let mut at = start;
        for _ in 0..5_000 {
            at += chrono::Duration::milliseconds(rng.random_range(0..600_000));
            let value = match rng.random_range(0..4) {
                0 => rng.random_range(-1e6..1e6),
                1 => 20.0,
                _ => 20.0 + rng.random_range(-1.0..1.0),
            };
            let verdict = detector.observe(at, value, &settings);
            assert!((0.0..=1.0).contains(&verdict.score), "{verdict:?}");
            assert!(
                detector.open_for <= settings.relearn,
                "an episode outlived relearn"
            );
            assert!(detector.mean_difference.is_finite() && detector.level.is_finite());
        }
    }
}
