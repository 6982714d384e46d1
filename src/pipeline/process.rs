//! The processing side: consumed records -> validation -> dedupe -> alerts.
//!
//! For each record: a record that is not a valid reading goes to the
//! dead-letter topic with its original key, bytes and headers, plus headers
//! saying why and where it came from; a reading seen before (same device, run
//! and sequence) is dropped; a new reading goes through the alert rules, and
//! the alerts go to the alert topic and to the log. Before the consumer commits
//! offsets it calls [`RecordProcessor::flush`], which waits until every alert
//! and dead letter is acknowledged, so a committed offset never hides an alert
//! or a bad record that Kafka did not take.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{SecondsFormat, Utc};

use crate::kafka::consumer::{ConsumedRecord, RecordProcessor};
use crate::kafka::producer::{Delivery, DeliveryListener, OutgoingRecord, Producer};
use crate::pipeline::audit::{AuditTotals, SequenceLedger, Verdict};
use crate::pipeline::history::AlertHistory;
use crate::sensor::reading::SensorReading;
use crate::sensor::rules::{
    Alert, AlertQuality, AlertRules, AlertSettings, SourceRecord, threshold_breach,
};
use crate::sensor::validate::{RejectReason, validate};

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

/// Devices the sequence ledger tracks at most.
const MAX_TRACKED_DEVICES: usize = 2_000_000;

/// Counters of the processing side, shared with status lines.
#[derive(Debug, Default)]
pub struct ProcessingStats {
    /// Valid, new readings processed.
    pub readings: AtomicU64,
    /// Repeats dropped.
    pub duplicates: AtomicU64,
    /// Sequence numbers skipped and not seen since (possible loss upstream).
    pub sequence_gaps: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: AtomicU64,
    /// Alerts sent.
    pub alerts: AtomicU64,
    /// Alert repeats counted on open episodes.
    pub alerts_suppressed: AtomicU64,
    /// Alerts or dead letters Kafka did not take.
    pub delivery_failures: AtomicU64,
    /// Readings a threshold rule fired on that were injected anomalies.
    pub true_positives: AtomicU64,
    /// Readings a threshold rule fired on that were normal.
    pub false_positives: AtomicU64,
    /// Injected anomalies no threshold rule fired on.
    pub false_negatives: AtomicU64,
}

impl ProcessingStats {
    /// Alert quality against the simulator's ground truth so far.
    pub fn alert_quality(&self) -> AlertQuality {
        AlertQuality {
            true_positives: self.true_positives.load(Ordering::Relaxed),
            false_positives: self.false_positives.load(Ordering::Relaxed),
            false_negatives: self.false_negatives.load(Ordering::Relaxed),
        }
    }
}

/// Told about every processed record, for audits and tests.
pub type ProcessingObserver = Arc<dyn Fn(&ProcessingEvent) + Send + Sync>;

