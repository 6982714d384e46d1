//! A device's readings read back from the store, for `metrocloud history`.
//!
//! Only the hour folders inside the asked window are opened, and in each file
//! only the row groups whose device-id range (from the file's statistics) can
//! hold the device are read, and only the columns shown. Readings still in
//! open files (not yet rolled) are not seen.

use std::fs::File;
use std::path::Path;
use std::sync::LazyLock;

use chrono::{DateTime, TimeDelta, Utc};
use parquet::file::reader::{FileReader, SerializedFileReader};
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
    let root = data_dir.join(layout::READINGS);
    let mut found = Vec::new();
    let mut hour = from;
    // Every hour folder the window touches, the last one included.
    while hour < to + TimeDelta::hours(1) {
        let folder = root.join(Hour::of(hour).folder());
        for file in layout::stored_files(&folder).map_err(|source| StoreError::Io {
            path: folder.clone(),
            source,
        })? {
            read_file(&file, device, from, to, &mut found)?;
        }
        hour += TimeDelta::hours(1);
    }
    found.sort_by_key(|r| (r.event_time, r.seq));
    Ok(found)
}

fn read_file(
    path: &Path,
    device: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    found: &mut Vec<StoredReading>,
) -> Result<(), StoreError> {
    let parquet = |source| StoreError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(parquet)?;
    for index in 0..reader.num_row_groups() {
        let statistics = reader.metadata().row_group(index).column(0).statistics();
        let may_hold = statistics.is_none_or(|s| {
            let below = s.min_bytes_opt().is_some_and(|min| device.as_bytes() < min);
            let above = s.max_bytes_opt().is_some_and(|max| device.as_bytes() > max);
            !below && !above
        });
        if !may_hold {
            continue;
        }
        let group = reader.get_row_group(index).map_err(parquet)?;
        for row in group
            .get_row_iter(Some(PROJECTION.clone()))
            .map_err(parquet)?
        {
            let row = row.map_err(parquet)?;
            if row.get_string(0).map_err(parquet)? != device {
                continue;
            }
            let millis = row.get_timestamp_millis(2).map_err(parquet)?;
            let Some(event_time) = DateTime::from_timestamp_millis(millis) else {
                continue;
            };
            if event_time < from || event_time >= to {
                continue;
            }
            found.push(StoredReading {
                event_time,
                seq: row.get_long(1).map_err(parquet)?,
                value: row.get_double(3).map_err(parquet)?,
                unit: row.get_string(4).map_err(parquet)?.clone(),
                status: row.get_string(5).map_err(parquet)?.clone(),
                anomaly_kind: row.get_string(6).ok().cloned(),
                origin: (
                    row.get_int(7).map_err(parquet)?,
                    row.get_long(8).map_err(parquet)?,
                ),
            });
        }
    }
    Ok(())
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
    let files = layout::stored_files(&root).map_err(|source| StoreError::Io {
        path: root.clone(),
        source,
    })?;
    for path in files {
        let parquet = |source| StoreError::Parquet {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        let reader = SerializedFileReader::new(file).map_err(parquet)?;
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
