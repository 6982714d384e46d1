//! Configuration from the environment, validated once at start.
//!
//! The variable names and defaults are the original design's, so an existing
//! `.env` file or Compose environment keeps working. Every variable is
//! declared once, in [`table`]: the environment is read raw (every variable a
//! string, through `envy`), then each declaration turns its text, or its
//! default, into a field of [`Config`]; the rest of the program only ever sees
//! valid values. A bad value is reported with the variable, the value given
//! and what is allowed, and the binaries exit with status 2 for it.

mod checked;
mod gateway;
mod group;
#[macro_use]
mod setting;
pub mod table;
pub use gateway::GatewaySettings;
mod values;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::cluster::secure::PipelineNames;
use crate::kafka::BrokerAddress;
use crate::kafka::consumer::{ConsumerSettings, OffsetReset};
use crate::kafka::producer::ProducerSettings;
use crate::kafka::security::{Brokers, Security};
use crate::kafka::topics::TopicSpec;
use crate::sensor::aggregate::AggregateSettings;
use crate::sensor::detect::DetectorSettings;
use crate::sensor::device::DeviceType;
use crate::sensor::fault::FaultKind;
use crate::sensor::rules::AlertSettings;
use crate::sensor::simulator::SimulatorSettings;
use crate::store::StoreSettings;
pub use table::{Group, SETTINGS, Setting};
pub use values::topic_name as topic_name_rule;

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
    /// `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`: how
    /// connections are made; checked, and TLS set up, when read.
    pub security: Security,
    /// `IOT_NUM_DEVICES`: simulated devices.
    pub num_devices: u32,
    /// `IOT_DATA_INTERVAL_SEC`: time between two readings of one device.
    pub data_interval: Duration,
    /// `IOT_DEVICE_TYPES`: the kinds of device simulated.
    pub device_types: Vec<DeviceType>,
    /// `IOT_ANOMALY_PROBABILITY`: chance that a reading is an injected anomaly.
    pub anomaly_probability: f64,
    /// `IOT_FAULT_PROBABILITY`: chance per reading that a healthy device starts a fault episode.
    pub fault_probability: f64,
    /// `IOT_FAULT_KINDS`: the fault kinds the simulator injects.
    pub fault_kinds: Vec<FaultKind>,
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
    /// `DETECT_FAULTS`: whether the consumer runs the fault detector.
    pub detect_faults: bool,
    /// `DETECT_*`: the fault detector.
    pub detector: DetectorSettings,
    /// `RUST_LOG`: a tracing filter that overrides `LOG_LEVEL`.
    pub rust_log: Option<String>,
    /// `METROCLOUD_STORE*`, `METROCLOUD_DATA_DIR`: the storage stage.
    pub store: StoreSettings,
    /// `KAFKA_AGGREGATES_TOPIC`: where per-device minute aggregates go.
    pub aggregates_topic: String,
    /// `METROCLOUD_AGGREGATE_*`: the aggregation stage.
    pub aggregate: AggregateSettings,
    /// `METROCLOUD_GATEWAY*`: the device gateway.
    pub gateway: GatewaySettings,
    /// `METROCLOUD_CLUSTER_DIR`: the local cluster's directory; unset, the XDG default.
    pub cluster_dir: Option<PathBuf>,
    /// `METROCLOUD_KAFKA_CACHE`: where Kafka's jars are cached; unset, the XDG default.
    pub kafka_cache: Option<PathBuf>,
    /// `METROCLOUD_KAFKA_HEAP`: the maximum heap of each local Kafka node.
    pub kafka_heap: String,
    /// `METROCLOUD_CONSOLE_ADDR`: where the console listens.
    pub console_addr: SocketAddr,
    /// `METROCLOUD_CONSOLE_TOKEN`: the token every console request must carry.
    pub console_token: Option<String>,
    /// `METROCLOUD_CONSOLE_TLS_CERT`, `_KEY`: HTTPS for the console (the tls feature).
    pub console_tls_cert: Option<PathBuf>,
    /// The key of that certificate.
    pub console_tls_key: Option<PathBuf>,
    /// `METROCLOUD_CHROMIUM`: the browser that loads console pages in benchmarks and tests.
    pub chromium: PathBuf,
    /// `METROCLOUD_CHROMEDRIVER`: its driver.
    pub chromedriver: PathBuf,
    /// The variables that were given, as opposed to left at their default.
    given: BTreeSet<&'static str>,
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
    /// The environment itself could not be read.
    #[error("invalid configuration: {0}")]
    Environment(#[from] envy::Error),
}

