//! Checking a consumed record before anything trusts it.
//!
//! A record either becomes a [`SensorReading`] or gets a [`Rejection`] that
//! says why, in a short code for counting and a sentence for people. Rejected
//! records go to the dead-letter topic with their original bytes; nothing here
//! panics or gives up on the stream.

use std::fmt;

use crate::sensor::device::DeviceType;
use crate::sensor::reading::{SCHEMA_VERSION, SensorReading};

/// Largest reading accepted; a real one is well under 1 KiB.
pub const MAX_READING_BYTES: usize = 64 * 1024;

/// Why a record is not a valid reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// No value, or an empty one.
    Empty,
    /// Larger than [`MAX_READING_BYTES`].
    TooLarge,
    /// Not UTF-8 text.
    NotUtf8,
    /// Not JSON.
    NotJson,
    /// JSON, but fields are missing or of the wrong type.
    Schema,
    /// A schema version this code does not read.
    UnsupportedSchemaVersion,
    /// A device type that does not exist.
    UnknownDeviceType,
    /// A value no sensor of that type can report.
    OutOfRange,
    /// The unit does not belong to the device type.
    WrongUnit,
    /// The record key is not the reading's device id.
    KeyMismatch,
}

impl RejectReason {
    /// The code written to the dead-letter header and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Empty => "empty",
            RejectReason::TooLarge => "too_large",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::NotJson => "not_json",
            RejectReason::Schema => "schema",
            RejectReason::UnsupportedSchemaVersion => "unsupported_schema_version",
            RejectReason::UnknownDeviceType => "unknown_device_type",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::WrongUnit => "wrong_unit",
            RejectReason::KeyMismatch => "key_mismatch",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record refused, with the reason and the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Short code.
    pub reason: RejectReason,
    /// What exactly was wrong.
    pub detail: String,
    /// Where in the reading, when the JSON did not fit the schema
    /// (`status`, `location.latitude`).
    pub path: Option<String>,
}

impl Rejection {
    /// The field of the reading at fault, where the reason names one: what an
    /// HTTP client is told beside the reason.
    pub fn field(&self) -> Option<String> {
        let named = match self.reason {
            RejectReason::UnknownDeviceType => "device_type",
            RejectReason::WrongUnit => "unit",
            RejectReason::KeyMismatch => "device_id",
            RejectReason::UnsupportedSchemaVersion => "schema_version",
            // "value 999 outside ...", "battery_level 120 outside ...".
            RejectReason::OutOfRange => self.detail.split(' ').next().unwrap_or_default(),
            // Where the JSON did not fit; else serde's "missing field `value`",
            // or our own "is_anomaly and anomaly_kind disagree".
            RejectReason::Schema => match (&self.path, self.detail.split('`').nth(1)) {
                (Some(path), _) => path,
                (None, Some(name)) if self.detail.starts_with("missing field") => name,
                _ if self.detail.starts_with("is_anomaly") => "is_anomaly",
                _ => "",
            },
            _ => "",
        };
        (!named.is_empty()).then(|| named.to_string())
    }
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
        path: None,
    }
}

/// What a sensor of each type can physically report.
pub fn physical_range(kind: DeviceType) -> (f64, f64) {
    match kind {
        DeviceType::Temperature => (-60.0, 125.0),
        DeviceType::Humidity => (0.0, 100.0),
        DeviceType::Pressure => (800.0, 1100.0),
        DeviceType::Light => (0.0, 200_000.0),
        DeviceType::Motion => (0.0, 1.0),
    }
}

/// Where `text` stops fitting the reading's schema, found by parsing it
/// again: only refused readings pay for it.
fn schema_path(text: &str) -> Option<String> {
    let mut json = serde_json::Deserializer::from_str(text);
    let error = serde_path_to_error::deserialize::<_, SensorReading>(&mut json).err()?;
    let path = error.path().to_string();
    (path != ".").then_some(path)
}

