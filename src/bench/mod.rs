//! Benchmarks of our clients beside Kafka's own tools, on the same cluster in the same run.
//!
//! Users ask whether the Rust pipeline is as fast as Kafka's Java client with
//! the same durability. Each benchmark answers it by running ours and the
//! peer's in turn on one cluster, with the same topic settings (6 partitions,
//! 3 replicas, `min.insync.replicas=2`), `acks=all`, the same record sizes and
//! the same linger and batch size, and alternating the order from one repeat to
//! the next (ours first, then the peer first), so that drift in the machine's
//! state hits both.
//!
//! - **producer**: records/s, MiB/s and client CPU per million records, ours
//!   against `kafka-producer-perf-test`, for sensor readings and 100 B and 1,000 B records.
//! - **consumer**: records/s from a pre-filled topic in a new group, ours against
//!   `kafka-consumer-perf-test`.
//! - **e2e**: latency from the produce call to the consumer having validated the
//!   reading (HDR histogram) at fixed offered rates, then the highest rate the
//!   pipeline sustains; `kafka-e2e-latency` (one record in flight) beside it.
//! - **simulator**: CPU and peak memory of 10k and 100k devices at 1 Hz.
//!
//! Every client, ours or Kafka's, is a child process of its own ([`worker`],
//! [`peer`]); [`usage`] measures it. Each run gets a fresh topic, deleted
//! afterwards. The report ([`report`]) is written as JSON and as markdown.

pub mod browser;
pub mod console;
mod http;
pub mod peer;
pub mod report;
pub mod usage;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::cluster::{ClusterSpec, KafkaDistribution, LocalCluster, Ownership, PortPlan};
use crate::kafka::admin::AdminClient;
use crate::kafka::producer::ProducerSettings;
use crate::sensor::simulator::{Fleet, SimulatorSettings};
use report::{
    BenchReport, ClientRun, Comparison, LatencyRun, LatencySection, Machine, PeerLatency,
    SimulatorRun,
};
use usage::{BrokerCpu, Measured, run_measured};
use worker::{Payload, WorkerSpec};

const MIB: f64 = 1024.0 * 1024.0;
/// The longest any single client run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// Why a benchmark could not be run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A client process could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which client.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A client ran past its deadline and was killed.
    #[error("{what} did not finish within {after:?} and was killed (its log: {})", log.display())]
    Timeout {
        /// Which client.
        what: String,
        /// Its deadline.
        after: Duration,
        /// Its standard error.
        log: PathBuf,
    },
    /// A client failed.
    #[error("{what} failed ({status}); the end of {}:\n{tail}", log.display())]
    ChildFailed {
        /// Which client.
        what: String,
        /// Its exit status.
        status: String,
        /// Its standard error.
        log: PathBuf,
        /// The last lines of it.
        tail: String,
    },
    /// A Kafka tool printed something other than its summary.
    #[error("could not read the summary of {tool}; it ended with:\n{tail}")]
    Unparsed {
        /// The tool.
        tool: String,
        /// Its last lines.
        tail: String,
    },
    /// Our worker printed something other than its outcome.
    #[error("could not read the worker's outcome: {0}")]
    Worker(String),
    /// The cluster could not be started, or a topic created.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A run lost records: its figures would be meaningless.
    #[error("{0}")]
    Lost(String),
    /// The console did not answer as it should.
    #[error("console: {0}")]
    Console(String),
}

impl BenchError {
    fn io(path: &Path, source: std::io::Error) -> BenchError {
        BenchError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Producer throughput and CPU.
    Producer,
    /// Consumer throughput and CPU.
    Consumer,
    /// Latency from produce to processing.
    EndToEnd,
    /// Simulator CPU and memory.
    Simulator,
    /// Console page times with a large fleet, and its cost to the producer.
    Console,
}

impl Suite {
    /// All, in the order they run.
    pub const ALL: [Suite; 5] = [
        Suite::Producer,
        Suite::Consumer,
        Suite::EndToEnd,
        Suite::Simulator,
        Suite::Console,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Producer => "producer",
            Suite::Consumer => "consumer",
            Suite::EndToEnd => "e2e",
            Suite::Simulator => "simulator",
            Suite::Console => "console",
        }
    }

