//! Alert rules: thresholds on readings, low batteries, and devices gone silent.
//!
//! Each rule looks at readings only, never at the simulator's ground truth.
//! A rule that fires opens an *episode* for its device and kind: the first
//! reading sends an alert, and further readings that keep the device in the
//! same state within the cooldown are counted on the episode rather than sent
//! again, so a device stuck in alarm does not flood the alert topic. A reading
//! back in the normal range closes the episode; an episode longer than the
//! cooldown sends a reminder carrying the count of repeats.

//!
//! The pieces: [`kinds`] holds the kinds and the one table of threshold
//! rules, [`alert`] the alert as written, [`quality`] the comparison with the
//! ground truth; this file keeps the episodes.

pub mod alert;
pub mod kinds;
pub mod quality;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use alert::{Alert, SourceRecord};
pub use kinds::{AlertKind, AlertSettings, Severity, THRESHOLDS, threshold_breach};
pub use quality::AlertQuality;

use crate::intern::Interner;
use crate::sensor::device::{DeviceKey, DeviceTable, DeviceType};
use crate::sensor::reading::SensorReading;
use alert::{alert_time, new_alert_id};

/// What the rules made of one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The alerts to send.
    pub alerts: Vec<Alert>,
    /// Whether a threshold rule fired (sent or counted on an open episode):
    /// what alert quality is judged on.
    pub threshold_fired: bool,
}

/// A device's last reading, as the rules remember it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastReading {
    /// Its kind of device.
    pub device_type: DeviceType,
    /// When it was taken.
    pub reading_time: DateTime<Utc>,
    /// Its producer run.
    pub run_id: String,
    /// Its sequence number.
    pub sequence: u64,
}

/// Counters of the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Alerts emitted.
    pub sent: u64,
    /// Repeats counted on an open episode instead of sent.
    pub suppressed: u64,
}

#[derive(Debug)]
struct Episode {
    kind: AlertKind,
    last_sent: DateTime<Utc>,
    repeats: u64,
}

/// What the rules remember of one device: its last reading and its open
/// episodes. One entry per device, found with one lookup per reading; a
/// large fleet costs about a hundred bytes a device here.
#[derive(Debug)]
struct DeviceState {
    device_type: DeviceType,
    reading_time: DateTime<Utc>,
    seen_at: tokio::time::Instant,
    /// Shared by every device of the same run.
    run_id: Arc<str>,
    sequence: u64,
    silent_alerted: bool,
    /// Open episodes, one per kind at most; empty (and unallocated) for a
    /// device in its normal range.
    episodes: Vec<Episode>,
}

impl DeviceState {
    fn close(&mut self, kind: AlertKind) {
        self.episodes.retain(|episode| episode.kind != kind);
    }
}

/// The rules with their open episodes; see the module documentation.
#[derive(Debug)]
pub struct AlertRules {
    settings: AlertSettings,
    devices: DeviceTable<DeviceState>,
    /// Run ids, each stored once however many devices carry it.
    runs: Interner,
    counters: RuleCounters,
}

impl AlertRules {
    /// Rules with these settings and no history.
    pub fn new(settings: AlertSettings) -> Self {
        AlertRules {
            settings,
            devices: DeviceTable::default(),
            runs: Interner::new(),
            counters: RuleCounters::default(),
        }
    }

    /// The thresholds in use.
    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// Counters so far.
    pub fn counters(&self) -> RuleCounters {
        self.counters
    }

    /// Forgets devices for which `forget` is true (their partition moved away).
    pub fn forget(&mut self, mut forget: impl FnMut(&str) -> bool) {
        self.devices.retain(|device, _| !forget(device));
        self.runs.drop_unused();
    }

    /// Applies the rules to one (new, valid) reading, once.
    pub fn on_reading(&mut self, reading: &SensorReading, source: SourceRecord) -> Evaluation {
        let AlertRules {
            settings,
            devices,
            runs,
            counters,
        } = self;
        let now = tokio::time::Instant::now();
        // The device's id is copied only the first time it is seen.
        match devices.get_mut(reading.device_id.as_str()) {
            Some(state) => {
                if *state.run_id != *reading.run_id {
                    state.run_id = runs.get(&reading.run_id);
                }
                evaluate(settings, counters, state, reading, now, source)
            }
            None => {
                let state = devices
                    .entry(DeviceKey::from(reading.device_id.as_str()))
                    .or_insert(DeviceState {
                        device_type: reading.device_type,
                        reading_time: reading.timestamp,
                        seen_at: now,
                        run_id: runs.get(&reading.run_id),
                        sequence: reading.sequence,
                        silent_alerted: false,
                        episodes: Vec::new(),
                    });
                evaluate(settings, counters, state, reading, now, source)
            }
        }
    }

