//! The pipeline's three ways to run, as library calls.
//!
//! - [`produce`]: the simulated fleet into Kafka (`metrocloud produce`, and the
//!   load of `metrocloud chaos`).
//! - [`consume`]: Kafka through processing into the sinks (`metrocloud consume`).
//! - [`run`]: both in one process, reconciled by the delivery audit
//!   (`metrocloud run`): after the producer stops, the consumer goes on until
//!   it has processed every acknowledged reading, as long as it keeps making
//!   progress ([`CatchUp`]): a consumer that fell behind under full load is
//!   given the time to finish rather than reported as having lost readings
//!   that are safe in Kafka. A second signal stops it at once.
//!
//! Each makes sure the topics exist first, waiting for a cluster that is not
//! up yet, and returns `None` when shut down before the cluster answered. Each
//! returns a summary whose `Display` is the line the command line prints.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::consumer::{ConsumerError, ConsumerStats};
use crate::kafka::producer::{Delivery, ProducerError, ProducerStats};
use crate::kafka::topics::TopicError;
use crate::lock::lock;
use crate::pipeline::aggregate::{self, AggregationStats};
use crate::pipeline::audit::AuditTotals;
use crate::pipeline::observer::{ProcessingEvent, ProcessingObserver, fan_out};
use crate::pipeline::process::ProcessingStats;
use crate::pipeline::reconcile::{AuditReport, DeliveryAudit};
use crate::pipeline::sources::simulator::{IngestSummary, ReadingId, run_ingest};
use crate::pipeline::status::{processing_line, run_line, spawn_status};
use crate::pipeline::store::{self, StorageStats, StoreSummary};
use crate::pipeline::wiring::Stage;
use crate::pipeline::wiring::{self, ProcessingStartError};
use crate::sensor::simulator::Fleet;
use crate::sensor::validate::RejectReason;

/// How long `run` goes on waiting, after the producer stopped, once the
/// consumer has processed nothing more: it is stuck (no broker answers, say).
pub const CATCH_UP_STALL: Duration = Duration::from_secs(30);
/// How often the catch-up says how much is left.
const CATCH_UP_PROGRESS: Duration = Duration::from_secs(5);

/// The wait for the consumer after the producer stopped: it goes on while
/// acknowledged readings are unprocessed and the number of them keeps falling.
#[derive(Debug)]
pub struct CatchUp {
    stall: Duration,
    fewest: u64,
    fewest_at: Instant,
}

/// What the catch-up makes of the readings still unprocessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUpStep {
    /// Every acknowledged reading was processed.
    Done,
    /// Still making progress (or not stalled for long): wait.
    Wait,
    /// Nothing more was processed for the stall limit: stop waiting.
    Stalled,
}

impl CatchUp {
    /// A catch-up starting at `now` that gives up after `stall` without progress.
    pub fn new(now: Instant, stall: Duration) -> Self {
        CatchUp {
            stall,
            fewest: u64::MAX,
            fewest_at: now,
        }
    }

    /// The step to take with `unprocessed` acknowledged readings left at `now`.
    pub fn step(&mut self, unprocessed: u64, now: Instant) -> CatchUpStep {
        if unprocessed == 0 {
            return CatchUpStep::Done;
        }
        if unprocessed < self.fewest {
            self.fewest = unprocessed;
            self.fewest_at = now;
        }
        if now.duration_since(self.fewest_at) >= self.stall {
            CatchUpStep::Stalled
        } else {
            CatchUpStep::Wait
        }
    }
}

