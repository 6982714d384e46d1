//! Reliable delivery of records to one topic: batching, bounded buffering,
//! retries, and order kept within each partition.
//!
//! Produce requests are our own, built with `kafka-protocol` and sent over
//! connections this module opens: rskafka's produce path takes every record as
//! owned vectors copied into each attempt, keeps one batch in flight per
//! partition, and has no producer id, so it cannot retry without risking a
//! reordered or doubled partition. Fetching stays with rskafka.
//!
//! - **Partitioning**: a record's partition is Kafka's keyed default
//!   ([`crate::kafka::partitioner`]), so each device's readings stay in order on one
//!   partition.
//! - **One writer per partition** keeps up to `max_in_flight` batches on the
//!   way, each numbered under an idempotent producer id, so retries never
//!   reorder or double a partition ([`writer`]).
//! - **One sender per broker** puts the ready batches of every partition the
//!   broker leads into one request, one request at a time on its connection:
//!   brokers pay per request more than per byte, and work one request per
//!   connection at a time anyway ([`sender`]).
//! - **Adaptive linger**: a record on an idle partition goes out at once;
//!   while batches are in flight, records gather for up to `linger` or until a
//!   batch is full, and while the leader's connection carries a request, until
//!   it is free ([`linger`]).
//! - **Bounded memory**: every record holds its size in a byte budget
//!   (`buffer_bytes`) from [`Producer::send`] until it is acknowledged or has
//!   failed. When the budget is spent, `send` waits: a slow or absent cluster
//!   pushes back on whoever produces, and nothing grows without bound.
//!   Requests are encoded into reused buffers ([`encode`]).
//! - **Retries**: errors that can succeed later (a lost connection, a leader
//!   change, too few in-sync replicas, a timeout) are retried with exponential
//!   backoff and jitter, until the oldest record's delivery deadline. Errors
//!   that cannot succeed fail the batch at once. Every record ends in exactly
//!   one [`Delivery`], reported to the caller's listener: nothing fails
//!   silently.
//!
//! The pieces: [`batch`] holds a partition's records until a batch takes
//! them, [`linger`] decides when a batch goes, [`encode`] builds requests,
//! [`sender`] and [`wire`] carry them, [`answer`] reads what comes back,
//! [`route`] finds leaders and producer ids, and [`writer`] runs one partition.

mod answer;
mod batch;
mod connect;
mod encode;
mod inbox;
mod linger;
mod route;
mod sender;
pub mod settings;
mod wire;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kafka::admin::{AdminClient, Timeouts};
use crate::kafka::headers::Headers;
use crate::kafka::partitioner::partition_for_key;
use crate::kafka::security::Brokers;
use batch::Pending;
use connect::partition_count;
use encode::QueuedRecord;
use inbox::InboxSender;
use route::Route;
use sender::{SenderSettings, Senders};
use writer::PartitionWriter;

pub use settings::{Compression, ProducerSettings};

/// How the producer names itself to the brokers.
const CLIENT_ID: &str = "metrocloud-producer";

/// A record to send, with the caller's own data to get back with its delivery.
#[derive(Debug, Clone)]
pub struct OutgoingRecord<M> {
    /// Record key; decides the partition. Shared, not copied, until the
    /// record is encoded into its batch: a caller sending the same bytes
    /// again and again clones a `Bytes` and pays no copy.
    pub key: Bytes,
    /// Record value.
    pub value: Bytes,
    /// Record headers.
    pub headers: Headers,
    /// Record timestamp.
    pub timestamp: DateTime<Utc>,
    /// Whatever the caller needs to know which record a delivery is about.
    pub meta: M,
}

impl<M> OutgoingRecord<M> {
    /// Bytes the record holds in the producer's buffer: its key, value and
    /// headers, and the record's own place in the queue (in the simulator's
    /// readings, about a third of what a waiting record costs).
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len() + self.headers.byte_len() + record_overhead::<M>()
    }

    /// The record as it waits for its batch, and the caller's data. Key,
    /// value and headers move, not copy: the batch is encoded from them.
    fn into_queued(self) -> (QueuedRecord, M) {
        let record = QueuedRecord {
            key: self.key,
            value: self.value,
            headers: self.headers,
            timestamp_ms: self.timestamp.timestamp_millis(),
        };
        (record, self.meta)
    }
}

/// Bytes a waiting record costs besides its key, value and headers.
pub(crate) fn record_overhead<M>() -> usize {
    std::mem::size_of::<Pending<M>>()
}

/// Encodes Produce requests as the producer does, with no broker: the
/// per-record cost of a batch, for benchmarks.
pub struct BatchEncoding {
    encoder: encode::Encoder,
    shape: encode::RequestShape,
    compression: Compression,
}

impl BatchEncoding {
    /// Requests for partition 0 of `topic`.
    pub fn new(topic: &str, compression: Compression) -> Self {
        BatchEncoding {
            encoder: encode::Encoder::default(),
            shape: encode::RequestShape::new(topic, Duration::from_secs(30), CLIENT_ID),
            compression,
        }
    }

