//! The storage benchmark: a pre-filled topic of distinct sensor readings into
//! Parquet and into PostgreSQL by our storage stage, beside PostgreSQL's own
//! bulk loader (`psql \copy` of the same rows as CSV) on the same server in
//! the same run. Each side loads into a database of its own with the same
//! partitioned table. Client CPU and peak memory are the loading process's
//! (our worker, or `psql`); the server's work is not counted for either.

use std::collections::BTreeSet;
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::postgres::LocalPostgres;
use super::worker::{Payload, StoreOutcome, StoreTarget, parquet_bytes};
use super::*;
use crate::sensor::reading::SensorReading;
use crate::store::postgres::{column_names, partition_of};
use crate::store::readings::{CREATE_TABLE, status_name};

/// One load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageRun {
    /// Who loaded, and where.
    pub who: String,
    /// Rows made durable.
    pub rows: u64,
    /// Rows per second, start to last row durable.
    pub rows_per_sec: f64,
    /// The loading process's CPU seconds.
    pub cpu_secs: f64,
    /// Its peak resident memory.
    pub peak_rss_mib: f64,
    /// Bytes on disk per row (files, or the table with its index).
    pub bytes_per_reading: f64,
}

/// The benchmark's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageSection {
    /// Distinct readings in the topic.
    pub records: u64,
    /// Their mean JSON size.
    pub json_bytes_per_reading: f64,
    /// Every load, in the order run.
    pub runs: Vec<StorageRun>,
}

const OURS_PARQUET: &str = "ours → Parquet (snappy)";
const OURS_POSTGRES: &str = "ours → PostgreSQL (binary COPY, ON CONFLICT DO NOTHING)";
const PSQL_COPY: &str = "psql \\copy (CSV)";

