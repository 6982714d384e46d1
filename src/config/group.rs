//! The sections settings are grouped in.

/// The sections of `.env.example` and of the README's table, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The cluster, the sensor topic and the consumer group.
    Kafka,
    /// SASL and TLS.
    Security,
    /// The simulated fleet.
    Simulator,
    /// Log output.
    Logging,
    /// Batching, buffering and retries.
    Producer,
    /// Group membership, commits and fetches.
    Consumer,
    /// Waiting for a cluster at start.
    Startup,
    /// Alert rules and the topics of alerts and dead letters.
    Alerts,
    /// The streaming fault detector.
    Detector,
    /// The storage stage and its files.
    Storage,
    /// The aggregation stage and its topic.
    Aggregates,
    /// The device gateway.
    Gateway,
    /// The local cluster of `metrocloud cluster`, `run`, `chaos` and `bench`.
    LocalCluster,
    /// The monitoring console.
    Console,
    /// The browser that loads console pages.
    Browser,
}

impl Group {
    /// The section's heading.
    pub fn title(self) -> &'static str {
        match self {
            Group::Kafka => "Kafka",
            Group::Security => "Security (SASL and TLS to the brokers)",
            Group::Simulator => "IoT simulator",
            Group::Logging => "Logging",
            Group::Producer => "Producer (batching, buffering, retries)",
            Group::Consumer => "Consumer (group, commits, fetches)",
            Group::Startup => "Start-up",
            Group::Alerts => "Alerts and dead letters",
            Group::Detector => "Fault detector (metrocloud detect, and the consumer)",
            Group::Storage => "Storage (metrocloud store, and metrocloud run)",
            Group::Aggregates => "Aggregates (metrocloud aggregate, and metrocloud run)",
            Group::Gateway => {
                "Device gateway (metrocloud gateway, and metrocloud run when METROCLOUD_GATEWAY=on)"
            }
            Group::LocalCluster => "Local cluster (metrocloud cluster, run, chaos, bench)",
            Group::Console => {
                "Console (metrocloud console, and metrocloud run unless --no-console)"
            }
            Group::Browser => {
                "Browser (page load times in metrocloud bench console and the console's browser test)"
            }
        }
    }
}
