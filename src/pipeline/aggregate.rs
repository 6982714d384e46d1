//! The aggregation stage: readings into per-device minute aggregates on the
//! aggregates topic, under a consumer group of its own.
//!
//! Each owned partition has a [`PartitionAggregator`]; the aggregates it
//! closes go to the same-numbered partition of the aggregates topic
//! (`acks=all`, in order). The consumer commits a partition no further than
//! the first record of its oldest open minute, and only after every
//! aggregate made so far is acknowledged ([`RecordProcessor::flush`]). On
//! taking a partition over, the last aggregate written for it is read back
//! ([`tail`]) and the aggregator resumes from it, so a crash, a restart or a
//! rebalance neither loses a minute nor writes one twice (see
//! [`crate::sensor::aggregate`] for why). The storage stage keeps the
//! aggregates topic like the readings.

pub mod tail;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::Headers;
use crate::kafka::client::{SharedClient, short_retries};
use crate::kafka::consumer::{
    ConsumedRecord, ConsumerError, ConsumerSpec, ConsumerStats, GroupConsumer, RecordProcessor,
};
use crate::kafka::producer::{OutgoingRecord, Producer, ProducerError};
use crate::kafka::retry::Backoff;
use crate::lock::lock;
use crate::pipeline::sinks::kafka::counting_listener;
use crate::sensor::aggregate::{MinuteAggregate, PartitionAggregator};
use crate::sensor::validate::validate;
use tail::AggregateTail;

/// Counters of the aggregation stage, shared with status lines.
#[derive(Debug, Default)]
pub struct AggregationStats {
    /// Valid readings taken.
    pub readings: AtomicU64,
    /// Aggregates sent to the aggregates topic.
    pub aggregates: AtomicU64,
    /// Readings that came after their minute was written, left out of it.
    pub late: AtomicU64,
    /// Records that are not valid readings (processing dead-letters them).
    pub invalid: AtomicU64,
    /// Aggregates Kafka did not take.
    pub delivery_failures: Arc<AtomicU64>,
    /// The current member's.
    pub consumer: Mutex<Arc<ConsumerStats>>,
}

/// Feeds consumed readings to per-partition aggregators; see the module documentation.
pub struct AggregateProcessor {
    producer: Producer<()>,
    tail: AggregateTail,
    grace_ms: i64,
    partitions: HashMap<i32, PartitionAggregator>,
    stats: Arc<AggregationStats>,
    failures_seen: u64,
    /// Why nothing more may be committed by this member.
    failure: Option<String>,
}

impl AggregateProcessor {
    /// A processor sending through `producer`, resuming partitions from `tail`.
    pub fn new(
        producer: Producer<()>,
        tail: AggregateTail,
        grace: Duration,
        stats: Arc<AggregationStats>,
    ) -> Self {
        AggregateProcessor {
            producer,
            tail,
            grace_ms: grace.as_millis() as i64,
            partitions: HashMap::new(),
            stats,
            failures_seen: 0,
            failure: None,
        }
    }

