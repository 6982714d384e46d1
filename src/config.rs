//! Configuration from the environment, validated once at start.
//!
//! The variable names and defaults are the original design's, so an existing
//! `.env` file or Compose environment keeps working. The environment is first
//! read raw (every variable a string, through `envy`), then turned into a
//! [`Config`] in one place; the rest of the program only ever sees valid
//! values. A bad value is reported with the variable, the value given and what
//! is allowed, and the binaries exit with status 2 for it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::device::DeviceType;
use crate::pipeline::alerts::AlertSettings;

/// The variables read from the environment, exactly as given.
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    kafka_bootstrap_servers: Option<String>,
    kafka_topic_name: Option<String>,
    kafka_consumer_group_id: Option<String>,
    kafka_auto_offset_reset: Option<String>,
    kafka_replication_factor: Option<String>,
    kafka_partitions: Option<String>,
    kafka_min_insync_replicas: Option<String>,
    iot_num_devices: Option<String>,
    iot_data_interval_sec: Option<String>,
    iot_device_types: Option<String>,
    iot_anomaly_probability: Option<String>,
    iot_simulator_seed: Option<String>,
    log_level: Option<String>,
    environment: Option<String>,
    metrocloud_log_dir: Option<String>,
    kafka_producer_linger_ms: Option<String>,
    kafka_producer_batch_bytes: Option<String>,
    kafka_producer_buffer_bytes: Option<String>,
    kafka_producer_compression: Option<String>,
    kafka_producer_delivery_timeout_ms: Option<String>,
    kafka_producer_request_timeout_ms: Option<String>,
    kafka_producer_retry_backoff_ms: Option<String>,
    kafka_producer_retry_backoff_max_ms: Option<String>,
    kafka_consumer_commit_interval_ms: Option<String>,
    kafka_consumer_fetch_max_bytes: Option<String>,
    kafka_consumer_fetch_max_wait_ms: Option<String>,
    kafka_consumer_request_timeout_ms: Option<String>,
    kafka_consumer_rebalance_timeout_ms: Option<String>,
    kafka_startup_wait_sec: Option<String>,
    kafka_alerts_topic: Option<String>,
    kafka_dlq_topic: Option<String>,
    alert_temperature_high_c: Option<String>,
    alert_temperature_low_c: Option<String>,
    alert_humidity_high_pct: Option<String>,
    alert_pressure_low_hpa: Option<String>,
    alert_light_low_lux: Option<String>,
    alert_battery_low_pct: Option<String>,
    alert_device_silent_sec: Option<String>,
    alert_cooldown_sec: Option<String>,
}

