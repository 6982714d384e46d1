//! Steady load for a fault scenario, and the bookkeeping that judges it.
//!
//! The producer runs in this process, so every acknowledgement and every
//! failure is seen first-hand. The consumers are separate `metrocloud consume`
//! processes — a consumer can then be killed the way a crash kills it — and each
//! writes a processed log (one line per reading, written before its offset is
//! committed). A tailer task reads those logs as they grow, five times a
//! second whatever the scenario is doing, and feeds one [`DeliveryAudit`]
//! with both sides.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ChaosError;
use crate::config::Config;
use crate::kafka::producer::{Delivery, ProducerStats};
use crate::kafka::retry::{Backoff, Deadline};
use crate::lock::lock;
use crate::pipeline::observer::ProcessedLine;
use crate::pipeline::reconcile::{AuditReport, DeliveryAudit};
use crate::pipeline::run;
use crate::pipeline::sources::simulator::IngestSummary;
use crate::pipeline::wiring;
use crate::sensor::reading::SensorReading;

/// How often the processed logs are read.
const TAIL_EVERY: Duration = Duration::from_millis(200);

/// A point the scenario measures recovery from: the high watermark of every
/// partition at that moment. Recovered once every partition has processed a
/// record at or past it, i.e. one written after the mark.
#[derive(Debug)]
struct Mark {
    at: Instant,
    watermarks: Vec<i64>,
}

/// What both sides reported, in one place.
#[derive(Debug, Default)]
struct Observed {
    audit: DeliveryAudit,
    /// Repeats the consumers removed themselves (their `duplicate` lines).
    removed_duplicates: u64,
    /// Highest offset processed, per partition.
    processed_offset: Vec<i64>,
    mark: Option<Mark>,
    recovery: Option<Duration>,
    last_ack: Option<Instant>,
    longest_stall: Duration,
    /// (partition, offset) of every acknowledged reading, to check the topic itself.
    acked_at: HashMap<(i32, i64), (String, u64)>,
    /// The first processed log that could not be read.
    tail_error: Option<String>,
}

impl Observed {
    fn check_recovered(&mut self) {
        let Some(mark) = &self.mark else { return };
        if self.recovery.is_some() {
            return;
        }
        let caught_up = mark
            .watermarks
            .iter()
            .zip(&self.processed_offset)
            .all(|(&mark, &done)| done >= mark);
        if caught_up {
            self.recovery = Some(mark.at.elapsed());
        }
    }
}

/// One consumer process.
struct ConsumerProcess {
    child: Child,
    output: PathBuf,
}

/// How far a processed log has been read.
struct LogCursor {
    path: PathBuf,
    /// Bytes already read, and a line not yet complete.
    read: u64,
    partial: String,
}

/// The load of a scenario: a producer here, consumer processes beside it.
pub(super) struct Load {
    config: Config,
    run_id: String,
    dir: PathBuf,
    binary: PathBuf,
    observed: Arc<Mutex<Observed>>,
    consumers: Vec<ConsumerProcess>,
    cursors: Arc<Mutex<Vec<LogCursor>>>,
    tailer: JoinHandle<()>,
    /// Tasks that measure (watermark reads); aborted with the load.
    background: tokio::task::JoinSet<()>,
    producer_stats: Arc<Mutex<Option<Arc<ProducerStats>>>>,
    stop_ingest: CancellationToken,
    ingest: Option<JoinHandle<Result<IngestSummary, ChaosError>>>,
}

/// Counters of the producer at one moment (zero before it has connected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ProducerCounts {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
}

