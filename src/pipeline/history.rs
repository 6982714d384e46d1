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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::Client;
use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

use crate::sensor::rules::Alert;

/// Reads the tail of the alert topic; see the module documentation.
pub struct AlertHistory {
    client: Arc<Client>,
    alerts_topic: String,
    /// Alerts read back per alert-topic partition, at most.
    lookback: i64,
    timeout: Duration,
}

impl AlertHistory {
    /// Reads up to `lookback` recent alerts per partition of `alerts_topic`.
    pub fn new(client: Arc<Client>, alerts_topic: &str, lookback: i64, timeout: Duration) -> Self {
        AlertHistory {
            client,
            alerts_topic: alerts_topic.to_string(),
            lookback,
            timeout,
        }
    }

    /// For each `(partition, start)` of `source_topic` in `starts`, the highest source
    /// offset at or after `start` that an alert names, when there is one.
    pub async fn processed_through(
        &self,
        source_topic: &str,
        starts: &[(i32, i64)],
    ) -> Result<HashMap<i32, i64>, KafkaError> {
        let timeout = self.timeout;
        let topics = tokio::time::timeout(timeout, self.client.list_topics())
            .await
            .map_err(|_| KafkaError::Timeout)??;
        let partitions = topics
            .into_iter()
            .find(|t| t.name == self.alerts_topic)
            .map(|t| t.partitions.len() as i32)
            .unwrap_or(0);
        let mut found: HashMap<i32, i64> = HashMap::new();
        for partition in 0..partitions {
            let client = tokio::time::timeout(
                timeout,
                self.client.partition_client(
                    self.alerts_topic.clone(),
                    partition,
                    UnknownTopicHandling::Retry,
                ),
            )
            .await
            .map_err(|_| KafkaError::Timeout)??;
            let end = tokio::time::timeout(timeout, client.get_offset(OffsetAt::Latest))
                .await
                .map_err(|_| KafkaError::Timeout)??;
            let earliest = tokio::time::timeout(timeout, client.get_offset(OffsetAt::Earliest))
                .await
                .map_err(|_| KafkaError::Timeout)??;
            let mut offset = earliest.max(end - self.lookback);
            while offset < end {
                let (records, _) = tokio::time::timeout(
                    timeout,
                    client.fetch_records(offset, 1..4 * 1024 * 1024, 100),
                )
                .await
                .map_err(|_| KafkaError::Timeout)??;
                let Some(last) = records.last() else { break };
                offset = last.offset + 1;
                for record in records {
                    let Some(value) = record.record.value else {
                        continue;
                    };
                    let Ok(alert) = serde_json::from_slice::<Alert>(&value) else {
                        continue;
                    };
                    let Some(source) = &alert.source else {
                        continue;
                    };
                    let after_start = starts
                        .iter()
                        .any(|&(p, start)| source.partition == p && source.offset >= start);
                    if source.topic == source_topic && after_start {
                        let highest = found.entry(source.partition).or_insert(source.offset);
                        *highest = (*highest).max(source.offset);
                    }
                }
            }
        }
        Ok(found)
    }
}
