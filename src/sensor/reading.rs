//! One sensor reading, as it travels through Kafka.
//!
//! A reading is one JSON object per Kafka record, keyed by its device id. Besides
//! the measurement it carries what the rest of the pipeline needs to prove it
//! lost nothing: the id of the simulator run and the device's sequence number
//! (a gap is a loss, a repeat a duplicate, and a restarted producer starts a new
//! run rather than repeating old numbers), and the ground truth of whether the
//! reading was made anomalous on purpose, so alert quality can be scored.
//! The field list is documented in the README and pinned by
//! `schema/sensor-reading.schema.json`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sensor::device::DeviceType;
use crate::sensor::fault::FaultTruth;
use crate::sensor::timestamp::{from_rfc3339, rfc3339_millis};

/// The version of the record layout this code writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A measurement from one device at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Stable id of the device, also the record key: `<type>-<number>`.
    pub device_id: String,
    /// Kind of sensor.
    pub device_type: DeviceType,
    /// Id of the producer run that generated the reading.
    pub run_id: String,
    /// Per device and run: 0 for the first reading, then +1 for each.
    pub sequence: u64,
    /// When the reading was taken: RFC 3339, UTC, milliseconds.
    #[serde(serialize_with = "rfc3339_millis", deserialize_with = "from_rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// The measured value, in `unit`.
    pub value: f64,
    /// `°C`, `%`, `hPa`, `lux`, or `motion` (0 or 1).
    pub unit: String,
    /// Where the device is installed.
    pub location: Location,
    /// Remaining battery, percent.
    pub battery_level: f64,
    /// Radio signal strength, dBm.
    pub signal_strength: i32,
    /// Firmware the device runs.
    pub firmware_version: String,
    /// The device's own view of its health.
    pub status: DeviceStatus,
    /// Ground truth: the simulator made this reading anomalous on purpose.
    pub is_anomaly: bool,
    /// Which anomaly, when `is_anomaly`.
    pub anomaly_kind: Option<AnomalyKind>,
    /// Ground truth: the sensor fault episode this reading belongs to, when the
    /// simulator injected one (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultTruth>,
}

/// Where a device is installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Site name, e.g. `site-03`.
    pub site: String,
    /// Zone within the site, e.g. `zone-12`.
    pub zone: String,
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
}

/// A device's own view of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Working normally.
    Ok,
    /// Battery below 15 %.
    LowBattery,
    /// Signal weaker than -90 dBm.
    WeakSignal,
}

/// The anomalies the simulator injects, one per kind of sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Temperature far outside what the room sees.
    ExtremeTemperature,
    /// Humidity near saturation.
    HighHumidity,
    /// Pressure far below the weather's range.
    LowPressure,
    /// A motion event.
    MotionDetected,
    /// Light failed.
    LowLight,
}

impl AnomalyKind {
    /// The anomaly a sensor of this kind can show.
    pub fn of(device_type: DeviceType) -> AnomalyKind {
        match device_type {
            DeviceType::Temperature => AnomalyKind::ExtremeTemperature,
            DeviceType::Humidity => AnomalyKind::HighHumidity,
            DeviceType::Pressure => AnomalyKind::LowPressure,
            DeviceType::Motion => AnomalyKind::MotionDetected,
            DeviceType::Light => AnomalyKind::LowLight,
        }
    }

    /// The name used in records and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::ExtremeTemperature => "extreme_temperature",
            AnomalyKind::HighHumidity => "high_humidity",
            AnomalyKind::LowPressure => "low_pressure",
            AnomalyKind::MotionDetected => "motion_detected",
            AnomalyKind::LowLight => "low_light",
        }
    }
}

/// A partial view of a reading: the fields a reader that only looks needs
/// (the console's fleet view, the benchmark's readings file), borrowed from
/// the record's bytes where the JSON has no escapes. It does no checks:
/// [`crate::sensor::validate`] decides what is a reading.
#[derive(Debug, Deserialize)]
pub struct ReadingView<'a> {
    /// Device.
    #[serde(borrow)]
    pub device_id: Cow<'a, str>,
    /// Kind.
    pub device_type: DeviceType,
    /// Producer run.
    #[serde(borrow)]
    pub run_id: Cow<'a, str>,
    /// Sequence within the run.
    pub sequence: u64,
    /// When it was taken (RFC 3339).
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    /// Value.
    pub value: f64,
    /// Unit.
    #[serde(borrow)]
    pub unit: Cow<'a, str>,
    /// Battery (%).
    pub battery_level: f64,
    /// Signal (dBm).
    pub signal_strength: i32,
    /// Where.
    #[serde(borrow)]
    pub location: LocationView<'a>,
}

/// Site and zone of a [`ReadingView`].
#[derive(Debug, Deserialize)]
pub struct LocationView<'a> {
    /// Site.
    #[serde(borrow)]
    pub site: Cow<'a, str>,
    /// Zone.
    #[serde(borrow)]
    pub zone: Cow<'a, str>,
}

impl<'a> ReadingView<'a> {
    /// Reads the view from a record's value.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl SensorReading {
    /// The record's key: the device id's bytes.
    pub fn key(&self) -> &[u8] {
        self.device_id.as_bytes()
    }

    /// The record's value: this reading as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reading always serializes")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn example() -> SensorReading {
        SensorReading {
            schema_version: SCHEMA_VERSION,
            device_id: "temperature-000042".to_string(),
            device_type: DeviceType::Temperature,
            run_id: "5f1c2a9e7b3d4c60".to_string(),
            sequence: 17,
            timestamp: DateTime::parse_from_rfc3339("2026-11-25T14:03:07.250Z")
                .unwrap()
                .with_timezone(&Utc),
            value: 22.4,
            unit: "°C".to_string(),
            location: Location {
                site: "site-03".to_string(),
                zone: "zone-12".to_string(),
                latitude: 52.5201,
                longitude: 13.4049,
            },
            battery_level: 87.5,
            signal_strength: -67,
            firmware_version: "2.1.0".to_string(),
            status: DeviceStatus::Ok,
            is_anomaly: false,
            anomaly_kind: None,
            fault: None,
        }
    }

    #[test]
    fn json_uses_snake_case_names_and_millisecond_utc_timestamps() {
        let json: serde_json::Value = serde_json::from_slice(&example().to_json()).unwrap();
        assert_eq!(json["timestamp"], "2026-11-25T14:03:07.250Z");
        assert_eq!(json["device_type"], "temperature");
        assert_eq!(json["status"], "ok");
        assert_eq!(json["anomaly_kind"], serde_json::Value::Null);
        assert_eq!(json["unit"], "°C");
    }

    #[test]
    fn a_reading_survives_the_round_trip_through_json() {
        let mut reading = example();
        reading.is_anomaly = true;
        reading.anomaly_kind = Some(AnomalyKind::ExtremeTemperature);
        let back: SensorReading = serde_json::from_slice(&reading.to_json()).unwrap();
        assert_eq!(back, reading);
    }
}
