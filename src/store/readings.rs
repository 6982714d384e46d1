//! A stored reading: its Parquet schema, readings gathered column by column,
//! and its PostgreSQL table.
//!
//! Parquet keeps each column together, so readings are taken apart into one
//! vector per column as they arrive and written a row group at a time. Every
//! field of the reading has a typed column (strings as UTF-8, the event time
//! as a UTC timestamp in milliseconds), and two more say where the reading
//! came from in Kafka, which is also what proves each record is stored once.
//! The date and hour a reading belongs to are not columns: they are the
//! Hive-style folders the file lives in ([`super::layout`]).

use std::sync::{Arc, LazyLock};

use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DataType, DoubleType, Int32Type, Int64Type,
};
use parquet::file::writer::SerializedRowGroupWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;
use tokio_postgres::types::{ToSql, Type as SqlType};

use super::layout;
use super::row::{Origin, Row, RowColumns};
use super::text::{CodedColumn, Dictionary, TextColumn};
use crate::sensor::reading::SensorReading;

/// The schema, in Parquet's message notation; the README shows it too.
pub const SCHEMA: &str = "
message sensor_reading {
  REQUIRED BYTE_ARRAY device_id (STRING);
  REQUIRED BYTE_ARRAY device_type (STRING);
  REQUIRED BYTE_ARRAY run_id (STRING);
  REQUIRED INT64 seq;
  REQUIRED INT64 event_time (TIMESTAMP(MILLIS,true));
  REQUIRED DOUBLE value;
  REQUIRED BYTE_ARRAY unit (STRING);
  REQUIRED BYTE_ARRAY site (STRING);
  REQUIRED BYTE_ARRAY zone (STRING);
  REQUIRED DOUBLE latitude;
  REQUIRED DOUBLE longitude;
  REQUIRED DOUBLE battery_level;
  REQUIRED INT32 signal_strength;
  REQUIRED BYTE_ARRAY firmware_version (STRING);
  REQUIRED BYTE_ARRAY status (STRING);
  REQUIRED BOOLEAN is_anomaly;
  OPTIONAL BYTE_ARRAY anomaly_kind (STRING);
  REQUIRED INT32 schema_version;
  REQUIRED INT32 kafka_partition;
  REQUIRED INT64 kafka_offset;
}
";

/// The parsed [`SCHEMA`].
pub fn schema() -> Arc<Type> {
    static PARSED: LazyLock<Arc<Type>> =
        LazyLock::new(|| Arc::new(parse_message_type(SCHEMA).expect("the schema parses")));
    Arc::clone(&PARSED)
}

/// Readings taken apart into columns, waiting to be written as a row group.
#[derive(Debug, Default)]
pub struct ReadingColumns {
    device_id: TextColumn,
    device_type: CodedColumn,
    run_id: CodedColumn,
    seq: Vec<i64>,
    event_time: Vec<i64>,
    value: Vec<f64>,
    unit: CodedColumn,
    site: CodedColumn,
    zone: CodedColumn,
    latitude: Vec<f64>,
    longitude: Vec<f64>,
    battery_level: Vec<f64>,
    signal_strength: Vec<i32>,
    firmware_version: CodedColumn,
    status: CodedColumn,
    is_anomaly: Vec<bool>,
    /// Definition levels of `anomaly_kind`: 1 where present.
    anomaly_defined: Vec<i16>,
    anomaly_kind: CodedColumn,
    schema_version: Vec<i32>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
    /// Values of the columns with few distinct ones (type, unit, site, ...),
    /// kept once instead of for every reading.
    dictionary: Dictionary,
}

/// The table, partitioned by range of event time.
pub const CREATE_TABLE: &str = "
CREATE TABLE IF NOT EXISTS sensor_readings (
    device_id        text             NOT NULL,
    run_id           text             NOT NULL,
    seq              bigint           NOT NULL,
    event_time       timestamptz      NOT NULL,
    device_type      text             NOT NULL,
    value            double precision NOT NULL,
    unit             text             NOT NULL,
    site             text             NOT NULL,
    zone             text             NOT NULL,
    latitude         double precision NOT NULL,
    longitude        double precision NOT NULL,
    battery_level    double precision NOT NULL,
    signal_strength  integer          NOT NULL,
    firmware_version text             NOT NULL,
    status           text             NOT NULL,
    is_anomaly       boolean          NOT NULL,
    anomaly_kind     text,
    kafka_partition  integer          NOT NULL,
    kafka_offset     bigint           NOT NULL,
    PRIMARY KEY (device_id, run_id, seq, event_time)
) PARTITION BY RANGE (event_time)";

