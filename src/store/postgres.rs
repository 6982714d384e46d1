//! PostgreSQL, for teams that outgrow files: each kind of row in a table
//! partitioned by day (`sensor_readings`, `sensor_aggregates`).
//!
//! Rows gather in memory and are written in batches (at every flush, and
//! every 20,000 while the next batch gathers), each in one transaction:
//! binary `COPY` straight into the table, the fastest way into PostgreSQL,
//! encoded by the store in chunks of 256 KiB. If some rows are there already
//! (read again after a crash), that transaction is rolled back and the batch
//! goes through a temporary table and `INSERT … ON CONFLICT DO NOTHING`. The
//! key is the row itself (for a reading: device, run, sequence, and the event
//! time, which a partitioned table's key must hold; for an aggregate: device
//! and minute), so a replay inserts nothing twice, and the consumer commits
//! only after the transaction did.
//!
//! Each table is partitioned by range of event time (declarative
//! partitioning), one partition a day (`sensor_readings_20261202`), made when
//! the first row of the day arrives: old days can be detached or dropped
//! whole. Every call has a time limit.

use std::collections::{BTreeSet, HashMap};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{NaiveDate, TimeDelta};
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::row::{Origin, Row};
use super::{StoreError, StoreStats};

/// Readings gathered before the store asks for an early flush.
const BATCH_ROWS: usize = 20_000;

/// Readings kept in a PostgreSQL table; see the module documentation.
///
/// Readings gather into a batch; a full batch is handed to a writing task
/// while the next one gathers, so reading from Kafka and writing to
/// PostgreSQL overlap. One batch is written at a time, in order.
pub struct PostgresStore<R: Row> {
    /// The connection, while no batch is being written.
    writer: Option<Writer<R>>,
    /// The batch being written, and where its partitions' readings began.
    in_flight: Option<InFlight<R>>,
    /// The server, for messages: `user@host:port/db`, never the password.
    server: String,
    rows: Vec<(R, Origin)>,
    /// Per partition, the offset of the first reading gathered and not handed over.
    first: HashMap<i32, i64>,
    stats: Arc<StoreStats>,
}

/// A batch handed to the writing task.
struct InFlight<R: Row> {
    first: HashMap<i32, i64>,
    task: tokio::task::JoinHandle<(Writer<R>, Result<(), StoreError>)>,
}

/// The connection and what writing needs besides the rows.
struct Writer<R> {
    client: Client,
    server: String,
    timeout: Duration,
    /// Days whose partition exists.
    days: BTreeSet<NaiveDate>,
    /// The table is a TimescaleDB hypertable, which makes its chunks itself.
    hypertable: bool,
    stats: Arc<StoreStats>,
    rows: std::marker::PhantomData<fn(R)>,
}

/// `user@host:port/db` of a connection URL: what messages may show.
pub fn describe(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                #[cfg(unix)]
                Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
                None => "localhost".to_string(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            format!(
                "{}@{host}:{port}/{}",
                config.get_user().unwrap_or("?"),
                config.get_dbname().unwrap_or("?")
            )
        }
        Err(_) => "an unreadable URL".to_string(),
    }
}

