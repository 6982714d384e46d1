//! The storage stage on a real cluster: every acknowledged reading lands in the
//! Parquet store once, also after its member is killed mid-way and another
//! reads again from the last commit, and the files are what an independent
//! reader (pyarrow) expects.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use tokio_util::sync::CancellationToken;

use metrocloud::config::Config;
use metrocloud::pipeline::sources::simulator::run_ingest;
use metrocloud::pipeline::store::{StorageStats, run_storage, storage_consumer};
use metrocloud::pipeline::wiring;
use metrocloud::store::layout;

fn config(cluster: &common::TestCluster, data_dir: &Path, roll_rows: &str) -> Config {
    let topic = common::unique_topic("store");
    let vars: Vec<(String, String)> = vec![
        ("KAFKA_BOOTSTRAP_SERVERS".into(), cluster.bootstrap_list()),
        ("KAFKA_TOPIC_NAME".into(), topic.clone()),
        ("KAFKA_ALERTS_TOPIC".into(), format!("{topic}-alerts")),
        ("KAFKA_DLQ_TOPIC".into(), format!("{topic}-dlq")),
        (
            "METROCLOUD_STORE_GROUP_ID".into(),
            format!("{topic}-storage"),
        ),
        ("METROCLOUD_DATA_DIR".into(), data_dir.display().to_string()),
        ("METROCLOUD_STORE_ROLL_ROWS".into(), roll_rows.into()),
        ("METROCLOUD_STORE_ROLL_SEC".into(), "1".into()),
        ("KAFKA_CONSUMER_COMMIT_INTERVAL_MS".into(), "500".into()),
        ("IOT_NUM_DEVICES".into(), "300".into()),
        ("IOT_DATA_INTERVAL_SEC".into(), "0.05".into()),
    ];
    Config::from_vars(vars).expect("valid test configuration")
}

/// Produces `count` simulated readings to the configured topic, all acknowledged.
async fn produce(config: &Config, count: u64) {
    let never = CancellationToken::new();
    wiring::ensure_pipeline_topics(config, &never)
        .await
        .expect("topics");
    let producer = wiring::reading_producer(config, |_, _| {}, &never)
        .await
        .expect("producer");
    let summary = run_ingest(wiring::fleet(config), producer, Some(count), never)
        .await
        .expect("ingest");
    assert_eq!(summary.producer.acked, count, "{summary:?}");
}

struct Storage {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<StorageStats>,
}

async fn start_storage(config: &Config) -> Storage {
    let stats = Arc::new(StorageStats::default());
    let stop = CancellationToken::new();
    let consumer = storage_consumer(config, &stats, &stop)
        .await
        .expect("storage starts")
        .expect("not cancelled");
    let token = stop.clone();
    let task = tokio::spawn(async move {
        consumer.run(token).await.expect("storage ran");
    });
    Storage { stop, task, stats }
}

/// Every stored (partition, offset), with duplicates kept, and the row count.
fn stored_origins(data_dir: &Path) -> Vec<(i32, i64)> {
    let root = data_dir.join(layout::READINGS);
    let mut origins = Vec::new();
    for file in layout::stored_files(&root).expect("files listed") {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            origins.push((row.get_int(18).unwrap(), row.get_long(19).unwrap()));
        }
    }
    origins.sort();
    origins
}

fn assert_each_once(origins: &[(i32, i64)], expected: usize) {
    let unique: BTreeSet<_> = origins.iter().collect();
    assert_eq!(unique.len(), origins.len(), "a record stored twice");
    assert_eq!(origins.len(), expected, "records missing");
}

