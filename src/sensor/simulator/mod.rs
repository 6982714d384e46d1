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
//! Besides the threshold anomalies (values no room or lamp can have), devices
//! show sensor faults that stay in range ([`crate::sensor::fault`]): an
//! episode starts on a healthy device with `IOT_FAULT_PROBABILITY` per
//! reading, and the readings it touches carry its kind, start and end.
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

mod faults;

use crate::sensor::device::DeviceType;
use crate::sensor::fault::FaultKind;
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
    /// Chance per reading that a healthy device starts a fault episode.
    pub fault_probability: f64,
    /// The fault kinds episodes are drawn from.
    pub fault_kinds: Vec<FaultKind>,
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
    /// The fault episode in progress.
    fault: Option<faults::ActiveFault>,
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
    fault_probability: f64,
    fault_kinds: Vec<FaultKind>,
    seed: u64,
    next_emission: u64,
    /// Readings not made: devices silent by a fault.
    silenced: u64,
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
            fault_probability: settings.fault_probability,
            fault_kinds: settings.fault_kinds.clone(),
            seed: settings.seed,
            next_emission: 0,
            silenced: 0,
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
        self.next_emission - self.silenced
    }

    /// Readings devices did not make because a fault silenced them.
    pub fn silenced(&self) -> u64 {
        self.silenced
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
        while !self.devices.is_empty() && self.next_due_at() <= elapsed {
            let emission = self.next_emission;
            self.next_emission += 1;
            let index = (emission % self.devices.len() as u64) as usize;
            // Readings carry millisecond timestamps, as Kafka records and the JSON do.
            let due = self.due_at(emission);
            let at = self.start
                + chrono::Duration::milliseconds(
                    i64::try_from(due.as_millis()).unwrap_or(i64::MAX),
                );
            let slot = u32::try_from(emission / self.devices.len() as u64).unwrap_or(u32::MAX);
            match self.read(index, slot, at) {
                Some(reading) => return Some(reading),
                None => self.silenced += 1,
            }
        }
        None
    }

    /// Device `index`'s reading due `at`, or none when a fault silences it.
    fn read(&mut self, index: usize, slot: u32, at: DateTime<Utc>) -> Option<SensorReading> {
        let p = self.anomaly_probability;
        let n = self.devices.len() as u64;
        let (start, interval) = (self.start, self.interval);
        let slot_time = |slot: u32| {
            let due = interval.as_nanos() * u128::from(u64::from(slot) * n + index as u64)
                / u128::from(n);
            start + chrono::Duration::milliseconds((due / 1_000_000).min(i64::MAX as u128) as i64)
        };
        let rng = &mut self.rng;
        let device = &mut self.devices[index];
        let hour = f64::from(at.num_seconds_from_midnight()) / 3600.0;

        device.drift = (device.drift * 0.999 + gaussian(rng) as f32 * drift_step(device.kind))
            .clamp(-drift_limit(device.kind), drift_limit(device.kind));
        let shape = device.clone();
        let value_at = |hours: f64| normal_value(&shape, hour + hours) + f64::from(shape.drift);
        let normal = value_at(0.0) + noise(device.kind, rng);

        if device.fault.is_none()
            && self.fault_probability > 0.0
            && rng.random_bool(self.fault_probability.min(1.0))
        {
            let start = faults::Start {
                device: device.kind,
                allowed: &self.fault_kinds,
                slot,
                value_now: round_for(device.kind, normal),
                value_at: &value_at,
            };
            device.fault = faults::start(&start, rng);
        }
        let mut truth = None;
        let mut faulty = None;
        if let Some(fault) = device.fault.as_mut() {
            if fault.kind == FaultKind::Silence && !fault.is_over() {
                fault.done += 1;
                return None;
            }
            truth = Some(fault.truth(slot_time));
            if fault.kind != FaultKind::Silence {
                faulty = Some(faults::apply(fault, device.kind, normal, &value_at, rng));
            }
            if fault.is_over() {
                device.fault = None;
            }
        }

        // A faulty device shows no threshold anomaly besides: one truth per reading.
        let healthy = faulty.is_none();
        let normal = faulty.unwrap_or(normal);
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
            kind if healthy && rng.random_bool(p) => {
                (anomalous_value(kind, rng), Some(AnomalyKind::of(kind)))
            }
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

        Some(SensorReading {
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
            fault: truth,
        })
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
        fault: None,
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
    gaussian(rng) * faults::noise_sigma(kind)
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
mod tests;