impl<R: Row> PostgresStore<R> {
    /// Connects to `url` and makes sure the table exists.
    pub async fn connect(
        url: &str,
        timeout: Duration,
        stats: Arc<StoreStats>,
    ) -> Result<PostgresStore<R>, StoreError> {
        let server = describe(url);
        let refused = |what: &str, reason: String| StoreError::Postgres {
            server: server.clone(),
            what: what.to_string(),
            reason,
        };
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| refused("read the URL", e.to_string()))?;
        let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
            .await
            .map_err(|_| refused("connect", format!("no answer within {timeout:?}")))?
            .map_err(|e| refused("connect", reason(&e)))?;
        let watched = server.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("connection to PostgreSQL {watched} ended: {e}");
            }
        });
        let mut writer = Writer {
            client,
            server: server.clone(),
            timeout,
            days: BTreeSet::new(),
            stats: Arc::clone(&stats),
            hypertable: false,
            rows: std::marker::PhantomData,
        };
        writer.hypertable = create_table::<R>(&writer).await?;
        Ok(PostgresStore {
            writer: Some(writer),
            in_flight: None,
            server,
            rows: Vec::new(),
            first: HashMap::new(),
            stats,
        })
    }

    /// The server, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Takes a row read from `origin`; a full batch is handed over for writing.
    pub async fn append(&mut self, row: R, origin: Origin) -> Result<(), StoreError> {
        self.first.entry(origin.partition).or_insert(origin.offset);
        self.rows.push((row, origin));
        self.stats.held.fetch_add(1, Ordering::Relaxed);
        if self.rows.len() >= BATCH_ROWS {
            self.hand_over().await?;
        }
        Ok(())
    }

    /// The offset of the first reading of `partition` not written yet.
    pub fn held_from(&self, partition: i32) -> Option<i64> {
        let in_flight = self
            .in_flight
            .as_ref()
            .and_then(|batch| batch.first.get(&partition));
        in_flight.or(self.first.get(&partition)).copied()
    }

    /// Drops what `partitions` gathered: their next owner reads it again (a
    /// batch already handed over is written; the key makes that harmless).
    pub fn forget(&mut self, partitions: &[i32]) {
        let before = self.rows.len();
        self.rows
            .retain(|(_, origin)| !partitions.contains(&origin.partition));
        for partition in partitions {
            self.first.remove(partition);
        }
        let dropped = (before - self.rows.len()) as u64;
        self.stats.held.fetch_sub(dropped, Ordering::Relaxed);
    }

    /// Writes everything gathered, waiting for the batch being written first.
    pub async fn write(&mut self) -> Result<(), StoreError> {
        self.hand_over().await?;
        self.settle().await
    }

    /// Waits for the batch being written, then hands the gathered rows over.
    async fn hand_over(&mut self) -> Result<(), StoreError> {
        self.settle().await?;
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut writer = self.writer.take().ok_or_else(|| self.broken())?;
        let rows = std::mem::take(&mut self.rows);
        let first = std::mem::take(&mut self.first);
        let task = tokio::spawn(async move {
            let written = writer.write(rows).await;
            (writer, written)
        });
        self.in_flight = Some(InFlight { first, task });
        Ok(())
    }

    /// Waits for the batch being written, if any; its error, if it failed.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let Some(batch) = self.in_flight.take() else {
            return Ok(());
        };
        match batch.task.await {
            Ok((writer, written)) => {
                self.writer = Some(writer);
                written
            }
            Err(_) => Err(self.broken()),
        }
    }

    fn broken(&self) -> StoreError {
        StoreError::Postgres {
            server: self.server.clone(),
            what: "write".to_string(),
            reason: "the writing task ended without an answer".to_string(),
        }
    }
}

impl<R: Row> Drop for PostgresStore<R> {
    /// What was gathered is read again by the next store; it is no longer held.
    fn drop(&mut self) {
        self.stats
            .held
            .fetch_sub(self.rows.len() as u64, Ordering::Relaxed);
    }
}

impl<R: Row> Writer<R> {
    async fn within<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let refused = |reason| StoreError::Postgres {
            server: self.server.clone(),
            what: what.to_string(),
            reason,
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| refused(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| refused(reason(&e)))
    }

