//! Browsing a topic's records: newest first, from an offset or a time, with a
//! filter on key and value; and the record at an offset (for a group's time
//! behind).
//!
//! Browsing reads backwards in windows from the starting point and stops once
//! it has enough matches or has scanned [`MAX_SCANNED`] records per
//! partition, so a filter that matches nothing costs a bounded amount of work.

use super::lock;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use serde::{Deserialize, Serialize};

use crate::kafka::client::SharedClient;

/// Records shown at most per request.
pub const MAX_LIMIT: usize = 200;
/// Records scanned at most per partition per request.
pub const MAX_SCANNED: i64 = 20_000;
/// Records read per backward window.
const WINDOW: i64 = 500;
/// Value bytes shown at most.
const MAX_VALUE_BYTES: usize = 16 * 1024;

/// What to browse.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BrowseQuery {
    /// One partition, or every partition when absent.
    pub partition: Option<i32>,
    /// Show records at or before this offset (needs `partition`).
    pub offset: Option<i64>,
    /// Show records written before this time (RFC 3339 or ms since the epoch).
    pub time: Option<String>,
    /// How many, at most [`MAX_LIMIT`] (default 50).
    pub limit: Option<usize>,
    /// Only records whose key or value contains this text.
    pub filter: Option<String>,
}

/// One record, as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp (RFC 3339, ms).
    pub timestamp: String,
    /// Key as text (lossy).
    pub key: Option<String>,
    /// Value as text (lossy, cut at 16 KiB).
    pub value: Option<String>,
    /// The value as indented JSON, when it is JSON.
    pub pretty: Option<String>,
    /// Headers as text (lossy).
    pub headers: BTreeMap<String, String>,
}

impl MessageView {
    /// The view of one fetched record.
    pub fn of(partition: i32, record: &RecordAndOffset) -> MessageView {
        let value = record.record.value.as_deref();
        let pretty = value
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            .filter(|v| v.is_object() || v.is_array())
            .and_then(|v| serde_json::to_string_pretty(&v).ok());
        MessageView {
            partition,
            offset: record.offset,
            timestamp: record
                .record
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            key: record
                .record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: value
                .map(|v| String::from_utf8_lossy(&v[..v.len().min(MAX_VALUE_BYTES)]).into_owned()),
            pretty,
            headers: record
                .record
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        }
    }

    fn matches(&self, filter: &str) -> bool {
        self.key.as_deref().is_some_and(|k| k.contains(filter))
            || self.value.as_deref().is_some_and(|v| v.contains(filter))
    }
}

/// What went wrong browsing.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// The request does not make sense.
    #[error("{0}")]
    BadRequest(String),
    /// Kafka failed or timed out.
    #[error("reading {topic}/{partition}: {source}")]
    Kafka {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Why.
        source: KafkaError,
    },
}

/// Which records of a partition to show: up to `limit`, at or before
/// `offset`, written before `before_ms`, whose key or value contains `filter`.
#[derive(Debug, Clone, Copy)]
struct Slice<'a> {
    offset: Option<i64>,
    before_ms: Option<i64>,
    filter: Option<&'a str>,
    limit: usize,
}

/// Partition clients by topic and partition, with the generation of the
/// client that made them.
type PartitionClients = HashMap<(String, i32), (u64, Arc<PartitionClient>)>;

/// Reads records on demand; see the module documentation.
pub struct RecordReader {
    client: Arc<SharedClient>,
    timeout: Duration,
    /// Partition clients, with the generation of the client that made them.
    partitions: std::sync::Mutex<PartitionClients>,
}

