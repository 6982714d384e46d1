//! Fault injection on a real cluster: the proof that nothing acknowledged is lost.
//!
//! Each [`Scenario`] runs on a fresh local cluster of its own (never one a user
//! is using), under steady load: the simulator and producer in this process,
//! consumer group members as separate `metrocloud consume` processes. While
//! the load runs, the scenario breaks something the way it breaks in
//! production (a SIGKILLed leader, a frozen broker, two brokers gone, the whole
//! cluster restarted, a consumer crashed, a cluster that is not there yet),
//! then heals it. The verdict comes from [`DeliveryAudit`]: every reading the
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

mod load;
mod report;

pub use report::render_table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{
    ClusterError, ClusterSpec, KafkaDistribution, LocalCluster, Ownership, PortPlan,
};
use crate::config::Config;
use crate::kafka::admin::AdminError;
use crate::kafka::producer::ProducerError;
use crate::kafka::topics::TopicError;
use load::Load;

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
}

impl Scenario {
    /// Every scenario, in the order `metrocloud chaos` runs them.
    pub const ALL: [Scenario; 8] = [
        Scenario::LeaderKill,
        Scenario::ControllerKill,
        Scenario::RollingRestart,
        Scenario::TwoDown,
        Scenario::BrokerHang,
        Scenario::ConsumerKill,
        Scenario::FullRestart,
        Scenario::LateCluster,
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

/// Broker settings of the clusters faults are injected into: group sessions
/// of 6 s instead of Kafka's 45 s, so that a crashed member's partitions move
/// on within seconds (a setting production clusters may choose too).
pub fn broker_overrides() -> BTreeMap<String, String> {
    [
        ("group.consumer.session.timeout.ms", "6000"),
        ("group.consumer.min.session.timeout.ms", "6000"),
        ("group.consumer.heartbeat.interval.ms", "1000"),
        ("group.consumer.min.heartbeat.interval.ms", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

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
        }
    }

    /// The pipeline's configuration for `scenario` against `bootstrap`.
    fn pipeline_config(&self, scenario: Scenario, bootstrap: &[String]) -> Config {
        let mut config = Config::default();
        config.bootstrap_servers = bootstrap
            .iter()
            .map(|b| {
                b.parse()
                    .expect("a local cluster's addresses are host:port")
            })
            .collect();
        config.num_devices = self.devices;
        config.data_interval = Duration::from_secs_f64(self.devices as f64 / self.rate as f64);
        config.producer.request_timeout = self.request_timeout;
        if scenario == Scenario::TwoDown {
            config.producer.buffer_bytes = self.outage_buffer_bytes;
        }
        config.consumer.request_timeout = self.request_timeout;
        config.consumer.commit_interval = self.commit_interval;
        config
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
    let mut spec = ClusterSpec::new(dir.join("cluster"));
    spec.ports = PortPlan::Free;
    spec.ownership = Ownership::Supervised;
    spec.cache_dir = settings.cache_dir.clone();
    spec.broker_overrides = broker_overrides();
    let cluster = LocalCluster::prepare(&spec).await?;
    let say = |text: &str| {
        progress(&format!(
            "[{} {:5.1}s] {text}",
            scenario.name(),
            started.elapsed().as_secs_f64()
        ))
    };
    let outcome = Run {
        scenario,
        settings,
        cluster: &cluster,
        spec: &spec,
        say: &say,
        checks: Vec::new(),
    }
    .execute(&dir)
    .await;
    say("stopping the cluster");
    let _ = cluster.down(false).await;
    let mut report = outcome?;
    report.elapsed = started.elapsed();
    if report.passed() && !settings.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

/// One scenario under way.
struct Run<'a> {
    scenario: Scenario,
    settings: &'a ChaosSettings,
    cluster: &'a LocalCluster,
    spec: &'a ClusterSpec,
    say: &'a (dyn Fn(&str) + Sync),
    checks: Vec<Check>,
}

impl Run<'_> {
    fn check(&mut self, passed: bool, what: String) {
        (self.say)(&format!(
            "{} {what}",
            if passed { "ok:" } else { "FAILED:" }
        ));
        self.checks.push(Check { what, passed });
    }

    async fn execute(mut self, dir: &Path) -> Result<ScenarioReport, ChaosError> {
        let settings = self.settings;
        let config = settings.pipeline_config(self.scenario, &self.cluster.bootstrap_servers());
        if self.scenario != Scenario::LateCluster {
            self.cluster.start(self.spec.ready_timeout).await?;
            (self.say)(&format!(
                "cluster of {} nodes ready on {}",
                self.cluster.nodes().len(),
                self.cluster.bootstrap_servers().join(",")
            ));
        }
        let mut load =
            Load::start(config.clone(), dir, &settings.binary, settings.consumers).await?;
        (self.say)(&format!(
            "load started: {} readings/s from {} devices, {} consumer processes",
            settings.rate, settings.devices, settings.consumers
        ));
        if self.scenario == Scenario::LateCluster {
            self.late_cluster(&mut load).await?;
        }
        let flowing = load
            .run_until(Duration::from_secs(120), Load::every_partition_processed)
            .await?;
        self.check(
            flowing,
            "every partition is produced to and processed".to_string(),
        );
        if flowing {
            load.run_for(settings.warmup).await?;
            self.inject(&mut load, &config).await?;
            load.run_for(settings.cooldown).await?;
            let recovered = load
                .run_until(settings.settle, |l| l.recovery().is_some())
                .await?;
            self.check(
                recovered,
                match load.recovery() {
                    Some(r) => {
                        format!("every partition processed new records {r:.1?} after the mark")
                    }
                    None => "every partition processes new records again".to_string(),
                },
            );
        }
        let expected_exits = usize::from(self.scenario == Scenario::ConsumerKill);
        let exited = load.exited_consumers();
        self.check(
            exited.len() == expected_exits,
            format!(
                "no consumer process ended by itself ({} ended, {expected_exits} killed)",
                exited.len()
            ),
        );
        (self.say)("stopping the load; the producer delivers what it holds");
        let summary = load.stop_producing().await?;
        let caught_up = load
            .run_until(settings.settle, |l| {
                let audit = l.audit();
                audit.acked > 0 && audit.lost == 0
            })
            .await?;
        (self.say)(&format!(
            "consumers {} within {:?}; stopping them",
            if caught_up {
                "caught up"
            } else {
                "did not catch up"
            },
            settings.settle
        ));
        load.stop_consumers(Duration::from_secs(30)).await?;
        let missing_from_topic = load.acked_missing_from_topic().await?;
        let audit = load.audit();
        self.check(
            summary.producer.acked + summary.producer.failed == summary.producer.sent,
            format!(
                "every reading ended acked or failed ({} sent, {} acked, {} failed)",
                summary.producer.sent, summary.producer.acked, summary.producer.failed
            ),
        );
        Ok(ScenarioReport {
            scenario: self.scenario,
            sent: summary.producer.sent,
            acked: audit.acked,
            failed: audit.failed,
            consumed: audit.consumed,
            lost: audit.lost,
            missing_from_topic,
            duplicates_removed: load.removed_duplicates(),
            reprocessed: audit.duplicates,
            duplicate_bound: settings.duplicate_bound(self.scenario),
            longest_stall: load.longest_stall(),
            recovery: load.recovery(),
            checks: self.checks,
            elapsed: Duration::ZERO,
            dir: dir.to_path_buf(),
        })
    }

    /// The producer and consumers wait for a cluster that is not there; then it starts.
    async fn late_cluster(&mut self, load: &mut Load) -> Result<(), ChaosError> {
        load.run_for(self.settings.fault).await?;
        let waiting = load.producer_running() && load.exited_consumers().is_empty();
        self.check(
            waiting,
            format!(
                "producer and consumers still waiting after {:?} without a cluster",
                self.settings.fault
            ),
        );
        let logged = (0..self.settings.consumers)
            .all(|n| load.consumer_output_contains(n, "waiting for Kafka"));
        self.check(
            logged,
            "each consumer logged that it waits for Kafka".to_string(),
        );
        self.cluster.start(self.spec.ready_timeout).await?;
        (self.say)("cluster started");
        load.mark(Instant::now());
        Ok(())
    }

    async fn inject(&mut self, load: &mut Load, config: &Config) -> Result<(), ChaosError> {
        let ready = self.spec.ready_timeout;
        let fault = self.settings.fault;
        match self.scenario {
            Scenario::LeaderKill => {
                let (victim, led) = leader_of_most(self.cluster, &config.topic).await?;
                let at = Instant::now();
                self.cluster.kill_node(victim).await?;
                load.mark(at);
                (self.say)(&format!(
                    "SIGKILL node {victim}, leader of {led} partitions"
                ));
                let moved = wait_until(load, Duration::from_secs(60), || async {
                    leaders_avoid(self.cluster, &config.topic, victim).await
                })
                .await?;
                self.check(
                    moved,
                    format!("every partition led by a live broker without node {victim}"),
                );
                load.run_for(fault).await?;
                self.restart(load, victim, ready).await?;
            }
            Scenario::ControllerKill => {
                let victim = self.cluster.admin().quorum().await?.leader.unwrap_or(1);
                let at = Instant::now();
                self.cluster.kill_node(victim).await?;
                load.mark(at);
                (self.say)(&format!("SIGKILL node {victim}, the active controller"));
                let elected = wait_until(load, Duration::from_secs(60), || async {
                    matches!(self.cluster.admin().quorum().await, Ok(q) if q.leader.is_some_and(|l| l != victim))
                })
                .await?;
                self.check(elected, "another controller elected".to_string());
                load.run_for(fault).await?;
                self.restart(load, victim, ready).await?;
            }
            Scenario::RollingRestart => {
                load.mark(Instant::now());
                for node in self.cluster.nodes() {
                    (self.say)(&format!("SIGTERM node {}", node.id));
                    self.cluster.stop_node(node.id).await?;
                    self.restart(load, node.id, ready).await?;
                }
            }
            Scenario::TwoDown => {
                let victims: Vec<i32> = self.cluster.nodes().iter().skip(1).map(|n| n.id).collect();
                for &victim in &victims {
                    self.cluster.kill_node(victim).await?;
                }
                (self.say)(&format!(
                    "SIGKILL nodes {victims:?}: one broker left, min.insync.replicas=2"
                ));
                // What was in flight at the kill may still be answered.
                load.run_for(Duration::from_secs(3)).await?;
                let before = load.producer();
                load.run_for(fault).await?;
                let after = load.producer();
                self.check(
                    after.acked == before.acked,
                    format!(
                        "nothing acknowledged with two brokers down ({} acks in {fault:?})",
                        after.acked - before.acked
                    ),
                );
                let accepted = after.sent - before.sent;
                self.check(
                    accepted <= load.buffer_records(),
                    format!(
                        "the producer pushed back: {accepted} readings taken in {fault:?} (buffer holds about {})",
                        load.buffer_records()
                    ),
                );
                for &victim in &victims {
                    self.restart(load, victim, ready).await?;
                }
                load.mark(Instant::now());
            }
            Scenario::BrokerHang => {
                let (victim, led) = leader_of_most(self.cluster, &config.topic).await?;
                // Every partition has a replica on the frozen broker, so acks=all
                // waits until Kafka fences it (its session, plus a controller
                // election when it was the controller) and clients time out and
                // move on. The check looks at the time after both.
                let moved_on =
                    self.settings.request_timeout.max(FENCED_AFTER) + Duration::from_secs(2);
                let hang = fault.max(moved_on + Duration::from_secs(8));
                let at = Instant::now();
                self.cluster.pause_node(victim).await?;
                load.mark(at);
                (self.say)(&format!(
                    "SIGSTOP node {victim}, leader of {led} partitions, for {hang:?}"
                ));
                load.run_for(moved_on).await?;
                let before = load.producer();
                load.run_for(hang.saturating_sub(moved_on)).await?;
                let after = load.producer();
                self.check(
                    after.acked > before.acked,
                    format!(
                        "acknowledgements continued while node {victim} was frozen ({} in its last {:?})",
                        after.acked - before.acked,
                        hang.saturating_sub(moved_on)
                    ),
                );
                self.cluster.resume_node(victim).await?;
                (self.say)(&format!("SIGCONT node {victim}"));
                self.wait_replicated(load).await?;
            }
            Scenario::ConsumerKill => {
                let at = Instant::now();
                load.kill_consumer(0).await?;
                load.mark(at);
                (self.say)("SIGKILL consumer process 0");
                let taken_over = load
                    .run_until(Duration::from_secs(90), |l| l.recovery().is_some())
                    .await?;
                self.check(
                    taken_over,
                    "the other member took over every partition".to_string(),
                );
            }
            Scenario::FullRestart => {
                (self.say)("stopping every node (SIGTERM)");
                self.cluster.down(false).await?;
                load.run_for(fault).await?;
                self.cluster.start(ready).await?;
                (self.say)("cluster started again");
                load.mark(Instant::now());
                self.wait_replicated(load).await?;
            }
            Scenario::LateCluster => {}
        }
        Ok(())
    }

    /// Starts a stopped node and waits until every partition is fully replicated.
    async fn restart(
        &mut self,
        load: &mut Load,
        id: i32,
        ready: Duration,
    ) -> Result<(), ChaosError> {
        self.cluster.start_node(id, ready).await?;
        (self.say)(&format!("node {id} started again"));
        self.wait_replicated(load).await
    }

    async fn wait_replicated(&mut self, load: &mut Load) -> Result<(), ChaosError> {
        let started = Instant::now();
        let full = wait_until(load, Duration::from_secs(120), || async {
            matches!(self.cluster.admin().metadata(None).await,
                Ok(m) if m.brokers.len() == self.cluster.nodes().len() && m.under_replicated().is_empty())
        })
        .await?;
        self.check(
            full,
            format!(
                "every partition's ISR full again ({:.1?})",
                started.elapsed()
            ),
        );
        Ok(())
    }
}

/// Tails the load until `condition` holds (asked twice a second) or `limit` passes.
async fn wait_until<F, Fut>(load: &Load, limit: Duration, condition: F) -> Result<bool, ChaosError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    loop {
        if condition().await {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        load.run_for(Duration::from_millis(500)).await?;
    }
}

/// The broker leading most partitions of `topic`, and how many it leads.
async fn leader_of_most(cluster: &LocalCluster, topic: &str) -> Result<(i32, usize), ChaosError> {
    let metadata = cluster.admin().metadata(Some(&[topic])).await?;
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for partition in metadata
        .topic(topic)
        .map(|t| t.partitions.as_slice())
        .unwrap_or(&[])
    {
        *led.entry(partition.leader).or_default() += 1;
    }
    Ok(led
        .into_iter()
        .max_by_key(|&(id, count)| (count, -id))
        .unwrap_or((1, 0)))
}

/// Whether every partition of `topic` has a leader other than `node`.
async fn leaders_avoid(cluster: &LocalCluster, topic: &str, node: i32) -> bool {
    match cluster.admin().metadata(Some(&[topic])).await {
        Ok(metadata) => metadata.topic(topic).is_some_and(|t| {
            t.partitions
                .iter()
                .all(|p| p.leader >= 0 && p.leader != node)
        }),
        Err(_) => false,
    }
}