impl Bench<'_> {
    pub(super) async fn storage(&mut self) -> Result<StorageSection, BenchError> {
        let records = self.settings.storage_records;
        let dir = self.settings.work_dir.join("storage");
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        (self.say)(&format!(
            "storage: writing {records} distinct sensor readings"
        ));
        let (jsonl, csv, json_bytes, days) = write_distinct_readings(&dir, records)?;
        let topic = self.fresh_topic("store").await?;
        let result = async {
            (self.say)(&format!("storage: filling {topic} with them"));
            self.produce_with_ours(&topic, records, &Payload::Readings(jsonl.clone()), &format!("{topic}-fill"))
                .await?;
            let server = LocalPostgres::start(&dir.join("postgres")).map_err(BenchError::Worker)?;
            let mut section = StorageSection {
                records,
                json_bytes_per_reading: json_bytes as f64 / records.max(1) as f64,
                runs: Vec::new(),
            };
            let mut databases = 0;
            for repeat in 0..self.settings.repeats {
                for side in order(repeat) {
                    let runs = match side {
                        Side::Ours => {
                            let parquet = self.store_run(&topic, repeat, StoreTarget::Parquet(dir.join(format!("parquet-{repeat}")))).await?;
                            databases += 1;
                            let url = database(&server, databases).await?;
                            let postgres = self.store_run(&topic, repeat, StoreTarget::Postgres(url.clone())).await?;
                            vec![parquet, postgres]
                        }
                        Side::Peer => {
                            databases += 1;
                            let url = database(&server, databases).await?;
                            vec![self.psql_copy(&server, &url, &csv, &days, records).await?]
                        }
                    };
                    for run in runs {
                        (self.say)(&format!(
                            "storage run {}/{}: {} {:.0} rows/s, {:.2} CPU s per million, {:.1} bytes per reading",
                            repeat + 1,
                            self.settings.repeats,
                            run.who,
                            run.rows_per_sec,
                            run.cpu_secs * 1e6 / run.rows.max(1) as f64,
                            run.bytes_per_reading
                        ));
                        section.runs.push(run);
                    }
                }
            }
            Ok(section)
        }
        .await;
        self.drop_topic(&topic).await;
        result
    }

    /// Our storage stage, in a worker of its own, into `target`.
    async fn store_run(
        &self,
        topic: &str,
        repeat: u32,
        target: StoreTarget,
    ) -> Result<StorageRun, BenchError> {
        let records = self.settings.storage_records;
        let (who, kind) = match &target {
            StoreTarget::Parquet(_) => (OURS_PARQUET, "parquet"),
            StoreTarget::Postgres(_) => (OURS_POSTGRES, "postgres"),
        };
        let group = format!("{topic}-{kind}-{repeat}");
        let command = self.worker_command(&WorkerSpec::Store {
            bootstrap: self.target().bootstrap.clone(),
            topic: topic.to_string(),
            group: group.clone(),
            records,
            target: target.clone(),
        });
        let (measured, _) = self.measure(command, "our storage stage", &group).await?;
        let outcome: StoreOutcome = parse_worker(&measured.stdout)?;
        if outcome.rows < records {
            return Err(BenchError::Lost(format!(
                "our storage stage made {} of {records} readings durable in {kind}",
                outcome.rows
            )));
        }
        let bytes = match &target {
            StoreTarget::Parquet(dir) => parquet_bytes(dir),
            StoreTarget::Postgres(url) => table_bytes(url).await?,
        };
        Ok(StorageRun {
            who: who.to_string(),
            rows: outcome.rows,
            rows_per_sec: outcome.rows as f64 / outcome.elapsed_secs.max(1e-9),
            cpu_secs: measured.cpu.as_secs_f64(),
            peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
            bytes_per_reading: bytes as f64 / outcome.rows.max(1) as f64,
        })
    }

    /// PostgreSQL's own loader: the same table, its day partitions made first, `\copy` of the CSV.
    async fn psql_copy(
        &self,
        server: &LocalPostgres,
        url: &str,
        csv: &Path,
        days: &BTreeSet<chrono::NaiveDate>,
        records: u64,
    ) -> Result<StorageRun, BenchError> {
        let client = connect(url).await?;
        let mut ddl = vec![CREATE_TABLE.to_string()];
        ddl.extend(days.iter().map(|day| partition_of("sensor_readings", *day)));
        client
            .batch_execute(&ddl.join(";\n"))
            .await
            .map_err(|e| BenchError::Worker(format!("cannot make the table for psql: {e}")))?;
        let copy = format!(
            "\\copy sensor_readings ({}) FROM '{}' WITH (FORMAT csv)",
            column_names::<SensorReading>().join(", "),
            csv.display()
        );
        let mut command = Command::new(server.psql());
        command.args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", &copy]);
        let (measured, _) = self
            .measure(command, "psql \\copy", "storage-psql-copy")
            .await?;
        let rows: i64 = client
            .query_one("SELECT count(*) FROM sensor_readings", &[])
            .await
            .map_err(|e| BenchError::Worker(e.to_string()))?
            .get(0);
        if (rows as u64) < records {
            return Err(BenchError::Lost(format!(
                "psql loaded {rows} of {records} rows"
            )));
        }
        Ok(StorageRun {
            who: PSQL_COPY.to_string(),
            rows: rows as u64,
            rows_per_sec: rows as f64 / measured.wall.as_secs_f64().max(1e-9),
            cpu_secs: measured.cpu.as_secs_f64(),
            peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
            bytes_per_reading: table_bytes(url).await? as f64 / rows.max(1) as f64,
        })
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, BenchError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            BenchError::Worker(format!("cannot connect to the benchmark's PostgreSQL: {e}"))
        })?;
    tokio::spawn(connection);
    Ok(client)
}

/// A new, empty database on `server`; its URL.
async fn database(server: &LocalPostgres, n: u32) -> Result<String, BenchError> {
    let name = format!("bench_{n}");
    let client = connect(&server.url()).await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| BenchError::Worker(format!("cannot create database {name}: {e}")))?;
    Ok(server.url().replace("/postgres", &format!("/{name}")))
}

/// Bytes of `sensor_readings` with its partitions and indexes.
async fn table_bytes(url: &str) -> Result<u64, BenchError> {
    let client = connect(url).await?;
    let bytes: i64 = client
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_partition_tree('sensor_readings')",
            &[],
        )
        .await
        .map_err(|e| BenchError::Worker(e.to_string()))?
        .get(0);
    Ok(bytes as u64)
}

