//! The device gateway's scenarios: devices publish over MQTT at QoS 1 to a
//! `metrocloud gateway` process while Kafka goes away (`gateway-offline`),
//! the gateway is SIGKILLed and started again (`gateway-kill`), or Kafka goes
//! away with a buffer too small to hold the outage (`gateway-full`).
//!
//! The ground truth is what each device was told: every reading whose PUBACK
//! it received must end up in the sensor topic, each device's readings in the
//! order it sent them (the first time each appears: a replay after a failed
//! delivery or a kill may repeat some, which consumers remove by device and
//! sequence). The topic itself is read to judge, once the gateway's buffer
//! is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::devices::Devices;
use super::*;
use crate::config::SETTINGS;
use crate::gateway::forward::WINDOW;

/// The disk buffer's bound in `gateway-full`: a few thousand readings.
const SMALL_BUFFER_MB: u32 = 1;

/// The gateway process of a scenario.
struct GatewayProcess {
    child: Child,
    mqtt: SocketAddr,
    http: SocketAddr,
}

impl Scenario {
    /// Whether the scenario's load is devices through the gateway.
    pub fn is_gateway(self) -> bool {
        matches!(
            self,
            Scenario::GatewayOffline | Scenario::GatewayKill | Scenario::GatewayFull
        )
    }
}