/// Parses and checks one record's key and value.
pub fn validate(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<SensorReading, Rejection> {
    let reading = validate_value(value)?;
    if key != Some(reading.device_id.as_bytes()) {
        return Err(reject(
            RejectReason::KeyMismatch,
            format!(
                "record key {:?} is not the device id {:?}",
                key.map(String::from_utf8_lossy),
                reading.device_id
            ),
        ));
    }
    Ok(reading)
}

/// Parses and checks a reading on its own, where no record key comes with it
/// (a device's message to the gateway).
pub fn validate_value(value: Option<&[u8]>) -> Result<SensorReading, Rejection> {
    let value = match value {
        Some(v) if !v.is_empty() => v,
        _ => return Err(reject(RejectReason::Empty, "the record has no value")),
    };
    if value.len() > MAX_READING_BYTES {
        return Err(reject(
            RejectReason::TooLarge,
            format!(
                "{} bytes, at most {MAX_READING_BYTES} accepted",
                value.len()
            ),
        ));
    }
    let text =
        std::str::from_utf8(value).map_err(|e| reject(RejectReason::NotUtf8, e.to_string()))?;
    let reading: SensorReading = serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                reject(RejectReason::NotJson, e.to_string())
            }
            Category::Data if e.to_string().contains("unknown device type") => {
                reject(RejectReason::UnknownDeviceType, e.to_string())
            }
            Category::Data => Rejection {
                path: schema_path(text),
                ..reject(RejectReason::Schema, e.to_string())
            },
        }
    })?;
    if reading.schema_version != SCHEMA_VERSION {
        return Err(reject(
            RejectReason::UnsupportedSchemaVersion,
            format!(
                "schema_version {}, this consumer reads {SCHEMA_VERSION}",
                reading.schema_version
            ),
        ));
    }
    if reading.unit != reading.device_type.unit() {
        return Err(reject(
            RejectReason::WrongUnit,
            format!(
                "unit {:?} for a {} sensor, which reports {:?}",
                reading.unit,
                reading.device_type,
                reading.device_type.unit()
            ),
        ));
    }
    let (low, high) = physical_range(reading.device_type);
    let value_ok = reading.value.is_finite()
        && (low..=high).contains(&reading.value)
        && (reading.device_type != DeviceType::Motion
            || reading.value == 0.0
            || reading.value == 1.0);
    if !value_ok {
        return Err(reject(
            RejectReason::OutOfRange,
            format!(
                "value {} outside what a {} sensor reports ({low} to {high})",
                reading.value, reading.device_type
            ),
        ));
    }
    if !(0.0..=100.0).contains(&reading.battery_level) {
        return Err(reject(
            RejectReason::OutOfRange,
            format!("battery_level {} outside 0 to 100", reading.battery_level),
        ));
    }
    if !(-150..=0).contains(&reading.signal_strength) {
        return Err(reject(
            RejectReason::OutOfRange,
            format!(
                "signal_strength {} dBm outside -150 to 0",
                reading.signal_strength
            ),
        ));
    }
    if reading.is_anomaly != reading.anomaly_kind.is_some() {
        return Err(reject(
            RejectReason::Schema,
            "is_anomaly and anomaly_kind disagree".to_string(),
        ));
    }
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::reading::{AnomalyKind, DeviceStatus, Location};
    use chrono::{DurationRound, TimeDelta, Utc};

    fn reading() -> SensorReading {
        SensorReading {
            schema_version: SCHEMA_VERSION,
            device_id: "humidity-000001".to_string(),
            device_type: DeviceType::Humidity,
            run_id: "r".to_string(),
            sequence: 3,
            timestamp: Utc::now()
                .duration_trunc(TimeDelta::milliseconds(1))
                .unwrap(),
            value: 55.5,
            unit: "%".to_string(),
            location: Location {
                site: "site-01".to_string(),
                zone: "zone-00".to_string(),
                latitude: 52.4,
                longitude: 13.3,
            },
            battery_level: 80.0,
            signal_strength: -60,
            firmware_version: "2.0.1".to_string(),
            status: DeviceStatus::Ok,
            is_anomaly: false,
            anomaly_kind: None,
            fault: None,
        }
    }

    fn reason_for(key: Option<&[u8]>, value: Option<&[u8]>) -> RejectReason {
        validate(key, value).unwrap_err().reason
    }

    fn with(change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut json = serde_json::to_value(reading()).unwrap();
        change(&mut json);
        serde_json::to_vec(&json).unwrap()
    }

    #[test]
    fn a_simulated_reading_is_valid() {
        let r = reading();
        assert_eq!(validate(Some(r.key()), Some(&r.to_json())).unwrap(), r);
        let mut anomalous = reading();
        anomalous.value = 97.0;
        anomalous.is_anomaly = true;
        anomalous.anomaly_kind = Some(AnomalyKind::HighHumidity);
        assert!(validate(Some(anomalous.key()), Some(&anomalous.to_json())).is_ok());
    }

    #[test]
    fn each_kind_of_bad_record_gets_its_reason() {
        let key = Some(&b"humidity-000001"[..]);
        assert_eq!(reason_for(key, None), RejectReason::Empty);
        assert_eq!(reason_for(key, Some(b"")), RejectReason::Empty);
        assert_eq!(
            reason_for(key, Some(&vec![b' '; MAX_READING_BYTES + 1])),
            RejectReason::TooLarge
        );
        assert_eq!(
            reason_for(key, Some(&[0xff, 0xfe, b'{'])),
            RejectReason::NotUtf8
        );
        assert_eq!(
            reason_for(key, Some(b"temperature=21.5")),
            RejectReason::NotJson
        );
        assert_eq!(
            reason_for(key, Some(b"{\"device_id\":")),
            RejectReason::NotJson
        );
        assert_eq!(
            reason_for(key, Some(&with(|j| j["value"] = "high".into()))),
            RejectReason::Schema
        );
        assert_eq!(
            reason_for(
                key,
                Some(&with(|j| {
                    j.as_object_mut().unwrap().remove("sequence");
                }))
            ),
            RejectReason::Schema
        );
        assert_eq!(
            reason_for(key, Some(&with(|j| j["timestamp"] = "yesterday".into()))),
            RejectReason::Schema
        );
        assert_eq!(
            reason_for(key, Some(&with(|j| j["device_type"] = "thermostat".into()))),
            RejectReason::UnknownDeviceType
        );
        assert_eq!(
            reason_for(key, Some(&with(|j| j["schema_version"] = 2.into()))),
            RejectReason::UnsupportedSchemaVersion
        );
        assert_eq!(
            reason_for(key, Some(&with(|j| j["value"] = 140.0.into()))),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason_for(key, Some(&with(|j| j["battery_level"] = (-3.0).into()))),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason_for(key, Some(&with(|j| j["unit"] = "°C".into()))),
            RejectReason::WrongUnit
        );
        assert_eq!(
            reason_for(Some(b"someone-else"), Some(&with(|_| {}))),
            RejectReason::KeyMismatch
        );
        assert_eq!(
            reason_for(None, Some(&with(|_| {}))),
            RejectReason::KeyMismatch
        );
        assert_eq!(
            reason_for(key, Some(&with(|j| j["is_anomaly"] = true.into()))),
            RejectReason::Schema
        );
    }

    #[test]
    fn a_refused_reading_names_the_field_at_fault() {
        type Change = fn(&mut serde_json::Value);
        let field = |change: Change| validate_value(Some(&with(change))).unwrap_err().field();
        let cases: [(Change, &str); 9] = [
            (|j| j["value"] = "high".into(), "value"),
            (|j| j["status"] = "active".into(), "status"),
            (
                |j| j["location"]["latitude"] = "north".into(),
                "location.latitude",
            ),
            (
                |j| {
                    j.as_object_mut().unwrap().remove("sequence");
                },
                "sequence",
            ),
            (|j| j["device_type"] = "thermostat".into(), "device_type"),
            (|j| j["battery_level"] = (-3.0).into(), "battery_level"),
            (|j| j["value"] = 140.0.into(), "value"),
            (|j| j["unit"] = "°C".into(), "unit"),
            (|j| j["is_anomaly"] = true.into(), "is_anomaly"),
        ];
        for (change, expected) in cases {
            assert_eq!(field(change).as_deref(), Some(expected));
        }
        let not_json = validate_value(Some(b"temperature=21.5")).unwrap_err();
        assert_eq!(not_json.field(), None, "{not_json:?}");
    }
}
