//! The rules against readings made for each case, and against the simulator.

use std::time::Duration;

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
        fault_probability: 0.0,
        fault_kinds: crate::sensor::fault::FaultKind::ALL.to_vec(),
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
        fault: None,
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
    let fires = |kind, value| threshold_breach(&settings, &reading(kind, value, 0)).map(|(k, _)| k);
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