    /// Encodes `records` as one numbered batch in a Produce request and
    /// returns the request's size; its buffers are reused by the next call.
    pub fn encode<M>(&mut self, records: impl IntoIterator<Item = OutgoingRecord<M>>) -> usize {
        let batch: Vec<QueuedRecord> = records.into_iter().map(|r| r.into_queued().0).collect();
        let identity = encode::ProducerIdentity { id: 1, epoch: 0 };
        let encoded = self
            .encoder
            .record_batch(self.compression, identity, 0, batch.iter())
            .expect("records built from OutgoingRecord always encode");
        let request = self
            .encoder
            .produce_request(
                &self.shape,
                wire::MAX_PRODUCE_VERSION,
                &[(0, encoded.clone())],
            )
            .expect("a batch always fits a request");
        let size = request.len();
        self.encoder.recycle(request);
        self.encoder.recycle(encoded);
        size
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
    /// The cluster refused the client (credentials, rights, or security
    /// protocol); asking again cannot help.
    #[error("{0}")]
    Refused(String),
    /// A single record larger than the whole buffer.
    #[error("a record of {size} bytes is larger than the producer buffer of {buffer} bytes")]
    RecordTooLarge {
        /// Record size.
        size: usize,
        /// Buffer size.
        buffer: usize,
    },
    /// A partition the topic does not have.
    #[error("the topic has {partitions} partitions, no partition {partition}")]
    NoSuchPartition {
        /// The partition asked for.
        partition: i32,
        /// The topic's partition count.
        partitions: i32,
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
    /// Why the cluster refused this producer's writes (authorization), once
    /// it has: `send` then takes no more records.
    pub refused: std::sync::OnceLock<String>,
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
/// Sends records to one topic; see the module documentation.
pub struct Producer<M> {
    topic: String,
    partitions: i32,
    /// Each partition's inbox; dropping them closes the writers' inboxes.
    inboxes: Vec<InboxSender<Pending<M>>>,
    budget: Arc<Semaphore>,
    buffer_bytes: usize,
    stats: Arc<ProducerStats>,
    writers: JoinSet<()>,
}

impl<M: Send + 'static> Producer<M> {
    /// Connects to the cluster (retrying with backoff until `shutdown`), learns the
    /// topic's partitions and starts one writer per partition.
    pub async fn connect(
        brokers: impl Into<Brokers>,
        topic: &str,
        settings: &ProducerSettings,
        listener: DeliveryListener<M>,
        shutdown: &CancellationToken,
    ) -> Result<Self, ProducerError> {
        let timeouts = Timeouts {
            connect: settings
                .request_timeout
                .min(std::time::Duration::from_secs(5)),
            request: settings.request_timeout,
        };
        let admin = AdminClient::new(brokers, timeouts);
        let security = Arc::clone(admin.security());
        let connection = security.describe();
        let route = Arc::new(Route::new(admin, topic));
        let partitions = partition_count(&route, topic, settings, shutdown).await?;
        let senders = Arc::new(Senders::new(SenderSettings {
            shape: encode::RequestShape::new(topic, settings.request_timeout, CLIENT_ID),
            request_timeout: settings.request_timeout,
            spacing: settings.request_spacing,
            security,
        }));
        let stats = Arc::new(ProducerStats::default());
        let budget = Arc::new(Semaphore::new(settings.buffer_bytes));
        let mut writers = JoinSet::new();
        let mut inboxes = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            // Unbounded on its own, but every record in it holds part of the byte budget.
            let (sender, inbox) = inbox::inbox(settings.batch_bytes);
            inboxes.push(sender);
            let writer = PartitionWriter {
                route: Arc::clone(&route),
                senders: Arc::clone(&senders),
                topic: topic.to_string(),
                partition,
                settings: settings.clone(),
                listener: Arc::clone(&listener),
                stats: Arc::clone(&stats),
                budget: Arc::clone(&budget),
            };
            writers.spawn(writer.run(inbox));
        }
        tracing::info!(
            "producer ready: topic {topic} over {connection}, {partitions} partitions, linger up to {:?}, {} batches in flight per partition, batches up to {} bytes, buffer {} bytes, compression {}",
            settings.linger,
            settings.max_in_flight,
            settings.batch_bytes,
            settings.buffer_bytes,
            settings.compression
        );
        Ok(Producer {
            topic: topic.to_string(),
            partitions,
            inboxes,
            budget,
            buffer_bytes: settings.buffer_bytes,
            stats,
            writers,
        })
    }

    /// Queues a record for the partition its key hashes to; waits while the buffer is full.
    pub async fn send(&self, record: OutgoingRecord<M>) -> Result<(), ProducerError> {
        let partition = partition_for_key(&record.key, self.partitions);
        self.send_to(partition, record).await
    }

    /// Queues a record for `partition`, whatever its key; waits while the buffer is full.
    pub async fn send_to(
        &self,
        partition: i32,
        record: OutgoingRecord<M>,
    ) -> Result<(), ProducerError> {
        if !(0..self.partitions).contains(&partition) {
            return Err(ProducerError::NoSuchPartition {
                partition,
                partitions: self.partitions,
            });
        }
        if let Some(reason) = self.stats.refused.get() {
            return Err(ProducerError::Refused(reason.clone()));
        }
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
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let (record, meta) = record.into_queued();
        let pending = Pending {
            record,
            size,
            meta,
            gathered_at: Instant::now(),
        };
        if self.inboxes[partition as usize].push(pending, size) {
            Ok(())
        } else {
            Err(ProducerError::Closed)
        }
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
        self.inboxes.clear();
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
