//! Our side of each benchmark, run in a child process of its own.
//!
//! `metrocloud bench` starts `metrocloud bench-worker '<spec as JSON>'` for
//! every run of ours, exactly as it starts a JVM for every run of Kafka's, so
//! that CPU time and peak memory belong to one client and nothing else. The
//! worker takes its producer and consumer settings from the environment (the
//! `KAFKA_PRODUCER_*` and `KAFKA_CONSUMER_*` variables, inherited from
//! `metrocloud bench`, which passes the same values to the Java tools), does
//! its work, and prints one line of JSON with what it measured.

mod e2e;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::Brokers;
use crate::kafka::Headers;
use crate::kafka::consumer::OffsetReset;
use crate::kafka::consumer::{ConsumedRecord, ConsumerSpec, GroupConsumer, RecordProcessor};
use crate::kafka::producer::{Delivery, OutgoingRecord, Producer};
use crate::sensor::reading::ReadingView;
use crate::sensor::simulator::{Fleet, SimulatorSettings};
use crate::sensor::validate::validate;

use e2e::end_to_end;
pub use store::{StoreOutcome, StoreTarget, parquet_bytes};
/// The header carrying, in an end-to-end run, when the record was handed to the
/// producer: nanoseconds since the worker's start.
const SENT_HEADER: &str = "bench_sent_ns";
/// Records sent before an end-to-end run's clock starts, so that connections
/// and leader lookups are not counted as latency.
const WARMUP_HEADER: &str = "bench_warmup";

/// What a worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerSpec {
    /// Send `records` records as fast as the producer takes them, then flush.
    Produce {
        /// Bootstrap servers.
        bootstrap: Vec<String>,
        /// Topic.
        topic: String,
        /// Records to send.
        records: u64,
        /// What each record carries.
        payload: Payload,
    },
    /// Read `records` records from the start of `topic` in a new consumer group.
    Consume {
        /// Bootstrap servers.
        bootstrap: Vec<String>,
        /// Topic.
        topic: String,
        /// A group with no committed offsets.
        group: String,
        /// Records to read.
        records: u64,
    },
    /// Produce sensor readings at `rate` per second for `seconds` while
    /// consuming and validating them, timing each from send to processing.
    EndToEnd {
        /// Bootstrap servers.
        bootstrap: Vec<String>,
        /// A new, empty topic.
        topic: String,
        /// A group with no committed offsets.
        group: String,
        /// Offered records per second.
        rate: u32,
        /// How long to offer them.
        seconds: f64,
        /// Sensor readings, one JSON object per line.
        readings: PathBuf,
    },
    /// Store the first `records` readings of `topic` in a new group, then stop.
    Store {
        /// Bootstrap servers.
        bootstrap: Vec<String>,
        /// A pre-filled topic.
        topic: String,
        /// A group with no committed offsets.
        group: String,
        /// Readings to store.
        records: u64,
        /// Where.
        target: StoreTarget,
    },
    /// Run the simulated fleet at one reading per device per second, encoding
    /// every reading as it would be sent, without Kafka.
    Simulate {
        /// Devices.
        devices: u32,
        /// How long.
        seconds: f64,
    },
}

/// The value of each record, for ours and for Kafka's producer alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// The same `size` random bytes in every record, keyed by a device id.
    Size(usize),
    /// The lines of this file in turn, each a sensor reading keyed by its device.
    Readings(PathBuf),
}

/// What a producing worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProduceOutcome {
    /// Records acknowledged.
    pub acked: u64,
    /// Records that failed.
    pub failed: u64,
    /// Bytes of values sent.
    pub value_bytes: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed_secs: f64,
}

/// What a consuming worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumeOutcome {
    /// Records read.
    pub records: u64,
    /// Bytes of keys and values read.
    pub bytes: u64,
    /// From the start (connecting and joining the group included) to the last record.
    pub elapsed_secs: f64,
}

/// What an end-to-end worker measured; latencies in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndToEndOutcome {
    /// Offered rate.
    pub rate: u32,
    /// Records the schedule asked for.
    pub offered: u64,
    /// Records handed to the producer.
    pub sent: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Records consumed and validated (timed ones only).
    pub processed: u64,
    /// Records that failed validation (must be none).
    pub rejected: u64,
    /// Records the producer was behind its schedule when the offer ended.
    pub behind_at_end: u64,
    /// Records sent but not yet processed when the offer ended.
    pub lag_at_end: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Highest latency, µs.
    pub max_us: u64,
    /// Median time from send to acknowledgement (`acks=all`), µs.
    pub ack_p50_us: u64,
    /// 99th percentile of that, µs.
    pub ack_p99_us: u64,
}

