//! What the store keeps: kinds of row, each with its Parquet columns and its
//! PostgreSQL table, written by the same exactly-once machinery.
//!
//! Two kinds exist: readings ([`super::readings`]) and per-device minute
//! aggregates ([`super::aggregates`]). A kind says where its rows go (a folder
//! under the data folder and a table), how a Kafka record becomes a row, the
//! event time that picks its hour folder and its day's table partition, and
//! how it is written column by column. Everything else (file naming, rolls,
//! commits, batches) is the same for every kind.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parquet::file::writer::SerializedRowGroupWriter;
use parquet::schema::types::Type as ParquetType;
use tokio_postgres::types::{ToSql, Type as SqlType};

/// Rows per row group: what an open file holds in memory at most, about
/// 250 bytes a reading (`metrocloud store` over 2.1 million readings in six
/// partitions peaked at 190 MB resident with 32,768).
pub const ROW_GROUP_ROWS: usize = 16_384;

/// Where a row was read from in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Kafka partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
}

/// A kind of row the store keeps; see the module documentation.
pub trait Row: Send + Sync + Sized + 'static {
    /// The folder under the data folder (`readings`, `aggregates`).
    const FOLDER: &'static str;
    /// The PostgreSQL table.
    const TABLE: &'static str;
    /// The statement creating the table, partitioned by range of [`Row::TIME_COLUMN`].
    const CREATE_TABLE: &'static str;
    /// The event time's column.
    const TIME_COLUMN: &'static str;
    /// The table's columns in `COPY` order, with their types.
    const COPY_COLUMNS: &'static [(&'static str, SqlType)];
    /// Rows taken apart into Parquet columns.
    type Columns: RowColumns<Self>;

    /// The row a Kafka record holds, or `None` if it holds no valid one.
    fn from_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<Self>;

    /// The time that decides the row's hour folder and day partition.
    fn event_time(&self) -> DateTime<Utc>;

    /// Calls `encode` with the row's values, read from `origin`, in
    /// [`Row::COPY_COLUMNS`] order.
    fn with_values<T>(&self, origin: Origin, encode: impl FnOnce(&[&(dyn ToSql + Sync)]) -> T)
    -> T;
}

/// Rows gathered column by column, written a row group at a time.
pub trait RowColumns<R>: Default + Send {
    /// The Parquet schema of the files.
    fn schema() -> Arc<ParquetType>;

    /// Adds one row read from `origin`.
    fn push(&mut self, row: &R, origin: Origin);

    /// Rows gathered.
    fn len(&self) -> usize;

    /// Whether none are.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the gathered rows as the row group `group`'s columns and empties the columns.
    fn write<W: std::io::Write + Send>(
        &mut self,
        group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> parquet::errors::Result<()>;
}
