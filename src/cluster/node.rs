//! One Kafka node: its files, its JVM process, and signals sent to it.
//!
//! A node lives in `node-<id>/` under the cluster directory: `server.properties`,
//! `data/` (its log dirs and KRaft metadata), `logs/server.log` (the broker's
//! own log), `stdout.log` (what the JVM prints before logging starts, such as
//! a crash) and `pid`.
//!
//! A JVM outlives whatever started it unless something ends it, so every node
//! is started under one of two [`Ownership`]s. A detached node (the
//! `metrocloud cluster` commands) runs in its own process group until told to
//! stop. A supervised node (test clusters) runs under a small `sh` supervisor
//! that holds a pipe from its owner: when the owner exits in any way, panic,
//! `SIGKILL` or Ctrl-C included, the pipe closes and the supervisor ends the JVM.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::distribution::{KafkaDistribution, LogConfig};

/// The JVM's heap unless `METROCLOUD_KAFKA_HEAP` says otherwise.
pub const DEFAULT_HEAP: &str = "512m";

/// A node's identity and ports, as stored in the cluster's `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Kafka `node.id`.
    pub id: i32,
    /// Port of the PLAINTEXT listener that clients use.
    pub client_port: u16,
    /// Port of the CONTROLLER listener; `None` for a broker-only node.
    pub controller_port: Option<u16>,
    /// Port of the SASL_PLAINTEXT listener of a secure cluster, whose
    /// client port then speaks SASL_SSL ([`super::secure`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_port: Option<u16>,
}