impl Load {
    /// Starts `consumers` consumer processes and the producer. Neither needs
    /// the cluster to be up yet: both wait for it.
    pub(super) async fn start(
        config: Config,
        dir: &Path,
        binary: &Path,
        consumers: usize,
    ) -> Result<Load, ChaosError> {
        std::fs::create_dir_all(dir).map_err(|e| ChaosError::io(dir, e))?;
        let fleet = wiring::fleet(&config);
        let run_id = fleet.run_id().to_string();
        let observed = Arc::new(Mutex::new(Observed {
            processed_offset: vec![-1; config.partitions as usize],
            ..Observed::default()
        }));
        let cursors = Arc::new(Mutex::new(Vec::new()));
        let mut load = Load {
            config,
            run_id,
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            tailer: spawn_tailer(Arc::clone(&observed), Arc::clone(&cursors)),
            observed,
            consumers: Vec::new(),
            cursors,
            background: tokio::task::JoinSet::new(),
            producer_stats: Arc::new(Mutex::new(None)),
            stop_ingest: CancellationToken::new(),
            ingest: None,
        };
        for _ in 0..consumers {
            load.add_consumer()?;
        }
        let listener = {
            let observed = Arc::clone(&load.observed);
            move |id: crate::pipeline::sources::simulator::ReadingId, delivery: Delivery| {
                let mut observed = lock(&observed);
                match delivery {
                    Delivery::Acked { partition, offset } => {
                        let now = Instant::now();
                        if let Some(last) = observed.last_ack {
                            observed.longest_stall = observed.longest_stall.max(now - last);
                        }
                        observed.last_ack = Some(now);
                        observed
                            .audit
                            .acked(id.device_id(), &id.run_id, id.sequence);
                        observed.acked_at.insert(
                            (partition, offset),
                            (id.device_id().to_string(), id.sequence),
                        );
                    }
                    Delivery::Failed { .. } => {
                        observed
                            .audit
                            .failed(id.device_id(), &id.run_id, id.sequence)
                    }
                }
            }
        };
        let config = load.config.clone();
        let stop = load.stop_ingest.clone();
        let stats_slot = Arc::clone(&load.producer_stats);
        load.ingest = Some(tokio::spawn(async move {
            let connected = move |stats| *lock(&stats_slot) = Some(stats);
            run::produce(&config, fleet, listener, connected, false, stop)
                .await?
                .ok_or(ChaosError::ProducerGone)
        }));
        Ok(load)
    }

    /// Starts one more consumer process.
    pub(super) fn add_consumer(&mut self) -> Result<(), ChaosError> {
        let n = self.consumers.len();
        let log = self.dir.join(format!("consumer-{n}.processed"));
        let output = self.dir.join(format!("consumer-{n}.log"));
        let child = super::stages::spawn_stage(
            &self.binary,
            &[
                "consume".as_ref(),
                "--processed-log".as_ref(),
                log.as_os_str(),
            ],
            &self.config,
            &output,
        )?;
        self.consumers.push(ConsumerProcess { child, output });
        lock(&self.cursors).push(LogCursor {
            path: log,
            read: 0,
            partial: String::new(),
        });
        Ok(())
    }

    /// Lets the load run for `duration` (the tailer keeps reading meanwhile).
    pub(super) async fn run_for(&self, duration: Duration) -> Result<(), ChaosError> {
        tokio::time::sleep(duration).await;
        self.tail_error()
    }

