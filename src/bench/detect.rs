//! The detector benchmark: quality per fault kind on a simulated fleet with a
//! fixed seed, false alarms on clean signals, and its cost per reading and per
//! device beside the threshold rules alone (no Kafka: the fleet's own time,
//! as fast as it goes).

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use super::BenchError;
use crate::sensor::detect::fleet::{FleetDetector, replay};
use crate::sensor::detect::quality::{FaultJudge, FaultQuality, QualityLine};
use crate::sensor::detect::{DetectorSettings, DeviceDetector};
use crate::sensor::device::DeviceType;
use crate::sensor::fault::FaultKind;
use crate::sensor::rules::{AlertRules, AlertSettings, SourceRecord};
use crate::sensor::simulator::{Fleet, SimulatorSettings};

/// The fleet's readings come this often.
const INTERVAL: Duration = Duration::from_secs(60);
/// Chance per reading that a healthy device starts a fault (about two a device-day).
const FAULT_PROBABILITY: f64 = 0.0015;
const SEED: u64 = 2026;
/// Readings timed together: the CPU clock is read once per chunk.
const CHUNK: usize = 20_000;
/// Devices the memory per device is measured with.
const MEMORY_DEVICES: usize = 100_000;

/// What `bench detect` measured.
#[derive(Debug, Clone, Serialize)]
pub struct DetectSection {
    pub devices: u32,
    pub days: u64,
    pub seed: u64,
    pub readings: u64,
    /// A line per fault kind, then one for all.
    pub kinds: Vec<QualityLine>,
    /// Per kind, then all: the episodes the threshold rules alone fired in.
    pub thresholds_found: Vec<u64>,
    pub clean_readings: u64,
    pub clean_false_alarms: u64,
    pub clean_false_alarms_per_device_day: f64,
    /// CPU per reading: the threshold rules alone, the detector alone.
    pub rules_cpu_us: f64,
    pub detector_cpu_us: f64,
    /// The detector's state, and what a device costs in a fleet's map, measured.
    pub state_bytes: usize,
    pub bytes_per_device: f64,
}

/// Runs the fleet with faults, then clean, and measures the costs.
pub(super) fn run(
    devices: u32,
    days: u64,
    say: &(dyn Fn(&str) + Sync),
) -> Result<DetectSection, BenchError> {
    let duration = Duration::from_secs(days * 86_400);
    let settings = |fault_probability| SimulatorSettings {
        num_devices: devices,
        interval: INTERVAL,
        device_types: DeviceType::ALL.to_vec(),
        anomaly_probability: 0.0,
        seed: SEED,
        fault_probability,
        fault_kinds: FaultKind::ALL.to_vec(),
    };
    let start = "2026-06-01T00:00:00Z".parse().expect("a time");

    say(&format!(
        "detect: {devices} devices, {days} days at one reading a minute, faults with probability {FAULT_PROBABILITY} per reading, seed {SEED}"
    ));
    let mut fleet = Fleet::new(&settings(FAULT_PROBABILITY), start);
    let replayed = replay(&mut fleet, duration, INTERVAL, DetectorSettings::default());
    let quality = &replayed.quality;
    let thresholds = thresholds_alone(&settings(FAULT_PROBABILITY), start, duration);

    say("detect: the same fleet without faults");
    let mut clean = Fleet::new(&settings(0.0), start);
    let clean_run = replay(&mut clean, duration, INTERVAL, DetectorSettings::default());
    let clean_false_alarms = clean_run.quality.false_alarms;

    say("detect: CPU per reading, the rules alone and the detector alone");
    let (rules_cpu_us, detector_cpu_us) = costs(&settings(FAULT_PROBABILITY), start, duration)?;
    let bytes_per_device = memory_per_device()?;

    let mut thresholds_found: Vec<u64> = thresholds.kinds().iter().map(|k| k.found).collect();
    thresholds_found.push(thresholds_found.iter().sum());
    let section = DetectSection {
        devices,
        days,
        seed: SEED,
        readings: replayed.readings,
        kinds: quality.lines(),
        thresholds_found,
        clean_readings: clean_run.readings,
        clean_false_alarms,
        clean_false_alarms_per_device_day: clean_false_alarms as f64
            / (f64::from(devices) * days as f64),
        rules_cpu_us,
        detector_cpu_us,
        state_bytes: std::mem::size_of::<DeviceDetector>(),
        bytes_per_device,
    };
    let all = section.kinds.last().expect("a line for all kinds");
    say(&format!(
        "detect: F1 {:.3} (precision {:.3}, recall {:.3}), median delay {} readings, {:.3} false alarms per device-day on clean signals, {:.2} µs per reading (rules alone {:.2}), {:.0} bytes per device",
        all.f1,
        all.precision,
        all.recall,
        all.median_delay_readings
            .map_or("-".to_string(), |d| d.to_string()),
        section.clean_false_alarms_per_device_day,
        section.detector_cpu_us,
        section.rules_cpu_us,
        section.bytes_per_device
    ));
    Ok(section)
}

