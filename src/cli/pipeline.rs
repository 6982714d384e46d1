//! `metrocloud run`, `metrocloud produce`, `metrocloud consume` (and the thin
//! `metrocloud-producer` / `metrocloud-consumer` binaries).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::CliError;
use super::console::ConsoleArgs;
use crate::cluster::KafkaDistribution;
use crate::cluster::{self, ClusterSpec, LocalCluster, Ownership};
use crate::config::Config;
use crate::console::PipelineHandles;
use crate::console::fleet::SharedFleet;
use crate::kafka::admin::{AdminClient, Timeouts};
use crate::kafka::producer::Delivery;
use crate::kafka::topics::TopicError;
use crate::pipeline::ingest::{IngestSummary, ReadingId, run_ingest};
use crate::pipeline::observer::{self, ProcessingEvent};
use crate::pipeline::process::ProcessingStats;
use crate::pipeline::reconcile::DeliveryAudit;
use crate::pipeline::status::{processing_line, run_line, spawn_status};
use crate::pipeline::wiring;

/// How long `run` waits, after the producer stopped, for the consumer to catch up.
const CATCH_UP: Duration = Duration::from_secs(60);

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// Simulator -> Kafka until shut down.
pub(crate) async fn produce(config: Config, shutdown: CancellationToken) -> Result<(), CliError> {
    if !topics_ready(&config, &shutdown).await? {
        return Ok(());
    }
    let fleet = wiring::fleet(&config);
    let producer = wiring::reading_producer(&config, |_, _| {}, &shutdown)
        .await
        .map_err(failed)?;
    let stats = producer.stats();
    let status = spawn_status(shutdown.clone(), None, move |elapsed, previous| {
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
    });
    let summary = run_ingest(fleet, producer, None, shutdown)
        .await
        .map_err(failed)?;
    status.abort();
    print_ingest_summary(&summary);
    if summary.producer.failed > 0 {
        return Err(CliError::Failed(format!(
            "{} readings were not delivered (see the log for each device and sequence)",
            summary.producer.failed
        )));
    }
    Ok(())
}

/// Kafka -> validation -> alerts until shut down.
pub(crate) async fn consume(
    config: Config,
    processed_log: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    let observer = match processed_log {
        Some(path) => Some(
            observer::processed_log(&path)
                .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", path.display())))?,
        ),
        None => None,
    };
    if !topics_ready(&config, &shutdown).await? {
        return Ok(());
    }
    let stats = Arc::new(ProcessingStats::default());
    let Some(consumer) = wiring::processing_consumer(&config, &stats, observer, &shutdown)
        .await
        .map_err(failed)?
    else {
        return Ok(());
    };
    let consumer_stats = consumer.stats();
    let status = spawn_status(shutdown.clone(), Some(Arc::clone(&stats)), {
        let stats = Arc::clone(&stats);
        let consumer_stats = Arc::clone(&consumer_stats);
        move |elapsed, previous| processing_line(&stats, &consumer_stats, elapsed, previous)
    });
    let outcome = consumer.run(shutdown).await;
    status.abort();
    let processor = outcome.map_err(failed)?;
    let audit = processor.audit();
    let reasons = processor.dead_letter_reasons().clone();
    processor.close().await;
    println!(
        "consumer summary: {} readings, {} duplicates removed, {} dead letters {:?}, {} alerts ({} repeats suppressed), sequence gaps {}, out of order {}",
        stats.readings.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed),
        stats.dead_letters.load(Ordering::Relaxed),
        reasons
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>(),
        stats.alerts.load(Ordering::Relaxed),
        stats.alerts_suppressed.load(Ordering::Relaxed),
        audit.missing,
        audit.out_of_order
    );
    Ok(())
}