    /// Lets the load run until `done` holds, or `limit` passes; returns whether it held.
    pub(super) async fn run_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Load) -> bool,
    ) -> Result<bool, ChaosError> {
        let until = Instant::now() + limit;
        loop {
            self.tail_error()?;
            if done(self) {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(TAIL_EVERY).await;
        }
    }

    fn tail_error(&self) -> Result<(), ChaosError> {
        match &lock(&self.observed).tail_error {
            Some(error) => Err(ChaosError::Log(error.clone())),
            None => Ok(()),
        }
    }

    /// Whether every partition has had a reading processed.
    pub(super) fn every_partition_processed(&self) -> bool {
        lock(&self.observed)
            .processed_offset
            .iter()
            .all(|&offset| offset >= 0)
    }

    /// Measures recovery from `at`, the moment the fault struck (or was
    /// healed). The partitions' high watermarks are read afterwards, in a task
    /// of their own — a partition without a live leader answers only once it
    /// has one again — so that every record at or past them was surely written
    /// after `at`. Recovered once every partition has processed such a record.
    pub(super) fn mark(&mut self, at: Instant) {
        {
            let mut observed = lock(&self.observed);
            observed.mark = None;
            observed.recovery = None;
        }
        let config = self.config.clone();
        let observed = Arc::clone(&self.observed);
        self.background.spawn(async move {
            let deadline = Deadline::after(Duration::from_secs(120));
            let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
            loop {
                match high_watermarks(&config).await {
                    Ok(watermarks) => {
                        lock(&observed).mark = Some(Mark { at, watermarks });
                        return;
                    }
                    Err(e) if deadline.has_passed() => {
                        tracing::warn!("high watermarks not known within 120 s: {e}");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!("high watermarks not known yet: {e}");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        });
    }

    /// Time from the mark until every partition processed a record written after it.
    pub(super) fn recovery(&self) -> Option<Duration> {
        lock(&self.observed).recovery
    }

    /// The producer's counters now.
    pub(super) fn producer(&self) -> ProducerCounts {
        match lock(&self.producer_stats).as_ref() {
            Some(stats) => {
                let s = stats.snapshot();
                ProducerCounts {
                    sent: s.sent,
                    acked: s.acked,
                    failed: s.failed,
                }
            }
            None => ProducerCounts::default(),
        }
    }

    /// Readings the producer buffer holds at most.
    pub(super) fn buffer_records(&self) -> u64 {
        // A sensor reading's JSON is about 300 bytes; the producer adds its own overhead.
        self.config.producer.buffer_bytes as u64 / 300
    }

    /// Whether the producer task is still at work (it has not given up).
    pub(super) fn producer_running(&self) -> bool {
        self.ingest.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// SIGKILLs consumer `n`; returns once it is gone.
    pub(super) async fn kill_consumer(&mut self, n: usize) -> Result<(), ChaosError> {
        let consumer = &mut self.consumers[n];
        consumer
            .child
            .kill()
            .await
            .map_err(|e| ChaosError::io(&consumer.output, e))
    }

    /// Indexes of consumer processes that have exited, with how.
    pub(super) fn exited_consumers(&mut self) -> Vec<(usize, std::process::ExitStatus)> {
        self.consumers
            .iter_mut()
            .enumerate()
            .filter_map(|(n, c)| c.child.try_wait().ok().flatten().map(|status| (n, status)))
            .collect()
    }

    /// Whether consumer `n`'s output contains `text`.
    pub(super) fn consumer_output_contains(&self, n: usize, text: &str) -> bool {
        std::fs::read_to_string(&self.consumers[n].output)
            .map(|output| output.contains(text))
            .unwrap_or(false)
    }

    /// Stops the simulator; the producer then delivers (or fails) all it holds.
    pub(super) async fn stop_producing(&mut self) -> Result<IngestSummary, ChaosError> {
        self.stop_ingest.cancel();
        let task = self.ingest.take().ok_or(ChaosError::ProducerGone)?;
        task.await.map_err(|_| ChaosError::ProducerGone)?
    }

    /// Stops the consumers (SIGTERM, then SIGKILL after `grace`) and reads their last lines.
    pub(super) async fn stop_consumers(&mut self, grace: Duration) -> Result<(), ChaosError> {
        self.tailer.abort();
        for consumer in &self.consumers {
            if let Some(pid) = consumer.child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for consumer in &mut self.consumers {
            if tokio::time::timeout(grace, consumer.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "consumer {} did not stop within {grace:?}; killing it",
                    consumer.output.display()
                );
                let _ = consumer.child.kill().await;
            }
        }
        tail(&self.observed, &self.cursors);
        self.tail_error()
    }

    /// The reconciliation so far.
    pub(super) fn audit(&self) -> AuditReport {
        lock(&self.observed).audit.report()
    }

    /// Repeats removed by the consumers themselves.
    pub(super) fn removed_duplicates(&self) -> u64 {
        lock(&self.observed).removed_duplicates
    }

    /// The longest time between two acknowledgements.
    /// The scenario's folder: logs, processed logs, stored files.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every acknowledged reading by where it was acknowledged: (partition, offset) -> (device, sequence).
    pub(super) fn acked_at(&self) -> HashMap<(i32, i64), (String, u64)> {
        lock(&self.observed).acked_at.clone()
    }

    pub(super) fn longest_stall(&self) -> Duration {
        lock(&self.observed).longest_stall
    }

    /// Acknowledged readings that are not in the topic where their acknowledgement put them.
    pub(super) async fn acked_missing_from_topic(&self) -> Result<u64, ChaosError> {
        let timeout = self.config.consumer.request_timeout;
        let kafka = |e: rskafka::client::error::Error| ChaosError::Kafka(e.to_string());
        let client = within(
            timeout,
            crate::kafka::client::builder(&self.config.brokers()).build(),
        )
        .await?
        .map_err(kafka)?;
        let acked: HashMap<(i32, i64), (String, u64)> = lock(&self.observed).acked_at.clone();
        let mut found = 0u64;
        for partition in 0..self.config.partitions {
            let client = within(
                timeout,
                client.partition_client(&self.config.topic, partition, UnknownTopicHandling::Error),
            )
            .await?
            .map_err(kafka)?;
            let end = within(timeout, client.get_offset(OffsetAt::Latest))
                .await?
                .map_err(kafka)?;
            let mut offset = within(timeout, client.get_offset(OffsetAt::Earliest))
                .await?
                .map_err(kafka)?;
            while offset < end {
                let (records, _) =
                    within(timeout, client.fetch_records(offset, 1..4_000_000, 1_000))
                        .await?
                        .map_err(kafka)?;
                let Some(last) = records.last() else { break };
                offset = last.offset + 1;
                for record in records {
                    let Some(expected) = acked.get(&(partition, record.offset)) else {
                        continue;
                    };
                    let stored = record
                        .record
                        .value
                        .as_deref()
                        .and_then(|v| serde_json::from_slice::<SensorReading>(v).ok());
                    if stored.is_some_and(|r| {
                        r.device_id == expected.0
                            && r.sequence == expected.1
                            && r.run_id == self.run_id
                    }) {
                        found += 1;
                    }
                }
            }
        }
        Ok(acked.len() as u64 - found)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.tailer.abort();
    }
}

/// Reads the processed logs five times a second.
fn spawn_tailer(
    observed: Arc<Mutex<Observed>>,
    cursors: Arc<Mutex<Vec<LogCursor>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tail(&observed, &cursors);
            tokio::time::sleep(TAIL_EVERY).await;
        }
    })
}

/// Reads what the consumers wrote since the last call; keeps the first error.
fn tail(observed: &Mutex<Observed>, cursors: &Mutex<Vec<LogCursor>>) {
    let mut cursors = lock(cursors);
    let mut observed = lock(observed);
    for cursor in cursors.iter_mut() {
        if let Err(error) = tail_one(&mut observed, cursor) {
            observed.tail_error.get_or_insert(error);
        }
    }
    observed.check_recovered();
}

fn tail_one(observed: &mut Observed, cursor: &mut LogCursor) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("{}: {e}", cursor.path.display());
    let mut file = match std::fs::File::open(&cursor.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(e)),
    };
    file.seek(SeekFrom::Start(cursor.read)).map_err(failed)?;
    let mut text = String::new();
    let read = file.read_to_string(&mut text).map_err(failed)?;
    cursor.read += read as u64;
    cursor.partial.push_str(&text);
    let Some(end) = cursor.partial.rfind('\n') else {
        return Ok(());
    };
    let complete: String = cursor.partial.drain(..=end).collect();
    for line in complete.lines() {
        record_line(observed, line).ok_or_else(|| {
            format!(
                "{}: unreadable processed-log line {line:?}",
                cursor.path.display()
            )
        })?;
    }
    Ok(())
}

