//! A device's readings read back from the store, for `metrocloud history`.
//!
//! Only the hour folders inside the asked window are opened; in each file,
//! only the row groups whose device-id range (from the file's statistics) can
//! hold the device, and in those the device column first: the columns shown
//! are decoded only for row groups that hold the device. Readings still in
//! open files (not yet rolled) are not seen.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use chrono::{DateTime, TimeDelta, Utc};
use parquet::column::reader::get_typed_column_reader;
use parquet::data_type::{ByteArray, ByteArrayType, DataType, DoubleType, Int32Type, Int64Type};
use parquet::file::reader::{FileReader, RowGroupReader, SerializedFileReader};
use parquet::record::RowAccessor;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;

use super::StoreError;
use super::layout::{self, Hour};

/// The columns history shows, in this order.
const SHOWN: &str = "
message sensor_reading {
  REQUIRED BYTE_ARRAY device_id (STRING);
  REQUIRED INT64 seq;
  REQUIRED INT64 event_time (TIMESTAMP(MILLIS,true));
  REQUIRED DOUBLE value;
  REQUIRED BYTE_ARRAY unit (STRING);
  REQUIRED BYTE_ARRAY status (STRING);
  OPTIONAL BYTE_ARRAY anomaly_kind (STRING);
  REQUIRED INT32 kafka_partition;
  REQUIRED INT64 kafka_offset;
}
";

static PROJECTION: LazyLock<Type> =
    LazyLock::new(|| parse_message_type(SHOWN).expect("the projection parses"));

/// One stored reading of a device, as history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    /// When it was taken.
    pub event_time: DateTime<Utc>,
    /// Its sequence number.
    pub seq: i64,
    /// The measurement.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The device's status.
    pub status: String,
    /// The injected anomaly, if any.
    pub anomaly_kind: Option<String>,
    /// Where it was read from: partition and offset.
    pub origin: (i32, i64),
}