/// `records` distinct readings of a simulated fleet, as JSON lines and as CSV
/// in the table's column order; their JSON bytes and the days they fall on.
fn write_distinct_readings(
    dir: &Path,
    records: u64,
) -> Result<(PathBuf, PathBuf, u64, BTreeSet<chrono::NaiveDate>), BenchError> {
    let settings = SimulatorSettings {
        num_devices: 10_000,
        interval: Duration::from_secs(1),
        device_types: crate::sensor::device::DeviceType::ALL.to_vec(),
        anomaly_probability: 0.05,
        seed: 7,
        fault_probability: 0.0,
        fault_kinds: crate::sensor::fault::FaultKind::ALL.to_vec(),
    };
    let mut fleet = Fleet::new(&settings, chrono::Utc::now());
    let (jsonl, csv) = (dir.join("readings.jsonl"), dir.join("readings.csv"));
    let create = |path: &Path| {
        std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .map_err(|e| BenchError::io(path, e))
    };
    let (mut json_out, mut csv_out) = (create(&jsonl)?, create(&csv)?);
    let (mut json_bytes, mut days) = (0u64, BTreeSet::new());
    for offset in 0..records {
        let reading = fleet
            .next_due(Duration::MAX)
            .expect("a fleet always has a next reading");
        let json = reading.to_json();
        json_bytes += json.len() as u64;
        days.insert(reading.timestamp.date_naive());
        let location = &reading.location;
        let written = json_out
            .write_all(&json)
            .and_then(|()| json_out.write_all(b"\n"))
            .and_then(|()| {
                writeln!(
                    csv_out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},0,{offset}",
                    reading.device_id,
                    reading.run_id,
                    reading.sequence,
                    reading
                        .timestamp
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    reading.device_type.as_str(),
                    reading.value,
                    reading.unit,
                    location.site,
                    location.zone,
                    location.latitude,
                    location.longitude,
                    reading.battery_level,
                    reading.signal_strength,
                    reading.firmware_version,
                    status_name(&reading),
                    reading.is_anomaly,
                    reading.anomaly_kind.map_or("", |k| k.as_str()),
                )
            });
        written.map_err(|e| BenchError::io(&csv, e))?;
    }
    json_out.flush().map_err(|e| BenchError::io(&jsonl, e))?;
    csv_out.flush().map_err(|e| BenchError::io(&csv, e))?;
    Ok((jsonl, csv, json_bytes, days))
}

/// The section of the report.
pub fn storage_table(section: &StorageSection) -> String {
    let mut out = format!(
        "\n### Storage: a pre-filled topic of {} distinct readings into Parquet and PostgreSQL; PostgreSQL's `psql \\copy` of the same rows as CSV beside it\n\n",
        section.records
    );
    out.push_str(&format!(
        "Raw JSON: {:.1} bytes per reading. Client CPU and memory are the loading process's; the PostgreSQL server's are not counted for either side. Ours is timed from the first reading taken to the last durable (joining the group is left out); psql, the whole command.\n\n",
        section.json_bytes_per_reading
    ));
    out.push_str("| loader | runs | rows/s | client CPU s per million rows | peak RSS MiB | bytes on disk per reading |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    let mean = |who: &str, field: fn(&StorageRun) -> f64| {
        let runs: Vec<f64> = section
            .runs
            .iter()
            .filter(|r| r.who == who)
            .map(field)
            .collect();
        (
            runs.len(),
            runs.iter().sum::<f64>() / runs.len().max(1) as f64,
        )
    };
    for who in [OURS_PARQUET, OURS_POSTGRES, PSQL_COPY] {
        let (runs, rate) = mean(who, |r| r.rows_per_sec);
        if runs == 0 {
            continue;
        }
        out.push_str(&format!(
            "| {who} | {runs} | {:.0} | {:.2} | {:.1} | {:.1} |\n",
            rate,
            mean(who, |r| r.cpu_secs * 1e6 / r.rows.max(1) as f64).1,
            mean(who, |r| r.peak_rss_mib).1,
            mean(who, |r| r.bytes_per_reading).1
        ));
    }
    let (ours, peer) = (
        mean(OURS_POSTGRES, |r| r.rows_per_sec).1,
        mean(PSQL_COPY, |r| r.rows_per_sec).1,
    );
    let parquet = mean(OURS_PARQUET, |r| r.bytes_per_reading).1;
    out.push_str(&format!(
        "\nPostgreSQL: ours at {:.2}x of `psql \\copy`'s rows/s. Parquet: {:.1} bytes per reading, 1/{:.1} of the JSON.\n",
        ours / peer.max(1e-9),
        parquet,
        section.json_bytes_per_reading / parquet.max(1e-9)
    ));
    out
}