    async fn send(&mut self, aggregate: MinuteAggregate) {
        let partition = aggregate.source.partition % self.producer.partitions();
        let record = OutgoingRecord {
            key: Bytes::from(aggregate.device_id.clone()),
            value: Bytes::from(aggregate.to_json()),
            headers: Headers::new(),
            timestamp: Utc::now(),
            meta: (),
        };
        match self.producer.send_to(partition, record).await {
            Ok(()) => {
                self.stats.aggregates.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => self.failed(format!(
                "the aggregate of {} at {} was not sent: {error}",
                aggregate.device_id,
                aggregate.minute_text()
            )),
        }
    }

    fn failed(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
    }

    /// Closes the producer once every aggregate sent is delivered or failed.
    pub async fn close(self) {
        self.producer.close().await;
    }
}

impl RecordProcessor for AggregateProcessor {
    async fn process(&mut self, record: ConsumedRecord) {
        if self.failure.is_some() {
            return;
        }
        let Ok(reading) = validate(record.key.as_deref(), record.value.as_deref()) else {
            self.stats.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.stats.readings.fetch_add(1, Ordering::Relaxed);
        let grace_ms = self.grace_ms;
        let aggregator = self
            .partitions
            .entry(record.partition)
            .or_insert_with(|| PartitionAggregator::new(record.partition, grace_ms));
        let late = aggregator.late();
        let closed = aggregator.add(&reading, record.offset);
        if aggregator.late() > late {
            self.stats.late.fetch_add(1, Ordering::Relaxed);
        }
        for aggregate in closed {
            self.send(aggregate).await;
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.producer.flush().await;
        let failures = self.stats.delivery_failures.load(Ordering::Relaxed);
        if failures > self.failures_seen {
            self.failed(format!(
                "{} aggregates were not delivered",
                failures - self.failures_seen
            ));
            self.failures_seen = failures;
        }
        match &self.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    fn committable(&self, partition: i32, position: i64) -> i64 {
        self.partitions
            .get(&partition)
            .and_then(PartitionAggregator::low_water)
            .map_or(position, |first| first.min(position))
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        for partition in partitions {
            self.partitions.remove(partition);
        }
    }

    async fn partitions_assigned(&mut self, starts: &[(i32, i64)]) {
        let count = self.producer.partitions();
        // The partitions at once: each read opens a connection of its own.
        let tail = &self.tail;
        let lasts = futures_util::future::join_all(
            starts
                .iter()
                .map(|&(partition, _)| tail.last_of(partition, partition % count)),
        )
        .await;
        for (&(partition, start), last) in starts.iter().zip(lasts) {
            match last {
                Ok(last) => {
                    let aggregator = match last {
                        Some(source) => {
                            tracing::info!(
                                "partition {partition}: resuming aggregates from offset {start}, after the last one written (closed by offset {})",
                                source.offset
                            );
                            PartitionAggregator::resuming(
                                partition,
                                self.grace_ms,
                                start,
                                source.into(),
                            )
                        }
                        None => PartitionAggregator::new(partition, self.grace_ms),
                    };
                    self.partitions.insert(partition, aggregator);
                }
                Err(error) => self.failed(format!(
                    "cannot read the last aggregate of partition {partition}: {error}"
                )),
            }
        }
    }
}

/// Why the aggregation stage could not start or stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum AggregationError {
    /// The producer of aggregates did not start.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The consumer did not start, or stopped for good.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The client reading the last aggregates could not connect.
    #[error("cannot connect to read the last aggregates: {0}")]
    Tail(String),
}

/// The aggregation stage's group member, or `None` if shut down while connecting.
pub async fn aggregation_consumer(
    config: &Config,
    stats: &Arc<AggregationStats>,
    shutdown: &CancellationToken,
) -> Result<Option<GroupConsumer<AggregateProcessor>>, AggregationError> {
    let producer = Producer::connect(
        config.brokers(),
        &config.aggregates_topic,
        &config.producer,
        counting_listener(&stats.delivery_failures, "aggregate"),
        shutdown,
    )
    .await?;
    let timeout = config.consumer.request_timeout;
    let reader = SharedClient::connect(
        config.brokers(),
        "metrocloud-aggregate-tail",
        short_retries(timeout),
        timeout,
    )
    .await
    .map_err(|e| AggregationError::Tail(e.to_string()))?;
    let tail = AggregateTail::new(Arc::new(reader), &config.aggregates_topic, timeout);
    tracing::info!(
        "aggregating readings of {} per device and minute into {} (group {}, grace {:?})",
        config.topic,
        config.aggregates_topic,
        config.aggregate.group_id,
        config.aggregate.grace
    );
    let processor =
        AggregateProcessor::new(producer, tail, config.aggregate.grace, Arc::clone(stats));
    let spec = ConsumerSpec {
        bootstrap: config.brokers(),
        topic: config.topic.clone(),
        group_id: config.aggregate.group_id.clone(),
        auto_offset_reset: config.auto_offset_reset,
        settings: config.consumer.clone(),
    };
    Ok(GroupConsumer::connect(spec, processor, shutdown).await?)
}

/// Runs the aggregation stage until `shutdown`. When an aggregate is not
/// delivered, the member stops without committing, and a new one starts after
/// a pause from the last commit.
pub async fn run_aggregation(
    config: &Config,
    stats: &Arc<AggregationStats>,
    shutdown: CancellationToken,
) -> Result<(), AggregationError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let Some(consumer) = aggregation_consumer(config, stats, &shutdown).await? else {
            return Ok(());
        };
        *lock(&stats.consumer) = consumer.stats();
        match consumer.run(shutdown.clone()).await {
            Ok(processor) => {
                processor.close().await;
                return Ok(());
            }
            // The member logged why; nothing past the acknowledged aggregates was committed.
            Err(ConsumerError::Processing(_)) => {}
            Err(error) => return Err(error.into()),
        }
        let pause = backoff.next_delay();
        tracing::warn!("aggregating again in {pause:?}, from the last commit");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One status line: readings taken, aggregates written, late readings and lag.
pub fn aggregation_line(stats: &AggregationStats, elapsed: f64, previous: u64) -> (String, u64) {
    let consumer = lock(&stats.consumer).clone();
    let readings = stats.readings.load(Ordering::Relaxed);
    let rate = (readings - previous.min(readings)) as f64 / elapsed.max(1e-9);
    let line = format!(
        "aggregated {readings} readings ({rate:.0}/s) into {} minute aggregates, {} late readings left out, {} partitions owned, lag {}",
        stats.aggregates.load(Ordering::Relaxed),
        stats.late.load(Ordering::Relaxed),
        consumer.owned_partitions.load(Ordering::Relaxed),
        consumer.lag.load(Ordering::Relaxed)
    );
    (line, readings)
}

/// The closing line of the aggregation stage.
pub fn aggregation_summary(stats: &AggregationStats) -> String {
    format!(
        "aggregation summary: {} readings into {} minute aggregates, {} late readings left out, {} invalid records left out, {} aggregates not delivered",
        stats.readings.load(Ordering::Relaxed),
        stats.aggregates.load(Ordering::Relaxed),
        stats.late.load(Ordering::Relaxed),
        stats.invalid.load(Ordering::Relaxed),
        stats.delivery_failures.load(Ordering::Relaxed)
    )
}
