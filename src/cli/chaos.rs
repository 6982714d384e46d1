//! `metrocloud chaos`: fault scenarios under load, each on a fresh cluster of its own.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::chaos::{self, ChaosSettings, Scenario};
use crate::cluster::KafkaDistribution;
use crate::config::Config;

/// What `metrocloud chaos` is asked for.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// Scenarios to run, in order [default: all]: leader-kill, controller-kill,
    /// rolling-restart, two-down, broker-hang, consumer-kill, full-restart, late-cluster, storage-kill,
    /// postgres-restart, gateway-offline, gateway-kill, gateway-full.
    #[arg(value_name = "SCENARIO")]
    scenarios: Vec<String>,
    /// Readings per second offered during each scenario.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Simulated devices.
    #[arg(long, default_value_t = 500)]
    devices: u32,
    /// Seconds of load before the fault.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Seconds a fault lasts.
    #[arg(long, default_value_t = 15)]
    fault: u64,
    /// Seconds of load after the fault is healed.
    #[arg(long, default_value_t = 10)]
    cooldown: u64,
    /// Where the scenarios' clusters and logs go [default: <temp dir>/metrocloud-chaos].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep every scenario's directory (a failed one is always kept).
    #[arg(long)]
    keep: bool,
    /// Each scenario on a secure cluster (`cluster up --secure`), every client
    /// as its `pipeline` user, the gateway as `gateway` (SASL_SSL with the tls
    /// feature, else SASL_PLAINTEXT).
    #[arg(long)]
    secure: bool,
}

pub(crate) async fn run(args: ChaosArgs, config: &Config) -> Result<(), CliError> {
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|name| {
                Scenario::from_name(name).ok_or_else(|| {
                    let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    CliError::Usage(format!(
                        "unknown scenario {name:?}; known: {}",
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    if args.rate == 0 || args.devices == 0 {
        return Err(CliError::Usage(
            "--rate and --devices must be at least 1".to_string(),
        ));
    }
    let binary = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find this program's path: {e}")))?;
    let work_dir = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join("metrocloud-chaos"));
    let mut settings = ChaosSettings::new(binary, work_dir);
    settings.cache_dir = KafkaDistribution::cache_dir(config.kafka_cache.as_deref());
    settings.rate = args.rate;
    settings.devices = args.devices;
    settings.warmup = Duration::from_secs(args.warmup);
    settings.fault = Duration::from_secs(args.fault);
    settings.cooldown = Duration::from_secs(args.cooldown);
    settings.keep = args.keep;
    settings.secure = args.secure;

    let mut reports = Vec::new();
    for scenario in scenarios {
        match chaos::run_scenario(scenario, &settings, &|line| println!("{line}")).await {
            Ok(report) => reports.push(report),
            Err(e) => {
                if !reports.is_empty() {
                    println!("\n{}", chaos::render_table(&reports));
                }
                return Err(CliError::Failed(format!(
                    "scenario {} could not be run: {e}",
                    scenario.name()
                )));
            }
        }
    }
    println!("\n{}", chaos::render_table(&reports));
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.scenario.name())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "{} of {} scenarios failed: {}",
            failed.len(),
            reports.len(),
            failed.join(", ")
        )))
    }
}