/// What happened to one record.
#[derive(Debug, Clone)]
pub enum ProcessingEvent {
    /// A new valid reading.
    Reading {
        /// The reading.
        reading: SensorReading,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// A repeat of a reading already processed.
    Duplicate {
        /// Device.
        device_id: String,
        /// Sequence.
        sequence: u64,
    },
    /// A record sent to the dead-letter topic.
    DeadLetter {
        /// Why.
        reason: RejectReason,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// An alert sent.
    Alert(Alert),
}

/// The processor the consumer runs; see the module documentation.
pub struct ReadingProcessor {
    alerts: Producer<()>,
    dead_letters: Producer<()>,
    rules: AlertRules,
    ledger: SequenceLedger,
    device_partitions: HashMap<String, i32>,
    dead_letter_reasons: BTreeMap<RejectReason, u64>,
    stats: Arc<ProcessingStats>,
    failures_seen: u64,
    observer: Option<ProcessingObserver>,
    history: Option<AlertHistory>,
    source_topic: Option<String>,
    /// Per partition, the offset up to which a previous owner provably processed
    /// (it alerted from there): records up to it are duplicates when read again.
    processed_before: HashMap<i32, i64>,
}

/// A delivery listener that counts failures into `stats`.
pub fn counting_listener(stats: &Arc<ProcessingStats>, what: &'static str) -> DeliveryListener<()> {
    let stats = Arc::clone(stats);
    Arc::new(move |(), delivery| {
        if let Delivery::Failed { reason, .. } = delivery {
            stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("{what} not delivered: {reason}");
        }
    })
}

impl ReadingProcessor {
    /// A processor writing alerts and dead letters through these producers (whose
    /// listeners should count failures into `stats`, see [`counting_listener`]).
    pub fn new(
        alerts: Producer<()>,
        dead_letters: Producer<()>,
        settings: AlertSettings,
        stats: Arc<ProcessingStats>,
        observer: Option<ProcessingObserver>,
    ) -> Self {
        ReadingProcessor {
            alerts,
            dead_letters,
            rules: AlertRules::new(settings),
            ledger: SequenceLedger::new(MAX_TRACKED_DEVICES),
            device_partitions: HashMap::new(),
            dead_letter_reasons: BTreeMap::new(),
            stats,
            failures_seen: 0,
            observer,
            history: None,
            source_topic: None,
            processed_before: HashMap::new(),
        }
    }

    /// On taking over partitions of `source_topic`, reads `history` to learn which
    /// readings a previous owner already alerted, so they are not alerted again.
    pub fn with_alert_history(mut self, source_topic: &str, history: AlertHistory) -> Self {
        self.source_topic = Some(source_topic.to_string());
        self.history = Some(history);
        self
    }

    /// The sequence ledger's totals.
    pub fn audit(&self) -> AuditTotals {
        self.ledger.totals()
    }

    /// Dead letters by reason.
    pub fn dead_letter_reasons(&self) -> &BTreeMap<RejectReason, u64> {
        &self.dead_letter_reasons
    }

    /// Closes the alert and dead-letter producers, delivering what they hold.
    pub async fn close(self) {
        self.alerts.close().await;
        self.dead_letters.close().await;
    }

    fn observe(&self, event: ProcessingEvent) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    async fn send_alert(&mut self, alert: Alert) {
        tracing::info!(
            device_id = %alert.device_id,
            kind = alert.kind.as_str(),
            severity = ?alert.severity,
            value = alert.value,
            threshold = alert.threshold,
            repeats_suppressed = alert.repeats_suppressed,
            "alert"
        );
        let record = OutgoingRecord {
            key: alert.device_id.clone().into_bytes(),
            value: alert.to_json(),
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
            meta: (),
        };
        if let Err(e) = self.alerts.send(record).await {
            self.stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("alert for {} not sent: {e}", alert.device_id);
        }
        self.stats.alerts.fetch_add(1, Ordering::Relaxed);
        self.observe(ProcessingEvent::Alert(alert));
    }

    async fn dead_letter(&mut self, record: ConsumedRecord, reason: RejectReason, detail: String) {
        tracing::warn!(
            partition = record.partition,
            offset = record.offset,
            reason = reason.as_str(),
            "record sent to the dead-letter topic: {detail}"
        );
        let mut headers = record.headers;
        headers.insert(DLQ_REASON.to_string(), reason.as_str().as_bytes().to_vec());
        headers.insert(DLQ_DETAIL.to_string(), detail.into_bytes());
        headers.insert(
            DLQ_SOURCE_TOPIC.to_string(),
            record.topic.as_bytes().to_vec(),
        );
        headers.insert(
            DLQ_SOURCE_PARTITION.to_string(),
            record.partition.to_string().into_bytes(),
        );
        headers.insert(
            DLQ_SOURCE_OFFSET.to_string(),
            record.offset.to_string().into_bytes(),
        );
        headers.insert(
            DLQ_FAILED_AT.to_string(),
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Millis, true)
                .into_bytes(),
        );
        let outgoing = OutgoingRecord {
            key: record.key.unwrap_or_default(),
            value: record.value.unwrap_or_default(),
            headers,
            timestamp: record.timestamp,
            meta: (),
        };
        if let Err(e) = self.dead_letters.send(outgoing).await {
            self.stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "dead letter of partition {} offset {} not sent: {e}",
                record.partition,
                record.offset
            );
        }
        *self.dead_letter_reasons.entry(reason).or_default() += 1;
        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.observe(ProcessingEvent::DeadLetter {
            reason,
            partition: record.partition,
            offset: record.offset,
        });
    }
}

