//! Log output for every MetroCloud program.
//!
//! Human-readable lines go to standard error at `LOG_LEVEL` (or as finely as
//! `RUST_LOG` says, when set). With `ENVIRONMENT=production` the same events
//! are also written as JSON lines to `METROCLOUD_LOG_DIR/metrocloud.<date>.log`,
//! rotated daily, keeping the last 14 files.

use std::io::IsTerminal;

use tracing::Level;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Config;

/// Events with this target go to the log files only: the console already
/// shows them in another form (the command line's final error message).
pub const FILE_ONLY: &str = "metrocloud_file_only";

/// rskafka's partition client logs every error it does not retry itself as
/// "request encountered fatal error" at ERROR, `NotEnoughReplicas` included,
/// although our producer retries that until the delivery deadline. The error
/// is returned to our layer, which logs the outcome it decides on (a retry at
/// WARN, a final failure at ERROR), so rskafka's own line is left out.
const DECIDED_ABOVE: &str = "rskafka::client::partition";

/// Whether an event is written: everything but errors our layer judges and logs itself.
fn judged_here(target: &str, level: &Level) -> bool {
    !(target == DECIDED_ABOVE && *level == Level::ERROR)
}

/// Log files kept in production.
const KEPT_LOG_FILES: usize = 14;

/// Keeps the log file writer alive; logs written before it drops are flushed.
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _file_writer: Option<WorkerGuard>,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` holds an invalid filter.
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The log directory cannot be created.
    #[error("cannot create the log directory {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// The log directory cannot be written.
    #[error("cannot write log files in {dir}: {source}")]
    LogDir {
        /// The directory.
        dir: String,
        /// Why.
        source: tracing_appender::rolling::InitError,
    },
}

/// Installs the global subscriber as the configuration says.
pub fn init(config: &Config) -> Result<LogGuard, LoggingError> {
    let filter = || -> Result<EnvFilter, LoggingError> {
        match &config.rust_log {
            Some(directives) => Ok(EnvFilter::try_new(directives)?),
            // rskafka reports every connection at info; keep that for RUST_LOG=rskafka=info.
            _ => Ok(EnvFilter::new(format!(
                "{},rskafka=warn",
                config.log_level.as_filter()
            ))),
        }
    };
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let console_filter = filter()?.add_directive(
        format!("{FILE_ONLY}=off")
            .parse()
            .expect("a valid directive"),
    );
    let judged = || filter_fn(|metadata| judged_here(metadata.target(), metadata.level()));
    let registry =
        tracing_subscriber::registry().with(console.with_filter(console_filter.and(judged())));
    if !config.is_production() {
        registry.try_init().ok();
        return Ok(LogGuard { _file_writer: None });
    }
    std::fs::create_dir_all(&config.log_dir).map_err(|source| LoggingError::CreateDir {
        dir: config.log_dir.display().to_string(),
        source,
    })?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("metrocloud")
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(&config.log_dir)
        .map_err(|source| LoggingError::LogDir {
            dir: config.log_dir.display().to_string(),
            source,
        })?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(writer)
        .with_filter(filter()?.and(judged()));
    registry.with(json).try_init().ok();
    Ok(LogGuard {
        _file_writer: Some(guard),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rskafka_errors_our_layer_retries_are_not_written_but_everything_else_is() {
        assert!(!judged_here("rskafka::client::partition", &Level::ERROR));
        assert!(judged_here("rskafka::client::partition", &Level::WARN));
        assert!(judged_here("rskafka::connection", &Level::ERROR));
        assert!(judged_here(
            "metrocloud::kafka::producer::writer",
            &Level::ERROR
        ));
    }
}
