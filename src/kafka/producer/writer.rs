//! One partition's writer: sends its batches in order, one in flight, and
//! decides which failures are worth another attempt before the deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::batch::{Batch, Pending, next_batch};
use super::{Compression, Delivery, DeliveryListener, ProducerSettings, ProducerStats};
use crate::kafka::client::SharedClient;
use crate::kafka::retry::{Backoff, Deadline};

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

pub(super) struct PartitionWriter<M> {
    pub(super) client: Arc<SharedClient>,
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) settings: ProducerSettings,
    pub(super) listener: DeliveryListener<M>,
    pub(super) stats: Arc<ProducerStats>,
    /// The producer's buffer, given back a batch at a time.
    pub(super) budget: Arc<Semaphore>,
    /// The leader's partition client, and the generation of the client it came from.
    pub(super) connection: Option<(u64, Arc<PartitionClient>)>,
}

impl<M: Send + 'static> PartitionWriter<M> {
    pub(super) async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Pending<M>>) {
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
                        crate::kafka::nodelay::sweep();
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
