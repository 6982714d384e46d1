//! What can go wrong with a local cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::kafka::admin::AdminError;

use super::*;

/// What can go wrong running a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable `java`.
    #[error(
        "no Java found: install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`) \
         or set JAVA_HOME"
    )]
    JavaMissing,
    /// `java` is older than Kafka 4 needs.
    #[error("{} is Java {major}; Apache Kafka 4 needs Java 17 or newer (set JAVA_HOME to one)", path.display())]
    JavaTooOld {
        /// The java binary found.
        path: PathBuf,
        /// Its major version.
        major: u32,
    },
    /// No `mvn` to fetch the jars with.
    #[error(
        "Maven (mvn) not found: it fetches the Kafka jars on first use; install it \
         (e.g. `apt-get install maven`) or set METROCLOUD_KAFKA_CACHE to a directory that \
         already holds kafka-{KAFKA_VERSION}/libs"
    )]
    MavenMissing,
    /// Maven could not fetch the jars.
    #[error(
        "could not fetch Apache Kafka {version} with Maven (is Maven Central or your mirror \
         reachable? see ~/.m2/settings.xml); Maven said:\n{output}"
    )]
    FetchFailed {
        /// Kafka version asked for.
        version: String,
        /// The last lines Maven printed.
        output: String,
    },
    /// A port the cluster needs is in use.
    #[error(
        "port {port} ({purpose}) is already in use on 127.0.0.1: stop what listens there, or \
         pick other ports with --client-port-base / --controller-port-base"
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// What the cluster wanted it for.
        purpose: String,
    },
    /// A node's JVM exited while starting.
    #[error("node {id} died on start; its log is {}; last lines:\n{tail}", log.display())]
    NodeDied {
        /// Node id.
        id: i32,
        /// Where its log is.
        log: PathBuf,
        /// The last lines of its logs.
        tail: String,
    },
    /// Formatting a node's storage failed.
    #[error("formatting the storage of node {id} failed:\n{output}")]
    FormatFailed {
        /// Node id.
        id: i32,
        /// What the storage tool printed.
        output: String,
    },
    /// The cluster did not become ready in time.
    #[error("the cluster was not ready after {waited:?}: {detail}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// What was still missing.
        detail: String,
    },
    /// No cluster in the directory.
    #[error("no cluster in {}: start one with `metrocloud cluster up`", .0.display())]
    NoCluster(PathBuf),
    /// The directory holds a cluster of another shape than asked.
    #[error("{0}")]
    Mismatch(String),
    /// No node with that id.
    #[error("no node {0} in this cluster")]
    UnknownNode(i32),
    /// The node is not running.
    #[error("node {0} is not running")]
    NodeNotRunning(i32),
    /// The node is already running.
    #[error("node {0} is already running")]
    NodeAlreadyRunning(i32),
    /// The node did not exit in time after SIGTERM.
    #[error(
        "node {id} did not stop within {waited:?} of SIGTERM; `metrocloud cluster kill {id}` ends it"
    )]
    StopTimedOut {
        /// Node id.
        id: i32,
        /// How long we waited.
        waited: Duration,
    },
    /// Sending a signal failed.
    #[error("cannot send {signal} to node {id}: {source}")]
    Signal {
        /// Node id.
        id: i32,
        /// The signal's name.
        signal: &'static str,
        /// Why.
        source: nix::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `cluster.json` could not be read.
    #[error("{}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// Asking the cluster failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

impl ClusterError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ClusterError {
        ClusterError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
