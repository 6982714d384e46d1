//! The end-to-end worker: produce at a fixed rate and consume in the same
//! process, timing each reading from its send to the end of its processing:
//! validation, the threshold rules and (unless `DETECT_FAULTS=off`) the fault
//! detector, as the pipeline's consumer does (its alerts are not written).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::Headers;
use crate::kafka::consumer::{ConsumedRecord, GroupConsumer, RecordProcessor};
use crate::kafka::producer::{Delivery, OutgoingRecord, Producer};
use crate::sensor::detect::fleet::FleetDetector;
use crate::sensor::rules::{AlertRules, SourceRecord};
use crate::sensor::validate::validate;

use super::*;

/// Processes each reading and records how long it took from send to here.
struct LatencyRecorder {
    clock: Instant,
    histogram: Histogram<u64>,
    processed: Arc<AtomicU64>,
    rejected: u64,
    rules: AlertRules,
    detector: Option<FleetDetector>,
}

impl RecordProcessor for LatencyRecorder {
    async fn process(&mut self, record: ConsumedRecord) {
        match validate(record.key.as_deref(), record.value.as_deref()) {
            Ok(reading) => {
                let source = SourceRecord {
                    topic: record.topic.to_string(),
                    partition: record.partition,
                    offset: record.offset,
                };
                let evaluation = self.rules.on_reading(&reading, source);
                if let Some(detector) = self.detector.as_mut()
                    && !evaluation.threshold_fired
                {
                    std::hint::black_box(detector.observe(&reading));
                }
            }
            Err(_) => self.rejected += 1,
        }
        let now = self.clock.elapsed().as_nanos() as u64;
        if record.headers.contains_key(WARMUP_HEADER) {
            return;
        }
        let sent = record
            .headers
            .get(SENT_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(sent) = sent {
            self.histogram
                .saturating_record(now.saturating_sub(sent) / 1_000);
            self.processed.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

pub(super) async fn end_to_end(
    config: &Config,
    bootstrap: crate::kafka::Brokers,
    topic: &str,
    group: &str,
    rate: u32,
    seconds: f64,
    readings: &Path,
) -> Result<EndToEndOutcome, WorkerError> {
    let payloads = load_readings(readings)?;
    let clock = Instant::now();
    let processed = Arc::new(AtomicU64::new(0));
    let recorder = LatencyRecorder {
        clock,
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        processed: Arc::clone(&processed),
        rejected: 0,
        rules: AlertRules::new(config.alerts.clone()),
        detector: config
            .detect_faults
            .then(|| FleetDetector::new(config.detector.clone())),
    };
    let stop_consumer = CancellationToken::new();
    let consumer = GroupConsumer::connect(
        consumer_spec(config, bootstrap.clone(), topic, group),
        recorder,
        &stop_consumer,
    )
    .await
    .map_err(|e| WorkerError::Kafka(e.to_string()))?
    .ok_or_else(|| WorkerError::Kafka("stopped before connecting".to_string()))?;
    let consumer_stats = consumer.stats();
    let consumer_task = tokio::spawn(consumer.run(stop_consumer.clone()));

    // Each record's meta is when it was sent: the listener times its acknowledgement.
    let acks = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
    ));
    let listener = {
        let acks = Arc::clone(&acks);
        Arc::new(move |sent: Option<u64>, delivery: Delivery| {
            if let (Some(sent), Delivery::Acked { .. }) = (sent, delivery) {
                let now = clock.elapsed().as_nanos() as u64;
                if let Ok(mut h) = acks.lock() {
                    h.saturating_record(now.saturating_sub(sent) / 1_000);
                }
            }
        })
    };
    let never = CancellationToken::new();
    let producer = Producer::connect(bootstrap, topic, &config.producer, listener, &never)
        .await
        .map_err(|e| WorkerError::Kafka(e.to_string()))?;
    let record = |i: u64, headers: Headers, sent: Option<u64>| {
        let (key, value) = &payloads[(i % payloads.len() as u64) as usize];
        OutgoingRecord {
            key: key.clone(),
            value: value.clone(),
            headers,
            timestamp: Utc::now(),
            meta: sent,
        }
    };
    // Every partition gets a warm-up record, and the consumer must own every
    // partition, before the clock starts.
    let owned_by = Instant::now() + Duration::from_secs(60);
    while consumer_stats.owned_partitions.load(Ordering::Relaxed) < producer.partitions() as u64 {
        if Instant::now() > owned_by {
            return Err(WorkerError::Kafka(
                "the consumer was not assigned every partition within 60 s".to_string(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warmup_records = payloads.len().min(200) as u64;
    for i in 0..warmup_records {
        let warmup = Headers::one(WARMUP_HEADER, Bytes::new());
        producer
            .send(record(i, warmup, None))
            .await
            .map_err(|e| WorkerError::Kafka(e.to_string()))?;
    }
    producer.flush().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let offer = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= offer {
            break;
        }
        let due = (elapsed.as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let now = clock.elapsed().as_nanos() as u64;
            let headers = Headers::one(SENT_HEADER, now.to_string());
            producer
                .send(record(sent, headers, Some(now)))
                .await
                .map_err(|e| WorkerError::Kafka(e.to_string()))?;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let offered = (offer.as_secs_f64() * f64::from(rate)) as u64;
    let behind_at_end = offered.saturating_sub(sent);
    let lag_at_end = sent.saturating_sub(processed.load(Ordering::Relaxed));
    let snapshot_acked = {
        producer.flush().await;
        producer.stats().snapshot().acked
    };
    // Let the consumer finish what was sent, within a deadline.
    let drain_by = Instant::now() + Duration::from_secs(30);
    while processed.load(Ordering::Relaxed) < sent && Instant::now() < drain_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    producer.close().await;
    stop_consumer.cancel();
    let recorder = consumer_task
        .await
        .map_err(|e| WorkerError::Kafka(e.to_string()))?
        .map_err(|e| WorkerError::Kafka(e.to_string()))?;
    let h = &recorder.histogram;
    let acks = acks
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    Ok(EndToEndOutcome {
        rate,
        offered,
        sent,
        acked: snapshot_acked.saturating_sub(warmup_records),
        processed: processed.load(Ordering::Relaxed),
        rejected: recorder.rejected,
        behind_at_end,
        lag_at_end,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        ack_p50_us: acks.value_at_quantile(0.5),
        ack_p99_us: acks.value_at_quantile(0.99),
    })
}
