//! Processing's decisions, read back from a sink in memory.

use std::time::Duration;

use chrono::DateTime;

use super::*;
use crate::pipeline::sinks::memory::MemorySink;
use crate::sensor::device::DeviceType;
use crate::sensor::reading::{AnomalyKind, DeviceStatus, Location, SCHEMA_VERSION, SensorReading};
use crate::sensor::rules::AlertKind;
use bytes::Bytes;

fn reading(device: &str, sequence: u64, celsius: f64) -> SensorReading {
    SensorReading {
        schema_version: SCHEMA_VERSION,
        device_id: device.to_string(),
        device_type: DeviceType::Temperature,
        run_id: "run-1".to_string(),
        sequence,
        timestamp: DateTime::from_timestamp(1_800_000_000 + sequence as i64, 0).unwrap(),
        value: celsius,
        unit: DeviceType::Temperature.unit().to_string(),
        location: Location {
            site: "site-01".into(),
            zone: "zone-01".into(),
            latitude: 52.5,
            longitude: 13.4,
        },
        battery_level: 80.0,
        signal_strength: -60,
        firmware_version: "2.1.0".into(),
        status: DeviceStatus::Ok,
        is_anomaly: celsius > 45.0,
        anomaly_kind: (celsius > 45.0).then(|| AnomalyKind::of(DeviceType::Temperature)),
        fault: None,
    }
}

fn record(offset: i64, key: &str, value: Vec<u8>) -> ConsumedRecord {
    ConsumedRecord {
        topic: Arc::from("iot-sensor-data"),
        partition: 3,
        offset,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::from(value)),
        headers: [("trace", "abc")].into_iter().collect(),
        timestamp: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    }
}

fn of(reading: &SensorReading, offset: i64) -> ConsumedRecord {
    record(offset, &reading.device_id, reading.to_json())
}

fn processor(
    cooldown: Duration,
) -> (
    ReadingProcessor<MemorySink>,
    MemorySink,
    Arc<ProcessingStats>,
) {
    let sink = MemorySink::new();
    let stats = Arc::new(ProcessingStats::default());
    let settings = AlertSettings {
        cooldown,
        ..AlertSettings::default()
    };
    let processor = ReadingProcessor::new(sink.clone(), settings, Arc::clone(&stats), None);
    (processor, sink, stats)
}

#[tokio::test]
async fn a_malformed_record_becomes_a_dead_letter_with_its_reason_and_original_bytes() {
    let (mut processor, sink, stats) = processor(Duration::from_secs(300));
    processor
        .process(record(7, "temperature-000001", b"{not json".to_vec()))
        .await;
    processor.flush().await.unwrap();

    sink.read(|r| {
        assert_eq!(r.dead_letters.len(), 1);
        let letter = &r.dead_letters[0];
        assert_eq!(letter.reason, RejectReason::NotJson);
        assert!(!letter.detail.is_empty());
        assert_eq!(letter.record.value.as_deref(), Some(&b"{not json"[..]));
        assert_eq!(letter.record.offset, 7);
        assert_eq!(letter.record.headers.get("trace"), Some(&b"abc"[..]));
        assert!(r.alerts.is_empty());
    });
    assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 1);
    assert_eq!(stats.readings.load(Ordering::Relaxed), 0);
    assert_eq!(processor.dead_letter_reasons()[&RejectReason::NotJson], 1);
}

#[tokio::test]
async fn a_reading_whose_key_is_another_device_is_refused() {
    let (mut processor, sink, _) = processor(Duration::from_secs(300));
    let valid = reading("temperature-000001", 1, 21.0);
    processor
        .process(record(0, "temperature-000002", valid.to_json()))
        .await;
    sink.read(|r| assert_eq!(r.dead_letters[0].reason, RejectReason::KeyMismatch));
}

