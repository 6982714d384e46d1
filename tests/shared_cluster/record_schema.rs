//! Readings the simulator writes to Kafka follow `schema/sensor-reading.schema.json`,
//! and records the schema refuses are the ones the consumer dead-letters.

use crate::common;

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use metrocloud::pipeline::sources::simulator::run_ingest;
use metrocloud::sensor::device::DeviceType;
use metrocloud::sensor::simulator::{Fleet, SimulatorSettings};
use metrocloud::sensor::validate::validate;

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/sensor-reading.schema.json"
    ))
    .expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema is a valid JSON Schema")
}

#[tokio::test]
async fn records_written_to_kafka_by_the_simulator_follow_the_json_schema() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "schema").await;
    let settings = SimulatorSettings {
        num_devices: 250,
        interval: Duration::from_millis(50),
        device_types: DeviceType::ALL.to_vec(),
        // Plenty of anomalies, so every kind shows up.
        anomaly_probability: 0.2,
        seed: 99,
        // And sensor faults, so that their labels are checked too.
        fault_probability: 0.05,
        fault_kinds: metrocloud::sensor::fault::FaultKind::ALL.to_vec(),
    };
    let producer = common::reading_producer(cluster, &topic, |_, _| {}).await;
    run_ingest(
        Fleet::new(&settings, Utc::now()),
        producer,
        Some(5_000),
        CancellationToken::new(),
    )
    .await
    .expect("ingest");

    let validator = schema();
    let stored = common::read_all(&cluster.bootstrap, &topic, 6).await;
    assert_eq!(stored.len(), 5_000);
    let mut kinds = std::collections::BTreeSet::new();
    let mut faults = std::collections::BTreeSet::new();
    for (_, record) in &stored {
        let value: serde_json::Value =
            serde_json::from_slice(record.record.value.as_deref().unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
        if let Some(kind) = value["anomaly_kind"].as_str() {
            kinds.insert(kind.to_string());
        }
        if let Some(kind) = value["fault"]["kind"].as_str() {
            faults.insert(kind.to_string());
        }
    }
    assert_eq!(kinds.len(), 5, "every anomaly kind was checked: {kinds:?}");
    // Silences and wrong clocks last longer than the 20 readings a device
    // makes here, or start only at some hours: the kinds that start at once.
    for kind in ["spike", "stuck", "drift", "noise_burst", "level_shift"] {
        assert!(
            faults.contains(kind),
            "no {kind} fault was checked: {faults:?}"
        );
    }
}

#[test]
fn the_schema_and_the_consumers_validation_refuse_the_same_bad_readings() {
    let validator = schema();
    let good = r#"{"schema_version":1,"device_id":"light-000003","device_type":"light","run_id":"r","sequence":0,"timestamp":"2026-11-25T12:00:00.000Z","value":312.5,"unit":"lux","location":{"site":"site-01","zone":"zone-01","latitude":52.4,"longitude":13.3},"battery_level":77.0,"signal_strength":-61,"firmware_version":"2.0.1","status":"ok","is_anomaly":false,"anomaly_kind":null}"#;
    let variants = [
        (good.to_string(), true),
        (good.replace("312.5", "-4"), false),
        (good.replace("\"lux\"", "\"%\""), false),
        (good.replace("\"light\",", "\"lamp\","), false),
        (
            good.replace("\"schema_version\":1", "\"schema_version\":2"),
            false,
        ),
        (
            good.replace("\"sequence\":0", "\"sequence\":\"zero\""),
            false,
        ),
        (
            good.replace("\"battery_level\":77.0", "\"battery_level\":101"),
            false,
        ),
        (
            good.replace("\"is_anomaly\":false", "\"is_anomaly\":true"),
            false,
        ),
        (
            good.replace("312.5", "2.5").replace(
                "\"is_anomaly\":false,\"anomaly_kind\":null",
                "\"is_anomaly\":true,\"anomaly_kind\":\"low_light\"",
            ),
            true,
        ),
    ];
    for (text, expected_valid) in variants {
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            validator.is_valid(&json),
            expected_valid,
            "schema on {text}"
        );
        assert_eq!(
            validate(Some(b"light-000003"), Some(text.as_bytes())).is_ok(),
            expected_valid,
            "consumer on {text}"
        );
    }
}