/// One line of a processed log into `observed`; `None` when it does not parse.
fn record_line(observed: &mut Observed, line: &str) -> Option<()> {
    match ProcessedLine::parse(line)? {
        ProcessedLine::Reading {
            device_id,
            run_id,
            sequence,
            partition,
            offset,
        } => {
            observed.audit.processed(device_id, run_id, sequence);
            let slot = observed
                .processed_offset
                .get_mut(usize::try_from(partition).ok()?)?;
            *slot = (*slot).max(offset);
        }
        ProcessedLine::Duplicate { .. } => observed.removed_duplicates += 1,
    }
    Some(())
}

async fn within<T>(
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> Result<T, ChaosError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| ChaosError::Kafka(format!("a request took longer than {limit:?}")))
}

/// The high watermark of every partition of the sensor topic.
async fn high_watermarks(config: &Config) -> Result<Vec<i64>, ChaosError> {
    let timeout = config.consumer.request_timeout;
    let kafka = |e: rskafka::client::error::Error| ChaosError::Kafka(e.to_string());
    let client = within(
        timeout,
        crate::kafka::client::builder(&config.brokers()).build(),
    )
    .await?
    .map_err(kafka)?;
    let mut marks = Vec::with_capacity(config.partitions as usize);
    for partition in 0..config.partitions {
        let client = within(
            timeout,
            client.partition_client(&config.topic, partition, UnknownTopicHandling::Retry),
        )
        .await?
        .map_err(kafka)?;
        marks.push(
            within(timeout, client.get_offset(OffsetAt::Latest))
                .await?
                .map_err(kafka)?,
        );
    }
    Ok(marks)
}
