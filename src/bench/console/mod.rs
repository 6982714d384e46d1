//! The console's benchmark: how long its pages take with a large fleet, and
//! what it costs the pipeline to have it watching.
//!
//! - Page times: a topic is filled with two readings from each of
//!   `console_devices` simulated devices; a `metrocloud console` process is
//!   started on it and, once its fleet page lists every device, each page is
//!   requested in turn and timed from the request to the last byte.
//! - Cost to the pipeline: our producer sends the same readings with no
//!   console, and with a console reading the topic while two pages (overview
//!   and fleet) are fetched every second, as a browser left open does. The
//!   runs alternate which goes first. The console's CPU over the run is
//!   reported beside it, and the run counts only once the console has read
//!   every record.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::browser::Browser;
use super::usage::{peak_rss, process_cpu};
use super::worker::Payload;
use super::{Bench, BenchError, MIB, Readings};
use crate::kafka::producer::Producer;
use crate::pipeline::sources::simulator::RecordWriter;
use crate::sensor::simulator::{Fleet, SimulatorSettings};

/// Every page, and the JSON of the fleet, as a browser or a script asks for them.
pub const PAGES: [&str; 11] = [
    "/",
    "/brokers",
    "/topics",
    "/messages",
    "/groups",
    "/fleet",
    "/fleet?sort=problems",
    "/alerts",
    "/dead-letters",
    "/api/v1/fleet",
    "/metrics",
];

/// One page's times.
#[derive(Debug, Clone, Serialize)]
pub struct PageTime {
    /// The path asked for.
    pub path: String,
    /// Requests timed.
    pub requests: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile (nearest rank), ms.
    pub p95_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Size of the answer.
    pub bytes: usize,
    /// In headless Chromium, median time from navigation to the end of the
    /// load event, ms (pages only; absent without a browser).
    pub browser_p50_ms: Option<f64>,
    /// The slowest such load, ms.
    pub browser_max_ms: Option<f64>,
}

/// One producer run, with or without a console watching.
#[derive(Debug, Clone, Serialize)]
pub struct ImpactRun {
    /// Whether a console was reading the topic and serving two pages a second.
    pub with_console: bool,
    /// Readings sent (all acknowledged).
    pub records: u64,
    /// Our producer's records per second.
    pub records_per_sec: f64,
    /// The console's CPU seconds during the producer's run.
    pub console_cpu_secs: Option<f64>,
    /// The producer run's wall time, s.
    pub seconds: f64,
}

/// One end-to-end run at a fixed rate, with or without a console watching.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyImpactRun {
    /// Whether a console was reading the topic and serving two pages a second.
    pub with_console: bool,
    /// Readings offered per second.
    pub rate: u32,
    /// Readings sent per second.
    pub achieved_rate: f64,
    /// Median from send to processed, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Whether the pipeline kept up.
    pub sustained: bool,
    /// The console's CPU seconds during the run.
    pub console_cpu_secs: Option<f64>,
}

/// The console's section of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleSection {
    /// Devices in the fleet the pages show.
    pub devices: u32,
    /// Readings in the topic.
    pub readings: u64,
    /// Seconds from the console's start until its fleet listed every device.
    pub catch_up_secs: f64,
    /// Page times, in the order of [`PAGES`].
    pub pages: Vec<PageTime>,
    /// The console's peak resident memory after reading the fleet, MiB.
    pub peak_rss_mib: f64,
    /// The console's CPU seconds from its start until the pages were timed.
    pub cpu_secs: f64,
    /// Producer runs with and without a console.
    pub impact: Vec<ImpactRun>,
    /// End-to-end runs at a fixed rate with and without a console.
    pub latency: Vec<LatencyImpactRun>,
}

/// A `metrocloud console` child process.
struct ConsoleProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
    started: Instant,
}

