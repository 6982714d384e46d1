//! Fault injection on a real cluster: the proof that nothing acknowledged is lost.
//!
//! Each [`Scenario`] runs on a fresh local cluster of its own (never one a user
//! is using), under steady load: the simulator and producer in this process,
//! consumer group members as separate `metrocloud consume` processes. While
//! the load runs, the scenario breaks something the way it breaks in
//! production (a SIGKILLed leader, a frozen broker, two brokers gone, the whole
//! cluster restarted, a consumer crashed, a cluster that is not there yet, the
//! storage stage killed with files open, its PostgreSQL server restarted,
//! the device gateway without Kafka, killed, or with its buffer full), then
//! heals it. The verdict comes from [`DeliveryAudit`]: every reading the
//! producer saw acknowledged must have been processed by some member and must
//! still be in the topic; repeats must stay within what at-least-once
//! delivery explains; and the scenario's own checks (no acknowledgement
//! without in-sync replicas, push-back, take-over) must hold.
//!
//! Recovery is measured from the moment the fault struck — or, for outages
//! that are deliberate (two brokers down, the whole cluster stopped, no
//! cluster yet), the moment it was healed — until every partition has
//! processed a record written after it: one past the partition's high
//! watermark as read once the fault was in place.
//!
//! [`DeliveryAudit`]: crate::pipeline::reconcile::DeliveryAudit

mod devices;
mod gateway;
mod load;
mod report;
mod run;
mod stages;

pub use report::render_table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{ClusterError, ClusterSpec, KafkaDistribution, LocalCluster, Principal};
use crate::config::Config;
use crate::kafka::admin::AdminError;
use crate::kafka::producer::ProducerError;
use crate::kafka::security::TLS_BUILT_IN;
use crate::kafka::topics::TopicError;
use run::Run;

/// A failure to inject under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// SIGKILL the broker leading most partitions; restart it later.
    LeaderKill,
    /// SIGKILL the active quorum controller; restart it later.
    ControllerKill,
    /// SIGTERM and restart every broker in turn, each once the ISR is full again.
    RollingRestart,
    /// Two of three brokers down: nothing may be acknowledged until they return.
    TwoDown,
    /// SIGSTOP a partition leader for longer than it takes Kafka to fence it and
    /// clients to time out, then SIGCONT.
    BrokerHang,
    /// SIGKILL a consumer process: another member takes over its partitions.
    ConsumerKill,
    /// Stop the whole cluster and start it again.
    FullRestart,
    /// Start the producer and consumers before the cluster exists.
    LateCluster,
    /// SIGKILL the storage stage while it has files open; start it again.
    StorageKill,
    /// Stop the storage stage's PostgreSQL server at once under load; start it again.
    PostgresRestart,
    /// Devices publish to the gateway while every Kafka node is stopped; Kafka returns.
    GatewayOffline,
    /// SIGKILL the gateway while devices publish; start it again on its buffer.
    GatewayKill,
    /// Kafka away with a gateway buffer too small for the outage: devices are pushed back.
    GatewayFull,
}

impl Scenario {
    /// Every scenario, in the order `metrocloud chaos` runs them.
    pub const ALL: [Scenario; 13] = [
        Scenario::LeaderKill,
        Scenario::ControllerKill,
        Scenario::RollingRestart,
        Scenario::TwoDown,
        Scenario::BrokerHang,
        Scenario::ConsumerKill,
        Scenario::FullRestart,
        Scenario::LateCluster,
        Scenario::StorageKill,
        Scenario::PostgresRestart,
        Scenario::GatewayOffline,
        Scenario::GatewayKill,
        Scenario::GatewayFull,
    ];

    /// The name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderKill => "leader-kill",
            Scenario::ControllerKill => "controller-kill",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::TwoDown => "two-down",
            Scenario::BrokerHang => "broker-hang",
            Scenario::ConsumerKill => "consumer-kill",
            Scenario::FullRestart => "full-restart",
            Scenario::LateCluster => "late-cluster",
            Scenario::StorageKill => "storage-kill",
            Scenario::PostgresRestart => "postgres-restart",
            Scenario::GatewayOffline => "gateway-offline",
            Scenario::GatewayKill => "gateway-kill",
            Scenario::GatewayFull => "gateway-full",
        }
    }

    /// The scenario with this name.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Disruptive events (nodes or members lost) the scenario causes; repeats scale with them.
    fn events(self) -> u64 {
        match self {
            Scenario::RollingRestart => 3,
            Scenario::TwoDown => 2,
            _ => 1,
        }
    }
}