/// The validated configuration of every MetroCloud program.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `KAFKA_BOOTSTRAP_SERVERS`: brokers to ask for the cluster's metadata.
    pub bootstrap_servers: Vec<BrokerAddress>,
    /// `KAFKA_TOPIC_NAME`: the topic sensor readings go to.
    pub topic: String,
    /// `KAFKA_CONSUMER_GROUP_ID`: the consumer group of the processing side.
    pub consumer_group_id: String,
    /// `KAFKA_AUTO_OFFSET_RESET`: where a group with no committed offset starts.
    pub auto_offset_reset: OffsetReset,
    /// `KAFKA_REPLICATION_FACTOR`: copies of every partition.
    pub replication_factor: i16,
    /// `KAFKA_PARTITIONS`: partitions of the topic.
    pub partitions: i32,
    /// `KAFKA_MIN_INSYNC_REPLICAS`: replicas that must have a write before it is acknowledged.
    pub min_insync_replicas: i16,
    /// `IOT_NUM_DEVICES`: simulated devices.
    pub num_devices: u32,
    /// `IOT_DATA_INTERVAL_SEC`: time between two readings of one device.
    pub data_interval: Duration,
    /// `IOT_DEVICE_TYPES`: the kinds of device simulated.
    pub device_types: Vec<DeviceType>,
    /// `IOT_ANOMALY_PROBABILITY`: chance that a reading is an injected anomaly.
    pub anomaly_probability: f64,
    /// `IOT_SIMULATOR_SEED`: seed of the simulator; random when unset.
    pub simulator_seed: Option<u64>,
    /// `LOG_LEVEL`: the least severe log level written.
    pub log_level: LogLevel,
    /// `ENVIRONMENT`: `production` also writes JSON log files.
    pub environment: String,
    /// `METROCLOUD_LOG_DIR`: where log files go in production.
    pub log_dir: PathBuf,
    /// `KAFKA_PRODUCER_*`: batching, buffering, compression, timeouts and retries.
    pub producer: ProducerSettings,
    /// `KAFKA_CONSUMER_*`: commits, fetches and timeouts.
    pub consumer: ConsumerSettings,
    /// `KAFKA_STARTUP_WAIT_SEC`: how long a program waits, at start, for a
    /// cluster that does not answer yet (or has too few brokers) before giving up.
    pub startup_wait: Duration,
    /// `KAFKA_ALERTS_TOPIC`: where alerts go.
    pub alerts_topic: String,
    /// `KAFKA_DLQ_TOPIC`: where records that fail validation go.
    pub dlq_topic: String,
    /// `ALERT_*`: thresholds and timings of the alert rules.
    pub alerts: AlertSettings,
}

/// How the consumer commits and fetches (`KAFKA_CONSUMER_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// `KAFKA_CONSUMER_COMMIT_INTERVAL_MS`: processed offsets are committed this often
    /// (and on shutdown and when a partition is taken away).
    pub commit_interval: Duration,
    /// `KAFKA_CONSUMER_FETCH_MAX_BYTES`: most bytes one fetch returns for one partition.
    pub fetch_max_bytes: usize,
    /// `KAFKA_CONSUMER_FETCH_MAX_WAIT_MS`: how long a broker holds a fetch open waiting for data.
    pub fetch_max_wait: Duration,
    /// `KAFKA_CONSUMER_REQUEST_TIMEOUT_MS`: one request may take this long.
    pub request_timeout: Duration,
    /// `KAFKA_CONSUMER_REBALANCE_TIMEOUT_MS`: time the group gives a member to hand back partitions.
    pub rebalance_timeout: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            commit_interval: Duration::from_secs(5),
            fetch_max_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            request_timeout: Duration::from_secs(30),
            rebalance_timeout: Duration::from_secs(60),
        }
    }
}

/// How the producer batches, buffers and retries (`KAFKA_PRODUCER_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSettings {
    /// `KAFKA_PRODUCER_LINGER_MS`: how long a batch waits for more records.
    pub linger: Duration,
    /// `KAFKA_PRODUCER_BATCH_BYTES`: a batch is sent once it holds this many bytes.
    pub batch_bytes: usize,
    /// `KAFKA_PRODUCER_BUFFER_BYTES`: records waiting for acknowledgement, at most; a full
    /// buffer makes `send` wait.
    pub buffer_bytes: usize,
    /// `KAFKA_PRODUCER_COMPRESSION`: `none`, `gzip` or `snappy`.
    pub compression: Compression,
    /// `KAFKA_PRODUCER_DELIVERY_TIMEOUT_MS`: a record not acknowledged by then has failed.
    pub delivery_timeout: Duration,
    /// `KAFKA_PRODUCER_REQUEST_TIMEOUT_MS`: one produce request (or connection) may take this long.
    pub request_timeout: Duration,
    /// `KAFKA_PRODUCER_RETRY_BACKOFF_MS`: first pause before a retry.
    pub retry_backoff: Duration,
    /// `KAFKA_PRODUCER_RETRY_BACKOFF_MAX_MS`: longest pause between retries.
    pub retry_backoff_max: Duration,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            linger: Duration::from_millis(5),
            batch_bytes: 512 * 1024,
            buffer_bytes: 32 * 1024 * 1024,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
        }
    }
}

