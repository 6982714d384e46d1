//! Kafka's own performance tools, the peers our clients are measured against.
//!
//! Each tool runs as Kafka's `bin/*.sh` script would run it (same main class,
//! same 512 MiB heap and G1 settings as `kafka-run-class.sh` gives the perf
//! tools), with the settings of ours passed in: `acks=all` and the same linger
//! and batch size. Their last lines are parsed here; the parsers are pinned by
//! the tools' real output in the tests below.

use std::path::Path;

use tokio::process::Command;

use super::BenchError;
use super::worker::Payload;
use crate::cluster::tools::find_tool;
use crate::cluster::{KafkaDistribution, LogConfig};
use crate::kafka::producer::ProducerSettings;

/// The JVM options the perf tools' scripts set (`KAFKA_HEAP_OPTS` and
/// `KAFKA_JVM_PERFORMANCE_OPTS` of Kafka's `bin/` scripts).
const PERF_JVM_OPTIONS: &[&str] = &[
    "-Xmx512M",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
];

fn perf_command(distribution: &KafkaDistribution, tool: &str) -> Command {
    let tool = find_tool(tool).expect("the perf tools are in the tool table");
    let mut command = Command::from(distribution.java_command(LogConfig::Tools));
    command.args(PERF_JVM_OPTIONS).arg(tool.main_class);
    command
}

/// `kafka-producer-perf-test` sending `records` records, as fast as it can
/// or at `rate` records per second.
pub fn producer_perf(
    distribution: &KafkaDistribution,
    bootstrap: &str,
    topic: &str,
    records: u64,
    rate: Option<u32>,
    payload: &Payload,
    settings: &ProducerSettings,
) -> Command {
    let mut command = perf_command(distribution, "kafka-producer-perf-test");
    let throughput = rate.map_or("-1".to_string(), |r| r.to_string());
    command
        .args(["--topic", topic])
        .args(["--num-records", &records.to_string()])
        .args(["--throughput", &throughput]);
    match payload {
        // Random bytes of this size; ours sends the same number of bytes.
        Payload::Size(size) => command.args(["--record-size", &size.to_string()]),
        // Kafka's tool picks the file's lines at random, ours in turn.
        Payload::Readings(path) => command.arg("--payload-file").arg(path),
    };
    command.arg("--producer-props").args([
        format!("bootstrap.servers={bootstrap}"),
        "acks=all".to_string(),
        format!("linger.ms={}", settings.linger.as_millis()),
        format!("batch.size={}", settings.batch_bytes),
        format!("buffer.memory={}", settings.buffer_bytes),
        format!("compression.type={}", settings.compression),
    ]);
    command
}

/// `kafka-consumer-perf-test` reading `records` records of `topic` in a new group.
pub fn consumer_perf(
    distribution: &KafkaDistribution,
    bootstrap: &str,
    topic: &str,
    group: &str,
    records: u64,
) -> Command {
    let mut command = perf_command(distribution, "kafka-consumer-perf-test");
    command
        .args(["--bootstrap-server", bootstrap])
        .args(["--topic", topic])
        .args(["--group", group])
        .args(["--messages", &records.to_string()])
        .args(["--timeout", "60000"]);
    command
}

/// `kafka-e2e-latency`: one record at a time, each waited for by its consumer.
pub fn e2e_latency(
    distribution: &KafkaDistribution,
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
) -> Command {
    let mut command = perf_command(distribution, "kafka-e2e-latency");
    command.args([
        bootstrap,
        topic,
        &records.to_string(),
        "all",
        &size.to_string(),
    ]);
    command
}

/// The summary line of `kafka-producer-perf-test`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerPerfSummary {
    /// Records sent.
    pub records: u64,
    /// Records per second.
    pub records_per_sec: f64,
    /// MiB per second (the tool's "MB").
    pub mib_per_sec: f64,
    /// Mean latency from send to acknowledgement, ms.
    pub avg_latency_ms: f64,
    /// Median of that latency, ms.
    pub p50_latency_ms: f64,
    /// 99th percentile of that latency, ms.
    pub p99_latency_ms: f64,
}

/// Parses the tool's last line: `500000 records sent, 96190.8 records/sec (36.69 MB/sec),
/// 514.46 ms avg latency, 1063.00 ms max latency, 554 ms 50th, 846 ms 95th, 932 ms 99th, 1034 ms 99.9th.`
pub fn parse_producer_perf(output: &str) -> Result<ProducerPerfSummary, BenchError> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.contains("records sent") && l.contains("99.9th"))
        .ok_or_else(|| unparsed("kafka-producer-perf-test", output))?;
    let number_before = |marker: &str| -> Option<f64> {
        let end = line.find(marker)?;
        line[..end]
            .trim_end()
            .rsplit([' ', '(', ','])
            .next()?
            .parse()
            .ok()
    };
    let parsed = (|| {
        Some(ProducerPerfSummary {
            records: number_before(" records sent")? as u64,
            records_per_sec: number_before(" records/sec")?,
            mib_per_sec: number_before(" MB/sec")?,
            avg_latency_ms: number_before(" ms avg latency")?,
            p50_latency_ms: number_before(" ms 50th")?,
            p99_latency_ms: number_before(" ms 99th")?,
        })
    })();
    parsed.ok_or_else(|| unparsed("kafka-producer-perf-test", output))
}

