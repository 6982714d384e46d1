//! The kinds of alert, and the one table of threshold rules.
//!
//! A threshold rule says: a reading of this device type on this side of this
//! threshold raises this kind of alert. Changing a rule, or adding one, is one
//! line of [`THRESHOLDS`]; the thresholds themselves are settings
//! ([`AlertSettings`], `ALERT_*`).

use std::time::Duration;

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
    /// The fault detector found a sensor fault (its kind is the alert's `fault`).
    SensorFault,
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

/// Every kind: its name in alerts and metrics, and how urgent it is.
const KINDS: [(AlertKind, &str, Severity); 8] = [
    (
        AlertKind::ExtremeTemperature,
        "extreme_temperature",
        Severity::Critical,
    ),
    (AlertKind::HighHumidity, "high_humidity", Severity::Warning),
    (AlertKind::LowPressure, "low_pressure", Severity::Warning),
    (
        AlertKind::MotionDetected,
        "motion_detected",
        Severity::Warning,
    ),
    (AlertKind::LowLight, "low_light", Severity::Warning),
    (AlertKind::LowBattery, "low_battery", Severity::Warning),
    (AlertKind::DeviceSilent, "device_silent", Severity::Critical),
    (AlertKind::SensorFault, "sensor_fault", Severity::Warning),
];

impl AlertKind {
    /// Every kind, in the order of the table.
    pub const ALL: [AlertKind; 8] = [
        AlertKind::ExtremeTemperature,
        AlertKind::HighHumidity,
        AlertKind::LowPressure,
        AlertKind::MotionDetected,
        AlertKind::LowLight,
        AlertKind::LowBattery,
        AlertKind::DeviceSilent,
        AlertKind::SensorFault,
    ];

    /// The kind's place in [`AlertKind::ALL`], for per-kind counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in alerts and metrics.
    pub fn as_str(self) -> &'static str {
        KINDS[self.index()].1
    }

    /// How urgent the kind is.
    pub fn severity(self) -> Severity {
        KINDS[self.index()].2
    }
}

/// The side of its threshold a reading must be on to breach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Strictly above.
    Above,
    /// Strictly below.
    Below,
    /// At or above.
    AtLeast,
}

/// One threshold rule; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Threshold {
    /// The device type it applies to.
    pub device: DeviceType,
    /// The kind it raises.
    pub kind: AlertKind,
    /// Which side breaches.
    pub side: Side,
    /// The threshold, from the settings.
    pub threshold: fn(&AlertSettings) -> f64,
}

/// The threshold rules; the first that a reading breaches fires.
pub const THRESHOLDS: [Threshold; 6] = [
    Threshold {
        device: DeviceType::Temperature,
        kind: AlertKind::ExtremeTemperature,
        side: Side::Above,
        threshold: |s| s.temperature_high,
    },
    Threshold {
        device: DeviceType::Temperature,
        kind: AlertKind::ExtremeTemperature,
        side: Side::Below,
        threshold: |s| s.temperature_low,
    },
    Threshold {
        device: DeviceType::Humidity,
        kind: AlertKind::HighHumidity,
        side: Side::Above,
        threshold: |s| s.humidity_high,
    },
    Threshold {
        device: DeviceType::Pressure,
        kind: AlertKind::LowPressure,
        side: Side::Below,
        threshold: |s| s.pressure_low,
    },
    Threshold {
        device: DeviceType::Light,
        kind: AlertKind::LowLight,
        side: Side::Below,
        threshold: |s| s.light_low,
    },
    Threshold {
        device: DeviceType::Motion,
        kind: AlertKind::MotionDetected,
        side: Side::AtLeast,
        threshold: |_| 1.0,
    },
];

/// Which threshold rule a reading breaches, with the threshold crossed.
pub fn threshold_breach(
    settings: &AlertSettings,
    reading: &SensorReading,
) -> Option<(AlertKind, f64)> {
    THRESHOLDS
        .iter()
        .filter(|rule| rule.device == reading.device_type)
        .map(|rule| (rule, (rule.threshold)(settings)))
        .find(|(rule, threshold)| match rule.side {
            Side::Above => reading.value > *threshold,
            Side::Below => reading.value < *threshold,
            Side::AtLeast => reading.value >= *threshold,
        })
        .map(|(rule, threshold)| (rule.kind, threshold))
}