impl EndToEndOutcome {
    /// Whether the pipeline kept up: when the offer ended, the producer was
    /// within a tenth of a second of its schedule and at most a tenth of a
    /// second of records waited for the consumer. A pipeline that falls behind
    /// ends far above both: its backlog grows for the whole run, first in
    /// Kafka and, once the producer's buffer is full, in the schedule.
    pub fn sustained(&self) -> bool {
        let tenth_of_a_second = u64::from(self.rate / 10).max(10);
        self.behind_at_end <= tenth_of_a_second
            && self.lag_at_end <= tenth_of_a_second
            && self.rejected == 0
    }
}

/// What a simulating worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimulateOutcome {
    /// Readings made and encoded.
    pub readings: u64,
    /// Bytes of JSON.
    pub bytes: u64,
    /// How long it ran.
    pub elapsed_secs: f64,
}

/// Why a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The spec could not be read.
    #[error("bad worker spec: {0}")]
    Spec(String),
    /// A payload file could not be read.
    #[error("cannot read {path}: {message}")]
    Payload {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The producer or consumer failed.
    #[error("{0}")]
    Kafka(String),
}

/// Runs the worker described by `spec` (JSON) and returns its outcome as one line of JSON.
pub async fn run(spec: &str, config: &Config) -> Result<String, WorkerError> {
    let spec: WorkerSpec =
        serde_json::from_str(spec).map_err(|e| WorkerError::Spec(e.to_string()))?;
    let line = match spec {
        WorkerSpec::Produce {
            bootstrap,
            topic,
            records,
            payload,
        } => json(
            &produce(
                config,
                brokers(config, bootstrap),
                &topic,
                records,
                &payload,
            )
            .await?,
        ),
        WorkerSpec::Consume {
            bootstrap,
            topic,
            group,
            records,
        } => json(&consume(config, brokers(config, bootstrap), &topic, &group, records).await?),
        WorkerSpec::EndToEnd {
            bootstrap,
            topic,
            group,
            rate,
            seconds,
            readings,
        } => json(
            &end_to_end(
                config,
                brokers(config, bootstrap),
                &topic,
                &group,
                rate,
                seconds,
                &readings,
            )
            .await?,
        ),
        WorkerSpec::Simulate { devices, seconds } => json(&simulate(devices, seconds).await),
        WorkerSpec::Store {
            bootstrap,
            topic,
            group,
            records,
            target,
        } => json(&store::store(config, &bootstrap, &topic, &group, records, &target).await?),
    };
    Ok(line)
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("outcomes serialize")
}

/// A record's key and value.
pub type KeyedPayload = (Bytes, Bytes);

/// Keys and values to send, in turn.
fn load_payloads(payload: &Payload) -> Result<Vec<KeyedPayload>, WorkerError> {
    match payload {
        Payload::Size(size) => {
            let value: Bytes = (0..*size).map(|i| b'A' + (i % 26) as u8).collect();
            Ok((0..1_000)
                .map(|i| (Bytes::from(format!("device-{i:06}")), value.clone()))
                .collect())
        }
        Payload::Readings(path) => load_readings(path),
    }
}

/// The lines of a readings file, each keyed by its `device_id`.
pub fn load_readings(path: &Path) -> Result<Vec<KeyedPayload>, WorkerError> {
    let failed = |message: String| WorkerError::Payload {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let payloads: Vec<KeyedPayload> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let reading = ReadingView::decode(line.as_bytes())
                .map_err(|e| failed(format!("not a sensor reading: {e}")))?;
            let key = reading.device_id.as_bytes().to_vec();
            validate(Some(&key), Some(line.as_bytes()))
                .map_err(|r| failed(format!("not a valid reading: {}", r.detail)))?;
            Ok((Bytes::from(key), Bytes::copy_from_slice(line.as_bytes())))
        })
        .collect::<Result<_, WorkerError>>()?;
    if payloads.is_empty() {
        return Err(failed("no readings in it".to_string()));
    }
    Ok(payloads)
}

/// `bootstrap`, reached as the worker's configuration says (a secure
/// cluster's user, when the benchmark runs on one).
fn brokers(config: &Config, bootstrap: Vec<String>) -> Brokers {
    Brokers::new(bootstrap, Arc::new(config.security.clone()))
}

