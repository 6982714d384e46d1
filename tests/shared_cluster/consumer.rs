//! Group members share the partitions, commit only what they processed, and hand
//! partitions over without gaps; Kafka's own tools see the group and its lag.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use metrocloud::kafka::consumer::{
    ConsumedRecord, ConsumerSpec, ConsumerStats, GroupConsumer, RecordProcessor,
};
use metrocloud::kafka::consumer::{ConsumerSettings, OffsetReset};
use metrocloud::pipeline::sources::simulator::run_ingest;
use metrocloud::sensor::device::DeviceType;
use metrocloud::sensor::simulator::{Fleet, SimulatorSettings};

type Seen = Arc<Mutex<Vec<(i32, i64)>>>;

type Times = Arc<Mutex<Vec<tokio::time::Instant>>>;

/// Remembers every (partition, offset) it was given, and when.
struct Recorder(Seen, Times);

impl RecordProcessor for Recorder {
    async fn process(&mut self, record: ConsumedRecord) {
        self.0
            .lock()
            .unwrap()
            .push((record.partition, record.offset));
        self.1.lock().unwrap().push(tokio::time::Instant::now());
    }

    async fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Produces `count` simulated readings to `topic`.
async fn produce(cluster: &common::TestCluster, topic: &str, count: u64, seed: u64) {
    let settings = SimulatorSettings {
        num_devices: 300,
        interval: Duration::from_millis(100),
        device_types: DeviceType::ALL.to_vec(),
        anomaly_probability: 0.05,
        seed,
        fault_probability: 0.0,
        fault_kinds: metrocloud::sensor::fault::FaultKind::ALL.to_vec(),
    };
    let producer = common::reading_producer(cluster, topic, |_, _| {}).await;
    let summary = run_ingest(
        Fleet::new(&settings, Utc::now()),
        producer,
        Some(count),
        CancellationToken::new(),
    )
    .await
    .expect("ingest");
    assert_eq!(summary.producer.acked, count);
}

struct Member {
    stop: CancellationToken,
    stats: Arc<ConsumerStats>,
    task: JoinHandle<()>,
    times: Times,
}

impl Member {
    /// Partitions the member owns now.
    fn owned(&self) -> u64 {
        self.stats
            .owned_partitions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("consumer task");
    }
}

async fn member(cluster: &common::TestCluster, topic: &str, group: &str, seen: &Seen) -> Member {
    let spec = ConsumerSpec {
        bootstrap: cluster.bootstrap.clone().into(),
        topic: topic.to_string(),
        group_id: group.to_string(),
        auto_offset_reset: OffsetReset::Earliest,
        settings: ConsumerSettings {
            commit_interval: Duration::from_millis(500),
            ..ConsumerSettings::default()
        },
    };
    let stop = CancellationToken::new();
    let times = Times::default();
    let consumer =
        GroupConsumer::connect(spec, Recorder(Arc::clone(seen), Arc::clone(&times)), &stop)
            .await
            .expect("consumer")
            .expect("not cancelled");
    let stats = consumer.stats();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        consumer.run(token).await.expect("consumer ran");
    });
    Member {
        stop,
        stats,
        task,
        times,
    }
}

/// The log-end offset of each partition.
async fn log_ends(cluster: &common::TestCluster, topic: &str) -> BTreeMap<i32, i64> {
    let stored = common::read_all(&cluster.bootstrap, topic, 6).await;
    let mut ends: BTreeMap<i32, i64> = (0..6).map(|p| (p, 0)).collect();
    for (partition, record) in stored {
        let end = ends.entry(partition).or_default();
        *end = (*end).max(record.offset + 1);
    }
    ends
}

/// Asserts that every offset below each log end was processed at least once.
fn assert_no_gap(seen: &Seen, ends: &BTreeMap<i32, i64>) -> usize {
    let seen = seen.lock().unwrap();
    let distinct: BTreeSet<(i32, i64)> = seen.iter().copied().collect();
    for (&partition, &end) in ends {
        for offset in 0..end {
            assert!(
                distinct.contains(&(partition, offset)),
                "offset {offset} of partition {partition} never processed"
            );
        }
    }
    seen.len() - distinct.len()
}