/// Why the pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The topics could not be made ready.
    #[error(transparent)]
    Topics(#[from] TopicError),
    /// The reading producer could not start.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The processing side could not start.
    #[error(transparent)]
    Start(#[from] ProcessingStartError),
    /// The aggregation stage could not start, or stopped for good.
    #[error(transparent)]
    Aggregation(#[from] crate::pipeline::aggregate::AggregationError),
    /// The storage stage could not start, or stopped for good.
    #[error(transparent)]
    Storage(#[from] crate::pipeline::store::StorageError),
    /// The consumer stopped for good.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The consumer's task ended without a result (it panicked).
    #[error("the consumer task failed: {0}")]
    ConsumerTask(String),
    /// What was attached to the running pipeline (the console) could not start.
    #[error("{0}")]
    Attach(String),
}

/// The counters of a pipeline running in this process, for the console.
#[derive(Clone)]
pub struct Counters {
    /// The reading producer's.
    pub producer: Arc<ProducerStats>,
    /// The group consumer's.
    pub consumer: Arc<ConsumerStats>,
    /// Validation, alerts and dead letters.
    pub processing: Arc<ProcessingStats>,
    /// Acknowledged against processed readings.
    pub delivery: Arc<Mutex<DeliveryAudit>>,
}

/// Makes sure the topics `stage` uses exist, waiting for the cluster;
/// `false` when shut down meanwhile.
pub async fn topics_ready(
    config: &Config,
    stage: Stage,
    shutdown: &CancellationToken,
) -> Result<bool, TopicError> {
    match wiring::ensure_topics(config, &stage.topics(config), shutdown).await {
        Ok(()) => Ok(true),
        Err(TopicError::Cancelled) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends `fleet`'s readings until `shutdown`, each delivery also told to
/// `listener`; `connected` gets the producer's counters once it runs. With
/// `status`, prints a status line every few seconds.
pub async fn produce(
    config: &Config,
    fleet: Fleet,
    listener: impl Fn(ReadingId, Delivery) + Send + Sync + 'static,
    connected: impl FnOnce(Arc<ProducerStats>),
    status: bool,
    shutdown: CancellationToken,
) -> Result<Option<IngestSummary>, PipelineError> {
    if !topics_ready(config, Stage::Produce, &shutdown).await? {
        return Ok(None);
    }
    let producer = wiring::reading_producer(config, listener, &shutdown).await?;
    let stats = producer.stats();
    connected(Arc::clone(&stats));
    let status = status.then(|| {
        spawn_status(shutdown.clone(), None, move |elapsed, previous| {
            let now = stats.snapshot();
            let rate = (now.sent - previous) as f64 / elapsed;
            let line = format!(
                "producer: {rate:.0} readings/s, sent {}, acked {}, failed {}, retries {}, pending {}",
                now.sent,
                now.acked,
                now.failed,
                now.retries,
                now.pending()
            );
            (line, now.sent)
        })
    });
    let summary = run_ingest(fleet, producer, None, shutdown).await;
    if let Some(status) = status {
        status.abort();
    }
    Ok(Some(summary?))
}

/// What `consume` did.
#[derive(Debug, Clone)]
pub struct ConsumeSummary {
    /// Counters of processing.
    pub stats: Arc<ProcessingStats>,
    /// Dead letters by reason.
    pub reasons: BTreeMap<RejectReason, u64>,
    /// The sequence ledger's totals.
    pub sequences: AuditTotals,
}

impl fmt::Display for ConsumeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = &self.stats;
        write!(
            f,
            "consumer summary: {} readings, {} duplicates removed, {} dead letters {:?}, {} alerts ({} repeats suppressed), sequence gaps {}, out of order {}",
            stats.readings.load(Ordering::Relaxed),
            stats.duplicates.load(Ordering::Relaxed),
            stats.dead_letters.load(Ordering::Relaxed),
            self.reasons
                .iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect::<Vec<_>>(),
            stats.alerts.load(Ordering::Relaxed),
            stats.alerts_suppressed.load(Ordering::Relaxed),
            self.sequences.missing,
            self.sequences.out_of_order
        )
    }
}

/// Consumes, processes and writes alerts and dead letters until `shutdown`,
/// telling `observer` of every outcome; prints a status line every few seconds.
pub async fn consume(
    config: &Config,
    observer: Option<ProcessingObserver>,
    shutdown: CancellationToken,
) -> Result<Option<ConsumeSummary>, PipelineError> {
    if !topics_ready(config, Stage::Consume, &shutdown).await? {
        return Ok(None);
    }
    let stats = Arc::new(ProcessingStats::default());
    let Some(consumer) = wiring::processing_consumer(config, &stats, observer, &shutdown).await?
    else {
        return Ok(None);
    };
    let consumer_stats = consumer.stats();
    let status = spawn_status(shutdown.clone(), Some(Arc::clone(&stats)), {
        let stats = Arc::clone(&stats);
        move |elapsed, previous| processing_line(&stats, &consumer_stats, elapsed, previous)
    });
    let outcome = consumer.run(shutdown).await;
    status.abort();
    let processor = outcome?;
    let summary = ConsumeSummary {
        stats,
        reasons: processor.dead_letter_reasons().clone(),
        sequences: processor.audit(),
    };
    processor.close().await;
    Ok(Some(summary))
}

/// Stores readings until `shutdown`, with a status line every few seconds.
pub async fn store(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<Option<StoreSummary>, PipelineError> {
    if !topics_ready(config, Stage::Store, &shutdown).await? {
        return Ok(None);
    }
    let stats = Arc::new(StorageStats::default());
    let status = spawn_status(shutdown.clone(), None, {
        let stats = Arc::clone(&stats);
        move |elapsed, previous| store::storage_line(&stats, elapsed, previous)
    });
    let outcome = store::run_storage(config, &stats, shutdown).await;
    status.abort();
    outcome?;
    Ok(Some(store::summary(&stats)))
}

/// Aggregates readings per device and minute until `shutdown`, with a status
/// line every few seconds; returns the closing line.
pub async fn aggregate(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<Option<String>, PipelineError> {
    if !topics_ready(config, Stage::Aggregate, &shutdown).await? {
        return Ok(None);
    }
    let stats = Arc::new(AggregationStats::default());
    let status = spawn_status(shutdown.clone(), None, {
        let stats = Arc::clone(&stats);
        move |elapsed, previous| aggregate::aggregation_line(&stats, elapsed, previous)
    });
    let outcome = aggregate::run_aggregation(config, &stats, shutdown).await;
    status.abort();
    outcome?;
    Ok(Some(aggregate::aggregation_summary(&stats)))
}

/// What `run` did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The producer side.
    pub ingest: IngestSummary,
    /// Acknowledged against processed.
    pub delivery: AuditReport,
    /// The sequence ledger's totals.
    pub sequences: AuditTotals,
    /// Counters of processing.
    pub stats: Arc<ProcessingStats>,
    /// The storage stage's, when it ran.
    pub storage: Option<StoreSummary>,
    /// The aggregation stage's closing line.
    pub aggregation: String,
}

impl RunSummary {
    /// What went wrong, when something did: readings not delivered, acknowledged
    /// readings not processed, alerts or dead letters not delivered.
    pub fn failures(&self) -> Option<String> {
        let undelivered = self.stats.delivery_failures.load(Ordering::Relaxed);
        let failed = self.ingest.producer.failed;
        let lost = self.delivery.lost;
        (failed + lost + undelivered > 0).then(|| {
            format!(
                "{failed} readings failed, {lost} acknowledged readings were not processed (they stay in Kafka for the consumer group's next member), {undelivered} alerts or dead letters were not delivered"
            )
        })
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (delivery, stats) = (&self.delivery, &self.stats);
        writeln!(f, "{}", self.ingest)?;
        writeln!(
            f,
            "pipeline summary: acked {}, failed {}, processed {}, lost {}, processed twice {}, out of order {}, duplicates removed {}, dead letters {}, alerts {} ({} repeats suppressed), sequence gaps {}, alert/dead-letter delivery failures {}",
            delivery.acked,
            delivery.failed,
            delivery.consumed,
            delivery.lost,
            delivery.duplicates,
            delivery.out_of_order,
            stats.duplicates.load(Ordering::Relaxed),
            stats.dead_letters.load(Ordering::Relaxed),
            stats.alerts.load(Ordering::Relaxed),
            stats.alerts_suppressed.load(Ordering::Relaxed),
            self.sequences.missing,
            stats.delivery_failures.load(Ordering::Relaxed),
        )?;
        if let Some(storage) = &self.storage {
            writeln!(f, "{storage}")?;
        }
        writeln!(f, "{}", self.aggregation)?;
        let quality = stats.alert_quality();
        write!(
            f,
            "alert quality against the simulator's ground truth: precision {:.4}, recall {:.4} ({} true, {} false alarms, {} missed)",
            quality.precision(),
            quality.recall(),
            quality.true_positives,
            quality.false_positives,
            quality.false_negatives
        )
    }
}

/// The whole pipeline in one process until `shutdown`, then the catch-up.
///
/// `observer` is told of every processing outcome besides the delivery audit.
/// `attach` is called once both sides run, with their counters and a token
/// that is cancelled when the consumer stops (after the catch-up); the task it
/// returns (the console) is awaited before `run` returns.
pub async fn run<A, F>(
    config: &Config,
    observer: Option<ProcessingObserver>,
    attach: A,
    shutdown: CancellationToken,
) -> Result<Option<RunSummary>, PipelineError>
where
    A: FnOnce(Counters, CancellationToken) -> F,
    F: Future<Output = Result<Option<JoinHandle<()>>, String>>,
{
    if !topics_ready(config, Stage::All, &shutdown).await? {
        return Ok(None);
    }
    let stats = Arc::new(ProcessingStats::default());
    let fleet = wiring::fleet(config);
    // Both sides of this run meet in one audit: what was acknowledged against what was processed.
    let audit = Arc::new(Mutex::new(DeliveryAudit::new()));
    let audited = audit_observer(Arc::from(fleet.run_id()), Arc::clone(&audit));
    let observer = fan_out([Some(audited), observer].into_iter().flatten().collect());
    let stop_consumer = CancellationToken::new();
    let Some(consumer) =
        wiring::processing_consumer(config, &stats, observer, &stop_consumer).await?
    else {
        return Ok(None);
    };
    let consumer_stats = consumer.stats();
    let consumer_task = tokio::spawn(consumer.run(stop_consumer.clone()));
    let storage_stats = Arc::new(StorageStats::default());
    let storing = config.store.kind != crate::store::StoreKind::Off;
    if storing {
        // A store that cannot be opened (a folder in use or not writable, a
        // database that refuses) is said now, not when the run ends.
        store::check_store(config, &storage_stats).await?;
    }
    let storage_task = storing.then(|| {
        let (config, stats, stop) = (
            config.clone(),
            Arc::clone(&storage_stats),
            stop_consumer.clone(),
        );
        tokio::spawn(async move {
            let stored = store::run_storage(&config, &stats, stop).await;
            if let Err(error) = &stored {
                tracing::error!("storing stopped: {error}");
            }
            stored
        })
    });
    let aggregation_stats = Arc::new(AggregationStats::default());
    let aggregation_task = {
        let (config, stats, stop) = (
            config.clone(),
            Arc::clone(&aggregation_stats),
            stop_consumer.clone(),
        );
        tokio::spawn(async move {
            let aggregated = aggregate::run_aggregation(&config, &stats, stop).await;
            if let Err(error) = &aggregated {
                tracing::error!("aggregating stopped: {error}");
            }
            aggregated
        })
    };
    let listener = {
        let audit = Arc::clone(&audit);
        move |id: ReadingId, delivery: Delivery| match delivery {
            Delivery::Acked { .. } => lock(&audit).acked(id.device_id(), &id.run_id, id.sequence),
            Delivery::Failed { .. } => lock(&audit).failed(id.device_id(), &id.run_id, id.sequence),
        }
    };
    let producer = wiring::reading_producer(config, listener, &shutdown).await?;
    let counters = Counters {
        producer: producer.stats(),
        consumer: Arc::clone(&consumer_stats),
        processing: Arc::clone(&stats),
        delivery: Arc::clone(&audit),
    };
    let attached = attach(counters.clone(), stop_consumer.clone())
        .await
        .map_err(PipelineError::Attach)?;
    let status = spawn_status(shutdown.clone(), Some(Arc::clone(&stats)), {
        let (counters, aggregation) = (counters.clone(), Arc::clone(&aggregation_stats));
        move |elapsed, previous| {
            let (line, sent) = run_line(
                &counters.producer,
                &counters.processing,
                &counters.consumer,
                elapsed,
                previous,
            );
            let aggregates = aggregation.aggregates.load(Ordering::Relaxed);
            (format!("{line} | minute aggregates {aggregates}"), sent)
        }
    });
    let ingest = run_ingest(fleet, producer, None, shutdown).await;
    status.abort();
    let ingest = ingest?;
    // Let the consumer process what was acknowledged before stopping it.
    let started = Instant::now();
    let mut catch_up = CatchUp::new(started, CATCH_UP_STALL);
    let mut said_at = started;
    loop {
        let unprocessed = lock(&audit).report().lost;
        let now = Instant::now();
        match catch_up.step(unprocessed, now) {
            CatchUpStep::Done => break,
            CatchUpStep::Stalled => {
                tracing::warn!(
                    "the consumer processed nothing for {CATCH_UP_STALL:?}: stopping with {unprocessed} acknowledged readings unprocessed (they stay in Kafka for the group's next consumer)"
                );
                break;
            }
            CatchUpStep::Wait => {}
        }
        if now.duration_since(said_at) >= CATCH_UP_PROGRESS {
            said_at = now;
            tracing::info!(
                "catching up: {unprocessed} acknowledged readings still to process after {:.0?} (signal again to stop now)",
                now.duration_since(started)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_consumer.cancel();
    let processor = consumer_task
        .await
        .map_err(|e| PipelineError::ConsumerTask(e.to_string()))??;
    let sequences = processor.audit();
    processor.close().await;
    let storage = match storage_task {
        Some(task) => {
            task.await
                .map_err(|e| PipelineError::ConsumerTask(e.to_string()))??;
            Some(store::summary(&storage_stats))
        }
        None => None,
    };
    aggregation_task
        .await
        .map_err(|e| PipelineError::ConsumerTask(e.to_string()))??;
    let aggregation = aggregate::aggregation_summary(&aggregation_stats);
    if let Some(task) = attached {
        let _ = task.await;
    }
    let delivery = lock(&audit).report();
    Ok(Some(RunSummary {
        ingest,
        delivery,
        sequences,
        stats,
        storage,
        aggregation,
    }))
}

/// Tells the delivery audit of every reading of this run that was processed.
fn audit_observer(run_id: Arc<str>, audit: Arc<Mutex<DeliveryAudit>>) -> ProcessingObserver {
    Arc::new(move |event: &ProcessingEvent| {
        if let ProcessingEvent::Reading { reading, .. } = event
            && *reading.run_id == *run_id
        {
            lock(&audit).processed(&reading.device_id, &reading.run_id, reading.sequence);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(30);

    #[test]
    fn a_consumer_that_keeps_making_progress_is_waited_for_however_long_it_takes() {
        let start = Instant::now();
        let mut catch_up = CatchUp::new(start, STALL);
        // Ten minutes of a slow consumer: a thousand fewer every 20 s.
        for step in 0..30u64 {
            let now = start + Duration::from_secs(20 * step);
            assert_eq!(catch_up.step(30_000 - 1_000 * step, now), CatchUpStep::Wait);
        }
        assert_eq!(
            catch_up.step(0, start + Duration::from_secs(600)),
            CatchUpStep::Done
        );
    }

    #[test]
    fn a_consumer_that_processes_nothing_for_the_stall_limit_is_given_up_on() {
        let start = Instant::now();
        let mut catch_up = CatchUp::new(start, STALL);
        // (seconds after the start, readings left, what the catch-up does)
        let steps = [
            (0, 500, CatchUpStep::Wait),
            (10, 400, CatchUpStep::Wait),
            (39, 400, CatchUpStep::Wait),
            (40, 400, CatchUpStep::Stalled),
        ];
        for (seconds, left, expected) in steps {
            let now = start + Duration::from_secs(seconds);
            assert_eq!(catch_up.step(left, now), expected, "at {seconds} s");
        }
    }

    #[test]
    fn nothing_left_to_process_ends_the_catch_up_at_once() {
        let start = Instant::now();
        assert_eq!(CatchUp::new(start, STALL).step(0, start), CatchUpStep::Done);
    }
}
