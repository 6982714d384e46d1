//! One task per owned partition, fetching records in order into the consumer's queue.
//!
//! A fetcher long-polls its partition's leader through rskafka and hands each
//! batch to the consumer over a bounded channel: when processing is slower than
//! fetching, the channel fills and the fetcher waits, so memory stays bounded.
//! Errors that pass (a leader change, a broker gone) are retried with backoff;
//! a position outside the log is reset as `KAFKA_AUTO_OFFSET_RESET` says.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::OffsetReset;
use crate::kafka::client::SharedClient;
use crate::kafka::retry::Backoff;

/// Records fetched from one partition, in offset order.
#[derive(Debug)]
pub struct FetchedBatch {
    /// Partition.
    pub partition: i32,
    /// Which fetcher of this partition sent it; batches of a replaced fetcher are stale.
    pub fetcher_id: u64,
    /// The records.
    pub records: Vec<RecordAndOffset>,
}

/// What a fetcher needs.
pub struct FetcherSpec {
    /// The member's rskafka client; the fetcher makes a sibling of it with connections of its own.
    pub client: Arc<SharedClient>,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Tag for its batches.
    pub fetcher_id: u64,
    /// Where to start.
    pub start: i64,
    /// Where to go when the position is outside the log.
    pub reset: OffsetReset,
    /// Most bytes a fetch returns.
    pub max_bytes: usize,
    /// How long the broker may hold a fetch.
    pub max_wait: Duration,
    /// How long a request may take.
    pub request_timeout: Duration,
    /// Where to put batches.
    pub queue: mpsc::Sender<FetchedBatch>,
    /// The partition's high watermark, as last seen (for lag).
    pub high_watermark: Arc<AtomicI64>,
    /// Stops the fetcher.
    pub stop: CancellationToken,
}

/// The offset where reading starts for `reset`.
pub async fn reset_offset(
    partition: &PartitionClient,
    reset: OffsetReset,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    let at = match reset {
        OffsetReset::Earliest => OffsetAt::Earliest,
        OffsetReset::Latest => OffsetAt::Latest,
    };
    tokio::time::timeout(timeout, partition.get_offset(at))
        .await
        .unwrap_or(Err(KafkaError::Timeout))
}

/// Fetches until stopped.
pub async fn run_fetcher(spec: FetcherSpec) {
    // A client of its own: a broker answers one request per connection at a
    // time, and a long-polling fetch of a quiet partition would hold up the
    // fetches of every other partition on a shared connection.
    let client = tokio::select! {
        _ = spec.stop.cancelled() => return,
        client = spec.client.sibling() => client,
    };
    let mut offset = spec.start;
    // The leader's partition client, and the generation of the shared client
    // last used (the one to replace when a request through it fails).
    let mut connection: Option<PartitionClient> = None;
    let mut generation = client.current().0;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let max_bytes = i32::try_from(spec.max_bytes).unwrap_or(i32::MAX);
    let max_wait_ms = i32::try_from(spec.max_wait.as_millis()).unwrap_or(i32::MAX);
    let mut failures = 0u32;
    while !spec.stop.is_cancelled() {
        let result = async {
            if connection.is_none() {
                let (current, current_client) = client.current();
                generation = current;
                let lookup = current_client.partition_client(
                    spec.topic.clone(),
                    spec.partition,
                    UnknownTopicHandling::Retry,
                );
                connection = Some(
                    tokio::time::timeout(spec.request_timeout, lookup)
                        .await
                        .map_err(|_| KafkaError::Timeout)??,
                );
                crate::kafka::nodelay::sweep();
            }
            let partition = connection.as_ref().expect("connected above");
            let fetch = partition.fetch_records(offset, 1..max_bytes, max_wait_ms);
            tokio::time::timeout(spec.request_timeout + spec.max_wait, fetch)
                .await
                .unwrap_or(Err(KafkaError::Timeout))
        };
        let outcome = tokio::select! {
            _ = spec.stop.cancelled() => return,
            outcome = result => outcome,
        };
        match outcome {
            Ok((records, high_watermark)) => {
                failures = 0;
                backoff.reset();
                spec.high_watermark.store(high_watermark, Ordering::Relaxed);
                let records: Vec<RecordAndOffset> =
                    records.into_iter().filter(|r| r.offset >= offset).collect();
                let Some(last) = records.last() else { continue };
                let next = last.offset + 1;
                let batch = FetchedBatch {
                    partition: spec.partition,
                    fetcher_id: spec.fetcher_id,
                    records,
                };
                tokio::select! {
                    _ = spec.stop.cancelled() => return,
                    sent = spec.queue.send(batch) => if sent.is_err() { return },
                }
                offset = next;
            }
            Err(KafkaError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            }) => {
                let Some(partition) = connection.as_ref() else {
                    continue;
                };
                match reset_offset(partition, spec.reset, spec.request_timeout).await {
                    Ok(reset) => {
                        tracing::warn!(
                            "{}-{}: offset {offset} is outside the log; continuing from {reset} ({})",
                            spec.topic,
                            spec.partition,
                            spec.reset
                        );
                        offset = reset;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "{}-{}: cannot reset offset: {e}",
                            spec.topic,
                            spec.partition
                        );
                        connection = None;
                    }
                }
            }
            Err(error) => {
                failures += 1;
                connection = None;
                // A frozen broker's connections, or metadata naming a former
                // leader, may be cached anywhere in the client: start afresh.
                client.replace(generation).await;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(
                        "fetch from {}-{} at offset {offset} failed ({failures} in a row): {error}; retrying",
                        spec.topic,
                        spec.partition
                    );
                }
                tokio::select! {
                    _ = spec.stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}
