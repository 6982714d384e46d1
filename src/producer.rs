//! Reliable delivery of records to one topic: batching, bounded buffering, retries.
//!
//! rskafka sends one batch to one partition; this layer decides what goes in
//! a batch, when it is sent, and what happens when it fails.
//!
//! - **Partitioning**: a record's partition is Kafka's keyed default
//!   ([`crate::partitioner`]), so each device's readings stay in order on one
//!   partition.
//! - **One writer per partition**: each partition has a task that collects
//!   records into a batch until it holds `batch_bytes` or `linger` has passed,
//!   sends it with `acks=all`, and only then starts the next batch. One batch
//!   in flight per partition keeps the partition's order across retries; all
//!   partitions are in flight at once.
//! - **Bounded memory**: every record holds its size in a byte budget
//!   (`buffer_bytes`) from [`Producer::send`] until it is acknowledged or has
//!   failed. When the budget is spent, `send` waits: a slow or absent cluster
//!   pushes back on whoever produces, and nothing grows without bound.
//! - **Retries**: errors that can succeed later (a lost connection, a leader
//!   change, too few in-sync replicas, a timeout) are retried with exponential
//!   backoff and jitter, until the oldest record's delivery deadline. Errors
//!   that cannot succeed fail the batch at once. Every record ends in exactly
//!   one [`Delivery`], reported to the caller's listener: nothing fails
//!   silently.
//!
//! A request that timed out may still have been written, so a retry can store
//! a record twice: delivery is at least once, and the consumer removes
//! duplicates by device, run and sequence number.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::BackoffConfig;
use rskafka::client::Client;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::SharedClient;
use crate::config::{Compression, ProducerSettings};
use crate::partitioner::partition_for_key;
use crate::retry::{Backoff, Deadline};

/// Bytes a record costs in the buffer besides its key and value.
const RECORD_OVERHEAD: usize = 64;

/// A record to send, with the caller's own data to get back with its delivery.
#[derive(Debug, Clone)]
pub struct OutgoingRecord<M> {
    /// Record key; decides the partition.
    pub key: Vec<u8>,
    /// Record value.
    pub value: Vec<u8>,
    /// Record headers.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// Record timestamp.
    pub timestamp: DateTime<Utc>,
    /// Whatever the caller needs to know which record a delivery is about.
    pub meta: M,
}

impl<M> OutgoingRecord<M> {
    /// Bytes the record holds in the producer's buffer.
    pub fn size(&self) -> usize {
        self.key.len()
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + RECORD_OVERHEAD
    }

    /// The record as rskafka sends it, and the caller's data. Key and value
    /// move, not copy: the producer copies a record only into each attempt.
    pub fn into_kafka_record(self) -> (Record, M) {
        let record = Record {
            key: Some(self.key),
            value: Some(self.value),
            headers: self.headers,
            timestamp: self.timestamp,
        };
        (record, self.meta)
    }
}

/// How one record ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Written to all in-sync replicas (`acks=all`).
    Acked {
        /// Partition it went to.
        partition: i32,
        /// Its offset there.
        offset: i64,
    },
    /// Not acknowledged: its deadline passed, or the error could not succeed on retry.
    Failed {
        /// Partition it was meant for.
        partition: i32,
        /// Why.
        reason: String,
    },
}

/// Told about every record's [`Delivery`], from the partition writers' tasks; keep it quick.
pub type DeliveryListener<M> = Arc<dyn Fn(M, Delivery) + Send + Sync>;

/// Why the producer could not start or take a record.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// Connecting was cancelled by shutdown.
    #[error("shut down before Kafka at {0} answered")]
    Cancelled(String),
    /// The topic does not exist.
    #[error("topic {0} does not exist (run `metrocloud topics ensure`)")]
    MissingTopic(String),
    /// A single record larger than the whole buffer.
    #[error("a record of {size} bytes is larger than the producer buffer of {buffer} bytes")]
    RecordTooLarge {
        /// Record size.
        size: usize,
        /// Buffer size.
        buffer: usize,
    },
    /// The producer is closing and takes no more records.
    #[error("the producer is closed")]
    Closed,
}

