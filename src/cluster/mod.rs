//! A real Apache Kafka cluster on this machine, with no Docker.
//!
//! Each node is a Kafka 4.x JVM in KRaft combined mode (broker and controller)
//! on 127.0.0.1, with a fixed voter list. The same code serves the
//! `metrocloud cluster` commands (a cluster a user keeps running, detached)
//! and the integration tests (a cluster on free ports in a temporary
//! directory, supervised so that it ends with the test process).
//!
//! Everything about a cluster lives in one directory: `cluster.json` (cluster
//! id, nodes and ports) and one `node-<id>/` per node. Commands find a running
//! cluster by that directory alone, so `up`, `status`, `kill 2` and `down` can
//! be separate invocations.

mod distribution;
mod node;
pub mod tools;

pub use distribution::{KAFKA_VERSION, KafkaDistribution, LogConfig};
pub use node::{NodeSpec, Ownership, ProcessState};

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::kafka::admin::{
    AdminClient, AdminError, ClusterMetadata, PartitionInfo, QuorumState, Timeouts,
};
use crate::kafka::retry::{Backoff, Deadline};
use node::Supervisor;

/// Client port of node 1 by default; node N listens on this + N - 1 (the original design's 29092-29094).
pub const DEFAULT_CLIENT_PORT_BASE: u16 = 29092;
/// Controller port of node 1 by default; kept away from the client ports.
pub const DEFAULT_CONTROLLER_PORT_BASE: u16 = 29192;

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

/// How the ports of a new cluster are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPlan {
    /// Node N gets `client_base + N - 1` and `controller_base + N - 1`.
    Fixed {
        /// Client port of node 1.
        client_base: u16,
        /// Controller port of node 1.
        controller_base: u16,
    },
    /// Any free ports (test clusters, which must not collide with a user's).
    Free,
}

impl Default for PortPlan {
    fn default() -> Self {
        PortPlan::Fixed {
            client_base: DEFAULT_CLIENT_PORT_BASE,
            controller_base: DEFAULT_CONTROLLER_PORT_BASE,
        }
    }
}

/// What `up` is asked for.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The cluster directory.
    pub dir: PathBuf,
    /// Number of nodes, each broker and controller.
    pub nodes: usize,
    /// Port choice.
    pub ports: PortPlan,
    /// Who ends the JVMs.
    pub ownership: Ownership,
    /// How long to wait for the cluster to be ready.
    pub ready_timeout: Duration,
    /// Where the Kafka jars are cached.
    pub cache_dir: PathBuf,
    /// Broker settings added to every node's `server.properties` (kept in
    /// `cluster.json`, so restarts keep them); used by clusters made for fault
    /// injection, which want shorter group sessions than Kafka's defaults.
    pub broker_overrides: BTreeMap<String, String>,
    /// The maximum heap of each node's JVM (`-Xmx`), kept in `cluster.json`.
    pub heap: String,
}

impl ClusterSpec {
    /// A 3-node cluster in `dir` on the default ports, detached.
    pub fn new(dir: PathBuf) -> Self {
        ClusterSpec {
            dir,
            nodes: 3,
            ports: PortPlan::default(),
            ownership: Ownership::Detached,
            ready_timeout: Duration::from_secs(120),
            cache_dir: KafkaDistribution::cache_dir(None),
            broker_overrides: BTreeMap::new(),
            heap: node::DEFAULT_HEAP.to_string(),
        }
    }
}

/// The cluster directory: the one configured (`METROCLOUD_CLUSTER_DIR`), else
/// `$XDG_DATA_HOME/metrocloud/cluster`, else `~/.local/share/metrocloud/cluster`.
pub fn cluster_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("metrocloud/cluster")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterState {
    kafka_version: String,
    cluster_id: String,
    nodes: Vec<NodeSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    broker_overrides: BTreeMap<String, String>,
    #[serde(default = "default_heap")]
    heap: String,
}

fn default_heap() -> String {
    node::DEFAULT_HEAP.to_string()
}

/// What `up` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpOutcome {
    /// Nodes were started.
    Started,
    /// Every node was already running; nothing was done.
    AlreadyRunning,
}

/// One node in a [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id and ports.
    pub spec: NodeSpec,
    /// Its JVM's pid, when recorded.
    pub pid: Option<i32>,
    /// Whether the JVM runs.
    pub process: ProcessState,
    /// Whether the cluster's metadata lists it as a live broker.
    pub registered: bool,
}