    /// The suite called `name`.
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What the benchmarks are asked to do.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// This program, started as `bench-worker` for our runs.
    pub binary: PathBuf,
    /// Logs, readings file and (unless given a cluster) the cluster's data.
    pub work_dir: PathBuf,
    /// Where the Kafka jars are cached.
    pub cache_dir: PathBuf,
    /// An existing cluster to use instead of starting one.
    pub bootstrap: Option<Vec<String>>,
    /// Producer settings of both sides.
    pub producer: ProducerSettings,
    /// Runs of each side per comparison, alternating which goes first.
    pub repeats: u32,
    /// Tiny counts, to check that everything works.
    pub smoke: bool,
    /// Records per producer run, per payload: sensor readings, 100 B, 1,000 B.
    pub producer_records: [u64; 3],
    /// Records in the consumer's pre-filled topic.
    pub consumer_records: u64,
    /// Offered rates whose latency is always measured.
    pub e2e_rates: Vec<u32>,
    /// Seconds each rate is offered.
    pub e2e_seconds: f64,
    /// Highest rate tried when looking for the highest sustained one.
    pub e2e_max_rate: u32,
    /// Records `kafka-e2e-latency` sends.
    pub e2e_peer_records: u64,
    /// Fleet sizes of the simulator benchmark.
    pub simulator_devices: Vec<u32>,
    /// Seconds each fleet runs.
    pub simulator_seconds: f64,
    /// Devices in the fleet the console's pages are timed with.
    pub console_devices: u32,
    /// Requests timed per console page.
    pub console_page_requests: usize,
    /// Readings per producer run with and without a console.
    pub console_impact_records: u64,
    /// Readings/s offered in the end-to-end runs with and without a console.
    pub console_latency_rate: u32,
}

impl BenchSettings {
    /// The full benchmark: each run long enough (about 10 s) for startup to
    /// weigh little.
    pub fn full(binary: PathBuf, work_dir: PathBuf, producer: ProducerSettings) -> Self {
        BenchSettings {
            binary,
            work_dir,
            cache_dir: KafkaDistribution::cache_dir(None),
            bootstrap: None,
            producer,
            repeats: 3,
            smoke: false,
            producer_records: [1_000_000, 2_000_000, 400_000],
            consumer_records: 2_000_000,
            e2e_rates: vec![1_000, 10_000, 50_000],
            e2e_seconds: 15.0,
            e2e_max_rate: 400_000,
            e2e_peer_records: 5_000,
            simulator_devices: vec![10_000, 100_000],
            simulator_seconds: 30.0,
            console_devices: 100_000,
            console_page_requests: 20,
            console_impact_records: 1_000_000,
            console_latency_rate: 10_000,
        }
    }

    /// A run of seconds per benchmark, to keep them working.
    pub fn smoke(binary: PathBuf, work_dir: PathBuf, producer: ProducerSettings) -> Self {
        BenchSettings {
            repeats: 1,
            smoke: true,
            producer_records: [2_000, 2_000, 2_000],
            consumer_records: 4_000,
            e2e_rates: vec![500],
            e2e_seconds: 2.0,
            e2e_max_rate: 500,
            e2e_peer_records: 50,
            simulator_devices: vec![1_000],
            simulator_seconds: 2.0,
            console_devices: 1_000,
            console_page_requests: 2,
            console_impact_records: 2_000,
            console_latency_rate: 500,
            ..BenchSettings::full(binary, work_dir, producer)
        }
    }
}

/// The cluster the benchmarks run on.
struct Target {
    bootstrap: Vec<String>,
    admin: AdminClient,
    brokers: BrokerCpu,
    distribution: KafkaDistribution,
    owned: Option<LocalCluster>,
}

