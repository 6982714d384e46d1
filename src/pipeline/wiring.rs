//! Building the pipeline's stages from the configuration.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::config::Config;
use crate::kafka::admin::{AdminClient, AdminError, Timeouts};
use crate::kafka::client::SharedClient;
use crate::kafka::consumer::{ConsumerError, ConsumerSpec, GroupConsumer};
use crate::kafka::producer::{Delivery, Producer, ProducerError};
use crate::kafka::retry::{Backoff, Deadline};
use crate::kafka::topics::{Ensured, TopicError, TopicSpec, ensure_topic};
use crate::pipeline::observer::ProcessingObserver;
use crate::pipeline::process::{ProcessingStats, ReadingProcessor};
use crate::pipeline::sinks::kafka::history::AlertHistory;
use crate::pipeline::sinks::kafka::{KafkaSink, counting_listener};
use crate::pipeline::sources::simulator::{ReadingId, logging_listener};
use crate::sensor::simulator::Fleet;

/// What a command runs, for the topics it uses: on a secure cluster each
/// user may describe its own topics and no others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Readings into Kafka.
    Produce,
    /// Readings into alerts and dead letters.
    Consume,
    /// Readings and aggregates into the store.
    Store,
    /// Readings into minute aggregates.
    Aggregate,
    /// Everything (`metrocloud run`).
    All,
}

impl Stage {
    /// The topics the stage reads or writes.
    pub fn topics(self, config: &Config) -> Vec<&str> {
        let readings = config.topic.as_str();
        match self {
            Stage::Produce => vec![readings],
            Stage::Consume => vec![readings, &config.alerts_topic, &config.dlq_topic],
            Stage::Store | Stage::Aggregate => vec![readings, &config.aggregates_topic],
            Stage::All => config.pipeline_topic_names().to_vec(),
        }
    }
}