/// The cluster as seen by its processes and by its own metadata.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    /// Every node.
    pub nodes: Vec<NodeStatus>,
    /// The quorum, when a broker answered.
    pub quorum: Option<QuorumState>,
    /// Partitions with fewer in-sync replicas than replicas.
    pub under_replicated: Vec<(String, PartitionInfo)>,
    /// Why the cluster could not be asked, if it could not.
    pub unreachable: Option<String>,
}

/// A local Kafka cluster: its directory, its nodes, and the JVMs this process supervises.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    state: Mutex<ClusterState>,
    distribution: KafkaDistribution,
    ownership: Ownership,
    supervisors: Mutex<HashMap<i32, Supervisor>>,
}

impl LocalCluster {
    /// Creates (or restarts) the cluster described by `spec` and waits until it is ready.
    pub async fn up(spec: &ClusterSpec) -> Result<(LocalCluster, UpOutcome), ClusterError> {
        let cluster = LocalCluster::prepare(spec).await?;
        let outcome = cluster.start(spec.ready_timeout).await?;
        Ok((cluster, outcome))
    }

    /// Plans the cluster described by `spec` (ports, cluster id, the Kafka jars)
    /// without starting anything, or opens the one already in its directory:
    /// its addresses are known before any node runs.
    pub async fn prepare(spec: &ClusterSpec) -> Result<LocalCluster, ClusterError> {
        let distribution = blocking({
            let cache = spec.cache_dir.clone();
            move || KafkaDistribution::ensure(&cache)
        })
        .await?;
        std::fs::create_dir_all(&spec.dir).map_err(|e| ClusterError::io(&spec.dir, e))?;
        let state = match read_state(&spec.dir)? {
            Some(state) => {
                let voters = state
                    .nodes
                    .iter()
                    .filter(|n| n.controller_port.is_some())
                    .count();
                if voters != spec.nodes {
                    return Err(ClusterError::Mismatch(format!(
                        "the cluster in {} has {voters} controller node(s), not {}: use it as it \
                         is, or remove it first with `metrocloud cluster down --purge`",
                        spec.dir.display(),
                        spec.nodes
                    )));
                }
                let mut state = state;
                if state.heap != spec.heap {
                    state.heap = spec.heap.clone();
                    write_state(&spec.dir, &state)?;
                }
                state
            }
            None => {
                let state = ClusterState {
                    kafka_version: KAFKA_VERSION.to_string(),
                    cluster_id: new_cluster_id(),
                    nodes: plan_nodes(spec.nodes, spec.ports)?,
                    broker_overrides: spec.broker_overrides.clone(),
                    heap: spec.heap.clone(),
                };
                write_state(&spec.dir, &state)?;
                state
            }
        };
        Ok(LocalCluster {
            dir: spec.dir.clone(),
            state: Mutex::new(state),
            distribution,
            ownership: spec.ownership,
            supervisors: Mutex::new(HashMap::new()),
        })
    }

    /// Starts every node that is not running and waits until the cluster is ready.
    pub async fn start(&self, ready_timeout: Duration) -> Result<UpOutcome, ClusterError> {
        let stopped: Vec<NodeSpec> = self
            .nodes()
            .into_iter()
            .filter(|n| node::process_state(&self.dir, n.id).1 == ProcessState::Down)
            .collect();
        if stopped.is_empty() {
            return Ok(UpOutcome::AlreadyRunning);
        }
        for node in &stopped {
            check_free(node)?;
        }
        self.format(&stopped).await?;
        let started = async {
            for node in &stopped {
                self.launch(node)?;
            }
            let ids: Vec<i32> = stopped.iter().map(|n| n.id).collect();
            self.wait_started(&ids, ready_timeout).await
        };
        if let Err(e) = started.await {
            // A half-started cluster is of no use: stop what this call started.
            for node in &stopped {
                let _ = node::signal_node(&self.dir, node.id, Signal::SIGKILL);
                self.release_supervisor(node.id);
            }
            return Err(e);
        }
        Ok(UpOutcome::Started)
    }

