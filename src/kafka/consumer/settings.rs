//! How the consumer commits and fetches, and where a new group starts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
