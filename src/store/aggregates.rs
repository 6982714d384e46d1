//! A stored minute aggregate: its Parquet schema, aggregates gathered column
//! by column, and its PostgreSQL table.
//!
//! The aggregates topic is stored like the readings, by the same stage and
//! the same exactly-once files (`aggregates/date=…/hour=…/`, by the minute's
//! UTC hour) or in `sensor_aggregates`, keyed by (device, minute): a minute
//! is one row, whatever is read again.

use std::sync::{Arc, LazyLock};

use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::writer::SerializedRowGroupWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;
use tokio_postgres::types::{ToSql, Type as SqlType};

use super::layout;
use super::readings::write;
use super::row::{Origin, Row, RowColumns};
use crate::sensor::aggregate::MinuteAggregate;

/// The schema, in Parquet's message notation; the README shows it too.
pub const SCHEMA: &str = "
message minute_aggregate {
  REQUIRED BYTE_ARRAY device_id (STRING);
  REQUIRED BYTE_ARRAY device_type (STRING);
  REQUIRED BYTE_ARRAY unit (STRING);
  REQUIRED INT64 minute (TIMESTAMP(MILLIS,true));
  REQUIRED INT64 count;
  REQUIRED DOUBLE min;
  REQUIRED DOUBLE max;
  REQUIRED DOUBLE mean;
  REQUIRED DOUBLE last;
  REQUIRED INT64 anomalies;
  REQUIRED INT32 kafka_partition;
  REQUIRED INT64 kafka_offset;
}
";

/// The table, partitioned by range of minute.
pub const CREATE_TABLE: &str = "
CREATE TABLE IF NOT EXISTS sensor_aggregates (
    device_id       text             NOT NULL,
    minute          timestamptz      NOT NULL,
    device_type     text             NOT NULL,
    unit            text             NOT NULL,
    count           bigint           NOT NULL,
    min             double precision NOT NULL,
    max             double precision NOT NULL,
    mean            double precision NOT NULL,
    last            double precision NOT NULL,
    anomalies       bigint           NOT NULL,
    kafka_partition integer          NOT NULL,
    kafka_offset    bigint           NOT NULL,
    PRIMARY KEY (device_id, minute)
) PARTITION BY RANGE (minute)";

const COPY_COLUMNS: [(&str, SqlType); 12] = [
    ("device_id", SqlType::TEXT),
    ("minute", SqlType::TIMESTAMPTZ),
    ("device_type", SqlType::TEXT),
    ("unit", SqlType::TEXT),
    ("count", SqlType::INT8),
    ("min", SqlType::FLOAT8),
    ("max", SqlType::FLOAT8),
    ("mean", SqlType::FLOAT8),
    ("last", SqlType::FLOAT8),
    ("anomalies", SqlType::INT8),
    ("kafka_partition", SqlType::INT4),
    ("kafka_offset", SqlType::INT8),
];

/// Aggregates taken apart into columns, waiting to be written as a row group.
#[derive(Debug, Default)]
pub struct AggregateColumns {
    device_id: Vec<ByteArray>,
    device_type: Vec<ByteArray>,
    unit: Vec<ByteArray>,
    minute: Vec<i64>,
    count: Vec<i64>,
    min: Vec<f64>,
    max: Vec<f64>,
    mean: Vec<f64>,
    last: Vec<f64>,
    anomalies: Vec<i64>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
}

impl RowColumns<MinuteAggregate> for AggregateColumns {
    fn schema() -> Arc<Type> {
        static PARSED: LazyLock<Arc<Type>> =
            LazyLock::new(|| Arc::new(parse_message_type(SCHEMA).expect("the schema parses")));
        Arc::clone(&PARSED)
    }

    fn push(&mut self, aggregate: &MinuteAggregate, origin: Origin) {
        self.device_id
            .push(ByteArray::from(aggregate.device_id.as_str()));
        self.device_type
            .push(ByteArray::from(aggregate.device_type.as_str()));
        self.unit.push(ByteArray::from(aggregate.unit.as_str()));
        self.minute.push(aggregate.minute.timestamp_millis());
        self.count.push(aggregate.count as i64);
        self.min.push(aggregate.min);
        self.max.push(aggregate.max);
        self.mean.push(aggregate.mean);
        self.last.push(aggregate.last);
        self.anomalies.push(aggregate.anomalies as i64);
        self.kafka_partition.push(origin.partition);
        self.kafka_offset.push(origin.offset);
    }

    fn len(&self) -> usize {
        self.minute.len()
    }

    fn write<W: std::io::Write + Send>(
        &mut self,
        group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> parquet::errors::Result<()> {
        let mut next = 0;
        while let Some(mut column) = group.next_column()? {
            match next {
                0 => write::<ByteArrayType, _>(&mut column, &self.device_id, None)?,
                1 => write::<ByteArrayType, _>(&mut column, &self.device_type, None)?,
                2 => write::<ByteArrayType, _>(&mut column, &self.unit, None)?,
                3 => write::<Int64Type, _>(&mut column, &self.minute, None)?,
                4 => write::<Int64Type, _>(&mut column, &self.count, None)?,
                5 => write::<DoubleType, _>(&mut column, &self.min, None)?,
                6 => write::<DoubleType, _>(&mut column, &self.max, None)?,
                7 => write::<DoubleType, _>(&mut column, &self.mean, None)?,
                8 => write::<DoubleType, _>(&mut column, &self.last, None)?,
                9 => write::<Int64Type, _>(&mut column, &self.anomalies, None)?,
                10 => write::<Int32Type, _>(&mut column, &self.kafka_partition, None)?,
                11 => write::<Int64Type, _>(&mut column, &self.kafka_offset, None)?,
                _ => unreachable!("the schema has 12 columns"),
            }
            column.close()?;
            next += 1;
        }
        *self = AggregateColumns::default();
        Ok(())
    }
}

impl Row for MinuteAggregate {
    const FOLDER: &'static str = layout::AGGREGATES;
    const TABLE: &'static str = "sensor_aggregates";
    const CREATE_TABLE: &'static str = CREATE_TABLE;
    const TIME_COLUMN: &'static str = "minute";
    const COPY_COLUMNS: &'static [(&'static str, SqlType)] = &COPY_COLUMNS;
    type Columns = AggregateColumns;

    fn from_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<Self> {
        let aggregate: MinuteAggregate = serde_json::from_slice(value?).ok()?;
        (key == Some(aggregate.device_id.as_bytes())).then_some(aggregate)
    }

    fn event_time(&self) -> chrono::DateTime<chrono::Utc> {
        self.minute
    }

    fn with_values<T>(
        &self,
        origin: Origin,
        encode: impl FnOnce(&[&(dyn ToSql + Sync)]) -> T,
    ) -> T {
        let (count, anomalies) = (self.count as i64, self.anomalies as i64);
        let values: [&(dyn ToSql + Sync); 12] = [
            &self.device_id,
            &self.minute,
            &self.device_type,
            &self.unit,
            &count,
            &self.min,
            &self.max,
            &self.mean,
            &self.last,
            &anomalies,
            &origin.partition,
            &origin.offset,
        ];
        encode(&values)
    }
}
