//! Alert rules: thresholds on readings, low batteries, and devices gone silent.
//!
//! Each rule looks at readings only, never at the simulator's ground truth.
//! A rule that fires opens an *episode* for its device and kind: the first
//! reading sends an alert, and further readings that keep the device in the
//! same state within the cooldown are counted on the episode rather than sent
//! again, so a device stuck in alarm does not flood the alert topic. A reading
//! back in the normal range closes the episode; an episode longer than the
//! cooldown sends a reminder carrying the count of repeats.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::sensor::device::DeviceType;
use crate::sensor::reading::SensorReading;

/// Thresholds and timings of the alert rules (`ALERT_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// `ALERT_TEMPERATURE_HIGH_C`: above this, `extreme_temperature`.
    pub temperature_high: f64,
    /// `ALERT_TEMPERATURE_LOW_C`: below this, `extreme_temperature`.
    pub temperature_low: f64,
    /// `ALERT_HUMIDITY_HIGH_PCT`: above this, `high_humidity`.
    pub humidity_high: f64,
    /// `ALERT_PRESSURE_LOW_HPA`: below this, `low_pressure`.
    pub pressure_low: f64,
    /// `ALERT_LIGHT_LOW_LUX`: below this, `low_light`.
    pub light_low: f64,
    /// `ALERT_BATTERY_LOW_PCT`: below this, `low_battery`.
    pub battery_low: f64,
    /// `ALERT_DEVICE_SILENT_SEC`: no reading for this long, `device_silent`.
    pub silence: Duration,
    /// `ALERT_COOLDOWN_SEC`: repeats of an open episode within this time are counted, not sent.
    pub cooldown: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            temperature_high: 45.0,
            temperature_low: -10.0,
            humidity_high: 90.0,
            pressure_low: 970.0,
            light_low: 20.0,
            battery_low: 15.0,
            silence: Duration::from_secs(60),
            cooldown: Duration::from_secs(300),
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Temperature above the high or below the low threshold.
    ExtremeTemperature,
    /// Humidity above the threshold.
    HighHumidity,
    /// Pressure below the threshold.
    LowPressure,
    /// A motion sensor saw motion.
    MotionDetected,
    /// Light below the threshold.
    LowLight,
    /// Battery below the threshold.
    LowBattery,
    /// No reading for longer than allowed.
    DeviceSilent,
}

impl AlertKind {
    /// The name used in alerts and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ExtremeTemperature => "extreme_temperature",
            AlertKind::HighHumidity => "high_humidity",
            AlertKind::LowPressure => "low_pressure",
            AlertKind::MotionDetected => "motion_detected",
            AlertKind::LowLight => "low_light",
            AlertKind::LowBattery => "low_battery",
            AlertKind::DeviceSilent => "device_silent",
        }
    }

    /// How urgent the kind is.
    pub fn severity(self) -> Severity {
        match self {
            AlertKind::ExtremeTemperature | AlertKind::DeviceSilent => Severity::Critical,
            AlertKind::HighHumidity
            | AlertKind::LowPressure
            | AlertKind::LowLight
            | AlertKind::LowBattery
            | AlertKind::MotionDetected => Severity::Warning,
        }
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Act now.
    Critical,
}

/// Where in Kafka the reading behind an alert is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One alert, as written to the alert topic (JSON, key = device id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id of this alert.
    pub alert_id: String,
    /// Device.
    pub device_id: String,
    /// Kind of device.
    pub device_type: DeviceType,
    /// What happened.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// The reading's value (battery level for `low_battery`, seconds silent for `device_silent`).
    pub value: f64,
    /// The threshold crossed.
    pub threshold: f64,
    /// When the reading was taken (RFC 3339, UTC, ms); for `device_silent`, the last reading.
    pub reading_time: String,
    /// Producer run of the reading.
    pub run_id: String,
    /// Sequence number of the reading.
    pub sequence: u64,
    /// Where the reading is in Kafka (absent for `device_silent`).
    pub source: Option<SourceRecord>,
    /// Readings in this episode since the last alert that were counted, not sent.
    pub repeats_suppressed: u64,
}

impl Alert {
    /// The alert as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an alert always serializes")
    }
}

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

