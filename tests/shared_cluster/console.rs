//! The console's JSON API, through its router, says what Kafka's own tools say:
//! brokers and the active controller, leaders, replicas and in-sync replicas,
//! end offsets, and a consumer group's committed offsets and lag. Browsing
//! returns records newest first, and the token guards every request.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use metrocloud::config::Config;
use metrocloud::console::{self, ConsoleSettings, ConsoleState, PipelineHandles};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn config(bootstrap: &str) -> Config {
    Config::from_vars([("KAFKA_BOOTSTRAP_SERVERS", bootstrap)]).expect("valid configuration")
}

/// GET `path` through the router; the status and the body as JSON (or text).
pub(crate) async fn get(state: &Arc<ConsoleState>, path: &str) -> (StatusCode, Value) {
    let response = console::router(Arc::clone(state))
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .expect("router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// Writes `count_for(p)` records to each partition p: key `k-p-i`, a small JSON value.
async fn fill(bootstrap: &[String], topic: &str, count_for: impl Fn(i32) -> usize) {
    let client = ClientBuilder::new(bootstrap.to_vec())
        .build()
        .await
        .expect("rskafka client");
    for partition in 0..6 {
        let records: Vec<Record> = (0..count_for(partition))
            .map(|i| Record {
                key: Some(format!("k-{partition}-{i}").into_bytes()),
                value: Some(format!("{{\"partition\":{partition},\"i\":{i}}}").into_bytes()),
                headers: BTreeMap::from([("origin".to_string(), b"test".to_vec())]),
                timestamp: chrono::Utc::now(),
            })
            .collect();
        let partition_client = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        partition_client
            .produce(records, Compression::NoCompression)
            .await
            .expect("records written");
    }
}

fn text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn brokers_partitions_and_offsets_are_what_kafkas_tools_report() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "console-topics").await;
    fill(&cluster.bootstrap, &topic, |p| 10 + p as usize).await;
    let state = ConsoleState::new(
        &config(&cluster.bootstrap_list()),
        None,
        PipelineHandles::default(),
        CancellationToken::new(),
    );

    let (status, brokers) = get(&state, "/api/v1/brokers").await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<(i64, bool)> = brokers["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_i64().unwrap(), b["up"].as_bool().unwrap()))
        .collect();
    assert_eq!(listed, vec![(1, true), (2, true), (3, true)]);
    let quorum = text(&cluster.kafka_tool("kafka-metadata-quorum", &["describe", "--status"]));
    let leader: i64 = quorum
        .lines()
        .find_map(|l| l.strip_prefix("LeaderId:"))
        .expect("LeaderId line")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(brokers["active_controller"].as_i64(), Some(leader));

    let (status, view) = get(&state, &format!("/api/v1/topics/{topic}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["replication_factor"], 3);
    assert_eq!(view["configs"]["min.insync.replicas"], "2");
    assert_eq!(view["messages"], (0..6).map(|p| 10 + p).sum::<i64>());
    let describe = text(&cluster.kafka_tool("kafka-topics", &["--describe", "--topic", &topic]));
    let partitions = view["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 6);
    for line in describe.lines().filter(|l| l.contains("Partition: ")) {
        let field = |name: &str| {
            line.split('\t')
                .find_map(|f| f.trim().strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("{name} in {line}"))
                .to_string()
        };
        let number: usize = field("Partition").parse().unwrap();
        let ours = &partitions[number];
        let list = |v: &Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(ours["leader"].to_string(), field("Leader"), "{line}");
        assert_eq!(list(&ours["replicas"]), field("Replicas"), "{line}");
        assert_eq!(list(&ours["isr"]), field("Isr"), "{line}");
        assert_eq!(ours["under_replicated"], false);
    }
    let offsets = text(&cluster.kafka_tool("kafka-get-offsets", &["--topic", &topic]));
    for line in offsets.lines() {
        let parts: Vec<&str> = line.trim().rsplitn(3, ':').collect();
        let (end, partition): (i64, usize) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
        assert_eq!(
            partitions[partition]["latest"].as_i64(),
            Some(end),
            "{line}"
        );
        assert_eq!(partitions[partition]["earliest"].as_i64(), Some(0));
    }

    let (_, metrics) = get(&state, "/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("\nmetrocloud_kafka_brokers_up 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nmetrocloud_kafka_partitions_offline 0\n"));
    let (status, _) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&state, "/api/v1/topics/no-such-topic").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_groups_committed_offsets_and_lag_are_what_kafka_consumer_groups_reports() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "console-group").await;
    fill(&cluster.bootstrap, &topic, |_| 50).await;
    let group = format!("{topic}-readers");
    // Kafka's own consumer (the classic protocol) prints 120 of 300 records and commits
    // its position, which can run ahead of what it printed: it commits what its polls
    // returned, so the lag is compared with what Kafka's tool reports, not with 180.
    cluster.kafka_tool(
        "kafka-console-consumer",
        &[
            "--topic",
            &topic,
            "--group",
            &group,
            "--from-beginning",
            "--max-messages",
            "120",
            "--timeout-ms",
            "30000",
        ],
    );
    let state = ConsoleState::new(
        &config(&cluster.bootstrap_list()),
        None,
        PipelineHandles::default(),
        CancellationToken::new(),
    );
    let (status, view) = get(&state, &format!("/api/v1/groups/{group}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["kind"], "classic");
    assert_eq!(view["state"], "Empty");

    let described =
        text(&cluster.kafka_tool("kafka-consumer-groups", &["--describe", "--group", &group]));
    let ours = view["partitions"].as_array().unwrap();
    let mut compared = 0;
    let mut kafkas_lag = 0;
    let mut kafkas_committed = 0;
    for line in described.lines().filter(|l| l.contains(&topic)) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
        let partition: i64 = columns[2].parse().unwrap();
        let row = ours
            .iter()
            .find(|p| p["partition"].as_i64() == Some(partition))
            .unwrap_or_else(|| panic!("partition {partition} missing from {view}"));
        assert_eq!(row["committed"].to_string(), columns[3], "{line}");
        assert_eq!(row["end"].to_string(), columns[4], "{line}");
        assert_eq!(row["lag"].to_string(), columns[5], "{line}");
        kafkas_committed += columns[3].parse::<i64>().unwrap();
        kafkas_lag += columns[5].parse::<i64>().unwrap();
        if row["lag"].as_i64().unwrap() > 0 {
            assert!(row["time_behind_ms"].as_i64().unwrap() >= 0, "{row}");
        }
        compared += 1;
    }
    assert!(compared > 0, "no partition compared: {described}");
    let total: i64 = ours.iter().map(|p| p["lag"].as_i64().unwrap()).sum();
    assert_eq!(total, kafkas_lag, "{described}");
    assert_eq!(kafkas_committed + kafkas_lag, 300, "{described}");
    assert!(
        kafkas_committed >= 120,
        "fewer committed than printed: {described}"
    );
    assert_eq!(view["total_lag"], total);
}

#[tokio::test]
async fn browsing_shows_the_newest_records_first_and_filters_them() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "console-browse").await;
    fill(&cluster.bootstrap, &topic, |_| 30).await;
    let state = ConsoleState::new(
        &config(&cluster.bootstrap_list()),
        None,
        PipelineHandles::default(),
        CancellationToken::new(),
    );

    let path = format!("/api/v1/topics/{topic}/messages?partition=2&limit=5");
    let (status, view) = get(&state, &path).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let offsets: Vec<i64> = view["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, vec![29, 28, 27, 26, 25]);
    let first = &view["records"][0];
    assert_eq!(first["key"], "k-2-29");
    assert_eq!(first["headers"]["origin"], "test");
    assert!(first["pretty"].as_str().unwrap().contains("\n  \"i\": 29"));

    let path = format!("/api/v1/topics/{topic}/messages?partition=2&offset=10&limit=3");
    let (_, view) = get(&state, &path).await;
    let keys: Vec<&str> = view["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["k-2-10", "k-2-9", "k-2-8"]);

    let path = format!("/api/v1/topics/{topic}/messages?filter=k-4-1&limit=50");
    let (_, view) = get(&state, &path).await;
    let mut keys: Vec<String> = view["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    let mut expected: Vec<String> = std::iter::once("k-4-1".to_string())
        .chain((10..20).map(|i| format!("k-4-{i}")))
        .collect();
    expected.sort();
    assert_eq!(keys, expected);

    let (status, view) = get(&state, &format!("/api/v1/topics/{topic}/messages?offset=3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(view["error"], "an offset needs a partition");
    let (status, _) = get(
        &state,
        &format!("/api/v1/topics/{topic}/messages?partition=9"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// One raw HTTP/1.1 GET; the status code.
async fn status_of(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", addr.port()))
        .await
        .expect("console accepts");
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: console\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("answer within 30 s")
        .unwrap();
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head}"))
}

#[tokio::test]
async fn on_a_non_loopback_address_every_request_without_the_token_gets_401() {
    let everywhere: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
    let refused = ConsoleSettings::new(everywhere, None).unwrap_err();
    assert!(
        refused.to_string().contains("METROCLOUD_CONSOLE_TOKEN"),
        "{refused}"
    );

    let settings = ConsoleSettings::new(everywhere, Some("s3cret".to_string())).unwrap();
    let shutdown = CancellationToken::new();
    // No broker needed: the token is checked before anything is asked of Kafka.
    let running = console::start(
        &config("127.0.0.1:1"),
        settings,
        PipelineHandles::default(),
        shutdown.clone(),
    )
    .await
    .expect("console listens");
    for path in [
        "/",
        "/api/v1/overview",
        "/metrics",
        "/healthz",
        "/api/v1/topics/x/tail",
    ] {
        assert_eq!(status_of(running.addr, path, None).await, 401, "{path}");
        assert_eq!(
            status_of(running.addr, path, Some("wrong")).await,
            401,
            "{path}"
        );
    }
    assert_eq!(
        status_of(running.addr, "/healthz", Some("s3cret")).await,
        200
    );
    assert_eq!(
        status_of(running.addr, "/readyz", Some("s3cret")).await,
        503
    );
    shutdown.cancel();
    running.task.await.expect("console stops");
}

#[test]
fn the_command_refuses_a_non_loopback_address_without_a_token() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["console", "--console-addr", "0.0.0.0:8080"])
        .env_remove("METROCLOUD_CONSOLE_TOKEN")
        .output()
        .expect("metrocloud runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("METROCLOUD_CONSOLE_TOKEN"), "{stderr}");
}

/// Opens a live tail on a raw connection; the status, and the connection (kept open).
async fn open_tail(addr: std::net::SocketAddr, topic: &str) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /api/v1/topics/{topic}/tail HTTP/1.1\r\nHost: console\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut head))
        .await
        .expect("headers within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&head[..read]).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"));
    (status, stream)
}

#[tokio::test]
async fn live_tails_are_bounded_and_a_closed_one_frees_its_place() {
    let cluster = common::shared();
    let topic = common::sensor_topic(cluster, "console-tails").await;
    let shutdown = CancellationToken::new();
    let running = console::start(
        &config(&cluster.bootstrap_list()),
        ConsoleSettings::new("127.0.0.1:0".parse().unwrap(), None).unwrap(),
        PipelineHandles::default(),
        shutdown.clone(),
    )
    .await
    .expect("console listens");
    let mut open = Vec::new();
    for _ in 0..console::MAX_STREAMS {
        let (status, stream) = open_tail(running.addr, &topic).await;
        assert_eq!(status, 200);
        open.push(stream);
    }
    let (status, _) = open_tail(running.addr, &topic).await;
    assert_eq!(
        status,
        429,
        "one tail more than {} is refused",
        console::MAX_STREAMS
    );
    // A browser tab closed: its place is free again.
    drop(open.pop());
    common::eventually(
        Duration::from_secs(30),
        "a closed tail frees its place",
        || async { open_tail(running.addr, &topic).await.0 == 200 },
    )
    .await;
    // Shutdown ends the open tails too, rather than waiting for the browsers.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running.task)
        .await
        .expect("the console stops within 30 s of shutdown with tails open")
        .unwrap();
    drop(open);
}

/// The sockets process `pid` holds now (their inode numbers).
fn sockets_of(pid: u32) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .map(|target| target.display().to_string())
                .filter(|target| target.starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_console_follows_its_topics_over_connections_it_keeps() {
    let cluster = common::shared();
    // The console follows the sensor, alert and dead-letter topics: eighteen
    // partitions, each fetched about twice a second while nothing is written.
    let sensor = common::sensor_topic(cluster, "console-sockets").await;
    for topic in [format!("{sensor}-alerts"), format!("{sensor}-dlq")] {
        common::sensor_shaped_topic(cluster, &topic).await;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_metrocloud"))
        .args(["console", "--console-addr", "127.0.0.1:0"])
        .env("KAFKA_BOOTSTRAP_SERVERS", cluster.bootstrap_list())
        .env("KAFKA_TOPIC_NAME", &sensor)
        .env("KAFKA_ALERTS_TOPIC", format!("{sensor}-alerts"))
        .env("KAFKA_DLQ_TOPIC", format!("{sensor}-dlq"))
        .env_remove("METROCLOUD_CONSOLE_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("metrocloud console starts");
    let url = common::console_url(&mut child);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let pid = child.id();
    // Connected to every partition's leader: more sockets than partitions.
    common::eventually(
        Duration::from_secs(60),
        "the console connects to its partitions",
        || async { sockets_of(pid).len() > 18 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut most_at_once = 0;
    for _ in 0..20 {
        let now = sockets_of(pid);
        most_at_once = most_at_once.max(now.len());
        seen.extend(now);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    // Five seconds of following: about two hundred fetches, over the same
    // connections (a new one per fetch would show as hundreds of sockets).
    assert!(
        seen.len() <= most_at_once + 3,
        "{} different sockets in 5 s, at most {most_at_once} at once",
        seen.len()
    );
}