/// Compression of record batches; lz4 and zstd are left out because they need C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip (pure-Rust miniz_oxide).
    Gzip,
    /// Snappy (pure-Rust snap).
    Snappy,
}

impl FromStr for Compression {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
        })
    }
}

/// A configuration value that is not allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value outside what it allows.
    #[error("invalid configuration: {variable}={value:?}: expected {allowed}")]
    Invalid {
        /// The environment variable.
        variable: &'static str,
        /// The value it holds.
        value: String,
        /// What the variable accepts.
        allowed: String,
    },
    /// The environment itself could not be read (for example a value that is not UTF-8).
    #[error("invalid configuration: {0}")]
    Environment(#[from] envy::Error),
}

/// Default brokers: the three client ports of the local cluster.
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "localhost:29092,localhost:29093,localhost:29094";

impl Config {
    /// Reads and validates the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let raw: RawConfig = envy::from_env()?;
        Config::from_raw(raw)
    }

    /// Reads and validates the configuration from the given variables.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars.into_iter().map(|(k, v)| (k.into(), v.into()));
        let raw: RawConfig = envy::from_iter(vars)?;
        Config::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let bootstrap = raw
            .kafka_bootstrap_servers
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP_SERVERS.to_string());
        let bootstrap_servers = parse_bootstrap_servers(&bootstrap).map_err(|allowed| {
            invalid("KAFKA_BOOTSTRAP_SERVERS", &bootstrap, allowed.to_string())
        })?;

        let topic = name(
            "KAFKA_TOPIC_NAME",
            raw.kafka_topic_name,
            "iot-sensor-data",
            topic_name_rule,
        )?;
        let consumer_group_id = name(
            "KAFKA_CONSUMER_GROUP_ID",
            raw.kafka_consumer_group_id,
            "iot-data-consumer",
            |s| {
                if s.trim().is_empty() {
                    Err("a non-empty group id")
                } else {
                    Ok(())
                }
            },
        )?;
        let auto_offset_reset = parsed(
            "KAFKA_AUTO_OFFSET_RESET",
            raw.kafka_auto_offset_reset,
            OffsetReset::Earliest,
            "one of earliest, latest",
        )?;
        let replication_factor: i16 = in_range(
            "KAFKA_REPLICATION_FACTOR",
            raw.kafka_replication_factor,
            3,
            1,
            i16::MAX,
        )?;
        let partitions: i32 = in_range("KAFKA_PARTITIONS", raw.kafka_partitions, 6, 1, 100_000)?;
        let min_insync_replicas: i16 = in_range(
            "KAFKA_MIN_INSYNC_REPLICAS",
            raw.kafka_min_insync_replicas,
            2,
            1,
            i16::MAX,
        )?;
        let num_devices: u32 = in_range("IOT_NUM_DEVICES", raw.iot_num_devices, 8, 1, 10_000_000)?;

        let interval_allowed = "a number of seconds greater than 0 and at most 86400 (e.g. 0.5)";
        let interval_secs: f64 = parsed(
            "IOT_DATA_INTERVAL_SEC",
            raw.iot_data_interval_sec.clone(),
            1.0,
            interval_allowed,
        )?;
        if !(interval_secs.is_finite() && interval_secs > 0.0 && interval_secs <= 86_400.0) {
            return Err(invalid(
                "IOT_DATA_INTERVAL_SEC",
                raw.iot_data_interval_sec.as_deref().unwrap_or_default(),
                interval_allowed.to_string(),
            ));
        }

        let device_types = match raw.iot_device_types {
            None => DeviceType::ALL.to_vec(),
            Some(given) => parse_device_types(&given)?,
        };

        let probability_allowed = "a probability between 0.0 and 1.0";
        let anomaly_probability: f64 = parsed(
            "IOT_ANOMALY_PROBABILITY",
            raw.iot_anomaly_probability.clone(),
            0.05,
            probability_allowed,
        )?;
        if !(0.0..=1.0).contains(&anomaly_probability) {
            return Err(invalid(
                "IOT_ANOMALY_PROBABILITY",
                raw.iot_anomaly_probability.as_deref().unwrap_or_default(),
                probability_allowed.to_string(),
            ));
        }

        let simulator_seed = match raw.iot_simulator_seed {
            Some(seed) if !seed.trim().is_empty() => Some(parsed(
                "IOT_SIMULATOR_SEED",
                Some(seed),
                0u64,
                "a whole number from 0 to 18446744073709551615, or nothing for a random seed",
            )?),
            _ => None,
        };

        let log_level = parsed(
            "LOG_LEVEL",
            raw.log_level,
            LogLevel::Info,
            "one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL",
        )?;
        let environment = raw.environment.unwrap_or_else(|| "development".to_string());
        let log_dir = PathBuf::from(raw.metrocloud_log_dir.unwrap_or_else(|| "logs".to_string()));

        let defaults = ProducerSettings::default();
        let millis =
            |variable: &'static str, given: Option<String>, default: Duration, min: u64| {
                in_range(variable, given, default.as_millis() as u64, min, 86_400_000)
                    .map(Duration::from_millis)
            };
        let producer = ProducerSettings {
            linger: millis(
                "KAFKA_PRODUCER_LINGER_MS",
                raw.kafka_producer_linger_ms,
                defaults.linger,
                0,
            )?,
            batch_bytes: in_range(
                "KAFKA_PRODUCER_BATCH_BYTES",
                raw.kafka_producer_batch_bytes,
                defaults.batch_bytes,
                1024,
                64 * 1024 * 1024,
            )?,
            buffer_bytes: in_range(
                "KAFKA_PRODUCER_BUFFER_BYTES",
                raw.kafka_producer_buffer_bytes,
                defaults.buffer_bytes,
                64 * 1024,
                usize::try_from(u32::MAX).unwrap_or(usize::MAX),
            )?,
            compression: parsed(
                "KAFKA_PRODUCER_COMPRESSION",
                raw.kafka_producer_compression,
                defaults.compression,
                "one of none, gzip, snappy (lz4 and zstd would need C)",
            )?,
            delivery_timeout: millis(
                "KAFKA_PRODUCER_DELIVERY_TIMEOUT_MS",
                raw.kafka_producer_delivery_timeout_ms,
                defaults.delivery_timeout,
                1,
            )?,
            request_timeout: millis(
                "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS",
                raw.kafka_producer_request_timeout_ms,
                defaults.request_timeout,
                1,
            )?,
            retry_backoff: millis(
                "KAFKA_PRODUCER_RETRY_BACKOFF_MS",
                raw.kafka_producer_retry_backoff_ms,
                defaults.retry_backoff,
                1,
            )?,
            retry_backoff_max: millis(
                "KAFKA_PRODUCER_RETRY_BACKOFF_MAX_MS",
                raw.kafka_producer_retry_backoff_max_ms,
                defaults.retry_backoff_max,
                1,
            )?,
        };

        let defaults = ConsumerSettings::default();
        let consumer = ConsumerSettings {
            commit_interval: millis(
                "KAFKA_CONSUMER_COMMIT_INTERVAL_MS",
                raw.kafka_consumer_commit_interval_ms,
                defaults.commit_interval,
                1,
            )?,
            fetch_max_bytes: in_range(
                "KAFKA_CONSUMER_FETCH_MAX_BYTES",
                raw.kafka_consumer_fetch_max_bytes,
                defaults.fetch_max_bytes,
                1024,
                64 * 1024 * 1024,
            )?,
            fetch_max_wait: millis(
                "KAFKA_CONSUMER_FETCH_MAX_WAIT_MS",
                raw.kafka_consumer_fetch_max_wait_ms,
                defaults.fetch_max_wait,
                0,
            )?,
            request_timeout: millis(
                "KAFKA_CONSUMER_REQUEST_TIMEOUT_MS",
                raw.kafka_consumer_request_timeout_ms,
                defaults.request_timeout,
                1,
            )?,
            rebalance_timeout: millis(
                "KAFKA_CONSUMER_REBALANCE_TIMEOUT_MS",
                raw.kafka_consumer_rebalance_timeout_ms,
                defaults.rebalance_timeout,
                1,
            )?,
        };

        let startup_wait = in_range(
            "KAFKA_STARTUP_WAIT_SEC",
            raw.kafka_startup_wait_sec,
            300,
            0,
            86_400 * 7,
        )
        .map(Duration::from_secs)?;
        let alerts_topic = name(
            "KAFKA_ALERTS_TOPIC",
            raw.kafka_alerts_topic,
            "iot-alerts",
            topic_name_rule,
        )?;
        let dlq_topic = name(
            "KAFKA_DLQ_TOPIC",
            raw.kafka_dlq_topic,
            &format!("{topic}-dlq"),
            topic_name_rule,
        )?;
        let defaults = AlertSettings::default();
        let number = |variable: &'static str, given: Option<String>, default: f64| {
            parsed(variable, given, default, "a number").and_then(|v: f64| {
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(invalid(
                        variable,
                        &v.to_string(),
                        "a finite number".to_string(),
                    ))
                }
            })
        };
        let seconds = |variable: &'static str, given: Option<String>, default: Duration| {
            in_range(variable, given, default.as_secs(), 0, 86_400 * 30).map(Duration::from_secs)
        };
        let alerts = AlertSettings {
            temperature_high: number(
                "ALERT_TEMPERATURE_HIGH_C",
                raw.alert_temperature_high_c,
                defaults.temperature_high,
            )?,
            temperature_low: number(
                "ALERT_TEMPERATURE_LOW_C",
                raw.alert_temperature_low_c,
                defaults.temperature_low,
            )?,
            humidity_high: number(
                "ALERT_HUMIDITY_HIGH_PCT",
                raw.alert_humidity_high_pct,
                defaults.humidity_high,
            )?,
            pressure_low: number(
                "ALERT_PRESSURE_LOW_HPA",
                raw.alert_pressure_low_hpa,
                defaults.pressure_low,
            )?,
            light_low: number(
                "ALERT_LIGHT_LOW_LUX",
                raw.alert_light_low_lux,
                defaults.light_low,
            )?,
            battery_low: number(
                "ALERT_BATTERY_LOW_PCT",
                raw.alert_battery_low_pct,
                defaults.battery_low,
            )?,
            silence: seconds(
                "ALERT_DEVICE_SILENT_SEC",
                raw.alert_device_silent_sec,
                defaults.silence,
            )?,
            cooldown: seconds(
                "ALERT_COOLDOWN_SEC",
                raw.alert_cooldown_sec,
                defaults.cooldown,
            )?,
        };

        Ok(Config {
            bootstrap_servers,
            topic,
            consumer_group_id,
            auto_offset_reset,
            replication_factor,
            partitions,
            min_insync_replicas,
            num_devices,
            data_interval: Duration::from_secs_f64(interval_secs),
            device_types,
            anomaly_probability,
            simulator_seed,
            log_level,
            environment,
            log_dir,
            producer,
            consumer,
            startup_wait,
            alerts_topic,
            dlq_topic,
            alerts,
        })
    }

    /// The bootstrap servers as `host:port` strings, as Kafka clients take them.
    pub fn bootstrap_strings(&self) -> Vec<String> {
        self.bootstrap_servers
            .iter()
            .map(|b| b.to_string())
            .collect()
    }

    /// Whether file logging is on (`ENVIRONMENT=production`).
    pub fn is_production(&self) -> bool {
        self.environment.eq_ignore_ascii_case("production")
    }

    /// The effective configuration as `VARIABLE=value` lines, in the form a `.env` file takes.
    pub fn to_env_lines(&self) -> Vec<(&'static str, String)> {
        let types: Vec<&str> = self.device_types.iter().map(|t| t.as_str()).collect();
        vec![
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                self.bootstrap_strings().join(","),
            ),
            ("KAFKA_TOPIC_NAME", self.topic.clone()),
            ("KAFKA_CONSUMER_GROUP_ID", self.consumer_group_id.clone()),
            (
                "KAFKA_AUTO_OFFSET_RESET",
                self.auto_offset_reset.to_string(),
            ),
            (
                "KAFKA_REPLICATION_FACTOR",
                self.replication_factor.to_string(),
            ),
            ("KAFKA_PARTITIONS", self.partitions.to_string()),
            (
                "KAFKA_MIN_INSYNC_REPLICAS",
                self.min_insync_replicas.to_string(),
            ),
            ("IOT_NUM_DEVICES", self.num_devices.to_string()),
            (
                "IOT_DATA_INTERVAL_SEC",
                self.data_interval.as_secs_f64().to_string(),
            ),
            ("IOT_DEVICE_TYPES", types.join(",")),
            (
                "IOT_ANOMALY_PROBABILITY",
                self.anomaly_probability.to_string(),
            ),
            (
                "IOT_SIMULATOR_SEED",
                self.simulator_seed
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            ),
            ("LOG_LEVEL", self.log_level.to_string()),
            ("ENVIRONMENT", self.environment.clone()),
            ("METROCLOUD_LOG_DIR", self.log_dir.display().to_string()),
            (
                "KAFKA_PRODUCER_LINGER_MS",
                self.producer.linger.as_millis().to_string(),
            ),
            (
                "KAFKA_PRODUCER_BATCH_BYTES",
                self.producer.batch_bytes.to_string(),
            ),
            (
                "KAFKA_PRODUCER_BUFFER_BYTES",
                self.producer.buffer_bytes.to_string(),
            ),
            (
                "KAFKA_PRODUCER_COMPRESSION",
                self.producer.compression.to_string(),
            ),
            (
                "KAFKA_PRODUCER_DELIVERY_TIMEOUT_MS",
                self.producer.delivery_timeout.as_millis().to_string(),
            ),
            (
                "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS",
                self.producer.request_timeout.as_millis().to_string(),
            ),
            (
                "KAFKA_PRODUCER_RETRY_BACKOFF_MS",
                self.producer.retry_backoff.as_millis().to_string(),
            ),
            (
                "KAFKA_PRODUCER_RETRY_BACKOFF_MAX_MS",
                self.producer.retry_backoff_max.as_millis().to_string(),
            ),
            (
                "KAFKA_CONSUMER_COMMIT_INTERVAL_MS",
                self.consumer.commit_interval.as_millis().to_string(),
            ),
            (
                "KAFKA_CONSUMER_FETCH_MAX_BYTES",
                self.consumer.fetch_max_bytes.to_string(),
            ),
            (
                "KAFKA_CONSUMER_FETCH_MAX_WAIT_MS",
                self.consumer.fetch_max_wait.as_millis().to_string(),
            ),
            (
                "KAFKA_CONSUMER_REQUEST_TIMEOUT_MS",
                self.consumer.request_timeout.as_millis().to_string(),
            ),
            (
                "KAFKA_CONSUMER_REBALANCE_TIMEOUT_MS",
                self.consumer.rebalance_timeout.as_millis().to_string(),
            ),
            (
                "KAFKA_STARTUP_WAIT_SEC",
                self.startup_wait.as_secs().to_string(),
            ),
            ("KAFKA_ALERTS_TOPIC", self.alerts_topic.clone()),
            ("KAFKA_DLQ_TOPIC", self.dlq_topic.clone()),
            (
                "ALERT_TEMPERATURE_HIGH_C",
                self.alerts.temperature_high.to_string(),
            ),
            (
                "ALERT_TEMPERATURE_LOW_C",
                self.alerts.temperature_low.to_string(),
            ),
            (
                "ALERT_HUMIDITY_HIGH_PCT",
                self.alerts.humidity_high.to_string(),
            ),
            (
                "ALERT_PRESSURE_LOW_HPA",
                self.alerts.pressure_low.to_string(),
            ),
            ("ALERT_LIGHT_LOW_LUX", self.alerts.light_low.to_string()),
            ("ALERT_BATTERY_LOW_PCT", self.alerts.battery_low.to_string()),
            (
                "ALERT_DEVICE_SILENT_SEC",
                self.alerts.silence.as_secs().to_string(),
            ),
            (
                "ALERT_COOLDOWN_SEC",
                self.alerts.cooldown.as_secs().to_string(),
            ),
        ]
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default()).expect("the defaults are valid")
    }
}

