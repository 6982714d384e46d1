//! The benchmark report: every run's figures as JSON, and tables in markdown.
//!
//! The JSON keeps each run (ours and the peer's, in the order they ran) so
//! that later runs can be compared figure by figure; the markdown shows the
//! means side by side with their ratio, ours over the peer's.

use serde::Serialize;

use super::numbers::thousands;

/// One client run: ours or the peer's.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRun {
    /// Records sent or read.
    pub records: u64,
    /// Records per second, as the client measured them.
    pub records_per_sec: f64,
    /// MiB per second (Kafka's tools call these MB).
    pub mib_per_sec: f64,
    /// CPU seconds of the client process, startup included.
    pub cpu_secs: f64,
    /// Peak resident memory of the client process, MiB.
    pub peak_rss_mib: f64,
    /// CPU seconds of all brokers during the run, when the cluster is ours to read.
    pub broker_cpu_secs: Option<f64>,
    /// Wall time of the client process.
    pub wall_secs: f64,
}

impl ClientRun {
    fn cpu_per_million(&self) -> f64 {
        per_million(self.cpu_secs, self.records)
    }

    fn broker_cpu_per_million(&self) -> Option<f64> {
        self.broker_cpu_secs.map(|s| per_million(s, self.records))
    }
}

fn per_million(secs: f64, records: u64) -> f64 {
    if records == 0 {
        0.0
    } else {
        secs * 1e6 / records as f64
    }
}

/// Ours against the peer for one kind of record.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// What was sent, e.g. "sensor reading (392 B)".
    pub label: String,
    /// Bytes per record value.
    pub record_bytes: usize,
    /// Our runs.
    pub ours: Vec<ClientRun>,
    /// The peer's runs.
    pub peer: Vec<ClientRun>,
    /// Other clients measured beside them (another build of ours, librdkafka).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<OtherClient>,
}

/// The runs of a client besides ours and the main peer.
#[derive(Debug, Clone, Serialize)]
pub struct OtherClient {
    /// What it is, e.g. "kcat (librdkafka 2.0.2)".
    pub name: String,
    /// Its runs.
    pub runs: Vec<ClientRun>,
}

/// Means of a list of runs.
#[derive(Debug, Clone, Copy, Default)]
struct Means {
    records_per_sec: f64,
    mib_per_sec: f64,
    cpu_per_million: f64,
    broker_cpu_per_million: Option<f64>,
    peak_rss_mib: f64,
}

fn means(runs: &[ClientRun]) -> Means {
    if runs.is_empty() {
        return Means::default();
    }
    let n = runs.len() as f64;
    let mean = |f: &dyn Fn(&ClientRun) -> f64| runs.iter().map(f).sum::<f64>() / n;
    let broker: Option<Vec<f64>> = runs.iter().map(|r| r.broker_cpu_per_million()).collect();
    Means {
        records_per_sec: mean(&|r| r.records_per_sec),
        mib_per_sec: mean(&|r| r.mib_per_sec),
        cpu_per_million: mean(&|r| r.cpu_per_million()),
        broker_cpu_per_million: broker.map(|b| b.iter().sum::<f64>() / n),
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max),
    }
}

/// One offered rate of the end-to-end benchmark; latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    /// Offered records per second.
    pub rate: u32,
    /// Records sent per second of offer, as achieved.
    pub achieved_rate: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Highest.
    pub max_ms: f64,
    /// Median time from send to acknowledgement (`acks=all`), ms.
    pub ack_p50_ms: f64,
    /// 99th percentile of that, ms.
    pub ack_p99_ms: f64,
    /// The same two for `kafka-producer-perf-test` at the same offered rate, when it ran.
    pub peer_ack_ms: Option<(f64, f64)>,
    /// Records the producer was behind its schedule when the offer ended.
    pub behind_at_end: u64,
    /// Records sent but not processed when the offer ended.
    pub lag_at_end: u64,
    /// Whether producer and consumer kept up (both of those within a tenth of a second of records).
    pub sustained: bool,
    /// Records timed.
    pub processed: u64,
    /// CPU seconds of the client process (producer and consumer).
    pub cpu_secs: f64,
    /// Peak resident memory, MiB.
    pub peak_rss_mib: f64,
}

/// Kafka's `kafka-e2e-latency`: one record in flight at a time.
#[derive(Debug, Clone, Serialize)]
pub struct PeerLatency {
    /// Records sent.
    pub records: u64,
    /// Mean, ms.
    pub avg_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
}