/// Counters of everything the producer did, for status lines and summaries.
#[derive(Debug, Default)]
pub struct ProducerStats {
    /// Records accepted by `send`.
    pub sent: AtomicU64,
    /// Records acknowledged by Kafka.
    pub acked: AtomicU64,
    /// Records that failed.
    pub failed: AtomicU64,
    /// Produce attempts that were retried.
    pub retries: AtomicU64,
    /// Batches acknowledged.
    pub batches: AtomicU64,
}

/// A point-in-time copy of [`ProducerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerSnapshot {
    /// Records accepted by `send`.
    pub sent: u64,
    /// Records acknowledged by Kafka.
    pub acked: u64,
    /// Records that failed.
    pub failed: u64,
    /// Produce attempts that were retried.
    pub retries: u64,
    /// Batches acknowledged.
    pub batches: u64,
}

impl ProducerSnapshot {
    /// Records accepted but not yet acknowledged or failed.
    pub fn pending(&self) -> u64 {
        self.sent.saturating_sub(self.acked + self.failed)
    }
}

impl ProducerStats {
    /// The counters now.
    pub fn snapshot(&self) -> ProducerSnapshot {
        ProducerSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}

struct Pending<M> {
    record: Record,
    /// The record's [`OutgoingRecord::size`].
    size: usize,
    meta: M,
    deadline: Instant,
}

/// Buffer bytes held by a batch's records since `send` took them; given back
/// when the batch is done (acknowledged or failed) or dropped. Records give
/// their share back a batch at a time: the semaphore locks its waiters' list
/// on every release, and once per record was a measurable part of the
/// producer's CPU.
struct Held {
    budget: Arc<Semaphore>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
    }
}

/// Records sent together, and the buffer bytes they hold.
struct Batch<M> {
    records: Vec<Pending<M>>,
    _held: Held,
}

/// Sends records to one topic; see the module documentation.
pub struct Producer<M> {
    topic: String,
    partitions: i32,
    queues: Vec<mpsc::UnboundedSender<Pending<M>>>,
    budget: Arc<Semaphore>,
    buffer_bytes: usize,
    delivery_timeout: Duration,
    stats: Arc<ProducerStats>,
    writers: JoinSet<()>,
}

