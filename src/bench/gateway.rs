//! The gateway benchmark: MQTT QoS 1 readings from many concurrent clients
//! into our gateway (acknowledged once durable on disk, forwarded to Kafka
//! with `acks=all`), beside Debian's Mosquitto broker under the same load
//! generator ([`super::mqtt`]) and payloads. Mosquitto forwards nothing and
//! keeps nothing on disk (no subscriber, no persistence): it bounds what MQTT
//! handling alone costs on this machine.
//!
//! Two loads per server: as fast as the clients' windows allow (readings/s
//! acknowledged, and for ours also into Kafka: until the topic holds them
//! all), then a fixed offered rate for publish→PUBACK latency. Server CPU is
//! the server process's, from the first publication to its last reading
//! handled (for ours: forwarded); peak RSS its `VmHWM`. Both answer without
//! Nagle's delay (Mosquitto's `set_tcp_nodelay true`, as ours always does).
//! Before each run the page cache is written out ([`settle_disk`]), and the
//! clock starts once every client is connected.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::mqtt::{LoadOutcome, LoadSpec, Message};
use super::numbers::thousands;
use super::servers::{Server, free_address, listening, spawn, start_mosquitto, stop};
use super::usage::{WARM_UP_ROUNDS, peak_rss, process_cpu};
use super::*;
use crate::gateway::timings::{ACK_METRIC, COMMIT_METRIC, Histogram};
use crate::sensor::reading::ReadingView;

/// One load on one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayRun {
    /// The server.
    pub server: String,
    /// Offered rate, or none: as fast as the windows allow.
    pub offered_rate: Option<u32>,
    /// Readings acknowledged (PUBACK).
    pub acked: u64,
    /// Acknowledged per second, first publication to last PUBACK.
    pub acked_per_sec: f64,
    /// Into Kafka per second, first publication to the last one acknowledged
    /// by Kafka (ours only).
    pub kafka_per_sec: Option<f64>,
    /// Publication to PUBACK, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The 99th percentile of each second of the load, in order, seconds
    /// without a publication left out (reports written before it was
    /// measured have none).
    #[serde(default)]
    pub p99_by_second_ms: Vec<f64>,
    /// Ours: its group commits (write and fsync) during the run, by its
    /// `/metrics` (reports written before they were measured have none).
    #[serde(default)]
    pub group_commits: Option<GroupCommits>,
    /// Ours: the bound 99 % of its PUBACKs stayed within from the PUBLISH
    /// read to the PUBACK written, by its `/metrics`: the gateway's share of
    /// `p99_ms`, the rest being the network, the load generator and the
    /// machine (none in reports written before it was measured; `None`
    /// also past every bucket).
    #[serde(default)]
    pub inside_p99_at_most_ms: Option<f64>,
    /// The brokers' CPU during the run (for ours: until Kafka had every
    /// reading), in cores, and the share of it their JIT compilers took: the
    /// rest of the machine the server and the load share (none in reports
    /// written before it was measured, or without brokers started here).
    #[serde(default)]
    pub brokers: Option<BrokersDuring>,
    /// The server's CPU seconds per million readings.
    pub cpu_per_million: f64,
    /// The server's peak resident memory.
    pub peak_rss_mib: f64,
}

/// How often ours made its buffer durable, and how long that took: the
/// disk's share of each PUBACK's wait (a reading waits for the commit under
/// way when it came in, then for its own).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct GroupCommits {
    /// Commits per second of the load.
    pub per_sec: f64,
    /// The histogram bucket's bound that half the commits stayed within, ms.
    pub p50_at_most_ms: Option<f64>,
    /// The bound 99 % stayed within; `None`: past every bucket (2.5 s).
    pub p99_at_most_ms: Option<f64>,
    /// The bound the longest commit stayed within (none in reports written
    /// before it was measured, or past every bucket).
    #[serde(default)]
    pub longest_at_most_ms: Option<f64>,
}

