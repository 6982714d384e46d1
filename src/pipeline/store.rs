//! The storage stage: the sensor topic and the aggregates topic into the
//! store, under consumer groups of their own.
//!
//! Storing runs apart from processing (its own group, `iot-storage` by
//! default), so a slow disk never holds up alerts and a broken alert topic
//! never holds up storage. The [`StoreProcessor`] tells the consumer how far
//! each partition is durable ([`RecordProcessor::committable`]): offsets are
//! committed up to the first record still in an open file, never past it,
//! and the store rolls a partition again only once its last roll is
//! committed (see [`crate::store`] for why that makes every reading stored
//! exactly once across crashes and replays).
//!
//! Readings and aggregates are stored alike, each kind ([`Row`]) by its own
//! group member: readings in `METROCLOUD_STORE_GROUP_ID`, aggregates in the
//! same name with `-aggregates` after it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::consumer::{
    ConsumedRecord, ConsumerError, ConsumerSpec, ConsumerStats, GroupConsumer, RecordProcessor,
};
use crate::kafka::retry::Backoff;
use crate::lock::lock;
use crate::sensor::aggregate::MinuteAggregate;
use crate::sensor::reading::SensorReading;
use crate::store::row::{Origin, Row};
use crate::store::{RowStore, StoreError, StoreStats};

/// Counters of storing one kind of row, besides the store's own.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Records that hold no valid row, left out (processing puts readings
    /// that are not valid in the dead-letter topic).
    pub invalid: AtomicU64,
    /// The store's.
    pub store: Arc<StoreStats>,
    /// The current member's.
    pub consumer: Mutex<Arc<ConsumerStats>>,
}

/// Counters of the storage stage.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Storing readings.
    pub readings: Arc<TableStats>,
    /// Storing minute aggregates.
    pub aggregates: Arc<TableStats>,
}

/// A topic stored, and the group that stores it.
#[derive(Debug, Clone)]
pub struct StoredTopic {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group_id: String,
}

impl StoredTopic {
    /// The sensor topic, in `METROCLOUD_STORE_GROUP_ID`.
    pub fn readings(config: &Config) -> Self {
        StoredTopic {
            topic: config.topic.clone(),
            group_id: config.store.group_id.clone(),
        }
    }

    /// The aggregates topic, in `METROCLOUD_STORE_GROUP_ID` with `-aggregates` after it.
    pub fn aggregates(config: &Config) -> Self {
        StoredTopic {
            topic: config.aggregates_topic.clone(),
            group_id: format!("{}-aggregates", config.store.group_id),
        }
    }
}

/// Feeds consumed rows to the store; see the module documentation.
pub struct StoreProcessor<R: Row> {
    store: RowStore<R>,
    stats: Arc<TableStats>,
    /// The first error of the store: nothing more is taken or committed.
    failure: Option<String>,
    stopping: bool,
}

impl<R: Row> StoreProcessor<R> {
    /// A processor writing into `store`.
    pub fn new(store: RowStore<R>, stats: Arc<TableStats>) -> Self {
        StoreProcessor {
            store,
            stats,
            failure: None,
            stopping: false,
        }
    }

    fn failed(&mut self, error: StoreError) {
        if self.failure.is_none() {
            self.failure = Some(format!("storing stopped: {error}"));
        }
    }
}

