//! The processing side: consumed records -> validation -> dedupe -> alert
//! rules and the fault detector.
//!
//! For each record: a record that is not a valid reading becomes a dead
//! letter with its reason; a reading seen before (same device, run and
//! sequence) is dropped; a new reading goes through the alert rules and the
//! fault detector once, and their alerts go to the sink. Devices silent
//! against the newest reading's time are looked for on every tick. When the
//! readings carry the simulator's ground truth, the detector's alerts are
//! judged against it ([`FaultJudge`]) for the console and `/metrics`. Before the consumer commits offsets it calls
//! [`RecordProcessor::flush`], which waits until the sink has made every alert
//! and dead letter durable, so a committed offset never hides an alert or a
//! bad record that was lost. The processor is generic over its [`Sink`], so
//! every decision here is tested without a cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;

use crate::kafka::consumer::{ConsumedRecord, RecordProcessor};
use crate::pipeline::audit::{AuditTotals, SequenceLedger, Verdict};
use crate::pipeline::observer::{ProcessingEvent, ProcessingObserver};
use crate::pipeline::sink::{DeadLetter, Sink};
use crate::sensor::detect::DetectorSettings;
use crate::sensor::detect::fleet::FleetDetector;
use crate::sensor::detect::quality::{FaultJudge, FaultQuality};
use crate::sensor::device::DeviceKey;
use crate::sensor::fault::FaultKind;
use crate::sensor::rules::{
    Alert, AlertKind, AlertQuality, AlertRules, AlertSettings, SourceRecord,
};
use crate::sensor::validate::{RejectReason, validate};

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
    /// Records sent to the dead-letter sink.
    pub dead_letters: AtomicU64,
    /// Alerts sent.
    pub alerts: AtomicU64,
    /// Alerts sent, by kind (indexed by [`AlertKind::index`]).
    pub alerts_by_kind: [AtomicU64; AlertKind::ALL.len()],
    /// Alert repeats counted on open episodes.
    pub alerts_suppressed: AtomicU64,
    /// Alerts or dead letters the sink did not take (counted by the sink).
    pub delivery_failures: Arc<AtomicU64>,
    /// Readings a threshold rule fired on that were injected anomalies.
    pub true_positives: AtomicU64,
    /// Readings a threshold rule fired on that were normal.
    pub false_positives: AtomicU64,
    /// Injected anomalies no threshold rule fired on.
    pub false_negatives: AtomicU64,
    /// The fault detector's alerts against the simulator's fault episodes,
    /// as of the last tick.
    pub fault_quality: std::sync::Mutex<FaultQuality>,
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

    /// The fault detector's quality as of the last tick.
    pub fn fault_quality(&self) -> FaultQuality {
        crate::lock::lock(&self.fault_quality).clone()
    }

    /// Alerts sent so far, by kind.
    pub fn alert_counts(&self) -> [u64; AlertKind::ALL.len()] {
        std::array::from_fn(|i| self.alerts_by_kind[i].load(Ordering::Relaxed))
    }

    fn count_quality(&self, fired: bool, anomalous: bool) {
        let counter = match (fired, anomalous) {
            (true, true) => &self.true_positives,
            (true, false) => &self.false_positives,
            (false, true) => &self.false_negatives,
            (false, false) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The processor the consumer runs; see the module documentation.
pub struct ReadingProcessor<S> {
    sink: S,
    rules: AlertRules,
    /// The fault detector, unless it is off.
    detector: Option<FleetDetector>,
    judge: FaultJudge,
    /// Per partition, the newest reading's time: the clock its devices'
    /// silences are measured against.
    newest: HashMap<i32, chrono::DateTime<Utc>>,
    ledger: SequenceLedger,
    device_partitions: HashMap<DeviceKey, i32>,
    dead_letter_reasons: BTreeMap<RejectReason, u64>,
    stats: Arc<ProcessingStats>,
    observer: Option<ProcessingObserver>,
    /// The topic read, for learning from the sink what a previous owner processed.
    source_topic: Option<String>,
    /// Per partition, the offset up to which a previous owner provably processed
    /// (it alerted from there): records up to it are duplicates when read again.
    processed_before: HashMap<i32, i64>,
}

impl<S: Sink> ReadingProcessor<S> {
    /// A processor writing alerts and dead letters to `sink`.
    pub fn new(
        sink: S,
        settings: AlertSettings,
        stats: Arc<ProcessingStats>,
        observer: Option<ProcessingObserver>,
    ) -> Self {
        ReadingProcessor {
            sink,
            rules: AlertRules::new(settings),
            detector: None,
            judge: FaultJudge::new(),
            newest: HashMap::new(),
            ledger: SequenceLedger::new(MAX_TRACKED_DEVICES),
            device_partitions: HashMap::new(),
            dead_letter_reasons: BTreeMap::new(),
            stats,
            observer,
            source_topic: None,
            processed_before: HashMap::new(),
        }
    }

    /// Runs the fault detector with `settings` beside the rules.
    pub fn detecting(mut self, settings: DetectorSettings) -> Self {
        self.detector = Some(FleetDetector::new(settings));
        self
    }

    /// On taking over partitions of `source_topic`, asks the sink which records a
    /// previous owner already alerted from, so that their alerts are not sent again.
    pub fn resuming_from_sink(mut self, source_topic: &str) -> Self {
        self.source_topic = Some(source_topic.to_string());
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

    /// The sink, to read what it holds.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Closes the sink, delivering what it holds.
    pub async fn close(self) {
        self.sink.close().await;
    }

    fn observe(&self, event: ProcessingEvent) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    async fn send_alert(&mut self, alert: Alert) {
        tracing::debug!(
            device_id = %alert.device_id,
            kind = alert.kind.as_str(),
            severity = ?alert.severity,
            value = alert.value,
            threshold = alert.threshold,
            repeats_suppressed = alert.repeats_suppressed,
            "alert"
        );
        self.stats.alerts.fetch_add(1, Ordering::Relaxed);
        self.stats.alerts_by_kind[alert.kind.index()].fetch_add(1, Ordering::Relaxed);
        if self.observer.is_some() {
            self.observe(ProcessingEvent::Alert(alert.clone()));
        }
        self.sink.alert(alert).await;
    }

    async fn dead_letter(&mut self, record: ConsumedRecord, reason: RejectReason, detail: String) {
        tracing::warn!(
            partition = record.partition,
            offset = record.offset,
            reason = reason.as_str(),
            "record refused as a dead letter: {detail}"
        );
        *self.dead_letter_reasons.entry(reason).or_default() += 1;
        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.observe(ProcessingEvent::DeadLetter {
            reason,
            partition: record.partition,
            offset: record.offset,
        });
        let letter = DeadLetter {
            record,
            reason,
            detail,
            refused_at: Utc::now(),
        };
        self.sink.dead_letter(letter).await;
    }

    /// The fault detector's verdict on `reading`, its alert if it raised one,
    /// and the judge's tally when the reading carries ground truth.
    fn detect(
        &mut self,
        reading: &crate::sensor::reading::SensorReading,
        partition: i32,
        source: SourceRecord,
    ) -> Option<Alert> {
        let detector = self.detector.as_mut()?;
        let newest = self.newest.entry(partition).or_insert(reading.timestamp);
        *newest = (*newest).max(reading.timestamp);
        self.judge.reading(
            &reading.device_id,
            reading.timestamp,
            reading.fault.as_ref(),
        );
        let verdict = detector.observe(reading);
        let fault = verdict.raised?;
        self.judge
            .alert(&reading.device_id, reading.timestamp, fault);
        Some(Alert::sensor_fault(
            reading,
            fault,
            verdict.score,
            Some(source),
        ))
    }

    /// Alerts for devices silent, by their own usual gaps, against the
    /// newest reading's time on their partition.
    async fn look_for_silences(&mut self) {
        let Some(detector) = self.detector.as_mut() else {
            return;
        };
        let (partitions, newest) = (&self.device_partitions, &self.newest);
        let silent = detector.silences(|device| {
            partitions
                .get(device)
                .and_then(|partition| newest.get(partition))
                .copied()
        });
        for (device, now) in silent {
            let Some(last) = self.rules.last_reading(&device) else {
                continue;
            };
            self.judge.alert(&device, now, FaultKind::Silence);
            let silent = (now - last.reading_time).num_milliseconds() as f64 / 1000.0;
            self.send_alert(Alert::sensor_silence(&device, &last, silent))
                .await;
        }
    }

    /// Whether the record repeats one already processed, here or by a previous owner.
    fn is_repeat(
        &mut self,
        record: &ConsumedRecord,
        device_id: &str,
        run_id: &str,
        seq: u64,
    ) -> bool {
        let verdict = self.ledger.observe(device_id, run_id, seq);
        let processed_before = self
            .processed_before
            .get(&record.partition)
            .is_some_and(|&through| record.offset <= through);
        processed_before || verdict == Verdict::Duplicate
    }
}

impl<S: Sink> RecordProcessor for ReadingProcessor<S> {
    async fn process(&mut self, record: ConsumedRecord) {
        let reading = match validate(record.key.as_deref(), record.value.as_deref()) {
            Ok(reading) => reading,
            Err(rejection) => {
                self.dead_letter(record, rejection.reason, rejection.detail)
                    .await;
                return;
            }
        };
        if self.is_repeat(
            &record,
            &reading.device_id,
            &reading.run_id,
            reading.sequence,
        ) {
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
        match self.device_partitions.get_mut(reading.device_id.as_str()) {
            Some(partition) => *partition = record.partition,
            None => {
                self.device_partitions.insert(
                    DeviceKey::from(reading.device_id.as_str()),
                    record.partition,
                );
            }
        }
        let evaluation = self.rules.on_reading(&reading, source_of(&record));
        self.stats
            .count_quality(evaluation.threshold_fired, reading.is_anomaly);
        self.stats.readings.fetch_add(1, Ordering::Relaxed);
        self.stats
            .alerts_suppressed
            .store(self.rules.counters().suppressed, Ordering::Relaxed);
        // Values out of every normal range are the rules' to alert; the
        // detector looks for the faults inside it.
        let fault_alert = if evaluation.threshold_fired {
            None
        } else {
            self.detect(&reading, record.partition, source_of(&record))
        };
        self.observe(ProcessingEvent::Reading {
            reading,
            partition: record.partition,
            offset: record.offset,
        });
        for alert in evaluation.alerts.into_iter().chain(fault_alert) {
            self.send_alert(alert).await;
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.sink.flush().await.map_err(|e| e.to_string())
    }

    async fn tick(&mut self) {
        for alert in self.rules.silent_devices() {
            self.send_alert(alert).await;
        }
        self.look_for_silences().await;
        *crate::lock::lock(&self.stats.fault_quality) = self.judge.quality().clone();
    }

    async fn partitions_assigned(&mut self, starts: &[(i32, i64)]) {
        let Some(topic) = &self.source_topic else {
            return;
        };
        match self.sink.processed_through(topic, starts).await {
            Ok(processed) => {
                for (partition, offset) in processed {
                    tracing::info!(
                        "partition {partition} was processed through offset {offset} by its previous owner (its last alert); records up to it are not processed again"
                    );
                    self.processed_before.insert(partition, offset);
                }
            }
            Err(e) => tracing::warn!("{e}; alerts of records read again may repeat"),
        }
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        for partition in partitions {
            self.processed_before.remove(partition);
            self.newest.remove(partition);
        }
        let moved: HashSet<DeviceKey> = self
            .device_partitions
            .iter()
            .filter(|(_, p)| partitions.contains(p))
            .map(|(d, _)| d.clone())
            .collect();
        self.device_partitions.retain(|d, _| !moved.contains(d));
        self.rules.forget(|d| moved.contains(d));
        if let Some(detector) = self.detector.as_mut() {
            detector.forget(|d| moved.contains(d));
        }
        self.ledger.forget(|d| moved.contains(d));
    }
}

/// Where `record` is, as alerts cite it.
fn source_of(record: &ConsumedRecord) -> SourceRecord {
    SourceRecord {
        topic: record.topic.to_string(),
        partition: record.partition,
        offset: record.offset,
    }
}

#[cfg(test)]
mod tests;