impl<M: Send + 'static> Producer<M> {
    /// Connects to the cluster (retrying with backoff until `shutdown`), learns the
    /// topic's partitions and starts one writer per partition.
    pub async fn connect(
        bootstrap: Vec<String>,
        topic: &str,
        settings: &ProducerSettings,
        listener: DeliveryListener<M>,
        shutdown: &CancellationToken,
    ) -> Result<Self, ProducerError> {
        // Used for the partition count, then for each writer's sibling with connections of its own.
        let client = connect_client(bootstrap, settings, shutdown).await?;
        let partitions = partition_count(&client.current().1, topic, settings, shutdown).await?;
        let stats = Arc::new(ProducerStats::default());
        let budget = Arc::new(Semaphore::new(settings.buffer_bytes));
        let mut writers = JoinSet::new();
        let mut queues = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            // Unbounded on its own, but every queued record holds part of the byte budget.
            let (tx, rx) = mpsc::unbounded_channel();
            queues.push(tx);
            let writer = PartitionWriter {
                client: Arc::new(client.sibling().await),
                topic: topic.to_string(),
                partition,
                settings: settings.clone(),
                listener: Arc::clone(&listener),
                stats: Arc::clone(&stats),
                budget: Arc::clone(&budget),
                connection: None,
            };
            writers.spawn(writer.run(rx));
        }
        tracing::info!(
            "producer ready: topic {topic}, {partitions} partitions, linger {:?}, batches up to {} bytes, buffer {} bytes, compression {}",
            settings.linger,
            settings.batch_bytes,
            settings.buffer_bytes,
            settings.compression
        );
        Ok(Producer {
            topic: topic.to_string(),
            partitions,
            queues,
            budget,
            buffer_bytes: settings.buffer_bytes,
            delivery_timeout: settings.delivery_timeout,
            stats,
            writers,
        })
    }

    /// Queues a record for its partition; waits while the buffer is full.
    pub async fn send(&self, record: OutgoingRecord<M>) -> Result<(), ProducerError> {
        let size = record.size();
        if size > self.buffer_bytes {
            return Err(ProducerError::RecordTooLarge {
                size,
                buffer: self.buffer_bytes,
            });
        }
        // Given back by the record's batch (see `Held`).
        self.budget
            .acquire_many(size as u32)
            .await
            .map_err(|_| ProducerError::Closed)?
            .forget();
        let partition = partition_for_key(&record.key, self.partitions);
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let (record, meta) = record.into_kafka_record();
        let pending = Pending {
            record,
            size,
            meta,
            deadline: Instant::now() + self.delivery_timeout,
        };
        self.queues[partition as usize]
            .send(pending)
            .map_err(|_| ProducerError::Closed)
    }

    /// The topic records go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The producer's counters, shared.
    pub fn stats(&self) -> Arc<ProducerStats> {
        Arc::clone(&self.stats)
    }

    /// Bytes of records waiting for acknowledgement.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer_bytes - self.budget.available_permits()
    }

    /// Waits until every record sent so far is acknowledged or has failed.
    pub async fn flush(&self) {
        let _all = self
            .budget
            .acquire_many(self.buffer_bytes as u32)
            .await
            .expect("the budget is never closed while the producer lives");
    }

    /// Takes no more records, delivers (or fails) everything queued, and stops the writers.
    pub async fn close(mut self) -> ProducerSnapshot {
        self.queues.clear();
        while let Some(result) = self.writers.join_next().await {
            if let Err(e) = result
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        self.stats.snapshot()
    }
}