impl Config {
    /// Reads and validates the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut ours = Vec::new();
        for setting in SETTINGS {
            match std::env::var(setting.name) {
                Ok(value) => ours.push((setting.name.to_string(), value)),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(value)) => {
                    return Err(ConfigError::Invalid {
                        variable: setting.name,
                        value: value.to_string_lossy().into_owned(),
                        allowed: "UTF-8 text".to_string(),
                    });
                }
            }
        }
        Config::from_vars(ours)
    }

    /// Reads and validates the configuration from the given variables; others are ignored.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars.into_iter().map(|(k, v)| (k.into(), v.into()));
        // envy keys the variables by their lower-case names.
        let raw: HashMap<String, String> = envy::from_iter(vars)?;
        let mut config = Config::blank();
        for setting in SETTINGS {
            let given = raw.get(&setting.name.to_ascii_lowercase());
            let text = match (given, setting.derived) {
                (Some(value), _) => value.clone(),
                (None, Some(derive)) => derive(&config),
                // Unset, and unset by default: the field stays empty.
                (None, None) if setting.default.is_empty() => continue,
                (None, None) => setting.default.to_string(),
            };
            (setting.apply)(&mut config, &text).map_err(|allowed| ConfigError::Invalid {
                variable: setting.name,
                value: text.clone(),
                allowed,
            })?;
            if given.is_some() {
                config.given.insert(setting.name);
            }
        }
        config.security = checked::security(&config)?;
        checked::console_tls(&config)?;
        if config.store.kind == crate::store::StoreKind::Postgres
            && config.store.postgres_url.is_none()
        {
            return Err(ConfigError::Invalid {
                variable: "METROCLOUD_POSTGRES_URL",
                value: String::new(),
                allowed: "a PostgreSQL URL (postgresql://user:password@host:5432/db), since METROCLOUD_STORE=postgres".to_string(),
            });
        }
        Ok(config)
    }

    /// Every field at a placeholder; [`Config::from_vars`] sets each one from its declaration.
    fn blank() -> Config {
        Config {
            bootstrap_servers: Vec::new(),
            topic: String::new(),
            consumer_group_id: String::new(),
            auto_offset_reset: OffsetReset::Earliest,
            replication_factor: 0,
            partitions: 0,
            min_insync_replicas: 0,
            security: Security::default(),
            num_devices: 0,
            data_interval: Duration::ZERO,
            device_types: Vec::new(),
            anomaly_probability: 0.0,
            fault_probability: 0.0,
            fault_kinds: Vec::new(),
            simulator_seed: None,
            log_level: LogLevel::Info,
            environment: String::new(),
            log_dir: PathBuf::new(),
            producer: ProducerSettings::default(),
            consumer: ConsumerSettings::default(),
            startup_wait: Duration::ZERO,
            alerts_topic: String::new(),
            dlq_topic: String::new(),
            alerts: AlertSettings::default(),
            detect_faults: true,
            detector: DetectorSettings::default(),
            rust_log: None,
            store: StoreSettings::default(),
            aggregates_topic: String::new(),
            aggregate: AggregateSettings::default(),
            gateway: GatewaySettings::default(),
            cluster_dir: None,
            kafka_cache: None,
            kafka_heap: String::new(),
            console_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            console_token: None,
            console_tls_cert: None,
            console_tls_key: None,
            chromium: PathBuf::new(),
            chromedriver: PathBuf::new(),
            given: BTreeSet::new(),
        }
    }

    /// Sets one variable as if it had been given, with the same checks.
    pub fn set(&mut self, variable: &str, value: &str) -> Result<(), ConfigError> {
        let setting = table::setting(variable).ok_or_else(|| ConfigError::Invalid {
            variable: "(unknown)",
            value: variable.to_string(),
            allowed: "a declared setting".to_string(),
        })?;
        (setting.apply)(self, value).map_err(|allowed| ConfigError::Invalid {
            variable: setting.name,
            value: value.to_string(),
            allowed,
        })?;
        self.given.insert(setting.name);
        Ok(())
    }

    /// Whether the variable was given, rather than left at its default.
    pub fn is_given(&self, variable: &str) -> bool {
        self.given.contains(variable)
    }

    /// The bootstrap servers and how to reach them: what every Kafka client is given.
    pub fn brokers(&self) -> Brokers {
        Brokers::new(
            self.bootstrap_strings(),
            std::sync::Arc::new(self.security.clone()),
        )
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

    /// The sensor topic as the configuration describes it.
    pub fn sensor_topic(&self) -> TopicSpec {
        TopicSpec {
            name: self.topic.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            min_insync_replicas: self.min_insync_replicas,
        }
    }

    /// The names of the pipeline's four topics: readings, alerts, dead
    /// letters, aggregates.
    pub fn pipeline_topic_names(&self) -> [&str; 4] {
        [
            &self.topic,
            &self.alerts_topic,
            &self.dlq_topic,
            &self.aggregates_topic,
        ]
    }

    /// The pipeline's four topics, each as [`Config::sensor_topic`] describes
    /// the first.
    pub fn pipeline_topics(&self) -> Vec<TopicSpec> {
        self.pipeline_topic_names()
            .into_iter()
            .map(|name| TopicSpec {
                name: name.to_string(),
                ..self.sensor_topic()
            })
            .collect()
    }

    /// The names of the pipeline's topics and groups, for a secure cluster's ACLs.
    pub fn pipeline_names(&self) -> PipelineNames {
        PipelineNames {
            readings: self.topic.clone(),
            alerts: self.alerts_topic.clone(),
            dead_letters: self.dlq_topic.clone(),
            aggregates: self.aggregates_topic.clone(),
            consumer_group: self.consumer_group_id.clone(),
            aggregate_group: self.aggregate.group_id.clone(),
            store_groups: [
                self.store.group_id.clone(),
                format!("{}-aggregates", self.store.group_id),
            ],
        }
    }

    /// The simulator's settings; a random seed when `IOT_SIMULATOR_SEED` is unset.
    pub fn simulator_settings(&self) -> SimulatorSettings {
        SimulatorSettings {
            num_devices: self.num_devices,
            interval: self.data_interval,
            device_types: self.device_types.clone(),
            anomaly_probability: self.anomaly_probability,
            fault_probability: self.fault_probability,
            fault_kinds: self.fault_kinds.clone(),
            seed: self.simulator_seed.unwrap_or_else(rand::random),
        }
    }

    /// The effective configuration as `VARIABLE=value` lines, in the form a
    /// `.env` file takes; secrets are left out.
    pub fn to_env_lines(&self) -> Vec<(&'static str, String)> {
        SETTINGS
            .iter()
            .filter(|s| !s.secret)
            .map(|s| (s.name, (s.show)(self)))
            .collect()
    }

    /// The environment a child process of ours runs this configuration with:
    /// every setting, the secrets that are set included (handed over in the
    /// environment, never printed).
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.name, (s.show)(self))).collect()
    }

    /// The names of the secrets that are set.
    pub fn secrets_set(&self) -> Vec<&'static str> {
        SETTINGS
            .iter()
            .filter(|s| s.secret && !(s.show)(self).is_empty())
            .map(|s| s.name)
            .collect()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_vars(Vec::<(String, String)>::new()).expect("the defaults are valid")
    }
}

