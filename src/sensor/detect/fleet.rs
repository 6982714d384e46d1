//! One detector per device of a fleet, and silences looked for now and then.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::quality::{FaultJudge, FaultQuality};
use super::{DetectorSettings, DeviceDetector, Verdict};
use crate::sensor::device::{DeviceKey, DeviceTable};
use crate::sensor::fault::FaultKind;
use crate::sensor::reading::SensorReading;
use crate::sensor::simulator::Fleet;

/// The detectors of every device seen, created on a device's first reading.
#[derive(Debug)]
pub struct FleetDetector {
    settings: DetectorSettings,
    devices: DeviceTable<DeviceDetector>,
}

impl FleetDetector {
    /// No device yet.
    pub fn new(settings: DetectorSettings) -> FleetDetector {
        FleetDetector {
            settings,
            devices: DeviceTable::default(),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// Devices with a detector.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device has been seen.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Scores `reading` with its device's detector.
    pub fn observe(&mut self, reading: &SensorReading) -> Verdict {
        let detector = match self.devices.get_mut(reading.device_id.as_str()) {
            Some(detector) => detector,
            None => self
                .devices
                .entry(DeviceKey::from(reading.device_id.as_str()))
                .or_insert_with(|| DeviceDetector::for_device(reading.device_type)),
        };
        detector.observe(reading.timestamp, reading.value, &self.settings)
    }

    /// Devices silent at the time `now_of` gives for each (the event time
    /// its readings have reached: a device is silent while others of its
    /// stream move on), with that time, that raise their alert now.
    pub fn silences(
        &mut self,
        now_of: impl Fn(&str) -> Option<DateTime<Utc>>,
    ) -> Vec<(String, DateTime<Utc>)> {
        let mut silent = Vec::new();
        for (device, detector) in &mut self.devices {
            let Some(now) = now_of(device) else { continue };
            if detector.is_silent(now.timestamp_millis(), &self.settings) && detector.mark_silent()
            {
                silent.push((device.to_string(), now));
            }
        }
        silent
    }

    /// Forgets the devices for which `forget` is true (their partition moved away).
    pub fn forget(&mut self, mut forget: impl FnMut(&str) -> bool) {
        self.devices.retain(|device, _| !forget(device));
    }
}

/// What a replay counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// Readings the fleet made.
    pub readings: u64,
    /// The detector's alerts (silences included) judged against the fleet's labels.
    pub quality: FaultQuality,
}

/// Runs `fleet` from its start for `duration` of its own time, as fast as it
/// goes, through a detector per device with `settings` (looking for silences
/// four times per `interval`), and judges the alerts against the fleet's labels.
pub fn replay(
    fleet: &mut Fleet,
    duration: Duration,
    interval: Duration,
    settings: DetectorSettings,
) -> Replayed {
    let mut detector = FleetDetector::new(settings);
    let mut judge = FaultJudge::new();
    let mut readings = 0;
    let sweep_every = chrono::Duration::from_std(interval / 4).unwrap_or(chrono::Duration::MAX);
    let mut swept_at: Option<DateTime<Utc>> = None;
    // The readings due before `duration`, not at it.
    let until = duration.saturating_sub(Duration::from_nanos(1));
    while let Some(reading) = fleet.next_due(until) {
        let now = reading.timestamp;
        if swept_at.is_none_or(|last| now - last >= sweep_every) {
            swept_at = Some(now);
            for (device, now) in detector.silences(|_| Some(now)) {
                judge.alert(&device, now, FaultKind::Silence);
            }
        }
        judge.reading(&reading.device_id, now, reading.fault.as_ref());
        let verdict = detector.observe(&reading);
        readings += 1;
        if let Some(kind) = verdict.raised {
            judge.alert(&reading.device_id, now, kind);
        }
    }
    Replayed {
        readings,
        quality: judge.quality().clone(),
    }
}
