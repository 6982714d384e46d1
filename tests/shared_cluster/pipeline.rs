//! The pipeline end to end on a real cluster: simulated readings in, every one processed
//! once, every injected threshold anomaly alerted, every bad record dead-lettered.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use tokio_util::sync::CancellationToken;

use metrocloud::config::Config;
use metrocloud::kafka::producer::Delivery;
use metrocloud::pipeline::observer::ProcessingEvent;
use metrocloud::pipeline::process::ProcessingStats;
use metrocloud::pipeline::sources::simulator::run_ingest;
use metrocloud::pipeline::wiring;
use metrocloud::sensor::reading::AnomalyKind;
use metrocloud::sensor::rules::{Alert, AlertKind};

fn config(cluster: &common::TestCluster, purpose: &str, extra: &[(&str, &str)]) -> Config {
    let topic = common::unique_topic(purpose);
    let mut vars: Vec<(String, String)> = vec![
        ("KAFKA_BOOTSTRAP_SERVERS".into(), cluster.bootstrap_list()),
        ("KAFKA_TOPIC_NAME".into(), topic.clone()),
        ("KAFKA_ALERTS_TOPIC".into(), format!("{topic}-alerts")),
        ("KAFKA_CONSUMER_GROUP_ID".into(), format!("{topic}-group")),
        ("KAFKA_CONSUMER_COMMIT_INTERVAL_MS".into(), "500".into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_vars(vars).expect("valid test configuration")
}

type Events = Arc<Mutex<Vec<ProcessingEvent>>>;

struct Processing {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    events: Events,
    stats: Arc<ProcessingStats>,
}

async fn start_processing(config: &Config) -> Processing {
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    let stats = Arc::new(ProcessingStats::default());
    let stop = CancellationToken::new();
    let consumer = wiring::processing_consumer(
        config,
        &stats,
        Some(Arc::new(move |event: &ProcessingEvent| {
            sink.lock().unwrap().push(event.clone())
        })),
        &stop,
    )
    .await
    .expect("processing starts")
    .expect("not cancelled");
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let processor = consumer.run(token).await.expect("consumer ran");
        processor.close().await;
    });
    Processing {
        stop,
        task,
        events,
        stats,
    }
}