/// The end-to-end section.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySection {
    /// Record size (a sensor reading).
    pub record_bytes: usize,
    /// Our runs, in the order they ran.
    pub ours: Vec<LatencyRun>,
    /// The highest offered rate that was sustained.
    pub highest_sustained: Option<u32>,
    /// The peer's run.
    pub peer: Option<PeerLatency>,
}

/// One fleet size of the simulator benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct SimulatorRun {
    /// Devices.
    pub devices: u32,
    /// Readings made and encoded.
    pub readings: u64,
    /// Seconds run.
    pub seconds: f64,
    /// CPU seconds, startup included.
    pub cpu_secs: f64,
    /// Peak resident memory, MiB.
    pub peak_rss_mib: f64,
}

/// Where the benchmarks ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model, from /proc/cpuinfo.
    pub cpu_model: String,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kafka version of the brokers and tools.
    pub kafka_version: String,
    /// Whether the cluster was started by the benchmark (3 JVMs on this machine).
    pub local_cluster: bool,
}

impl Machine {
    /// This machine, read from /proc.
    pub fn here(local_cluster: bool) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kafka_version: crate::cluster::KAFKA_VERSION.to_string(),
            local_cluster,
        }
    }
}

/// Everything one `metrocloud bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// When it started (UTC, RFC 3339).
    pub started_at: String,
    /// Where.
    pub machine: Machine,
    /// Whether this was a smoke run (tiny counts: figures mean nothing).
    pub smoke: bool,
    /// Producer settings of both sides: linger, batch, compression.
    pub producer_settings: String,
    /// The build measured as ours, e.g. "static musl".
    pub ours_build: String,
    /// Notes on the producer benchmark, e.g. a peer that is not installed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub producer_notes: Vec<String>,
    /// Producer runs per record kind.
    pub producer: Vec<Comparison>,
    /// Consumer runs.
    pub consumer: Vec<Comparison>,
    /// End-to-end latency.
    pub end_to_end: Option<LatencySection>,
    /// Simulator cost.
    pub simulator: Vec<SimulatorRun>,
    /// Console page times and its cost to the producer.
    pub console: Option<super::console::ConsoleSection>,
    /// Storage loads.
    #[serde(default)]
    pub storage: Option<super::storage::StorageSection>,
    /// MQTT into our gateway beside Mosquitto.
    #[serde(default)]
    pub gateway: Option<super::gateway::GatewaySection>,
    /// The fault detector's quality and cost.
    #[serde(default)]
    pub detect: Option<super::detect::DetectSection>,
}

fn ratio(ours: f64, peer: f64) -> String {
    if peer > 0.0 {
        format!("{:.2}x", ours / peer)
    } else {
        "—".to_string()
    }
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or("—".to_string(), |v| format!("{v:.decimals$}"))
}

