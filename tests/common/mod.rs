//! The Kafka cluster integration tests run against, and helpers to use it.
//!
//! `KAFKA_BOOTSTRAP_SERVERS` set: the tests use that cluster. Otherwise each
//! test binary starts one real 3-node cluster with the library's own
//! [`LocalCluster`], on free ports in a directory under the target dir, and
//! shares it between its tests. Its JVMs are supervised: they end when the
//! test process ends, however it ends. With the `testcontainers` feature, the
//! cluster is three Kafka containers instead (`KAFKA_IMAGE`, where Docker runs).
//!
//! Tests that break the cluster on purpose take a [`dedicated`] one.

#![allow(dead_code)]

pub mod interrupt;
pub mod postgres;

use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrocloud::cluster::{ClusterSpec, KafkaDistribution, LocalCluster, tools};
use metrocloud::kafka::admin::{AdminClient, Timeouts};
use metrocloud::sensor::device::DeviceType;
use metrocloud::sensor::reading::{DeviceStatus, Location, SensorReading};

/// A cluster for tests: its bootstrap servers, and the local cluster when we started it.
pub struct TestCluster {
    pub bootstrap: Vec<String>,
    pub local: Option<LocalCluster>,
    #[cfg(feature = "testcontainers")]
    containers: Vec<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
}

impl TestCluster {
    /// An admin client with timeouts short enough for loopback.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(
            self.bootstrap.clone(),
            Timeouts {
                connect: Duration::from_secs(3),
                request: Duration::from_secs(15),
            },
        )
    }

    /// `host:port,...` for Kafka's own tools.
    pub fn bootstrap_list(&self) -> String {
        self.bootstrap.join(",")
    }

    /// Runs one of Kafka's own command-line tools against this cluster.
    pub fn kafka_tool(&self, name: &str, args: &[&str]) -> Output {
        self.kafka_tool_with_input(name, args, "")
    }

    /// Runs one of Kafka's own tools with `input` on its standard input.
    pub fn kafka_tool_with_input(&self, name: &str, args: &[&str], input: &str) -> Output {
        let tool = tools::find_tool(name).unwrap_or_else(|| panic!("unknown tool {name}"));
        let distribution = KafkaDistribution::ensure(&KafkaDistribution::cache_dir(None))
            .expect("Kafka jars available");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let client_config = self.local.as_ref().and_then(LocalCluster::tools_config);
        let mut child = tools::tool_command(
            &distribution,
            tool,
            &self.bootstrap_list(),
            client_config.as_deref(),
            &args,
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run Kafka tool");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_string();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(input.as_bytes());
        });
        let output = child.wait_with_output().expect("Kafka tool output");
        writer.join().expect("stdin writer");
        assert!(
            output.status.success(),
            "{name} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The local cluster, for tests that control nodes.
    pub fn local(&self) -> &LocalCluster {
        self.local
            .as_ref()
            .expect("this test needs a cluster it started itself")
    }
}

/// Test output shows the library's log lines (filtered by `RUST_LOG`, warnings by default).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The cluster shared by every test of this binary.
pub fn shared() -> &'static TestCluster {
    init_logs();
    static SHARED: OnceLock<TestCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        if let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            return TestCluster {
                bootstrap: servers.split(',').map(|s| s.trim().to_string()).collect(),
                local: None,
                #[cfg(feature = "testcontainers")]
                containers: Vec::new(),
            };
        }
        #[cfg(feature = "testcontainers")]
        {
            docker::start()
        }
        #[cfg(not(feature = "testcontainers"))]
        {
            dedicated()
        }
    })
}

/// A fresh 3-node local cluster of this test's own, ended when dropped or when the process ends.
pub fn dedicated() -> TestCluster {
    init_logs();
    let dir = cluster_dir();
    // Started on a thread of its own: tests call this from inside their own runtime.
    let started = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        // A crashed member's partitions move on after 6 s, not Kafka's 45 s.
        let spec = ClusterSpec::short_lived(dir);
        runtime.block_on(LocalCluster::up(&spec))
    })
    .join()
    .expect("cluster start thread");
    let (cluster, _) = started.unwrap_or_else(|e| panic!("test cluster did not start: {e}"));
    TestCluster {
        bootstrap: cluster.bootstrap_servers(),
        local: Some(cluster),
        #[cfg(feature = "testcontainers")]
        containers: Vec::new(),
    }
}