/// `kafka-consumer-groups --describe` rows of `topic`: partition -> (current offset, log end, lag).
fn describe_group(
    cluster: &common::TestCluster,
    group: &str,
    topic: &str,
) -> BTreeMap<i32, (String, String, String)> {
    let output = cluster.kafka_tool("kafka-consumer-groups", &["--describe", "--group", group]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let header = text
        .lines()
        .find(|l| l.contains("CURRENT-OFFSET"))
        .unwrap_or_else(|| panic!("no header in:\n{text}"));
    let columns: Vec<&str> = header.split_whitespace().collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no {name} in {header}"))
    };
    let (partition, current, end, lag) = (
        column("PARTITION"),
        column("CURRENT-OFFSET"),
        column("LOG-END-OFFSET"),
        column("LAG"),
    );
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.len() >= columns.len() && cells.contains(&topic))
        .map(|cells| {
            (
                cells[partition].parse().unwrap(),
                (
                    cells[current].to_string(),
                    cells[end].to_string(),
                    cells[lag].to_string(),
                ),
            )
        })
        .collect()
}

/// Asserts that Kafka's `kafka-consumer-groups --describe` shows the group's committed
/// offset at the log end, lag 0, on each of the 6 partitions.
fn assert_group_caught_up(
    cluster: &common::TestCluster,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) {
    let rows = describe_group(cluster, group, topic);
    assert_eq!(rows.len(), 6, "{rows:?}");
    for (partition, (current, end, lag)) in rows {
        assert_eq!(
            current,
            ends[&partition].to_string(),
            "partition {partition}"
        );
        assert_eq!(end, ends[&partition].to_string());
        assert_eq!(lag, "0");
    }
}

#[tokio::test]
async fn a_member_processes_every_record_once_and_kafka_consumer_groups_shows_lag_0() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "consume").await;
    produce(cluster, &topic, 3_000, 1).await;
    let group = common::unique_topic("group");
    let seen: Seen = Arc::default();
    let member = member(cluster, &topic, &group, &seen).await;
    common::eventually(
        Duration::from_secs(60),
        "3,000 records processed",
        || async { seen.lock().unwrap().len() >= 3_000 },
    )
    .await;
    let stats = Arc::clone(&member.stats);
    member.stop().await;
    assert_eq!(
        stats
            .owned_partitions
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "partitions handed back"
    );

    let ends = log_ends(cluster, &topic).await;
    assert_eq!(ends.values().sum::<i64>(), 3_000);
    assert_eq!(assert_no_gap(&seen, &ends), 0, "no record processed twice");

    assert_group_caught_up(cluster, &group, &topic, &ends);
}

#[tokio::test]
async fn a_new_member_resumes_from_the_committed_offsets() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "resume").await;
    let group = common::unique_topic("group");
    produce(cluster, &topic, 1_000, 2).await;
    let first: Seen = Arc::default();
    let member_one = member(cluster, &topic, &group, &first).await;
    common::eventually(
        Duration::from_secs(60),
        "1,000 records processed",
        || async { first.lock().unwrap().len() >= 1_000 },
    )
    .await;
    member_one.stop().await;

    produce(cluster, &topic, 500, 3).await;
    let second: Seen = Arc::default();
    let member_two = member(cluster, &topic, &group, &second).await;
    common::eventually(
        Duration::from_secs(60),
        "500 new records processed",
        || async { second.lock().unwrap().len() >= 500 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    member_two.stop().await;

    let first_set: BTreeSet<_> = first.lock().unwrap().iter().copied().collect();
    let second_set: BTreeSet<_> = second.lock().unwrap().iter().copied().collect();
    assert_eq!(first_set.len(), 1_000);
    assert_eq!(
        second_set.len(),
        500,
        "only records after the committed offsets"
    );
    assert!(first_set.is_disjoint(&second_set));
}

#[tokio::test]
async fn two_members_split_the_partitions_and_the_survivor_takes_over_without_a_gap() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "split").await;
    let group = common::unique_topic("group");
    produce(cluster, &topic, 1_500, 4).await;
    let seen: Seen = Arc::default();
    let a = member(cluster, &topic, &group, &seen).await;
    common::eventually(
        Duration::from_secs(60),
        "member a owns all 6 partitions",
        || async { a.owned() == 6 },
    )
    .await;
    let b = member(cluster, &topic, &group, &seen).await;
    common::eventually(
        Duration::from_secs(60),
        "the partitions are split 3 and 3",
        || async { a.owned() == 3 && b.owned() == 3 },
    )
    .await;

    produce(cluster, &topic, 1_500, 5).await;
    b.stop().await;
    common::eventually(
        Duration::from_secs(60),
        "member a owns all 6 partitions again",
        || async { a.owned() == 6 },
    )
    .await;
    produce(cluster, &topic, 1_500, 6).await;
    let ends = log_ends(cluster, &topic).await;
    common::eventually(
        Duration::from_secs(60),
        "every record processed",
        || async {
            let distinct: BTreeSet<(i32, i64)> = seen.lock().unwrap().iter().copied().collect();
            distinct.len() as i64 == ends.values().sum::<i64>()
        },
    )
    .await;
    a.stop().await;
    let duplicates = assert_no_gap(&seen, &ends);
    assert_eq!(
        duplicates, 0,
        "handing over commits first, so nothing is read twice"
    );
}