/// See [`GatewayRun::brokers`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BrokersDuring {
    /// CPU seconds per second, the three brokers together.
    pub cores: f64,
    /// Of which their JIT compilers, percent.
    pub jit_percent: f64,
}

/// The benchmark's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewaySection {
    /// Concurrent MQTT connections.
    pub clients: usize,
    /// Publications each keeps awaiting their PUBACK.
    pub window: usize,
    /// Mean payload size.
    pub payload_bytes: usize,
    /// Every run, in the order run.
    pub runs: Vec<GatewayRun>,
    /// Why a peer is missing, if one is.
    pub note: Option<String>,
}

const OURS: &str = "ours: metrocloud gateway (fsync, then Kafka)";
const MOSQUITTO: &str = "Mosquitto 2 (no persistence, no subscriber)";

impl Bench<'_> {
    pub(super) async fn gateway(
        &mut self,
        readings: &Readings,
    ) -> Result<GatewaySection, BenchError> {
        let settings = self.settings;
        let messages = Arc::new(messages(&readings.path)?);
        let (clients, window) = if settings.smoke { (4, 8) } else { (100, 32) };
        let (total, rate, seconds) = if settings.smoke {
            (2_000, 500, 2.0)
        } else {
            (300_000, 10_000, 15.0)
        };
        let mosquitto = crate::cluster::which("mosquitto")
            .or_else(|| Some(PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.exists()));
        let note = mosquitto.is_none().then(|| {
            "Mosquitto is not installed (Debian's mosquitto): its rows are left out".to_string()
        });
        let throughput = |addr| LoadSpec {
            addr,
            clients,
            window,
            total,
            rate: None,
            messages: Arc::clone(&messages),
        };
        if !settings.smoke {
            self.gateway_warm_up(&throughput).await?;
        }
        let mut runs = Vec::new();
        for repeat in 0..settings.repeats {
            for side in order(repeat) {
                let binary = match side {
                    Side::Ours => None,
                    Side::Peer => match &mosquitto {
                        Some(path) => Some(path.as_path()),
                        None => continue,
                    },
                };
                for offered in [None, Some(rate)] {
                    let total = offered.map_or(total, |r| (f64::from(r) * seconds) as u64);
                    let spec = |addr| LoadSpec {
                        addr,
                        clients,
                        window: if offered.is_some() { 4096 } else { window },
                        total,
                        rate: offered,
                        messages: Arc::clone(&messages),
                    };
                    let run = self.gateway_run(binary, spec, offered, repeat).await?;
                    (self.say)(&format!(
                        "gateway: {} {}: {} acked/s{}, PUBACK p50 {:.2} ms p99 {:.2} ms ({}){}{}, {:.2} CPU s per million{}",
                        run.server,
                        offered.map_or("as fast as it goes".to_string(), |r| format!("at {r}/s")),
                        thousands(run.acked_per_sec),
                        run.kafka_per_sec.map_or(String::new(), |k| format!(
                            ", {} into Kafka/s",
                            thousands(k)
                        )),
                        run.p50_ms,
                        run.p99_ms,
                        by_second(&run.p99_by_second_ms),
                        run.group_commits.map_or(String::new(), |c| format!(
                            ", group commits {}/s, p50 / p99 / longest at most {} ms",
                            thousands(c.per_sec),
                            c.quantiles()
                        )),
                        run.inside_p99_at_most_ms
                            .map_or(String::new(), |ms| format!(
                                ", inside the gateway p99 at most {ms} ms"
                            )),
                        run.cpu_per_million,
                        run.brokers.map_or(String::new(), |b| format!(
                            "; brokers {:.2} cores, {:.0} % of it compiling",
                            b.cores, b.jit_percent
                        ))
                    ));
                    runs.push(run);
                }
            }
        }
        Ok(GatewaySection {
            clients,
            window,
            payload_bytes: readings.mean_bytes,
            runs,
            note,
        })
    }

    /// Runs of ours left out of the table until the brokers' JIT compilers
    /// are quiet, or [`WARM_UP_ROUNDS`] of them; each says what the compilers
    /// took. A fresh cluster compiles for minutes, on the cores the gateway
    /// and the load share: in a run of ours at 10,000 readings/s after one
    /// warm-up run, the compilers took half of the brokers' 1.4 cores, and in
    /// six warm-up runs (65 s from the cluster's start) 21 to 43 % of the
    /// brokers' CPU. Mosquitto's runs send nothing to Kafka.
    async fn gateway_warm_up(
        &mut self,
        throughput: &impl Fn(SocketAddr) -> LoadSpec,
    ) -> Result<(), BenchError> {
        let brokers = self.target().brokers.clone();
        for round in 1..=WARM_UP_ROUNDS {
            let mark = brokers.mark();
            self.gateway_run(None, throughput, None, u32::MAX).await?;
            let compiling = brokers.since(mark);
            (self.say)(&format!(
                "gateway: warm-up run {round} of ours, not reported{}",
                compiling.map_or(String::new(), |c| format!(": {}", c.describe()))
            ));
            if compiling.is_none_or(|c| c.quiet()) {
                return Ok(());
            }
        }
        (self.say)("gateway: the brokers' compilers are still busy; measuring anyway");
        Ok(())
    }

    /// One load on a fresh server: ours when `mosquitto` is `None`.
    async fn gateway_run(
        &mut self,
        mosquitto: Option<&Path>,
        spec: impl Fn(SocketAddr) -> LoadSpec,
        offered: Option<u32>,
        repeat: u32,
    ) -> Result<GatewayRun, BenchError> {
        let dir = self.settings.work_dir.join(format!(
            "gateway-{}-{repeat}-{}",
            if mosquitto.is_some() {
                "mosquitto"
            } else {
                "ours"
            },
            offered.unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        // Ours forwards to a fresh topic and its dead-letter topic, both made
        // before it starts, as a deployment's are: a gateway making its
        // dead-letter topic has the brokers writing 18 new replicas' files
        // during the first second of the load.
        let topic = match mosquitto {
            None => {
                let topic = self.fresh_topic("gateway").await?;
                self.create_topic(&dead_letter_topic(&topic)).await?;
                Some(topic)
            }
            Some(_) => None,
        };
        let mut server = match (mosquitto, &topic) {
            (Some(program), _) => start_mosquitto(program, &dir).await?,
            (None, Some(topic)) => self.start_ours(topic, &dir).await?,
            (None, None) => unreachable!("ours always has a topic"),
        };
        settle_disk().await;
        let brokers = self.target().brokers.clone();
        let brokers_mark = brokers.mark();
        let spec = spec(server.mqtt);
        let total = spec.total;
        let cpu_before = process_cpu(server.pid).unwrap_or_default();
        let started = Instant::now();
        let outcome = super::mqtt::run(&spec).await;
        let load = match outcome {
            Ok(load) => load,
            Err(e) => {
                let _ = server.child.kill().await;
                return Err(BenchError::Gateway(format!("the MQTT load failed: {e}")));
            }
        };
        let (kafka_secs, commits, inside) = match server.http {
            Some(http) => {
                let (at, metrics) = forwarded(http, total).await?;
                let inside =
                    Histogram::parse(&metrics, ACK_METRIC).and_then(|h| h.quantile_ms(0.99));
                let commits = Histogram::parse(&metrics, COMMIT_METRIC).map(|h| GroupCommits {
                    per_sec: h.count as f64 / load.elapsed.as_secs_f64().max(1e-9),
                    p50_at_most_ms: h.quantile_ms(0.5),
                    p99_at_most_ms: h.quantile_ms(0.99),
                    longest_at_most_ms: h.quantile_ms(1.0),
                });
                (
                    Some(at.duration_since(started).as_secs_f64()),
                    commits,
                    inside,
                )
            }
            None => (None, None, None),
        };
        let cpu = process_cpu(server.pid)
            .unwrap_or_default()
            .saturating_sub(cpu_before);
        let wall = started.elapsed().as_secs_f64().max(1e-9);
        let brokers = brokers.since(brokers_mark).map(|c| BrokersDuring {
            cores: c.cpu_secs / wall,
            jit_percent: 100.0 * c.jit_secs / c.cpu_secs.max(1e-9),
        });
        let peak = peak_rss(server.pid as u32).unwrap_or(0);
        stop(&mut server).await;
        if let Some(topic) = &topic {
            self.drop_topic(topic).await;
            self.drop_topic(&dead_letter_topic(topic)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let mut run = summarize(
            if mosquitto.is_some() { MOSQUITTO } else { OURS },
            offered,
            &load,
            kafka_secs.map(|secs| total as f64 / secs.max(1e-9)),
            cpu.as_secs_f64(),
            peak,
        );
        run.group_commits = commits;
        run.inside_p99_at_most_ms = inside;
        run.brokers = brokers;
        Ok(run)
    }

    async fn start_ours(&self, topic: &str, dir: &Path) -> Result<Server, BenchError> {
        let (mqtt, http) = (free_address()?, free_address()?);
        let mut command = Command::new(&self.settings.binary);
        command
            .arg("gateway")
            .env("KAFKA_BOOTSTRAP_SERVERS", self.target().bootstrap.join(","))
            .env("KAFKA_TOPIC_NAME", topic)
            .env("KAFKA_DLQ_TOPIC", dead_letter_topic(topic))
            .env("METROCLOUD_GATEWAY_MQTT_ADDR", mqtt.to_string())
            .env("METROCLOUD_GATEWAY_HTTP_ADDR", http.to_string())
            .env("METROCLOUD_GATEWAY_SPOOL_DIR", dir.join("spool"))
            .env("LOG_LEVEL", "WARN")
            .env_remove("RUST_LOG");
        if let Some(secure) = self.target.and_then(|t| t.secure.as_ref()) {
            command.envs(secure.env.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let child = spawn(command, &dir.join("gateway.log"), "metrocloud gateway")?;
        listening(child, mqtt, Some(http)).await
    }
}

fn summarize(
    server: &str,
    offered: Option<u32>,
    load: &LoadOutcome,
    kafka_per_sec: Option<f64>,
    cpu_secs: f64,
    peak_rss_bytes: u64,
) -> GatewayRun {
    let ms = |q: f64| load.latency_us.value_at_quantile(q) as f64 / 1000.0;
    GatewayRun {
        server: server.to_string(),
        offered_rate: offered,
        acked: load.acked,
        acked_per_sec: load.acked as f64 / load.elapsed.as_secs_f64().max(1e-9),
        kafka_per_sec,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        p99_by_second_ms: load
            .by_second_us
            .iter()
            .filter(|second| !second.is_empty())
            .map(|second| second.value_at_quantile(0.99) as f64 / 1000.0)
            .collect(),
        group_commits: None,
        inside_p99_at_most_ms: None,
        brokers: None,
        cpu_per_million: cpu_secs / (load.acked.max(1) as f64 / 1e6),
        peak_rss_mib: peak_rss_bytes as f64 / MIB,
    }
}

/// The lowest, median and highest of the per-second p99s.
fn spread(p99s: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = p99s.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some((*sorted.first()?, sorted[sorted.len() / 2], *sorted.last()?))
}

/// `p99 by second 8.1 to 35.0 ms, median 12.3`.
fn by_second(p99s: &[f64]) -> String {
    spread(p99s).map_or("no second measured".to_string(), |(low, median, high)| {
        format!("p99 by second {low:.1} to {high:.1} ms, median {median:.1}")
    })
}

impl BrokersDuring {
    /// `0.42 (31 %)`.
    fn describe(&self) -> String {
        format!("{:.2} ({:.0} %)", self.cores, self.jit_percent)
    }
}

impl GroupCommits {
    /// `324, 3 / 10 / 50`: per second, then [`GroupCommits::quantiles`].
    fn describe(&self) -> String {
        format!("{}, {}", thousands(self.per_sec), self.quantiles())
    }

    /// `3 / 10 / 50`: the p50, p99 and longest bounds in ms (`>2500` past
    /// the last bucket).
    fn quantiles(&self) -> String {
        let bound = |b: Option<f64>| b.map_or(">2500".to_string(), |ms| format!("{ms}"));
        format!(
            "{} / {} / {}",
            bound(self.p50_at_most_ms),
            bound(self.p99_at_most_ms),
            bound(self.longest_at_most_ms)
        )
    }
}

fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}-dlq")
}

/// Every reading of the readings file as a message on its device's topic.
fn messages(path: &Path) -> Result<Vec<Message>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    text.lines()
        .map(|line| {
            let view = ReadingView::decode(line.as_bytes())
                .map_err(|e| BenchError::Gateway(format!("a reading of the readings file: {e}")))?;
            Ok(Message {
                topic: format!("sensors/{}/{}", view.device_type.as_str(), view.device_id),
                payload: bytes::Bytes::copy_from_slice(line.as_bytes()),
            })
        })
        .collect()
}

/// Writes out what earlier runs left in the page cache before a run starts,
/// for either server. The brokers share this machine's one disk, and each
/// run leaves them hundreds of MB unwritten (a run as fast as it goes puts
/// about 360 MB into their logs); the kernel writes it out in bursts up to
/// 30 s later, in the middle of the next run, where a burst held one of
/// our group commits' fsyncs for 87 and 169 ms (and a probe's fdatasync,
/// beside Mosquitto's run, for 80 to 164 ms). A run is charged for its own
/// writes, not its predecessor's.
async fn settle_disk() {
    let _ = tokio::task::spawn_blocking(nix::unistd::sync).await;
}

/// When the gateway's `/metrics` first says Kafka acknowledged `total`
/// readings (within 5 minutes), and that page.
async fn forwarded(http: SocketAddr, total: u64) -> Result<(Instant, String), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, body) = super::http::request(http, "GET", "/metrics", None)
            .await
            .map_err(|e| BenchError::Gateway(format!("the gateway's /metrics: {e}")))?;
        let text = String::from_utf8_lossy(&body);
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("metrocloud_gateway_readings_forwarded_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if count >= total {
            return Ok((Instant::now(), text.into_owned()));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Gateway(format!(
                "Kafka acknowledged {count} of {total} readings after 5 minutes"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The markdown table.
pub fn gateway_table(g: &GatewaySection) -> String {
    let mut out = format!(
        "\n### Gateway: MQTT QoS 1 readings ({} B) from {} clients, ours beside Mosquitto\n\n",
        g.payload_bytes, g.clients
    );
    if let Some(note) = &g.note {
        out.push_str(&format!("{note}.\n\n"));
    }
    out.push_str("| server | offered rec/s | acked rec/s | into Kafka rec/s | PUBACK p50 ms | p99 ms | p99.9 ms | p99 of each second, ms: lowest / median / highest | group commits/s, p50 / p99 / longest ms at most | PUBLISH read to PUBACK written inside ours, p99 ms at most | brokers' cores (JIT %) | server CPU s/M rec | peak RSS MiB |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for run in &g.runs {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.2} | {:.1} |\n",
            run.server,
            run.offered_rate.map_or(
                format!("as fast as {} in flight per client allows", g.window),
                |r| thousands(f64::from(r))
            ),
            thousands(run.acked_per_sec),
            run.kafka_per_sec.map_or("—".to_string(), thousands),
            run.p50_ms,
            run.p99_ms,
            run.p999_ms,
            spread(&run.p99_by_second_ms).map_or("—".to_string(), |(low, median, high)| {
                format!("{low:.1} / {median:.1} / {high:.1}")
            }),
            run.group_commits.map_or("—".to_string(), |c| c.describe()),
            run.inside_p99_at_most_ms
                .map_or("—".to_string(), |ms| format!("{ms}")),
            run.brokers.map_or("—".to_string(), |b| b.describe()),
            run.cpu_per_million,
            run.peak_rss_mib
        ));
    }
    out
}