    /// Writes `rows` in one transaction, making their days' partitions first.
    async fn write(&mut self, rows: Vec<(R, Origin)>) -> Result<(), StoreError> {
        let days: BTreeSet<NaiveDate> = rows
            .iter()
            .map(|(r, _)| r.event_time().date_naive())
            .collect();
        // A hypertable makes its chunks itself.
        let missing = if self.hypertable {
            BTreeSet::new()
        } else {
            &days - &self.days
        };
        for day in &missing {
            let statement = partition_of(R::TABLE, *day);
            self.within(
                "create a day's partition",
                self.client.batch_execute(&statement),
            )
            .await?;
            self.days.insert(*day);
        }
        let inserted = self.insert(&rows).await?;
        let count = rows.len() as u64;
        self.stats.stored.fetch_add(inserted, Ordering::Relaxed);
        self.stats.held.fetch_sub(count, Ordering::Relaxed);
        self.stats.rolls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes `rows` in one transaction; returns how many were new.
    ///
    /// First straight into the table with binary `COPY`, as fast as
    /// PostgreSQL loads. If a row is there already (read again after a
    /// restart), that transaction is rolled back and the rows go through a
    /// temporary table and `INSERT … ON CONFLICT DO NOTHING` instead.
    async fn insert(&mut self, rows: &[(R, Origin)]) -> Result<u64, StoreError> {
        let limit = self.timeout + Duration::from_millis(rows.len() as u64 / 10);
        let direct = tokio::time::timeout(limit, copy(&mut self.client, rows, false))
            .await
            .unwrap_or(Err(("write", CopyFailure::Timeout)));
        let outcome = match direct {
            Err((_, CopyFailure::Server(error)))
                if error.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                tracing::info!(
                    "some of {} rows are in {} already (read again after a restart): inserting only the new ones",
                    rows.len(),
                    R::TABLE
                );
                tokio::time::timeout(limit, copy(&mut self.client, rows, true))
                    .await
                    .unwrap_or(Err(("write", CopyFailure::Timeout)))
            }
            other => other,
        };
        outcome.map_err(|(what, error)| StoreError::Postgres {
            server: self.server.clone(),
            what: what.to_string(),
            reason: match error {
                CopyFailure::Server(e) => reason(&e),
                CopyFailure::Encode(e) => e,
                CopyFailure::Timeout => format!("no answer within {limit:?}"),
            },
        })
    }
}

/// Bytes of `COPY` data gathered before they are handed to the connection:
/// large chunks cost the client far less than many small messages.
const COPY_CHUNK: usize = 256 * 1024;

/// The start of PostgreSQL's binary `COPY` format: its signature, no flags,
/// no header extension.
const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Why a `COPY` transaction failed.
#[derive(Debug)]
enum CopyFailure {
    /// The server refused, or the connection broke.
    Server(tokio_postgres::Error),
    /// A value could not be encoded as its column's type.
    Encode(String),
    /// No answer in time.
    Timeout,
}

/// Appends one row of `values`, typed `types`, in the binary `COPY` format:
/// the field count, then each field's length (-1 for NULL) and bytes, each
/// value encoded by tokio-postgres's own `ToSql`.
fn encode_row(
    buf: &mut BytesMut,
    types: &[Type],
    values: &[&(dyn ToSql + Sync)],
) -> Result<(), String> {
    buf.put_i16(values.len() as i16);
    for (value, kind) in values.iter().zip(types) {
        let at = buf.len();
        buf.put_i32(0);
        let length = match value.to_sql_checked(kind, buf) {
            Ok(IsNull::Yes) => -1,
            Ok(IsNull::No) => (buf.len() - at - 4) as i32,
            Err(e) => return Err(format!("a {kind} value: {e}")),
        };
        buf[at..at + 4].copy_from_slice(&length.to_be_bytes());
    }
    Ok(())
}