impl BenchReport {
    /// The report as markdown tables.
    pub fn to_markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "Run {} on {} CPUs ({}), {} GiB, Kafka {}{}{}.\n",
            self.started_at,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kafka_version,
            if m.local_cluster {
                ", 3 nodes on the same machine"
            } else {
                ""
            },
            if self.smoke {
                " — smoke run: counts too small for the figures to mean anything"
            } else {
                ""
            }
        );
        if !self.producer.is_empty() {
            out.push_str(&format!(
                "\n### Producer: ours ({}) vs kafka-producer-perf-test ({})\n\n",
                self.ours_build, self.producer_settings
            ));
            out.push_str(&comparison_table(&self.producer));
            if self.producer.iter().any(|r| !r.others.is_empty()) {
                out.push_str(&format!(
                    "\nOther producers on the same cluster in the same run, beside ours ({}):\n\n",
                    self.ours_build
                ));
                out.push_str(&others_table(&self.producer, "ours"));
            }
            for note in &self.producer_notes {
                out.push_str(&format!("\n{note}\n"));
            }
        }
        if !self.consumer.is_empty() {
            out.push_str("\n### Consumer: ours vs kafka-consumer-perf-test (pre-filled topic, new group)\n\n");
            out.push_str(&comparison_table(&self.consumer));
        }
        if let Some(e2e) = &self.end_to_end {
            out.push_str(&format!(
                "\n### End to end: produce call to consumer processing ({} B sensor readings)\n\n",
                e2e.record_bytes
            ));
            out.push_str("| client | offered rec/s | achieved rec/s | p50 ms | p99 ms | p99.9 ms | max ms | send→ack p50 / p99 ms | Java producer send→ack p50 / p99 ms | kept up | client CPU % |\n");
            out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
            for run in &e2e.ours {
                let seconds = if run.achieved_rate > 0.0 {
                    run.processed as f64 / run.achieved_rate
                } else {
                    0.0
                };
                let cpu_percent = if seconds > 0.0 {
                    Some(run.cpu_secs / seconds * 100.0)
                } else {
                    None
                };
                out.push_str(&format!(
                    "| ours | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {} | {} | {} |\n",
                    thousands(f64::from(run.rate)),
                    thousands(run.achieved_rate),
                    run.p50_ms,
                    run.p99_ms,
                    run.p999_ms,
                    run.max_ms,
                    run.ack_p50_ms,
                    run.ack_p99_ms,
                    run.peer_ack_ms
                        .map_or("—".to_string(), |(p50, p99)| format!("{p50:.0} / {p99:.0}")),
                    if run.sustained { "yes" } else { "no" },
                    optional(cpu_percent, 0),
                ));
            }
            if let Some(peer) = &e2e.peer {
                out.push_str(&format!(
                    "| kafka-e2e-latency (1 in flight, {} records) | — | — | {:.0} | {:.0} | {:.0} | — | — | — | — | — |\n",
                    thousands(peer.records as f64),
                    peer.p50_ms,
                    peer.p99_ms,
                    peer.p999_ms
                ));
            }
            out.push_str(&format!(
                "\nHighest offered rate sustained: {}.\n",
                e2e.highest_sustained
                    .map_or("none of those tried".to_string(), |r| format!(
                        "{} records/s",
                        thousands(f64::from(r))
                    ))
            ));
        }
        if !self.simulator.is_empty() {
            out.push_str(
                "\n### Simulator: readings made and JSON-encoded at 1 Hz per device (no Kafka)\n\n",
            );
            out.push_str("| devices | readings/s | CPU % of one core | CPU s per million readings | peak RSS MiB |\n");
            out.push_str("|---:|---:|---:|---:|---:|\n");
            for run in &self.simulator {
                out.push_str(&format!(
                    "| {} | {} | {:.1} | {:.2} | {:.1} |\n",
                    thousands(f64::from(run.devices)),
                    thousands(run.readings as f64 / run.seconds.max(1e-9)),
                    run.cpu_secs / run.seconds.max(1e-9) * 100.0,
                    per_million(run.cpu_secs, run.readings),
                    run.peak_rss_mib
                ));
            }
        }
        if let Some(console) = &self.console {
            out.push_str(&console_tables(console));
        }
        if let Some(storage) = &self.storage {
            out.push_str(&super::storage::storage_table(storage));
        }
        if let Some(gateway) = &self.gateway {
            out.push_str(&super::gateway::gateway_table(gateway));
        }
        if let Some(detect) = &self.detect {
            out.push_str(&super::detect::detect_table(detect));
        }
        out
    }
}

fn console_tables(c: &super::console::ConsoleSection) -> String {
    let mut out = format!(
        "\n### Console: pages with {} devices ({} readings; the console listed every device {:.1} s after it started; {:.2} CPU s, peak RSS {:.1} MiB)\n\n",
        thousands(f64::from(c.devices)),
        thousands(c.readings as f64),
        c.catch_up_secs,
        c.cpu_secs,
        c.peak_rss_mib
    );
    out.push_str("Server: time from request to last byte, over HTTP on loopback. Browser: headless Chromium's navigation timing, from navigation start to the end of the load event (style sheet and script included).\n\n");
    out.push_str("| page | requests | server p50 ms | server p95 ms | server max ms | bytes | browser load p50 ms | browser load max ms |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for page in &c.pages {
        out.push_str(&format!(
            "| `{}` | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |\n",
            page.path,
            page.requests,
            page.p50_ms,
            page.p95_ms,
            page.max_ms,
            thousands(page.bytes as f64),
            optional(page.browser_p50_ms, 1),
            optional(page.browser_max_ms, 1)
        ));
    }
    let mean = |with: bool| {
        let runs: Vec<f64> = c
            .impact
            .iter()
            .filter(|r| r.with_console == with)
            .map(|r| r.records_per_sec)
            .collect();
        runs.iter().sum::<f64>() / runs.len().max(1) as f64
    };
    out.push_str("\n### Console: our producer without and with a console reading its topic and serving two pages a second\n\n");
    out.push_str("| run | console | readings | readings/s | console CPU s during the run |\n");
    out.push_str("|---:|---|---:|---:|---:|\n");
    for (i, run) in c.impact.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            i + 1,
            if run.with_console { "yes" } else { "no" },
            thousands(run.records as f64),
            thousands(run.records_per_sec),
            optional(run.console_cpu_secs, 2)
        ));
    }
    out.push_str(&format!(
        "\nMean readings/s: {} without, {} with a console ({}).\n",
        thousands(mean(false)),
        thousands(mean(true)),
        ratio(mean(true), mean(false))
    ));
    if let Some(rate) = c.latency.first().map(|r| r.rate) {
        out.push_str(&format!(
            "\n### Console: end to end at {} readings/s without and with a console\n\n",
            thousands(f64::from(rate))
        ));
        out.push_str("| run | console | achieved readings/s | p50 ms | p99 ms | kept up | console CPU s during the run |\n");
        out.push_str("|---:|---|---:|---:|---:|---|---:|\n");
        for (i, run) in c.latency.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.2} | {} | {} |\n",
                i + 1,
                if run.with_console { "yes" } else { "no" },
                thousands(run.achieved_rate),
                run.p50_ms,
                run.p99_ms,
                if run.sustained { "yes" } else { "no" },
                optional(run.console_cpu_secs, 2)
            ));
        }
    }
    out
}