/// A new directory for a test cluster under the target dir; those of finished runs are removed.
pub fn cluster_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("clusters");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok());
            if owner.is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create cluster dir");
    dir
}

/// Every record of every partition of `topic`, up to each partition's high watermark.
pub async fn read_all(
    bootstrap: &[String],
    topic: &str,
    partitions: i32,
) -> Vec<(i32, rskafka::record::RecordAndOffset)> {
    use rskafka::client::ClientBuilder;
    use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

    let client = ClientBuilder::new(bootstrap.to_vec())
        .build()
        .await
        .expect("rskafka client");
    let mut all = Vec::new();
    for partition in 0..partitions {
        let partition_client = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let end = partition_client
            .get_offset(OffsetAt::Latest)
            .await
            .expect("high watermark");
        let mut offset = partition_client
            .get_offset(OffsetAt::Earliest)
            .await
            .expect("start");
        while offset < end {
            let (records, _) = tokio::time::timeout(
                Duration::from_secs(30),
                partition_client.fetch_records(offset, 1..4_000_000, 500),
            )
            .await
            .expect("fetch within 30 s")
            .expect("fetch");
            assert!(
                !records.is_empty(),
                "no records below the high watermark at {offset}"
            );
            offset = records.last().unwrap().offset + 1;
            all.extend(records.into_iter().map(|r| (partition, r)));
        }
    }
    all
}

/// A new topic of this test's own, shaped like the sensor topic (6 partitions,
/// replication factor 3, `min.insync.replicas=2`).
pub async fn sensor_topic(cluster: &TestCluster, purpose: &str) -> String {
    let name = unique_topic(purpose);
    sensor_shaped_topic(cluster, &name).await;
    name
}

/// Creates topic `name` shaped like the sensor topic.
pub async fn sensor_shaped_topic(cluster: &TestCluster, name: &str) {
    let spec = metrocloud::kafka::topics::TopicSpec {
        name: name.to_string(),
        partitions: 6,
        replication_factor: 3,
        min_insync_replicas: 2,
    };
    metrocloud::kafka::topics::ensure_topic(&cluster.admin(), &spec)
        .await
        .expect("topic created");
}