/// Runs `suites` under `settings`, telling `progress` what it does.
pub async fn run(
    settings: &BenchSettings,
    suites: &[Suite],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BenchReport, BenchError> {
    std::fs::create_dir_all(&settings.work_dir)
        .map_err(|e| BenchError::io(&settings.work_dir, e))?;
    let started = Instant::now();
    let say = |text: &str| {
        progress(&format!(
            "[bench {:6.1}s] {text}",
            started.elapsed().as_secs_f64()
        ))
    };
    let needs_cluster = suites.iter().any(|s| *s != Suite::Simulator);
    let target = if needs_cluster {
        Some(connect(settings, &say).await?)
    } else {
        None
    };
    let outcome = Bench {
        settings,
        target: target.as_ref(),
        say: &say,
        topics: 0,
    }
    .run(suites)
    .await;
    if let Some(cluster) = target.and_then(|t| t.owned) {
        // Its data goes with it, unless the benchmark failed and its logs may tell why.
        say("stopping the cluster");
        let _ = cluster.down(outcome.is_ok()).await;
    }
    outcome
}

async fn connect(
    settings: &BenchSettings,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Target, BenchError> {
    let distribution = peer::distribution(&settings.cache_dir)?;
    if let Some(bootstrap) = &settings.bootstrap {
        say(&format!("using the cluster at {}", bootstrap.join(",")));
        return Ok(Target {
            bootstrap: bootstrap.clone(),
            admin: AdminClient::new(bootstrap.clone(), crate::kafka::admin::Timeouts::default()),
            brokers: BrokerCpu::new(Vec::new()),
            distribution,
            owned: None,
        });
    }
    let mut spec = ClusterSpec::new(settings.work_dir.join("cluster"));
    spec.ports = PortPlan::Free;
    spec.ownership = Ownership::Supervised;
    spec.cache_dir = settings.cache_dir.clone();
    say("starting a 3-node cluster of its own");
    let (cluster, _) = LocalCluster::up(&spec)
        .await
        .map_err(|e| BenchError::Cluster(e.to_string()))?;
    let pids = cluster
        .nodes()
        .iter()
        .filter_map(|n| cluster.node_pid(n.id))
        .collect();
    Ok(Target {
        bootstrap: cluster.bootstrap_servers(),
        admin: cluster.admin(),
        brokers: BrokerCpu::new(pids),
        distribution,
        owned: Some(cluster),
    })
}

/// Which client a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ours,
    Peer,
}

/// The order of the two sides in repeat `r`: ours first, then the peer first.
fn order(repeat: u32) -> [Side; 2] {
    if repeat.is_multiple_of(2) {
        [Side::Ours, Side::Peer]
    } else {
        [Side::Peer, Side::Ours]
    }
}

/// The sensor readings every benchmark that sends readings sends.
struct Readings {
    /// One JSON reading per line.
    path: PathBuf,
    /// Their mean size.
    mean_bytes: usize,
}

impl Readings {
    fn label(&self) -> String {
        format!("sensor readings ({} B)", self.mean_bytes)
    }
}

struct Bench<'a> {
    settings: &'a BenchSettings,
    target: Option<&'a Target>,
    say: &'a (dyn Fn(&str) + Sync),
    topics: u32,
}