/// Ours (the build measured as ours) beside every other client, per kind of record.
fn others_table(rows: &[Comparison], ours_name: &str) -> String {
    let mut out = format!(
        "| records | client | rec/s | {ours_name} ÷ it | CPU s/M rec | {ours_name} CPU ÷ its | peak RSS MiB |\n\
         |---|---|---:|---:|---:|---:|---:|\n"
    );
    for row in rows.iter().filter(|r| !r.others.is_empty()) {
        let ours = means(&row.ours);
        for other in &row.others {
            let it = means(&other.runs);
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {:.0} |\n",
                row.label,
                other.name,
                thousands(it.records_per_sec),
                ratio(ours.records_per_sec, it.records_per_sec),
                it.cpu_per_million,
                ratio(ours.cpu_per_million, it.cpu_per_million),
                it.peak_rss_mib,
            ));
        }
    }
    out
}

fn comparison_table(rows: &[Comparison]) -> String {
    let mut out = String::from(
        "| records | ours rec/s | peer rec/s | ratio | ours MiB/s | peer MiB/s | ours CPU s/M rec | peer CPU s/M rec | CPU ratio | ours peak RSS MiB | peer peak RSS MiB | broker CPU s/M rec (ours / peer) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let ours = means(&row.ours);
        let peer = means(&row.peer);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {} / {} |\n",
            row.label,
            thousands(ours.records_per_sec),
            thousands(peer.records_per_sec),
            ratio(ours.records_per_sec, peer.records_per_sec),
            ours.mib_per_sec,
            peer.mib_per_sec,
            ours.cpu_per_million,
            peer.cpu_per_million,
            ratio(ours.cpu_per_million, peer.cpu_per_million),
            ours.peak_rss_mib,
            peer.peak_rss_mib,
            optional(ours.broker_cpu_per_million, 2),
            optional(peer.broker_cpu_per_million, 2),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(records_per_sec: f64, cpu_secs: f64) -> ClientRun {
        ClientRun {
            records: 1_000_000,
            records_per_sec,
            mib_per_sec: records_per_sec * 100.0 / 1_048_576.0,
            cpu_secs,
            peak_rss_mib: 20.0,
            broker_cpu_secs: Some(4.0),
            wall_secs: 10.0,
        }
    }

    #[test]
    fn the_table_shows_means_and_the_ratio_of_ours_to_the_peer() {
        let report = BenchReport {
            started_at: "2026-11-25T20:00:00Z".to_string(),
            machine: Machine::here(true),
            smoke: false,
            producer_settings: "acks=all".to_string(),
            ours_build: "static musl".to_string(),
            producer_notes: vec![],
            producer: vec![Comparison {
                label: "100 B".to_string(),
                record_bytes: 100,
                ours: vec![run(120_000.0, 2.0), run(100_000.0, 4.0)],
                peer: vec![run(100_000.0, 9.0)],
                others: vec![OtherClient {
                    name: "kcat (librdkafka)".to_string(),
                    runs: vec![run(220_000.0, 1.5)],
                }],
            }],
            consumer: vec![],
            end_to_end: None,
            simulator: vec![],
            console: None,
            storage: None,
            gateway: None,
            detect: None,
        };
        let table = report.to_markdown();
        let row = table
            .lines()
            .find(|l| l.starts_with("| 100 B"))
            .expect("a row for 100 B records");
        assert!(row.contains("| 110,000 | 100,000 | 1.10x |"), "{row}");
        assert!(row.contains("| 3.00 | 9.00 | 0.33x |"), "{row}");
        assert!(row.contains("| 4.00 / 4.00 |"), "{row}");
        let other = table
            .lines()
            .find(|l| l.starts_with("| 100 B | kcat (librdkafka)"))
            .expect("a row for the other client");
        assert!(
            other.contains("| 220,000 | 0.50x | 1.50 | 2.00x |"),
            "{other}"
        );
    }
}
