//! The producer delivers every simulated reading, in device order, on Kafka's partition for
//! its key, and delivers or fails everything it holds when asked to stop.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use metrocloud::kafka::partitioner::partition_for_key;
use metrocloud::kafka::producer::{Delivery, Producer, ProducerSettings};
use metrocloud::pipeline::sources::simulator::{ReadingId, run_ingest};
use metrocloud::sensor::device::DeviceType;
use metrocloud::sensor::reading::SensorReading;
use metrocloud::sensor::simulator::{Fleet, SimulatorSettings};

fn fleet(num_devices: u32, interval: Duration, seed: u64) -> Fleet {
    let settings = SimulatorSettings {
        num_devices,
        interval,
        device_types: DeviceType::ALL.to_vec(),
        anomaly_probability: 0.05,
        seed,
        fault_probability: 0.0,
        fault_kinds: metrocloud::sensor::fault::FaultKind::ALL.to_vec(),
    };
    Fleet::new(&settings, Utc::now())
}

type Acks = Arc<Mutex<Vec<(ReadingId, Delivery)>>>;

async fn producer(cluster: &common::TestCluster, topic: &str, acks: &Acks) -> Producer<ReadingId> {
    let acks = Arc::clone(acks);
    common::reading_producer(cluster, topic, move |id, delivery| {
        acks.lock().unwrap().push((id, delivery))
    })
    .await
}

#[tokio::test]
async fn every_reading_is_acked_once_stored_once_and_in_device_order_on_its_keys_partition() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "ingest").await;
    let acks: Acks = Arc::default();
    let producer = producer(cluster, &topic, &acks).await;

    // 200 devices, 10 readings a second each: 5,000 readings in about 2.5 s.
    let summary = run_ingest(
        fleet(200, Duration::from_millis(100), 1),
        producer,
        Some(5_000),
        CancellationToken::new(),
    )
    .await
    .expect("ingest");
    assert_eq!(summary.generated, 5_000);
    assert_eq!(summary.producer.sent, 5_000);
    assert_eq!(summary.producer.acked, 5_000);
    assert_eq!(summary.producer.failed, 0);

    let acks = acks.lock().unwrap().clone();
    assert_eq!(acks.len(), 5_000);
    let acked: HashSet<(String, u64)> = acks
        .iter()
        .map(|(id, delivery)| {
            assert!(matches!(delivery, Delivery::Acked { .. }), "{delivery:?}");
            (id.device_id().to_string(), id.sequence)
        })
        .collect();
    assert_eq!(acked.len(), 5_000, "each reading acknowledged once");

    let stored = common::read_all(&cluster.bootstrap, &topic, 6).await;
    assert_eq!(stored.len(), 5_000);
    assert_eq!(stored_in_device_order(&stored), acked);
}

/// Checks that every stored reading sits on its key's partition with the
/// current schema header, once, and that each device's readings follow one
/// another from its first; returns the (device, sequence) pairs stored.
fn stored_in_device_order(
    stored: &[(i32, rskafka::record::RecordAndOffset)],
) -> HashSet<(String, u64)> {
    let mut last_sequence: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (partition, record) in stored {
        let key = record.record.key.as_deref().expect("key");
        assert_eq!(*partition, partition_for_key(key, 6));
        let reading: SensorReading =
            serde_json::from_slice(record.record.value.as_deref().expect("value")).expect("JSON");
        assert_eq!(key, reading.device_id.as_bytes());
        assert_eq!(
            record
                .record
                .headers
                .get("schema_version")
                .map(Vec::as_slice),
            Some(&b"1"[..])
        );
        let expected = match last_sequence.insert(reading.device_id.clone(), reading.sequence) {
            Some(previous) => previous + 1,
            None => 0,
        };
        assert_eq!(
            reading.sequence, expected,
            "{} out of order at offset {} of partition {partition}",
            reading.device_id, record.offset
        );
        assert!(seen.insert((reading.device_id, reading.sequence)));
    }
    seen
}

/// A new topic's partitions are led by brokers that learn so a moment after
/// the topic exists: the first batches meet "not the leader" while later ones
/// may already be written. A leader that has never seen the producer would
/// take any numbering, so the order must hold without its help.
#[tokio::test]
async fn readings_sent_the_moment_a_topic_exists_are_stored_in_device_order() {
    let cluster = common::shared();
    for round in 0..6 {
        let topic = common::unique_topic("fresh");
        let configs = [("min.insync.replicas", "2".to_string())];
        cluster
            .admin()
            .create_topic(&topic, 6, 3, &configs)
            .await
            .expect("topic created");
        let acks: Acks = Arc::default();
        let producer = producer(cluster, &topic, &acks).await;
        // 120 devices at 100 Hz: 2,400 readings in a fifth of a second, many small batches at once.
        let summary = run_ingest(
            fleet(120, Duration::from_millis(10), 10 + round),
            producer,
            Some(2_400),
            CancellationToken::new(),
        )
        .await
        .expect("ingest");
        assert_eq!(summary.producer.acked, 2_400, "{summary:?}");
        let stored = common::read_all(&cluster.bootstrap, &topic, 6).await;
        assert_eq!(stored.len(), 2_400);
        let acked: HashSet<(String, u64)> = acks
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| (id.device_id().to_string(), id.sequence))
            .collect();
        assert_eq!(stored_in_device_order(&stored), acked);
    }
}