/// Creates (or checks) the sensor, alert, dead-letter and aggregates topics, all with the
/// configured partitions, replication and `min.insync.replicas`.
///
/// A cluster that does not answer yet, or still has fewer brokers than the
/// replication factor (one that is starting), is waited for with backoff and a
/// log line, up to `KAFKA_STARTUP_WAIT_SEC` or until `shutdown`.
pub async fn ensure_pipeline_topics(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(), TopicError> {
    ensure_topics(config, &Stage::All.topics(config), shutdown).await
}

/// Like [`ensure_pipeline_topics`], for the `names` one stage uses: on a
/// secure cluster a stage's user may describe those and no others.
pub async fn ensure_topics(
    config: &Config,
    names: &[&str],
    shutdown: &CancellationToken,
) -> Result<(), TopicError> {
    let deadline = Deadline::after(config.startup_wait);
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut attempts = 0u32;
    loop {
        let error = match ensure_topics_once(config, names).await {
            Ok(()) => {
                if attempts > 0 {
                    tracing::info!(
                        "Kafka at {} answers now",
                        config.bootstrap_strings().join(",")
                    );
                }
                return Ok(());
            }
            Err(e) if worth_waiting_for(&e) => e,
            Err(e) => return Err(e),
        };
        attempts += 1;
        if deadline.has_passed() {
            return Err(TopicError::StartupWait {
                waited: config.startup_wait,
                last: Box::new(error),
            });
        }
        if attempts == 1 || attempts.is_power_of_two() {
            tracing::warn!(
                "waiting for Kafka at {} (attempt {attempts}, giving up after KAFKA_STARTUP_WAIT_SEC={}): {error}",
                config.bootstrap_strings().join(","),
                config.startup_wait.as_secs()
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(TopicError::Cancelled),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Errors of a cluster that is absent or still starting, as opposed to answers that will not change.
fn worth_waiting_for(error: &TopicError) -> bool {
    match error {
        TopicError::Admin(AdminError::Broker { error, .. }) => error.is_retriable(),
        TopicError::Admin(e) => e.is_connection_failure(),
        TopicError::NotEnoughBrokers { .. } | TopicError::NotReady { .. } => true,
        _ => false,
    }
}

async fn ensure_topics_once(config: &Config, names: &[&str]) -> Result<(), TopicError> {
    let admin = AdminClient::new(config.brokers(), Timeouts::default());
    for &name in names {
        let spec = TopicSpec {
            name: name.to_string(),
            ..config.sensor_topic()
        };
        match ensure_topic(&admin, &spec).await? {
            Ensured::Created => tracing::info!(
                "created topic {name}: {} partitions, replication factor {}, min.insync.replicas={}",
                spec.partitions,
                spec.replication_factor,
                spec.min_insync_replicas
            ),
            Ensured::AlreadyExisted { notes } => {
                for note in notes {
                    tracing::info!("topic {name}: {note}");
                }
            }
        }
    }
    Ok(())
}

/// The simulated fleet, announced with its seed so that a run can be repeated.
pub fn fleet(config: &Config) -> Fleet {
    let settings = config.simulator_settings();
    let fleet = Fleet::new(&settings, Utc::now());
    tracing::info!(
        "simulating {} devices every {:?} (seed {}, run {}); IOT_SIMULATOR_SEED={} repeats it",
        fleet.len(),
        settings.interval,
        fleet.seed(),
        fleet.run_id(),
        fleet.seed()
    );
    fleet
}

/// A producer of readings whose failed deliveries are logged, each delivery then passed to `next`.
pub async fn reading_producer(
    config: &Config,
    next: impl Fn(ReadingId, Delivery) + Send + Sync + 'static,
    shutdown: &CancellationToken,
) -> Result<Producer<ReadingId>, ProducerError> {
    Producer::connect(
        config.brokers(),
        &config.topic,
        &config.producer,
        logging_listener(next),
        shutdown,
    )
    .await
}

/// Why the processing side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProcessingStartError {
    /// A producer for alerts or dead letters failed to start.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The consumer failed to start.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The client reading the alert history could not connect.
    #[error("cannot connect to read the alert history: {0}")]
    History(String),
}

/// Alerts read back per alert-topic partition when taking over partitions: more
/// than one commit interval of alerts at any rate this pipeline sustains.
const ALERT_LOOKBACK: i64 = 20_000;

/// The consumer group member with its reading processor, or `None` if shut down while connecting.
pub async fn processing_consumer(
    config: &Config,
    stats: &Arc<ProcessingStats>,
    observer: Option<ProcessingObserver>,
    shutdown: &CancellationToken,
) -> Result<Option<GroupConsumer<ReadingProcessor<KafkaSink>>>, ProcessingStartError> {
    let alerts = Producer::connect(
        config.brokers(),
        &config.alerts_topic,
        &config.producer,
        counting_listener(&stats.delivery_failures, "alert"),
        shutdown,
    )
    .await?;
    let dead_letters = Producer::connect(
        config.brokers(),
        &config.dlq_topic,
        &config.producer,
        counting_listener(&stats.delivery_failures, "dead letter"),
        shutdown,
    )
    .await?;
    let reader = SharedClient::connect(
        config.brokers(),
        "metrocloud-alert-history",
        crate::kafka::client::short_retries(config.consumer.request_timeout),
        config.consumer.request_timeout,
    )
    .await
    .map_err(|e| ProcessingStartError::History(e.to_string()))?;
    let history = AlertHistory::new(
        Arc::new(reader),
        &config.alerts_topic,
        ALERT_LOOKBACK,
        config.consumer.request_timeout,
    );
    let sink = KafkaSink::new(alerts, dead_letters, Arc::clone(&stats.delivery_failures))
        .with_history(history);
    let mut processor =
        ReadingProcessor::new(sink, config.alerts.clone(), Arc::clone(stats), observer)
            .resuming_from_sink(&config.topic);
    if config.detect_faults {
        processor = processor.detecting(config.detector.clone());
    }
    let spec = ConsumerSpec {
        bootstrap: config.brokers(),
        topic: config.topic.clone(),
        group_id: config.consumer_group_id.clone(),
        auto_offset_reset: config.auto_offset_reset,
        settings: config.consumer.clone(),
    };
    Ok(GroupConsumer::connect(spec, processor, shutdown).await?)
}
