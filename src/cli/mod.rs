//! The `metrocloud` command line.
//!
//! Arguments are parsed here with clap; every command then calls the library.
//! Exit status: 0 on success, 1 when the work failed (a broker unreachable, a
//! node that died), 2 for bad configuration or usage, and a Kafka tool's own
//! status for `cluster tool`.

mod bench;
mod chaos;
mod cluster;
mod console;
mod detect;
mod gateway;
mod health;
mod history;
mod pipeline;
mod topics;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::logging;

/// IoT sensor-data ingestion on Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "metrocloud", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline: simulator, producer, consumer, alerts (starts a local
    /// cluster when KAFKA_BOOTSTRAP_SERVERS is unset and nothing answers), with the
    /// console on 127.0.0.1:8080. Ctrl-C stops it.
    Run {
        /// Do not start the console.
        #[arg(long)]
        no_console: bool,
        #[command(flatten)]
        console: console::ConsoleArgs,
    },
    /// The monitoring console alone: cluster, topics, messages, consumer groups,
    /// fleet, alerts and dead letters on web pages and JSON (read-only).
    Console(console::ConsoleArgs),
    /// Simulated sensors into Kafka (what `metrocloud-producer` runs).
    Produce,
    /// Kafka into validation, alerts and dead letters (what `metrocloud-consumer` runs).
    Consume {
        /// Also write one line per processed reading to this file, as it is
        /// processed: `reading <device> <run> <sequence> <partition> <offset>`, or
        /// `duplicate <device> <sequence>` for a repeat that was removed. Every
        /// line is written before its offset is committed, so the file is a
        /// complete record of what this process handled (`metrocloud chaos` audits
        /// delivery with it).
        #[arg(long, value_name = "FILE")]
        processed_log: Option<PathBuf>,
    },
    /// Kafka into Parquet files under METROCLOUD_DATA_DIR, each reading exactly
    /// once, in a consumer group of its own (METROCLOUD_STORE_GROUP_ID). Ctrl-C
    /// closes the open files, commits, and stops.
    Store,
    /// Kafka into per-device minute aggregates (count, min, max, mean, last,
    /// anomalies) on KAFKA_AGGREGATES_TOPIC, each minute exactly once, in a
    /// consumer group of its own (METROCLOUD_AGGREGATE_GROUP_ID).
    Aggregate,
    /// Devices' readings in over MQTT (sensors/<device_type>/<device_id>) and HTTP
    /// (POST /api/v1/readings), acknowledged once durable in a disk buffer, then
    /// forwarded to the sensor topic in order; the buffer holds them while Kafka
    /// is away. Ctrl-C stops it.
    Gateway,
    /// A device's stored readings or minute aggregates, oldest first (from the
    /// Parquet files under METROCLOUD_DATA_DIR; the last 24 hours unless
    /// --from/--to say otherwise).
    History(history::HistoryArgs),
    /// Score a time series with the pipeline's fault detector: reads
    /// `timestamp,value[,label]` rows and writes `timestamp,value,anomaly_score`
    /// (0 to 1) for each, with the alerts it would raise on standard error.
    Detect(detect::DetectArgs),
    /// Print the effective configuration (from the environment and defaults).
    Config {
        /// Print `.env.example` instead: every variable with its help and default.
        #[arg(long, conflicts_with = "markdown")]
        example: bool,
        /// Print the README's table of variables instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Check that Kafka answers and the sensor topic is led (exit status 0 or 1):
    /// the container healthcheck, which needs no shell.
    Health,
    /// Create or inspect the sensor topic.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// Inject faults under load, each scenario on a fresh local cluster of its own,
    /// and check that no acknowledged reading is lost (exit status 1 if one is).
    Chaos(chaos::ChaosArgs),
    /// Benchmarks: ours beside Kafka's own perf tools on the same cluster, with
    /// the same durability (acks=all); writes JSON and markdown reports.
    Bench(bench::BenchArgs),
    /// One benchmarked client of ours, started by `bench` (one JSON line out).
    #[command(hide = true)]
    BenchWorker {
        /// What to do, as JSON.
        spec: String,
    },
    /// Run a local Apache Kafka cluster (JVM processes on 127.0.0.1, no Docker).
    Cluster {
        /// Cluster directory [default: $METROCLOUD_CLUSTER_DIR or ~/.local/share/metrocloud/cluster].
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
}

/// How a command ended, beyond success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad configuration or usage: exit status 2.
    #[error("{0}")]
    Usage(String),
    /// The work failed: exit status 1.
    #[error("{0}")]
    Failed(String),
    /// End with this exit status and no message: a child's status passed on,
    /// or 0 when standard output's reader went away.
    #[error("exit status {0}")]
    Status(u8),
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}

