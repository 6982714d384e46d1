//! A fleet of simulated sensors with realistic signals and injected anomalies.
//!
//! The fleet keeps a few dozen bytes of state per device and no task or timer
//! per device, so 100,000 devices cost a few megabytes. Readings are scheduled
//! on one timeline: device `i` of `n` reads at `k * interval + i * interval / n`,
//! so the whole fleet's `e`-th reading is due at `e * interval / n` after the
//! start, and a single cursor says which reading comes next. Whoever drives the
//! fleet asks for the readings due so far ([`Fleet::next_due`]); when it cannot
//! keep up (a slow Kafka pushing back), readings keep their scheduled
//! timestamps and are produced late rather than piling up in memory.
//!
//! Everything random comes from one generator seeded with `IOT_SIMULATOR_SEED`,
//! so a seed gives the same devices, values and anomalies every time. The run
//! id does not come from the seed: a restarted producer is a new run even with
//! the same seed, and its sequence numbers are not mistaken for duplicates.

use std::f64::consts::PI;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Timelike, Utc};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::sensor::device::DeviceType;
use crate::sensor::reading::{AnomalyKind, DeviceStatus, Location, SCHEMA_VERSION, SensorReading};

/// Share of the fleet of each kind, in percent, before `IOT_DEVICE_TYPES` narrows it.
pub const TYPE_WEIGHTS: [(DeviceType, u32); 5] = [
    (DeviceType::Temperature, 30),
    (DeviceType::Humidity, 30),
    (DeviceType::Pressure, 15),
    (DeviceType::Light, 15),
    (DeviceType::Motion, 10),
];

/// Motion anomalies come as bursts of this many readings on average.
pub const MEAN_MOTION_BURST: f64 = 4.0;
/// Battery level under which a device reports `low_battery`.
pub const LOW_BATTERY_PERCENT: f64 = 15.0;
/// Signal strength under which a device reports `weak_signal`.
pub const WEAK_SIGNAL_DBM: i32 = -90;

const FIRMWARE_VERSIONS: [&str; 4] = ["1.4.2", "1.5.0", "2.0.1", "2.1.0"];
const SITES: usize = 12;
const ZONES_PER_SITE: usize = 40;

/// What the simulator is asked to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorSettings {
    /// Number of devices.
    pub num_devices: u32,
    /// Time between two readings of one device.
    pub interval: Duration,
    /// Kinds of device in the fleet.
    pub device_types: Vec<DeviceType>,
    /// Chance that a reading is an injected anomaly.
    pub anomaly_probability: f64,
    /// Seed of every random choice.
    pub seed: u64,
}

/// One device's state between readings.
#[derive(Debug, Clone)]
struct DeviceState {
    kind: DeviceType,
    /// The value this device centres on (its room, its altitude, its lamp).
    baseline: f32,
    /// Height of the daily cycle.
    amplitude: f32,
    /// Slow wandering away from the baseline, mean-reverting.
    drift: f32,
    battery: f32,
    /// Battery used per reading, percent.
    drain: f32,
    signal_base: f32,
    signal_walk: f32,
    sequence: u64,
    /// Readings left in the current motion burst.
    burst_left: u16,
    firmware: u8,
}

/// The simulated fleet and its timeline.
#[derive(Debug)]
pub struct Fleet {
    devices: Vec<DeviceState>,
    rng: SmallRng,
    run_id: String,
    start: DateTime<Utc>,
    interval: Duration,
    anomaly_probability: f64,
    seed: u64,
    next_emission: u64,
}

impl Fleet {
    /// A fleet whose first readings are due at `start`.
    pub fn new(settings: &SimulatorSettings, start: DateTime<Utc>) -> Fleet {
        let mut rng = SmallRng::seed_from_u64(settings.seed);
        let kinds = assign_types(settings.num_devices as usize, &settings.device_types);
        let devices = kinds
            .into_iter()
            .map(|kind| new_device(kind, &mut rng))
            .collect();
        let run_id = format!("{:016x}", rand::random::<u64>());
        Fleet {
            devices,
            rng,
            run_id,
            start: start
                .duration_trunc(chrono::TimeDelta::milliseconds(1))
                .unwrap_or(start),
            interval: settings.interval,
            anomaly_probability: settings.anomaly_probability,
            seed: settings.seed,
            next_emission: 0,
        }
    }

    /// This run's id, carried by every reading.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The seed in use (to print, so a run can be repeated).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the fleet has no device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Readings generated so far.
    pub fn emitted(&self) -> u64 {
        self.next_emission
    }

