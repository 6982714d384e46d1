//! `metrocloud cluster ...`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::CliError;
use crate::cluster::Principal;
use crate::cluster::{
    self, ClusterSpec, ClusterStatus, KAFKA_VERSION, KafkaDistribution, LocalCluster, PortPlan,
    ProcessState, UpOutcome, tools,
};
use crate::config::Config;
use crate::kafka::security::TLS_BUILT_IN;
use crate::kafka::topics::join_ids;

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Fetch Kafka on first use, then format and start the nodes and wait until they are ready.
    Up {
        /// Number of nodes, each a broker and a controller (3 at least: topics keep 3 replicas).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(3..=9))]
        nodes: u16,
        /// Client port of node 1; node N gets this + N - 1.
        #[arg(long, default_value_t = cluster::DEFAULT_CLIENT_PORT_BASE)]
        client_port_base: u16,
        /// Controller port of node 1; node N gets this + N - 1.
        #[arg(long, default_value_t = cluster::DEFAULT_CONTROLLER_PORT_BASE)]
        controller_port_base: u16,
        /// Seconds to wait for the cluster to be ready.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// SASL_SSL client listeners (and SASL_PLAINTEXT ones on the client
        /// port + 200), SCRAM users, a local CA, and least-privilege ACLs;
        /// `cluster env USER` prints how each user connects.
        #[arg(long)]
        secure: bool,
    },
    /// Print the variables with which USER (admin, producer, consumer,
    /// console, gateway, pipeline) reaches the cluster: `eval "$(metrocloud cluster env consumer)"`.
    Env {
        /// The user.
        user: String,
    },
    /// Show each node's process, registration and quorum role, and under-replicated partitions.
    Status,
    /// Stop every node cleanly; data is kept unless --purge.
    Down {
        /// Also delete the cluster directory (all data).
        #[arg(long)]
        purge: bool,
    },
    /// Stop node N cleanly (SIGTERM) and wait for it to exit.
    Stop { node: i32 },
    /// Crash node N (SIGKILL).
    Kill { node: i32 },
    /// Start node N again and wait until it is a registered broker.
    Start {
        node: i32,
        /// Seconds to wait.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Freeze node N (SIGSTOP), as a hung broker.
    Pause { node: i32 },
    /// Let a paused node N carry on (SIGCONT).
    Resume { node: i32 },
    /// Add a broker node (the next id) and wait until it is registered.
    AddNode {
        /// Seconds to wait.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Run one of Kafka's own tools (kafka-topics, kafka-consumer-groups, ...) against the cluster.
    Tool {
        /// The tool's script name, e.g. kafka-topics.
        name: String,
        /// Its arguments; --bootstrap-server is added when the tool takes it and it is missing.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fetch Kafka's jars on first use and print the directory that holds them.
    Jars,
    /// List the tools `cluster tool` runs: script name and main class, a line each.
    Tools,
}

pub(crate) async fn run(
    command: ClusterCommand,
    dir: Option<PathBuf>,
    config: &Config,
) -> Result<(), CliError> {
    let dir = dir.unwrap_or_else(|| cluster::cluster_dir(config.cluster_dir.as_deref()));
    let cache = KafkaDistribution::cache_dir(config.kafka_cache.as_deref());
    match command {
        ClusterCommand::Up {
            nodes,
            client_port_base,
            controller_port_base,
            timeout,
            secure,
        } => {
            let mut spec = ClusterSpec::new(dir);
            spec.cache_dir = cache;
            spec.heap = config.kafka_heap.clone();
            spec.nodes = usize::from(nodes);
            spec.ports = PortPlan::Fixed {
                client_base: client_port_base,
                controller_base: controller_port_base,
            };
            spec.ready_timeout = Duration::from_secs(timeout);
            spec.secure = secure;
            let started = Instant::now();
            let (cluster, outcome) = LocalCluster::up(&spec).await.map_err(failed)?;
            if cluster.is_secure() {
                cluster
                    .grant(&config.pipeline_names(), &config.pipeline_topics())
                    .await
                    .map_err(failed)?;
            }
            let bootstrap = cluster.bootstrap_servers().join(",");
            match outcome {
                UpOutcome::AlreadyRunning => {
                    println!(
                        "the cluster in {} is already running",
                        cluster.dir().display()
                    );
                }
                UpOutcome::Started => println!(
                    "cluster ready in {:.1} s: {} node(s), Kafka {KAFKA_VERSION}, data in {}",
                    started.elapsed().as_secs_f64(),
                    cluster.nodes().len(),
                    cluster.dir().display()
                ),
            }
            println!("KAFKA_BOOTSTRAP_SERVERS={bootstrap}");
            if cluster.is_secure() {
                println!(
                    "secure: SASL_SSL on these ports, SASL_PLAINTEXT {} above them; users {}; \
                     `metrocloud cluster env <user>` prints a user's settings",
                    cluster::SASL_PORT_OFFSET,
                    Principal::ALL.map(Principal::name).join(", ")
                );
            }
            Ok(())
        }
        ClusterCommand::Env { user } => {
            let Some(principal) = Principal::named(&user) else {
                return Err(CliError::Usage(format!(
                    "unknown user {user:?}; the users are {}",
                    Principal::ALL.map(Principal::name).join(", ")
                )));
            };
            let cluster = open(&dir, &cache)?;
            for (name, value) in cluster.access(principal, TLS_BUILT_IN) {
                println!("export {name}={value}");
            }
            Ok(())
        }
        ClusterCommand::Status => {
            let cluster = open(&dir, &cache)?;
            print_status(&cluster, &cluster.status().await);
            Ok(())
        }
        ClusterCommand::Down { purge } => {
            let cluster = open(&dir, &cache)?;
            cluster.down(purge).await.map_err(failed)?;
            if purge {
                println!("cluster stopped; {} removed", dir.display());
            } else {
                println!("cluster stopped; data kept in {}", dir.display());
            }
            Ok(())
        }
        ClusterCommand::Stop { node } => {
            open(&dir, &cache)?.stop_node(node).await.map_err(failed)?;
            println!("node {node} stopped");
            Ok(())
        }
        ClusterCommand::Kill { node } => {
            open(&dir, &cache)?.kill_node(node).await.map_err(failed)?;
            println!("node {node} killed");
            Ok(())
        }
        ClusterCommand::Start { node, timeout } => {
            let cluster = open(&dir, &cache)?;
            cluster
                .start_node(node, Duration::from_secs(timeout))
                .await
                .map_err(failed)?;
            println!("node {node} started and registered");
            Ok(())
        }
        ClusterCommand::Pause { node } => {
            open(&dir, &cache)?.pause_node(node).await.map_err(failed)?;
            println!("node {node} paused (SIGSTOP); `metrocloud cluster resume {node}` resumes it");
            Ok(())
        }
        ClusterCommand::Resume { node } => {
            open(&dir, &cache)?
                .resume_node(node)
                .await
                .map_err(failed)?;
            println!("node {node} resumed");
            Ok(())
        }
        ClusterCommand::AddNode { timeout } => {
            let cluster = open(&dir, &cache)?;
            let node = cluster
                .add_node(Duration::from_secs(timeout))
                .await
                .map_err(failed)?;
            println!(
                "node {} joined as a broker on {}; move partitions onto it with \
                 `metrocloud cluster tool kafka-reassign-partitions` (see README)",
                node.id,
                node.client_address()
            );
            println!(
                "KAFKA_BOOTSTRAP_SERVERS={}",
                cluster.bootstrap_servers().join(",")
            );
            Ok(())
        }
        ClusterCommand::Tool { name, args } => {
            let Some(tool) = tools::find_tool(&name) else {
                let known: Vec<&str> = tools::KAFKA_TOOLS.iter().map(|t| t.name).collect();
                return Err(CliError::Usage(format!(
                    "unknown Kafka tool {name:?}; known tools: {}",
                    known.join(", ")
                )));
            };
            let (bootstrap, client_config) = tool_bootstrap(&dir, config);
            let distribution = KafkaDistribution::ensure(&cache).map_err(failed)?;
            let status = tools::tool_command(
                &distribution,
                tool,
                &bootstrap,
                client_config.as_deref(),
                &args,
            )
            .status()
            .map_err(|e| CliError::Failed(format!("cannot run {name}: {e}")))?;
            match status.code() {
                Some(0) => Ok(()),
                Some(code) => Err(CliError::Status(u8::try_from(code).unwrap_or(1))),
                None => Err(CliError::Status(1)),
            }
        }
        ClusterCommand::Jars => {
            let distribution = KafkaDistribution::ensure(&cache).map_err(failed)?;
            println!("{}", distribution.libs_dir().display());
            Ok(())
        }
        ClusterCommand::Tools => {
            for tool in tools::KAFKA_TOOLS {
                println!("{} {}", tool.name, tool.main_class);
            }
            Ok(())
        }
    }
}

/// An explicit `KAFKA_BOOTSTRAP_SERVERS` wins; else the local cluster's
/// (with its client settings when it is secure); else the default.
fn tool_bootstrap(dir: &std::path::Path, config: &Config) -> (String, Option<String>) {
    let cache = KafkaDistribution::cache_dir(config.kafka_cache.as_deref());
    if !config.is_given("KAFKA_BOOTSTRAP_SERVERS")
        && let Ok(cluster) = LocalCluster::open(dir, &cache)
    {
        return (
            cluster.bootstrap_servers().join(","),
            cluster.tools_config(),
        );
    }
    (config.bootstrap_strings().join(","), None)
}

fn open(dir: &std::path::Path, cache: &std::path::Path) -> Result<LocalCluster, CliError> {
    LocalCluster::open(dir, cache).map_err(failed)
}

fn failed(e: cluster::ClusterError) -> CliError {
    CliError::Failed(e.to_string())
}

fn print_status(cluster: &LocalCluster, status: &ClusterStatus) {
    println!(
        "cluster {} (Kafka {KAFKA_VERSION}, id {})",
        cluster.dir().display(),
        cluster.cluster_id()
    );
    println!(
        "{:<5} {:<8} {:<7} {:<11} {:<18} {:<8} {:<11} QUORUM",
        "NODE", "PID", "CLIENT", "CONTROLLER", "ROLES", "PROCESS", "BROKER"
    );
    let leader = status.quorum.as_ref().and_then(|q| q.leader);
    for node in &status.nodes {
        let role = match (&status.quorum, node.spec.controller_port) {
            (_, None) => "-",
            (Some(_), Some(_)) if leader == Some(node.spec.id) => "leader",
            (Some(q), Some(_)) if q.voters.contains(&node.spec.id) => "voter",
            _ => "?",
        };
        let pid = match (node.pid, node.process) {
            (Some(pid), ProcessState::Running | ProcessState::Paused) => pid.to_string(),
            _ => "-".to_string(),
        };
        println!(
            "{:<5} {:<8} {:<7} {:<11} {:<18} {:<8} {:<11} {}",
            node.spec.id,
            pid,
            node.spec.client_port,
            node.spec
                .controller_port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            node.spec.roles(),
            node.process.to_string(),
            if node.registered {
                "registered"
            } else {
                "absent"
            },
            role
        );
    }
    match (&status.quorum, &status.unreachable) {
        (_, Some(why)) => println!("cluster unreachable: {why}"),
        (Some(q), None) => println!(
            "quorum: leader {}, epoch {}, voters {}",
            q.leader
                .map(|l| l.to_string())
                .unwrap_or_else(|| "none".into()),
            q.epoch,
            join_ids(&q.voters)
        ),
        (None, None) => println!("quorum: no answer"),
    }
    if status.unreachable.is_none() {
        if status.under_replicated.is_empty() {
            println!("under-replicated partitions: none");
        } else {
            println!(
                "under-replicated partitions: {}",
                status.under_replicated.len()
            );
            for (topic, p) in &status.under_replicated {
                println!(
                    "  {topic}-{}: leader {}, replicas {}, isr {}",
                    p.partition,
                    p.leader,
                    join_ids(&p.replicas),
                    join_ids(&p.isr)
                );
            }
        }
    }
    println!(
        "KAFKA_BOOTSTRAP_SERVERS={}",
        cluster.bootstrap_servers().join(",")
    );
}