async fn connect_client(
    bootstrap: Vec<String>,
    settings: &ProducerSettings,
    shutdown: &CancellationToken,
) -> Result<SharedClient, ProducerError> {
    let joined = bootstrap.join(",");
    let mut backoff = Backoff::new(
        settings.retry_backoff,
        settings.retry_backoff_max.max(Duration::from_secs(5)),
    );
    let mut attempts = 0u32;
    loop {
        let error = match SharedClient::connect(
            bootstrap.clone(),
            "metrocloud-producer",
            rskafka_backoff(settings),
            settings.request_timeout,
        )
        .await
        {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        attempts += 1;
        if attempts == 1 || attempts.is_power_of_two() {
            tracing::warn!(
                "Kafka at {joined} does not answer yet (attempt {attempts}): {error}; retrying"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(ProducerError::Cancelled(joined)),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn partition_count(
    client: &Client,
    topic: &str,
    settings: &ProducerSettings,
    shutdown: &CancellationToken,
) -> Result<i32, ProducerError> {
    let mut backoff = Backoff::new(settings.retry_backoff, settings.retry_backoff_max);
    // A topic just created reaches every broker's metadata a moment later: a
    // broker that does not know it yet is asked again until this deadline.
    let missing_deadline = Deadline::after(settings.request_timeout);
    loop {
        match tokio::time::timeout(settings.request_timeout, client.list_topics()).await {
            Ok(Ok(topics)) => {
                let partitions = topics
                    .into_iter()
                    .find(|t| t.name == topic)
                    .map(|t| t.partitions.len() as i32)
                    .filter(|&n| n > 0);
                match partitions {
                    Some(n) => return Ok(n),
                    None if missing_deadline.has_passed() => {
                        return Err(ProducerError::MissingTopic(topic.to_string()));
                    }
                    None => tracing::debug!("topic {topic} not in the metadata yet; asking again"),
                }
            }
            Ok(Err(e)) => tracing::warn!("cannot list topics yet: {e}; retrying"),
            Err(_) => tracing::warn!("listing topics timed out; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(ProducerError::Cancelled(topic.to_string())),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// rskafka retries some errors itself; bound those retries tightly so that
/// the decision (a fresh client, the delivery deadline) stays here.
fn rskafka_backoff(settings: &ProducerSettings) -> BackoffConfig {
    BackoffConfig {
        init_backoff: settings.retry_backoff,
        max_backoff: settings.retry_backoff_max,
        base: 2.0,
        deadline: Some(crate::client::internal_retry_deadline(
            settings.request_timeout,
        )),
    }
}

/// Whether a produce error can succeed when tried again.
pub fn is_retriable(error: &KafkaError) -> bool {
    match error {
        KafkaError::Connection(_)
        | KafkaError::Request(_)
        | KafkaError::RetryFailed(_)
        | KafkaError::Timeout
        | KafkaError::InvalidResponse(_) => true,
        KafkaError::ServerError { protocol_error, .. } => matches!(
            protocol_error,
            ProtocolError::NotEnoughReplicas
                | ProtocolError::NotEnoughReplicasAfterAppend
                | ProtocolError::RequestTimedOut
                | ProtocolError::NotLeaderOrFollower
                | ProtocolError::LeaderNotAvailable
                | ProtocolError::BrokerNotAvailable
                | ProtocolError::ReplicaNotAvailable
                | ProtocolError::NetworkException
                | ProtocolError::KafkaStorageError
                | ProtocolError::UnknownTopicOrPartition
                | ProtocolError::FencedLeaderEpoch
                | ProtocolError::UnknownLeaderEpoch
                | ProtocolError::ThrottlingQuotaExceeded
                | ProtocolError::UnknownServerError
        ),
        _ => false,
    }
}

/// The next batch from `queue`: waits for a first record, then takes more until
/// the batch holds `batch_bytes` or `linger` has passed since the first. `None`
/// once the queue is closed and empty.
async fn next_batch<M>(
    queue: &mut mpsc::UnboundedReceiver<Pending<M>>,
    budget: &Arc<Semaphore>,
    batch_bytes: usize,
    linger: Duration,
) -> Option<Batch<M>> {
    let first = queue.recv().await?;
    let mut bytes = first.size;
    let mut batch = vec![first];
    let linger_until = Instant::now() + linger;
    while bytes < batch_bytes {
        let next = match queue.try_recv() {
            Ok(next) => Some(next),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                tokio::select! {
                    next = queue.recv() => next,
                    _ = tokio::time::sleep_until(linger_until) => None,
                }
            }
        };
        let Some(next) = next else { break };
        bytes += next.size;
        batch.push(next);
    }
    Some(Batch {
        records: batch,
        _held: Held {
            budget: Arc::clone(budget),
            bytes,
        },
    })
}

struct PartitionWriter<M> {
    client: Arc<SharedClient>,
    topic: String,
    partition: i32,
    settings: ProducerSettings,
    listener: DeliveryListener<M>,
    stats: Arc<ProducerStats>,
    /// The producer's buffer, given back a batch at a time.
    budget: Arc<Semaphore>,
    /// The leader's partition client, and the generation of the client it came from.
    connection: Option<(u64, Arc<PartitionClient>)>,
}

impl<M: Send + 'static> PartitionWriter<M> {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Pending<M>>) {
        while let Some(batch) = next_batch(
            &mut queue,
            &self.budget,
            self.settings.batch_bytes,
            self.settings.linger,
        )
        .await
        {
            self.deliver(batch).await;
        }
    }

    /// Sends one batch until it is acknowledged, fails for good, or its oldest
    /// record's deadline passes; then reports every record.
    async fn deliver(&mut self, batch: Batch<M>) {
        let Batch {
            records: batch,
            _held,
        } = batch;
        let deadline = batch
            .iter()
            .map(|p| p.deadline)
            .min()
            .expect("a batch is never empty");
        let mut backoff =
            Backoff::new(self.settings.retry_backoff, self.settings.retry_backoff_max);
        let mut attempts = 0u32;
        let outcome = loop {
            attempts += 1;
            // rskafka takes the records it sends: each attempt gets its own copy.
            let records = batch.iter().map(|p| p.record.clone()).collect();
            let error = match self.attempt(records).await {
                Ok(offsets) => break Ok(offsets),
                Err(error) => error,
            };
            if !is_retriable(&error) {
                break Err(format!("{error} (not retriable)"));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let pause = backoff.next_delay();
            if remaining <= pause {
                break Err(format!(
                    "delivery deadline of {:?} passed after {attempts} attempts; last error: {error}",
                    self.settings.delivery_timeout
                ));
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            if attempts == 1 || attempts.is_power_of_two() {
                tracing::warn!(
                    "produce to {}-{} failed (attempt {attempts}, {} records): {error}; retrying for up to {:?}",
                    self.topic,
                    self.partition,
                    batch.len(),
                    remaining
                );
            }
            Deadline::after(remaining).sleep(pause).await;
        };
        match outcome {
            Ok(offsets) => {
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .acked
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (pending, offset) in batch.into_iter().zip(offsets) {
                    (self.listener)(
                        pending.meta,
                        Delivery::Acked {
                            partition: self.partition,
                            offset,
                        },
                    );
                }
            }
            Err(reason) => {
                tracing::error!(
                    "{} records for {}-{} failed: {reason}",
                    batch.len(),
                    self.topic,
                    self.partition
                );
                self.stats
                    .failed
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for pending in batch {
                    (self.listener)(
                        pending.meta,
                        Delivery::Failed {
                            partition: self.partition,
                            reason: reason.clone(),
                        },
                    );
                }
            }
        }
    }

    /// One produce request, under the request timeout. A failure that can
    /// pass drops the cached partition client and replaces the shared client
    /// (see [`SharedClient`]): the next attempt starts with no cached
    /// connection or metadata, which may be what failed — a frozen broker
    /// never answers with an error, and a stale leader is asked again and again.
    async fn attempt(&mut self, records: Vec<Record>) -> Result<Vec<i64>, KafkaError> {
        let (generation, result) = self.produce(records).await;
        match &result {
            Ok(_) => {}
            Err(error) if is_retriable(error) => {
                self.connection = None;
                self.client.replace(generation).await;
            }
            Err(_) => {}
        }
        result
    }

    /// Looks the leader up when needed (rskafka asks the leader itself whether
    /// it leads), then produces; both within the request timeout. Returns the
    /// generation of the client used.
    async fn produce(&mut self, records: Vec<Record>) -> (u64, Result<Vec<i64>, KafkaError>) {
        let timeout = self.settings.request_timeout;
        let (generation, connection) = match &self.connection {
            Some((generation, connection)) => (*generation, Arc::clone(connection)),
            None => {
                let (generation, client) = self.client.current();
                let lookup = client.partition_client(
                    self.topic.clone(),
                    self.partition,
                    UnknownTopicHandling::Retry,
                );
                let connection = match tokio::time::timeout(timeout, lookup).await {
                    Ok(Ok(connection)) => {
                        crate::nodelay::sweep();
                        Arc::new(connection)
                    }
                    Ok(Err(e)) => return (generation, Err(e)),
                    Err(_) => return (generation, Err(KafkaError::Timeout)),
                };
                self.connection = Some((generation, Arc::clone(&connection)));
                (generation, connection)
            }
        };
        let compression = match self.settings.compression {
            Compression::None => rskafka::client::partition::Compression::NoCompression,
            Compression::Gzip => rskafka::client::partition::Compression::Gzip,
            Compression::Snappy => rskafka::client::partition::Compression::Snappy,
        };
        let result = tokio::time::timeout(timeout, connection.produce(records, compression))
            .await
            .unwrap_or(Err(KafkaError::Timeout));
        (generation, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as `send` queues it, its size taken from `budget`.
    fn pending(budget: &Arc<Semaphore>, value_bytes: usize, id: u32) -> Pending<u32> {
        let record = OutgoingRecord {
            key: b"k".to_vec(),
            value: vec![b'x'; value_bytes],
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
            meta: id,
        };
        let size = record.size();
        budget
            .try_acquire_many(size as u32)
            .expect("budget")
            .forget();
        let (record, meta) = record.into_kafka_record();
        Pending {
            record,
            size,
            meta,
            deadline: Instant::now() + Duration::from_secs(120),
        }
    }

    fn ids(batch: &Batch<u32>) -> Vec<u32> {
        batch.records.iter().map(|p| p.meta).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn records_within_the_linger_share_a_batch_and_later_ones_start_the_next() {
        let budget = Arc::new(Semaphore::new(100_000));
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(pending(&budget, 10, 1)).ok();
        let sender = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(3)).await;
                tx.send(pending(&budget, 10, 2)).ok();
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send(pending(&budget, 10, 3)).ok();
            })
        };
        let linger = Duration::from_millis(5);
        let first = next_batch(&mut rx, &budget, 1_000_000, linger)
            .await
            .unwrap();
        assert_eq!(ids(&first), [1, 2]);
        let second = next_batch(&mut rx, &budget, 1_000_000, linger)
            .await
            .unwrap();
        assert_eq!(ids(&second), [3]);
        sender.await.unwrap();
        assert!(
            next_batch(&mut rx, &budget, 1_000_000, linger)
                .await
                .is_none(),
            "closed and empty"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_once_it_holds_batch_bytes() {
        let budget = Arc::new(Semaphore::new(100_000));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for id in 0..5 {
            tx.send(pending(&budget, 1_000, id)).ok();
        }
        drop(tx);
        // Each record is about 1,065 bytes: the third one reaches 2,500.
        let sizes: Vec<Vec<u32>> = [
            next_batch(&mut rx, &budget, 2_500, Duration::from_secs(1))
                .await
                .unwrap(),
            next_batch(&mut rx, &budget, 2_500, Duration::from_secs(1))
                .await
                .unwrap(),
        ]
        .iter()
        .map(ids)
        .collect();
        assert_eq!(sizes, [vec![0, 1, 2], vec![3, 4]]);
        assert!(
            next_batch(&mut rx, &budget, 2_500, Duration::from_secs(1))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_record_holds_its_share_of_the_buffer_until_its_batch_is_done() {
        let one_record = 1 + 1 + RECORD_OVERHEAD;
        let budget = Arc::new(Semaphore::new(3 * one_record));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for id in 0..3 {
            tx.send(pending(&budget, 1, id)).ok();
        }
        assert_eq!(budget.available_permits(), 0, "a full buffer");
        let batch = next_batch(&mut rx, &budget, 1_000_000, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(batch.records.len(), 3);
        assert_eq!(budget.available_permits(), 0, "still held while in flight");
        drop(batch);
        assert_eq!(budget.available_permits(), 3 * one_record);
    }

    #[test]
    fn transient_errors_are_retried_and_permanent_ones_are_not() {
        let server = |protocol_error| KafkaError::ServerError {
            protocol_error,
            error_message: None,
            request: rskafka::client::error::RequestContext::Topic("t".into()),
            response: None,
            is_virtual: false,
        };
        assert!(is_retriable(&KafkaError::Timeout));
        assert!(is_retriable(&server(ProtocolError::NotEnoughReplicas)));
        assert!(is_retriable(&server(ProtocolError::NotLeaderOrFollower)));
        assert!(is_retriable(&server(ProtocolError::RequestTimedOut)));
        assert!(!is_retriable(&server(ProtocolError::MessageTooLarge)));
        assert!(!is_retriable(&server(
            ProtocolError::TopicAuthorizationFailed
        )));
        assert!(!is_retriable(&server(ProtocolError::InvalidRecord)));
    }
}