    /// Device ids and kinds, in device order.
    pub fn devices(&self) -> impl Iterator<Item = (String, DeviceType)> + '_ {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| (device_id(d.kind, i), d.kind))
    }

    /// When the next reading is due, measured from the start.
    pub fn next_due_at(&self) -> Duration {
        self.due_at(self.next_emission)
    }

    fn due_at(&self, emission: u64) -> Duration {
        let n = self.devices.len().max(1) as u128;
        let nanos = self.interval.as_nanos() * u128::from(emission) / n;
        Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }

    /// The next reading if it is due by `elapsed` after the start.
    pub fn next_due(&mut self, elapsed: Duration) -> Option<SensorReading> {
        if self.devices.is_empty() || self.next_due_at() > elapsed {
            return None;
        }
        let emission = self.next_emission;
        self.next_emission += 1;
        let index = (emission % self.devices.len() as u64) as usize;
        // Readings carry millisecond timestamps, as Kafka records and the JSON do.
        let due = self.due_at(emission);
        let at = self.start
            + chrono::Duration::milliseconds(i64::try_from(due.as_millis()).unwrap_or(i64::MAX));
        Some(self.read(index, at))
    }

    fn read(&mut self, index: usize, at: DateTime<Utc>) -> SensorReading {
        let p = self.anomaly_probability;
        let rng = &mut self.rng;
        let device = &mut self.devices[index];
        let hour = f64::from(at.num_seconds_from_midnight()) / 3600.0;

        device.drift = (device.drift * 0.999 + gaussian(rng) as f32 * drift_step(device.kind))
            .clamp(-drift_limit(device.kind), drift_limit(device.kind));
        let normal = normal_value(device, hour) + f64::from(device.drift) + noise(device.kind, rng);

        let (value, anomaly) = match device.kind {
            DeviceType::Motion => {
                if device.burst_left == 0 && rng.random_bool((p / MEAN_MOTION_BURST).min(1.0)) {
                    device.burst_left = rng.random_range(2..=6);
                }
                if device.burst_left > 0 {
                    device.burst_left -= 1;
                    (1.0, Some(AnomalyKind::MotionDetected))
                } else {
                    (0.0, None)
                }
            }
            kind if rng.random_bool(p) => (anomalous_value(kind, rng), Some(AnomalyKind::of(kind))),
            DeviceType::Humidity => (normal.clamp(0.0, 100.0), None),
            DeviceType::Light => (normal.max(0.0), None),
            _ => (normal, None),
        };

        device.battery -= device.drain;
        if device.battery < 5.0 {
            // The battery was replaced.
            device.battery = 100.0;
        }
        device.signal_walk = (device.signal_walk * 0.99 + gaussian(rng) as f32).clamp(-12.0, 12.0);
        let signal = (device.signal_base + device.signal_walk + gaussian(rng) as f32 * 2.0)
            .round()
            .clamp(-115.0, -30.0) as i32;
        let battery = (f64::from(device.battery) * 10.0).round() / 10.0;
        let status = if battery < LOW_BATTERY_PERCENT {
            DeviceStatus::LowBattery
        } else if signal < WEAK_SIGNAL_DBM {
            DeviceStatus::WeakSignal
        } else {
            DeviceStatus::Ok
        };
        let sequence = device.sequence;
        device.sequence += 1;

        SensorReading {
            schema_version: SCHEMA_VERSION,
            device_id: device_id(device.kind, index),
            device_type: device.kind,
            run_id: self.run_id.clone(),
            sequence,
            timestamp: at,
            value: round_for(device.kind, value),
            unit: device.kind.unit().to_string(),
            location: location(index),
            battery_level: battery,
            signal_strength: signal,
            firmware_version: FIRMWARE_VERSIONS[usize::from(device.firmware)].to_string(),
            status,
            is_anomaly: anomaly.is_some(),
            anomaly_kind: anomaly,
        }
    }
}

/// `temperature-000042`: the kind and the device's number in the fleet.
pub fn device_id(kind: DeviceType, index: usize) -> String {
    format!("{}-{index:06}", kind.as_str())
}

/// Kinds for `n` devices in the proportions of [`TYPE_WEIGHTS`] among `allowed`,
/// interleaved (smooth weighted round robin), so that every prefix of the
/// fleet is mixed too.
fn assign_types(n: usize, allowed: &[DeviceType]) -> Vec<DeviceType> {
    let weights: Vec<(DeviceType, i64)> = TYPE_WEIGHTS
        .iter()
        .filter(|(kind, _)| allowed.contains(kind))
        .map(|&(kind, weight)| (kind, i64::from(weight)))
        .collect();
    let total: i64 = weights.iter().map(|(_, w)| w).sum();
    let mut current = vec![0i64; weights.len()];
    let mut kinds = Vec::with_capacity(n);
    for _ in 0..n {
        for (c, (_, w)) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
            .expect("at least one device type");
        current[best] -= total;
        kinds.push(weights[best].0);
    }
    kinds
}

