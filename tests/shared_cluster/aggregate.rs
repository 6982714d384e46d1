//! The aggregation stage on a real cluster: the minute aggregates on their
//! topic are exactly what a recomputation from the stored readings gives,
//! each (device, minute) once, also after a member is killed mid-way and
//! another resumes from the last commit; and the storage stage keeps them,
//! each once, in Parquet and in PostgreSQL.

use crate::common;
use crate::common::postgres::TestPostgres;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use tokio_util::sync::CancellationToken;

use metrocloud::config::Config;
use metrocloud::kafka::Headers;
use metrocloud::kafka::producer::{OutgoingRecord, Producer};
use metrocloud::pipeline::aggregate::{AggregationStats, aggregation_consumer, run_aggregation};
use metrocloud::pipeline::sinks::kafka::counting_listener;
use metrocloud::pipeline::store::{StorageStats, run_storage};
use metrocloud::pipeline::wiring;
use metrocloud::sensor::aggregate::MinuteAggregate;
use metrocloud::sensor::reading::SensorReading;
use metrocloud::sensor::simulator::Fleet;
use metrocloud::store::{StoreKind, layout};

const GRACE_SEC: i64 = 10;

fn config(cluster: &common::TestCluster, data_dir: &Path) -> Config {
    let topic = common::unique_topic("aggregate");
    let vars: Vec<(String, String)> = vec![
        ("KAFKA_BOOTSTRAP_SERVERS".into(), cluster.bootstrap_list()),
        ("KAFKA_TOPIC_NAME".into(), topic.clone()),
        ("KAFKA_ALERTS_TOPIC".into(), format!("{topic}-alerts")),
        ("KAFKA_DLQ_TOPIC".into(), format!("{topic}-dlq")),
        (
            "KAFKA_AGGREGATES_TOPIC".into(),
            format!("{topic}-aggregates"),
        ),
        (
            "METROCLOUD_AGGREGATE_GROUP_ID".into(),
            format!("{topic}-aggregator"),
        ),
        (
            "METROCLOUD_AGGREGATE_GRACE_SEC".into(),
            GRACE_SEC.to_string(),
        ),
        (
            "METROCLOUD_STORE_GROUP_ID".into(),
            format!("{topic}-storage"),
        ),
        ("METROCLOUD_DATA_DIR".into(), data_dir.display().to_string()),
        ("METROCLOUD_STORE_ROLL_SEC".into(), "1".into()),
        ("KAFKA_CONSUMER_COMMIT_INTERVAL_MS".into(), "300".into()),
        ("IOT_NUM_DEVICES".into(), "60".into()),
        ("IOT_DATA_INTERVAL_SEC".into(), "5".into()),
    ];
    Config::from_vars(vars).expect("valid test configuration")
}

/// Twelve minutes of a 60-device fleet, 20 minutes ago, one reading in five
/// arriving up to 8 s behind its neighbours (within the grace).
fn readings(config: &Config) -> Vec<SensorReading> {
    let start = Utc::now() - TimeDelta::minutes(20);
    let mut fleet = Fleet::new(&config.simulator_settings(), start);
    let mut readings = Vec::new();
    while let Some(mut reading) = fleet.next_due(Duration::from_secs(12 * 60)) {
        if reading.sequence % 5 == 3 {
            reading.timestamp -= TimeDelta::milliseconds(8_000 - reading.sequence as i64 * 7);
        }
        readings.push(reading);
    }
    readings
}

async fn produce(config: &Config, readings: &[SensorReading]) {
    let failures = Arc::new(AtomicU64::new(0));
    let producer = Producer::connect(
        config.bootstrap_strings(),
        &config.topic,
        &config.producer,
        counting_listener(&failures, "reading"),
        &CancellationToken::new(),
    )
    .await
    .expect("producer");
    for reading in readings {
        let record = OutgoingRecord {
            key: Bytes::from(reading.device_id.clone()),
            value: Bytes::from(reading.to_json()),
            headers: Headers::new(),
            timestamp: Utc::now(),
            meta: (),
        };
        producer.send(record).await.expect("queued");
    }
    let snapshot = producer.close().await;
    assert_eq!(failures.load(Ordering::Relaxed), 0, "{snapshot:?}");
}

/// What an aggregate says, without where it came from.
pub(crate) type Summary = (u64, f64, f64, f64, f64, u64);

/// A minute's readings (event time, value, anomalous) in Kafka order, and their partition.
type MinuteReadings = (i32, Vec<(i64, f64, bool)>);

