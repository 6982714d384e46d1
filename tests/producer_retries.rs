//! A batch retried after its acknowledgement was lost is written once, in its
//! place: the producer's idempotent numbering at work, checked with Kafka's
//! own tools. This binary freezes brokers on purpose, so it has a cluster of its own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrocloud::kafka::producer::{Delivery, ProducerSettings};
use metrocloud::kafka::topics::{TopicSpec, ensure_topic};

const RECORDS: u32 = 3_000;

fn text(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "tool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_retried_while_the_followers_were_frozen_are_stored_once_and_in_order() {
    let cluster = common::dedicated();
    let local = cluster.local();
    let admin = cluster.admin();
    let topic = common::unique_topic("retries");
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 1,
        replication_factor: 3,
        min_insync_replicas: 2,
    };
    ensure_topic(&admin, &spec).await.expect("topic created");
    let metadata = admin.metadata(Some(&[&topic])).await.expect("metadata");
    let partition = &metadata.topic(&topic).expect("topic").partitions[0];
    let followers: Vec<i32> = partition
        .replicas
        .iter()
        .copied()
        .filter(|&id| id != partition.leader)
        .collect();
    assert_eq!(followers.len(), 2);

    // Answers are overdue after 2 s: while both followers are frozen, no
    // batch reaches acks=all, and every batch the leader wrote is sent again.
    let settings = ProducerSettings {
        request_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(100),
        retry_backoff_max: Duration::from_millis(500),
        ..ProducerSettings::default()
    };
    let acked: Arc<Mutex<Vec<(u32, i64)>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = {
        let (acked, failed) = (Arc::clone(&acked), Arc::clone(&failed));
        move |id: u32, delivery: Delivery| match delivery {
            Delivery::Acked { offset, .. } => acked.lock().unwrap().push((id, offset)),
            Delivery::Failed { reason, .. } => failed.lock().unwrap().push(reason),
        }
    };
    let producer = common::numbered_producer(&cluster, &topic, &settings, listener).await;
    let stats = producer.stats();

    let sending = tokio::spawn(async move {
        for id in 0..RECORDS {
            producer
                .send(common::numbered_record(id))
                .await
                .expect("send");
            if id % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        producer.flush().await;
        producer.close().await
    });

    tokio::time::sleep(Duration::from_millis(400)).await;
    for &id in &followers {
        local.pause_node(id).await.expect("freeze a follower");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for &id in &followers {
        local.resume_node(id).await.expect("thaw a follower");
    }
    let summary = tokio::time::timeout(Duration::from_secs(120), sending)
        .await
        .expect("every record delivered within 2 minutes")
        .expect("sender");

    assert!(
        failed.lock().unwrap().is_empty(),
        "failures: {:?}",
        failed.lock().unwrap()
    );
    assert_eq!(summary.acked, u64::from(RECORDS));
    assert!(
        summary.retries > 0 && stats.snapshot().retries > 0,
        "the frozen followers made the producer send batches again"
    );

    // Kafka's own tools: the log ends after exactly RECORDS records, and
    // reading it from the start gives each record once, in the order sent.
    let offsets =
        text(&cluster.kafka_tool("kafka-get-offsets", &["--topic", &topic, "--time", "-1"]));
    assert_eq!(offsets.trim(), format!("{topic}:0:{RECORDS}"));
    let consumed = text(&cluster.kafka_tool(
        "kafka-console-consumer",
        &[
            "--topic",
            &topic,
            "--from-beginning",
            "--max-messages",
            &RECORDS.to_string(),
            "--timeout-ms",
            "30000",
        ],
    ));
    let read: Vec<&str> = consumed.lines().collect();
    let sent: Vec<String> = (0..RECORDS).map(|id| format!("{id:08}")).collect();
    assert_eq!(read, sent, "every record once, in order");

    // Each acknowledgement names the offset the record was stored at.
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    let offsets: Vec<i64> = acked.iter().map(|&(_, offset)| offset).collect();
    let expected: Vec<i64> = (0..i64::from(RECORDS)).collect();
    assert_eq!(offsets, expected);
}
