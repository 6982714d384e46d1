//! Alerts and dead letters to their Kafka topics: the pipeline's sink.
//!
//! Alerts go to the alert topic as JSON keyed by device; a dead letter goes to
//! the dead-letter topic with its original key, bytes and headers, plus
//! `dlq.*` headers saying why and where it came from. Both producers use
//! `acks=all`; `flush` waits until every record is acknowledged or has failed,
//! and fails if any did, so the consumer does not commit past a lost alert.
//! The alert topic is also the proof of what a previous owner of a partition
//! processed ([`history`]).

pub mod history;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};

use crate::kafka::Headers;
use crate::kafka::producer::{Delivery, DeliveryListener, OutgoingRecord, Producer};
use crate::pipeline::sink::{DeadLetter, Sink, SinkError};
use crate::sensor::rules::Alert;
use history::AlertHistory;

/// Dead-letter header: the reason code.
pub const DLQ_REASON: &str = "dlq.reason";
/// Dead-letter header: what exactly was wrong.
pub const DLQ_DETAIL: &str = "dlq.detail";
/// Dead-letter header: the topic the record came from.
pub const DLQ_SOURCE_TOPIC: &str = "dlq.source.topic";
/// Dead-letter header: its partition.
pub const DLQ_SOURCE_PARTITION: &str = "dlq.source.partition";
/// Dead-letter header: its offset.
pub const DLQ_SOURCE_OFFSET: &str = "dlq.source.offset";
/// Dead-letter header: when it was refused.
pub const DLQ_FAILED_AT: &str = "dlq.failed_at";

/// Alerts and dead letters to Kafka; see the module documentation.
pub struct KafkaSink {
    alerts: Producer<()>,
    dead_letters: Producer<()>,
    history: Option<AlertHistory>,
    /// Alerts and dead letters Kafka did not take, ever; shared with status lines.
    failures: Arc<AtomicU64>,
    /// `failures` at the last flush.
    failures_seen: u64,
}

/// A delivery listener that counts failures into `failures`.
pub fn counting_listener(failures: &Arc<AtomicU64>, what: &'static str) -> DeliveryListener<()> {
    let failures = Arc::clone(failures);
    Arc::new(move |(), delivery| {
        if let Delivery::Failed { reason, .. } = delivery {
            failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("{what} not delivered: {reason}");
        }
    })
}

impl KafkaSink {
    /// A sink writing through these producers, whose listeners count failures
    /// into `failures` (see [`counting_listener`]).
    pub fn new(alerts: Producer<()>, dead_letters: Producer<()>, failures: Arc<AtomicU64>) -> Self {
        KafkaSink {
            alerts,
            dead_letters,
            history: None,
            failures,
            failures_seen: 0,
        }
    }

    /// Reads `history` to learn what previous owners of partitions processed.
    pub fn with_history(mut self, history: AlertHistory) -> Self {
        self.history = Some(history);
        self
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// The dead letter as it is written: original key, value and headers, plus `dlq.*` headers.
pub fn dead_letter_record(letter: DeadLetter) -> OutgoingRecord<()> {
    let DeadLetter {
        record,
        reason,
        detail,
        refused_at,
    } = letter;
    let mut headers = record.headers;
    headers.insert(DLQ_REASON, reason.as_str());
    headers.insert(DLQ_DETAIL, detail);
    headers.insert(DLQ_SOURCE_TOPIC, record.topic.to_string());
    headers.insert(DLQ_SOURCE_PARTITION, record.partition.to_string());
    headers.insert(DLQ_SOURCE_OFFSET, record.offset.to_string());
    headers.insert(
        DLQ_FAILED_AT,
        refused_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    );
    OutgoingRecord {
        key: record.key.unwrap_or_default(),
        value: record.value.unwrap_or_default(),
        headers,
        timestamp: record.timestamp,
        meta: (),
    }
}

impl Sink for KafkaSink {
    async fn alert(&mut self, alert: Alert) {
        let record = OutgoingRecord {
            key: Bytes::from(alert.device_id.clone()),
            value: Bytes::from(alert.to_json()),
            headers: Headers::new(),
            timestamp: Utc::now(),
            meta: (),
        };
        if let Err(e) = self.alerts.send(record).await {
            self.failed();
            tracing::error!("alert for {} not sent: {e}", alert.device_id);
        }
    }

    async fn dead_letter(&mut self, letter: DeadLetter) {
        let (partition, offset) = (letter.record.partition, letter.record.offset);
        if let Err(e) = self.dead_letters.send(dead_letter_record(letter)).await {
            self.failed();
            tracing::error!("dead letter of partition {partition} offset {offset} not sent: {e}");
        }
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.alerts.flush().await;
        self.dead_letters.flush().await;
        let failures = self.failures.load(Ordering::Relaxed);
        if failures > self.failures_seen {
            let lost = failures - self.failures_seen;
            self.failures_seen = failures;
            return Err(SinkError::NotDelivered(lost));
        }
        Ok(())
    }

    async fn processed_through(
        &self,
        source_topic: &str,
        starts: &[(i32, i64)],
    ) -> Result<HashMap<i32, i64>, SinkError> {
        match &self.history {
            Some(history) => history
                .processed_through(source_topic, starts)
                .await
                .map_err(|e| SinkError::Unavailable(format!("cannot read the alert history: {e}"))),
            None => Ok(HashMap::new()),
        }
    }

    async fn close(self) {
        self.alerts.close().await;
        self.dead_letters.close().await;
    }
}