#[tokio::test]
async fn shutdown_delivers_every_reading_generated_before_it() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "flush").await;
    let acks: Acks = Arc::default();
    let producer = producer(cluster, &topic, &acks).await;

    // 2,000 devices at 20 Hz: 40,000 readings a second offered, more than this cluster takes.
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
    });
    let summary = run_ingest(
        fleet(2_000, Duration::from_millis(50), 2),
        producer,
        None,
        shutdown,
    )
    .await
    .expect("ingest");

    assert!(summary.generated > 1_000, "{summary:?}");
    assert_eq!(summary.producer.sent, summary.generated);
    assert_eq!(
        summary.producer.acked + summary.producer.failed,
        summary.generated
    );
    assert_eq!(summary.producer.failed, 0);
    assert_eq!(acks.lock().unwrap().len() as u64, summary.generated);
    let stored = common::read_all(&cluster.bootstrap, &topic, 6).await;
    assert_eq!(stored.len() as u64, summary.producer.acked);
}

#[tokio::test]
async fn our_partition_for_a_key_is_the_one_kafkas_java_producer_chooses() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "partitioning").await;
    let keys: Vec<String> = (0..300)
        .map(|i| match i % 3 {
            0 => format!("temperature-{i:06}"),
            1 => format!("device-{i}"),
            _ => format!("k{}", "x".repeat(i % 17)),
        })
        .collect();
    let input: String = keys.iter().map(|k| format!("{k}|v\n")).collect();
    cluster.kafka_tool_with_input(
        "kafka-console-producer",
        &[
            "--topic",
            &topic,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=|",
        ],
        &input,
    );
    let stored = common::read_all(&cluster.bootstrap, &topic, 6).await;
    assert_eq!(stored.len(), keys.len());
    for (partition, record) in stored {
        let key = record.record.key.expect("key");
        assert_eq!(
            partition,
            partition_for_key(&key, 6),
            "key {}",
            String::from_utf8_lossy(&key)
        );
    }
}

#[tokio::test]
async fn with_a_request_spacing_records_arriving_meanwhile_share_the_next_request() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "spacing").await;
    let spacing = Duration::from_millis(250);
    let settings = ProducerSettings {
        request_spacing: spacing,
        ..ProducerSettings::default()
    };
    let acked: Arc<Mutex<Vec<(u32, i64)>>> = Arc::default();
    let listener = {
        let acked = Arc::clone(&acked);
        move |id: u32, delivery: Delivery| {
            if let Delivery::Acked { offset, .. } = delivery {
                acked.lock().unwrap().push((id, offset));
            }
        }
    };
    let producer = common::numbered_producer(cluster, &topic, &settings, listener).await;

    // One device, so one partition and one broker: a record every 10 ms for 1.5 s.
    let started = tokio::time::Instant::now();
    for id in 0..150u32 {
        producer
            .send(common::numbered_record(id))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producer.flush().await;
    let elapsed = started.elapsed();
    let summary = producer.close().await;

    assert_eq!(summary.acked, 150, "{summary:?}");
    // Each request carries this partition's batch at most: one request per
    // spacing means as many batches, plus the first, sent at once.
    let most = (elapsed.as_millis() / spacing.as_millis()) as u64 + 1;
    assert!(
        summary.batches <= most,
        "{} batches in {elapsed:?}, at most {most} requests with a {spacing:?} spacing",
        summary.batches
    );
    let mut acked = acked.lock().unwrap().clone();
    acked.sort_by_key(|&(_, offset)| offset);
    let ids: Vec<u32> = acked.iter().map(|&(id, _)| id).collect();
    assert_eq!(
        ids,
        (0..150).collect::<Vec<_>>(),
        "stored in the order sent"
    );
}

#[tokio::test]
async fn a_full_batch_goes_at_once_whatever_the_request_spacing() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "spacing-full").await;
    // Far longer than the test: a batch that waited for it would show.
    let spacing = Duration::from_secs(60);
    let settings = ProducerSettings {
        request_spacing: spacing,
        batch_bytes: 2048,
        ..ProducerSettings::default()
    };
    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    let listener = {
        let acked = Arc::clone(&acked);
        move |id: u32, delivery: Delivery| {
            if let Delivery::Acked { .. } = delivery {
                acked.lock().unwrap().push(id);
            }
        }
    };
    let producer = common::numbered_producer(cluster, &topic, &settings, listener).await;

    // One device, one partition: 400 records at once fill several batches.
    for id in 0..400u32 {
        producer
            .send(common::numbered_record(id))
            .await
            .expect("send");
    }
    common::eventually(
        Duration::from_secs(30),
        "the full batches acknowledged without waiting for the spacing",
        || {
            let acked = Arc::clone(&acked);
            async move { acked.lock().unwrap().len() >= 300 }
        },
    )
    .await;

    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked,
        (0..acked.len() as u32).collect::<Vec<_>>(),
        "acknowledged in the order sent"
    );
}
