//! `metrocloud bench`: our clients beside Kafka's own tools, in one run.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::bench::{self, BenchSettings, Suite};
use crate::cluster::KafkaDistribution;
use crate::config::Config;

/// What `metrocloud bench` is asked for.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Benchmarks to run, in order [default: all]: producer, consumer, e2e, simulator, console, all.
    #[arg(value_name = "BENCHMARK")]
    benchmarks: Vec<String>,
    /// Seconds instead of minutes: tiny counts that only show everything works.
    #[arg(long)]
    smoke: bool,
    /// Runs of each side per comparison (the order alternates).
    #[arg(long)]
    repeats: Option<u32>,
    /// Records per producer run and in the consumer's topic, for every record size.
    #[arg(long)]
    records: Option<u64>,
    /// Seconds each end-to-end rate is offered.
    #[arg(long)]
    e2e_seconds: Option<f64>,
    /// Where the report goes: <out>/metrocloud-bench-<time>.json and .md.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Where logs, readings and the cluster's data go [default: <temp dir>/metrocloud-bench].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub(crate) async fn run(args: BenchArgs, config: &Config) -> Result<(), CliError> {
    let mut suites = Vec::new();
    for name in &args.benchmarks {
        if name == "all" {
            suites.extend(Suite::ALL);
            continue;
        }
        let suite = Suite::from_name(name).ok_or_else(|| {
            CliError::Usage(format!(
                "unknown benchmark {name:?}; known: producer, consumer, e2e, simulator, console, all"
            ))
        })?;
        suites.push(suite);
    }
    if suites.is_empty() {
        suites.extend(Suite::ALL);
    }
    // Each benchmark once, in the order first asked for.
    let mut seen = Vec::new();
    suites.retain(|suite| {
        let first = !seen.contains(suite);
        seen.push(*suite);
        first
    });
    if args.repeats == Some(0) || args.records == Some(0) {
        return Err(CliError::Usage(
            "--repeats and --records must be at least 1".to_string(),
        ));
    }
    if args.e2e_seconds.is_some_and(|s| !(s > 0.0 && s <= 3600.0)) {
        return Err(CliError::Usage(
            "--e2e-seconds must be above 0 and at most 3600".to_string(),
        ));
    }
    let binary = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find this program's path: {e}")))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let work_dir = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join("metrocloud-bench"))
        .join(&stamp);
    let mut settings = if args.smoke {
        BenchSettings::smoke(binary, work_dir, config.producer.clone())
    } else {
        BenchSettings::full(binary, work_dir, config.producer.clone())
    };
    settings.cache_dir = KafkaDistribution::cache_dir(config.kafka_cache.as_deref());
    settings.browser = crate::bench::browser::BrowserPrograms::from_config(config);
    if config.is_given("KAFKA_BOOTSTRAP_SERVERS") {
        settings.bootstrap = Some(config.bootstrap_strings());
    }
    if let Some(repeats) = args.repeats {
        settings.repeats = repeats;
    }
    if let Some(records) = args.records {
        settings.producer_records = [records; 3];
        settings.consumer_records = records;
    }
    if let Some(seconds) = args.e2e_seconds {
        settings.e2e_seconds = seconds;
    }
    let report = bench::run(&settings, &suites, &|line| println!("{line}"))
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let markdown = report.to_markdown();
    let (json, md) = bench::write_report(&report, &args.out, &format!("metrocloud-bench-{stamp}"))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!("\n{markdown}");
    println!("report: {} and {}", json.display(), md.display());
    println!("client logs: {}", settings.work_dir.display());
    Ok(())
}
