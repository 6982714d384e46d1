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

pub mod aggregates;
pub mod compact;
pub mod history;
pub mod layout;
pub mod minutes;
pub mod parquet;
pub mod postgres;
pub mod readings;
pub mod row;
#[cfg(test)]
mod tests;
mod text;

use std::path::PathBuf;
use std::time::Duration;

pub use self::parquet::{ParquetStore, StoreStats};
pub use self::postgres::PostgresStore;

use std::sync::Arc;

use row::{Origin, Row};

/// Where the storage stage keeps readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Parquet files under the data folder (the default).
    Parquet,
    /// A PostgreSQL table.
    Postgres,
    /// Nowhere: `metrocloud run` does not store.
    Off,
}

/// What the storage stage is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// Where readings are kept (and whether `metrocloud run` stores them).
    pub kind: StoreKind,
    /// The PostgreSQL connection URL, for [`StoreKind::Postgres`].
    pub postgres_url: Option<String>,
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
            kind: StoreKind::Parquet,
            postgres_url: None,
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
    /// PostgreSQL refused or did not answer.
    #[error("PostgreSQL {server} (METROCLOUD_POSTGRES_URL): cannot {what}: {reason}")]
    Postgres {
        /// `user@host:port/db`, never the password.
        server: String,
        /// What was being done.
        what: String,
        /// The server's message, or why there was none.
        reason: String,
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

impl StoreError {
    /// For `map_err`: an I/O failure on `path`.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    }

    /// For `map_err`: the Parquet encoder or decoder refusing `path`.
    pub fn parquet(
        path: &std::path::Path,
    ) -> impl FnOnce(::parquet::errors::ParquetError) -> StoreError + use<> {
        let path = path.to_path_buf();
        move |source| StoreError::Parquet { path, source }
    }
}

/// The store the storage stage writes one kind of row to: one of the kinds above.
pub enum RowStore<R: Row> {
    /// Parquet files.
    Parquet(ParquetStore<R>),
    /// A PostgreSQL table.
    Postgres(PostgresStore<R>),
}

impl<R: Row> RowStore<R> {
    /// Opens the configured store of `topic`'s rows (`None` when storing is off).
    pub async fn open(
        settings: &StoreSettings,
        topic: &str,
        stats: Arc<StoreStats>,
        timeout: std::time::Duration,
    ) -> Result<Option<RowStore<R>>, StoreError> {
        Ok(match settings.kind {
            StoreKind::Parquet => Some(RowStore::Parquet(ParquetStore::open(
                settings, topic, stats,
            )?)),
            StoreKind::Postgres => {
                let url = settings.postgres_url.as_deref().unwrap_or_default();
                Some(RowStore::Postgres(
                    PostgresStore::connect(url, timeout, stats).await?,
                ))
            }
            StoreKind::Off => None,
        })
    }

    /// Where the readings go, for the log.
    pub fn describe(&self) -> String {
        match self {
            RowStore::Parquet(store) => {
                format!("Parquet files under {}", store.root().display())
            }
            RowStore::Postgres(store) => {
                format!("PostgreSQL {}, table {}", store.server(), R::TABLE)
            }
        }
    }

    /// Takes a row read from `origin`.
    pub async fn append(&mut self, row: R, origin: Origin) -> Result<(), StoreError> {
        match self {
            RowStore::Parquet(store) => store.append(&row, origin),
            RowStore::Postgres(store) => store.append(row, origin).await,
        }
    }

    /// The first offset of `partition` not durable yet; the consumer commits no further.
    pub fn held_from(&self, partition: i32) -> Option<i64> {
        match self {
            RowStore::Parquet(store) => store.held_from(partition),
            RowStore::Postgres(store) => store.held_from(partition),
        }
    }

    /// Whether the store wants to make readings durable before the commit interval is up.
    pub fn due(&self) -> bool {
        match self {
            RowStore::Parquet(store) => store.roll_due(),
            // It writes full batches as they fill; the rest at each commit.
            RowStore::Postgres(_) => false,
        }
    }

    /// Makes durable what is due (everything, with `everything`).
    pub async fn make_durable(&mut self, everything: bool) -> Result<(), StoreError> {
        match self {
            RowStore::Parquet(store) => store.roll(everything),
            RowStore::Postgres(store) => store.write().await,
        }
    }

    /// Merges small files that are due; see [`ParquetStore::compact`].
    pub async fn compact(&mut self) {
        if let RowStore::Parquet(store) = self {
            store.compact().await;
        }
    }

    /// Waits for a compaction that runs.
    pub async fn finish_compaction(&mut self) {
        if let RowStore::Parquet(store) = self {
            store.finish_compaction().await;
        }
    }

    /// `partition` is committed up to `offset`.
    pub fn committed(&mut self, partition: i32, offset: i64) {
        if let RowStore::Parquet(store) = self {
            store.committed(partition, offset);
        }
    }

    /// `partitions` moved to another member: what they hold is dropped.
    pub fn forget(&mut self, partitions: &[i32]) {
        match self {
            RowStore::Parquet(store) => store.forget(partitions),
            RowStore::Postgres(store) => store.forget(partitions),
        }
    }
}