fn new_device(kind: DeviceType, rng: &mut SmallRng) -> DeviceState {
    let (baseline, amplitude) = match kind {
        DeviceType::Temperature => (rng.random_range(18.0..24.0), rng.random_range(2.0..5.0)),
        DeviceType::Humidity => (rng.random_range(35.0..55.0), rng.random_range(4.0..8.0)),
        DeviceType::Pressure => (rng.random_range(1005.0..1020.0), rng.random_range(0.5..1.5)),
        // Day level of an indoor light sensor; lamps keep nights lit at about a third.
        DeviceType::Light => (rng.random_range(350.0..700.0), 0.0),
        DeviceType::Motion => (0.0, 0.0),
    };
    DeviceState {
        kind,
        baseline,
        amplitude,
        drift: 0.0,
        battery: rng.random_range(40.0..100.0),
        drain: rng.random_range(0.0002..0.002),
        signal_base: rng.random_range(-85.0..-45.0),
        signal_walk: 0.0,
        sequence: 0,
        burst_left: 0,
        firmware: rng.random_range(0..FIRMWARE_VERSIONS.len() as u8),
    }
}

/// The undisturbed value at `hour` (UTC) of the day.
fn normal_value(device: &DeviceState, hour: f64) -> f64 {
    let baseline = f64::from(device.baseline);
    let amplitude = f64::from(device.amplitude);
    // Warmest at 15:00, coolest at 03:00.
    let day_cycle = (2.0 * PI * (hour - 15.0) / 24.0).cos();
    match device.kind {
        DeviceType::Temperature => baseline + amplitude * day_cycle,
        // Relative humidity falls as the air warms.
        DeviceType::Humidity => baseline - amplitude * day_cycle,
        DeviceType::Pressure => baseline + amplitude * (2.0 * PI * hour / 12.0).sin(),
        DeviceType::Light => {
            let daylight = (PI * (hour - 6.0) / 12.0).sin().max(0.0);
            baseline * (0.3 + 0.7 * daylight)
        }
        DeviceType::Motion => 0.0,
    }
}

fn drift_step(kind: DeviceType) -> f32 {
    match kind {
        DeviceType::Temperature => 0.02,
        DeviceType::Humidity => 0.05,
        DeviceType::Pressure => 0.05,
        DeviceType::Light => 1.0,
        DeviceType::Motion => 0.0,
    }
}

fn drift_limit(kind: DeviceType) -> f32 {
    match kind {
        DeviceType::Temperature => 3.0,
        DeviceType::Humidity => 5.0,
        DeviceType::Pressure => 8.0,
        DeviceType::Light => 40.0,
        DeviceType::Motion => 0.0,
    }
}

fn noise(kind: DeviceType, rng: &mut SmallRng) -> f64 {
    let sigma = match kind {
        DeviceType::Temperature => 0.15,
        DeviceType::Humidity => 0.8,
        DeviceType::Pressure => 0.3,
        DeviceType::Light => 8.0,
        DeviceType::Motion => 0.0,
    };
    gaussian(rng) * sigma
}

/// A value far outside the normal range, on the side the alert rules watch.
fn anomalous_value(kind: DeviceType, rng: &mut SmallRng) -> f64 {
    match kind {
        DeviceType::Temperature if rng.random_bool(0.5) => rng.random_range(55.0..85.0),
        DeviceType::Temperature => rng.random_range(-35.0..-15.0),
        DeviceType::Humidity => rng.random_range(95.0..100.0),
        DeviceType::Pressure => rng.random_range(920.0..955.0),
        DeviceType::Light => rng.random_range(0.0..5.0),
        DeviceType::Motion => 1.0,
    }
}

/// Values as a sensor reports them: no more digits than it resolves.
fn round_for(kind: DeviceType, value: f64) -> f64 {
    let scale = match kind {
        DeviceType::Temperature | DeviceType::Pressure => 100.0,
        DeviceType::Humidity | DeviceType::Light => 10.0,
        DeviceType::Motion => 1.0,
    };
    (value * scale).round() / scale
}

