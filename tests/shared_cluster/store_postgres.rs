//! The storage stage into a real PostgreSQL server: every reading inserted
//! once, in a table partitioned by day; a group reading everything again
//! inserts nothing twice; a server that refuses or is away is named in a
//! clear error, without the password, and a server that restarts under load
//! loses nothing.

use crate::common;
use crate::common::postgres::TestPostgres;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use metrocloud::config::Config;
use metrocloud::pipeline::sources::simulator::run_ingest;
use metrocloud::pipeline::store::{StorageStats, run_storage, storage_consumer};
use metrocloud::pipeline::wiring;

fn config(cluster: &common::TestCluster, topic: &str, group: &str, url: &str) -> Config {
    let vars: Vec<(String, String)> = vec![
        ("KAFKA_BOOTSTRAP_SERVERS".into(), cluster.bootstrap_list()),
        ("KAFKA_TOPIC_NAME".into(), topic.into()),
        ("KAFKA_ALERTS_TOPIC".into(), format!("{topic}-alerts")),
        ("KAFKA_DLQ_TOPIC".into(), format!("{topic}-dlq")),
        ("METROCLOUD_STORE".into(), "postgres".into()),
        ("METROCLOUD_POSTGRES_URL".into(), url.into()),
        ("METROCLOUD_STORE_GROUP_ID".into(), group.into()),
        ("KAFKA_CONSUMER_COMMIT_INTERVAL_MS".into(), "500".into()),
        ("KAFKA_CONSUMER_REQUEST_TIMEOUT_MS".into(), "5000".into()),
        ("IOT_NUM_DEVICES".into(), "300".into()),
        ("IOT_DATA_INTERVAL_SEC".into(), "0.05".into()),
    ];
    Config::from_vars(vars).expect("valid test configuration")
}

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

/// Rows in the table, and distinct readings among them (none before the stage made the table).
async fn counted(server: &TestPostgres) -> (i64, i64) {
    let client = server.client().await;
    let counted = client
        .query_one(
            "SELECT count(*), count(DISTINCT (device_id, run_id, seq)) FROM sensor_readings",
            &[],
        )
        .await;
    match counted {
        Ok(row) => (row.get(0), row.get(1)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => (0, 0),
        Err(e) => panic!("counting failed: {e}"),
    }
}

/// Runs the storage stage until `rows` rows are in the table, then stops it; returns its counters.
async fn store_until(config: &Config, server: &TestPostgres, rows: i64) -> Arc<StorageStats> {
    let stats = Arc::new(StorageStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (config, stats, stop) = (config.clone(), Arc::clone(&stats), stop.clone());
        async move { run_storage(&config, &stats, stop).await }
    });
    common::eventually(Duration::from_secs(90), "rows in the table", || async {
        counted(server).await.0 >= rows
    })
    .await;
    stop.cancel();
    task.await.unwrap().expect("storage ran");
    stats
}

#[tokio::test]
async fn every_reading_is_inserted_once_and_reading_everything_again_inserts_nothing() {
    let cluster = common::shared();
    let server = TestPostgres::start();
    let topic = common::unique_topic("pg");
    let config = config(cluster, &topic, &format!("{topic}-storage"), &server.url());
    produce(&config, 3_000).await;

    let first = store_until(&config, &server, 3_000).await;
    assert_eq!(counted(&server).await, (3_000, 3_000));
    assert_eq!(first.readings.store.stored.load(Ordering::Relaxed), 3_000);

    // A new group reads the topic from the start: every row is there already.
    let again = config_with_group(&config, &format!("{topic}-again"));
    let stats = Arc::new(StorageStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (config, stats, stop) = (again.clone(), Arc::clone(&stats), stop.clone());
        async move { run_storage(&config, &stats, stop).await }
    });
    common::eventually(Duration::from_secs(60), "the topic read again", || async {
        stats.readings.store.rolls.load(Ordering::Relaxed) > 0
            && stats.readings.store.held.load(Ordering::Relaxed) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    task.await.unwrap().expect("storage ran");
    assert_eq!(
        stats.readings.store.stored.load(Ordering::Relaxed),
        0,
        "nothing inserted twice"
    );
    assert_eq!(counted(&server).await, (3_000, 3_000));

    // Declarative partitioning by day: the table is partitioned, rows live in its partitions.
    let client = server.client().await;
    let kind: i8 = client
        .query_one(
            "SELECT relkind::\"char\" FROM pg_class WHERE relname = 'sensor_readings'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind as u8, b'p');
    let partitions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'sensor_readings'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(partitions >= 1);
}

fn config_with_group(config: &Config, group: &str) -> Config {
    let mut config = config.clone();
    config.store.group_id = group.to_string();
    config
}

#[tokio::test]
async fn a_wrong_password_or_an_absent_server_is_named_and_the_password_never_shown() {
    let cluster = common::shared();
    let server = TestPostgres::start();
    let topic = common::unique_topic("pg-refused");
    let stats = Arc::new(StorageStats::default());
    let never = CancellationToken::new();

    let wrong = config(cluster, &topic, "g", &server.url_with("not-the-password"));
    let error = storage_consumer(&wrong, &stats, &never)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("METROCLOUD_POSTGRES_URL"), "{error}");
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(
        error.contains(&format!("metrocloud@127.0.0.1:{}", server.port)),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "{error}");

    server.halt();
    let away = config(cluster, &topic, "g", &server.url());
    let error = storage_consumer(&away, &stats, &never)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("METROCLOUD_POSTGRES_URL"), "{error}");
    assert!(error.contains("cannot connect"), "{error}");
    assert!(
        !error.contains(metrocloud::bench::postgres::PASSWORD),
        "{error}"
    );
}

#[tokio::test]
async fn a_server_restarted_under_load_loses_and_doubles_nothing() {
    let cluster = common::shared();
    let server = TestPostgres::start();
    let topic = common::unique_topic("pg-restart");
    let config = config(cluster, &topic, &format!("{topic}-storage"), &server.url());
    produce(&config, 2_000).await;

    let stats = Arc::new(StorageStats::default());
    let stop = CancellationToken::new();
    server.halt();
    let task = tokio::spawn({
        let (config, stats, stop) = (config.clone(), Arc::clone(&stats), stop.clone());
        async move { run_storage(&config, &stats, stop).await }
    });
    // The server is away at the start: that is an error, not a wait.
    let error = task.await.unwrap().expect_err("no server at the start");
    assert!(
        error.to_string().contains("METROCLOUD_POSTGRES_URL"),
        "{error}"
    );

    server.resume();
    let task = tokio::spawn({
        let (config, stats, stop) = (config.clone(), Arc::clone(&stats), stop.clone());
        async move { run_storage(&config, &stats, stop).await }
    });
    common::eventually(Duration::from_secs(60), "some rows in", || async {
        counted(&server).await.0 > 0
    })
    .await;
    // Down while the stage runs: it backs off and starts again once the server is back.
    server.halt();
    produce(&config, 1_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.resume();
    common::eventually(Duration::from_secs(90), "3,000 rows", || async {
        counted(&server).await.0 >= 3_000
    })
    .await;
    stop.cancel();
    task.await.unwrap().expect("storage ran");
    assert_eq!(counted(&server).await, (3_000, 3_000));
}