/// The whole pipeline in one process, with a local cluster when none answers.
pub(crate) async fn run(
    config: Config,
    console: Option<ConsoleArgs>,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    if let Some(console) = &console {
        console.check(&config)?;
    }
    let (config, _cluster) = cluster_for_run(config).await?;
    if !topics_ready(&config, &shutdown).await? {
        return Ok(());
    }

    let stats = Arc::new(ProcessingStats::default());
    let fleet = wiring::fleet(&config);
    let run_id: Arc<str> = Arc::from(fleet.run_id());
    // Both sides of this run meet in one audit: what was acknowledged against what was processed.
    let audit = Arc::new(Mutex::new(DeliveryAudit::new()));
    // The console's fleet view is fed here with what processing saw, rather
    // than by reading the sensor topic a second time.
    let console_fleet: Option<SharedFleet> = console.as_ref().map(|_| Arc::default());
    let observer = {
        let run_id = Arc::clone(&run_id);
        let audit = Arc::clone(&audit);
        let console_fleet = console_fleet.clone();
        Arc::new(move |event: &ProcessingEvent| match event {
            ProcessingEvent::Reading { reading, .. } => {
                if *reading.run_id == *run_id {
                    lock(&audit).processed(&reading.device_id, &reading.run_id, reading.sequence);
                }
                if let Some(fleet) = &console_fleet {
                    lock(fleet).observe(reading, chrono::Utc::now().timestamp_millis());
                }
            }
            ProcessingEvent::Duplicate { device_id, .. } => {
                if let Some(fleet) = &console_fleet {
                    lock(fleet).repeat_removed(device_id);
                }
            }
            _ => {}
        })
    };
    let stop_consumer = CancellationToken::new();
    let Some(consumer) =
        wiring::processing_consumer(&config, &stats, Some(observer), &stop_consumer)
            .await
            .map_err(failed)?
    else {
        return Ok(());
    };
    let consumer_stats = consumer.stats();
    let consumer_task = tokio::spawn(consumer.run(stop_consumer.clone()));
    let listener = {
        let audit = Arc::clone(&audit);
        move |id: ReadingId, delivery: Delivery| match delivery {
            Delivery::Acked { .. } => lock(&audit).acked(&id.device_id, &id.run_id, id.sequence),
            Delivery::Failed { .. } => lock(&audit).failed(&id.device_id, &id.run_id, id.sequence),
        }
    };
    let producer = wiring::reading_producer(&config, listener, &shutdown)
        .await
        .map_err(failed)?;
    let producer_stats = producer.stats();
    // The console stops with the pipeline's consumer, after the final catch-up.
    let console = match console {
        Some(console) => {
            let handles = PipelineHandles {
                producer: Some(Arc::clone(&producer_stats)),
                consumer: Some(Arc::clone(&consumer_stats)),
                processing: Some(Arc::clone(&stats)),
                delivery: Some(Arc::clone(&audit)),
                fleet: console_fleet.clone(),
            };
            Some(
                console
                    .start(&config, handles, stop_consumer.clone())
                    .await?,
            )
        }
        None => None,
    };
    let status = spawn_status(shutdown.clone(), Some(Arc::clone(&stats)), {
        let stats = Arc::clone(&stats);
        let consumer_stats = Arc::clone(&consumer_stats);
        let producer_stats = Arc::clone(&producer_stats);
        move |elapsed, previous| {
            run_line(&producer_stats, &stats, &consumer_stats, elapsed, previous)
        }
    });

    let ingest = run_ingest(fleet, producer, None, shutdown).await;
    status.abort();
    let summary = ingest.map_err(failed)?;
    // Let the consumer process what was acknowledged before stopping it.
    let deadline = Instant::now() + CATCH_UP;
    while lock(&audit).report().lost > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_consumer.cancel();
    let processor = consumer_task
        .await
        .map_err(|e| CliError::Failed(format!("consumer task failed: {e}")))?
        .map_err(failed)?;
    let sequences = processor.audit();
    processor.close().await;
    if let Some(console) = console {
        let _ = console.task.await;
    }

    let delivery = lock(&audit).report();
    let lost = delivery.lost;
    print_ingest_summary(&summary);
    println!(
        "pipeline summary: acked {}, failed {}, processed {}, lost {lost}, processed twice {}, out of order {}, duplicates removed {}, dead letters {}, alerts {} ({} repeats suppressed), sequence gaps {}, alert/dead-letter delivery failures {}",
        delivery.acked,
        delivery.failed,
        delivery.consumed,
        delivery.duplicates,
        delivery.out_of_order,
        stats.duplicates.load(Ordering::Relaxed),
        stats.dead_letters.load(Ordering::Relaxed),
        stats.alerts.load(Ordering::Relaxed),
        stats.alerts_suppressed.load(Ordering::Relaxed),
        sequences.missing,
        stats.delivery_failures.load(Ordering::Relaxed),
    );
    let quality = stats.alert_quality();
    println!(
        "alert quality against the simulator's ground truth: precision {:.4}, recall {:.4} ({} true, {} false alarms, {} missed)",
        quality.precision(),
        quality.recall(),
        quality.true_positives,
        quality.false_positives,
        quality.false_negatives
    );
    let failures = summary.producer.failed + lost + stats.delivery_failures.load(Ordering::Relaxed);
    if failures > 0 {
        return Err(CliError::Failed(format!(
            "{} readings failed, {lost} acknowledged readings were not processed, {} alerts or dead letters were not delivered",
            summary.producer.failed,
            stats.delivery_failures.load(Ordering::Relaxed)
        )));
    }
    Ok(())
}

/// The cluster `run` uses: the configured one, or, when `KAFKA_BOOTSTRAP_SERVERS`
/// is unset and nothing answers on the default ports, a local cluster started
/// here (and ended with this process; its data is kept).
async fn cluster_for_run(config: Config) -> Result<(Config, Option<LocalCluster>), CliError> {
    if config.is_given("KAFKA_BOOTSTRAP_SERVERS") {
        return Ok((config, None));
    }
    let probe = AdminClient::new(
        config.bootstrap_strings(),
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        },
    );
    if probe.metadata(Some(&[])).await.is_ok() {
        return Ok((config, None));
    }
    let dir = cluster::cluster_dir(config.cluster_dir.as_deref());
    println!(
        "no Kafka answers on {}: starting a local 3-node cluster in {} (it stops when this run ends; data is kept)",
        config.bootstrap_strings().join(","),
        dir.display()
    );
    let mut spec = ClusterSpec::new(dir);
    spec.ownership = Ownership::Supervised;
    spec.cache_dir = KafkaDistribution::cache_dir(config.kafka_cache.as_deref());
    spec.heap = config.kafka_heap.clone();
    let (cluster, _) = LocalCluster::up(&spec).await.map_err(failed)?;
    let bootstrap = cluster.bootstrap_servers().join(",");
    println!("local cluster ready: KAFKA_BOOTSTRAP_SERVERS={bootstrap}");
    let mut config = config;
    config.set("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)?;
    Ok((config, Some(cluster)))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets up the pipeline's topics, waiting for the cluster; false when shut down meanwhile.
async fn topics_ready(config: &Config, shutdown: &CancellationToken) -> Result<bool, CliError> {
    match wiring::ensure_pipeline_topics(config, shutdown).await {
        Ok(()) => Ok(true),
        Err(TopicError::Cancelled) => Ok(false),
        Err(e) => Err(failed(e)),
    }
}

fn print_ingest_summary(summary: &IngestSummary) {
    println!(
        "producer summary: generated {}, sent {}, acked {}, failed {}, retries {}",
        summary.generated,
        summary.producer.sent,
        summary.producer.acked,
        summary.producer.failed,
        summary.producer.retries
    );
}