impl RecordProcessor for ReadingProcessor {
    async fn process(&mut self, record: ConsumedRecord) {
        let reading = match validate(record.key.as_deref(), record.value.as_deref()) {
            Ok(reading) => reading,
            Err(rejection) => {
                self.dead_letter(record, rejection.reason, rejection.detail)
                    .await;
                return;
            }
        };
        let verdict = self
            .ledger
            .observe(&reading.device_id, &reading.run_id, reading.sequence);
        let processed_before = self
            .processed_before
            .get(&record.partition)
            .is_some_and(|&through| record.offset <= through);
        if processed_before || verdict == Verdict::Duplicate {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            self.observe(ProcessingEvent::Duplicate {
                device_id: reading.device_id,
                sequence: reading.sequence,
            });
            return;
        }
        self.stats
            .sequence_gaps
            .store(self.ledger.totals().missing, Ordering::Relaxed);
        self.device_partitions
            .insert(reading.device_id.clone(), record.partition);
        let source = SourceRecord {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
        };
        let fired = threshold_breach(self.rules.settings(), &reading).is_some();
        let counter = match (fired, reading.is_anomaly) {
            (true, true) => Some(&self.stats.true_positives),
            (true, false) => Some(&self.stats.false_positives),
            (false, true) => Some(&self.stats.false_negatives),
            (false, false) => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let alerts = self.rules.on_reading(&reading, source);
        self.stats.readings.fetch_add(1, Ordering::Relaxed);
        self.stats
            .alerts_suppressed
            .store(self.rules.counters().suppressed, Ordering::Relaxed);
        self.observe(ProcessingEvent::Reading {
            reading,
            partition: record.partition,
            offset: record.offset,
        });
        for alert in alerts {
            self.send_alert(alert).await;
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.alerts.flush().await;
        self.dead_letters.flush().await;
        let failures = self.stats.delivery_failures.load(Ordering::Relaxed);
        if failures > self.failures_seen {
            let lost = failures - self.failures_seen;
            self.failures_seen = failures;
            return Err(format!(
                "{lost} alert(s) or dead letter(s) were not acknowledged by Kafka"
            ));
        }
        Ok(())
    }

    async fn tick(&mut self) {
        for alert in self.rules.silent_devices() {
            self.send_alert(alert).await;
        }
    }

    async fn partitions_assigned(&mut self, starts: &[(i32, i64)]) {
        let (Some(history), Some(topic)) = (&self.history, &self.source_topic) else {
            return;
        };
        match history.processed_through(topic, starts).await {
            Ok(processed) => {
                for (partition, offset) in processed {
                    tracing::info!(
                        "partition {partition} was processed through offset {offset} by its previous owner (its last alert); records up to it are not processed again"
                    );
                    self.processed_before.insert(partition, offset);
                }
            }
            Err(e) => tracing::warn!(
                "cannot read the alert history ({e}); alerts of records read again may repeat"
            ),
        }
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        for partition in partitions {
            self.processed_before.remove(partition);
        }
        let moved: Vec<String> = self
            .device_partitions
            .iter()
            .filter(|(_, p)| partitions.contains(p))
            .map(|(d, _)| d.clone())
            .collect();
        for device in &moved {
            self.device_partitions.remove(device);
        }
        let moved: std::collections::HashSet<&str> = moved.iter().map(String::as_str).collect();
        self.rules.forget(|d| moved.contains(d));
        self.ledger.forget(|d| moved.contains(d));
    }
}