/// The columns in `COPY` order, with their types.
const COPY_COLUMNS: [(&str, SqlType); 19] = [
    ("device_id", SqlType::TEXT),
    ("run_id", SqlType::TEXT),
    ("seq", SqlType::INT8),
    ("event_time", SqlType::TIMESTAMPTZ),
    ("device_type", SqlType::TEXT),
    ("value", SqlType::FLOAT8),
    ("unit", SqlType::TEXT),
    ("site", SqlType::TEXT),
    ("zone", SqlType::TEXT),
    ("latitude", SqlType::FLOAT8),
    ("longitude", SqlType::FLOAT8),
    ("battery_level", SqlType::FLOAT8),
    ("signal_strength", SqlType::INT4),
    ("firmware_version", SqlType::TEXT),
    ("status", SqlType::TEXT),
    ("is_anomaly", SqlType::BOOL),
    ("anomaly_kind", SqlType::TEXT),
    ("kafka_partition", SqlType::INT4),
    ("kafka_offset", SqlType::INT8),
];

/// The status as records and stores name it.
pub fn status_name(reading: &SensorReading) -> &'static str {
    use crate::sensor::reading::DeviceStatus;
    match reading.status {
        DeviceStatus::Ok => "ok",
        DeviceStatus::LowBattery => "low_battery",
        DeviceStatus::WeakSignal => "weak_signal",
    }
}

impl RowColumns<SensorReading> for ReadingColumns {
    fn schema() -> Arc<Type> {
        schema()
    }

    fn len(&self) -> usize {
        self.seq.len()
    }

    fn push(&mut self, reading: &SensorReading, origin: Origin) {
        let dictionary = &mut self.dictionary;
        self.device_id.push(&reading.device_id);
        self.device_type
            .push(reading.device_type.as_str(), dictionary);
        self.run_id.push(&reading.run_id, dictionary);
        self.seq.push(reading.sequence as i64);
        self.event_time.push(reading.timestamp.timestamp_millis());
        self.value.push(reading.value);
        self.unit.push(&reading.unit, dictionary);
        self.site.push(&reading.location.site, dictionary);
        self.zone.push(&reading.location.zone, dictionary);
        self.latitude.push(reading.location.latitude);
        self.longitude.push(reading.location.longitude);
        self.battery_level.push(reading.battery_level);
        self.signal_strength.push(reading.signal_strength);
        self.firmware_version
            .push(&reading.firmware_version, dictionary);
        self.status.push(status_name(reading), dictionary);
        self.is_anomaly.push(reading.is_anomaly);
        match reading.anomaly_kind {
            Some(kind) => {
                self.anomaly_defined.push(1);
                self.anomaly_kind.push(kind.as_str(), dictionary);
            }
            None => self.anomaly_defined.push(0),
        }
        self.schema_version.push(reading.schema_version as i32);
        self.kafka_partition.push(origin.partition);
        self.kafka_offset.push(origin.offset);
    }