/// A producer of simulated readings to `topic`, with default settings, whose
/// deliveries go to `listener` (failures are logged first).
pub async fn reading_producer(
    cluster: &TestCluster,
    topic: &str,
    listener: impl Fn(
        metrocloud::pipeline::sources::simulator::ReadingId,
        metrocloud::kafka::producer::Delivery,
    ) + Send
    + Sync
    + 'static,
) -> metrocloud::kafka::producer::Producer<metrocloud::pipeline::sources::simulator::ReadingId> {
    metrocloud::kafka::producer::Producer::connect(
        cluster.bootstrap.clone(),
        topic,
        &metrocloud::kafka::producer::ProducerSettings::default(),
        metrocloud::pipeline::sources::simulator::logging_listener(listener),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("producer connects")
}

/// A producer of records the test numbers (see [`numbered_record`]) to
/// `topic` under `settings`; `listener` hears each one's fate.
pub async fn numbered_producer(
    cluster: &TestCluster,
    topic: &str,
    settings: &metrocloud::kafka::producer::ProducerSettings,
    listener: impl Fn(u32, metrocloud::kafka::producer::Delivery) + Send + Sync + 'static,
) -> metrocloud::kafka::producer::Producer<u32> {
    metrocloud::kafka::producer::Producer::connect(
        cluster.bootstrap.clone(),
        topic,
        settings,
        std::sync::Arc::new(listener),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("producer connects")
}

/// Record `id` of one device (`device-1`, so one partition), its number as its value.
pub fn numbered_record(id: u32) -> metrocloud::kafka::producer::OutgoingRecord<u32> {
    metrocloud::kafka::producer::OutgoingRecord {
        key: bytes::Bytes::from_static(b"device-1"),
        value: bytes::Bytes::from(format!("{id:08}")),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
        meta: id,
    }
}

/// The address a started `metrocloud console` prints on its first line
/// (`console: <url>`), read from its standard output, which must be piped.
pub fn console_url(child: &mut std::process::Child) -> String {
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout piped")),
        &mut first,
    )
    .expect("the console's first line");
    first
        .trim()
        .strip_prefix("console: ")
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string()
}

/// A topic name no other test uses.
pub fn unique_topic(purpose: &str) -> String {
    let suffix: u64 = rand::random();
    format!("test-{purpose}-{suffix:016x}")
}

/// Polls `condition` until it returns true or `limit` passes; panics with `what` on timeout.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A reading of `device_id` with sequence number `sequence`, as one line of JSON.
pub fn reading(device_type: DeviceType, device_id: &str, sequence: u64) -> String {
    let reading = SensorReading {
        schema_version: 1,
        device_id: device_id.to_string(),
        device_type,
        run_id: "field".to_string(),
        sequence,
        timestamp: chrono::Utc::now(),
        value: match device_type {
            DeviceType::Motion => 1.0,
            DeviceType::Pressure => 1013.0,
            _ => 21.5,
        },
        unit: device_type.unit().to_string(),
        location: Location {
            site: "site-01".to_string(),
            zone: "zone-01".to_string(),
            latitude: 52.5,
            longitude: 13.4,
        },
        battery_level: 90.0,
        signal_strength: -60,
        firmware_version: "1.0.0".to_string(),
        status: DeviceStatus::Ok,
        is_anomaly: false,
        anomaly_kind: None,
        fault: None,
    };
    String::from_utf8(reading.to_json()).unwrap()
}

#[cfg(feature = "testcontainers")]
pub mod docker {
    //! Three Kafka containers in KRaft combined mode, like `docker/`, from
    //! `KAFKA_IMAGE` (default `apache/kafka:4.1.1`; where nothing can be
    //! pulled, `docker/build-images.sh` builds `metrocloud-kafka:4.1.1`).
    //!
    //! The shared cluster lives until the test process ends, where no
    //! destructor runs: every container and network is labelled with the
    //! process id, a watcher removes them once that process is gone, and
    //! whatever a killed watcher left is removed before new ones start.

    use std::net::TcpListener;
    use std::process::Command;
    use std::time::Duration;

    use testcontainers::core::{ContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};

    use metrocloud::cluster::short_lived_broker_settings;

    use super::TestCluster;

    const DEFAULT_IMAGE: &str = "apache/kafka:4.1.1";
    /// The label every container and network of these tests carries: the test process's id.
    const LABEL: &str = "metrocloud.test.pid";

    pub fn start() -> TestCluster {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(start_async())
        })
        .join()
        .expect("container start thread")
    }

    /// The `KAFKA_*` variable that sets broker setting `name` (the official image's convention).
    pub fn variable_for(name: &str) -> String {
        let mut variable = String::from("KAFKA_");
        for c in name.chars() {
            match c {
                '.' => variable.push('_'),
                '_' => variable.push_str("__"),
                '-' => variable.push_str("___"),
                c => variable.push(c.to_ascii_uppercase()),
            }
        }
        variable
    }

    /// `docker` with `args`, its standard output; panics, naming what is missing, when it fails.
    fn docker(args: &[&str]) -> String {
        let output = Command::new("docker")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("these tests need a Docker engine, and there is no docker command: {e}")
            });
        assert!(
            output.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Removes the containers and networks of test processes that have ended.
    fn remove_leftovers() {
        let filter = format!("label={LABEL}");
        let format = format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}");
        for (kind, list) in [
            (
                "container",
                vec!["ps", "-a", "--filter", &filter, "--format", &format],
            ),
            (
                "network",
                vec!["network", "ls", "--filter", &filter, "--format", &format],
            ),
        ] {
            for line in docker(&list).lines() {
                let Some((id, pid)) = line.split_once(' ') else {
                    continue;
                };
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    continue;
                }
                let _ = Command::new("docker").args([kind, "rm", "-f", id]).output();
            }
        }
    }

    /// Starts a shell that waits for this process to end, then removes its
    /// containers and `network`.
    fn watch(pid: &str, network: &str) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             docker ps -aq --filter label={LABEL}={pid} | xargs -r docker rm -f; \
             docker network rm {network}"
        );
        // In the background of a shell that exits at once: the watcher is
        // nobody's child here, and nothing is left to wait for.
        let started = Command::new("sh")
            .args(["-c", &format!("({script}) </dev/null >/dev/null 2>&1 &")])
            .status()
            .expect("start the containers' watcher");
        assert!(started.success(), "the containers' watcher did not start");
    }

    async fn start_async() -> TestCluster {
        let image = std::env::var("KAFKA_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string());
        let (repository, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("KAFKA_IMAGE={image} has no tag"));
        docker(&["info", "--format", "{{.ServerVersion}}"]);
        assert!(
            !docker(&["image", "ls", "-q", &image]).trim().is_empty(),
            "no image {image} on this engine: pull it, or build the local one with \
             docker/build-images.sh and set KAFKA_IMAGE=metrocloud-kafka:4.1.1"
        );
        remove_leftovers();
        let pid = std::process::id().to_string();
        let run: u32 = rand::random();
        let network = format!("metrocloud-test-{run:08x}");
        docker(&[
            "network",
            "create",
            "--label",
            &format!("{LABEL}={pid}"),
            &network,
        ]);
        watch(&pid, &network);
        let host_ports: Vec<u16> = (0..3)
            .map(|_| TcpListener::bind(("127.0.0.1", 0)).expect("free port"))
            .collect::<Vec<_>>()
            .iter()
            .map(|l| l.local_addr().expect("port").port())
            .collect();
        let names: Vec<String> = (1..=3).map(|i| format!("kafka{i}-{run:08x}")).collect();
        let voters = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{}@{name}:9093", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut containers = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let host_port = host_ports[i];
            let mut request = GenericImage::new(repository, tag)
                .with_exposed_port(ContainerPort::Tcp(19092))
                .with_wait_for(WaitFor::Nothing)
                .with_network(network.clone())
                .with_container_name(name.clone())
                .with_labels([(LABEL, pid.clone())])
                .with_mapped_port(host_port, ContainerPort::Tcp(19092))
                .with_env_var("CLUSTER_ID", "TWV0cm9DbG91ZFRlc3RzMQ")
                .with_env_var("KAFKA_NODE_ID", (i + 1).to_string())
                .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
                .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", voters.clone())
                .with_env_var(
                    "KAFKA_LISTENERS",
                    "PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:19092",
                )
                .with_env_var(
                    "KAFKA_ADVERTISED_LISTENERS",
                    format!("PLAINTEXT://{name}:9092,HOST://127.0.0.1:{host_port}"),
                )
                .with_env_var(
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,HOST:PLAINTEXT",
                )
                .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
                .with_env_var("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
                .with_env_var("KAFKA_LOG_DIRS", "/var/lib/kafka/data")
                .with_env_var("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m")
                .with_env_var("KAFKA_DEFAULT_REPLICATION_FACTOR", "3")
                .with_env_var("KAFKA_MIN_INSYNC_REPLICAS", "2")
                .with_env_var("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3")
                .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "3")
                .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "2")
                .with_env_var("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
                .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0");
            // The same short group sessions as the local test clusters.
            for (setting, value) in short_lived_broker_settings() {
                request = request.with_env_var(variable_for(&setting), value);
            }
            let container = request.start().await.unwrap_or_else(|e| {
                panic!("cannot start a {image} container (is a Docker engine running?): {e}")
            });
            containers.push(container);
        }
        let cluster = TestCluster {
            bootstrap: host_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            local: None,
            containers,
        };
        let admin = cluster.admin();
        super::eventually(Duration::from_secs(120), "3 brokers registered", || async {
            admin
                .metadata(Some(&[]))
                .await
                .is_ok_and(|m| m.brokers.len() == 3)
        })
        .await;
        eprintln!(
            "test cluster: 3 {image} containers at {}",
            cluster.bootstrap.join(",")
        );
        cluster
    }
}
