//! How the producer batches, buffers and retries.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How the producer batches, buffers and retries (`KAFKA_PRODUCER_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSettings {
    /// `KAFKA_PRODUCER_LINGER_MS`: longest a record waits for more to share its
    /// batch while earlier batches are in flight (see the adaptive linger).
    pub linger: Duration,
    /// `KAFKA_PRODUCER_MAX_IN_FLIGHT`: batches on their way to a partition's leader at once (1–5).
    pub max_in_flight: usize,
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
    /// Shortest time between two requests to one broker (zero: none). Every
    /// produce request costs the brokers much the same, whatever it carries;
    /// spaced requests carry more each. Not from the environment: set by a
    /// caller whose records need not arrive soon.
    pub request_spacing: Duration,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            linger: Duration::from_millis(5),
            max_in_flight: 5,
            batch_bytes: 512 * 1024,
            buffer_bytes: 32 * 1024 * 1024,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_spacing: Duration::ZERO,
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