fn invalid(variable: &'static str, value: &str, allowed: String) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: value.to_string(),
        allowed,
    }
}

fn parsed<T: FromStr>(
    variable: &'static str,
    given: Option<String>,
    default: T,
    allowed: &str,
) -> Result<T, ConfigError> {
    match given {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| invalid(variable, &value, allowed.to_string())),
    }
}

fn in_range<T>(
    variable: &'static str,
    given: Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let allowed = format!("a whole number from {min} to {max}");
    let value = parsed(variable, given.clone(), default, &allowed)?;
    if value < min || value > max {
        return Err(invalid(variable, &given.unwrap_or_default(), allowed));
    }
    Ok(value)
}

fn name(
    variable: &'static str,
    given: Option<String>,
    default: &str,
    rule: impl Fn(&str) -> Result<(), &'static str>,
) -> Result<String, ConfigError> {
    let value = given.unwrap_or_else(|| default.to_string());
    rule(&value).map_err(|allowed| invalid(variable, &value, allowed.to_string()))?;
    Ok(value)
}

/// Kafka's own rule for topic names: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn topic_name_rule(name: &str) -> Result<(), &'static str> {
    let allowed = "a topic name of 1 to 249 characters from a-z, A-Z, 0-9, '.', '_', '-'";
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 249 || !valid_chars || name == "." || name == ".." {
        Err(allowed)
    } else {
        Ok(())
    }
}