/// The threshold rules alone on the same fleet: which episodes they fire in.
fn thresholds_alone(
    settings: &SimulatorSettings,
    start: chrono::DateTime<Utc>,
    duration: Duration,
) -> FaultQuality {
    let mut fleet = Fleet::new(settings, start);
    let mut rules = AlertRules::new(AlertSettings::default());
    let mut judge = FaultJudge::new();
    let mut offset = 0;
    while let Some(reading) = fleet.next_due(duration) {
        judge.reading(
            &reading.device_id,
            reading.timestamp,
            reading.fault.as_ref(),
        );
        offset += 1;
        let evaluation = rules.on_reading(&reading, source(offset));
        if evaluation.threshold_fired {
            // Any kind: only the episodes found count for the rules.
            judge.alert(&reading.device_id, reading.timestamp, FaultKind::LevelShift);
        }
    }
    judge.quality().clone()
}

fn source(offset: i64) -> SourceRecord {
    SourceRecord {
        topic: "iot-sensor-data".to_string(),
        partition: 0,
        offset,
    }
}

/// Microseconds of CPU per reading: the rules alone, then the detector alone,
/// each timed over the same chunks of readings made beforehand.
fn costs(
    settings: &SimulatorSettings,
    start: chrono::DateTime<Utc>,
    duration: Duration,
) -> Result<(f64, f64), BenchError> {
    let mut fleet = Fleet::new(settings, start);
    let mut rules = AlertRules::new(AlertSettings::default());
    let mut detector = FleetDetector::new(DetectorSettings::default());
    let (mut rules_cpu, mut detector_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut readings = 0u64;
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        chunk.clear();
        chunk.extend(std::iter::from_fn(|| fleet.next_due(duration)).take(CHUNK));
        if chunk.is_empty() {
            break;
        }
        let before = thread_cpu()?;
        for (i, reading) in chunk.iter().enumerate() {
            std::hint::black_box(rules.on_reading(reading, source(i as i64)));
        }
        let between = thread_cpu()?;
        for reading in &chunk {
            std::hint::black_box(detector.observe(reading));
        }
        let after = thread_cpu()?;
        rules_cpu += between - before;
        detector_cpu += after - between;
        readings += chunk.len() as u64;
    }
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / readings.max(1) as f64;
    Ok((per(rules_cpu), per(detector_cpu)))
}

fn thread_cpu() -> Result<Duration, BenchError> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_THREAD)
        .map_err(|e| BenchError::Measure(format!("getrusage: {e}")))?;
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    Ok(time(usage.user_time()) + time(usage.system_time()))
}

/// Resident bytes a device adds to a fleet's detectors: 100,000 devices,
/// one reading each, against the process's resident memory before.
fn memory_per_device() -> Result<f64, BenchError> {
    let settings = SimulatorSettings {
        num_devices: MEMORY_DEVICES as u32,
        interval: INTERVAL,
        device_types: DeviceType::ALL.to_vec(),
        anomaly_probability: 0.0,
        seed: SEED,
        fault_probability: 0.0,
        fault_kinds: Vec::new(),
    };
    let mut fleet = Fleet::new(&settings, Utc::now());
    let fleet_bytes = resident_bytes()?;
    let mut detector = FleetDetector::new(DetectorSettings::default());
    while let Some(reading) = fleet.next_due(INTERVAL - Duration::from_nanos(1)) {
        detector.observe(&reading);
    }
    let after = resident_bytes()?;
    Ok(after.saturating_sub(fleet_bytes) as f64 / detector.len().max(1) as f64)
}

fn resident_bytes() -> Result<u64, BenchError> {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| BenchError::io(std::path::Path::new("/proc/self/statm"), e))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| BenchError::Measure(format!("unreadable /proc/self/statm: {statm:?}")))?;
    Ok(pages * 4096)
}

/// The section as markdown.
pub fn detect_table(section: &DetectSection) -> String {
    let days = match section.days {
        1 => "1 day".to_string(),
        n => format!("{n} days"),
    };
    let mut out = format!(
        "\n### Fault detection: {} devices, {days} at one reading a minute ({} readings), seed {}, no Kafka\n\n",
        section.devices, section.readings, section.seed
    );
    out.push_str("An episode is found when an alert for its device comes between its start and 8 readings after its end; precision counts the alerts naming the kind that fell inside an episode. Delay: readings from the episode's start to its first alert. The threshold rules alone are the baseline.\n\n");
    out.push_str("| fault kind | episodes | found | alerts naming it | precision | recall | F1 | median delay (readings) | found by the thresholds alone |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let delay = |d: Option<u64>| d.map_or("-".to_string(), |d| d.to_string());
    for (line, thresholds) in section.kinds.iter().zip(&section.thresholds_found) {
        let name = if line.kind == "all" {
            "**all**".to_string()
        } else {
            line.kind.clone()
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {thresholds} |\n",
            line.episodes,
            line.found,
            line.alerts,
            line.precision,
            line.recall,
            line.f1,
            delay(line.median_delay_readings),
        ));
    }
    out.push_str(&format!(
        "\nClean signals (the same fleet, no faults, {} readings): {} false alarms, {:.3} per device-day.\n\nCost: {:.3} µs of CPU per reading for the detector, {:.3} µs for the threshold rules alone; {} bytes of state per device, {:.0} bytes per device resident in a fleet's map ({} devices).\n",
        section.clean_readings,
        section.clean_false_alarms,
        section.clean_false_alarms_per_device_day,
        section.detector_cpu_us,
        section.rules_cpu_us,
        section.state_bytes,
        section.bytes_per_device,
        MEMORY_DEVICES
    ));
    out
}