    /// Writes the columns in [`SCHEMA`]'s order.
    fn write<W: std::io::Write + Send>(
        &mut self,
        group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> parquet::errors::Result<()> {
        // Each text column becomes `ByteArray`s only while it is written.
        let mut text = Vec::with_capacity(self.len());
        let dictionary = &self.dictionary;
        let mut next = 0;
        while let Some(mut column) = group.next_column()? {
            let mut coded = |column: &mut CodedColumn| {
                column.take_into(dictionary, &mut text);
                std::mem::take(&mut text)
            };
            match next {
                0 => {
                    self.device_id.take_into(&mut text);
                    write::<ByteArrayType, _>(&mut column, &text, None)?
                }
                1 => write_text(&mut column, coded(&mut self.device_type), &mut text, None)?,
                2 => write_text(&mut column, coded(&mut self.run_id), &mut text, None)?,
                3 => write::<Int64Type, _>(&mut column, &self.seq, None)?,
                4 => write::<Int64Type, _>(&mut column, &self.event_time, None)?,
                5 => write::<DoubleType, _>(&mut column, &self.value, None)?,
                6 => write_text(&mut column, coded(&mut self.unit), &mut text, None)?,
                7 => write_text(&mut column, coded(&mut self.site), &mut text, None)?,
                8 => write_text(&mut column, coded(&mut self.zone), &mut text, None)?,
                9 => write::<DoubleType, _>(&mut column, &self.latitude, None)?,
                10 => write::<DoubleType, _>(&mut column, &self.longitude, None)?,
                11 => write::<DoubleType, _>(&mut column, &self.battery_level, None)?,
                12 => write::<Int32Type, _>(&mut column, &self.signal_strength, None)?,
                13 => write_text(
                    &mut column,
                    coded(&mut self.firmware_version),
                    &mut text,
                    None,
                )?,
                14 => write_text(&mut column, coded(&mut self.status), &mut text, None)?,
                15 => write::<BoolType, _>(&mut column, &self.is_anomaly, None)?,
                16 => write_text(
                    &mut column,
                    coded(&mut self.anomaly_kind),
                    &mut text,
                    Some(&self.anomaly_defined),
                )?,
                17 => write::<Int32Type, _>(&mut column, &self.schema_version, None)?,
                18 => write::<Int32Type, _>(&mut column, &self.kafka_partition, None)?,
                19 => write::<Int64Type, _>(&mut column, &self.kafka_offset, None)?,
                _ => unreachable!("the schema has 20 columns"),
            }
            column.close()?;
            next += 1;
        }
        let mut dictionary = std::mem::take(&mut self.dictionary);
        dictionary.written();
        *self = ReadingColumns {
            dictionary,
            ..ReadingColumns::default()
        };
        Ok(())
    }
}

/// Writes a text column's `values`, then keeps their list (emptied) in
/// `text` for the next column.
fn write_text(
    column: &mut parquet::file::writer::SerializedColumnWriter<'_>,
    mut values: Vec<ByteArray>,
    text: &mut Vec<ByteArray>,
    defined: Option<&[i16]>,
) -> parquet::errors::Result<()> {
    write::<ByteArrayType, _>(column, &values, defined)?;
    values.clear();
    *text = values;
    Ok(())
}

/// Writes `values` (with definition levels `defined` where the column is optional) into `column`.
pub(super) fn write<T, V>(
    column: &mut parquet::file::writer::SerializedColumnWriter<'_>,
    values: &[V],
    defined: Option<&[i16]>,
) -> parquet::errors::Result<()>
where
    T: DataType<T = V>,
{
    column.typed::<T>().write_batch(values, defined, None)?;
    Ok(())
}

impl Row for SensorReading {
    const FOLDER: &'static str = layout::READINGS;
    const TABLE: &'static str = "sensor_readings";
    const CREATE_TABLE: &'static str = CREATE_TABLE;
    const TIME_COLUMN: &'static str = "event_time";
    const COPY_COLUMNS: &'static [(&'static str, SqlType)] = &COPY_COLUMNS;
    type Columns = ReadingColumns;

    fn from_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<Self> {
        crate::sensor::validate::validate(key, value).ok()
    }

    fn event_time(&self) -> chrono::DateTime<chrono::Utc> {
        self.timestamp
    }

    fn with_values<T>(
        &self,
        origin: Origin,
        encode: impl FnOnce(&[&(dyn ToSql + Sync)]) -> T,
    ) -> T {
        let seq = self.sequence as i64;
        let status = status_name(self);
        let anomaly = self.anomaly_kind.map(|kind| kind.as_str());
        let values: [&(dyn ToSql + Sync); 19] = [
            &self.device_id,
            &self.run_id,
            &seq,
            &self.timestamp,
            &self.device_type.as_str(),
            &self.value,
            &self.unit,
            &self.location.site,
            &self.location.zone,
            &self.location.latitude,
            &self.location.longitude,
            &self.battery_level,
            &self.signal_strength,
            &self.firmware_version,
            &status,
            &self.is_anomaly,
            &anomaly,
            &origin.partition,
            &origin.offset,
        ];
        encode(&values)
    }
}