/// When Kafka has fenced a broker that stopped answering: its session
/// (`broker.session.timeout.ms`, 9 s by default) plus a controller election
/// (`controller.quorum.fetch.timeout.ms`, 2 s) when it was the controller.
const FENCED_AFTER: Duration = Duration::from_secs(11);

/// How hard and how long the scenarios push.
#[derive(Debug, Clone)]
pub struct ChaosSettings {
    /// Readings per second the simulator offers.
    pub rate: u32,
    /// Simulated devices (each sends every `devices / rate` seconds).
    pub devices: u32,
    /// Load before the fault, once every partition is being processed.
    pub warmup: Duration,
    /// How long a fault lasts (a node down, a broker frozen, no cluster yet).
    pub fault: Duration,
    /// Load after the fault is healed.
    pub cooldown: Duration,
    /// Longest wait for the consumers to catch up once the load stops.
    pub settle: Duration,
    /// Consumer group members (separate processes).
    pub consumers: usize,
    /// Request timeout of every client (producer, consumers).
    pub request_timeout: Duration,
    /// Producer buffer in `two-down`, small enough that the outage fills it and
    /// the simulator must wait; the other scenarios keep the default (32 MiB,
    /// as Kafka's Java producer), so that partitions still served are not held
    /// up by those that are not.
    pub outage_buffer_bytes: usize,
    /// Processed offsets are committed this often.
    pub commit_interval: Duration,
    /// The `metrocloud` binary the consumer processes run.
    pub binary: PathBuf,
    /// Where each scenario's cluster and logs go.
    pub work_dir: PathBuf,
    /// Where the Kafka jars are cached.
    pub cache_dir: PathBuf,
    /// Keep each scenario's directory even when it passed.
    pub keep: bool,
    /// Run on a secure cluster ([`crate::cluster::secure`]), every client as
    /// its `pipeline` user (the gateway as `gateway`): over SASL_SSL when this
    /// build has TLS, else SASL_PLAINTEXT.
    pub secure: bool,
}

impl ChaosSettings {
    /// The defaults of `metrocloud chaos`: 1,000 readings/s from 500 devices,
    /// 10 s of load before each fault, faults of 15 s, 10 s after.
    pub fn new(binary: PathBuf, work_dir: PathBuf) -> ChaosSettings {
        ChaosSettings {
            rate: 1_000,
            devices: 500,
            warmup: Duration::from_secs(10),
            fault: Duration::from_secs(15),
            cooldown: Duration::from_secs(10),
            settle: Duration::from_secs(90),
            consumers: 2,
            request_timeout: Duration::from_secs(10),
            outage_buffer_bytes: 1024 * 1024,
            commit_interval: Duration::from_secs(1),
            binary,
            work_dir,
            cache_dir: KafkaDistribution::cache_dir(None),
            keep: false,
            secure: false,
        }
    }

    /// The pipeline's configuration for `scenario` on `cluster`, as its
    /// `pipeline` user when it is secure.
    fn pipeline_config(
        &self,
        scenario: Scenario,
        cluster: &LocalCluster,
    ) -> Result<Config, ChaosError> {
        let access = cluster.access(Principal::Pipeline, TLS_BUILT_IN);
        let mut config = Config::from_vars(access)
            .map_err(|e| ChaosError::Log(format!("the cluster's client settings: {e}")))?;
        config.num_devices = self.devices;
        config.data_interval = Duration::from_secs_f64(self.devices as f64 / self.rate as f64);
        config.producer.request_timeout = self.request_timeout;
        if scenario == Scenario::TwoDown {
            config.producer.buffer_bytes = self.outage_buffer_bytes;
        }
        config.consumer.request_timeout = self.request_timeout;
        config.consumer.commit_interval = self.commit_interval;
        Ok(config)
    }

    /// Repeats at-least-once delivery explains, per disruptive event: what
    /// the producer sent during one request timeout (a request that timed out
    /// may have been written, and is sent again), and per member what it
    /// processed in one commit interval plus one request timeout (a member cut
    /// off learns that it was fenced only after a timeout).
    fn duplicate_bound(&self, scenario: Scenario) -> u64 {
        let in_flight = (self.rate as f64 * self.request_timeout.as_secs_f64()) as u64;
        let window = (self.commit_interval + self.request_timeout).as_secs_f64();
        let per_member = (self.rate as f64 * window) as u64;
        scenario.events() * (in_flight + per_member * self.consumers as u64)
    }
}