/// Minute aggregates computed from the Parquet store: the readings of each
/// (device, minute) in Kafka order, for the minutes their partition's latest
/// event time is past by the grace.
fn recomputed(data_dir: &Path) -> BTreeMap<(String, i64), Summary> {
    recomputed_from(stored_rows(data_dir))
}

/// A reading as the recomputation needs it: partition, offset, device, event time, value, anomalous.
type ReadingRow = (i32, i64, String, i64, f64, bool);

/// Every reading in the Parquet store.
fn stored_rows(data_dir: &Path) -> Vec<ReadingRow> {
    let mut rows = Vec::new();
    for file in layout::stored_files(&data_dir.join(layout::READINGS)).expect("files listed") {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            rows.push((
                row.get_int(18).unwrap(),
                row.get_long(19).unwrap(),
                row.get_string(0).unwrap().clone(),
                row.get_timestamp_millis(4).unwrap(),
                row.get_double(5).unwrap(),
                row.get_bool(15).unwrap(),
            ));
        }
    }
    rows
}

/// Every reading on the sensor topic.
async fn topic_rows(config: &Config) -> Vec<ReadingRow> {
    common::read_all(&config.bootstrap_strings(), &config.topic, 6)
        .await
        .into_iter()
        .map(|(partition, record)| {
            let value = record.record.value.expect("a reading");
            let reading: SensorReading = serde_json::from_slice(&value).expect("a reading's JSON");
            (
                partition,
                record.offset,
                reading.device_id,
                reading.timestamp.timestamp_millis(),
                reading.value,
                reading.is_anomaly,
            )
        })
        .collect()
}

/// Minute aggregates computed from `rows` as described above.
fn recomputed_from(mut rows: Vec<ReadingRow>) -> BTreeMap<(String, i64), Summary> {
    rows.sort_by_key(|row| (row.0, row.1));
    let mut latest: BTreeMap<i32, i64> = BTreeMap::new();
    for row in &rows {
        let mark = latest.entry(row.0).or_insert(i64::MIN);
        *mark = (*mark).max(row.3);
    }
    let mut minutes: BTreeMap<(String, i64), MinuteReadings> = BTreeMap::new();
    for (partition, _, device, time, value, anomalous) in rows {
        let minute = time.div_euclid(60_000) * 60_000;
        let entry = minutes
            .entry((device, minute))
            .or_insert((partition, Vec::new()));
        entry.1.push((time, value, anomalous));
    }
    minutes
        .into_iter()
        .filter(|((_, minute), (partition, _))| {
            minute + 60_000 + GRACE_SEC * 1_000 <= latest[partition]
        })
        .map(|(key, (_, readings))| {
            let count = readings.len() as u64;
            let min = readings.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
            let max = readings
                .iter()
                .map(|r| r.1)
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = readings.iter().map(|r| r.1).sum();
            let last_time = readings.iter().map(|r| r.0).max().unwrap();
            let last = readings.iter().rev().find(|r| r.0 == last_time).unwrap().1;
            let anomalies = readings.iter().filter(|r| r.2).count() as u64;
            (key, (count, min, max, sum / count as f64, last, anomalies))
        })
        .collect()
}

/// The aggregates on the topic, each (device, minute) with how often it is there.
async fn written(config: &Config) -> BTreeMap<(String, i64), Vec<Summary>> {
    let mut found: BTreeMap<(String, i64), Vec<Summary>> = BTreeMap::new();
    for (_, record) in
        common::read_all(&config.bootstrap_strings(), &config.aggregates_topic, 6).await
    {
        let value = record.record.value.expect("an aggregate has a value");
        let a: MinuteAggregate = serde_json::from_slice(&value).expect("an aggregate's JSON");
        found
            .entry((a.device_id, a.minute.timestamp_millis()))
            .or_default()
            .push((a.count, a.min, a.max, a.mean, a.last, a.anomalies));
    }
    found
}

/// The aggregates on the topic, after checking that no (device, minute) is there twice.
async fn written_once(config: &Config) -> BTreeMap<(String, i64), Summary> {
    let written = written(config).await;
    let twice: Vec<_> = written
        .iter()
        .filter(|(_, found)| found.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "minutes written more than once: {twice:?}"
    );
    written
        .into_iter()
        .map(|(key, found)| (key, found[0]))
        .collect()
}

