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
    /// Benchmarks to run, in order [default: all]: producer, consumer, e2e, simulator, console, storage, gateway, detect, all.
    #[arg(value_name = "BENCHMARK")]
    benchmarks: Vec<String>,
    /// Seconds instead of minutes: tiny counts that only show everything works.
    #[arg(long)]
    smoke: bool,
    /// Runs of each side per comparison (the order alternates).
    #[arg(long)]
    repeats: Option<u32>,
    /// Records per producer run, in the consumer's topic, and in the storage benchmark's.
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
    /// The build of ours to measure [default: the static musl build, this
    /// program if it is one, else target/x86_64-unknown-linux-musl/release/metrocloud
    /// beside it when that exists, else this program].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Another build of ours the producer benchmark measures, as an extra row
    /// (repeatable) [default: this program, when it is not the build measured].
    #[arg(long = "also", value_name = "PATH")]
    also: Vec<PathBuf>,
    /// On a secure cluster of its own (`cluster up --secure`): every client,
    /// ours and the peers, as admin over SASL_SSL. This program and the
    /// builds measured need the tls feature.
    #[arg(long)]
    secure: bool,
}

/// The static musl build of this program: itself when it is one, else the
/// one cargo puts beside a `target/<profile>/` build.
fn static_build(this: &std::path::Path) -> Option<PathBuf> {
    if bench::build_label(this) == "static musl" {
        return Some(this.to_path_buf());
    }
    let name = this.file_name()?;
    let target = this.parent()?.parent()?;
    let candidate = target
        .join("x86_64-unknown-linux-musl")
        .join("release")
        .join(name);
    (bench::build_label(&candidate) == "static musl").then_some(candidate)
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
                "unknown benchmark {name:?}; known: producer, consumer, e2e, simulator, console, storage, gateway, detect, all"
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
    let this = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find this program's path: {e}")))?;
    for path in args.binary.iter().chain(&args.also) {
        if !path.is_file() {
            return Err(CliError::Usage(format!("{} is not a file", path.display())));
        }
        if let Some(emulator) = bench::emulator(path)
            && crate::cluster::which(&emulator).is_none()
        {
            return Err(CliError::Usage(format!(
                "{} is built for another processor and needs {emulator}, which is not installed (Debian: apt-get install qemu-user, or qemu-user-static)",
                path.display()
            )));
        }
    }
    let binary = args
        .binary
        .clone()
        .or_else(|| static_build(&this))
        .unwrap_or_else(|| this.clone());
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if args.binary.is_none() && binary != this && modified(&binary) < modified(&this) {
        println!(
            "warning: {} was built before this program; rebuild it (cargo build --release --target x86_64-unknown-linux-musl) or name the build to measure with --binary",
            binary.display()
        );
    }
    let also = if args.binary.is_none() && args.also.is_empty() && binary != this {
        vec![this.clone()]
    } else {
        args.also.clone()
    };
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
    settings.other_builds = also;
    println!(
        "ours: {} ({}){}",
        settings.binary.display(),
        settings.binary_label,
        settings
            .other_builds
            .iter()
            .map(|b| format!("; also {} ({})", b.display(), bench::build_label(b)))
            .collect::<String>()
    );
    settings.cache_dir = KafkaDistribution::cache_dir(config.kafka_cache.as_deref());
    settings.browser = crate::bench::browser::BrowserPrograms::from_config(config);
    if config.is_given("KAFKA_BOOTSTRAP_SERVERS") {
        if args.secure {
            return Err(CliError::Usage(
                "--secure starts a secure cluster of its own: unset KAFKA_BOOTSTRAP_SERVERS"
                    .to_string(),
            ));
        }
        settings.bootstrap = Some(config.bootstrap_strings());
    }
    if args.secure && !crate::kafka::security::TLS_BUILT_IN {
        return Err(CliError::Usage(
            "--secure measures SASL_SSL, which this build leaves out: build with `--features tls`"
                .to_string(),
        ));
    }
    settings.secure = args.secure;
    if let Some(repeats) = args.repeats {
        settings.repeats = repeats;
    }
    if let Some(records) = args.records {
        settings.producer_records = [records; 3];
        settings.consumer_records = records;
        settings.storage_records = records;
    }
    if let Some(seconds) = args.e2e_seconds {
        settings.e2e_seconds = seconds;
    }
    let report = bench::run(&settings, &suites, &|line| println!("{line}"))
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let (json, md) = bench::write_report(&report, &args.out, &format!("metrocloud-bench-{stamp}"))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let markdown = std::fs::read_to_string(&md)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", md.display())))?;
    println!("\n{markdown}");
    println!("report: {} and {}", json.display(), md.display());
    println!("client logs: {}", settings.work_dir.display());
    Ok(())
}
