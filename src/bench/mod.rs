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
//! - **storage**: a pre-filled topic into Parquet and PostgreSQL by our
//!   storage stage, beside `psql \copy` of the same rows.
//! - **gateway**: MQTT QoS 1 readings from many clients into our gateway and
//!   on into Kafka, beside Mosquitto under the same load generator.
//!
//! Every client, ours or Kafka's, is a child process of its own ([`worker`],
//! [`peer`]); [`usage`] measures it. Each run gets a fresh topic, deleted
//! afterwards. The report ([`report`]) is written as JSON and as markdown.

pub mod browser;
mod builds;
pub mod chart;
pub mod console;
mod consumer;
mod detect;
mod e2e;
mod error;
mod gateway;
pub mod http;
pub mod kcat;
pub mod mqtt;
mod numbers;
pub mod peer;
pub mod postgres;
mod producer;
pub mod report;
mod secure;
mod servers;
mod simulator;
pub mod storage;
mod topics;
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
use report::{BenchReport, Machine};
use usage::{BrokerCpu, Measured, run_measured};
use worker::WorkerSpec;

use builds::producer_notes;
pub use builds::{build_label, emulator};
pub use error::BenchError;

const MIB: f64 = 1024.0 * 1024.0;
/// The longest any single client run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

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
    /// A pre-filled topic into Parquet and PostgreSQL, beside `psql \copy`.
    Storage,
    /// MQTT QoS 1 readings into the gateway, beside Mosquitto.
    Gateway,
    /// The fault detector's quality and cost on a simulated fleet (no Kafka).
    Detect,
}