#[tokio::test]
async fn aggregates_equal_a_recomputation_from_the_stored_readings_after_a_member_is_killed() {
    let cluster = common::shared();
    let data = tempfile::tempdir().unwrap();
    let config = config(cluster, data.path());
    let never = CancellationToken::new();
    wiring::ensure_pipeline_topics(&config, &never)
        .await
        .expect("topics");
    let readings = readings(&config);
    let (first, rest) = readings.split_at(readings.len() * 3 / 5);
    produce(&config, first).await;

    // The first member aggregates the first part and is killed with minutes open.
    let killed = Arc::new(AggregationStats::default());
    let consumer = aggregation_consumer(&config, &killed, &never)
        .await
        .expect("aggregation starts")
        .expect("not cancelled");
    let member = tokio::spawn(consumer.run(CancellationToken::new()));
    common::eventually(
        Duration::from_secs(60),
        "the first part aggregated",
        || async {
            killed.readings.load(Ordering::Relaxed) == first.len() as u64
                && killed.aggregates.load(Ordering::Relaxed) > 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    member.abort();
    let _ = member.await;

    produce(&config, rest).await;
    let storage = Arc::new(StorageStats::default());
    let stop = CancellationToken::new();
    let storing = tokio::spawn({
        let (config, storage, stop) = (config.clone(), Arc::clone(&storage), stop.clone());
        async move { run_storage(&config, &storage, stop).await }
    });
    let resumed = Arc::new(AggregationStats::default());
    let aggregating = tokio::spawn({
        let (config, resumed, stop) = (config.clone(), Arc::clone(&resumed), stop.clone());
        async move { run_aggregation(&config, &resumed, stop).await }
    });
    common::eventually(Duration::from_secs(90), "every reading stored", || async {
        storage.readings.store.stored.load(Ordering::Relaxed) == readings.len() as u64
    })
    .await;
    let expected = recomputed(data.path());
    assert!(
        expected.len() >= 60 * 10,
        "{} closed minutes",
        expected.len()
    );
    common::eventually(
        Duration::from_secs(60),
        "every closed minute written",
        || async { written(&config).await.len() == expected.len() },
    )
    .await;
    // Long enough for any minute written twice to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    common::eventually(
        Duration::from_secs(60),
        "every aggregate stored",
        || async {
            storage.aggregates.store.stored.load(Ordering::Relaxed) >= expected.len() as u64
        },
    )
    .await;
    stop.cancel();
    storing.await.unwrap().expect("storage stopped cleanly");
    aggregating
        .await
        .unwrap()
        .expect("aggregation stopped cleanly");

    let written = written_once(&config).await;
    let differing: Vec<_> = expected
        .iter()
        .filter(|(key, summary)| written.get(*key) != Some(summary))
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "aggregates differing from the recomputation: {differing:?}"
    );
    assert_eq!(written.len(), expected.len());
    assert!(
        resumed.readings.load(Ordering::Relaxed) < readings.len() as u64,
        "the second member resumed from a commit, not from the start"
    );
    assert_eq!(resumed.late.load(Ordering::Relaxed), 0);

    // The storage stage kept the aggregates topic too: each minute once, as written.
    let stored = stored_aggregates(data.path());
    assert_eq!(
        stored.len(),
        expected.len(),
        "a minute stored twice or missing"
    );
    let stored: BTreeMap<_, _> = stored.into_iter().collect();
    assert_eq!(stored, written);

    // `metrocloud history --aggregates` shows a device's stored minutes, oldest first.
    let device = &expected.keys().next().unwrap().0;
    let minutes: Vec<i64> = expected
        .keys()
        .filter(|(d, _)| d == device)
        .map(|(_, m)| *m)
        .collect();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["history", device, "--aggregates", "--from", "1h"])
        .env("METROCLOUD_DATA_DIR", data.path())
        .output()
        .expect("metrocloud history runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.starts_with(&format!(
            "{device}: {} stored minute aggregates",
            minutes.len()
        )),
        "{text}"
    );
    let first = chrono::DateTime::from_timestamp_millis(minutes[0]).unwrap();
    let shown: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(shown.len(), minutes.len(), "{text}");
    assert!(
        shown[0].starts_with(&first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "{text}"
    );

    crate::history_console::charts_the_stored_minutes(&config, &expected).await;

    // And in PostgreSQL, by two groups reading the topic: the second inserts nothing.
    let server = TestPostgres::start();
    for round in 0..2 {
        let mut pg = config.clone();
        pg.store.kind = StoreKind::Postgres;
        pg.store.postgres_url = Some(server.url());
        pg.store.group_id = format!("{}-postgres-{round}", config.store.group_id);
        let stats = Arc::new(StorageStats::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (pg, stats, stop) = (pg.clone(), Arc::clone(&stats), stop.clone());
            async move { run_storage(&pg, &stats, stop).await }
        });
        let aggregates = &stats.aggregates;
        common::eventually(Duration::from_secs(60), "the aggregates read", || async {
            let consumer = aggregates.consumer.lock().unwrap().clone();
            aggregates.store.rolls.load(Ordering::Relaxed) > 0
                && aggregates.store.held.load(Ordering::Relaxed) == 0
                && consumer.owned_partitions.load(Ordering::Relaxed) == 6
                && consumer.lag.load(Ordering::Relaxed) == 0
        })
        .await;
        stop.cancel();
        task.await.unwrap().expect("storage stopped cleanly");
        let inserted = aggregates.store.stored.load(Ordering::Relaxed);
        let expected_now = if round == 0 { written.len() as u64 } else { 0 };
        assert_eq!(inserted, expected_now, "round {round}");
    }
    let rows = server
        .client()
        .await
        .query(
            "SELECT device_id, minute, count, min, max, mean, last, anomalies FROM sensor_aggregates",
            &[],
        )
        .await
        .unwrap();
    let in_table: BTreeMap<(String, i64), Summary> = rows
        .iter()
        .map(|row| {
            let minute: chrono::DateTime<Utc> = row.get(1);
            let count: i64 = row.get(2);
            let anomalies: i64 = row.get(7);
            (
                (row.get(0), minute.timestamp_millis()),
                (
                    count as u64,
                    row.get(3),
                    row.get(4),
                    row.get(5),
                    row.get(6),
                    anomalies as u64,
                ),
            )
        })
        .collect();
    assert_eq!(rows.len(), written.len());
    assert_eq!(in_table, written);
}

