//! The detector against the simulator's faults, one kind at a time, and on
//! clean signals.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::sensor::device::DeviceType;
use crate::sensor::fault::FaultTruth;
use crate::sensor::simulator::{Fleet, SimulatorSettings};

const INTERVAL: Duration = Duration::from_secs(60);

/// What one simulated run showed.
#[derive(Debug, Default)]
struct Outcome {
    episodes: u64,
    detected: u64,
    /// Alerts, and those raised inside an episode (or just after it).
    alerts: u64,
    true_alerts: u64,
    /// Alerts whose kind was the episode's.
    right_kind: u64,
    /// Readings from an episode's start to its first alert.
    delays: Vec<i64>,
    device_days: f64,
}

impl Outcome {
    fn recall(&self) -> f64 {
        self.detected as f64 / self.episodes.max(1) as f64
    }
    fn false_alarms_per_device_day(&self) -> f64 {
        (self.alerts - self.true_alerts) as f64 / self.device_days
    }
    fn median_delay(&self) -> i64 {
        let mut delays = self.delays.clone();
        delays.sort_unstable();
        delays.get(delays.len() / 2).copied().unwrap_or(0)
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
    let detector_settings = DetectorSettings::default();
    let mut fleet = Fleet::new(&settings, start);
    let mut detectors: HashMap<String, DeviceDetector> = HashMap::new();
    // Per device: the last episode seen and whether an alert matched it yet,
    // and alerts raised by a silence not labelled yet.
    let mut last_episode: HashMap<String, (FaultTruth, bool)> = HashMap::new();
    let mut pending_silence: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut outcome = Outcome {
        device_days: f64::from(devices) * days as f64,
        ..Outcome::default()
    };
    let grace = chrono::Duration::from_std(INTERVAL * (detector_settings.quiet + 3)).unwrap();
    let judge = |outcome: &mut Outcome,
                 last_episode: &mut HashMap<String, (FaultTruth, bool)>,
                 device: &str,
                 kind: FaultKind,
                 at: DateTime<Utc>| {
        outcome.alerts += 1;
        if let Some((truth, detected)) = last_episode.get_mut(device)
            && truth.started_at <= at
            && at <= truth.ends_at + grace
        {
            outcome.true_alerts += 1;
            outcome.right_kind += u64::from(kind == truth.kind);
            if !*detected {
                *detected = true;
                outcome.detected += 1;
                let slots =
                    (at - truth.started_at).num_milliseconds() / INTERVAL.as_millis() as i64;
                outcome.delays.push(slots);
            }
        }
    };
    let total = Duration::from_secs(days * 86_400);
    let mut swept_at = Duration::ZERO;
    while let Some(reading) = fleet.next_due(total) {
        let now = reading.timestamp;
        let elapsed = (now - start).to_std().unwrap();
        if elapsed >= swept_at + INTERVAL / 4 {
            swept_at = elapsed;
            for (device, detector) in detectors.iter_mut() {
                if detector.is_silent(now.timestamp_millis(), &detector_settings)
                    && detector.mark_silent()
                {
                    pending_silence.insert(device.clone(), now);
                }
            }
        }
        let device = reading.device_id.clone();
        if let Some(truth) = &reading.fault
            && last_episode.get(&device).is_none_or(|(t, _)| t != truth)
        {
            outcome.episodes += 1;
            last_episode.insert(device.clone(), (truth.clone(), false));
        }
        if let Some(at) = pending_silence.remove(&device) {
            judge(
                &mut outcome,
                &mut last_episode,
                &device,
                FaultKind::Silence,
                at,
            );
        }
        let verdict = detectors
            .entry(device.clone())
            .or_insert_with(|| DeviceDetector::for_device(reading.device_type))
            .observe(now, reading.value, &detector_settings);
        assert!((0.0..=1.0).contains(&verdict.score), "{verdict:?}");
        if let Some(kind) = verdict.raised {
            judge(&mut outcome, &mut last_episode, &device, kind, now);
        }
    }
    outcome
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
fn assert_detects(kind: FaultKind, types: &[DeviceType], readings: i64) {
    let outcome = run(types, &[kind], 20, 6, 11);
    assert!(
        outcome.episodes >= 20,
        "{kind}: too few episodes to judge: {outcome:?}"
    );
    assert!(
        outcome.recall() >= 0.9,
        "{kind}: recall {:.3}: {outcome:?}",
        outcome.recall()
    );
    assert!(
        outcome.true_alerts as f64 >= 0.9 * outcome.alerts as f64,
        "{kind}: alerts outside episodes: {outcome:?}"
    );
    assert!(
        outcome.median_delay() <= readings,
        "{kind}: median delay {}: {outcome:?}",
        outcome.median_delay()
    );
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
    assert_eq!(outcome.episodes, 0);
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
