//! `metrocloud run`, `metrocloud produce`, `metrocloud consume`, `metrocloud store` (and the thin
//! `metrocloud-producer` / `metrocloud-consumer` binaries): the pipeline's
//! own calls ([`crate::pipeline::run`]), their summaries printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::CliError;
use super::console::ConsoleArgs;
use crate::cluster::{self, ClusterSpec, KafkaDistribution, LocalCluster, Ownership};
use crate::config::Config;
use crate::console::PipelineHandles;
use crate::console::fleet::SharedFleet;
use crate::kafka::admin::{AdminClient, Timeouts};
use crate::lock::lock;
use crate::pipeline::observer::{self, ProcessingEvent, ProcessingObserver};
use crate::pipeline::run::{self, Counters};
use crate::pipeline::wiring;

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// Simulator -> Kafka until shut down.
pub(crate) async fn produce(config: Config, shutdown: CancellationToken) -> Result<(), CliError> {
    let fleet = wiring::fleet(&config);
    let summary = run::produce(&config, fleet, |_, _| {}, |_| {}, true, shutdown)
        .await
        .map_err(failed)?;
    let Some(summary) = summary else {
        return Ok(());
    };
    println!("{summary}");
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
    if let Some(summary) = run::consume(&config, observer, shutdown)
        .await
        .map_err(failed)?
    {
        println!("{summary}");
    }
    Ok(())
}

/// Kafka -> Parquet files until shut down.
pub(crate) async fn store(config: Config, shutdown: CancellationToken) -> Result<(), CliError> {
    if let Some(summary) = run::store(&config, shutdown).await.map_err(failed)? {
        println!("{summary}");
    }
    Ok(())
}

/// Kafka -> minute aggregates on their topic until shut down.
pub(crate) async fn aggregate(config: Config, shutdown: CancellationToken) -> Result<(), CliError> {
    if let Some(summary) = run::aggregate(&config, shutdown).await.map_err(failed)? {
        println!("{summary}");
    }
    Ok(())
}

/// The whole pipeline in one process, with a local cluster when none answers,
/// and the console unless left out.
pub(crate) async fn run(
    config: Config,
    console: Option<ConsoleArgs>,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    if let Some(console) = &console {
        console.check(&config)?;
    }
    let (config, _cluster) = cluster_for_run(config).await?;
    let (gateway, gateway_view) = super::gateway::beside_run(&config, shutdown.clone())
        .await?
        .unzip();
    // The console's fleet view is fed with what processing saw, rather than by
    // reading the sensor topic a second time.
    let console_fleet: Option<SharedFleet> = console.as_ref().map(|_| Arc::default());
    let observer = console_fleet.clone().map(fleet_observer);
    let attach = |counters: Counters, stop: CancellationToken| {
        let config = &config;
        async move {
            let Some(console) = console else {
                return Ok(None);
            };
            let handles = PipelineHandles {
                producer: Some(counters.producer),
                consumer: Some(counters.consumer),
                processing: Some(counters.processing),
                delivery: Some(counters.delivery),
                fleet: console_fleet,
                gateway: gateway_view,
            };
            let running = console
                .start(config, handles, stop)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some(running.task))
        }
    };
    let ran = run::run(&config, observer, attach, shutdown.clone()).await;
    let gateway = match gateway {
        Some(task) => {
            // The pipeline may end on its own (an error): the gateway stops with it.
            shutdown.cancel();
            task.await
                .unwrap_or_else(|e| Err(CliError::Failed(format!("gateway task failed: {e}"))))
        }
        None => Ok(()),
    };
    let Some(summary) = ran.map_err(failed)? else {
        return gateway;
    };
    println!("{summary}");
    gateway?;
    match summary.failures() {
        Some(failures) => Err(CliError::Failed(failures)),
        None => Ok(()),
    }
}

/// Feeds the console's fleet view with every reading processed and every repeat removed.
fn fleet_observer(fleet: SharedFleet) -> ProcessingObserver {
    Arc::new(move |event: &ProcessingEvent| match event {
        ProcessingEvent::Reading { reading, .. } => {
            lock(&fleet).observe(reading, chrono::Utc::now().timestamp_millis());
        }
        ProcessingEvent::Duplicate { device_id, .. } => lock(&fleet).repeat_removed(device_id),
        _ => {}
    })
}

/// The cluster `run` uses: the configured one, or, when `KAFKA_BOOTSTRAP_SERVERS`
/// is unset and nothing answers on the default ports, a local cluster started
/// here (and ended with this process; its data is kept).
async fn cluster_for_run(config: Config) -> Result<(Config, Option<LocalCluster>), CliError> {
    if config.is_given("KAFKA_BOOTSTRAP_SERVERS") {
        return Ok((config, None));
    }
    let probe = AdminClient::new(
        config.brokers(),
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