/// The aggregates in the Parquet store, in file order.
fn stored_aggregates(data_dir: &Path) -> Vec<((String, i64), Summary)> {
    let mut found = Vec::new();
    for file in layout::stored_files(&data_dir.join(layout::AGGREGATES)).expect("files listed") {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let key = (
                row.get_string(0).unwrap().clone(),
                row.get_timestamp_millis(3).unwrap(),
            );
            let summary = (
                row.get_long(4).unwrap() as u64,
                row.get_double(5).unwrap(),
                row.get_double(6).unwrap(),
                row.get_double(7).unwrap(),
                row.get_double(8).unwrap(),
                row.get_long(9).unwrap() as u64,
            );
            found.push((key, summary));
        }
    }
    found
}

#[tokio::test]
async fn a_member_joining_and_another_leaving_hand_over_minutes_without_losing_or_repeating_one() {
    let cluster = common::shared();
    let data = tempfile::tempdir().unwrap();
    let config = config(cluster, data.path());
    let never = CancellationToken::new();
    wiring::ensure_pipeline_topics(&config, &never)
        .await
        .expect("topics");
    let readings = readings(&config);
    let (first, rest) = readings.split_at(readings.len() / 2);
    produce(&config, first).await;

    let start = |stats: &Arc<AggregationStats>| {
        let (config, stats, stop) = (config.clone(), Arc::clone(stats), CancellationToken::new());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { run_aggregation(&config, &stats, stop).await }
        });
        (stop, task)
    };
    let owned = |stats: &Arc<AggregationStats>| {
        stats
            .consumer
            .lock()
            .unwrap()
            .owned_partitions
            .load(Ordering::Relaxed)
    };
    let one = Arc::new(AggregationStats::default());
    let (stop_one, first_member) = start(&one);
    common::eventually(
        Duration::from_secs(60),
        "the first half aggregated",
        || async { one.readings.load(Ordering::Relaxed) == first.len() as u64 },
    )
    .await;
    // A second member joins: the partitions are shared out between the two.
    let two = Arc::new(AggregationStats::default());
    let (stop_two, second_member) = start(&two);
    common::eventually(Duration::from_secs(60), "partitions shared", || async {
        owned(&one) > 0 && owned(&two) > 0 && owned(&one) + owned(&two) == 6
    })
    .await;
    produce(&config, rest).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The first leaves: the second takes its partitions over.
    stop_one.cancel();
    first_member
        .await
        .unwrap()
        .expect("the first member stopped cleanly");
    common::eventually(
        Duration::from_secs(60),
        "the second owns everything",
        || async { owned(&two) == 6 },
    )
    .await;

    let expected = recomputed_from(topic_rows(&config).await);
    common::eventually(
        Duration::from_secs(60),
        "every closed minute written",
        || async { written(&config).await.len() == expected.len() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_two.cancel();
    second_member
        .await
        .unwrap()
        .expect("the second member stopped cleanly");
    let written = written_once(&config).await;
    assert_eq!(written, expected);
}