impl Bench<'_> {
    async fn run(mut self, suites: &[Suite]) -> Result<BenchReport, BenchError> {
        let settings = self.settings;
        let mut report = BenchReport {
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            machine: Machine::here(self.target.is_some_and(|t| t.owned.is_some())),
            smoke: settings.smoke,
            producer_settings: format!(
                "acks=all, linger {} ms, batch {} KiB, compression {}",
                settings.producer.linger.as_millis(),
                settings.producer.batch_bytes / 1024,
                settings.producer.compression
            ),
            producer: Vec::new(),
            consumer: Vec::new(),
            end_to_end: None,
            simulator: Vec::new(),
            console: None,
        };
        let readings = self.write_readings()?;
        for suite in suites {
            match suite {
                Suite::Producer => report.producer = self.producer(&readings).await?,
                Suite::Consumer => report.consumer = vec![self.consumer(&readings).await?],
                Suite::EndToEnd => report.end_to_end = Some(self.end_to_end(&readings).await?),
                Suite::Simulator => report.simulator = self.simulator().await?,
                Suite::Console => report.console = Some(self.console(&readings).await?),
            }
        }
        Ok(report)
    }

    fn target(&self) -> &Target {
        self.target.expect("suites that need Kafka get a cluster")
    }

    /// A file of real sensor readings, one JSON object per line.
    fn write_readings(&self) -> Result<Readings, BenchError> {
        let settings = SimulatorSettings {
            num_devices: 500,
            interval: Duration::from_secs(1),
            device_types: crate::sensor::device::DeviceType::ALL.to_vec(),
            anomaly_probability: 0.0,
            seed: 42,
        };
        let mut fleet = Fleet::new(&settings, chrono::Utc::now());
        let mut text = String::new();
        let mut total = 0usize;
        let count = 2_000;
        for _ in 0..count {
            let reading = fleet
                .next_due(Duration::MAX)
                .expect("a fleet always has a next reading");
            let json = reading.to_json();
            total += json.len();
            text.push_str(std::str::from_utf8(&json).expect("JSON is UTF-8"));
            text.push('\n');
        }
        let path = self.settings.work_dir.join("readings.jsonl");
        std::fs::write(&path, text).map_err(|e| BenchError::io(&path, e))?;
        Ok(Readings {
            path,
            mean_bytes: total / count,
        })
    }

    async fn fresh_topic(&mut self, purpose: &str) -> Result<String, BenchError> {
        self.topics += 1;
        let name = format!("bench-{purpose}-{}-{}", std::process::id(), self.topics);
        self.target()
            .admin
            .create_topic(&name, 6, 3, &[("min.insync.replicas", "2".to_string())])
            .await
            .map_err(|e| BenchError::Cluster(format!("cannot create topic {name}: {e}")))?;
        Ok(name)
    }

    async fn drop_topic(&self, name: &str) {
        if let Err(e) = self.target().admin.delete_topic(name).await {
            tracing::warn!("could not delete benchmark topic {name}: {e}");
        }
    }

    fn worker_command(&self, spec: &WorkerSpec) -> Command {
        let mut command = Command::new(&self.settings.binary);
        command
            .arg("bench-worker")
            .arg(serde_json::to_string(spec).expect("specs serialize"))
            .env("RUST_LOG", "warn");
        command
    }

    async fn measure(
        &self,
        command: Command,
        what: &str,
        log_name: &str,
    ) -> Result<(Measured, Option<f64>), BenchError> {
        let brokers_before = self.target.and_then(|t| t.brokers.now());
        let log = self.settings.work_dir.join(format!("{log_name}.log"));
        let measured = run_measured(command, what, &log, RUN_TIMEOUT).await?;
        let brokers_after = self.target.and_then(|t| t.brokers.now());
        let broker_cpu = match (brokers_before, brokers_after) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
            _ => None,
        };
        Ok((measured, broker_cpu))
    }

    async fn producer(&mut self, readings: &Readings) -> Result<Vec<Comparison>, BenchError> {
        let kinds = [
            (
                readings.label(),
                readings.mean_bytes,
                Payload::Readings(readings.path.clone()),
                self.settings.producer_records[0],
            ),
            (
                "100 B".to_string(),
                100,
                Payload::Size(100),
                self.settings.producer_records[1],
            ),
            (
                "1,000 B".to_string(),
                1_000,
                Payload::Size(1_000),
                self.settings.producer_records[2],
            ),
        ];
        // A fresh cluster's brokers are slow until the JIT has compiled their
        // hot paths (a tenth of the records was not enough: the first reported
        // run was still up to a third slower): one unreported run of each
        // side, as long as the first reported ones, comes first.
        let (_, _, payload, records) = &kinds[0];
        let warmup = *records;
        (self.say)(&format!(
            "producer warm-up: {warmup} records from each side, not reported"
        ));
        for side in order(0) {
            let topic = self.fresh_topic("warmup").await?;
            let run = self.producer_run(side, &topic, warmup, payload, 0).await;
            self.drop_topic(&topic).await;
            run?;
        }
        let mut rows = Vec::new();
        for (label, bytes, payload, records) in kinds {
            let mut row = Comparison {
                label: label.clone(),
                record_bytes: bytes,
                ours: Vec::new(),
                peer: Vec::new(),
            };
            for repeat in 0..self.settings.repeats {
                for side in order(repeat) {
                    let topic = self.fresh_topic("produce").await?;
                    let run = self
                        .producer_run(side, &topic, records, &payload, repeat)
                        .await;
                    self.drop_topic(&topic).await;
                    let run = run?;
                    (self.say)(&format!(
                        "producer {label} run {}/{}: {} {:.0} records/s, {:.2} CPU s per million records",
                        repeat + 1,
                        self.settings.repeats,
                        match side {
                            Side::Ours => "ours",
                            Side::Peer => "kafka-producer-perf-test",
                        },
                        run.records_per_sec,
                        run.cpu_secs * 1e6 / run.records.max(1) as f64
                    ));
                    match side {
                        Side::Ours => row.ours.push(run),
                        Side::Peer => row.peer.push(run),
                    }
                }
            }
            rows.push(row);
        }
        Ok(rows)
    }

    async fn producer_run(
        &self,
        side: Side,
        topic: &str,
        records: u64,
        payload: &Payload,
        repeat: u32,
    ) -> Result<ClientRun, BenchError> {
        let target = self.target();
        match side {
            Side::Ours => {
                let (measured, broker_cpu, outcome) = self
                    .produce_with_ours(topic, records, payload, &format!("{topic}-ours-{repeat}"))
                    .await?;
                Ok(ClientRun {
                    records,
                    records_per_sec: records as f64 / outcome.elapsed_secs,
                    mib_per_sec: outcome.value_bytes as f64 / MIB / outcome.elapsed_secs,
                    cpu_secs: measured.cpu.as_secs_f64(),
                    peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
                    broker_cpu_secs: broker_cpu,
                    wall_secs: measured.wall.as_secs_f64(),
                })
            }
            Side::Peer => {
                let command = peer::producer_perf(
                    &target.distribution,
                    &target.bootstrap.join(","),
                    topic,
                    records,
                    None,
                    payload,
                    &self.settings.producer,
                );
                let (measured, broker_cpu) = self
                    .measure(
                        command,
                        "kafka-producer-perf-test",
                        &format!("{topic}-peer-{repeat}"),
                    )
                    .await?;
                let summary = peer::parse_producer_perf(&measured.stdout)?;
                if summary.records != records {
                    return Err(BenchError::Lost(format!(
                        "kafka-producer-perf-test sent {} of {records} records",
                        summary.records
                    )));
                }
                Ok(ClientRun {
                    records,
                    records_per_sec: summary.records_per_sec,
                    mib_per_sec: summary.mib_per_sec,
                    cpu_secs: measured.cpu.as_secs_f64(),
                    peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
                    broker_cpu_secs: broker_cpu,
                    wall_secs: measured.wall.as_secs_f64(),
                })
            }
        }
    }

    /// Our producer writing `records` records to `topic`, every one acknowledged.
    async fn produce_with_ours(
        &self,
        topic: &str,
        records: u64,
        payload: &Payload,
        log_name: &str,
    ) -> Result<(Measured, Option<f64>, worker::ProduceOutcome), BenchError> {
        let command = self.worker_command(&WorkerSpec::Produce {
            bootstrap: self.target().bootstrap.clone(),
            topic: topic.to_string(),
            records,
            payload: payload.clone(),
        });
        let (measured, broker_cpu) = self.measure(command, "our producer", log_name).await?;
        let outcome: worker::ProduceOutcome = parse_worker(&measured.stdout)?;
        if outcome.acked != records {
            return Err(BenchError::Lost(format!(
                "our producer had {} of {records} records acknowledged by {topic} ({} failed)",
                outcome.acked, outcome.failed
            )));
        }
        Ok((measured, broker_cpu, outcome))
    }

    async fn consumer(&mut self, readings: &Readings) -> Result<Comparison, BenchError> {
        let records = self.settings.consumer_records;
        let topic = self.fresh_topic("consume").await?;
        (self.say)(&format!(
            "consumer: filling {topic} with {records} sensor readings"
        ));
        let result = async {
            let payload = Payload::Readings(readings.path.clone());
            self.produce_with_ours(&topic, records, &payload, &format!("{topic}-fill"))
                .await?;
            let mut row = Comparison {
                label: readings.label(),
                record_bytes: readings.mean_bytes,
                ours: Vec::new(),
                peer: Vec::new(),
            };
            for repeat in 0..self.settings.repeats {
                for side in order(repeat) {
                    let group = format!(
                        "{topic}-{}-{repeat}",
                        match side {
                            Side::Ours => "ours",
                            Side::Peer => "peer",
                        }
                    );
                    let run = self.consumer_run(side, &topic, &group, records).await?;
                    (self.say)(&format!(
                        "consumer run {}/{}: {} {:.0} records/s, {:.2} CPU s per million records",
                        repeat + 1,
                        self.settings.repeats,
                        match side {
                            Side::Ours => "ours",
                            Side::Peer => "kafka-consumer-perf-test",
                        },
                        run.records_per_sec,
                        run.cpu_secs * 1e6 / run.records.max(1) as f64
                    ));
                    match side {
                        Side::Ours => row.ours.push(run),
                        Side::Peer => row.peer.push(run),
                    }
                }
            }
            Ok(row)
        }
        .await;
        self.drop_topic(&topic).await;
        result
    }

    async fn consumer_run(
        &self,
        side: Side,
        topic: &str,
        group: &str,
        records: u64,
    ) -> Result<ClientRun, BenchError> {
        let target = self.target();
        let (command, what) = match side {
            Side::Ours => (
                self.worker_command(&WorkerSpec::Consume {
                    bootstrap: target.bootstrap.clone(),
                    topic: topic.to_string(),
                    group: group.to_string(),
                    records,
                }),
                "our consumer",
            ),
            Side::Peer => (
                peer::consumer_perf(
                    &target.distribution,
                    &target.bootstrap.join(","),
                    topic,
                    group,
                    records,
                ),
                "kafka-consumer-perf-test",
            ),
        };
        let (measured, broker_cpu) = self.measure(command, what, group).await?;
        let (read, records_per_sec, mib_per_sec) = match side {
            Side::Ours => {
                let outcome: worker::ConsumeOutcome = parse_worker(&measured.stdout)?;
                (
                    outcome.records,
                    outcome.records as f64 / outcome.elapsed_secs,
                    outcome.bytes as f64 / MIB / outcome.elapsed_secs,
                )
            }
            Side::Peer => {
                let summary = peer::parse_consumer_perf(&measured.stdout)?;
                (
                    summary.records,
                    summary.records_per_sec,
                    summary.mib_per_sec,
                )
            }
        };
        if read < records {
            return Err(BenchError::Lost(format!(
                "{what} read {read} of {records} records"
            )));
        }
        Ok(ClientRun {
            records: read,
            records_per_sec,
            mib_per_sec,
            cpu_secs: measured.cpu.as_secs_f64(),
            peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
            broker_cpu_secs: broker_cpu,
            wall_secs: measured.wall.as_secs_f64(),
        })
    }

    async fn end_to_end(&mut self, readings: &Readings) -> Result<LatencySection, BenchError> {
        let mut runs: Vec<LatencyRun> = Vec::new();
        let mut rates = self.settings.e2e_rates.clone();
        rates.sort_unstable();
        let mut highest: Option<u32> = None;
        let mut lowest_failed: Option<u32> = None;
        for rate in rates {
            let mut run = self.latency_run(rate, &readings.path).await?;
            run.peer_ack_ms = Some(self.peer_ack_latency(rate, &readings.path).await?);
            if run.sustained {
                highest = highest.max(Some(rate));
            } else {
                lowest_failed = Some(lowest_failed.map_or(rate, |f| f.min(rate)));
            }
            runs.push(run);
        }
        // Then the highest sustained rate: climb while every rate holds,
        // then narrow the gap between the last that held and the first that did not.
        let step = |rate: u32| ((rate as f64 * 1.5 / 1000.0).round() as u32) * 1000;
        if lowest_failed.is_none() {
            while let Some(top) = highest {
                let next = step(top);
                if next > self.settings.e2e_max_rate || next <= top {
                    break;
                }
                let run = self.latency_run(next, &readings.path).await?;
                let held = run.sustained;
                runs.push(run);
                if held {
                    highest = Some(next);
                } else {
                    lowest_failed = Some(next);
                    break;
                }
            }
        }
        for _ in 0..2 {
            let (Some(failed), low) = (lowest_failed, highest.unwrap_or(0)) else {
                break;
            };
            let middle = ((low + failed) / 2 / 1000) * 1000;
            if middle <= low || middle >= failed {
                break;
            }
            let run = self.latency_run(middle, &readings.path).await?;
            if run.sustained {
                highest = Some(middle);
            } else {
                lowest_failed = Some(middle);
            }
            runs.push(run);
        }
        let peer = self.peer_latency(readings.mean_bytes).await?;
        Ok(LatencySection {
            record_bytes: readings.mean_bytes,
            ours: runs,
            highest_sustained: highest,
            peer: Some(peer),
        })
    }

    async fn latency_run(&mut self, rate: u32, readings: &Path) -> Result<LatencyRun, BenchError> {
        let topic = self.fresh_topic("e2e").await?;
        self.latency_on(&topic, rate, readings).await
    }

    /// Our end-to-end run offering `rate` readings/s to `topic`, which it deletes after.
    async fn latency_on(
        &mut self,
        topic: &str,
        rate: u32,
        readings: &Path,
    ) -> Result<LatencyRun, BenchError> {
        let topic = topic.to_string();
        let command = self.worker_command(&WorkerSpec::EndToEnd {
            bootstrap: self.target().bootstrap.clone(),
            topic: topic.clone(),
            group: format!("{topic}-group"),
            rate,
            seconds: self.settings.e2e_seconds,
            readings: readings.to_path_buf(),
        });
        let measured = self.measure(command, "our end-to-end run", &topic).await;
        self.drop_topic(&topic).await;
        let (measured, _) = measured?;
        let outcome: worker::EndToEndOutcome = parse_worker(&measured.stdout)?;
        let ms = |us: u64| us as f64 / 1000.0;
        let run = LatencyRun {
            rate,
            achieved_rate: outcome.sent as f64 / self.settings.e2e_seconds,
            p50_ms: ms(outcome.p50_us),
            p99_ms: ms(outcome.p99_us),
            p999_ms: ms(outcome.p999_us),
            max_ms: ms(outcome.max_us),
            ack_p50_ms: ms(outcome.ack_p50_us),
            ack_p99_ms: ms(outcome.ack_p99_us),
            peer_ack_ms: None,
            behind_at_end: outcome.behind_at_end,
            lag_at_end: outcome.lag_at_end,
            sustained: outcome.sustained(),
            processed: outcome.processed,
            cpu_secs: measured.cpu.as_secs_f64(),
            peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
        };
        (self.say)(&format!(
            "e2e at {rate} records/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} (behind {} records, lag {} at the end)",
            run.p50_ms,
            run.p99_ms,
            run.p999_ms,
            run.max_ms,
            if run.sustained {
                "kept up"
            } else {
                "did not keep up"
            },
            outcome.behind_at_end,
            outcome.lag_at_end
        ));
        Ok(run)
    }

    /// `kafka-producer-perf-test` offering `rate` records/s for as long as ours
    /// did: its median and 99th percentile time from send to acknowledgement.
    async fn peer_ack_latency(
        &mut self,
        rate: u32,
        readings: &Path,
    ) -> Result<(f64, f64), BenchError> {
        let topic = self.fresh_topic("ack-peer").await?;
        let records = (f64::from(rate) * self.settings.e2e_seconds) as u64;
        let target = self.target();
        let command = peer::producer_perf(
            &target.distribution,
            &target.bootstrap.join(","),
            &topic,
            records.max(1),
            Some(rate),
            &Payload::Readings(readings.to_path_buf()),
            &self.settings.producer,
        );
        let measured = self
            .measure(command, "kafka-producer-perf-test", &topic)
            .await;
        self.drop_topic(&topic).await;
        let summary = peer::parse_producer_perf(&measured?.0.stdout)?;
        (self.say)(&format!(
            "kafka-producer-perf-test at {rate} records/s: send→ack p50 {} ms, p99 {} ms",
            summary.p50_latency_ms, summary.p99_latency_ms
        ));
        Ok((summary.p50_latency_ms, summary.p99_latency_ms))
    }

    async fn peer_latency(&mut self, size: usize) -> Result<PeerLatency, BenchError> {
        let topic = self.fresh_topic("e2e-peer").await?;
        let records = self.settings.e2e_peer_records;
        let target = self.target();
        let command = peer::e2e_latency(
            &target.distribution,
            &target.bootstrap.join(","),
            &topic,
            records,
            size,
        );
        let measured = self.measure(command, "kafka-e2e-latency", &topic).await;
        self.drop_topic(&topic).await;
        let summary = peer::parse_e2e_latency(&measured?.0.stdout)?;
        (self.say)(&format!(
            "kafka-e2e-latency, {records} records one at a time: p50 {} ms, p99 {} ms, p99.9 {} ms",
            summary.p50_ms, summary.p99_ms, summary.p999_ms
        ));
        Ok(PeerLatency {
            records,
            avg_ms: summary.avg_ms,
            p50_ms: summary.p50_ms,
            p99_ms: summary.p99_ms,
            p999_ms: summary.p999_ms,
        })
    }

    async fn simulator(&mut self) -> Result<Vec<SimulatorRun>, BenchError> {
        let mut runs = Vec::new();
        for &devices in &self.settings.simulator_devices {
            let command = self.worker_command(&WorkerSpec::Simulate {
                devices,
                seconds: self.settings.simulator_seconds,
            });
            let (measured, _) = self
                .measure(command, "the simulator", &format!("simulate-{devices}"))
                .await?;
            let outcome: worker::SimulateOutcome = parse_worker(&measured.stdout)?;
            let run = SimulatorRun {
                devices,
                readings: outcome.readings,
                seconds: outcome.elapsed_secs,
                cpu_secs: measured.cpu.as_secs_f64(),
                peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
            };
            (self.say)(&format!(
                "simulator, {devices} devices: {} readings in {:.1} s, {:.2} CPU s, peak RSS {:.1} MiB",
                run.readings, run.seconds, run.cpu_secs, run.peak_rss_mib
            ));
            runs.push(run);
        }
        Ok(runs)
    }
}