/// `.env.example`: every setting with its help and its default, by section.
pub fn env_example() -> String {
    let defaults = Config::default();
    let mut out = String::from(
        "# MetroCloud configuration. Copy to .env (or export) and change what you need;\n\
         # every value below is the default. `metrocloud config` prints what is in effect.\n\
         # Made from the declarations in src/config/table.rs (`metrocloud config --example`).\n",
    );
    let mut group = None;
    for setting in SETTINGS {
        if group != Some(setting.group) {
            group = Some(setting.group);
            out.push_str(&format!("\n# --- {} ---\n", setting.group.title()));
        }
        out.push_str(&format!("# {}\n", setting.help));
        let value = (setting.show)(&defaults);
        if setting.secret {
            out.push_str(&format!("# {}=\n", setting.name));
        } else {
            out.push_str(&format!("{}={value}\n", setting.name));
        }
    }
    out
}

/// The README's table of settings, in markdown.
pub fn markdown_table() -> String {
    let mut out = String::from("| Variable | Default | What it does |\n|---|---|---|\n");
    for setting in SETTINGS {
        let default = if setting.default.is_empty() {
            "(unset)".to_string()
        } else {
            format!("`{}`", setting.default)
        };
        out.push_str(&format!(
            "| `{}` | {default} | {} |\n",
            setting.name,
            setting.help.replace('|', "\\|")
        ));
    }
    out
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
mod tests;