impl Suite {
    /// All, in the order they run.
    pub const ALL: [Suite; 8] = [
        Suite::Producer,
        Suite::Consumer,
        Suite::EndToEnd,
        Suite::Simulator,
        Suite::Console,
        Suite::Storage,
        Suite::Gateway,
        Suite::Detect,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Producer => "producer",
            Suite::Consumer => "consumer",
            Suite::EndToEnd => "e2e",
            Suite::Simulator => "simulator",
            Suite::Console => "console",
            Suite::Storage => "storage",
            Suite::Gateway => "gateway",
            Suite::Detect => "detect",
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
    /// The build of ours measured, started as `bench-worker` for our runs:
    /// the static musl binary users deploy, when there is one.
    pub binary: PathBuf,
    /// What that build is, e.g. "static musl" (see [`build_label`]).
    pub binary_label: String,
    /// Other builds of ours the producer benchmark measures too, as extra rows.
    pub other_builds: Vec<PathBuf>,
    /// librdkafka's `kcat`, the producer benchmark's second peer, when installed.
    pub kcat: Option<PathBuf>,
    /// Logs, readings file and (unless given a cluster) the cluster's data.
    pub work_dir: PathBuf,
    /// Where the Kafka jars are cached.
    pub cache_dir: PathBuf,
    /// Where the browser that times page loads is.
    pub browser: browser::BrowserPrograms,
    /// An existing cluster to use instead of starting one.
    pub bootstrap: Option<Vec<String>>,
    /// Start a secure cluster (`cluster up --secure`) and have every client,
    /// ours and the peers, connect to it as `admin` over SASL_SSL.
    pub secure: bool,
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
    /// Distinct readings in the storage benchmark's topic.
    pub storage_records: u64,
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
    /// Devices and days of the detector benchmark's fleet.
    pub detect_devices: u32,
    pub detect_days: u64,
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
            binary_label: build_label(&binary),
            binary,
            other_builds: Vec::new(),
            kcat: kcat::find(),
            work_dir,
            cache_dir: KafkaDistribution::cache_dir(None),
            browser: browser::BrowserPrograms::from_config(&crate::config::Config::default()),
            bootstrap: None,
            secure: false,
            producer,
            repeats: 3,
            smoke: false,
            producer_records: [1_000_000, 2_000_000, 400_000],
            consumer_records: 2_000_000,
            storage_records: 500_000,
            e2e_rates: vec![1_000, 10_000, 50_000],
            e2e_seconds: 15.0,
            e2e_max_rate: 400_000,
            e2e_peer_records: 5_000,
            simulator_devices: vec![10_000, 100_000],
            simulator_seconds: 30.0,
            detect_devices: 1_000,
            detect_days: 7,
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
            storage_records: 4_000,
            e2e_rates: vec![500],
            e2e_seconds: 2.0,
            e2e_max_rate: 500,
            e2e_peer_records: 50,
            simulator_devices: vec![1_000],
            simulator_seconds: 2.0,
            detect_devices: 50,
            detect_days: 1,
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
    /// Where clients connect: the SASL_SSL listeners of a secure cluster.
    bootstrap: Vec<String>,
    secure: Option<secure::SecureClients>,
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
    let needs_cluster = suites
        .iter()
        .any(|s| !matches!(s, Suite::Simulator | Suite::Detect));
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
        // Thrown away: no clean shutdown to wait for. Its files go with it,
        // unless the benchmark failed and its logs may tell why.
        say("ending the cluster");
        cluster.kill_all().await;
        if outcome.is_ok() {
            let _ = std::fs::remove_dir_all(cluster.dir());
        }
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
            secure: None,
            brokers: BrokerCpu::new(Vec::new()),
            distribution,
            owned: None,
        });
    }
    let mut spec = ClusterSpec::new(settings.work_dir.join("cluster"));
    spec.ports = PortPlan::Free;
    spec.ownership = Ownership::Supervised;
    spec.cache_dir = settings.cache_dir.clone();
    // A smoke run measures nothing worth a warmed-up JIT.
    spec.fast_start = settings.smoke;
    spec.secure = settings.secure;
    say(if settings.secure {
        "starting a secure 3-node cluster of its own (every client as admin over SASL_SSL)"
    } else {
        "starting a 3-node cluster of its own"
    });
    let (cluster, _) = LocalCluster::up(&spec)
        .await
        .map_err(|e| BenchError::Cluster(e.to_string()))?;
    let secure = if settings.secure {
        Some(secure::clients(&cluster, &settings.work_dir)?)
    } else {
        None
    };
    let pids = cluster
        .nodes()
        .iter()
        .filter_map(|n| cluster.node_pid(n.id))
        .collect();
    Ok(Target {
        bootstrap: cluster.bootstrap_servers(),
        admin: cluster.admin(),
        secure,
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

impl Side {
    /// A short name, for consumer group names.
    fn name(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Peer => "peer",
        }
    }
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
            ours_build: settings.binary_label.clone(),
            producer_notes: producer_notes(settings),
            producer: Vec::new(),
            consumer: Vec::new(),
            end_to_end: None,
            simulator: Vec::new(),
            console: None,
            storage: None,
            gateway: None,
            detect: None,
        };
        let readings = self.write_readings()?;
        for suite in suites {
            match suite {
                Suite::Producer => report.producer = self.producer(&readings).await?,
                Suite::Consumer => report.consumer = vec![self.consumer(&readings).await?],
                Suite::EndToEnd => report.end_to_end = Some(self.end_to_end(&readings).await?),
                Suite::Simulator => report.simulator = self.simulator().await?,
                Suite::Console => report.console = Some(self.console(&readings).await?),
                Suite::Storage => report.storage = Some(self.storage().await?),
                Suite::Gateway => report.gateway = Some(self.gateway(&readings).await?),
                Suite::Detect => {
                    report.detect = Some(detect::run(
                        settings.detect_devices,
                        settings.detect_days,
                        self.say,
                    )?)
                }
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
            fault_probability: 0.0,
            fault_kinds: crate::sensor::fault::FaultKind::ALL.to_vec(),
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

    fn worker_command(&self, spec: &WorkerSpec) -> Command {
        self.worker_command_of(&self.settings.binary, spec)
    }

    /// The build at `binary` running the worker described by `spec`.
    fn worker_command_of(&self, binary: &Path, spec: &WorkerSpec) -> Command {
        let mut command = match builds::emulator(binary) {
            Some(emulator) => {
                let mut command = Command::new(emulator);
                command.arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("bench-worker")
            .arg(serde_json::to_string(spec).expect("specs serialize"))
            .env("RUST_LOG", "warn");
        if let Some(secure) = self.target.and_then(|t| t.secure.as_ref()) {
            command.envs(secure.env.iter().map(|(k, v)| (*k, v.as_str())));
        }
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
    let mut page = report.to_markdown();
    if let Some(svg) = report.end_to_end.as_ref().and_then(chart::latency_svg) {
        let name = format!("{stem}-latency.svg");
        let path = dir.join(&name);
        std::fs::write(&path, svg).map_err(|e| BenchError::io(&path, e))?;
        page.push_str(&format!(
            "\n![Latency against offered rate, ours beside Kafka's producer]({name})\n"
        ));
    }
    std::fs::write(&markdown, page).map_err(|e| BenchError::io(&markdown, e))?;
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