/// One transaction: `COPY` into the table, or (`staged`) into a temporary
/// table and from there what is new. Fails with what it was doing.
async fn copy<R: Row>(
    client: &mut Client,
    rows: &[(R, Origin)],
    staged: bool,
) -> Result<u64, (&'static str, CopyFailure)> {
    let names = column_names::<R>().join(", ");
    let types: Vec<Type> = R::COPY_COLUMNS
        .iter()
        .map(|(_, kind)| kind.clone())
        .collect();
    let failed = |what: &'static str| move |e| (what, CopyFailure::Server(e));
    let transaction = client.transaction().await.map_err(failed("begin"))?;
    let target = if staged {
        transaction
            .batch_execute(&format!(
                "CREATE TEMPORARY TABLE incoming (LIKE {}) ON COMMIT DROP",
                R::TABLE
            ))
            .await
            .map_err(failed("create the staging table"))?;
        "incoming"
    } else {
        R::TABLE
    };
    let sink = transaction
        .copy_in::<_, Bytes>(&format!(
            "COPY {target} ({names}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(failed("copy"))?;
    let mut sink = pin!(sink);
    let mut buf = BytesMut::with_capacity(COPY_CHUNK + 4096);
    buf.put_slice(COPY_SIGNATURE);
    buf.put_i32(0);
    buf.put_i32(0);
    for (row, origin) in rows {
        row.with_values(*origin, |values| encode_row(&mut buf, &types, values))
            .map_err(|e| ("encode a row", CopyFailure::Encode(e)))?;
        if buf.len() >= COPY_CHUNK {
            let chunk = buf.split().freeze();
            sink.as_mut().send(chunk).await.map_err(failed("copy"))?;
        }
    }
    buf.put_i16(-1);
    sink.as_mut()
        .send(buf.split().freeze())
        .await
        .map_err(failed("copy"))?;
    let copied = sink.finish().await.map_err(failed("copy"))?;
    let inserted = if staged {
        transaction
            .execute(
                &format!(
                    "INSERT INTO {} SELECT * FROM incoming ON CONFLICT DO NOTHING",
                    R::TABLE
                ),
                &[],
            )
            .await
            .map_err(failed("insert"))?
    } else {
        copied
    };
    transaction.commit().await.map_err(failed("commit"))?;
    Ok(inserted)
}

/// Creates `R`'s table unless it exists; returns whether it is a TimescaleDB hypertable.
///
/// When the `timescaledb` extension is installed in the database and the
/// table is new (or a plain table), it becomes a hypertable with a chunk a
/// day; otherwise it is partitioned by day with PostgreSQL's declarative
/// partitioning. A hypertable cannot be made from a partitioned table, so a
/// table made before the extension was installed stays as it is.
async fn create_table<R: Row>(writer: &Writer<R>) -> Result<bool, StoreError> {
    let client = &writer.client;
    let timescale = writer
        .within(
            "look for TimescaleDB",
            client.query_opt(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
                &[],
            ),
        )
        .await?
        .map(|row| row.get::<_, String>(0));
    let kind = writer
        .within(
            &format!("look for {}", R::TABLE),
            client.query_opt(
                "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)",
                &[&R::TABLE],
            ),
        )
        .await?
        .map(|row| row.get::<_, String>(0));
    let create = format!("create {}", R::TABLE);
    match (timescale, kind.as_deref()) {
        (Some(version), None | Some("r")) => {
            let plain = R::CREATE_TABLE
                .rsplit_once(" PARTITION BY")
                .map_or(R::CREATE_TABLE, |(table, _)| table);
            writer.within(&create, client.batch_execute(plain)).await?;
            let statement = format!(
                "SELECT create_hypertable('{}', '{}', chunk_time_interval => INTERVAL '1 day', \
                 if_not_exists => TRUE, migrate_data => TRUE)",
                R::TABLE,
                R::TIME_COLUMN
            );
            writer
                .within(&create, client.batch_execute(&statement))
                .await?;
            tracing::info!(
                "TimescaleDB {version}: {} is a hypertable, a chunk a day",
                R::TABLE
            );
            Ok(true)
        }
        _ => {
            writer
                .within(&create, client.batch_execute(R::CREATE_TABLE))
                .await?;
            Ok(false)
        }
    }
}

/// The statement that makes `table`'s partition of `day`, unless it exists.
pub fn partition_of(table: &str, day: NaiveDate) -> String {
    let next = day + TimeDelta::days(1);
    format!(
        "CREATE TABLE IF NOT EXISTS {table}_{} PARTITION OF {table} \
         FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
        day.format("%Y%m%d")
    )
}

/// The columns of `R`'s table in `COPY` order.
pub fn column_names<R: Row>() -> Vec<&'static str> {
    R::COPY_COLUMNS.iter().map(|(name, _)| *name).collect()
}

/// The server's own message when there is one (wrong password, no such database), else the client's.
fn reason(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}