/// Where device `index` is: derived from its number, so nothing is stored per device.
fn location(index: usize) -> Location {
    let site = index % SITES;
    let zone = (index / SITES) % ZONES_PER_SITE;
    // Sites spread over a city; zones within a few hundred metres of their site.
    let latitude = 52.40 + 0.02 * (site / 4) as f64 + 0.0001 * (zone % 8) as f64;
    let longitude = 13.30 + 0.03 * (site % 4) as f64 + 0.0001 * (zone / 8) as f64;
    Location {
        site: format!("site-{site:02}"),
        zone: format!("zone-{zone:02}"),
        latitude: (latitude * 1e6).round() / 1e6,
        longitude: (longitude * 1e6).round() / 1e6,
    }
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(num_devices: u32, anomaly_probability: f64, seed: u64) -> SimulatorSettings {
        SimulatorSettings {
            num_devices,
            interval: Duration::from_secs(1),
            device_types: DeviceType::ALL.to_vec(),
            anomaly_probability,
            seed,
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn drain(fleet: &mut Fleet, elapsed: Duration) -> Vec<SensorReading> {
        std::iter::from_fn(|| fleet.next_due(elapsed)).collect()
    }

    #[test]
    fn every_device_reads_once_per_interval_spread_evenly_over_it() {
        let mut fleet = Fleet::new(&settings(100, 0.05, 1), start());
        // At t = 0 only device 0 is due; the fleet's 100 readings take the whole second.
        assert_eq!(drain(&mut fleet, Duration::ZERO).len(), 1);
        assert_eq!(drain(&mut fleet, Duration::from_millis(499)).len(), 49);
        let rest = drain(&mut fleet, Duration::from_millis(999));
        assert_eq!(rest.len(), 50);
        assert!(rest.iter().all(|r| r.sequence == 0));
        let ten_seconds = drain(&mut fleet, Duration::from_millis(10_999));
        assert_eq!(ten_seconds.len(), 1000);
        assert_eq!(fleet.emitted(), 1100);
        let last = ten_seconds.last().unwrap();
        assert_eq!(last.sequence, 10);
        assert_eq!(
            last.timestamp,
            start() + chrono::Duration::milliseconds(10_990)
        );
    }

    #[test]
    fn state_is_per_device_and_small_so_100000_devices_cost_a_few_megabytes() {
        assert!(
            std::mem::size_of::<DeviceState>() <= 64,
            "{}",
            std::mem::size_of::<DeviceState>()
        );
        let mut fleet = Fleet::new(&settings(100_000, 0.05, 5), start());
        assert_eq!(fleet.len(), 100_000);
        assert!(fleet.devices.capacity() <= 100_000);
        // One second of the whole fleet, generated without any per-reading state kept.
        assert_eq!(
            drain(&mut fleet, Duration::from_nanos(999_999_999)).len(),
            100_000
        );
        assert_eq!(fleet.devices.capacity(), fleet.devices.len());
    }

    #[test]
    fn types_follow_the_weights_and_iot_device_types() {
        let kinds = assign_types(1000, &DeviceType::ALL);
        let count = |k| kinds.iter().filter(|&&x| x == k).count();
        assert_eq!(count(DeviceType::Temperature), 300);
        assert_eq!(count(DeviceType::Humidity), 300);
        assert_eq!(count(DeviceType::Pressure), 150);
        assert_eq!(count(DeviceType::Light), 150);
        assert_eq!(count(DeviceType::Motion), 100);
        // The default 8 devices cover every kind.
        let eight = assign_types(8, &DeviceType::ALL);
        assert!(
            DeviceType::ALL.iter().all(|k| eight.contains(k)),
            "{eight:?}"
        );

        let narrowed = assign_types(100, &[DeviceType::Pressure, DeviceType::Motion]);
        assert_eq!(
            narrowed
                .iter()
                .filter(|&&k| k == DeviceType::Pressure)
                .count(),
            60
        );
        assert_eq!(
            narrowed
                .iter()
                .filter(|&&k| k == DeviceType::Motion)
                .count(),
            40
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_readings_and_a_new_run_id() {
        let mut a = Fleet::new(&settings(50, 0.1, 42), start());
        let mut b = Fleet::new(&settings(50, 0.1, 42), start());
        let mut c = Fleet::new(&settings(50, 0.1, 43), start());
        let strip = |mut r: SensorReading| {
            r.run_id.clear();
            r
        };
        let ra: Vec<_> = drain(&mut a, Duration::from_secs(20))
            .into_iter()
            .map(strip)
            .collect();
        let rb: Vec<_> = drain(&mut b, Duration::from_secs(20))
            .into_iter()
            .map(strip)
            .collect();
        let rc: Vec<_> = drain(&mut c, Duration::from_secs(20))
            .into_iter()
            .map(strip)
            .collect();
        assert_eq!(ra, rb);
        assert_ne!(ra, rc);
        assert_ne!(a.run_id(), b.run_id());
    }

    #[test]
    fn anomalies_occur_at_the_configured_probability_and_carry_their_kind() {
        let p = 0.05;
        let mut fleet = Fleet::new(&settings(1000, p, 7), start());
        let readings = drain(&mut fleet, Duration::from_secs(200));
        for kind in [
            DeviceType::Temperature,
            DeviceType::Humidity,
            DeviceType::Pressure,
            DeviceType::Light,
            DeviceType::Motion,
        ] {
            let of_kind: Vec<_> = readings.iter().filter(|r| r.device_type == kind).collect();
            let n = of_kind.len() as f64;
            let anomalies = of_kind.iter().filter(|r| r.is_anomaly).count() as f64;
            // Five standard deviations of a binomial count: fails by chance about once in 3 million runs.
            let tolerance = 5.0 * (n * p * (1.0 - p)).sqrt();
            let expected = if kind == DeviceType::Motion {
                // A burst starts with probability p / 4 when none runs; bursts last 4 on average.
                let start = p / MEAN_MOTION_BURST;
                n * start * MEAN_MOTION_BURST / (1.0 + start * (MEAN_MOTION_BURST - 1.0))
            } else {
                n * p
            };
            // Motion anomalies come in bursts of 2..=6, which widens the spread of their count
            // by sqrt(E[L^2] / E[L]) = sqrt(18 / 4).
            let widening = if kind == DeviceType::Motion {
                (18.0f64 / 4.0).sqrt()
            } else {
                1.0
            };
            assert!(
                (anomalies - expected).abs() <= tolerance * widening,
                "{kind}: {anomalies} anomalies in {n} readings, expected about {expected}"
            );
            for r in &of_kind {
                assert_eq!(r.is_anomaly, r.anomaly_kind.is_some());
                if let Some(k) = r.anomaly_kind {
                    assert_eq!(k, AnomalyKind::of(kind));
                }
            }
        }
    }

    #[test]
    fn normal_readings_stay_clear_of_the_anomaly_ranges_and_anomalies_fall_in_them() {
        let mut fleet = Fleet::new(&settings(500, 0.05, 3), start());
        // Two simulated days at one reading per device every 5 minutes.
        let mut slow = settings(500, 0.05, 3);
        slow.interval = Duration::from_secs(300);
        let mut fleet_days = Fleet::new(&slow, start());
        let mut readings = drain(&mut fleet, Duration::from_secs(60));
        readings.extend(drain(&mut fleet_days, Duration::from_secs(2 * 86_400)));
        for r in readings {
            let v = r.value;
            let (normal_ok, anomaly_ok) = match r.device_type {
                DeviceType::Temperature => ((0.0..=40.0).contains(&v), v >= 55.0 || v <= -15.0),
                DeviceType::Humidity => ((0.0..=80.0).contains(&v), v >= 95.0),
                DeviceType::Pressure => ((985.0..=1040.0).contains(&v), v <= 955.0),
                DeviceType::Light => (v >= 60.0, v <= 5.0),
                DeviceType::Motion => (v == 0.0, v == 1.0),
            };
            if r.is_anomaly {
                assert!(anomaly_ok, "anomalous {} reading {v}", r.device_type);
            } else {
                assert!(
                    normal_ok,
                    "normal {} reading {v} at {}",
                    r.device_type, r.timestamp
                );
            }
            assert!((0.0..=100.0).contains(&r.battery_level));
            assert!((-115..=-30).contains(&r.signal_strength));
        }
    }

    #[test]
    fn temperature_follows_the_day_warmest_in_the_afternoon() {
        let mut s = settings(30, 0.0, 11);
        s.device_types = vec![DeviceType::Temperature];
        s.interval = Duration::from_secs(3600);
        let mut fleet = Fleet::new(&s, start());
        let readings = drain(&mut fleet, Duration::from_secs(86_400 - 1));
        let mean_at = |hour: u32| {
            let at: Vec<f64> = readings
                .iter()
                .filter(|r| r.timestamp.hour() == hour)
                .map(|r| r.value)
                .collect();
            at.iter().sum::<f64>() / at.len() as f64
        };
        assert!(
            mean_at(15) > mean_at(3) + 2.0,
            "15:00 {} vs 03:00 {}",
            mean_at(15),
            mean_at(3)
        );
    }
}
