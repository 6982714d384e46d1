//! Where readings are kept for querying after Kafka's retention: Parquet files.
//!
//! The store is written by its own consumer group (`iot-storage` by default),
//! so storing and alerting fail and scale apart. It keeps each reading exactly
//! once, the way Kafka Connect's S3 sink does:
//!
//! - Records of a Kafka partition go to files opened for it alone, one per
//!   hour of event time they fall in ([`layout`]); a file is named by the
//!   topic, the partition and its first record's offset.
//! - A *roll* closes every open file of a partition at once: each is written
//!   under a temporary name, flushed to disk, renamed into place, and its
//!   folder flushed. Only then may the consumer commit, and only up to the
//!   first record still held in an open file ([`ParquetStore::held_from`]).
//! - A partition rolls again only after its previous roll was committed. So
//!   after a crash, reading again from the last commit starts at a point no
//!   file spans, and the first file of each folder gets the name it had: it
//!   replaces the file of the roll that was renamed but not committed, and
//!   no record is stored twice or lost.
//!
//! Records that are not valid readings never reach the store (processing
//! puts them in the dead-letter topic). Rolls happen when a partition holds
//! `METROCLOUD_STORE_ROLL_ROWS` readings, when its oldest has waited
//! `METROCLOUD_STORE_ROLL_SEC`, and when the stage stops.

pub mod columns;
pub mod history;
pub mod layout;
pub mod parquet;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use self::parquet::{ParquetStore, StoreStats};

/// What the storage stage is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// Whether `metrocloud run` stores readings.
    pub enabled: bool,
    /// The folder the store's files go under.
    pub data_dir: PathBuf,
    /// The storage stage's consumer group.
    pub group_id: String,
    /// A partition's files roll once they hold this many readings together.
    pub roll_rows: u64,
    /// A partition's files roll once the oldest reading held waited this long.
    pub roll_after: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            enabled: true,
            data_dir: PathBuf::from("data"),
            group_id: "iot-storage".to_string(),
            roll_rows: 1_000_000,
            roll_after: Duration::from_secs(60),
        }
    }
}

/// Why the store cannot keep what it was given.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or folder could not be made, written, flushed or renamed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The Parquet encoder or decoder refused.
    #[error("Parquet file {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ::parquet::errors::ParquetError,
    },
    /// Another storage stage writes to the same folder.
    #[error(
        "{path} is locked by another metrocloud store writing to the same folder (METROCLOUD_DATA_DIR)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}
