//! The storage benchmark's worker: a pre-filled topic into the store, timed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::WorkerError;
use crate::config::Config;
use crate::pipeline::store::{StorageStats, StoredTopic, run_table};
use crate::sensor::reading::SensorReading;
use crate::store::layout;

/// What a storing worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreOutcome {
    /// Readings made durable.
    pub rows: u64,
    /// From the first reading taken to the last durable (connecting and
    /// joining the group, a second or two, are not counted).
    pub elapsed_secs: f64,
}

/// Where a storing worker puts the readings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreTarget {
    /// Parquet files under this folder.
    Parquet(PathBuf),
    /// The PostgreSQL database at this URL.
    Postgres(String),
}

/// Stores the first `records` readings of `topic`, in a new group, into `target`.
pub(super) async fn store(
    config: &Config,
    bootstrap: &[String],
    topic: &str,
    group: &str,
    records: u64,
    target: &StoreTarget,
) -> Result<StoreOutcome, WorkerError> {
    let mut config = config.clone();
    let mut set = |name: &str, value: &str| {
        config
            .set(name, value)
            .map_err(|e| WorkerError::Spec(e.to_string()))
    };
    set("KAFKA_BOOTSTRAP_SERVERS", &bootstrap.join(","))?;
    set("KAFKA_TOPIC_NAME", topic)?;
    set("METROCLOUD_STORE_GROUP_ID", group)?;
    set("KAFKA_AUTO_OFFSET_RESET", "earliest")?;
    // One roll at the end: the store's steady state, not its commit cadence, is measured.
    set("METROCLOUD_STORE_ROLL_ROWS", "100000000")?;
    set("METROCLOUD_STORE_ROLL_SEC", "86400")?;
    match target {
        StoreTarget::Parquet(dir) => {
            set("METROCLOUD_STORE", "parquet")?;
            set("METROCLOUD_DATA_DIR", &dir.display().to_string())?;
        }
        StoreTarget::Postgres(url) => {
            set("METROCLOUD_POSTGRES_URL", url)?;
            set("METROCLOUD_STORE", "postgres")?;
        }
    }
    let stats = Arc::new(StorageStats::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn({
        let (config, stats, stop) = (config.clone(), Arc::clone(&stats), stop.clone());
        async move {
            let readings = StoredTopic::readings(&config);
            run_table::<SensorReading>(&config, readings, &stats.readings, stop).await
        }
    });
    let store = &stats.readings.store;
    let limit = started + Duration::from_secs(900);
    let mut first = None;
    loop {
        let taken = store.held.load(Ordering::Relaxed) + store.stored.load(Ordering::Relaxed);
        if taken > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if taken >= records || task.is_finished() || Instant::now() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await
        .map_err(|e| WorkerError::Kafka(e.to_string()))?
        .map_err(|e| WorkerError::Kafka(e.to_string()))?;
    Ok(StoreOutcome {
        rows: store.stored.load(Ordering::Relaxed),
        elapsed_secs: first.unwrap_or(started).elapsed().as_secs_f64(),
    })
}

/// Bytes of the Parquet files under `data_dir`.
pub fn parquet_bytes(data_dir: &Path) -> u64 {
    layout::stored_files(&data_dir.join(layout::READINGS))
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}