/// The summary of `kafka-consumer-perf-test`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerPerfSummary {
    /// Records read.
    pub records: u64,
    /// MiB read (keys and values).
    pub mib: f64,
    /// Records per second over the whole run, group join included.
    pub records_per_sec: f64,
    /// MiB per second over the whole run.
    pub mib_per_sec: f64,
}

/// Parses the header and data lines the tool prints.
pub fn parse_consumer_perf(output: &str) -> Result<ConsumerPerfSummary, BenchError> {
    let mut lines = output.lines();
    let header: Vec<&str> = lines
        .by_ref()
        .find(|l| l.starts_with("start.time"))
        .ok_or_else(|| unparsed("kafka-consumer-perf-test", output))?
        .split(", ")
        .collect();
    let values: Vec<&str> = lines
        .find(|l| l.split(", ").count() == header.len())
        .ok_or_else(|| unparsed("kafka-consumer-perf-test", output))?
        .split(", ")
        .collect();
    let field = |name: &str| -> Option<f64> {
        let index = header.iter().position(|h| h.trim() == name)?;
        values.get(index)?.trim().parse().ok()
    };
    let parsed = (|| {
        Some(ConsumerPerfSummary {
            records: field("data.consumed.in.nMsg")? as u64,
            mib: field("data.consumed.in.MB")?,
            records_per_sec: field("nMsg.sec")?,
            mib_per_sec: field("MB.sec")?,
        })
    })();
    parsed.ok_or_else(|| unparsed("kafka-consumer-perf-test", output))
}

/// The summary of `kafka-e2e-latency` (whole milliseconds, as the tool prints them).
#[derive(Debug, Clone, PartialEq)]
pub struct E2eLatencySummary {
    /// Mean latency, ms.
    pub avg_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
}

/// Parses `Avg latency: 5.2368 ms` and `Percentiles: 50th = 3, 99th = 19, 99.9th = 41`.
pub fn parse_e2e_latency(output: &str) -> Result<E2eLatencySummary, BenchError> {
    let avg = output
        .lines()
        .find_map(|l| l.strip_prefix("Avg latency: "))
        .and_then(|rest| rest.trim_end_matches(" ms").trim().parse().ok());
    let percentiles = output
        .lines()
        .find_map(|l| l.strip_prefix("Percentiles: "))
        .map(|rest| {
            rest.split(", ")
                .filter_map(|part| {
                    let (name, value) = part.split_once(" = ")?;
                    Some((name.to_string(), value.trim().parse::<f64>().ok()?))
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let get = |name: &str| percentiles.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    match (avg, get("50th"), get("99th"), get("99.9th")) {
        (Some(avg_ms), Some(p50_ms), Some(p99_ms), Some(p999_ms)) => Ok(E2eLatencySummary {
            avg_ms,
            p50_ms,
            p99_ms,
            p999_ms,
        }),
        _ => Err(unparsed("kafka-e2e-latency", output)),
    }
}

fn unparsed(tool: &str, output: &str) -> BenchError {
    let tail: Vec<&str> = output.lines().rev().take(5).collect();
    BenchError::Unparsed {
        tool: tool.to_string(),
        tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    }
}

/// Whether the Java tools can run here (a JVM and the cached jars).
pub fn distribution(cache_dir: &Path) -> Result<KafkaDistribution, BenchError> {
    KafkaDistribution::ensure(cache_dir).map_err(|e| BenchError::Cluster(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_tools_summary_line_is_read() {
        let output = "481943 records sent, 95415.4 records/sec (36.40 MB/sec), 513.1 ms avg latency, 1063.0 ms max latency.\n\
            500000 records sent, 96190.8 records/sec (36.69 MB/sec), 514.46 ms avg latency, 1063.00 ms max latency, 554 ms 50th, 846 ms 95th, 932 ms 99th, 1034 ms 99.9th.\n";
        assert_eq!(
            parse_producer_perf(output).unwrap(),
            ProducerPerfSummary {
                records: 500_000,
                records_per_sec: 96190.8,
                mib_per_sec: 36.69,
                avg_latency_ms: 514.46,
                p50_latency_ms: 554.0,
                p99_latency_ms: 932.0,
            }
        );
        assert!(parse_producer_perf("Exception in thread main").is_err());
    }

    #[test]
    fn the_consumer_tools_header_and_values_are_read_by_name() {
        let output = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
            2026-11-25 20:16:37:439, 2026-11-25 20:16:38:836, 190.8195, 136.5924, 500222, 358068.7187, 384, 1013, 188.3707, 493802.5666\n";
        assert_eq!(
            parse_consumer_perf(output).unwrap(),
            ConsumerPerfSummary {
                records: 500_222,
                mib: 190.8195,
                records_per_sec: 358068.7187,
                mib_per_sec: 136.5924,
            }
        );
        assert!(parse_consumer_perf("WARN nothing consumed").is_err());
    }

    #[test]
    fn the_e2e_tools_average_and_percentiles_are_read() {
        let output = "0\t293.68\n1000\t6.42\nAvg latency: 5.2368 ms\nPercentiles: 50th = 3, 99th = 19, 99.9th = 41\n";
        assert_eq!(
            parse_e2e_latency(output).unwrap(),
            E2eLatencySummary {
                avg_ms: 5.2368,
                p50_ms: 3.0,
                p99_ms: 19.0,
                p999_ms: 41.0,
            }
        );
        assert!(parse_e2e_latency("Avg latency: 5 ms\n").is_err());
    }
}