/// Parses the command line, runs the command, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    start(cli.command)
}

/// `metrocloud-producer`: the `produce` command on its own.
pub fn producer_main() -> ExitCode {
    Standalone::parse();
    start(Command::Produce)
}

/// `metrocloud-consumer`: the `consume` command on its own.
pub fn consumer_main() -> ExitCode {
    Standalone::parse();
    start(Command::Consume {
        processed_log: None,
    })
}

/// The standalone binaries take no arguments: everything comes from the environment.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Part of the MetroCloud pipeline; configured from the environment (see .env.example)."
)]
struct Standalone {}

fn start(command: Command) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _logs = match logging::init(&config) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(command, Command::Console(_)) && !crate::console::lower_priority() {
        tracing::warn!(
            "could not lower the console's CPU priority; it competes with the pipeline as an equal"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(command, config));
    let code = match &outcome {
        Ok(()) => return ExitCode::SUCCESS,
        Err(CliError::Status(code)) => return ExitCode::from(*code),
        Err(CliError::Usage(_)) => 2,
        Err(CliError::Failed(_)) => 1,
    };
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        tracing::error!(target: logging::FILE_ONLY, exit_status = code, "{e}");
    }
    ExitCode::from(code)
}

async fn run(command: Command, config: Config) -> Result<(), CliError> {
    match command {
        Command::Run {
            no_console,
            console,
        } => {
            let console = (!no_console).then_some(console);
            pipeline::run(config, console, crate::shutdown::on_signals()).await
        }
        Command::Console(args) => console::run(args, config, crate::shutdown::on_signals()).await,
        Command::Produce => pipeline::produce(config, crate::shutdown::on_signals()).await,
        Command::Consume { processed_log } => {
            pipeline::consume(config, processed_log, crate::shutdown::on_signals()).await
        }
        Command::Store => pipeline::store(config, crate::shutdown::on_signals()).await,
        Command::Aggregate => pipeline::aggregate(config, crate::shutdown::on_signals()).await,
        Command::Gateway => gateway::run(config, crate::shutdown::on_signals()).await,
        Command::History(args) => history::run(args, &config),
        Command::Detect(args) => detect::run(args, &config),
        Command::Config { example, markdown } => {
            if example {
                print!("{}", crate::config::env_example());
            } else if markdown {
                print!("{}", crate::config::markdown_table());
            } else {
                for (name, value) in config.to_env_lines() {
                    println!("{name}={value}");
                }
                for name in config.secrets_set() {
                    println!("# {name} is set (not shown)");
                }
            }
            Ok(())
        }
        Command::Topics { command } => topics::run(command, &config).await,
        Command::Health => health::run(&config).await,
        Command::Cluster { dir, command } => cluster::run(command, dir, &config).await,
        Command::Chaos(args) => chaos::run(args, &config).await,
        Command::Bench(args) => bench::run(args, &config).await,
        Command::BenchWorker { spec } => {
            let line = crate::bench::worker::run(&spec, &config)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            println!("{line}");
            Ok(())
        }
    }
}