impl ConsoleProcess {
    async fn start(bench: &Bench<'_>, topic: &str) -> Result<ConsoleProcess, BenchError> {
        let mut child = tokio::process::Command::new(&bench.settings.binary)
            .args(["console", "--console-addr", "127.0.0.1:0"])
            .env(
                "KAFKA_BOOTSTRAP_SERVERS",
                bench.target().bootstrap.join(","),
            )
            .env("KAFKA_TOPIC_NAME", topic)
            .env("KAFKA_ALERTS_TOPIC", format!("{topic}-alerts"))
            .env("KAFKA_DLQ_TOPIC", format!("{topic}-dlq"))
            .env("METROCLOUD_LOG_DIR", &bench.settings.work_dir)
            .env_remove("METROCLOUD_CONSOLE_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                what: "the console".to_string(),
                source,
            })?;
        let started = Instant::now();
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let find = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(address) = line.strip_prefix("console: http://") {
                    return address.trim_end_matches('/').parse::<SocketAddr>().ok();
                }
            }
            None
        };
        let addr = tokio::time::timeout(Duration::from_secs(30), find)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| {
                BenchError::Console("did not print its address within 30 s".to_string())
            })?;
        // Keep reading what it prints, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ConsoleProcess {
            child,
            addr,
            started,
        })
    }

    fn pid(&self) -> i32 {
        self.child.id().map_or(0, |id| id as i32)
    }

    fn cpu(&self) -> Option<Duration> {
        process_cpu(self.pid())
    }

    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), BenchError> {
        http_get(self.addr, path)
            .await
            .map_err(|e| BenchError::Console(format!("GET {path}: {e}")))
    }

    /// Polls `path` until `done(body)` holds; the time it took from the start.
    async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        what: &str,
        done: impl Fn(&[u8]) -> bool,
    ) -> Result<Duration, BenchError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok((200, body)) = self.get(path).await
                && done(&body)
            {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Console(format!(
                    "{what} did not happen within {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    super::http::request(addr, "GET", path, None).await
}

/// The value of an unlabelled metric in a Prometheus exposition.
fn metric(text: &[u8], name: &str) -> Option<f64> {
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Whether each run of repeat `repeat` has a console: the runs alternate
/// which goes first, as the peer comparisons do ([`super::order`]).
fn console_order(repeat: u32) -> [bool; 2] {
    super::order(repeat).map(|side| side == super::Side::Peer)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Bench<'_> {
    pub(super) async fn console(
        &mut self,
        readings: &Readings,
    ) -> Result<ConsoleSection, BenchError> {
        let devices = self.settings.console_devices;
        let topic = self.fresh_topic("console").await?;
        (self.say)(&format!(
            "console: filling {topic} with 2 readings from each of {devices} devices"
        ));
        let sent = self.fill_fleet(&topic, devices).await?;
        let console = ConsoleProcess::start(self, &topic).await?;
        let expected = format!("\"total\":{devices},");
        let catch_up = console
            .wait_for(
                "/api/v1/fleet",
                Duration::from_secs(300),
                &format!("listing all {devices} devices"),
                |body| String::from_utf8_lossy(body).contains(&expected),
            )
            .await?;
        (self.say)(&format!(
            "console: fleet of {devices} devices read in {:.1} s; timing {} pages",
            catch_up.as_secs_f64(),
            PAGES.len()
        ));
        let mut pages = Vec::new();
        for path in PAGES {
            let (status, _) = console.get(path).await?;
            if status != 200 {
                return Err(BenchError::Console(format!("GET {path} answered {status}")));
            }
            let mut times = Vec::new();
            let mut bytes = 0;
            for _ in 0..self.settings.console_page_requests {
                let started = Instant::now();
                let (_, body) = console.get(path).await?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                bytes = body.len();
            }
            times.sort_by(f64::total_cmp);
            let page = PageTime {
                path: path.to_string(),
                requests: times.len(),
                p50_ms: percentile(&times, 0.5),
                p95_ms: percentile(&times, 0.95),
                max_ms: times.last().copied().unwrap_or_default(),
                bytes,
                browser_p50_ms: None,
                browser_max_ms: None,
            };
            (self.say)(&format!(
                "console page {path}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms, {} bytes",
                page.p50_ms, page.p95_ms, page.max_ms, page.bytes
            ));
            pages.push(page);
        }
        self.browser_times(&console, &mut pages).await;
        let cpu_secs = console.cpu().map_or(0.0, |c| c.as_secs_f64());
        let peak_rss_mib = peak_rss(console.pid() as u32).unwrap_or(0) as f64 / MIB;
        console.stop().await;
        self.drop_topic(&topic).await;

        let mut impact = Vec::new();
        for repeat in 0..self.settings.repeats {
            for with_console in console_order(repeat) {
                impact.push(self.impact_run(readings, with_console, repeat).await?);
            }
        }
        let mut latency = Vec::new();
        if !self.settings.smoke {
            // Unreported: the first run after the producer runs pays for their clean-up.
            (self.say)("console: one end-to-end warm-up run");
            self.latency_with(readings, false).await?;
        }
        for repeat in 0..self.settings.repeats {
            for with_console in console_order(repeat) {
                latency.push(self.latency_with(readings, with_console).await?);
            }
        }
        Ok(ConsoleSection {
            devices,
            readings: sent,
            catch_up_secs: catch_up.as_secs_f64(),
            pages,
            peak_rss_mib,
            cpu_secs,
            impact,
            latency,
        })
    }

    /// Two readings from each of `devices` simulated devices into `topic`, all acknowledged.
    async fn fill_fleet(&self, topic: &str, devices: u32) -> Result<u64, BenchError> {
        let settings = SimulatorSettings {
            num_devices: devices,
            interval: Duration::from_secs(1),
            device_types: crate::sensor::device::DeviceType::ALL.to_vec(),
            anomaly_probability: 0.01,
            seed: 7,
            fault_probability: 0.0,
            fault_kinds: crate::sensor::fault::FaultKind::ALL.to_vec(),
        };
        let mut fleet = Fleet::new(&settings, chrono::Utc::now());
        let run_id: Arc<str> = Arc::from(fleet.run_id());
        let shutdown = CancellationToken::new();
        let producer = Producer::connect(
            self.target().bootstrap.clone(),
            topic,
            &self.settings.producer,
            Arc::new(|_, _| {}),
            &shutdown,
        )
        .await
        .map_err(|e| BenchError::Cluster(format!("producer for {topic}: {e}")))?;
        let count = u64::from(devices) * 2;
        let mut records = RecordWriter::new(producer.partitions());
        for _ in 0..count {
            let reading = fleet
                .next_due(Duration::MAX)
                .expect("a fleet always has a next reading");
            let (partition, record) = records.record(&reading, &run_id);
            producer
                .send_to(partition, record)
                .await
                .map_err(|e| BenchError::Cluster(format!("sending to {topic}: {e}")))?;
        }
        let summary = producer.close().await;
        if summary.acked != count {
            return Err(BenchError::Lost(format!(
                "{} of {count} readings acknowledged by {topic}",
                summary.acked
            )));
        }
        Ok(count)
    }

    async fn impact_run(
        &mut self,
        readings: &Readings,
        with_console: bool,
        repeat: u32,
    ) -> Result<ImpactRun, BenchError> {
        let records = self.settings.console_impact_records;
        let topic = self.fresh_topic("console-impact").await?;
        let watching = Watching::start_if(with_console, self, &topic).await?;
        let outcome = self
            .produce_with_ours(
                &topic,
                records,
                &Payload::Readings(readings.path.clone()),
                &format!("{topic}-{repeat}"),
            )
            .await;
        let mut console_cpu_secs = None;
        if let Some(watching) = watching {
            console_cpu_secs = watching.cpu_so_far();
            // The run counts once the console has read everything written.
            let read_all = watching
                .console
                .wait_for(
                    "/metrics",
                    Duration::from_secs(120),
                    "reading every record",
                    |body| {
                        metric(body, "metrocloud_console_records_read_total")
                            .is_some_and(|n| n >= records as f64)
                    },
                )
                .await;
            watching.stop().await;
            read_all?;
        }
        self.drop_topic(&topic).await;
        let (_, _, outcome) = outcome?;
        let run = ImpactRun {
            with_console,
            records,
            records_per_sec: records as f64 / outcome.elapsed_secs,
            console_cpu_secs,
            seconds: outcome.elapsed_secs,
        };
        (self.say)(&format!(
            "producer {} console: {:.0} readings/s{}",
            if with_console { "with a" } else { "without a" },
            run.records_per_sec,
            console_cpu_secs
                .map(|c| format!(", console CPU {c:.2} s"))
                .unwrap_or_default()
        ));
        Ok(run)
    }
}

impl Bench<'_> {
    /// Adds each page's load time in headless Chromium, when there is one.
    async fn browser_times(&self, console: &ConsoleProcess, pages: &mut [PageTime]) {
        let browser = match Browser::start(&self.settings.work_dir, &self.settings.browser).await {
            Ok(browser) => browser,
            Err(why) => {
                (self.say)(&format!("console: no browser load times: {why}"));
                return;
            }
        };
        for page in pages
            .iter_mut()
            .filter(|p| !p.path.starts_with("/api") && p.path != "/metrics")
        {
            let url = format!("http://{}{}", console.addr, page.path);
            let mut times = Vec::new();
            for _ in 0..self.settings.console_page_requests.min(10) {
                match browser.load_ms(&url).await {
                    Ok(ms) => times.push(ms),
                    Err(why) => {
                        (self.say)(&format!("console: browser load of {}: {why}", page.path));
                        break;
                    }
                }
            }
            if times.is_empty() {
                continue;
            }
            times.sort_by(f64::total_cmp);
            page.browser_p50_ms = Some(percentile(&times, 0.5));
            page.browser_max_ms = times.last().copied();
            (self.say)(&format!(
                "console page {} in Chromium: load p50 {:.1} ms, max {:.1} ms",
                page.path,
                page.browser_p50_ms.unwrap_or_default(),
                page.browser_max_ms.unwrap_or_default()
            ));
        }
        browser.close().await;
    }
}

/// A console reading a topic while two pages are fetched every second.
struct Watching {
    console: ConsoleProcess,
    stop: CancellationToken,
    browser: tokio::task::JoinHandle<()>,
    /// The console's CPU time when the run began.
    cpu_at_start: Option<Duration>,
}

impl Watching {
    /// A console watching `topic` when `wanted`.
    async fn start_if(
        wanted: bool,
        bench: &Bench<'_>,
        topic: &str,
    ) -> Result<Option<Watching>, BenchError> {
        match wanted {
            true => Ok(Some(Watching::start(bench, topic).await?)),
            false => Ok(None),
        }
    }

    /// The console's CPU seconds since the run began.
    fn cpu_so_far(&self) -> Option<f64> {
        let now = self.console.cpu()?;
        Some(now.saturating_sub(self.cpu_at_start?).as_secs_f64())
    }

    async fn start(bench: &Bench<'_>, topic: &str) -> Result<Watching, BenchError> {
        let console = ConsoleProcess::start(bench, topic).await?;
        console
            .wait_for("/readyz", Duration::from_secs(60), "ready", |_| true)
            .await?;
        let stop = CancellationToken::new();
        let addr = console.addr;
        let browser = tokio::spawn({
            let stop = stop.clone();
            async move {
                while !stop.is_cancelled() {
                    let _ = http_get(addr, "/").await;
                    let _ = http_get(addr, "/fleet").await;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        });
        Ok(Watching {
            cpu_at_start: console.cpu(),
            console,
            stop,
            browser,
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.browser.await;
        self.console.stop().await;
    }
}

impl Bench<'_> {
    async fn latency_with(
        &mut self,
        readings: &Readings,
        with_console: bool,
    ) -> Result<LatencyImpactRun, BenchError> {
        let rate = self.settings.console_latency_rate;
        let topic = self.fresh_topic("console-e2e").await?;
        let watching = Watching::start_if(with_console, self, &topic).await?;
        let run = self.latency_on(&topic, rate, &readings.path).await;
        let mut console_cpu_secs = None;
        if let Some(watching) = watching {
            console_cpu_secs = watching.cpu_so_far();
            watching.stop().await;
        }
        let run = run?;
        (self.say)(&format!(
            "e2e at {rate}/s {} console: p50 {:.2} ms, p99 {:.2} ms",
            if with_console { "with a" } else { "without a" },
            run.p50_ms,
            run.p99_ms
        ));
        Ok(LatencyImpactRun {
            with_console,
            rate,
            achieved_rate: run.achieved_rate,
            p50_ms: run.p50_ms,
            p99_ms: run.p99_ms,
            sustained: run.sustained,
            console_cpu_secs,
        })
    }
}

#[cfg(test)]
mod tests;