    /// The last reading the rules saw of `device`: what an alert about the
    /// device's silence tells of it.
    pub fn last_reading(&self, device: &str) -> Option<LastReading> {
        self.devices.get(device).map(|state| LastReading {
            device_type: state.device_type,
            reading_time: state.reading_time,
            run_id: state.run_id.to_string(),
            sequence: state.sequence,
        })
    }

    /// Alerts for devices that have sent nothing for longer than the silence limit
    /// (once per silence; a new reading ends it).
    pub fn silent_devices(&mut self) -> Vec<Alert> {
        let limit = self.settings.silence;
        let now = tokio::time::Instant::now();
        let mut alerts = Vec::new();
        for (device_id, seen) in &mut self.devices {
            let silent_for = now.duration_since(seen.seen_at);
            if seen.silent_alerted || silent_for < limit {
                continue;
            }
            seen.silent_alerted = true;
            self.counters.sent += 1;
            alerts.push(Alert {
                alert_id: new_alert_id(),
                device_id: device_id.to_string(),
                device_type: seen.device_type,
                kind: AlertKind::DeviceSilent,
                severity: Severity::Critical,
                value: silent_for.as_secs_f64().round(),
                threshold: limit.as_secs_f64(),
                reading_time: alert_time(seen.reading_time),
                run_id: seen.run_id.to_string(),
                sequence: seen.sequence,
                source: None,
                repeats_suppressed: 0,
                fault: None,
            });
        }
        alerts
    }
}

/// The rules applied to `reading` of the device whose state is `state`.
fn evaluate(
    settings: &AlertSettings,
    counters: &mut RuleCounters,
    state: &mut DeviceState,
    reading: &SensorReading,
    now: tokio::time::Instant,
    source: SourceRecord,
) -> Evaluation {
    state.device_type = reading.device_type;
    state.reading_time = reading.timestamp;
    state.seen_at = now;
    state.sequence = reading.sequence;
    state.silent_alerted = false;

    let breach = threshold_breach(settings, reading);
    // A reading back on the normal side closes the episodes of the other threshold kinds.
    for kind in THRESHOLDS.iter().map(|rule| rule.kind) {
        if breach.map(|(k, _)| k) != Some(kind) {
            state.close(kind);
        }
    }
    let mut fired = Vec::new();
    if let Some((kind, threshold)) = breach {
        fired.push((kind, reading.value, threshold));
    }
    if reading.battery_level < settings.battery_low {
        fired.push((
            AlertKind::LowBattery,
            reading.battery_level,
            settings.battery_low,
        ));
    } else {
        state.close(AlertKind::LowBattery);
    }
    let cooldown = chrono::Duration::from_std(settings.cooldown).unwrap_or(chrono::Duration::MAX);
    let mut alerts = Vec::new();
    for (kind, value, threshold) in fired {
        let Some(repeats) = episode(state, kind, reading.timestamp, cooldown) else {
            counters.suppressed += 1;
            continue;
        };
        counters.sent += 1;
        alerts.push(Alert {
            alert_id: new_alert_id(),
            device_id: reading.device_id.clone(),
            device_type: reading.device_type,
            kind,
            severity: kind.severity(),
            value,
            threshold,
            reading_time: alert_time(reading.timestamp),
            run_id: reading.run_id.clone(),
            sequence: reading.sequence,
            source: Some(source.clone()),
            repeats_suppressed: repeats,
            fault: None,
        });
    }
    Evaluation {
        alerts,
        threshold_fired: breach.is_some(),
    }
}

/// Opens or continues `device`'s episode of `kind` for a reading taken at
/// `taken`: the repeats to report when an alert is due (a new episode, or a
/// reminder after the cooldown), `None` when the reading is counted on the
/// open episode instead.
fn episode(
    device: &mut DeviceState,
    kind: AlertKind,
    taken: DateTime<Utc>,
    cooldown: chrono::Duration,
) -> Option<u64> {
    match device.episodes.iter_mut().find(|e| e.kind == kind) {
        Some(open) if taken - open.last_sent < cooldown => {
            open.repeats += 1;
            None
        }
        Some(open) => {
            let repeats = open.repeats;
            open.last_sent = taken;
            open.repeats = 0;
            Some(repeats)
        }
        None => {
            device.episodes.push(Episode {
                kind,
                last_sent: taken,
                repeats: 0,
            });
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests;
