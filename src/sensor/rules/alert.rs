//! An alert as it is written: JSON, keyed by device.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::kinds::{AlertKind, Severity};
use crate::sensor::device::DeviceType;
use crate::sensor::fault::FaultKind;
use crate::sensor::reading::SensorReading;

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
    /// The threshold crossed (for `sensor_fault`, the reading's anomaly score).
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
    /// For `sensor_fault`: what the detector found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultKind>,
}

impl Alert {
    /// The fault detector's alert for a device silent for `silent_secs` (of
    /// event time) since its `last` reading.
    pub fn sensor_silence(device_id: &str, last: &super::LastReading, silent_secs: f64) -> Alert {
        Alert {
            alert_id: new_alert_id(),
            device_id: device_id.to_string(),
            device_type: last.device_type,
            kind: AlertKind::SensorFault,
            severity: Severity::Critical,
            value: silent_secs.round(),
            threshold: 1.0,
            reading_time: alert_time(last.reading_time),
            run_id: last.run_id.clone(),
            sequence: last.sequence,
            source: None,
            repeats_suppressed: 0,
            fault: Some(FaultKind::Silence),
        }
    }

    /// The fault detector's alert for an episode of `fault` it recognised at
    /// `reading` (for a silence: the device's last reading, `source` absent).
    pub fn sensor_fault(
        reading: &SensorReading,
        fault: FaultKind,
        score: f64,
        source: Option<SourceRecord>,
    ) -> Alert {
        let severity = match fault {
            FaultKind::Silence | FaultKind::Stuck => Severity::Critical,
            _ => Severity::Warning,
        };
        Alert {
            alert_id: new_alert_id(),
            device_id: reading.device_id.clone(),
            device_type: reading.device_type,
            kind: AlertKind::SensorFault,
            severity,
            value: reading.value,
            threshold: score,
            reading_time: alert_time(reading.timestamp),
            run_id: reading.run_id.clone(),
            sequence: reading.sequence,
            source,
            repeats_suppressed: 0,
            fault: Some(fault),
        }
    }

    /// The alert as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an alert always serializes")
    }
}

/// The time of a reading as alerts write it: RFC 3339, UTC, milliseconds.
pub(super) fn alert_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A fresh alert id: 16 random bytes, URL-safe base64 (as Kafka writes its ids).
pub(super) fn new_alert_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}
