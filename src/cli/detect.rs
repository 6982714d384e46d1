//! `metrocloud detect --csv FILE`: a user's own series through the pipeline's fault detector.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::config::Config;
use crate::sensor::detect::series::{SeriesError, score_csv};

/// What `metrocloud detect` is asked for.
#[derive(Debug, Args)]
pub(crate) struct DetectArgs {
    /// The series: `timestamp,value` rows in time order, an optional header
    /// and an optional third column `label` (1 inside an anomaly, 0 outside).
    #[arg(long, value_name = "FILE")]
    csv: PathBuf,
    /// Where `timestamp,value,anomaly_score` goes [default: standard output].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: DetectArgs, config: &Config) -> Result<(), CliError> {
    let input = File::open(&args.csv)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", args.csv.display())))?;
    let input = BufReader::new(input);
    let failed = |e: SeriesError| match e {
        SeriesError::Row { .. } => CliError::Usage(format!("{}: {e}", args.csv.display())),
        SeriesError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe => CliError::Status(0),
        SeriesError::Io(e) => CliError::Failed(e.to_string()),
    };
    let summary = match &args.out {
        Some(path) => {
            let file = File::create(path)
                .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
            score_csv(input, BufWriter::new(file), &config.detector).map_err(failed)?
        }
        None => score_csv(input, std::io::stdout().lock(), &config.detector).map_err(failed)?,
    };
    eprintln!(
        "{} rows scored, {} at score 1, {} alerts",
        summary.rows,
        summary.flagged,
        summary.alerts.len()
    );
    for (at, kind) in &summary.alerts {
        eprintln!("  alert {kind} at {}", at.to_rfc3339());
    }
    if let Some(labels) = &summary.labelled {
        eprintln!(
            "labels: {} anomalous episodes, {} found, {} alerts outside any",
            labels.episodes, labels.found, labels.false_alarms
        );
    }
    Ok(())
}