impl RecordReader {
    /// A reader over `client`, every call bounded by `timeout`.
    pub fn new(client: Arc<SharedClient>, timeout: Duration) -> Self {
        RecordReader {
            client,
            timeout,
            partitions: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The client, for followers.
    pub fn client(&self) -> &Arc<SharedClient> {
        &self.client
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, KafkaError> {
        crate::kafka::client::bounded(self.timeout, call).await
    }

    async fn partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, KafkaError> {
        let (generation, client) = self.client.current();
        let key = (topic.to_string(), partition);
        if let Some((made_by, cached)) = lock(&self.partitions).get(&key)
            && *made_by == generation
        {
            return Ok(Arc::clone(cached));
        }
        let outcome = self
            .bounded(client.partition_client(
                topic.to_string(),
                partition,
                UnknownTopicHandling::Error,
            ))
            .await;
        if matches!(
            outcome,
            Err(KafkaError::Timeout | KafkaError::Connection(_))
        ) {
            self.client.replace(generation).await;
        }
        let client = Arc::new(outcome?);
        lock(&self.partitions).insert(key, (generation, Arc::clone(&client)));
        Ok(client)
    }

    /// The timestamp (ms since the epoch) of the record at `offset`, if one is there.
    pub async fn timestamp_at(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<i64>, KafkaError> {
        let client = self.partition(topic, partition).await?;
        let (records, _) = self
            .bounded(client.fetch_records(offset, 1..64 * 1024, 0))
            .await?;
        Ok(records
            .iter()
            .find(|r| r.offset >= offset)
            .map(|r| r.record.timestamp.timestamp_millis()))
    }

    /// Records of `topic` per `query`, newest first.
    pub async fn browse(
        &self,
        topic: &str,
        partitions: &[i32],
        query: &BrowseQuery,
    ) -> Result<Vec<MessageView>, BrowseError> {
        let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
        if query.offset.is_some() && query.partition.is_none() {
            return Err(BrowseError::BadRequest(
                "an offset needs a partition".to_string(),
            ));
        }
        let before_ms = match query.time.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(text) => Some(parse_time(text).ok_or_else(|| {
                BrowseError::BadRequest(format!(
                    "time {text:?}: expected RFC 3339 (2026-01-31T12:00:00Z) or milliseconds since the epoch"
                ))
            })?),
        };
        let chosen: Vec<i32> = match query.partition {
            Some(p) if partitions.contains(&p) => vec![p],
            Some(p) => {
                return Err(BrowseError::BadRequest(format!(
                    "topic {topic} has no partition {p}"
                )));
            }
            None => partitions.to_vec(),
        };
        let filter = query.filter.as_deref().filter(|f| !f.is_empty());
        let slice = Slice {
            offset: query.offset,
            before_ms,
            filter,
            limit,
        };
        let reads = chosen
            .into_iter()
            .map(|partition| self.browse_partition(topic, partition, &slice));
        let mut found: Vec<MessageView> = futures_util::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        // Across partitions, newest first by time, then offset.
        found.sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then(b.offset.cmp(&a.offset)));
        found.truncate(limit);
        Ok(found)
    }

    /// The records of one partition that `slice` asks for, newest first. After
    /// a failure the partition's client is made anew on the next request.
    async fn browse_partition(
        &self,
        topic: &str,
        partition: i32,
        slice: &Slice<'_>,
    ) -> Result<Vec<MessageView>, BrowseError> {
        let outcome = self.read_partition(topic, partition, slice).await;
        if outcome.is_err() {
            lock(&self.partitions).remove(&(topic.to_string(), partition));
        }
        outcome
    }

    async fn read_partition(
        &self,
        topic: &str,
        partition: i32,
        slice: &Slice<'_>,
    ) -> Result<Vec<MessageView>, BrowseError> {
        let Slice {
            offset,
            before_ms,
            filter,
            limit,
        } = *slice;
        let kafka = |source| BrowseError::Kafka {
            topic: topic.to_string(),
            partition,
            source,
        };
        let client = self.partition(topic, partition).await.map_err(kafka)?;
        let earliest = self
            .bounded(client.get_offset(OffsetAt::Earliest))
            .await
            .map_err(kafka)?;
        let latest = self
            .bounded(client.get_offset(OffsetAt::Latest))
            .await
            .map_err(kafka)?;
        // `end` is one past the newest record to show.
        let mut end = latest;
        if let Some(offset) = offset {
            end = end.min(offset + 1);
        }
        if let Some(ms) = before_ms {
            let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
            let first_after = self
                .bounded(client.get_offset(OffsetAt::Timestamp(at)))
                .await
                .map_err(kafka)?;
            if first_after >= 0 {
                end = end.min(first_after);
            }
        }
        // Without a filter, the newest `limit` records are all there is to read.
        let window = if filter.is_some() {
            WINDOW
        } else {
            limit as i64
        };
        let floor = earliest.max(end - MAX_SCANNED);
        let mut matched: Vec<MessageView> = Vec::new();
        while end > floor && matched.len() < limit {
            let start = floor.max(end - window);
            let records = self.window(&client, start, end).await.map_err(kafka)?;
            for record in records.iter().rev() {
                let view = MessageView::of(partition, record);
                if filter.is_none_or(|f| view.matches(f)) {
                    matched.push(view);
                    if matched.len() == limit {
                        break;
                    }
                }
            }
            end = start;
        }
        Ok(matched)
    }

    /// The records at offsets `start..end`.
    async fn window(
        &self,
        client: &PartitionClient,
        start: i64,
        end: i64,
    ) -> Result<Vec<RecordAndOffset>, KafkaError> {
        let mut records = Vec::new();
        let mut next = start;
        while next < end {
            // About 1 KiB a record: enough for readings in one fetch, without
            // reading far past `end` on a long partition.
            let max_bytes =
                ((end - next).saturating_mul(1024)).clamp(64 * 1024, 4 * 1024 * 1024) as i32;
            let (batch, _) = self
                .bounded(client.fetch_records(next, 1..max_bytes, 0))
                .await?;
            let Some(last) = batch.last().map(|r| r.offset) else {
                break;
            };
            records.extend(
                batch
                    .into_iter()
                    .filter(|r| r.offset >= next && r.offset < end),
            );
            next = last + 1;
        }
        Ok(records)
    }
}

/// RFC 3339, or milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}
