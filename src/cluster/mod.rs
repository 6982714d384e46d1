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

mod archive;
mod distribution;
mod error;
mod faults;
mod health;
mod node;
mod ports;
pub mod secure;
mod state;
pub mod tools;

pub(crate) use distribution::which;
pub use distribution::{KAFKA_VERSION, KafkaDistribution, LogConfig};
pub use error::ClusterError;
pub use node::{NodeSpec, Ownership, ProcessState};
pub use ports::{
    DEFAULT_CLIENT_PORT_BASE, DEFAULT_CONTROLLER_PORT_BASE, PortPlan, SASL_PORT_OFFSET,
};
use ports::{check_free, plan_nodes, port_is_free};
pub use secure::Principal;
use state::{ClusterState, new_cluster_id, read_state, write_state};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::kafka::admin::{PartitionInfo, QuorumState};
use crate::kafka::security::Brokers;

use crate::kafka::retry::Deadline;
use node::Supervisor;

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
    /// Start each JVM with the client JIT compiler only
    /// (`-XX:TieredStopAtLevel=1`), kept in `cluster.json`: a node starts on
    /// about half the CPU time, at some cost in peak throughput. For clusters
    /// that live for minutes, not for benchmarks.
    pub fast_start: bool,
    /// Authenticate and authorize every client ([`secure`]); kept in `cluster.json`.
    pub secure: bool,
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
            fast_start: false,
            secure: false,
        }
    }

    /// A cluster that lives for minutes and ends with the process that
    /// starts it (tests, fault injection): free ports, supervised nodes,
    /// [`short_lived_broker_settings`] and [`fast_start`](Self::fast_start).
    pub fn short_lived(dir: PathBuf) -> Self {
        ClusterSpec {
            ports: PortPlan::Free,
            ownership: Ownership::Supervised,
            broker_overrides: short_lived_broker_settings(),
            fast_start: true,
            ..ClusterSpec::new(dir)
        }
    }
}

/// Broker settings for clusters made for tests and fault injection: group
/// sessions of 6 s instead of Kafka's 45 s, so that a crashed member's
/// partitions move on within seconds (a setting production clusters may
/// choose too), and an offsets topic of 6 partitions instead of 50, which a
/// new cluster creates on the first group's join in a second less.
pub fn short_lived_broker_settings() -> BTreeMap<String, String> {
    [
        ("group.consumer.session.timeout.ms", "6000"),
        ("group.consumer.min.session.timeout.ms", "6000"),
        ("group.consumer.heartbeat.interval.ms", "1000"),
        ("group.consumer.min.heartbeat.interval.ms", "1000"),
        ("offsets.topic.num.partitions", "6"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
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
    /// How [`LocalCluster::admin`] connects, settled when the cluster is opened.
    admin_brokers: Brokers,
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
            move || {
                let distribution = KafkaDistribution::ensure(&cache)?;
                archive::ensure(&distribution);
                Ok::<_, ClusterError>(distribution)
            }
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
                if spec.secure && !state.secure {
                    return Err(ClusterError::Mismatch(format!(
                        "the cluster in {} was made without --secure: use it as it is, or \
                         remove it first with `metrocloud cluster down --purge`",
                        spec.dir.display()
                    )));
                }
                let mut state = state;
                if state.heap != spec.heap || state.fast_start != spec.fast_start {
                    state.heap = spec.heap.clone();
                    state.fast_start = spec.fast_start;
                    write_state(&spec.dir, &state)?;
                }
                state
            }
            None => {
                let state = ClusterState {
                    kafka_version: KAFKA_VERSION.to_string(),
                    cluster_id: new_cluster_id(),
                    nodes: plan_nodes(spec.nodes, spec.ports, spec.secure)?,
                    broker_overrides: spec.broker_overrides.clone(),
                    heap: spec.heap.clone(),
                    fast_start: spec.fast_start,
                    secure: spec.secure,
                };
                write_state(&spec.dir, &state)?;
                state
            }
        };
        if state.secure {
            let dir = spec.dir.clone();
            let distribution = distribution.clone();
            blocking(move || secure::ensure_material(&dir, &distribution)).await?;
        }
        Ok(LocalCluster {
            admin_brokers: secure::brokers_for(&spec.dir, &state, Principal::Admin)?,
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
            admin_brokers: secure::brokers_for(dir, &state, Principal::Admin)?,
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

    /// `127.0.0.1:<port>` of every node, for `KAFKA_BOOTSTRAP_SERVERS`
    /// (a secure cluster's SASL_SSL listeners).
    pub fn bootstrap_servers(&self) -> Vec<String> {
        self.nodes().iter().map(NodeSpec::client_address).collect()
    }

    /// Whether clients must authenticate ([`secure`]).
    pub fn is_secure(&self) -> bool {
        self.lock_state().secure
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
        let users = if self.is_secure() {
            secure::scram_arguments(&self.dir)?
        } else {
            Vec::new()
        };
        // Each format is a JVM start of its own: skip the nodes formatted
        // before (a restart), run the others side by side.
        let mut running = Vec::new();
        for node in nodes {
            let security = match node.sasl_port {
                Some(port) if self.is_secure() => {
                    Some(secure::broker_properties(&self.dir, node, port)?)
                }
                _ => None,
            };
            let properties =
                node::write_properties(&self.dir, node, &voters, &overrides, security)?;
            if node::is_formatted(&self.dir, node.id) {
                continue;
            }
            let mut command =
                node::format_command(&self.distribution, &properties, &cluster_id, &users);
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
        let jvm = {
            let state = self.lock_state();
            node::Jvm {
                heap: state.heap.clone(),
                fast_start: state.fast_start,
            }
        };
        let supervisor = node::launch(&self.distribution, &self.dir, node, &jvm, self.ownership)?;
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

    /// Ends every node at once (SIGKILL), for a cluster no one will start
    /// again; its files stay to be read.
    pub async fn kill_all(&self) {
        for node in self.nodes() {
            let _ = node::signal_node(&self.dir, node.id, Signal::SIGKILL);
            self.wait_down(node.id, Duration::from_secs(10)).await;
            self.release_supervisor(node.id);
        }
    }

    /// A command running Kafka's tool `tool` with the cached jars.
    pub fn tool_command(&self, tool: &tools::KafkaTool, args: &[String]) -> Command {
        let config = self.tools_config();
        tools::tool_command(
            &self.distribution,
            tool,
            &self.bootstrap_servers().join(","),
            config.as_deref(),
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

#[cfg(test)]
mod tests {
    use super::ports::{ephemeral_range, free_ports};
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
        let nodes = plan_nodes(3, PortPlan::default(), false).unwrap();
        let clients: Vec<u16> = nodes.iter().map(|n| n.client_port).collect();
        assert_eq!(clients, [29092, 29093, 29094]);
        for node in &nodes {
            assert!(!clients.contains(&node.controller_port.unwrap()));
        }
    }

    #[test]
    fn free_ports_are_distinct() {
        let nodes = plan_nodes(3, PortPlan::Free, true).unwrap();
        let mut ports: Vec<u16> = nodes
            .iter()
            .flat_map(|n| {
                [
                    n.client_port,
                    n.controller_port.unwrap(),
                    n.sasl_port.unwrap(),
                ]
            })
            .collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 9);
    }
}
