//! The monitoring console: the cluster, the fleet and the pipeline's losses on
//! a few pages, served by the binary itself.
//!
//! The original design watches its pipeline with a Kafka web UI in a
//! container. Edge boxes and plain machines have no container engine, and no
//! Kafka UI knows about devices, sequence gaps or alerts, so the console is
//! built in: `metrocloud console`, or alongside `metrocloud run`. Pages are
//! rendered on the server from the same values the JSON API under `/api/v1`
//! returns; a small script compiled into the binary refreshes them and runs
//! the live tail. Nothing is read from disk at run time.
//!
//! - [`cluster`]: brokers, topics, groups, from Kafka's own answers.
//! - [`follow`] and [`fleet`]: the sensor, alert and dead-letter topics, read
//!   outside any consumer group, into per-device state.
//! - [`messages`]: browsing records.
//! - [`history`]: the store's minute aggregates as charts, the fleet's and a device's.
//! - [`metrics`]: `/metrics` for Prometheus.
//! - `server`: routes, the token check and the bounds on requests and streams.
//!
//! The console is read-only: it creates, deletes and commits nothing.

mod auth;
pub mod cluster;
mod fault_table;
pub mod fleet;
pub mod follow;
pub mod history;
pub mod messages;
pub mod metrics;
mod pages;
mod recent;
mod server;
mod svg;
#[cfg(feature = "tls")]
mod tls;
mod views;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::idle::{IDLE_LIMIT, IdleLimit};
use crate::kafka::admin::{AdminClient, Timeouts};
use crate::kafka::client::SharedClient;
pub(crate) use crate::lock::lock;

pub use metrics::PipelineHandles;
pub use server::router;

/// Requests served at once; more get 503.
pub const MAX_CONCURRENT_REQUESTS: usize = 32;
/// Live tails open at once; more get 429.
pub const MAX_STREAMS: usize = 8;

/// The nice value the standalone console runs at.
pub const NICE: i32 = 10;

/// Lowers this thread's CPU priority to [`NICE`]; threads started after
/// inherit it. `metrocloud console` calls it before its runtime starts: on a
/// machine shared with brokers and a pipeline, the console then takes CPU
/// only when they leave some, and catches up later, instead of slowing them.
/// Pages stay fast: they cost milliseconds. Returns whether it worked.
pub fn lower_priority() -> bool {
    // SAFETY: setpriority only reads its integer arguments; no memory is shared.
    unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, NICE) == 0 }
}

/// What can stop the console from starting.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Listening elsewhere than loopback without a token.
    #[error(
        "the console on {0} would be reachable from other machines: set METROCLOUD_CONSOLE_TOKEN (every request must then carry it), or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    /// An empty token.
    #[error("METROCLOUD_CONSOLE_TOKEN is set but empty")]
    EmptyToken,
    /// The console's certificate or key cannot be used.
    #[error("HTTPS for the console: {0}")]
    Tls(String),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// How the console is reached.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Listening address.
    pub addr: SocketAddr,
    /// The token every request must carry, when set.
    pub token: Option<String>,
    /// HTTPS from this PEM certificate chain and key (the tls feature).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ConsoleSettings {
    /// Checked settings: anything but loopback needs a token.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Result<Self, ConsoleError> {
        if token.as_deref() == Some("") {
            return Err(ConsoleError::EmptyToken);
        }
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(ConsoleError::TokenRequired(addr));
        }
        Ok(ConsoleSettings {
            addr,
            token,
            tls: None,
        })
    }
}