impl<R: Row> RecordProcessor for StoreProcessor<R> {
    async fn process(&mut self, record: ConsumedRecord) {
        if self.failure.is_some() {
            return;
        }
        let Some(row) = R::from_record(record.key.as_deref(), record.value.as_deref()) else {
            self.stats.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let origin = Origin {
            partition: record.partition,
            offset: record.offset,
        };
        if let Err(error) = self.store.append(row, origin).await {
            self.failed(error);
        }
    }

    async fn tick(&mut self) {
        if self.failure.is_none() {
            self.store.compact().await;
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.stopping {
            self.store.finish_compaction().await;
        }
        if self.failure.is_none()
            && let Err(error) = self.store.make_durable(self.stopping).await
        {
            self.failed(error);
        }
        match &self.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    fn committable(&self, partition: i32, position: i64) -> i64 {
        self.store.held_from(partition).unwrap_or(position)
    }

    fn committed(&mut self, offsets: &[(i32, i64)]) {
        for &(partition, offset) in offsets {
            self.store.committed(partition, offset);
        }
    }

    fn commit_wanted(&self) -> bool {
        self.store.due()
    }

    fn stopping(&mut self) {
        self.stopping = true;
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        self.store.forget(partitions);
    }
}

/// Why the storage stage stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// It could not start.
    #[error(transparent)]
    Start(#[from] StorageStartError),
    /// Its consumer stopped for good.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// Why the storage stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum StorageStartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The consumer could not start.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// Opens the configured stores and closes them again: whether they can be used.
pub async fn check_store(config: &Config, stats: &StorageStats) -> Result<(), StorageError> {
    let timeout = config.consumer.request_timeout;
    let open = |stats: &Arc<TableStats>| Arc::clone(&stats.store);
    let readings = RowStore::<SensorReading>::open(
        &config.store,
        &config.topic,
        open(&stats.readings),
        timeout,
    )
    .await
    .map_err(StorageStartError::from)?;
    let aggregates = RowStore::<MinuteAggregate>::open(
        &config.store,
        &config.aggregates_topic,
        open(&stats.aggregates),
        timeout,
    )
    .await
    .map_err(StorageStartError::from)?;
    drop((readings, aggregates));
    Ok(())
}

/// The member storing `stored`'s rows of kind `R`, or `None` if shut down while connecting.
pub async fn table_consumer<R: Row>(
    config: &Config,
    stored: &StoredTopic,
    stats: &Arc<TableStats>,
    shutdown: &CancellationToken,
) -> Result<Option<GroupConsumer<StoreProcessor<R>>>, StorageStartError> {
    let timeout = config.consumer.request_timeout;
    let Some(store) = RowStore::<R>::open(
        &config.store,
        &stored.topic,
        Arc::clone(&stats.store),
        timeout,
    )
    .await?
    else {
        return Ok(None);
    };
    tracing::info!(
        "storing {} in {} (group {})",
        stored.topic,
        store.describe(),
        stored.group_id
    );
    let processor = StoreProcessor::new(store, Arc::clone(stats));
    let spec = ConsumerSpec {
        bootstrap: config.brokers(),
        topic: stored.topic.clone(),
        group_id: stored.group_id.clone(),
        auto_offset_reset: config.auto_offset_reset,
        settings: config.consumer.clone(),
    };
    Ok(GroupConsumer::connect(spec, processor, shutdown).await?)
}

/// The member storing readings, or `None` if shut down while connecting.
pub async fn storage_consumer(
    config: &Config,
    stats: &Arc<StorageStats>,
    shutdown: &CancellationToken,
) -> Result<Option<GroupConsumer<StoreProcessor<SensorReading>>>, StorageStartError> {
    table_consumer(
        config,
        &StoredTopic::readings(config),
        &stats.readings,
        shutdown,
    )
    .await
}

/// What the storage stage did, for its closing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSummary {
    /// Readings in files renamed into place.
    pub stored: u64,
    /// Files renamed into place.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Records left out as not valid readings.
    pub invalid: u64,
    /// Minute aggregates stored.
    pub aggregates: u64,
}

impl std::fmt::Display for StoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "storage summary: {} readings stored in {} files ({} bytes, {:.1} bytes per reading), {} invalid records left out, {} minute aggregates stored",
            self.stored,
            self.files,
            self.bytes,
            self.bytes as f64 / self.stored.max(1) as f64,
            self.invalid,
            self.aggregates
        )
    }
}