fn parse_worker<T: serde::de::DeserializeOwned>(stdout: &str) -> Result<T, BenchError> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| BenchError::Worker(format!("no outcome in {stdout:?}")))?;
    serde_json::from_str(line).map_err(|e| BenchError::Worker(format!("{e} in {line:?}")))
}

/// Writes the report as `<stem>.json` and `<stem>.md` in `dir`; returns both paths.
pub fn write_report(
    report: &BenchReport,
    dir: &Path,
    stem: &str,
) -> Result<(PathBuf, PathBuf), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let json = dir.join(format!("{stem}.json"));
    let markdown = dir.join(format!("{stem}.md"));
    let text = serde_json::to_string_pretty(report).expect("reports serialize");
    std::fs::write(&json, text + "\n").map_err(|e| BenchError::io(&json, e))?;
    std::fs::write(&markdown, report.to_markdown()).map_err(|e| BenchError::io(&markdown, e))?;
    Ok((json, markdown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_alternate_which_side_goes_first() {
        assert_eq!(order(0), [Side::Ours, Side::Peer]);
        assert_eq!(order(1), [Side::Peer, Side::Ours]);
        assert_eq!(order(2), [Side::Ours, Side::Peer]);
    }

    #[test]
    fn suites_are_named_as_on_the_command_line() {
        for suite in Suite::ALL {
            assert_eq!(Suite::from_name(suite.name()), Some(suite));
        }
        assert_eq!(Suite::from_name("everything"), None);
    }

    #[test]
    fn a_workers_outcome_is_its_last_json_line() {
        let out = "some noise\n{\"readings\":5,\"bytes\":10,\"elapsed_secs\":1.0}\n";
        let outcome: worker::SimulateOutcome = parse_worker(out).unwrap();
        assert_eq!(outcome.readings, 5);
        assert!(parse_worker::<worker::SimulateOutcome>("nothing").is_err());
    }
}