/// Which rule fired on a reading, with value and threshold.
pub fn threshold_breach(
    settings: &AlertSettings,
    reading: &SensorReading,
) -> Option<(AlertKind, f64)> {
    let v = reading.value;
    match reading.device_type {
        DeviceType::Temperature if v > settings.temperature_high => {
            Some((AlertKind::ExtremeTemperature, settings.temperature_high))
        }
        DeviceType::Temperature if v < settings.temperature_low => {
            Some((AlertKind::ExtremeTemperature, settings.temperature_low))
        }
        DeviceType::Humidity if v > settings.humidity_high => {
            Some((AlertKind::HighHumidity, settings.humidity_high))
        }
        DeviceType::Pressure if v < settings.pressure_low => {
            Some((AlertKind::LowPressure, settings.pressure_low))
        }
        DeviceType::Light if v < settings.light_low => {
            Some((AlertKind::LowLight, settings.light_low))
        }
        DeviceType::Motion if v >= 1.0 => Some((AlertKind::MotionDetected, 1.0)),
        _ => None,
    }
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
        let threshold_kinds = [
            AlertKind::ExtremeTemperature,
            AlertKind::HighHumidity,
            AlertKind::LowPressure,
            AlertKind::MotionDetected,
            AlertKind::LowLight,
        ];
        for kind in threshold_kinds {
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
            reading_time: reading
                .timestamp
                .to_rfc3339_opts(SecondsFormat::Millis, true),
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
                reading_time: seen
                    .reading_time
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
                run_id: seen.run_id.clone(),
                sequence: seen.sequence,
                source: None,
                repeats_suppressed: 0,
            });
        }
        alerts
    }
}

/// A fresh alert id: 16 random bytes, URL-safe base64 (as Kafka writes its ids).
fn new_alert_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// How well the threshold rules match the simulator's ground truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertQuality {
    /// Anomalous readings a rule fired on.
    pub true_positives: u64,
    /// Normal readings a rule fired on.
    pub false_positives: u64,
    /// Anomalous readings no rule fired on.
    pub false_negatives: u64,
}

impl AlertQuality {
    /// Counts one reading: did a threshold rule fire, and was the reading an injected anomaly.
    pub fn record(&mut self, fired: bool, anomalous: bool) {
        match (fired, anomalous) {
            (true, true) => self.true_positives += 1,
            (true, false) => self.false_positives += 1,
            (false, true) => self.false_negatives += 1,
            (false, false) => {}
        }
    }

    /// Share of firings that were real anomalies (1 when nothing fired).
    pub fn precision(&self) -> f64 {
        let fired = self.true_positives + self.false_positives;
        if fired == 0 {
            1.0
        } else {
            self.true_positives as f64 / fired as f64
        }
    }