/// One condition a scenario requires, and whether it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was required (and what was seen).
    pub what: String,
    /// Whether it held.
    pub passed: bool,
}

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    /// Which scenario.
    pub scenario: Scenario,
    /// Readings handed to the producer.
    pub sent: u64,
    /// Readings acknowledged (`acks=all`).
    pub acked: u64,
    /// Readings whose delivery failed (reported, never silent).
    pub failed: u64,
    /// Distinct readings processed by the consumer group.
    pub consumed: u64,
    /// Acknowledged but never processed.
    pub lost: u64,
    /// Acknowledged but not in the topic at the offset acknowledged.
    pub missing_from_topic: u64,
    /// Repeats the consumers recognised and removed.
    pub duplicates_removed: u64,
    /// Readings processed a second time (by another member after a hand-over).
    pub reprocessed: u64,
    /// The most repeats at-least-once delivery explains here.
    pub duplicate_bound: u64,
    /// Longest time between two acknowledgements.
    pub longest_stall: Duration,
    /// From the mark until every partition processed a record written after it.
    pub recovery: Option<Duration>,
    /// The scenario's own conditions.
    pub checks: Vec<Check>,
    /// How long the scenario took, cluster start included.
    pub elapsed: Duration,
    /// Where its cluster, consumer logs and processed logs are (removed when it passed unless kept).
    pub dir: PathBuf,
}

impl ScenarioReport {
    /// Whether nothing was lost and every condition held.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.missing_from_topic == 0
            && self.duplicates_removed + self.reprocessed <= self.duplicate_bound
            && self.checks.iter().all(|c| c.passed)
    }
}

/// Why a scenario could not be carried out (as opposed to a verdict of failure).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The scenario's cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Topics could not be set up.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The producer could not start.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The load's producer side failed.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::run::PipelineError),
    /// Asking the cluster failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// Reading the topic failed.
    #[error("reading from Kafka failed: {0}")]
    Kafka(String),
    /// A file or process could not be handled.
    #[error("{path}: {source}")]
    Io {
        /// The file or program.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A consumer's processed log could not be read or parsed.
    #[error("{0}")]
    Log(String),
    /// The producer task ended before it was stopped.
    #[error("the producer task ended unexpectedly")]
    ProducerGone,
}

impl ChaosError {
    fn io(path: &Path, source: std::io::Error) -> ChaosError {
        ChaosError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs `scenario` on a new cluster under `settings`, telling `progress` what it does.
pub async fn run_scenario(
    scenario: Scenario,
    settings: &ChaosSettings,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<ScenarioReport, ChaosError> {
    let started = Instant::now();
    let dir = settings.work_dir.join(format!(
        "{}-{}-{}",
        scenario.name(),
        std::process::id(),
        chrono::Utc::now().format("%H%M%S%3f")
    ));
    if settings.secure && scenario == Scenario::LateCluster {
        return Err(ChaosError::Log(
            "late-cluster starts its cluster after the load, before any ACL exists: it does not run --secure".to_string(),
        ));
    }
    let mut spec = ClusterSpec::short_lived(dir.join("cluster"));
    spec.cache_dir = settings.cache_dir.clone();
    spec.secure = settings.secure;
    let cluster = LocalCluster::prepare(&spec).await?;
    let say = |text: &str| {
        progress(&format!(
            "[{} {:5.1}s] {text}",
            scenario.name(),
            started.elapsed().as_secs_f64()
        ))
    };
    let outcome = if scenario.is_gateway() {
        gateway::execute(scenario, settings, &cluster, spec.ready_timeout, &dir, &say).await
    } else {
        Run {
            scenario,
            settings,
            cluster: &cluster,
            spec: &spec,
            say: &say,
            checks: Vec::new(),
            store: None,
            postgres: None,
        }
        .execute(&dir)
        .await
    };
    // The cluster is thrown away: no clean shutdown to wait for.
    say("ending the cluster");
    cluster.kill_all().await;
    let mut report = outcome?;
    report.elapsed = started.elapsed();
    if report.passed() && !settings.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}