#[tokio::test]
async fn every_acked_reading_is_processed_once_and_every_threshold_anomaly_is_alerted() {
    let cluster = common::shared();
    let config = config(
        cluster,
        "e2e",
        &[
            ("IOT_NUM_DEVICES", "500"),
            ("IOT_DATA_INTERVAL_SEC", "0.05"),
            ("IOT_ANOMALY_PROBABILITY", "0.05"),
            ("IOT_SIMULATOR_SEED", "20261125"),
            // Every anomalous reading gets its own alert, so each can be matched.
            ("ALERT_COOLDOWN_SEC", "0"),
        ],
    );
    wiring::ensure_pipeline_topics(&config, &CancellationToken::new())
        .await
        .expect("topics");
    let processing = start_processing(&config).await;

    let acked: Arc<Mutex<HashSet<(String, u64)>>> = Arc::default();
    let sink = Arc::clone(&acked);
    let shutdown = CancellationToken::new();
    let producer = wiring::reading_producer(
        &config,
        move |id, delivery| {
            if matches!(delivery, Delivery::Acked { .. }) {
                sink.lock()
                    .unwrap()
                    .insert((id.device_id().to_string(), id.sequence));
            }
        },
        &shutdown,
    )
    .await
    .expect("producer");
    let total = 20_000;
    let summary = run_ingest(wiring::fleet(&config), producer, Some(total), shutdown)
        .await
        .expect("ingest");
    assert_eq!(summary.producer.acked, total);
    assert_eq!(summary.producer.failed, 0);

    common::eventually(
        Duration::from_secs(90),
        "every acked reading processed",
        || async {
            let events = processing.events.lock().unwrap();
            events
                .iter()
                .filter(|e| matches!(e, ProcessingEvent::Reading { .. }))
                .count() as u64
                >= total
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    processing.stop.cancel();
    processing.task.await.expect("processing task");

    let events = processing.events.lock().unwrap().clone();
    let mut processed: HashMap<(String, u64), usize> = HashMap::new();
    let mut anomalies: Vec<(String, u64, AnomalyKind)> = Vec::new();
    let mut alerts: Vec<Alert> = Vec::new();
    for event in &events {
        match event {
            ProcessingEvent::Reading { reading, .. } => {
                *processed
                    .entry((reading.device_id.clone(), reading.sequence))
                    .or_default() += 1;
                if let Some(kind) = reading.anomaly_kind {
                    anomalies.push((reading.device_id.clone(), reading.sequence, kind));
                }
            }
            ProcessingEvent::Alert(alert) => alerts.push(alert.clone()),
            ProcessingEvent::DeadLetter { reason, .. } => {
                panic!("a simulated reading was dead-lettered: {reason}")
            }
            ProcessingEvent::Duplicate { .. } => {}
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len() as u64, total);
    assert_eq!(processed.len(), acked.len());
    assert!(
        processed.values().all(|&n| n == 1),
        "a reading was processed twice"
    );
    assert!(
        acked.iter().all(|id| processed.contains_key(id)),
        "an acked reading was not processed"
    );

    let alerted: HashSet<(String, u64)> = alerts
        .iter()
        .filter(|a| {
            !matches!(
                a.kind,
                AlertKind::LowBattery | AlertKind::DeviceSilent | AlertKind::SensorFault
            )
        })
        .map(|a| (a.device_id.clone(), a.sequence))
        .collect();
    let threshold_anomalies: Vec<_> = anomalies
        .iter()
        .filter(|(_, _, k)| *k != AnomalyKind::MotionDetected)
        .collect();
    assert!(
        threshold_anomalies.len() > 500,
        "{} anomalies",
        threshold_anomalies.len()
    );
    for (device, sequence, kind) in &threshold_anomalies {
        assert!(
            alerted.contains(&(device.clone(), *sequence)),
            "no alert for {kind:?} of {device} #{sequence}"
        );
    }
    let truly_anomalous: HashSet<(String, u64)> =
        anomalies.iter().map(|(d, s, _)| (d.clone(), *s)).collect();
    let false_alarms = alerted.difference(&truly_anomalous).count();
    assert_eq!(false_alarms, 0, "alerts on normal readings");

    // The alert topic holds every alert sent.
    let stored = common::read_all(&cluster.bootstrap, &config.alerts_topic, 6).await;
    let stored_ids: HashSet<String> = stored
        .iter()
        .map(|(_, r)| {
            serde_json::from_slice::<Alert>(r.record.value.as_deref().unwrap())
                .expect("alert JSON")
                .alert_id
        })
        .collect();
    assert_eq!(stored.len(), alerts.len());
    assert!(alerts.iter().all(|a| stored_ids.contains(&a.alert_id)));
}

#[tokio::test]
async fn the_fault_detector_finds_injected_sensor_faults_and_its_quality_is_counted_per_kind() {
    let cluster = common::shared();
    let config = config(
        cluster,
        "faults",
        &[
            ("IOT_NUM_DEVICES", "100"),
            ("IOT_DEVICE_TYPES", "temperature,humidity,pressure,light"),
            ("IOT_DATA_INTERVAL_SEC", "0.02"),
            ("IOT_ANOMALY_PROBABILITY", "0"),
            // About 30 episodes of each kind in 1,000 readings a device,
            // few enough that one rarely follows another closely (an alert
            // is raised once per episode of the detector's, and a device's
            // first 30 readings are its warm-up).
            ("IOT_FAULT_PROBABILITY", "0.0015"),
            // Silences here last well under a second: the consumer looks
            // for them once a second.
            (
                "IOT_FAULT_KINDS",
                "spike,stuck,drift,noise_burst,level_shift",
            ),
            ("IOT_SIMULATOR_SEED", "20261203"),
        ],
    );
    wiring::ensure_pipeline_topics(&config, &CancellationToken::new())
        .await
        .expect("topics");
    let processing = start_processing(&config).await;

    let shutdown = CancellationToken::new();
    let producer = wiring::reading_producer(&config, |_, _| {}, &shutdown)
        .await
        .expect("producer");
    let total = 100_000;
    let summary = run_ingest(wiring::fleet(&config), producer, Some(total), shutdown)
        .await
        .expect("ingest");
    assert_eq!(summary.producer.acked, total);
    let stats = Arc::clone(&processing.stats);
    common::eventually(
        Duration::from_secs(90),
        "every reading processed",
        || async { stats.readings.load(std::sync::atomic::Ordering::Relaxed) >= total },
    )
    .await;
    // A tick passes the judge's tally to the stats.
    tokio::time::sleep(Duration::from_secs(2)).await;
    processing.stop.cancel();
    processing.task.await.expect("processing task");

    // The episodes in the readings, counted here from their labels.
    let events = processing.events.lock().unwrap().clone();
    let mut episodes: BTreeMap<String, HashSet<(String, String)>> = BTreeMap::new();
    let mut fault_alerts = 0;
    for event in &events {
        match event {
            ProcessingEvent::Reading { reading, .. } => {
                if let Some(truth) = &reading.fault {
                    episodes
                        .entry(truth.kind.to_string())
                        .or_default()
                        .insert((reading.device_id.clone(), truth.started_at.to_rfc3339()));
                }
            }
            ProcessingEvent::Alert(alert) if alert.kind == AlertKind::SensorFault => {
                assert!(alert.fault.is_some(), "{alert:?}");
                fault_alerts += 1;
            }
            _ => {}
        }
    }
    let quality = stats.fault_quality();
    let lines: BTreeMap<String, _> = quality
        .kinds()
        .iter()
        .map(|k| (k.kind.to_string(), k))
        .collect();
    for kind in ["spike", "stuck", "drift", "noise_burst", "level_shift"] {
        let line = lines[kind];
        let injected = episodes.get(kind).map_or(0, HashSet::len) as u64;
        assert_eq!(line.episodes, injected, "{kind}: episodes counted");
        assert!(injected >= 15, "{kind}: only {injected} episodes");
        // A floor for a sample of a few dozen episodes (spikes of 6 σ are
        // near the detector's limit of 5): over 40 seeds of this fleet
        // replayed offline, recall per kind was 0.76 at the lowest, 0.88
        // to 0.97 on average. The goals are `metrocloud bench detect`'s.
        assert!(
            line.recall() >= 0.7,
            "{kind}: recall {:.3}: {line:?}",
            line.recall()
        );
    }
    assert_eq!(quality.alerts(), fault_alerts);
    assert!(
        quality.precision() >= 0.8,
        "precision {:.3}: {quality:?}",
        quality.precision()
    );
    assert!(
        quality.median_delay().is_some_and(|d| d <= 5),
        "{quality:?}"
    );
}

#[tokio::test]
async fn malformed_records_land_in_the_dead_letter_topic_with_their_reason_and_good_ones_are_processed()
 {
    let cluster = common::shared();
    let config = config(cluster, "dlq", &[]);
    wiring::ensure_pipeline_topics(&config, &CancellationToken::new())
        .await
        .expect("topics");
    let good = |device: &str, sequence: u64| {
        format!(
            r#"{{"schema_version":1,"device_id":"{device}","device_type":"humidity","run_id":"manual","sequence":{sequence},"timestamp":"2026-11-25T12:00:00.000Z","value":41.5,"unit":"%","location":{{"site":"site-01","zone":"zone-01","latitude":52.4,"longitude":13.3}},"battery_level":77.0,"signal_strength":-61,"firmware_version":"2.0.1","status":"ok","is_anomaly":false,"anomaly_kind":null}}"#
        )
        .into_bytes()
    };
    let device = "humidity-000777";
    let huge = {
        let mut value = good(device, 99);
        value.truncate(value.len() - 1);
        value.extend(format!(r#","padding":"{}"}}"#, "x".repeat(200_000)).into_bytes());
        value
    };
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("good", Some(good(device, 0))),
        ("not_json", Some(b"temperature=21.5;humidity=40".to_vec())),
        (
            "schema",
            Some(
                String::from_utf8(good(device, 1))
                    .unwrap()
                    .replace("41.5", "\"wet\"")
                    .into_bytes(),
            ),
        ),
        (
            "out_of_range",
            Some(
                String::from_utf8(good(device, 2))
                    .unwrap()
                    .replace("41.5", "141.5")
                    .into_bytes(),
            ),
        ),
        (
            "unknown_device_type",
            Some(
                String::from_utf8(good(device, 3))
                    .unwrap()
                    .replace("\"humidity\"", "\"thermostat\"")
                    .into_bytes(),
            ),
        ),
        ("good", Some(good(device, 4))),
        ("empty", Some(Vec::new())),
        ("empty", None),
        ("not_utf8", Some(vec![0xc3, 0x28, 0xff, 0xfe])),
        ("too_large", Some(huge)),
        ("good", Some(good(device, 5))),
    ];
    let client = ClientBuilder::new(cluster.bootstrap.clone())
        .build()
        .await
        .expect("client");
    let partition = metrocloud::kafka::partitioner::partition_for_key(device.as_bytes(), 6);
    let writer = client
        .partition_client(config.topic.clone(), partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let mut offsets = Vec::new();
    for (label, value) in &cases {
        let record = Record {
            key: Some(device.as_bytes().to_vec()),
            value: value.clone(),
            headers: BTreeMap::from([("case".to_string(), label.as_bytes().to_vec())]),
            timestamp: chrono::Utc::now(),
        };
        offsets.push(
            writer
                .produce(vec![record], Compression::NoCompression)
                .await
                .expect("raw produce")[0],
        );
    }

    let processing = start_processing(&config).await;
    common::eventually(
        Duration::from_secs(60),
        "all raw records handled",
        || async { processing.events.lock().unwrap().len() >= cases.len() },
    )
    .await;
    processing.stop.cancel();
    processing.task.await.expect("processing task");

    let events = processing.events.lock().unwrap().clone();
    let readings: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            ProcessingEvent::Reading { reading, .. } => Some(reading.sequence),
            _ => None,
        })
        .collect();
    assert_eq!(
        readings,
        vec![0, 4, 5],
        "good records around the bad ones are processed"
    );

    let dead = common::read_all(&cluster.bootstrap, &config.dlq_topic, 6).await;
    let expected: Vec<(&str, i64)> = cases
        .iter()
        .zip(&offsets)
        .filter(|((label, _), _)| *label != "good")
        .map(|((label, _), offset)| (*label, *offset))
        .collect();
    assert_eq!(dead.len(), expected.len());
    let header = |record: &Record, name: &str| {
        String::from_utf8(record.headers.get(name).cloned().unwrap_or_default()).unwrap()
    };
    for ((_, stored), (label, offset)) in dead.iter().zip(&expected) {
        let record = &stored.record;
        assert_eq!(header(record, "dlq.reason"), *label);
        assert_eq!(header(record, "case"), *label, "original headers are kept");
        assert_eq!(header(record, "dlq.source.topic"), config.topic);
        assert_eq!(
            header(record, "dlq.source.partition"),
            partition.to_string()
        );
        assert_eq!(header(record, "dlq.source.offset"), offset.to_string());
        assert!(!header(record, "dlq.detail").is_empty());
        assert_eq!(record.key.as_deref(), Some(device.as_bytes()));
        let original = cases
            .iter()
            .zip(&offsets)
            .find(|(_, o)| *o == offset)
            .unwrap()
            .0
            .1
            .clone();
        assert_eq!(
            record.value.clone().unwrap_or_default(),
            original.unwrap_or_default(),
            "original bytes kept"
        );
    }
}

#[tokio::test]
async fn a_crashed_consumers_successor_does_not_send_its_alerts_again() {
    let cluster = common::shared();
    let config = config(
        cluster,
        "takeover",
        &[
            ("IOT_NUM_DEVICES", "200"),
            ("IOT_DATA_INTERVAL_SEC", "0.1"),
            ("IOT_ANOMALY_PROBABILITY", "0.2"),
            ("ALERT_COOLDOWN_SEC", "0"),
        ],
    );
    wiring::ensure_pipeline_topics(&config, &CancellationToken::new())
        .await
        .expect("topics");
    let producing = CancellationToken::new();
    let producer = wiring::reading_producer(&config, |_, _| {}, &producing)
        .await
        .expect("producer");
    let ingest = tokio::spawn(run_ingest(
        wiring::fleet(&config),
        producer,
        None,
        producing.clone(),
    ));

    let first = start_processing(&config).await;
    common::eventually(
        Duration::from_secs(60),
        "the first consumer processed 3,000 readings",
        || async {
            first
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, ProcessingEvent::Reading { .. }))
                .count()
                >= 3_000
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // A crash: no last commit, no goodbye, unacknowledged alerts gone with it.
    first.task.abort();
    let _ = first.task.await;

    let second = start_processing(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    producing.cancel();
    let summary = ingest.await.expect("ingest task").expect("ingest");
    let acked = summary.producer.acked;
    let readings = |events: &Events| -> HashSet<(String, u64)> {
        events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ProcessingEvent::Reading { reading, .. } => {
                    Some((reading.device_id.clone(), reading.sequence))
                }
                _ => None,
            })
            .collect()
    };
    // The successor gets the partitions once the crashed member's session (6 s on test clusters) expires.
    common::eventually(
        Duration::from_secs(120),
        "every acked reading processed by one or the other",
        || async {
            readings(&first.events)
                .union(&readings(&second.events))
                .count() as u64
                == acked
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    second.stop.cancel();
    second.task.await.expect("second consumer");

    let stored = common::read_all(&cluster.bootstrap, &config.alerts_topic, 6).await;
    let mut per_reading: HashMap<(String, String, u64, AlertKind), usize> = HashMap::new();
    for (_, record) in &stored {
        let alert: Alert =
            serde_json::from_slice(record.record.value.as_deref().unwrap()).expect("alert JSON");
        if alert.kind != AlertKind::DeviceSilent {
            *per_reading
                .entry((alert.device_id, alert.run_id, alert.sequence, alert.kind))
                .or_default() += 1;
        }
    }
    let repeated: Vec<_> = per_reading.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "alerts sent twice: {repeated:?}");
    // And no alert was lost with the crashed member: every anomaly has its alert.
    let mut anomalies = HashSet::new();
    for events in [&first.events, &second.events] {
        for event in events.lock().unwrap().iter() {
            if let ProcessingEvent::Reading { reading, .. } = event
                && reading.is_anomaly
            {
                anomalies.insert((
                    reading.device_id.clone(),
                    reading.run_id.clone(),
                    reading.sequence,
                ));
            }
        }
    }
    assert!(anomalies.len() > 500, "{}", anomalies.len());
    let alerted: HashSet<(String, String, u64)> = per_reading
        .keys()
        .map(|(d, r, s, _)| (d.clone(), r.clone(), *s))
        .collect();
    for anomaly in &anomalies {
        assert!(alerted.contains(anomaly), "no alert for {anomaly:?}");
    }
}

/// `metrocloud run`, stopped with Ctrl-C, reconciles the producer's
/// acknowledgements with what its consumer processed, per device and sequence.
#[test]
fn metrocloud_run_stopped_with_ctrl_c_reconciles_every_acknowledged_reading() {
    use std::process::Command;

    let cluster = common::shared();
    let topic = common::unique_topic("run");
    let mut command = Command::new(env!("CARGO_BIN_EXE_metrocloud"));
    command
        .arg("run")
        .env_remove("RUST_LOG")
        .env("KAFKA_BOOTSTRAP_SERVERS", cluster.bootstrap_list())
        .env("KAFKA_TOPIC_NAME", &topic)
        .env("KAFKA_ALERTS_TOPIC", format!("{topic}-alerts"))
        .env("KAFKA_CONSUMER_GROUP_ID", format!("{topic}-group"))
        .env("IOT_NUM_DEVICES", "100")
        .env("IOT_DATA_INTERVAL_SEC", "0.2")
        .env("LOG_LEVEL", "WARN")
        // Its console on a free port, so that nothing else on 8080 stands in the way.
        .env("METROCLOUD_CONSOLE_ADDR", "127.0.0.1:0");
    // The first status line comes after 5 s of running.
    let is_status = |line: &str| line.contains("readings/s |");
    let run = common::interrupt::run_then_interrupt(command, is_status);
    let (seen, rest, stderr) = (&run.before, &run.after, &run.stderr);
    assert!(
        run.reached(is_status),
        "no status line within 120 s: {seen:#?}\n{stderr}"
    );
    let summary = rest
        .iter()
        .find(|line| line.starts_with("pipeline summary:"))
        .unwrap_or_else(|| panic!("no pipeline summary in {rest:#?}"));
    assert!(run.success, "output {rest:#?}\n{stderr}");
    let count = |name: &str| -> u64 {
        let start = summary
            .find(&format!(" {name} "))
            .unwrap_or_else(|| panic!("{name} in {summary}"))
            + name.len()
            + 2;
        summary[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {summary}"))
    };
    let acked = count("acked");
    assert!(acked >= 1_000, "{summary}");
    assert_eq!(count("failed"), 0, "{summary}");
    assert_eq!(count("processed"), acked, "{summary}");
    assert_eq!(count("lost"), 0, "{summary}");
    // The aggregation stage ran beside it and says so, while running and at the end.
    assert!(
        seen.last().unwrap().contains("| minute aggregates "),
        "{seen:#?}"
    );
    assert!(
        rest.iter()
            .any(|line| line.starts_with("aggregation summary:")
                && line.ends_with(", 0 aggregates not delivered")),
        "{rest:#?}"
    );
}