impl NodeSpec {
    /// `127.0.0.1:<client port>`.
    pub fn client_address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<SASL_PLAINTEXT port>` of a secure cluster's node.
    pub fn sasl_address(&self) -> Option<String> {
        self.sasl_port.map(|port| format!("127.0.0.1:{port}"))
    }

    /// `broker,controller` or `broker`.
    pub fn roles(&self) -> &'static str {
        if self.controller_port.is_some() {
            "broker,controller"
        } else {
            "broker"
        }
    }
}

/// Who ends a node's JVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The node runs on its own until stopped by a command.
    Detached,
    /// The node ends when the process that started it ends.
    Supervised,
}

/// What the operating system says about a node's JVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running (or sleeping, as a server does).
    Running,
    /// Stopped by `SIGSTOP`.
    Paused,
    /// No such process (or a zombie, or a pid reused by another program).
    Down,
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProcessState::Running => "up",
            ProcessState::Paused => "paused",
            ProcessState::Down => "down",
        })
    }
}

/// The directory of node `id`.
pub fn node_dir(cluster_dir: &Path, id: i32) -> PathBuf {
    cluster_dir.join(format!("node-{id}"))
}

/// Writes `server.properties` for `node`, with the cluster's voters; the
/// listeners are `security`'s when given (a secure cluster), else plaintext.
pub fn write_properties(
    cluster_dir: &Path,
    node: &NodeSpec,
    voters: &str,
    overrides: &BTreeMap<String, String>,
    security: Option<String>,
) -> Result<PathBuf, ClusterError> {
    let dir = node_dir(cluster_dir, node.id);
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| ClusterError::io(&dir, e))?;
    let data = dir.join("data");
    let listeners = security.unwrap_or_else(|| {
        let mut listeners = format!("PLAINTEXT://127.0.0.1:{}", node.client_port);
        if let Some(port) = node.controller_port {
            listeners.push_str(&format!(",CONTROLLER://127.0.0.1:{port}"));
        }
        format!(
            "listeners={listeners}
advertised.listeners=PLAINTEXT://127.0.0.1:{}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
",
            node.client_port
        )
    });
    let mut text = format!(
        "# Written by metrocloud; rewritten at every start.
process.roles={roles}
node.id={id}
controller.quorum.voters={voters}
controller.listener.names=CONTROLLER
{listeners}log.dirs={data}
num.partitions=6
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
unclean.leader.election.enable=false
",
        roles = node.roles(),
        id = node.id,
        data = data.display(),
    );
    for (key, value) in overrides {
        text.push_str(&format!("{key}={value}\n"));
    }
    let path = dir.join("server.properties");
    std::fs::write(&path, text).map_err(|e| ClusterError::io(&path, e))?;
    Ok(path)
}

/// Formats a node's storage with the cluster id (a no-op when already
/// formatted), adding `extra` arguments (a secure cluster's users).
pub fn format_command(
    distribution: &KafkaDistribution,
    properties: &Path,
    cluster_id: &str,
    extra: &[String],
) -> Command {
    let mut command = distribution.java_command(LogConfig::Tools);
    command
        .arg("kafka.tools.StorageTool")
        .arg("format")
        .arg("-t")
        .arg(cluster_id)
        .arg("-c")
        .arg(properties)
        .arg("--ignore-formatted")
        .args(extra)
        .stdin(Stdio::null());
    command
}

/// A supervised node's `sh` process and the pipe whose closing ends the node.
#[derive(Debug)]
pub struct Supervisor {
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Supervisor {
    /// Closes the pipe: the supervisor ends the JVM (if still running) and exits.
    pub fn release(mut self) {
        drop(self.lifeline.take());
        // Reap the supervisor without blocking the caller.
        std::thread::spawn(move || {
            let _ = self.child.wait();
        });
    }
}

/// The supervisor: starts the JVM, records its pid, then waits for its
/// standard input to close (its owner is gone) and ends the JVM: politely,
/// then by force after 30 seconds.
const SUPERVISOR_SCRIPT: &str = r#"
trap '' INT
pidfile=$1; out=$2; shift 2
"$@" </dev/null >>"$out" 2>&1 &
jvm=$!
echo "$jvm" >"$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"
trap 'kill -KILL "$jvm" 2>/dev/null; exit 0' TERM HUP
while read -r _; do :; done
kill -TERM "$jvm" 2>/dev/null
i=0
while kill -0 "$jvm" 2>/dev/null && [ "$i" -lt 150 ]; do sleep 0.2; i=$((i+1)); done
kill -KILL "$jvm" 2>/dev/null
exit 0
"#;

/// How a node's JVM runs.
#[derive(Debug, Clone)]
pub struct Jvm {
    /// The maximum heap (`-Xmx`).
    pub heap: String,
    /// The client JIT compiler only: half the CPU time to start.
    pub fast_start: bool,
}

/// Whether node `id`'s storage is formatted: its log dir holds `meta.properties`.
pub fn is_formatted(cluster_dir: &Path, id: i32) -> bool {
    node_dir(cluster_dir, id)
        .join("data/meta.properties")
        .is_file()
}

/// Starts node `node`'s JVM, returning its supervisor when supervised.
pub fn launch(
    distribution: &KafkaDistribution,
    cluster_dir: &Path,
    node: &NodeSpec,
    jvm: &Jvm,
    ownership: Ownership,
) -> Result<Option<Supervisor>, ClusterError> {
    let dir = node_dir(cluster_dir, node.id);
    let properties = dir.join("server.properties");
    let pid_file = dir.join("pid");
    let stdout_log = dir.join("stdout.log");
    let _ = std::fs::remove_file(&pid_file);
    let mut java = distribution.java_command(LogConfig::Broker);
    java.arg(format!("-Xms{}", min_heap(&jvm.heap)))
        .arg(format!("-Xmx{}", jvm.heap))
        .arg("-XX:+UseG1GC")
        .arg("-XX:MaxGCPauseMillis=20")
        .arg("-XX:+ExitOnOutOfMemoryError");
    if jvm.fast_start {
        java.arg("-XX:TieredStopAtLevel=1");
    }
    java.arg(format!("-Dkafka.logs.dir={}", dir.join("logs").display()))
        .arg("kafka.Kafka")
        .arg(&properties);

    match ownership {
        Ownership::Detached => {
            let out = append(&stdout_log)?;
            let err = out
                .try_clone()
                .map_err(|e| ClusterError::io(&stdout_log, e))?;
            let child = java
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| ClusterError::io(distribution.java(), e))?;
            std::fs::write(&pid_file, child.id().to_string())
                .map_err(|e| ClusterError::io(&pid_file, e))?;
            Ok(None)
        }
        Ownership::Supervised => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(SUPERVISOR_SCRIPT)
                .arg("metrocloud-node-supervisor")
                .arg(&pid_file)
                .arg(&stdout_log)
                .arg(java.get_program())
                .args(java.get_args())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = sh
                .spawn()
                .map_err(|e| ClusterError::io(Path::new("sh"), e))?;
            let lifeline = child.stdin.take();
            let supervisor = Supervisor { child, lifeline };
            // The supervisor writes the pid right after forking the JVM.
            for _ in 0..100 {
                if read_pid(cluster_dir, node.id).is_some() {
                    return Ok(Some(supervisor));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            supervisor.release();
            Err(ClusterError::NodeDied {
                id: node.id,
                log: stdout_log.clone(),
                tail: super::distribution::last_lines(
                    &std::fs::read_to_string(&stdout_log).unwrap_or_default(),
                    20,
                ),
            })
        }
    }
}

/// The initial heap: a quarter of the maximum when it is given in `m`, else the same.
fn min_heap(heap: &str) -> String {
    heap.strip_suffix('m')
        .and_then(|mb| mb.parse::<u64>().ok())
        .map(|mb| format!("{}m", (mb / 2).max(64)))
        .unwrap_or_else(|| heap.to_string())
}

fn append(path: &Path) -> Result<File, ClusterError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ClusterError::io(path, e))?;
    let _ = writeln!(file, "--- starting node ---");
    Ok(file)
}

/// The pid recorded for node `id`, if any.
pub fn read_pid(cluster_dir: &Path, id: i32) -> Option<i32> {
    std::fs::read_to_string(node_dir(cluster_dir, id).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The state of node `id`'s JVM, checking that the pid still is that node's Kafka.
pub fn process_state(cluster_dir: &Path, id: i32) -> (Option<i32>, ProcessState) {
    let Some(pid) = read_pid(cluster_dir, id) else {
        return (None, ProcessState::Down);
    };
    let properties = node_dir(cluster_dir, id).join("server.properties");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    // An empty command line belongs to a zombie or to a process in the middle
    // of exec (the java launcher may re-exec itself); the state letter decides.
    let ours = cmdline.is_empty()
        || (cmdline.contains("kafka.Kafka")
            && cmdline.contains(properties.to_string_lossy().as_ref()));
    if !ours {
        return (Some(pid), ProcessState::Down);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state letter follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    let state = match state {
        Some('T') | Some('t') => ProcessState::Paused,
        // The JVM's main thread can be a zombie while its other threads are still
        // exiting, holding the open files — the listening ports among them. The
        // node is down once the main thread is all that is left.
        Some('Z') | Some('X') if threads_left(pid) > 1 => ProcessState::Running,
        Some('Z') | Some('X') | None => ProcessState::Down,
        Some(_) => ProcessState::Running,
    };
    (Some(pid), state)
}

/// Threads of `pid` not yet gone (0 when the process is gone).
fn threads_left(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |entries| entries.count())
}

/// Sends `signal` to node `id`'s JVM; an error when the node is not running.
pub fn signal_node(cluster_dir: &Path, id: i32, signal: Signal) -> Result<i32, ClusterError> {
    match process_state(cluster_dir, id) {
        (Some(pid), ProcessState::Running | ProcessState::Paused) => {
            kill(Pid::from_raw(pid), signal).map_err(|e| ClusterError::Signal {
                id,
                signal: signal.as_str(),
                source: e,
            })?;
            Ok(pid)
        }
        _ => Err(ClusterError::NodeNotRunning(id)),
    }
}

/// The last lines of a node's logs, for an error message.
pub fn log_tail(cluster_dir: &Path, id: i32, lines: usize) -> (PathBuf, String) {
    let dir = node_dir(cluster_dir, id);
    let server_log = dir.join("logs/server.log");
    let stdout_log = dir.join("stdout.log");
    let mut tail = String::new();
    for path in [&stdout_log, &server_log] {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let part = super::distribution::last_lines(&text, lines);
        if !part.trim().is_empty() {
            tail.push_str(&format!("==> {} <==\n{}\n", path.display(), part));
        }
    }
    let log = if server_log.exists() {
        server_log
    } else {
        stdout_log
    };
    (log, tail)
}