    /// The cluster already set up in `dir`, to inspect or control it.
    pub fn open(dir: &Path, cache_dir: &Path) -> Result<LocalCluster, ClusterError> {
        let state = read_state(dir)?.ok_or_else(|| ClusterError::NoCluster(dir.to_path_buf()))?;
        let distribution = KafkaDistribution::ensure(cache_dir)?;
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            distribution,
            ownership: Ownership::Detached,
            supervisors: Mutex::new(HashMap::new()),
        })
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The jars and Java this cluster runs with.
    pub fn distribution(&self) -> &KafkaDistribution {
        &self.distribution
    }

    /// The cluster id every node was formatted with.
    pub fn cluster_id(&self) -> String {
        self.lock_state().cluster_id.clone()
    }

    /// Every node, in id order.
    pub fn nodes(&self) -> Vec<NodeSpec> {
        self.lock_state().nodes.clone()
    }

    /// `127.0.0.1:<port>` of every node, for `KAFKA_BOOTSTRAP_SERVERS`.
    pub fn bootstrap_servers(&self) -> Vec<String> {
        self.nodes().iter().map(NodeSpec::client_address).collect()
    }

    /// An admin client for this cluster with short timeouts (it is on loopback).
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(
            self.bootstrap_servers(),
            Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(10),
            },
        )
    }

    /// A node's directory, where its `server.properties` and logs are.
    pub fn node_dir(&self, id: i32) -> PathBuf {
        node::node_dir(&self.dir, id)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node(&self, id: i32) -> Result<NodeSpec, ClusterError> {
        self.nodes()
            .into_iter()
            .find(|n| n.id == id)
            .ok_or(ClusterError::UnknownNode(id))
    }

    fn voters(&self) -> String {
        self.nodes()
            .iter()
            .filter_map(|n| {
                n.controller_port
                    .map(|port| format!("{}@127.0.0.1:{port}", n.id))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn format(&self, nodes: &[NodeSpec]) -> Result<(), ClusterError> {
        let voters = self.voters();
        let cluster_id = self.cluster_id();
        let overrides = self.lock_state().broker_overrides.clone();
        // Each format is a JVM start of its own: run them side by side.
        let mut running = Vec::new();
        for node in nodes {
            let properties = node::write_properties(&self.dir, node, &voters, &overrides)?;
            let mut command = node::format_command(&self.distribution, &properties, &cluster_id);
            running.push((
                node.id,
                tokio::task::spawn_blocking(move || command.output()),
            ));
        }
        for (id, handle) in running {
            let output = match handle.await {
                Ok(output) => output,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            let output = output.map_err(|e| ClusterError::io(self.distribution.java(), e))?;
            if !output.status.success() {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                return Err(ClusterError::FormatFailed {
                    id,
                    output: distribution::last_lines(&text, 20),
                });
            }
        }
        Ok(())
    }

    fn launch(&self, node: &NodeSpec) -> Result<(), ClusterError> {
        let heap = self.lock_state().heap.clone();
        let supervisor = node::launch(&self.distribution, &self.dir, node, &heap, self.ownership)?;
        if let Some(supervisor) = supervisor {
            let previous = self
                .supervisors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(node.id, supervisor);
            if let Some(previous) = previous {
                previous.release();
            }
        }
        Ok(())
    }

    /// Waits until every node runs as a registered broker and the quorum has a leader.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        let all: Vec<i32> = self.nodes().iter().map(|n| n.id).collect();
        self.wait_started(&all, timeout).await
    }

    /// Waits until the nodes just `started`, and every other running node, are
    /// registered brokers and the quorum has a leader. A started node that
    /// exits is an error; a node that was already down stays out of it (one
    /// node is restarted while another is down).
    async fn wait_started(&self, started: &[i32], timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Deadline::after(timeout);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let admin = self.admin();
        let mut last_progress = tokio::time::Instant::now();
        loop {
            let mut expected = Vec::new();
            for node in self.nodes() {
                match node::process_state(&self.dir, node.id).1 {
                    ProcessState::Down if !started.contains(&node.id) => {}
                    ProcessState::Down => {
                        let (log, tail) = node::log_tail(&self.dir, node.id, 25);
                        return Err(ClusterError::NodeDied {
                            id: node.id,
                            log,
                            tail,
                        });
                    }
                    ProcessState::Running => expected.push(node.id),
                    ProcessState::Paused => {}
                }
            }
            let missing = match self.readiness(&admin, &expected).await {
                Ok(()) => return Ok(()),
                Err(missing) => missing,
            };
            if last_progress.elapsed() >= Duration::from_secs(10) {
                tracing::info!("waiting for the cluster: {missing}");
                last_progress = tokio::time::Instant::now();
            }
            if !deadline.sleep(backoff.next_delay()).await {
                return Err(ClusterError::NotReady {
                    waited: timeout,
                    detail: missing,
                });
            }
        }
    }

    /// `Ok` when every node in `expected` is registered and the quorum has a leader,
    /// else what is missing.
    async fn readiness(&self, admin: &AdminClient, expected: &[i32]) -> Result<(), String> {
        let metadata = admin
            .metadata(Some(&[]))
            .await
            .map_err(|e| format!("no broker answers yet ({e})"))?;
        let registered: Vec<i32> = metadata.brokers.iter().map(|b| b.id).collect();
        let absent: Vec<i32> = expected
            .iter()
            .copied()
            .filter(|id| !registered.contains(id))
            .collect();
        if !absent.is_empty() {
            return Err(format!(
                "{}/{} brokers registered (waiting for {absent:?})",
                expected.len() - absent.len(),
                expected.len()
            ));
        }
        match admin.quorum().await {
            Ok(QuorumState {
                leader: Some(_), ..
            }) => Ok(()),
            Ok(_) => Err("the controller quorum has no leader yet".to_string()),
            Err(e) => Err(format!("the controller quorum does not answer yet ({e})")),
        }
    }

    /// Processes, registration, quorum and under-replicated partitions.
    pub async fn status(&self) -> ClusterStatus {
        let admin = self.admin();
        let (metadata, quorum, unreachable) = match admin.metadata(None).await {
            Ok(metadata) => {
                let quorum = admin.quorum().await.ok();
                (Some(metadata), quorum, None)
            }
            Err(e) => (None, None, Some(e.to_string())),
        };
        let registered = |id: i32| {
            metadata
                .as_ref()
                .is_some_and(|m: &ClusterMetadata| m.brokers.iter().any(|b| b.id == id))
        };
        let nodes = self
            .nodes()
            .into_iter()
            .map(|spec| {
                let (pid, process) = node::process_state(&self.dir, spec.id);
                NodeStatus {
                    registered: registered(spec.id),
                    spec,
                    pid,
                    process,
                }
            })
            .collect();
        ClusterStatus {
            nodes,
            quorum,
            under_replicated: metadata.map(|m| m.under_replicated()).unwrap_or_default(),
            unreachable,
        }
    }

    /// The pid of node `id`'s JVM, while it is up.
    pub fn node_pid(&self, id: i32) -> Option<i32> {
        match node::process_state(&self.dir, id) {
            (Some(pid), ProcessState::Running | ProcessState::Paused) => Some(pid),
            _ => None,
        }
    }

    /// The state of one node's JVM.
    pub fn process_state(&self, id: i32) -> Result<ProcessState, ClusterError> {
        self.node(id)?;
        Ok(node::process_state(&self.dir, id).1)
    }

    /// SIGTERM: a clean shutdown, waited for.
    pub async fn stop_node(&self, id: i32) -> Result<(), ClusterError> {
        self.node(id)?;
        node::signal_node(&self.dir, id, Signal::SIGTERM)?;
        // A paused node only acts on SIGTERM once it runs again.
        node::signal_node(&self.dir, id, Signal::SIGCONT)?;
        let waited = Duration::from_secs(60);
        if !self.wait_down(id, waited).await {
            return Err(ClusterError::StopTimedOut { id, waited });
        }
        self.release_supervisor(id);
        Ok(())
    }

    /// SIGKILL: a crash.
    pub async fn kill_node(&self, id: i32) -> Result<(), ClusterError> {
        self.node(id)?;
        node::signal_node(&self.dir, id, Signal::SIGKILL)?;
        self.wait_down(id, Duration::from_secs(10)).await;
        self.release_supervisor(id);
        Ok(())
    }

    /// SIGSTOP: the node freezes, as a hung broker does. Returns once it is stopped.
    pub async fn pause_node(&self, id: i32) -> Result<(), ClusterError> {
        self.node(id)?;
        node::signal_node(&self.dir, id, Signal::SIGSTOP)?;
        self.wait_for_state(id, ProcessState::Paused).await
    }

    /// SIGCONT: a paused node carries on. Returns once it runs.
    pub async fn resume_node(&self, id: i32) -> Result<(), ClusterError> {
        self.node(id)?;
        node::signal_node(&self.dir, id, Signal::SIGCONT)?;
        self.wait_for_state(id, ProcessState::Running).await
    }

    /// Signals reach every thread of a JVM a moment later; wait for the state to show it.
    async fn wait_for_state(&self, id: i32, wanted: ProcessState) -> Result<(), ClusterError> {
        let deadline = Deadline::after(Duration::from_secs(10));
        loop {
            match node::process_state(&self.dir, id).1 {
                state if state == wanted => return Ok(()),
                ProcessState::Down => return Err(ClusterError::NodeNotRunning(id)),
                _ => {}
            }
            if !deadline.sleep(Duration::from_millis(20)).await {
                return Err(ClusterError::NotReady {
                    waited: Duration::from_secs(10),
                    detail: format!("node {id} is not {wanted} yet"),
                });
            }
        }
    }

    /// Starts a stopped node and waits until it is a registered broker again.
    pub async fn start_node(&self, id: i32, timeout: Duration) -> Result<(), ClusterError> {
        let node = self.node(id)?;
        if node::process_state(&self.dir, id).1 != ProcessState::Down {
            return Err(ClusterError::NodeAlreadyRunning(id));
        }
        check_free(&node)?;
        self.format(std::slice::from_ref(&node)).await?;
        self.launch(&node)?;
        self.wait_started(&[id], timeout).await
    }

    /// Adds a broker-only node (the next id) and waits until it is registered.
    ///
    /// The controller quorum keeps its static voters: a fourth voter would not
    /// survive more failures than three, and changing voters needs a dynamic quorum.
    pub async fn add_node(&self, timeout: Duration) -> Result<NodeSpec, ClusterError> {
        let node = {
            let mut state = self.lock_state();
            let id = state.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
            let taken: Vec<u16> = state
                .nodes
                .iter()
                .flat_map(|n| [Some(n.client_port), n.controller_port])
                .flatten()
                .collect();
            let highest = state.nodes.iter().map(|n| n.client_port).max().unwrap_or(0);
            let client_port = (highest.saturating_add(1)..u16::MAX)
                .find(|p| !taken.contains(p) && port_is_free(*p))
                .ok_or_else(|| ClusterError::PortInUse {
                    port: highest.saturating_add(1),
                    purpose: format!("client port of node {id}"),
                })?;
            let node = NodeSpec {
                id,
                client_port,
                controller_port: None,
            };
            state.nodes.push(node.clone());
            write_state(&self.dir, &state)?;
            node
        };
        self.format(std::slice::from_ref(&node)).await?;
        self.launch(&node)?;
        self.wait_started(&[node.id], timeout).await?;
        Ok(node)
    }

    /// Stops every node cleanly (SIGKILL for any still running after a minute);
    /// with `purge`, deletes the cluster directory too.
    pub async fn down(&self, purge: bool) -> Result<(), ClusterError> {
        let nodes = self.nodes();
        for node in &nodes {
            let _ = node::signal_node(&self.dir, node.id, Signal::SIGCONT);
            let _ = node::signal_node(&self.dir, node.id, Signal::SIGTERM);
        }
        for node in &nodes {
            if !self.wait_down(node.id, Duration::from_secs(60)).await {
                tracing::warn!("node {} ignored SIGTERM for 60 s; killing it", node.id);
                let _ = node::signal_node(&self.dir, node.id, Signal::SIGKILL);
                self.wait_down(node.id, Duration::from_secs(10)).await;
            }
            self.release_supervisor(node.id);
        }
        if purge {
            std::fs::remove_dir_all(&self.dir).map_err(|e| ClusterError::io(&self.dir, e))?;
        }
        Ok(())
    }

    /// A command running Kafka's tool `tool` with the cached jars.
    pub fn tool_command(&self, tool: &tools::KafkaTool, args: &[String]) -> Command {
        tools::tool_command(
            &self.distribution,
            tool,
            &self.bootstrap_servers().join(","),
            args,
        )
    }

    async fn wait_down(&self, id: i32, limit: Duration) -> bool {
        let deadline = Deadline::after(limit);
        loop {
            if node::process_state(&self.dir, id).1 == ProcessState::Down {
                return true;
            }
            if !deadline.sleep(Duration::from_millis(100)).await {
                return false;
            }
        }
    }

    fn release_supervisor(&self, id: i32) {
        let supervisor = self
            .supervisors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(supervisor) = supervisor {
            supervisor.release();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let supervisors = std::mem::take(
            self.supervisors
                .get_mut()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (_, supervisor) in supervisors {
            supervisor.release();
        }
    }
}

/// Runs blocking work (process spawning, file system) off the async runtime.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

fn read_state(dir: &Path) -> Result<Option<ClusterState>, ClusterError> {
    let path = state_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ClusterError::State { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClusterError::io(&path, e)),
    }
}

fn write_state(dir: &Path, state: &ClusterState) -> Result<(), ClusterError> {
    let path = state_path(dir);
    let text = serde_json::to_string_pretty(state).map_err(|source| ClusterError::State {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, text).map_err(|e| ClusterError::io(&path, e))
}

/// A KRaft cluster id: a random Kafka UUID.
fn new_cluster_id() -> String {
    crate::kafka::admin::random_kafka_uuid()
}

fn plan_nodes(count: usize, ports: PortPlan) -> Result<Vec<NodeSpec>, ClusterError> {
    match ports {
        PortPlan::Fixed {
            client_base,
            controller_base,
        } => (0..count)
            .map(|i| {
                let offset = u16::try_from(i).unwrap_or(u16::MAX);
                let port = |base: u16| {
                    base.checked_add(offset).ok_or_else(|| {
                        ClusterError::Mismatch(format!(
                            "port base {base} leaves no room for {count} nodes"
                        ))
                    })
                };
                Ok(NodeSpec {
                    id: i as i32 + 1,
                    client_port: port(client_base)?,
                    controller_port: Some(port(controller_base)?),
                })
            })
            .collect(),
        PortPlan::Free => {
            let ports = free_ports(count * 2)?;
            Ok((0..count)
                .map(|i| NodeSpec {
                    id: i as i32 + 1,
                    client_port: ports[2 * i],
                    controller_port: Some(ports[2 * i + 1]),
                })
                .collect())
        }
    }
}

/// The kernel's range of ports for the source end of outgoing connections.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// `count` free ports outside the ephemeral range. A port inside it can be
/// taken, while its node is down, as the source port of some connection — even
/// of a connection to itself, which Linux makes when a client keeps connecting
/// to a local port nothing listens on — and the node could not start again.
fn free_ports(count: usize) -> Result<Vec<u16>, ClusterError> {
    use rand::seq::SliceRandom;
    let (low, high) = ephemeral_range();
    let mut candidates: Vec<u16> = if low > 11_000 {
        (10_000..low).collect()
    } else {
        (high.saturating_add(1)..=u16::MAX).collect()
    };
    candidates.shuffle(&mut rand::rng());
    // Hold every listener until all ports are chosen, so none is picked twice.
    let mut held = Vec::with_capacity(count);
    for port in candidates {
        if held.len() == count {
            break;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
    }
    if held.len() < count {
        return Err(ClusterError::PortInUse {
            port: low,
            purpose: format!("{count} free ports outside the ephemeral range {low}-{high}"),
        });
    }
    Ok(held.into_iter().map(|(port, _)| port).collect())
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn check_free(node: &NodeSpec) -> Result<(), ClusterError> {
    let ports = [
        (Some(node.client_port), "client"),
        (node.controller_port, "controller"),
    ];
    for (port, kind) in ports {
        if let Some(port) = port
            && !port_is_free(port)
        {
            return Err(ClusterError::PortInUse {
                port,
                purpose: format!("{kind} port of node {}", node.id),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let ports = free_ports(6).expect("free ports");
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 6, "{ports:?}");
        assert!(
            ports.iter().all(|&p| p < low || p > high),
            "{ports:?} inside {low}-{high}"
        );
    }

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!((0..1000).all(|_| !new_cluster_id().starts_with('-')));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(id, new_cluster_id());
    }

    #[test]
    fn default_ports_are_the_original_designs_and_controllers_stay_apart() {
        let nodes = plan_nodes(3, PortPlan::default()).unwrap();
        let clients: Vec<u16> = nodes.iter().map(|n| n.client_port).collect();
        assert_eq!(clients, [29092, 29093, 29094]);
        for node in &nodes {
            assert!(!clients.contains(&node.controller_port.unwrap()));
        }
    }

    #[test]
    fn free_ports_are_distinct() {
        let nodes = plan_nodes(3, PortPlan::Free).unwrap();
        let mut ports: Vec<u16> = nodes
            .iter()
            .flat_map(|n| [n.client_port, n.controller_port.unwrap()])
            .collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 6);
    }
}
