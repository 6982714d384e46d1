//! Worker specs and the readings file, without a cluster.

use super::*;

#[test]
fn a_run_is_sustained_only_when_neither_producer_nor_consumer_fell_behind() {
    let outcome = |behind, lag| EndToEndOutcome {
        rate: 10_000,
        offered: 100_000,
        sent: 100_000 - behind,
        acked: 100_000 - behind,
        processed: 100_000 - behind - lag,
        rejected: 0,
        behind_at_end: behind,
        lag_at_end: lag,
        p50_us: 1,
        p99_us: 1,
        p999_us: 1,
        max_us: 1,
        ack_p50_us: 1,
        ack_p99_us: 1,
    };
    assert!(outcome(0, 120).sustained());
    assert!(
        outcome(1_000, 1_000).sustained(),
        "a tenth of a second is the limit"
    );
    assert!(!outcome(1_001, 0).sustained());
    assert!(!outcome(0, 1_001).sustained());
}

#[test]
fn worker_specs_travel_as_json() {
    let spec = WorkerSpec::Produce {
        bootstrap: vec!["127.0.0.1:9092".to_string()],
        topic: "t".to_string(),
        records: 10,
        payload: Payload::Size(100),
    };
    let back: WorkerSpec = serde_json::from_str(&json(&spec)).unwrap();
    assert!(matches!(
        back,
        WorkerSpec::Produce {
            records: 10,
            payload: Payload::Size(100),
            ..
        }
    ));
}

#[tokio::test]
async fn the_fleet_makes_one_reading_per_device_per_second() {
    let outcome = simulate(200, 1.0).await;
    assert!(
        (190..=201).contains(&outcome.readings),
        "{} readings from 200 devices in one second",
        outcome.readings
    );
    assert!(outcome.bytes > outcome.readings * 100);
}