    /// Share of real anomalies a rule fired on (1 when there were none).
    pub fn recall(&self) -> f64 {
        let real = self.true_positives + self.false_negatives;
        if real == 0 {
            1.0
        } else {
            self.true_positives as f64 / real as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::reading::{DeviceStatus, Location, SCHEMA_VERSION};
    use crate::sensor::simulator::{Fleet, SimulatorSettings};

    #[test]
    fn default_thresholds_find_the_injected_anomalies_over_100000_readings() {
        let settings = SimulatorSettings {
            num_devices: 1_000,
            interval: Duration::from_secs(60),
            device_types: DeviceType::ALL.to_vec(),
            anomaly_probability: 0.05,
            seed: 2026,
        };
        // 120,000 readings spread over 5 simulated days, so every hour of the day is covered.
        let mut fleet = Fleet::new(
            &settings,
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        );
        let thresholds = AlertSettings::default();
        let mut quality = AlertQuality::default();
        let mut readings = 0;
        while let Some(reading) = fleet.next_due(Duration::from_secs(5 * 86_400)) {
            readings += 1;
            quality.record(
                threshold_breach(&thresholds, &reading).is_some(),
                reading.is_anomaly,
            );
        }
        assert!(readings >= 100_000, "{readings}");
        assert!(quality.true_positives > 5_000, "{quality:?}");
        assert!(quality.recall() >= 0.99, "{quality:?}");
        assert!(quality.precision() >= 0.95, "{quality:?}");
    }

    fn reading(kind: DeviceType, value: f64, second: i64) -> SensorReading {
        SensorReading {
            schema_version: SCHEMA_VERSION,
            device_id: format!("{kind}-000001"),
            device_type: kind,
            run_id: "r".to_string(),
            sequence: second as u64,
            timestamp: DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap(),
            value,
            unit: kind.unit().to_string(),
            location: Location {
                site: "s".into(),
                zone: "z".into(),
                latitude: 0.0,
                longitude: 0.0,
            },
            battery_level: 80.0,
            signal_strength: -60,
            firmware_version: "1".into(),
            status: DeviceStatus::Ok,
            is_anomaly: false,
            anomaly_kind: None,
        }
    }

    fn source() -> SourceRecord {
        SourceRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn each_threshold_kind_fires_on_its_side_of_the_threshold() {
        let settings = AlertSettings::default();
        let fires =
            |kind, value| threshold_breach(&settings, &reading(kind, value, 0)).map(|(k, _)| k);
        assert_eq!(
            fires(DeviceType::Temperature, 60.0),
            Some(AlertKind::ExtremeTemperature)
        );
        assert_eq!(
            fires(DeviceType::Temperature, -20.0),
            Some(AlertKind::ExtremeTemperature)
        );
        assert_eq!(fires(DeviceType::Temperature, 30.0), None);
        assert_eq!(
            fires(DeviceType::Humidity, 96.0),
            Some(AlertKind::HighHumidity)
        );
        assert_eq!(fires(DeviceType::Humidity, 60.0), None);
        assert_eq!(
            fires(DeviceType::Pressure, 940.0),
            Some(AlertKind::LowPressure)
        );
        assert_eq!(fires(DeviceType::Pressure, 1010.0), None);
        assert_eq!(fires(DeviceType::Light, 2.0), Some(AlertKind::LowLight));
        assert_eq!(fires(DeviceType::Light, 300.0), None);
        assert_eq!(
            fires(DeviceType::Motion, 1.0),
            Some(AlertKind::MotionDetected)
        );
        assert_eq!(fires(DeviceType::Motion, 0.0), None);
    }

    #[test]
    fn a_device_stuck_in_alarm_sends_one_alert_per_cooldown_and_counts_the_rest() {
        let mut rules = AlertRules::new(AlertSettings {
            cooldown: Duration::from_secs(60),
            ..AlertSettings::default()
        });
        let mut sent = Vec::new();
        for second in 0..150 {
            sent.extend(
                rules
                    .on_reading(&reading(DeviceType::Temperature, 70.0, second), source())
                    .alerts,
            );
        }
        assert_eq!(sent.len(), 3, "at 0 s, 60 s and 120 s");
        assert_eq!(sent[0].repeats_suppressed, 0);
        assert_eq!(sent[1].repeats_suppressed, 59);
        assert_eq!(
            rules.counters(),
            RuleCounters {
                sent: 3,
                suppressed: 147
            }
        );
        // Back to normal closes the episode: the next breach alerts at once.
        assert!(
            rules
                .on_reading(&reading(DeviceType::Temperature, 21.0, 150), source())
                .alerts
                .is_empty()
        );
        assert_eq!(
            rules
                .on_reading(&reading(DeviceType::Temperature, 70.0, 151), source())
                .alerts
                .len(),
            1
        );
    }

    #[test]
    fn low_battery_alerts_alongside_readings() {
        let mut rules = AlertRules::new(AlertSettings::default());
        let mut low = reading(DeviceType::Humidity, 50.0, 0);
        low.battery_level = 9.5;
        let evaluation = rules.on_reading(&low, source());
        assert!(
            !evaluation.threshold_fired,
            "a low battery is not a threshold breach"
        );
        let alerts = evaluation.alerts;
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::LowBattery);
        assert_eq!(alerts[0].value, 9.5);
        let json: serde_json::Value = serde_json::from_slice(&alerts[0].to_json()).unwrap();
        assert_eq!(json["kind"], "low_battery");
        assert_eq!(json["severity"], "warning");
        assert_eq!(json["source"]["partition"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_device_alerts_once_until_it_reports_again() {
        let mut rules = AlertRules::new(AlertSettings {
            silence: Duration::from_secs(30),
            ..AlertSettings::default()
        });
        rules.on_reading(&reading(DeviceType::Light, 400.0, 0), source());
        assert!(rules.silent_devices().is_empty());
        tokio::time::advance(Duration::from_secs(31)).await;
        let alerts = rules.silent_devices();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::DeviceSilent);
        assert!(rules.silent_devices().is_empty(), "once per silence");
        rules.on_reading(&reading(DeviceType::Light, 400.0, 40), source());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(rules.silent_devices().len(), 1);
    }
}
