//! Reading a topic's partitions as records arrive, outside any consumer group.
//!
//! The console reads the sensor, alert and dead-letter topics for its fleet,
//! alert and dead-letter views, and follows any topic for a live tail. It
//! must never take partitions from the pipeline's consumers, so it reads
//! partitions directly (rskafka fetches) and commits nothing. Each partition
//! has a task of its own; a broker that goes away costs a retry with backoff,
//! every fetch has a timeout, and shutdown ends every task.

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use tokio_util::sync::CancellationToken;

use crate::kafka::client::SharedClient;
use crate::kafka::retry::Backoff;

/// Longest a fetch waits at the broker for new records.
const FETCH_WAIT_MS: i32 = 500;
/// Most bytes one fetch returns.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// Fewest bytes a fetch waits for (up to [`FETCH_WAIT_MS`]): on a busy topic
/// the console asks for large batches, a few times a second, so that the
/// brokers spend little on it.
const FETCH_MIN_BYTES: i32 = 256 * 1024;

/// Where following starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// At the end: only records written from now on.
    Latest,
    /// At the first record of the last `age`, but no more than `max_records`
    /// before the end of each partition.
    Recent {
        /// How far back in time.
        age: Duration,
        /// How many records back, at most, per partition.
        max_records: i64,
    },
}

/// Follows `partitions` of `topic` from `start`, calling `on_records(partition,
/// records)` for every fetched batch, until `shutdown`. Returns when every
/// partition task has ended.
pub async fn follow<F>(
    client: Arc<SharedClient>,
    topic: String,
    partitions: Vec<i32>,
    start: Start,
    timeout: Duration,
    shutdown: CancellationToken,
    on_records: F,
) where
    F: Fn(i32, Vec<RecordAndOffset>) + Send + Sync + 'static,
{
    let on_records = Arc::new(on_records);
    let mut tasks = tokio::task::JoinSet::new();
    for partition in partitions {
        let reader = PartitionReader {
            client: Arc::clone(&client),
            topic: topic.clone(),
            partition,
            timeout,
        };
        let shutdown = shutdown.clone();
        let on_records = Arc::clone(&on_records);
        tasks.spawn(async move {
            reader
                .run(start, shutdown, move |records| {
                    on_records(partition, records)
                })
                .await
        });
    }
    while tasks.join_next().await.is_some() {}
}

struct PartitionReader {
    client: Arc<SharedClient>,
    topic: String,
    partition: i32,
    timeout: Duration,
}

impl PartitionReader {
    async fn run(
        &self,
        start: Start,
        shutdown: CancellationToken,
        on_records: impl Fn(Vec<RecordAndOffset>),
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut next: Option<i64> = None;
        // Kept from one fetch to the next: each partition client holds a
        // connection of its own to the leader, and a new one costs a TCP, TLS
        // and SASL handshake. It is dropped, and made afresh, after an error.
        let mut connected: Option<(u64, PartitionClient)> = None;
        loop {
            let step = async {
                let (generation, partition) = match connected.take() {
                    Some(kept) => kept,
                    None => {
                        let (generation, client) = self.client.current();
                        let partition = self
                            .bounded(client.partition_client(
                                self.topic.clone(),
                                self.partition,
                                UnknownTopicHandling::Error,
                            ))
                            .await
                            .map_err(|e| (generation, e))?;
                        (generation, partition)
                    }
                };
                let offset = match next {
                    Some(offset) => offset,
                    None => self
                        .start_offset(&partition, start)
                        .await
                        .map_err(|e| (generation, e))?,
                };
                let (records, _high_watermark) = tokio::time::timeout(
                    self.timeout + Duration::from_millis(FETCH_WAIT_MS as u64),
                    partition.fetch_records(offset, FETCH_MIN_BYTES..FETCH_BYTES, FETCH_WAIT_MS),
                )
                .await
                .map_err(|_| (generation, KafkaError::Timeout))?
                .map_err(|e| (generation, e))?;
                Ok::<_, (u64, KafkaError)>((offset, records, (generation, partition)))
            };
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = step => outcome,
            };
            match outcome {
                Ok((offset, records, kept)) => {
                    connected = Some(kept);
                    backoff.reset();
                    next = Some(records.last().map(|r| r.offset + 1).unwrap_or(offset));
                    if !records.is_empty() {
                        on_records(records);
                    }
                }
                Err((
                    _,
                    KafkaError::ServerError {
                        protocol_error: ProtocolError::OffsetOutOfRange,
                        ..
                    },
                )) => {
                    // Retention removed what was next: go on from what is kept.
                    next = None;
                }
                Err((generation, e)) => {
                    tracing::debug!(
                        "console reading {}/{}: {e}; retrying",
                        self.topic,
                        self.partition
                    );
                    self.client.replace(generation).await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, KafkaError> {
        crate::kafka::client::bounded(self.timeout, call).await
    }

    async fn start_offset(
        &self,
        partition: &PartitionClient,
        start: Start,
    ) -> Result<i64, KafkaError> {
        let latest = self.bounded(partition.get_offset(OffsetAt::Latest)).await?;
        match start {
            Start::Latest => Ok(latest),
            Start::Recent { age, max_records } => {
                let since = chrono::Utc::now()
                    - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::zero());
                let by_time = self
                    .bounded(partition.get_offset(OffsetAt::Timestamp(since)))
                    .await?;
                // No record that recent: the end of the log.
                let by_time = if by_time < 0 { latest } else { by_time };
                Ok(by_time.max(latest - max_records).max(0))
            }
        }
    }
}
