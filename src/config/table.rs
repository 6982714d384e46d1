//! Every environment variable MetroCloud reads, declared once.
//!
//! A declaration holds the variable's name, its default, its help line and
//! how its text becomes a field of [`Config`](super::Config) and back. Parsing,
//! `metrocloud config`, `.env.example`, the README's table and the tests'
//! list of variables are all made from [`SETTINGS`], so a new setting is one
//! entry here and one field in [`Config`](super::Config).

pub use super::group::Group;
pub use super::setting::Setting;
use super::values::*;
use crate::kafka::security::{Password, SaslMechanism, SecurityProtocol};

/// Every setting, in the order `metrocloud config` prints them. Kept as
/// written: a declaration reads best one field to a line, or a few to a line.
#[rustfmt::skip]
pub static SETTINGS: &[Setting] = &[
    setting!(
        "KAFKA_BOOTSTRAP_SERVERS",
        Kafka,
        "localhost:29092,localhost:29093,localhost:29094",
        "Brokers to bootstrap from (host:port, comma-separated).",
        bootstrap_servers,
        |v| bootstrap_servers(v),
        show_list
    ),
    setting!(
        "KAFKA_TOPIC_NAME",
        Kafka,
        "iot-sensor-data",
        "Topic the sensor readings go to.",
        topic,
        |v| topic_name(v),
        show
    ),
    setting!(
        "KAFKA_CONSUMER_GROUP_ID",
        Kafka,
        "iot-data-consumer",
        "Consumer group of the processing side.",
        consumer_group_id,
        |v| non_empty(v).map_err(|_| "a non-empty group id".to_string()),
        show
    ),
    setting!(
        "KAFKA_AUTO_OFFSET_RESET",
        Kafka,
        "earliest",
        "Where a group without committed offsets starts: earliest or latest.",
        auto_offset_reset,
        |v| parsed(v, "one of earliest, latest"),
        show
    ),
    setting!(
        "KAFKA_REPLICATION_FACTOR",
        Kafka,
        "3",
        "Copies of each partition; below 3 is refused as unsafe with acks=all.",
        replication_factor,
        |v| whole(v, 1, i16::MAX),
        show
    ),
    setting!(
        "KAFKA_PARTITIONS",
        Kafka,
        "6",
        "Partitions of the topic.",
        partitions,
        |v| whole(v, 1, 100_000),
        show
    ),
    setting!(
        "KAFKA_MIN_INSYNC_REPLICAS",
        Kafka,
        "2",
        "Replicas that must hold a write before it is acknowledged; below 2 is refused as unsafe.",
        min_insync_replicas,
        |v| whole(v, 1, i16::MAX),
        show
    ),
    setting!("KAFKA_SECURITY_PROTOCOL", Security, "PLAINTEXT",
        "How connections to the brokers are made: PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL (the last two need a build with the tls feature).",
        security.protocol, |v| parsed(v, SecurityProtocol::NAMES), show),
    setting!("KAFKA_SASL_MECHANISM", Security, "SCRAM-SHA-512",
        "SASL mechanism with SASL_PLAINTEXT and SASL_SSL: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN.",
        security.mechanism, |v| parsed(v, SaslMechanism::NAMES), show),
    setting!("KAFKA_SASL_USERNAME", Security, "",
        "SASL user (the broker's principal User:<name>).",
        security.username, |v| optional_text(v), show_optional),
    setting!("KAFKA_SASL_PASSWORD", Security, "",
        "SASL password (never printed).",
        security.password, |v| Ok::<_, Allowed>(Some(Password::new(v))), show_password,
        secret: true),
    setting!("KAFKA_SASL_PASSWORD_FILE", Security, "",
        "File holding the SASL password, read at start when KAFKA_SASL_PASSWORD is unset (a mounted secret).",
        security.password_file, |v| optional_path(v), show_optional_path),
    setting!("KAFKA_SSL_CA_LOCATION", Security, "",
        "PEM file of the authorities the brokers' certificates must chain to; unset, the system's.",
        security.tls_files.ca, |v| optional_path(v), show_optional_path),
    setting!("KAFKA_SSL_CERTIFICATE_LOCATION", Security, "",
        "PEM file of the client's certificate, for brokers that ask for one.",
        security.tls_files.certificate, |v| optional_path(v), show_optional_path),
    setting!("KAFKA_SSL_KEY_LOCATION", Security, "",
        "PEM file of the client certificate's private key.",
        security.tls_files.key, |v| optional_path(v), show_optional_path),
    setting!(
        "IOT_NUM_DEVICES",
        Simulator,
        "8",
        "Number of simulated devices.",
        num_devices,
        |v| whole(v, 1, 10_000_000),
        show
    ),
    setting!(
        "IOT_DATA_INTERVAL_SEC",
        Simulator,
        "1",
        "Seconds between two readings of one device.",
        data_interval,
        |v| interval(v),
        show_interval
    ),
    setting!(
        "IOT_DEVICE_TYPES",
        Simulator,
        "temperature,humidity,pressure,motion,light",
        "Device types to simulate (comma-separated): temperature, humidity, pressure, motion, light.",
        device_types,
        |v| device_types(v),
        show_list
    ),
    setting!(
        "IOT_ANOMALY_PROBABILITY",
        Simulator,
        "0.05",
        "Probability that a reading is an injected anomaly (0.0 to 1.0).",
        anomaly_probability,
        |v| probability(v),
        show
    ),
    setting!("IOT_FAULT_PROBABILITY", Simulator, "0",
        "Probability per reading that a healthy simulated device starts a sensor fault episode (0.0 to 1.0): stuck, drift, spike, noise_burst, level_shift, silence or wrong_time_of_day, in range of the thresholds.",
        fault_probability, |v| probability(v), show),
    setting!("IOT_FAULT_KINDS", Simulator, "spike,stuck,drift,noise_burst,level_shift,silence,wrong_time_of_day",
        "Sensor fault kinds the simulator injects (comma-separated).",
        fault_kinds, |v| fault_kinds(v), show_list),
    setting!(
        "IOT_SIMULATOR_SEED",
        Simulator,
        "",
        "Seed of the simulator (a whole number); empty for a random seed, printed at start.",
        simulator_seed,
        |v| seed(v),
        show_optional
    ),
    setting!(
        "LOG_LEVEL",
        Logging,
        "INFO",
        "TRACE, DEBUG, INFO, WARNING, ERROR (CRITICAL is read as ERROR). RUST_LOG, when set, overrides it.",
        log_level,
        |v| parsed(v, "one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        show
    ),
    setting!(
        "ENVIRONMENT",
        Logging,
        "development",
        "\"production\" also writes JSON log files, rotated daily, into METROCLOUD_LOG_DIR.",
        environment,
        |v| text(v),
        show
    ),
    setting!(
        "METROCLOUD_LOG_DIR",
        Logging,
        "logs",
        "Directory of the production log files.",
        log_dir,
        |v| text(v).map(Into::into),
        show_path
    ),
    setting!(
        "KAFKA_PRODUCER_LINGER_MS",
        Producer,
        "5",
        "Longest a record waits for more to share its batch while earlier batches are in flight; on an idle partition it is sent at once.",
        producer.linger,
        |v| millis(v, 0),
        show_millis
    ),
    setting!(
        "KAFKA_PRODUCER_BATCH_BYTES",
        Producer,
        "524288",
        "A batch is sent once it holds this many bytes.",
        producer.batch_bytes,
        |v| whole(v, 1024, 64 * 1024 * 1024),
        show
    ),
    setting!(
        "KAFKA_PRODUCER_MAX_IN_FLIGHT",
        Producer,
        "5",
        "Batches on their way to a partition's leader at once, 1 to 5 (the broker keeps the order of up to 5 from one producer).",
        producer.max_in_flight,
        |v| whole(v, 1, 5),
        show
    ),
    setting!(
        "KAFKA_PRODUCER_BUFFER_BYTES",
        Producer,
        "33554432",
        "Bytes of records waiting for acknowledgement, at most; when full, the simulator waits.",
        producer.buffer_bytes,
        |v| whole(v, 64 * 1024, u32::MAX as usize),
        show
    ),
    setting!(
        "KAFKA_PRODUCER_COMPRESSION",
        Producer,
        "none",
        "Batch compression: none, gzip or snappy.",
        producer.compression,
        |v| parsed(v, "one of none, gzip, snappy (lz4 and zstd would need C)"),
        show
    ),
    setting!(
        "KAFKA_PRODUCER_DELIVERY_TIMEOUT_MS",
        Producer,
        "120000",
        "A record not acknowledged within this time has failed (counted and logged).",
        producer.delivery_timeout,
        |v| millis(v, 1),
        show_millis
    ),
    setting!(
        "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS",
        Producer,
        "30000",
        "Time allowed for one produce request or connection.",
        producer.request_timeout,
        |v| millis(v, 1),
        show_millis
    ),
    setting!(
        "KAFKA_PRODUCER_RETRY_BACKOFF_MS",
        Producer,
        "100",
        "First pause between retries (exponential, with jitter).",
        producer.retry_backoff,
        |v| millis(v, 1),
        show_millis
    ),
    setting!(
        "KAFKA_PRODUCER_RETRY_BACKOFF_MAX_MS",
        Producer,
        "1000",
        "Longest pause between retries.",
        producer.retry_backoff_max,
        |v| millis(v, 1),
        show_millis
    ),
    setting!(
        "KAFKA_CONSUMER_COMMIT_INTERVAL_MS",
        Consumer,
        "5000",
        "Processed offsets are committed this often (and on shutdown and when a partition moves away).",
        consumer.commit_interval,
        |v| millis(v, 1),
        show_millis
    ),
    setting!(
        "KAFKA_CONSUMER_FETCH_MAX_BYTES",
        Consumer,
        "1048576",
        "Most bytes one fetch returns for one partition.",
        consumer.fetch_max_bytes,
        |v| whole(v, 1024, 64 * 1024 * 1024),
        show
    ),
    setting!(
        "KAFKA_CONSUMER_FETCH_MAX_WAIT_MS",
        Consumer,
        "500",
        "How long a broker holds a fetch open waiting for new records.",
        consumer.fetch_max_wait,
        |v| millis(v, 0),
        show_millis
    ),
    setting!(
        "KAFKA_CONSUMER_REQUEST_TIMEOUT_MS",
        Consumer,
        "30000",
        "Time allowed for one request.",
        consumer.request_timeout,
        |v| millis(v, 1),
        show_millis
    ),
    setting!(
        "KAFKA_CONSUMER_REBALANCE_TIMEOUT_MS",
        Consumer,
        "60000",
        "Time the group gives a member to hand back partitions during a rebalance.",
        consumer.rebalance_timeout,
        |v| millis(v, 1),
        show_millis
    ),
    setting!(
        "KAFKA_STARTUP_WAIT_SEC",
        Startup,
        "300",
        "How long a program waits for a cluster that does not answer yet (or still has too few brokers) before it gives up; it logs each attempt with backoff meanwhile.",
        startup_wait,
        |v| seconds(v, 86_400 * 7),
        show_seconds
    ),
    setting!(
        "KAFKA_ALERTS_TOPIC",
        Alerts,
        "iot-alerts",
        "Topic of the alerts.",
        alerts_topic,
        |v| topic_name(v),
        show
    ),
    setting!("KAFKA_DLQ_TOPIC", Alerts, "<KAFKA_TOPIC_NAME>-dlq",
        "Topic of the records that fail validation.",
        dlq_topic, |v| topic_name(v), show,
        derived: Some(|config| format!("{}-dlq", config.topic))),
    setting!(
        "ALERT_TEMPERATURE_HIGH_C",
        Alerts,
        "45",
        "Above this temperature, extreme_temperature.",
        alerts.temperature_high,
        |v| number(v),
        show
    ),
    setting!(
        "ALERT_TEMPERATURE_LOW_C",
        Alerts,
        "-10",
        "Below this temperature, extreme_temperature.",
        alerts.temperature_low,
        |v| number(v),
        show
    ),
    setting!(
        "ALERT_HUMIDITY_HIGH_PCT",
        Alerts,
        "90",
        "Above this humidity, high_humidity.",
        alerts.humidity_high,
        |v| number(v),
        show
    ),
    setting!(
        "ALERT_PRESSURE_LOW_HPA",
        Alerts,
        "970",
        "Below this pressure, low_pressure.",
        alerts.pressure_low,
        |v| number(v),
        show
    ),
    setting!(
        "ALERT_LIGHT_LOW_LUX",
        Alerts,
        "20",
        "Below this light level, low_light.",
        alerts.light_low,
        |v| number(v),
        show
    ),
    setting!(
        "ALERT_BATTERY_LOW_PCT",
        Alerts,
        "15",
        "Below this battery level, low_battery.",
        alerts.battery_low,
        |v| number(v),
        show
    ),
    setting!(
        "ALERT_DEVICE_SILENT_SEC",
        Alerts,
        "60",
        "A device with no reading for this many seconds raises device_silent.",
        alerts.silence,
        |v| seconds(v, 86_400 * 30),
        show_seconds
    ),
    setting!(
        "ALERT_COOLDOWN_SEC",
        Alerts,
        "300",
        "Repeats of an alert episode within this many seconds are counted, not sent again.",
        alerts.cooldown,
        |v| seconds(v, 86_400 * 30),
        show_seconds
    ),
    setting!("DETECT_FAULTS", Detector, "on",
        "on: the consumer runs the fault detector beside the threshold rules and alerts sensor_fault; off: the rules alone.",
        detect_faults, |v| on_off(v), show_on_off),
    setting!("DETECT_WARMUP_READINGS", Detector, "30",
        "Readings a device makes before the fault detector may raise an alert for it (its noise is learned by then).",
        detector.warmup, |v| whole(v, 3, 100_000), show),
    setting!("DETECT_QUIET_READINGS", Detector, "5",
        "Normal readings in a row that end a fault episode.",
        detector.quiet, |v| whole(v, 1, 10_000), show),
    setting!("DETECT_RELEARN_READINGS", Detector, "240",
        "Readings after which a fault episode's values count as the device's new normal.",
        detector.relearn, |v| whole(v, 10, 1_000_000), show),
    setting!("DETECT_REARM_READINGS", Detector, "30",
        "Readings after an episode ends during which the way back from its shift raises no second alert.",
        detector.rearm, |v| whole(v, 0, 1_000_000), show),
    setting!("DETECT_SILENCE_GAPS", Detector, "3",
        "A device is silent after this many of its usual gaps without a reading.",
        detector.silence_gaps, |v| silence_gaps(v), show),
    setting!(
        "RUST_LOG",
        Logging,
        "",
        "A tracing filter (e.g. metrocloud=debug,rskafka=info); when set, it overrides LOG_LEVEL.",
        rust_log,
        |v| optional_text(v),
        show_optional
    ),
    setting!(
        "METROCLOUD_STORE",
        Storage,
        "parquet",
        "Where readings are stored: parquet (files under METROCLOUD_DATA_DIR), postgres (METROCLOUD_POSTGRES_URL), or off (metrocloud run does not store).",
        store.kind,
        |v| store_kind(v),
        show_store_kind
    ),
    setting!("METROCLOUD_POSTGRES_URL", Storage, "",
        "PostgreSQL connection URL when METROCLOUD_STORE=postgres: postgresql://user:password@host:5432/db (never printed: it may hold a password).",
        store.postgres_url, |v| optional_text(v), show_optional, secret: true),
    setting!(
        "METROCLOUD_DATA_DIR",
        Storage,
        "data",
        "Folder of the stored readings: readings/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset>.parquet.",
        store.data_dir,
        |v| non_empty(v).map(Into::into),
        show_path
    ),
    setting!(
        "METROCLOUD_STORE_GROUP_ID",
        Storage,
        "iot-storage",
        "Consumer group of the storage stage, apart from processing's.",
        store.group_id,
        |v| non_empty(v),
        show
    ),
    setting!(
        "METROCLOUD_STORE_ROLL_ROWS",
        Storage,
        "1000000",
        "A partition's open files are closed and committed once they hold this many readings together.",
        store.roll_rows,
        |v| whole(v, 1, 100_000_000),
        show
    ),
    setting!(
        "METROCLOUD_STORE_ROLL_SEC",
        Storage,
        "60",
        "... or once the oldest reading they hold has waited this many seconds.",
        store.roll_after,
        |v| whole(v, 1, 86_400).map(std::time::Duration::from_secs),
        show_seconds
    ),
    setting!(
        "KAFKA_AGGREGATES_TOPIC",
        Aggregates,
        "iot-sensor-aggregates",
        "Topic of the per-device minute aggregates (count, min, max, mean, last, anomalies).",
        aggregates_topic,
        |v| topic_name(v),
        show
    ),
    setting!(
        "METROCLOUD_AGGREGATE_GROUP_ID",
        Aggregates,
        "iot-aggregator",
        "Consumer group of the aggregation stage, apart from processing's and storage's.",
        aggregate.group_id,
        |v| non_empty(v),
        show
    ),
    setting!(
        "METROCLOUD_AGGREGATE_GRACE_SEC",
        Aggregates,
        "30",
        "A minute's aggregate is written once its partition has a reading this many seconds past the minute's end; later readings are left out of it.",
        aggregate.grace,
        |v| whole(v, 0, 3_600).map(std::time::Duration::from_secs),
        show_seconds
    ),
    setting!("METROCLOUD_GATEWAY", Gateway, "off",
        "on: metrocloud run also runs the device gateway (MQTT and HTTP), beside the simulator.",
        gateway.in_run, |v| on_off(v), show_on_off),
    setting!("METROCLOUD_GATEWAY_MQTT_ADDR", Gateway, "127.0.0.1:1883",
        "Address of the MQTT listener (3.1.1 and 5; topic sensors/<device_type>/<device_id>); anything but loopback needs METROCLOUD_GATEWAY_CREDENTIALS.",
        gateway.mqtt_addr, |v| parsed(v, "an address and port to listen on (e.g. 0.0.0.0:1883)"), show),
    setting!("METROCLOUD_GATEWAY_HTTP_ADDR", Gateway, "127.0.0.1:8088",
        "Address of the HTTP listener (POST /api/v1/readings); anything but loopback needs METROCLOUD_GATEWAY_CREDENTIALS.",
        gateway.http_addr, |v| parsed(v, "an address and port to listen on (e.g. 0.0.0.0:8088)"), show),
    setting!("METROCLOUD_GATEWAY_CREDENTIALS", Gateway, "",
        "Devices' credentials file (lines: device|fleet NAME SECRET); unset, devices connect anonymously, on loopback only.",
        gateway.credentials, |v| optional_path(v), show_optional_path),
    setting!("METROCLOUD_GATEWAY_SPOOL_DIR", Gateway, "",
        "The disk buffer readings wait in until Kafka acknowledges them; empty: spool under METROCLOUD_DATA_DIR.",
        gateway.spool_dir, |v| optional_path(v), show_optional_path),
    setting!("METROCLOUD_GATEWAY_SPOOL_MAX_MB", Gateway, "1024",
        "The disk buffer's bound in MiB; when it is full, devices are pushed back (no PUBACK, HTTP 503), nothing is dropped.",
        gateway.spool_max_bytes, |v| whole(v, 1u64, 1 << 30).map(|mb| mb * 1024 * 1024), show_mebibytes),
    setting!("METROCLOUD_GATEWAY_FSYNC_MS", Gateway, "0",
        "Group commit: appends that come during an fsync share the next one; this adds a wait before each fsync to gather more (for disks where an fsync is dear), at that much latency.",
        gateway.fsync_interval, |v| millis(v, 0), show_millis),
    setting!("METROCLOUD_GATEWAY_FORWARD_SPACING_MS", Gateway, "200",
        "Shortest time between two produce requests of the forwarder to one broker, unless a full batch waits: devices are acknowledged once their readings are on disk, so forwarding later costs them nothing, and fewer, fuller requests cost the brokers far less CPU; 0: a request as soon as a broker's connection is free.",
        gateway.forward_spacing, |v| whole(v, 0u64, 10_000).map(std::time::Duration::from_millis), show_millis),
    setting!(
        "METROCLOUD_CLUSTER_DIR",
        LocalCluster,
        "",
        "Cluster directory; empty: $XDG_DATA_HOME/metrocloud/cluster, else ~/.local/share/metrocloud/cluster.",
        cluster_dir,
        |v| optional_path(v),
        show_optional_path
    ),
    setting!(
        "METROCLOUD_KAFKA_CACHE",
        LocalCluster,
        "",
        "Kafka jar cache; empty: $XDG_CACHE_HOME/metrocloud, else ~/.cache/metrocloud.",
        kafka_cache,
        |v| optional_path(v),
        show_optional_path
    ),
    setting!(
        "METROCLOUD_KAFKA_HEAP",
        LocalCluster,
        "512m",
        "Maximum heap of each Kafka node's JVM (-Xmx: 512m, 1g); a node given one its JVM refuses fails to start, with its log.",
        kafka_heap,
        |v| non_empty(v),
        show
    ),
    setting!(
        "METROCLOUD_CONSOLE_ADDR",
        Console,
        "127.0.0.1:8080",
        "Address the console listens on; anything but loopback needs METROCLOUD_CONSOLE_TOKEN.",
        console_addr,
        |v| parsed(v, "an address and port to listen on (e.g. 127.0.0.1:8080)"),
        show
    ),
    setting!("METROCLOUD_CONSOLE_TOKEN", Console, "",
        "Token every request must carry (Authorization: Bearer <token>, or ?token=<token> once in a browser, which sets a cookie). Unset: no token, allowed on loopback only.",
        console_token, |v| Ok::<_, Allowed>(Some(v.to_string())), show_optional,
        secret: true),
    setting!("METROCLOUD_CONSOLE_TLS_CERT", Console, "",
        "PEM certificate chain: the console serves HTTPS with it and METROCLOUD_CONSOLE_TLS_KEY (needs a build with the tls feature).",
        console_tls_cert, |v| optional_path(v), show_optional_path),
    setting!("METROCLOUD_CONSOLE_TLS_KEY", Console, "",
        "PEM private key of that certificate.",
        console_tls_key, |v| optional_path(v), show_optional_path),
    setting!(
        "METROCLOUD_CHROMIUM",
        Browser,
        "/usr/bin/chromium",
        "Chromium, run headless to time console pages (Debian's chromium).",
        chromium,
        |v| non_empty(v).map(Into::into),
        show_path
    ),
    setting!(
        "METROCLOUD_CHROMEDRIVER",
        Browser,
        "/usr/bin/chromedriver",
        "chromedriver, which drives that Chromium (Debian's chromium-driver).",
        chromedriver,
        |v| non_empty(v).map(Into::into),
        show_path
    ),
];

/// The declaration of `name`.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}