/// Runs a gateway scenario on `cluster` (not yet started).
pub(super) async fn execute(
    scenario: Scenario,
    settings: &ChaosSettings,
    cluster: &LocalCluster,
    ready: Duration,
    dir: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<ScenarioReport, ChaosError> {
    let mut checks = Vec::new();
    let mut check = |passed: bool, what: String| {
        say(&format!(
            "{} {what}",
            if passed { "ok:" } else { "FAILED:" }
        ));
        checks.push(Check { what, passed });
    };
    cluster.start(ready).await?;
    let config = settings.pipeline_config(scenario, cluster)?;
    if cluster.is_secure() {
        cluster
            .grant(&config.pipeline_names(), &config.pipeline_topics())
            .await?;
    }
    std::fs::create_dir_all(dir).map_err(|e| ChaosError::io(dir, e))?;
    let access = cluster.access(
        crate::cluster::Principal::Gateway,
        crate::kafka::security::TLS_BUILT_IN,
    );
    let (mqtt, http) = (free_address(dir)?, free_address(dir)?);
    let start =
        |log: &str| start_gateway(settings, &access, scenario, mqtt, http, dir, &dir.join(log));
    let mut gateway = start("gateway.log")?;
    let devices = Devices::start(gateway.mqtt, settings.devices, settings.rate);
    say(&format!(
        "gateway on {mqtt}; {} devices publishing {} readings/s at QoS 1",
        settings.devices, settings.rate
    ));
    let flowing = wait_for(Duration::from_secs(120), || async {
        forwarded(gateway.http)
            .await
            .is_some_and(|f| f >= u64::from(settings.rate))
    })
    .await;
    check(
        flowing,
        "readings flow through the gateway into Kafka".to_string(),
    );
    tokio::time::sleep(settings.warmup).await;

    let healed_at;
    match scenario {
        Scenario::GatewayKill => {
            gateway
                .child
                .kill()
                .await
                .map_err(|e| ChaosError::io(&settings.binary, e))?;
            devices.set_fault(true);
            say("SIGKILL the gateway");
            tokio::time::sleep(Duration::from_secs(2)).await;
            gateway = start("gateway-restarted.log")?;
            devices.set_fault(false);
            healed_at = Instant::now();
            say("gateway started again on the same buffer");
        }
        _ => {
            say("stopping every Kafka node (SIGTERM)");
            cluster.down(false).await?;
            devices.set_fault(true);
            tokio::time::sleep(settings.fault).await;
            let during = devices.log().acked_during_fault;
            match scenario {
                Scenario::GatewayFull => {
                    let pushed = metric(gateway.http, "metrocloud_gateway_pushed_back_total")
                        .await
                        .unwrap_or(0);
                    check(
                        pushed > 0,
                        format!(
                            "devices were pushed back once the buffer was full (the gateway refused {pushed} appends; no PUBACK until there was room)"
                        ),
                    );
                }
                _ => check(
                    during > 0,
                    format!("devices were acknowledged while Kafka was away ({during} readings)"),
                ),
            }
            let buffered = metric(gateway.http, "metrocloud_gateway_buffered_records")
                .await
                .unwrap_or(0);
            say(&format!(
                "{buffered} records in the gateway's buffer; starting Kafka again"
            ));
            cluster.start(ready).await?;
            devices.set_fault(false);
            healed_at = Instant::now();
        }
    }
    // Recovered once less than a second of readings waits in the buffer.
    let caught_up = || async {
        metric(gateway.http, "metrocloud_gateway_buffered_records")
            .await
            .is_some_and(|n| n < u64::from(settings.rate))
    };
    let mut recovery = None;
    let cooled = Instant::now() + settings.cooldown;
    while Instant::now() < cooled {
        if recovery.is_none() && caught_up().await {
            recovery = Some(healed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = devices.stop(Duration::from_secs(30)).await;
    say(&format!(
        "devices stopped: {} readings acknowledged of {} sent",
        log.acked.len(),
        log.sent
    ));
    let drained = wait_for(settings.settle + Duration::from_secs(60), || async {
        metric(gateway.http, "metrocloud_gateway_buffered_records").await == Some(0)
    })
    .await;
    let recovery = recovery.or_else(|| drained.then(|| healed_at.elapsed()));
    check(
        drained,
        "the gateway's buffer emptied into Kafka".to_string(),
    );
    let resent = metric(gateway.http, "metrocloud_gateway_records_resent_total")
        .await
        .unwrap_or(0);
    stop(&mut gateway).await;

    let in_topic = read_topic(cluster, &config.topic, config.partitions).await?;
    let mut first_seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (device, sequence) in &in_topic {
        if seen.insert((device.as_str(), *sequence)) {
            first_seen.entry(device).or_default().push(*sequence);
        }
    }
    let in_order = first_seen
        .values()
        .all(|s| s.windows(2).all(|w| w[0] < w[1]));
    check(
        in_order,
        "each device's readings are in the topic in the order it sent them".to_string(),
    );
    let lost = log
        .acked
        .iter()
        .filter(|(device, sequence)| !seen.contains(&(device.as_str(), *sequence)))
        .count() as u64;
    let duplicates = in_topic.len() as u64 - seen.len() as u64;
    Ok(ScenarioReport {
        scenario,
        sent: log.sent,
        acked: log.acked.len() as u64,
        failed: log.sent - log.acked.len() as u64,
        consumed: seen.len() as u64,
        lost,
        missing_from_topic: lost,
        duplicates_removed: duplicates,
        reprocessed: 0,
        // Repeats a replay explains: what was in flight to Kafka when a
        // delivery failed or the gateway died, and what it counted as resent.
        duplicate_bound: WINDOW as u64 + resent,
        longest_stall: log.longest_stall,
        recovery,
        checks,
        elapsed: Duration::ZERO,
        dir: dir.to_path_buf(),
    })
}

fn free_address(dir: &Path) -> Result<SocketAddr, ChaosError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| ChaosError::io(dir, e))
}

fn start_gateway(
    settings: &ChaosSettings,
    access: &[(&'static str, String)],
    scenario: Scenario,
    mqtt: SocketAddr,
    http: SocketAddr,
    dir: &Path,
    log: &Path,
) -> Result<GatewayProcess, ChaosError> {
    let mut command = Command::new(&settings.binary);
    for setting in SETTINGS {
        command.env_remove(setting.name);
    }
    command
        .arg("gateway")
        .envs(access.iter().map(|(k, v)| (*k, v.as_str())))
        .env("METROCLOUD_GATEWAY_MQTT_ADDR", mqtt.to_string())
        .env("METROCLOUD_GATEWAY_HTTP_ADDR", http.to_string())
        .env("METROCLOUD_GATEWAY_SPOOL_DIR", dir.join("spool"))
        .env(
            "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS",
            settings.request_timeout.as_millis().to_string(),
        )
        .env("LOG_LEVEL", "INFO")
        .env_remove("RUST_LOG");
    if scenario == Scenario::GatewayFull {
        command.env(
            "METROCLOUD_GATEWAY_SPOOL_MAX_MB",
            SMALL_BUFFER_MB.to_string(),
        );
    }
    let file = std::fs::File::create(log).map_err(|e| ChaosError::io(log, e))?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| ChaosError::io(&settings.binary, e))?;
    Ok(GatewayProcess { child, mqtt, http })
}

/// Ctrl-C, then a kill after 30 s.
async fn stop(gateway: &mut GatewayProcess) {
    if let Some(pid) = gateway.child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    if tokio::time::timeout(Duration::from_secs(30), gateway.child.wait())
        .await
        .is_err()
    {
        let _ = gateway.child.kill().await;
    }
}

/// A gauge or counter from the gateway's `/metrics`; `None` while it does not answer.
async fn metric(http: SocketAddr, name: &str) -> Option<u64> {
    let (status, body) = crate::bench::http::request(http, "GET", "/metrics", None)
        .await
        .ok()?;
    if status != 200 {
        return None;
    }
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
}

async fn forwarded(http: SocketAddr) -> Option<u64> {
    metric(http, "metrocloud_gateway_readings_forwarded_total").await
}

/// Polls `condition` twice a second until it holds or `limit` passes.
async fn wait_for<F, Fut>(limit: Duration, condition: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (device, sequence) of every reading in `topic`, partition by partition in offset order.
async fn read_topic(
    cluster: &LocalCluster,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(String, u64)>, ChaosError> {
    let brokers = cluster.brokers_as(crate::cluster::Principal::Admin)?;
    let client = crate::kafka::client::builder(&brokers)
        .build()
        .await
        .map_err(|e| ChaosError::Kafka(e.to_string()))?;
    let kafka = |e: rskafka::client::error::Error| ChaosError::Kafka(e.to_string());
    let mut readings = Vec::new();
    for partition in 0..partitions {
        let partition_client = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .map_err(kafka)?;
        let end = partition_client
            .get_offset(OffsetAt::Latest)
            .await
            .map_err(kafka)?;
        let mut offset = partition_client
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(kafka)?;
        while offset < end {
            let (records, _) = partition_client
                .fetch_records(offset, 1..4_000_000, 1_000)
                .await
                .map_err(kafka)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for record in records {
                let value = record.record.value.unwrap_or_default();
                let reading = crate::sensor::reading::ReadingView::decode(&value).map_err(|e| {
                    ChaosError::Log(format!("a record of {topic} is not a reading: {e}"))
                })?;
                readings.push((reading.device_id.into_owned(), reading.sequence));
            }
        }
    }
    Ok(readings)
}