/// The summary of the storage stage's counters.
pub fn summary(stats: &StorageStats) -> StoreSummary {
    let store = &stats.readings.store;
    StoreSummary {
        stored: store.stored.load(Ordering::Relaxed),
        files: store.files.load(Ordering::Relaxed),
        bytes: store.bytes.load(Ordering::Relaxed),
        invalid: stats.readings.invalid.load(Ordering::Relaxed),
        aggregates: stats.aggregates.store.stored.load(Ordering::Relaxed),
    }
}

/// Runs the storage stage until `shutdown`: readings and aggregates, each
/// by its own member. When a store fails (a full disk, a folder that cannot
/// be written, a database gone), its member stops without committing past
/// what is stored, and a new one starts after a pause, reading again from the
/// last commit: storing resumes once the cause is gone. A store that cannot
/// be opened at the start is an error.
pub async fn run_storage(
    config: &Config,
    stats: &Arc<StorageStats>,
    shutdown: CancellationToken,
) -> Result<(), StorageError> {
    // One kind stopping for good stops the other.
    let both = shutdown.child_token();
    let readings = async {
        let stopped = run_table::<SensorReading>(
            config,
            StoredTopic::readings(config),
            &stats.readings,
            both.clone(),
        )
        .await;
        both.cancel();
        stopped
    };
    let aggregates = async {
        let stored = StoredTopic::aggregates(config);
        let stopped =
            run_table::<MinuteAggregate>(config, stored, &stats.aggregates, both.clone()).await;
        both.cancel();
        stopped
    };
    let stopped = tokio::join!(readings, aggregates);
    stopped.0.and(stopped.1)
}

/// Stores `stored`'s rows of kind `R` until `shutdown`; see [`run_storage`].
/// A topic that does not exist yet is waited for.
pub async fn run_table<R: Row>(
    config: &Config,
    stored: StoredTopic,
    stats: &Arc<TableStats>,
    shutdown: CancellationToken,
) -> Result<(), StorageError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut first = true;
    loop {
        let started = match table_consumer::<R>(config, &stored, stats, &shutdown).await {
            Ok(Some(consumer)) => Ok(consumer),
            Ok(None) => return Ok(()),
            Err(StorageStartError::Store(error)) if !first => Err(error.to_string()),
            Err(StorageStartError::Consumer(ConsumerError::MissingTopic(topic))) => {
                Err(format!("topic {topic} does not exist yet"))
            }
            Err(error) => return Err(error.into()),
        };
        first = false;
        match started {
            Ok(consumer) => {
                *lock(&stats.consumer) = consumer.stats();
                match consumer.run(shutdown.clone()).await {
                    Ok(_) => return Ok(()),
                    // The member logged why; nothing past what is stored was committed.
                    Err(ConsumerError::Processing(_)) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Err(reason) => tracing::error!("storing {} stopped: {reason}", stored.topic),
        }
        let pause = backoff.next_delay();
        tracing::warn!(
            "storing {} again in {pause:?}, from the last commit",
            stored.topic
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One status line: readings stored, their rate since the last line, files and lag.
pub fn storage_line(stats: &StorageStats, elapsed: f64, previous: u64) -> (String, u64) {
    let store = &stats.readings.store;
    let consumer = lock(&stats.readings.consumer).clone();
    let stored = store.stored.load(Ordering::Relaxed);
    let rate = (stored - previous.min(stored)) as f64 / elapsed.max(1e-9);
    let line = format!(
        "stored {stored} readings ({rate:.0}/s) in {} files, {} held in open files, {} partitions owned, lag {}; {} minute aggregates stored",
        store.files.load(Ordering::Relaxed),
        store.held.load(Ordering::Relaxed),
        consumer.owned_partitions.load(Ordering::Relaxed),
        consumer.lag.load(Ordering::Relaxed),
        stats.aggregates.store.stored.load(Ordering::Relaxed)
    );
    (line, stored)
}