async fn produce(
    config: &Config,
    bootstrap: Brokers,
    topic: &str,
    records: u64,
    payload: &Payload,
) -> Result<ProduceOutcome, WorkerError> {
    let payloads = load_payloads(payload)?;
    let failed = Arc::new(AtomicU64::new(0));
    let listener = {
        let failed = Arc::clone(&failed);
        Arc::new(move |(): (), delivery: Delivery| {
            if let Delivery::Failed { reason, .. } = delivery
                && failed.fetch_add(1, Ordering::Relaxed) == 0
            {
                eprintln!("a record failed: {reason}");
            }
        })
    };
    let shutdown = CancellationToken::new();
    let producer = Producer::connect(bootstrap, topic, &config.producer, listener, &shutdown)
        .await
        .map_err(|e| WorkerError::Kafka(e.to_string()))?;
    let mut value_bytes = 0u64;
    let started = Instant::now();
    for i in 0..records {
        let (key, value) = &payloads[(i % payloads.len() as u64) as usize];
        value_bytes += value.len() as u64;
        producer
            .send(OutgoingRecord {
                key: key.clone(),
                value: value.clone(),
                headers: Headers::new(),
                timestamp: Utc::now(),
                meta: (),
            })
            .await
            .map_err(|e| WorkerError::Kafka(e.to_string()))?;
    }
    producer.flush().await;
    let elapsed_secs = started.elapsed().as_secs_f64();
    let snapshot = producer.close().await;
    Ok(ProduceOutcome {
        acked: snapshot.acked,
        failed: failed.load(Ordering::Relaxed),
        value_bytes,
        elapsed_secs,
    })
}

/// Counts records until it has seen enough, then ends the run.
struct Counter {
    wanted: u64,
    records: u64,
    bytes: u64,
    finished_at: Option<Instant>,
    done: CancellationToken,
}

impl RecordProcessor for Counter {
    async fn process(&mut self, record: ConsumedRecord) {
        self.records += 1;
        self.bytes +=
            (record.key.map_or(0, |k| k.len()) + record.value.map_or(0, |v| v.len())) as u64;
        if self.records == self.wanted {
            self.finished_at = Some(Instant::now());
            self.done.cancel();
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

fn consumer_spec(config: &Config, bootstrap: Brokers, topic: &str, group: &str) -> ConsumerSpec {
    ConsumerSpec {
        bootstrap,
        topic: topic.to_string(),
        group_id: group.to_string(),
        auto_offset_reset: OffsetReset::Earliest,
        settings: config.consumer.clone(),
    }
}

async fn consume(
    config: &Config,
    bootstrap: Brokers,
    topic: &str,
    group: &str,
    records: u64,
) -> Result<ConsumeOutcome, WorkerError> {
    let started = Instant::now();
    let done = CancellationToken::new();
    let counter = Counter {
        wanted: records,
        records: 0,
        bytes: 0,
        finished_at: None,
        done: done.clone(),
    };
    let consumer = GroupConsumer::connect(
        consumer_spec(config, bootstrap, topic, group),
        counter,
        &done,
    )
    .await
    .map_err(|e| WorkerError::Kafka(e.to_string()))?
    .ok_or_else(|| WorkerError::Kafka("stopped before connecting".to_string()))?;
    let counter = consumer
        .run(done)
        .await
        .map_err(|e| WorkerError::Kafka(e.to_string()))?;
    let finished = counter.finished_at.unwrap_or_else(Instant::now);
    Ok(ConsumeOutcome {
        records: counter.records,
        bytes: counter.bytes,
        elapsed_secs: finished.duration_since(started).as_secs_f64(),
    })
}

async fn simulate(devices: u32, seconds: f64) -> SimulateOutcome {
    let settings = SimulatorSettings {
        num_devices: devices,
        interval: Duration::from_secs(1),
        device_types: crate::sensor::device::DeviceType::ALL.to_vec(),
        anomaly_probability: 0.05,
        seed: 7,
        fault_probability: 0.0,
        fault_kinds: crate::sensor::fault::FaultKind::ALL.to_vec(),
    };
    let mut fleet = Fleet::new(&settings, Utc::now());
    let run = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let (mut readings, mut bytes) = (0u64, 0u64);
    loop {
        let elapsed = started.elapsed();
        if elapsed >= run {
            break;
        }
        while let Some(reading) = fleet.next_due(elapsed) {
            bytes += reading.to_json().len() as u64;
            readings += 1;
        }
        let wait = fleet
            .next_due_at()
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        tokio::time::sleep(wait).await;
    }
    SimulateOutcome {
        readings,
        bytes,
        elapsed_secs: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests;