#[tokio::test]
async fn a_duplicate_reading_is_dropped_and_raises_no_second_alert() {
    let (mut processor, sink, stats) = processor(Duration::ZERO);
    let hot = reading("temperature-000001", 1, 60.0);
    processor.process(of(&hot, 10)).await;
    processor.process(of(&hot, 11)).await;

    assert_eq!(stats.readings.load(Ordering::Relaxed), 1);
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 1);
    sink.read(|r| {
        assert_eq!(
            r.alerts.len(),
            1,
            "with no cooldown, only the repeat could alert"
        )
    });
}

#[tokio::test]
async fn a_breach_makes_one_alert_naming_its_source_record() {
    let (mut processor, sink, stats) = processor(Duration::from_secs(300));
    processor
        .process(of(&reading("temperature-000001", 1, 21.0), 0))
        .await;
    processor
        .process(of(&reading("temperature-000001", 2, 60.0), 1))
        .await;

    sink.read(|r| {
        assert_eq!(r.alerts.len(), 1);
        let alert = &r.alerts[0];
        assert_eq!(alert.kind, AlertKind::ExtremeTemperature);
        assert_eq!(alert.device_id, "temperature-000001");
        assert_eq!(alert.value, 60.0);
        assert_eq!(alert.sequence, 2);
        let source = alert.source.as_ref().unwrap();
        assert_eq!((source.partition, source.offset), (3, 1));
    });
    assert_eq!(stats.alerts.load(Ordering::Relaxed), 1);
    assert_eq!(stats.alert_quality().true_positives, 1);
}

#[tokio::test]
async fn a_repeat_within_the_suppression_window_makes_no_alert_and_is_counted() {
    let (mut processor, sink, stats) = processor(Duration::from_secs(300));
    for sequence in 1..=3 {
        let hot = reading("temperature-000001", sequence, 60.0);
        processor.process(of(&hot, sequence as i64)).await;
    }
    sink.read(|r| assert_eq!(r.alerts.len(), 1));
    assert_eq!(stats.alerts_suppressed.load(Ordering::Relaxed), 2);
    assert_eq!(
        stats.alert_quality().true_positives,
        3,
        "quality counts every reading a rule fired on, sent or suppressed"
    );
}

#[tokio::test]
async fn records_a_previous_owner_alerted_from_are_not_alerted_again() {
    let sink = MemorySink::new();
    let stats = Arc::new(ProcessingStats::default());
    let mut first = ReadingProcessor::new(
        sink.clone(),
        AlertSettings::default(),
        Arc::clone(&stats),
        None,
    )
    .resuming_from_sink("iot-sensor-data");
    first.partitions_assigned(&[(3, 0)]).await;
    first
        .process(of(&reading("temperature-000001", 1, 60.0), 5))
        .await;
    first.flush().await.unwrap();
    // The owner crashed before committing: its successor reads offset 5 again.
    let mut successor = ReadingProcessor::new(
        sink.clone(),
        AlertSettings::default(),
        Arc::clone(&stats),
        None,
    )
    .resuming_from_sink("iot-sensor-data");
    successor.partitions_assigned(&[(3, 0)]).await;
    successor
        .process(of(&reading("temperature-000001", 1, 60.0), 5))
        .await;

    sink.read(|r| assert_eq!(r.alerts.len(), 1));
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn every_outcome_reaches_the_observer() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let observer: ProcessingObserver = {
        let seen = Arc::clone(&seen);
        Arc::new(move |event: &ProcessingEvent| {
            let name = match event {
                ProcessingEvent::Reading { .. } => "reading",
                ProcessingEvent::Duplicate { .. } => "duplicate",
                ProcessingEvent::DeadLetter { .. } => "dead letter",
                ProcessingEvent::Alert(_) => "alert",
            };
            seen.lock().unwrap().push(name);
        })
    };
    let mut processor = ReadingProcessor::new(
        MemorySink::new(),
        AlertSettings::default(),
        Arc::default(),
        Some(observer),
    );
    let hot = reading("temperature-000001", 1, 60.0);
    processor.process(of(&hot, 0)).await;
    processor.process(of(&hot, 1)).await;
    processor
        .process(record(2, "x", b"not a reading".to_vec()))
        .await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["reading", "alert", "duplicate", "dead letter"]
    );
}