/// What the pages read, shared by every request.
pub struct ConsoleState {
    token: Option<String>,
    sensor_topic: String,
    alerts_topic: String,
    dlq_topic: String,
    data_dir: std::path::PathBuf,
    data_interval: Duration,
    cluster: cluster::ClusterView,
    reader: tokio::sync::OnceCell<messages::RecordReader>,
    bootstrap: crate::kafka::Brokers,
    request_timeout: Duration,
    fleet: fleet::SharedFleet,
    pipeline: PipelineHandles,
    requests: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl ConsoleState {
    /// State for a console over the cluster of `config`.
    pub fn new(
        config: &Config,
        token: Option<String>,
        pipeline: PipelineHandles,
        shutdown: CancellationToken,
    ) -> Arc<ConsoleState> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(3),
            request: config.consumer.request_timeout.min(Duration::from_secs(10)),
        };
        Arc::new(ConsoleState {
            token,
            sensor_topic: config.topic.clone(),
            alerts_topic: config.alerts_topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            data_dir: config.store.data_dir.clone(),
            data_interval: config.data_interval,
            cluster: cluster::ClusterView::new(AdminClient::new(config.brokers(), timeouts)),
            reader: tokio::sync::OnceCell::new(),
            bootstrap: config.brokers(),
            request_timeout: timeouts.request,
            fleet: pipeline
                .fleet
                .clone()
                .unwrap_or_else(|| Arc::new(Mutex::new(fleet::FleetState::default()))),
            pipeline,
            requests: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            shutdown,
        })
    }

    /// The record reader, connecting on first use.
    async fn reader(&self) -> Result<&messages::RecordReader, rskafka::client::error::Error> {
        self.reader
            .get_or_try_init(|| async {
                let client = SharedClient::connect(
                    self.bootstrap.clone(),
                    "metrocloud-console",
                    crate::kafka::client::short_retries(self.request_timeout),
                    self.request_timeout,
                )
                .await?;
                Ok(messages::RecordReader::new(
                    Arc::new(client),
                    self.request_timeout,
                ))
            })
            .await
    }

    /// Reads the sensor, alert and dead-letter topics into the fleet state until
    /// shutdown (not the sensor topic when the pipeline in this process feeds
    /// the readings); waits for Kafka and for each topic to exist.
    pub async fn watch(self: Arc<Self>) {
        let mut backoff =
            crate::kafka::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let client = loop {
            match self.reader().await {
                Ok(reader) => break Arc::clone(reader.client()),
                Err(e) => {
                    tracing::debug!("console: Kafka not reachable yet: {e}");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        };
        let start = follow::Start::Recent {
            age: Duration::from_secs(3600),
            max_records: 200_000,
        };
        let mut topics = vec![
            (self.alerts_topic.clone(), Watched::Alerts),
            (self.dlq_topic.clone(), Watched::DeadLetters),
        ];
        // Readings come from the pipeline in this process when it feeds them.
        if self.pipeline.fleet.is_none() {
            topics.push((self.sensor_topic.clone(), Watched::Readings));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (topic, watched) in topics {
            let state = Arc::clone(&self);
            let client = Arc::clone(&client);
            tasks.spawn(async move {
                let Some(partitions) = state.partitions_when_ready(&topic).await else {
                    return;
                };
                let fleet = Arc::clone(&state.fleet);
                follow::follow(
                    client,
                    topic,
                    partitions,
                    start,
                    state.request_timeout,
                    state.shutdown.clone(),
                    move |partition, records| {
                        let mut fleet = lock(&fleet);
                        match watched {
                            Watched::Readings => fleet.on_readings(&records),
                            Watched::Alerts => fleet.on_alerts(partition, &records),
                            Watched::DeadLetters => fleet.on_dead_letters(partition, &records),
                        }
                    },
                )
                .await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// The partitions of `topic` once it exists; `None` at shutdown.
    async fn partitions_when_ready(&self, topic: &str) -> Option<Vec<i32>> {
        loop {
            if let Ok(metadata) = self.cluster.admin().metadata(Some(&[topic])).await
                && let Some(info) = metadata.topic(topic)
                && !info.partitions.is_empty()
            {
                return Some(info.partitions.iter().map(|p| p.partition).collect());
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}

/// A poisoned lock still holds consistent counters: every update is one step.

#[derive(Debug, Clone, Copy)]
enum Watched {
    Readings,
    Alerts,
    DeadLetters,
}

/// A console that is listening.
#[derive(Debug)]
pub struct RunningConsole {
    /// The address it listens on (the port is known even when 0 was asked).
    pub addr: SocketAddr,
    /// Ends when the console has stopped (after shutdown).
    pub task: tokio::task::JoinHandle<()>,
}

/// A plain listener, or one that speaks TLS.
#[cfg(feature = "tls")]
enum Either {
    Plain(TcpListener),
    Tls(tls::TlsListener),
}

/// Listens on `settings.addr`, starts reading the pipeline's topics, and serves
/// until `shutdown`.
pub async fn start(
    config: &Config,
    settings: ConsoleSettings,
    pipeline: PipelineHandles,
    shutdown: CancellationToken,
) -> Result<RunningConsole, ConsoleError> {
    let listener = TcpListener::bind(settings.addr)
        .await
        .map_err(|source| ConsoleError::Bind {
            addr: settings.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ConsoleError::Bind {
        addr: settings.addr,
        source,
    })?;
    let state = ConsoleState::new(config, settings.token, pipeline, shutdown.clone());
    let watcher = tokio::spawn(Arc::clone(&state).watch());
    // A first look now, so that the first page shown already has rates to compare with.
    tokio::spawn({
        let state = Arc::clone(&state);
        async move {
            state.cluster.snapshot().await;
        }
    });
    let app = router(Arc::clone(&state));
    #[cfg(feature = "tls")]
    let listener = match &settings.tls {
        Some((certificate, key)) => {
            let config = tls::server_config(certificate, key).map_err(ConsoleError::Tls)?;
            Either::Tls(
                tls::TlsListener::new(listener, config)
                    .map_err(|source| ConsoleError::Bind { addr, source })?,
            )
        }
        None => Either::Plain(listener),
    };
    let task = tokio::spawn(async move {
        #[cfg(feature = "tls")]
        let served = match listener {
            Either::Plain(listener) => {
                axum::serve(IdleLimit::new(listener, IDLE_LIMIT), app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
            Either::Tls(listener) => {
                axum::serve(IdleLimit::new(listener, IDLE_LIMIT), app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
        };
        #[cfg(not(feature = "tls"))]
        let served = axum::serve(IdleLimit::new(listener, IDLE_LIMIT), app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("console stopped: {e}");
        }
        watcher.abort();
    });
    Ok(RunningConsole { addr, task })
}
