//! How far a previous owner of a partition got, read back from the alert topic.
//!
//! A member that crashes loses the offsets it processed after its last commit;
//! the next owner reads those records again, and would send their alerts a
//! second time. Every alert names the record it came from (`source`: topic,
//! partition, offset), and records of a partition are processed in order, so
//! the highest source offset alerted from a partition proves that every record
//! up to it was processed. On taking over a partition the new owner reads the
//! recent tail of the alert topic and treats the records from its start offset
//! up to that point as duplicates: none of their alerts is sent again. Records
//! after the last alert are processed again, but they raised no alert.
//!
//! The reader goes through the replaceable shared client: a request that
//! times out or fails replaces it, so a frozen broker costs one timeout, not
//! every later read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

use crate::kafka::client::{SharedClient, bounded, records_between};
use crate::pipeline::sink::ProcessedThrough;
use crate::sensor::rules::{Alert, SourceRecord};

/// Reads the tail of the alert topic; see the module documentation.
pub struct AlertHistory {
    client: Arc<SharedClient>,
    alerts_topic: String,
    /// Alerts read back per alert-topic partition, at most.
    lookback: i64,
    timeout: Duration,
}

impl AlertHistory {
    /// Reads up to `lookback` recent alerts per partition of `alerts_topic`.
    pub fn new(
        client: Arc<SharedClient>,
        alerts_topic: &str,
        lookback: i64,
        timeout: Duration,
    ) -> Self {
        AlertHistory {
            client,
            alerts_topic: alerts_topic.to_string(),
            lookback,
            timeout,
        }
    }

    /// For each `(partition, start)` of `source_topic` in `starts`, the highest source
    /// offset at or after `start` that an alert names, when there is one. A
    /// failed read replaces the shared client before it returns the error.
    pub async fn processed_through(
        &self,
        source_topic: &str,
        starts: &[(i32, i64)],
    ) -> Result<HashMap<i32, i64>, KafkaError> {
        let (generation, _) = self.client.current();
        let result = self.read(source_topic, starts).await;
        if result.is_err() {
            self.client.replace(generation).await;
        }
        result
    }

    async fn read(
        &self,
        source_topic: &str,
        starts: &[(i32, i64)],
    ) -> Result<HashMap<i32, i64>, KafkaError> {
        let client = self.client.current().1;
        let topics = bounded(self.timeout, client.list_topics()).await?;
        let partitions = topics
            .into_iter()
            .find(|t| t.name == self.alerts_topic)
            .map(|t| t.partitions.len() as i32)
            .unwrap_or(0);
        // The partitions at once: each read opens a connection of its own,
        // and over TLS and SASL one after another they would add up.
        let tails = (0..partitions).map(|partition| self.sources_in(&client, partition));
        let mut found = ProcessedThrough::new(source_topic, starts);
        for source in futures_util::future::try_join_all(tails)
            .await?
            .iter()
            .flatten()
        {
            found.note(source);
        }
        Ok(found.into_map())
    }

    /// The sources named by the recent alerts of one partition of the alert topic.
    async fn sources_in(
        &self,
        client: &rskafka::client::Client,
        partition: i32,
    ) -> Result<Vec<SourceRecord>, KafkaError> {
        let partition = bounded(
            self.timeout,
            client.partition_client(
                self.alerts_topic.clone(),
                partition,
                UnknownTopicHandling::Retry,
            ),
        )
        .await?;
        let end = bounded(self.timeout, partition.get_offset(OffsetAt::Latest)).await?;
        let earliest = bounded(self.timeout, partition.get_offset(OffsetAt::Earliest)).await?;
        let from = earliest.max(end - self.lookback);
        Ok(records_between(&partition, from, end, self.timeout)
            .await?
            .into_iter()
            .filter_map(|record| {
                let alert = serde_json::from_slice::<Alert>(&record.record.value?).ok()?;
                alert.source
            })
            .collect())
    }
}