fn parse_device_types(given: &str) -> Result<Vec<DeviceType>, ConfigError> {
    let names: Vec<&str> = DeviceType::ALL.iter().map(|t| t.as_str()).collect();
    let allowed = format!(
        "a comma-separated list of device types from {}",
        names.join(", ")
    );
    let mut types = Vec::new();
    for part in given.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let kind: DeviceType = part
            .parse()
            .map_err(|_| invalid("IOT_DEVICE_TYPES", given, allowed.clone()))?;
        if !types.contains(&kind) {
            types.push(kind);
        }
    }
    if types.is_empty() {
        return Err(invalid("IOT_DEVICE_TYPES", given, allowed));
    }
    Ok(types)
}

fn parse_bootstrap_servers(given: &str) -> Result<Vec<BrokerAddress>, &'static str> {
    let allowed = "a comma-separated list of host:port (e.g. localhost:29092,localhost:29093)";
    let servers: Result<Vec<_>, _> = given
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<BrokerAddress>().map_err(|_| allowed))
        .collect();
    match servers {
        Ok(servers) if !servers.is_empty() => Ok(servers),
        _ => Err(allowed),
    }
}

/// A broker's `host:port`, checked for shape (not resolved).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddress {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl FromStr for BrokerAddress {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (host, port) = s.rsplit_once(':').ok_or(())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        let port: u16 = port.parse().map_err(|_| ())?;
        if !host_ok || port == 0 {
            return Err(());
        }
        Ok(BrokerAddress {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// From the oldest record still kept.
    Earliest,
    /// From the next record produced.
    Latest,
}

impl FromStr for OffsetReset {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            _ => Err(()),
        }
    }
}