#[tokio::test]
async fn a_crashed_member_is_replaced_and_only_its_last_commit_interval_is_read_again() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "crash").await;
    let group = common::unique_topic("group");

    // Readings keep arriving while the first member crashes and the second takes over.
    let producing = CancellationToken::new();
    let producer = common::reading_producer(cluster, &topic, |_, _| {}).await;
    let settings = SimulatorSettings {
        num_devices: 200,
        interval: Duration::from_millis(100),
        device_types: DeviceType::ALL.to_vec(),
        anomaly_probability: 0.05,
        seed: 7,
        fault_probability: 0.0,
        fault_kinds: metrocloud::sensor::fault::FaultKind::ALL.to_vec(),
    };
    let ingest = tokio::spawn(run_ingest(
        Fleet::new(&settings, Utc::now()),
        producer,
        None,
        producing.clone(),
    ));

    let first: Seen = Arc::default();
    let a = member(cluster, &topic, &group, &first).await;
    common::eventually(
        Duration::from_secs(60),
        "the first member processed 2,000 records",
        || async { first.lock().unwrap().len() >= 2_000 },
    )
    .await;
    // Let it run (and commit) a while on live traffic, then crash it: no last
    // commit, no goodbye to the group.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.task.abort();
    let crashed_at = tokio::time::Instant::now();
    let _ = a.task.await;
    let first_times = a.times.lock().unwrap().clone();

    let second: Seen = Arc::default();
    let b = member(cluster, &topic, &group, &second).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    producing.cancel();
    let summary = ingest.await.expect("ingest task").expect("ingest");
    assert_eq!(summary.producer.failed, 0);

    let ends = log_ends(cluster, &topic).await;
    let total: i64 = ends.values().sum();
    assert_eq!(total as u64, summary.producer.acked);
    // The coordinator gives the crashed member's partitions away once its session expires.
    common::eventually(
        Duration::from_secs(120),
        "every record processed by one member or the other",
        || async {
            let mut all: BTreeSet<(i32, i64)> = first.lock().unwrap().iter().copied().collect();
            all.extend(second.lock().unwrap().iter().copied());
            all.len() as i64 == total
        },
    )
    .await;
    b.stop().await;

    let first_seen = first.lock().unwrap().clone();
    let second_set: BTreeSet<(i32, i64)> = second.lock().unwrap().iter().copied().collect();
    let commit_interval = Duration::from_millis(500);
    let mut read_again = 0;
    for (record, at) in first_seen.iter().zip(&first_times) {
        if second_set.contains(record) {
            read_again += 1;
            // Only what the crashed member processed after its last commit comes back:
            // at most one commit interval (plus one in flight) before the crash.
            assert!(
                crashed_at.duration_since(*at) <= commit_interval * 2,
                "{record:?} was processed {:?} before the crash yet read again",
                crashed_at.duration_since(*at)
            );
        }
    }
    assert!(
        read_again < first_seen.len(),
        "the replacement started from committed offsets"
    );

    assert_group_caught_up(cluster, &group, &topic, &ends);
}

/// Takes `stall` over its first record, then remembers each record like [`Recorder`].
struct SlowFirstBatch {
    seen: Seen,
    stall: Option<Duration>,
}

impl RecordProcessor for SlowFirstBatch {
    async fn process(&mut self, record: ConsumedRecord) {
        if let Some(stall) = self.stall.take() {
            tokio::time::sleep(stall).await;
        }
        self.seen
            .lock()
            .unwrap()
            .push((record.partition, record.offset));
    }