/// `device`'s stored readings with event times in `from..to`, oldest first.
pub fn device_history(
    data_dir: &Path,
    device: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<StoredReading>, StoreError> {
    let mut found = Vec::new();
    for file in window_files(&data_dir.join(layout::READINGS), from, to)? {
        read_file(&file, device, from, to, &mut found)?;
    }
    found.sort_by_key(|r| (r.event_time, r.seq));
    Ok(found)
}

/// The stored files under `root` in every hour folder the window `from..to`
/// touches, the last one included.
pub(super) fn window_files(
    root: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<PathBuf>, StoreError> {
    let mut files = Vec::new();
    let mut hour = from;
    while hour < to + TimeDelta::hours(1) {
        let folder = root.join(Hour::of(hour).folder());
        files.extend(layout::stored_files(&folder).map_err(StoreError::io(&folder))?);
        hour += TimeDelta::hours(1);
    }
    Ok(files)
}

/// A reader of the Parquet file at `path`.
pub(super) fn open_reader(path: &Path) -> Result<SerializedFileReader<File>, StoreError> {
    let file = File::open(path).map_err(StoreError::io(path))?;
    SerializedFileReader::new(file).map_err(StoreError::parquet(path))
}

fn read_file(
    path: &Path,
    device: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    found: &mut Vec<StoredReading>,
) -> Result<(), StoreError> {
    let parquet = |source| StoreError::parquet(path)(source);
    let reader = open_reader(path)?;
    for index in 0..reader.num_row_groups() {
        let metadata = reader.metadata().row_group(index);
        let may_hold = metadata.column(0).statistics().is_none_or(|s| {
            let below = s.min_bytes_opt().is_some_and(|min| device.as_bytes() < min);
            let above = s.max_bytes_opt().is_some_and(|max| device.as_bytes() > max);
            !below && !above
        });
        if !may_hold {
            continue;
        }
        let rows = metadata.num_rows() as usize;
        let group = reader.get_row_group(index).map_err(parquet)?;
        // The device column first; the others only when the device is in the group.
        let (devices, _) = column::<ByteArrayType>(&*group, 0, rows).map_err(parquet)?;
        let matching: Vec<usize> = (0..devices.len())
            .filter(|&i| devices[i].data() == device.as_bytes())
            .collect();
        if matching.is_empty() {
            continue;
        }
        let (seq, _) = column::<Int64Type>(&*group, 3, rows).map_err(parquet)?;
        let (time, _) = column::<Int64Type>(&*group, 4, rows).map_err(parquet)?;
        let (value, _) = column::<DoubleType>(&*group, 5, rows).map_err(parquet)?;
        let (unit, _) = column::<ByteArrayType>(&*group, 6, rows).map_err(parquet)?;
        let (status, _) = column::<ByteArrayType>(&*group, 14, rows).map_err(parquet)?;
        let (kinds, defined) = column::<ByteArrayType>(&*group, 16, rows).map_err(parquet)?;
        let (partition, _) = column::<Int32Type>(&*group, 18, rows).map_err(parquet)?;
        let (offset, _) = column::<Int64Type>(&*group, 19, rows).map_err(parquet)?;
        // The optional column holds values for defined rows only.
        let mut kind_of_row = Vec::with_capacity(rows);
        let mut next = 0;
        for level in &defined {
            if *level > 0 {
                kind_of_row.push(kinds.get(next).map(text));
                next += 1;
            } else {
                kind_of_row.push(None);
            }
        }
        for row in matching {
            let Some(event_time) = DateTime::from_timestamp_millis(time[row]) else {
                continue;
            };
            if event_time < from || event_time >= to {
                continue;
            }
            found.push(StoredReading {
                event_time,
                seq: seq[row],
                value: value[row],
                unit: text(&unit[row]),
                status: text(&status[row]),
                anomaly_kind: kind_of_row.get(row).cloned().flatten(),
                origin: (partition[row], offset[row]),
            });
        }
    }
    Ok(())
}

pub(super) fn text(value: &ByteArray) -> String {
    String::from_utf8_lossy(value.data()).into_owned()
}

/// Every value of column `index` of a row group of `rows` rows, with its definition levels.
pub(super) fn column<T: DataType>(
    group: &dyn RowGroupReader,
    index: usize,
    rows: usize,
) -> parquet::errors::Result<(Vec<T::T>, Vec<i16>)> {
    let mut reader = get_typed_column_reader::<T>(group.get_column_reader(index)?);
    let (mut values, mut defined) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    let mut read = 0;
    while read < rows {
        let (records, _, _) =
            reader.read_records(rows - read, Some(&mut defined), None, &mut values)?;
        if records == 0 {
            break;
        }
        read += records;
    }
    Ok((values, defined))
}

/// Where one stored reading came from, and which reading it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoredKey {
    /// Kafka partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// The device.
    pub device_id: String,
    /// Its sequence number.
    pub seq: i64,
}

/// Every stored reading's key, from every file under `data_dir` (for audits).
pub fn stored_keys(data_dir: &Path) -> Result<Vec<StoredKey>, StoreError> {
    let root = data_dir.join(layout::READINGS);
    let mut keys = Vec::new();
    for path in layout::stored_files(&root).map_err(StoreError::io(&root))? {
        let parquet = |source| StoreError::parquet(&path)(source);
        let reader = open_reader(&path)?;
        for row in reader
            .get_row_iter(Some(PROJECTION.clone()))
            .map_err(parquet)?
        {
            let row = row.map_err(parquet)?;
            keys.push(StoredKey {
                partition: row.get_int(7).map_err(parquet)?,
                offset: row.get_long(8).map_err(parquet)?,
                device_id: row.get_string(0).map_err(parquet)?.clone(),
                seq: row.get_long(1).map_err(parquet)?,
            });
        }
    }
    Ok(keys)
}