impl fmt::Display for OffsetReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        })
    }
}

/// `LOG_LEVEL`, with Python's level names (`WARNING`, `CRITICAL`) accepted as the original design used them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostic detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warning,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The matching `tracing` filter directive.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().as_str() {
            "TRACE" => Ok(LogLevel::Trace),
            "DEBUG" => Ok(LogLevel::Debug),
            "INFO" => Ok(LogLevel::Info),
            "WARN" | "WARNING" => Ok(LogLevel::Warning),
            "ERROR" | "CRITICAL" => Ok(LogLevel::Error),
            _ => Err(()),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_for(variable: &str, value: &str) -> String {
        Config::from_vars([(variable, value)])
            .expect_err("value must be refused")
            .to_string()
    }

    #[test]
    fn defaults_are_the_original_designs() {
        let config = Config::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(config.topic, "iot-sensor-data");
        assert_eq!(config.consumer_group_id, "iot-data-consumer");
        assert_eq!(config.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.partitions, 6);
        assert_eq!(config.min_insync_replicas, 2);
        assert_eq!(config.num_devices, 8);
        assert_eq!(config.data_interval, Duration::from_secs(1));
        assert_eq!(config.device_types, DeviceType::ALL.to_vec());
        assert_eq!(config.anomaly_probability, 0.05);
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(
            config.bootstrap_strings(),
            ["localhost:29092", "localhost:29093", "localhost:29094"]
        );
    }

    #[test]
    fn each_bad_value_names_its_variable_value_and_what_is_allowed() {
        let message = error_for("IOT_ANOMALY_PROBABILITY", "1.5");
        assert!(
            message.contains("IOT_ANOMALY_PROBABILITY=\"1.5\""),
            "{message}"
        );
        assert!(message.contains("between 0.0 and 1.0"), "{message}");

        assert!(error_for("KAFKA_PARTITIONS", "0").contains("KAFKA_PARTITIONS=\"0\""));
        assert!(error_for("IOT_DEVICE_TYPES", "temperature,thermostat").contains("humidity"));
        assert!(error_for("KAFKA_BOOTSTRAP_SERVERS", "localhost").contains("host:port"));
        assert!(error_for("KAFKA_BOOTSTRAP_SERVERS", "a:99999").contains("host:port"));
        assert!(error_for("KAFKA_AUTO_OFFSET_RESET", "sometimes").contains("earliest, latest"));
        assert!(error_for("IOT_DATA_INTERVAL_SEC", "-1").contains("greater than 0"));
        assert!(error_for("LOG_LEVEL", "LOUD").contains("LOG_LEVEL"));
        assert!(error_for("IOT_SIMULATOR_SEED", "-3").contains("random seed"));
        assert!(error_for("KAFKA_PRODUCER_COMPRESSION", "lz4").contains("need C"));
        assert!(error_for("KAFKA_PRODUCER_LINGER_MS", "soon").contains("KAFKA_PRODUCER_LINGER_MS"));
        assert!(error_for("KAFKA_TOPIC_NAME", "a topic").contains("KAFKA_TOPIC_NAME"));
    }

    #[test]
    fn lists_are_trimmed_and_python_level_names_accepted() {
        let config = Config::from_vars([
            ("KAFKA_BOOTSTRAP_SERVERS", " 127.0.0.1:9092 , [::1]:9093 "),
            ("IOT_DEVICE_TYPES", "Light, motion,light"),
            ("LOG_LEVEL", "critical"),
        ])
        .unwrap();
        assert_eq!(config.bootstrap_strings(), ["127.0.0.1:9092", "[::1]:9093"]);
        assert_eq!(
            config.device_types,
            [DeviceType::Light, DeviceType::Motion].to_vec()
        );
        assert_eq!(config.log_level, LogLevel::Error);
    }
}