#[tokio::test]
async fn every_reading_is_stored_once_and_pyarrow_reads_the_files_with_their_schema() {
    let cluster = common::shared();
    let data = tempfile::tempdir().unwrap();
    let config = config(cluster, data.path(), "1000000");
    produce(&config, 3_000).await;

    let storage = start_storage(&config).await;
    let stored = &storage.stats.readings.store.stored;
    common::eventually(Duration::from_secs(60), "3,000 readings stored", || async {
        stored.load(Ordering::Relaxed) == 3_000
    })
    .await;
    storage.stop.cancel();
    storage.task.await.unwrap();
    assert_each_once(&stored_origins(data.path()), 3_000);

    // A second member of the group finds everything committed: nothing is stored again.
    let again = start_storage(&config).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    again.stop.cancel();
    again.task.await.unwrap();
    assert_eq!(again.stats.readings.store.stored.load(Ordering::Relaxed), 0);
    assert_each_once(&stored_origins(data.path()), 3_000);

    let script = r#"
import sys, pyarrow.dataset as ds
data = ds.dataset(sys.argv[1], format="parquet", partitioning="hive")
table = data.to_table()
print(table.num_rows)
for field in data.schema:
    print(field.name, field.type)
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(data.path().join(layout::READINGS))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("3000"));
    let schema: Vec<&str> = lines.collect();
    for column in [
        "device_id string",
        "seq int64",
        "event_time timestamp[ms, tz=UTC]",
        "value double",
        "signal_strength int32",
        "is_anomaly bool",
        "anomaly_kind string",
        "kafka_partition int32",
        "kafka_offset int64",
        "date string",
        "hour int32",
    ] {
        assert!(schema.contains(&column), "{column} not in {schema:?}");
    }
}

#[tokio::test]
async fn a_member_killed_mid_way_leaves_nothing_doubled_or_missing_after_the_next_reads_again() {
    let cluster = common::shared();
    let data = tempfile::tempdir().unwrap();
    // Small rolls: files are renamed and committed all the time, so the kill
    // lands among them.
    let config = config(cluster, data.path(), "150");
    produce(&config, 2_000).await;

    let first = start_storage(&config).await;
    let stored = &first.stats.readings.store.stored;
    common::eventually(Duration::from_secs(60), "some readings stored", || async {
        stored.load(Ordering::Relaxed) >= 1_000
    })
    .await;
    // Killed: no final roll, no commit, no goodbye to the group.
    first.task.abort();
    let _ = first.task.await;
    let before = stored_origins(data.path()).len();
    assert!(
        (1_000..=2_000).contains(&before),
        "{before} stored before the kill"
    );
    // More readings arrive while no member stores.
    produce(&config, 2_000).await;

    let second = start_storage(&config).await;
    common::eventually(
        Duration::from_secs(90),
        "all 4,000 readings stored",
        || async { stored_origins(data.path()).len() >= 4_000 },
    )
    .await;
    second.stop.cancel();
    second.task.await.unwrap();
    assert_each_once(&stored_origins(data.path()), 4_000);
    assert!(
        layout::leftovers(&data.path().join(layout::READINGS))
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn storing_stops_without_committing_while_its_folder_cannot_be_written_and_resumes_after() {
    let cluster = common::shared();
    let data = tempfile::tempdir().unwrap();
    let config = config(cluster, data.path(), "1000000");
    produce(&config, 1_000).await;

    // A file where the date folders of the readings (event time: now) would go.
    let root = data.path().join(layout::READINGS);
    std::fs::create_dir_all(&root).unwrap();
    let today = chrono::Utc::now().date_naive();
    let blockers: Vec<_> = [today.pred_opt().unwrap(), today, today.succ_opt().unwrap()]
        .iter()
        .map(|day| root.join(format!("date={}", day.format("%Y-%m-%d"))))
        .collect();
    for blocker in &blockers {
        std::fs::write(blocker, b"not a folder").unwrap();
    }

    let stats = Arc::new(StorageStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (config, stats, stop) = (config.clone(), Arc::clone(&stats), stop.clone());
        async move { run_storage(&config, &stats, stop).await }
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stats.readings.store.stored.load(Ordering::Relaxed), 0);
    assert!(stored_origins(data.path()).is_empty());
    assert!(
        !task.is_finished(),
        "the stage waits for the folder, it does not give up"
    );

    for blocker in &blockers {
        std::fs::remove_file(blocker).unwrap();
    }
    common::eventually(Duration::from_secs(90), "1,000 readings stored", || async {
        stored_origins(data.path()).len() >= 1_000
    })
    .await;
    stop.cancel();
    task.await.unwrap().expect("storage ran");
    assert_each_once(&stored_origins(data.path()), 1_000);
}