    async fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The group session the cluster gives consumers, as `kafka-configs` reports it.
fn group_session(cluster: &common::TestCluster) -> Duration {
    let output = cluster.kafka_tool(
        "kafka-configs",
        &[
            "--describe",
            "--entity-type",
            "brokers",
            "--entity-name",
            "1",
            "--all",
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let millis = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix("group.consumer.session.timeout.ms="))
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no group.consumer.session.timeout.ms in:\n{text}"));
    Duration::from_millis(millis)
}

#[tokio::test]
async fn a_batch_slower_than_the_group_session_does_not_cost_the_member_its_partitions() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "slow-batch").await;
    let group = format!("{topic}-group");
    produce(cluster, &topic, 600, 17).await;
    let session = group_session(cluster);
    let seen: Seen = Arc::default();
    let spec = ConsumerSpec {
        bootstrap: cluster.bootstrap.clone().into(),
        topic: topic.clone(),
        group_id: group.clone(),
        auto_offset_reset: OffsetReset::Earliest,
        settings: ConsumerSettings {
            commit_interval: Duration::from_millis(500),
            ..ConsumerSettings::default()
        },
    };
    let stop = CancellationToken::new();
    let processor = SlowFirstBatch {
        seen: Arc::clone(&seen),
        // Heartbeats that waited for this batch would come too late: the group would fence the member.
        stall: Some(session + Duration::from_secs(4)),
    };
    let consumer = GroupConsumer::connect(spec, processor, &stop)
        .await
        .expect("consumer")
        .expect("not cancelled");
    let stats = consumer.stats();
    let task = tokio::spawn(consumer.run(stop.clone()));
    common::eventually(
        session * 3 + Duration::from_secs(60),
        "all 600 records processed",
        || async { seen.lock().unwrap().len() >= 600 },
    )
    .await;

    let rejoins = stats.rejoins.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(rejoins, 0, "the member was fenced while its batch ran");
    assert_eq!(
        stats
            .owned_partitions
            .load(std::sync::atomic::Ordering::Relaxed),
        6
    );
    let ends = log_ends(cluster, &topic).await;
    assert_eq!(assert_no_gap(&seen, &ends), 0, "no record was read twice");
    stop.cancel();
    task.await.expect("consumer task").expect("consumer ran");
    assert_group_caught_up(cluster, &group, &topic, &ends);
}

/// Loses an effect in its first flush; would report every later flush durable.
struct LosesOnce {
    flushes: u32,
}

impl RecordProcessor for LosesOnce {
    async fn process(&mut self, _record: ConsumedRecord) {}

    async fn flush(&mut self) -> Result<(), String> {
        self.flushes += 1;
        match self.flushes {
            1 => Err("an effect was lost".to_string()),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn after_an_effect_is_lost_the_member_stops_and_commits_nothing_even_on_its_way_out() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "lost").await;
    let group = common::unique_topic("group");
    produce(cluster, &topic, 600, 7).await;
    let spec = ConsumerSpec {
        bootstrap: cluster.bootstrap.clone().into(),
        topic: topic.clone(),
        group_id: group.clone(),
        auto_offset_reset: OffsetReset::Earliest,
        settings: ConsumerSettings {
            commit_interval: Duration::from_millis(500),
            ..ConsumerSettings::default()
        },
    };
    let stop = CancellationToken::new();
    let consumer = GroupConsumer::connect(spec, LosesOnce { flushes: 0 }, &stop)
        .await
        .expect("consumer")
        .expect("not cancelled");
    let outcome = tokio::time::timeout(Duration::from_secs(60), consumer.run(stop)).await;
    let error = outcome
        .expect("the member stops by itself")
        .err()
        .expect("with an error");
    assert!(error.to_string().contains("an effect was lost"), "{error}");

    // The next member of the group is given every record again.
    let seen: Seen = Arc::default();
    let next = member(cluster, &topic, &group, &seen).await;
    common::eventually(
        Duration::from_secs(60),
        "600 records read again",
        || async { seen.lock().unwrap().len() >= 600 },
    )
    .await;
    next.stop().await;
    let ends = log_ends(cluster, &topic).await;
    assert_eq!(assert_no_gap(&seen, &ends), 0);
}
