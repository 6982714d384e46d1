//! Why a benchmark could not be run.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// A clock or a memory figure of this process could not be read.
    #[error("could not measure: {0}")]
    Measure(String),
    /// The cluster could not be started, or a topic created.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A run lost records: its figures would be meaningless.
    #[error("{0}")]
    Lost(String),
    /// The console did not answer as it should.
    #[error("console: {0}")]
    Console(String),
    /// The gateway benchmark's servers or load failed.
    #[error("gateway: {0}")]
    Gateway(String),
}

impl BenchError {
    pub(super) fn io(path: &Path, source: std::io::Error) -> BenchError {
        BenchError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
