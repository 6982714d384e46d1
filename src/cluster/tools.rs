//! Kafka's own command-line tools, by the names of their `bin/*.sh` scripts.
//!
//! The scripts are thin wrappers around a main class; with the jars cached we
//! run the class directly, so `metrocloud cluster tool kafka-topics ...` is
//! exactly Kafka's `kafka-topics.sh ...`. These tools are the reference our
//! own behaviour and speed are checked against.

/// A Kafka tool: its script name, its main class, and whether it takes `--bootstrap-server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaTool {
    /// The script name without `.sh`, e.g. `kafka-topics`.
    pub name: &'static str,
    /// The Java class it runs.
    pub main_class: &'static str,
    /// Whether the tool takes `--bootstrap-server`, which is then filled in when absent.
    pub takes_bootstrap_server: bool,
}

const fn tool(name: &'static str, main_class: &'static str, bootstrap: bool) -> KafkaTool {
    KafkaTool {
        name,
        main_class,
        takes_bootstrap_server: bootstrap,
    }
}

use std::process::Command;

use super::distribution::{KafkaDistribution, LogConfig};

/// Every tool `metrocloud cluster tool` knows, checked against the Kafka 4.1 jars.
pub const KAFKA_TOOLS: &[KafkaTool] = &[
    tool("kafka-topics", "org.apache.kafka.tools.TopicCommand", true),
    tool(
        "kafka-consumer-groups",
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        true,
    ),
    tool(
        "kafka-console-consumer",
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        true,
    ),
    tool(
        "kafka-console-producer",
        "org.apache.kafka.tools.ConsoleProducer",
        true,
    ),
    tool(
        "kafka-get-offsets",
        "org.apache.kafka.tools.GetOffsetShell",
        true,
    ),
    tool(
        "kafka-metadata-quorum",
        "org.apache.kafka.tools.MetadataQuorumCommand",
        true,
    ),
    tool("kafka-configs", "kafka.admin.ConfigCommand", true),
    tool(
        "kafka-reassign-partitions",
        "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
        true,
    ),
    tool(
        "kafka-leader-election",
        "org.apache.kafka.tools.LeaderElectionCommand",
        true,
    ),
    tool(
        "kafka-log-dirs",
        "org.apache.kafka.tools.LogDirsCommand",
        true,
    ),
    tool(
        "kafka-features",
        "org.apache.kafka.tools.FeatureCommand",
        true,
    ),
    tool("kafka-cluster", "org.apache.kafka.tools.ClusterTool", false),
    tool(
        "kafka-delete-records",
        "org.apache.kafka.tools.DeleteRecordsCommand",
        true,
    ),
    tool("kafka-acls", "org.apache.kafka.tools.AclCommand", true),
    tool(
        "kafka-producer-perf-test",
        "org.apache.kafka.tools.ProducerPerformance",
        false,
    ),
    tool(
        "kafka-consumer-perf-test",
        "org.apache.kafka.tools.ConsumerPerformance",
        true,
    ),
    tool(
        "kafka-e2e-latency",
        "org.apache.kafka.tools.EndToEndLatency",
        false,
    ),
    tool(
        "kafka-broker-api-versions",
        "org.apache.kafka.tools.BrokerApiVersionsCommand",
        true,
    ),
    tool("kafka-storage", "kafka.tools.StorageTool", false),
    tool("kafka-dump-log", "kafka.tools.DumpLogSegments", false),
];

/// The tool called `name` (with or without `.sh`).
pub fn find_tool(name: &str) -> Option<&'static KafkaTool> {
    let name = name.strip_suffix(".sh").unwrap_or(name);
    KAFKA_TOOLS.iter().find(|t| t.name == name)
}

/// The option through which `tool` takes a file of client settings, as
/// Kafka 4.1's tools name it; `None` for tools that connect to no broker.
pub fn config_option(tool: &KafkaTool) -> Option<&'static str> {
    match tool.name {
        "kafka-console-consumer" | "kafka-consumer-perf-test" => Some("--consumer.config"),
        "kafka-console-producer" | "kafka-producer-perf-test" => Some("--producer.config"),
        "kafka-leader-election" => Some("--admin.config"),
        _ if tool.takes_bootstrap_server => Some("--command-config"),
        _ => None,
    }
}

/// The arguments to pass: `--bootstrap-server` goes first when the tool takes
/// it and the caller gave neither it nor `--bootstrap-controller`; so does
/// the file of client settings (`client_config`, a secure cluster's) when
/// the tool takes one and the caller gave none.
pub fn tool_arguments(
    tool: &KafkaTool,
    bootstrap: &str,
    client_config: Option<&str>,
    args: &[String],
) -> Vec<String> {
    let given = args
        .iter()
        .any(|a| a.starts_with("--bootstrap-server") || a.starts_with("--bootstrap-controller"));
    let mut full = Vec::with_capacity(args.len() + 4);
    if tool.takes_bootstrap_server && !given {
        full.push("--bootstrap-server".to_string());
        full.push(bootstrap.to_string());
    }
    if let (Some(option), Some(file)) = (config_option(tool), client_config)
        && !args.iter().any(|a| a.starts_with(option))
    {
        full.push(option.to_string());
        full.push(file.to_string());
    }
    full.extend(args.iter().cloned());
    full
}

/// A command running `tool` with the cached jars against `bootstrap`
/// (`host:port,...`), with `client_config`'s client settings if given.
pub fn tool_command(
    distribution: &KafkaDistribution,
    tool: &KafkaTool,
    bootstrap: &str,
    client_config: Option<&str>,
    args: &[String],
) -> Command {
    let mut command = distribution.java_command(LogConfig::Tools);
    command
        .arg(tool.main_class)
        .args(tool_arguments(tool, bootstrap, client_config, args));
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_server_is_added_only_when_missing() {
        let topics = find_tool("kafka-topics.sh").unwrap();
        let args = vec!["--list".to_string()];
        assert_eq!(
            tool_arguments(topics, "127.0.0.1:1", None, &args),
            ["--bootstrap-server", "127.0.0.1:1", "--list"]
        );
        let given = vec!["--bootstrap-server=x:1".to_string(), "--list".to_string()];
        assert_eq!(tool_arguments(topics, "127.0.0.1:1", None, &given), given);
        let perf = find_tool("kafka-producer-perf-test").unwrap();
        assert_eq!(tool_arguments(perf, "127.0.0.1:1", None, &args), args);
        assert!(find_tool("kafka-nonsense").is_none());
    }

    #[test]
    fn a_secure_clusters_client_settings_go_through_each_tools_own_option() {
        let args = vec!["--topic".to_string(), "t".to_string()];
        let with = |name: &str| {
            tool_arguments(
                find_tool(name).unwrap(),
                "127.0.0.1:1",
                Some("/c.properties"),
                &args,
            )
        };
        assert_eq!(
            with("kafka-console-consumer")[2..4],
            ["--consumer.config", "/c.properties"]
        );
        assert_eq!(
            with("kafka-producer-perf-test")[..2],
            ["--producer.config", "/c.properties"]
        );
        assert_eq!(
            with("kafka-topics")[2..4],
            ["--command-config", "/c.properties"]
        );
        assert_eq!(with("kafka-storage"), args, "no broker, no client settings");
        let own = vec!["--command-config".to_string(), "/mine".to_string()];
        let topics = find_tool("kafka-topics").unwrap();
        assert_eq!(
            tool_arguments(topics, "127.0.0.1:1", Some("/c.properties"), &own)[2..],
            own[..],
            "the caller's own file wins"
        );
    }
}
