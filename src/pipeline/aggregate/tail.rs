//! The last aggregate written for a partition of readings, read back from the
//! aggregates topic: where a new owner of the partition resumes (see
//! [`crate::sensor::aggregate`]).
//!
//! Aggregates of readings partition `p` are written to partition `p` of the
//! aggregates topic (or `p` modulo its partition count, when it has fewer),
//! in the order they were made, so the newest one naming `p` is the last
//! written for it. The reader walks back from the end in steps until it
//! finds one, or reaches the start. A failed read replaces the shared client,
//! so a frozen broker costs one timeout, not every later read.

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

use crate::kafka::client::{SharedClient, bounded, records_between};
use crate::sensor::aggregate::{AggregateSource, MinuteAggregate};

/// Offsets read per step back.
const STEP: i64 = 2_000;

/// Reads the aggregates topic's tail; see the module documentation.
pub struct AggregateTail {
    client: Arc<SharedClient>,
    topic: String,
    timeout: Duration,
}

impl AggregateTail {
    /// A reader of `topic`, each request within `timeout`.
    pub fn new(client: Arc<SharedClient>, topic: &str, timeout: Duration) -> Self {
        AggregateTail {
            client,
            topic: topic.to_string(),
            timeout,
        }
    }

    /// Where the last aggregate of readings partition `source` came from, if
    /// any was written; it is looked for in `partition` of the aggregates topic.
    pub async fn last_of(
        &self,
        source: i32,
        partition: i32,
    ) -> Result<Option<AggregateSource>, KafkaError> {
        let (generation, client) = self.client.current();
        let result = self.read(&client, source, partition).await;
        if result.is_err() {
            self.client.replace(generation).await;
        }
        result
    }

    async fn read(
        &self,
        client: &rskafka::client::Client,
        source: i32,
        partition: i32,
    ) -> Result<Option<AggregateSource>, KafkaError> {
        let reader = bounded(
            self.timeout,
            client.partition_client(self.topic.clone(), partition, UnknownTopicHandling::Retry),
        )
        .await?;
        let earliest = bounded(self.timeout, reader.get_offset(OffsetAt::Earliest)).await?;
        let mut end = bounded(self.timeout, reader.get_offset(OffsetAt::Latest)).await?;
        while end > earliest {
            let from = earliest.max(end - STEP);
            let mut found = None;
            for record in records_between(&reader, from, end, self.timeout).await? {
                let aggregate = record
                    .record
                    .value
                    .and_then(|value| serde_json::from_slice::<MinuteAggregate>(&value).ok());
                if let Some(aggregate) = aggregate
                    && aggregate.source.partition == source
                {
                    found = Some(aggregate.source);
                }
            }
            if found.is_some() {
                return Ok(found);
            }
            end = from;
        }
        Ok(None)
    }
}
