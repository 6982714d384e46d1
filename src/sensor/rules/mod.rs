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

use std::collections::HashMap;

use chrono::{DateTime, Utc};

pub use alert::{Alert, SourceRecord};
pub use kinds::{AlertKind, AlertSettings, Severity, THRESHOLDS, threshold_breach};
pub use quality::AlertQuality;

use crate::sensor::device::DeviceType;
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
    last_sent: DateTime<Utc>,
    repeats: u64,
}

#[derive(Debug)]
struct LastSeen {
    device_type: DeviceType,
    reading_time: DateTime<Utc>,
    seen_at: tokio::time::Instant,
    run_id: String,
    sequence: u64,
    silent_alerted: bool,
}

/// The rules with their open episodes; see the module documentation.
#[derive(Debug)]
pub struct AlertRules {
    settings: AlertSettings,
    episodes: HashMap<(String, AlertKind), Episode>,
    last_seen: HashMap<String, LastSeen>,
    counters: RuleCounters,
}

impl AlertRules {
    /// Rules with these settings and no history.
    pub fn new(settings: AlertSettings) -> Self {
        AlertRules {
            settings,
            episodes: HashMap::new(),
            last_seen: HashMap::new(),
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
        self.last_seen.retain(|device, _| !forget(device));
        self.episodes.retain(|(device, _), _| !forget(device));
    }

    /// Applies the rules to one (new, valid) reading, once.
    pub fn on_reading(&mut self, reading: &SensorReading, source: SourceRecord) -> Evaluation {
        self.last_seen.insert(
            reading.device_id.clone(),
            LastSeen {
                device_type: reading.device_type,
                reading_time: reading.timestamp,
                seen_at: tokio::time::Instant::now(),
                run_id: reading.run_id.clone(),
                sequence: reading.sequence,
                silent_alerted: false,
            },
        );
        let mut alerts = Vec::new();
        let breach = threshold_breach(&self.settings, reading);
        // A reading back on the normal side closes the episodes of the other threshold kinds.
        for kind in THRESHOLDS.iter().map(|rule| rule.kind) {
            if breach.map(|(k, _)| k) != Some(kind) {
                self.episodes.remove(&(reading.device_id.clone(), kind));
            }
        }
        if let Some((kind, threshold)) = breach {
            alerts.extend(self.episode(reading, kind, reading.value, threshold, &source));
        }
        if reading.battery_level < self.settings.battery_low {
            let threshold = self.settings.battery_low;
            alerts.extend(self.episode(
                reading,
                AlertKind::LowBattery,
                reading.battery_level,
                threshold,
                &source,
            ));
        } else {
            self.episodes
                .remove(&(reading.device_id.clone(), AlertKind::LowBattery));
        }
        Evaluation {
            alerts,
            threshold_fired: breach.is_some(),
        }
    }

    fn episode(
        &mut self,
        reading: &SensorReading,
        kind: AlertKind,
        value: f64,
        threshold: f64,
        source: &SourceRecord,
    ) -> Option<Alert> {
        let key = (reading.device_id.clone(), kind);
        let cooldown =
            chrono::Duration::from_std(self.settings.cooldown).unwrap_or(chrono::Duration::MAX);
        let repeats = match self.episodes.get_mut(&key) {
            Some(episode) if reading.timestamp - episode.last_sent < cooldown => {
                episode.repeats += 1;
                self.counters.suppressed += 1;
                return None;
            }
            Some(episode) => episode.repeats,
            None => 0,
        };
        self.episodes.insert(
            key,
            Episode {
                last_sent: reading.timestamp,
                repeats: 0,
            },
        );
        self.counters.sent += 1;
        Some(Alert {
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
        })
    }

    /// Alerts for devices that have sent nothing for longer than the silence limit
    /// (once per silence; a new reading ends it).
    pub fn silent_devices(&mut self) -> Vec<Alert> {
        let limit = self.settings.silence;
        let now = tokio::time::Instant::now();
        let mut alerts = Vec::new();
        for (device_id, seen) in &mut self.last_seen {
            let silent_for = now.duration_since(seen.seen_at);
            if seen.silent_alerted || silent_for < limit {
                continue;
            }
            seen.silent_alerted = true;
            self.counters.sent += 1;
            alerts.push(Alert {
                alert_id: new_alert_id(),
                device_id: device_id.clone(),
                device_type: seen.device_type,
                kind: AlertKind::DeviceSilent,
                severity: Severity::Critical,
                value: silent_for.as_secs_f64().round(),
                threshold: limit.as_secs_f64(),
                reading_time: alert_time(seen.reading_time),
                run_id: seen.run_id.clone(),
                sequence: seen.sequence,
                source: None,
                repeats_suppressed: 0,
            });
        }
        alerts
    }
}

#[cfg(test)]
mod tests;
