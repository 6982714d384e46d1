//! Minute aggregates read back from the Parquet store: one device's minutes,
//! and the fleet's totals per minute, for `metrocloud history --aggregates`
//! and the console's history pages.
//!
//! Only the hour folders of the asked window are opened. For a device, each
//! row group's device column is read first and the rest only where the
//! device is; for the fleet, only the minute, count and anomaly columns.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use parquet::data_type::{ByteArrayType, DoubleType, Int64Type};
use parquet::file::reader::{FileReader, RowGroupReader};

use super::StoreError;
use super::history::{column, open_reader, text, window_files};
use super::layout;

/// One stored minute of a device.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredMinute {
    /// The minute's start.
    #[serde(with = "crate::sensor::aggregate::minute_text")]
    pub minute: DateTime<Utc>,
    /// Readings in it.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// The last value.
    pub last: f64,
    /// Readings flagged anomalous.
    pub anomalies: u64,
    /// The unit.
    pub unit: String,
}

/// The whole fleet in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetMinute {
    /// Readings in the minute, all devices.
    pub readings: u64,
    /// Of which flagged anomalous.
    pub anomalies: u64,
}

/// Calls `each` with every row group of every aggregates file whose hour
/// folder the window `from..to` touches.
fn row_groups(
    data_dir: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    mut each: impl FnMut(&Path, &dyn RowGroupReader, usize) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for path in window_files(&data_dir.join(layout::AGGREGATES), from, to)? {
        let reader = open_reader(&path)?;
        for index in 0..reader.num_row_groups() {
            let rows = reader.metadata().row_group(index).num_rows() as usize;
            let group = reader
                .get_row_group(index)
                .map_err(StoreError::parquet(&path))?;
            each(&path, &*group, rows)?;
        }
    }
    Ok(())
}

fn inside(minute_ms: i64, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(minute_ms).filter(|minute| *minute >= from && *minute < to)
}

/// `device`'s stored minutes starting in `from..to`, oldest first.
pub fn device_minutes(
    data_dir: &Path,
    device: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<StoredMinute>, StoreError> {
    let mut found = Vec::new();
    row_groups(data_dir, from, to, |path, group, rows| {
        let parquet = |source| StoreError::parquet(path)(source);
        let (devices, _) = column::<ByteArrayType>(group, 0, rows).map_err(parquet)?;
        let matching: Vec<usize> = (0..devices.len())
            .filter(|&i| devices[i].data() == device.as_bytes())
            .collect();
        if matching.is_empty() {
            return Ok(());
        }
        let (unit, _) = column::<ByteArrayType>(group, 2, rows).map_err(parquet)?;
        let (minute, _) = column::<Int64Type>(group, 3, rows).map_err(parquet)?;
        let (count, _) = column::<Int64Type>(group, 4, rows).map_err(parquet)?;
        let (min, _) = column::<DoubleType>(group, 5, rows).map_err(parquet)?;
        let (max, _) = column::<DoubleType>(group, 6, rows).map_err(parquet)?;
        let (mean, _) = column::<DoubleType>(group, 7, rows).map_err(parquet)?;
        let (last, _) = column::<DoubleType>(group, 8, rows).map_err(parquet)?;
        let (anomalies, _) = column::<Int64Type>(group, 9, rows).map_err(parquet)?;
        for row in matching {
            let Some(at) = inside(minute[row], from, to) else {
                continue;
            };
            found.push(StoredMinute {
                minute: at,
                count: count[row] as u64,
                min: min[row],
                max: max[row],
                mean: mean[row],
                last: last[row],
                anomalies: anomalies[row] as u64,
                unit: text(&unit[row]),
            });
        }
        Ok(())
    })?;
    found.sort_by_key(|m| m.minute);
    Ok(found)
}

/// The fleet's readings and anomalies per minute starting in `from..to`.
pub fn fleet_minutes(
    data_dir: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<DateTime<Utc>, FleetMinute>, StoreError> {
    let mut totals: BTreeMap<DateTime<Utc>, FleetMinute> = BTreeMap::new();
    row_groups(data_dir, from, to, |path, group, rows| {
        let parquet = |source| StoreError::parquet(path)(source);
        let (minute, _) = column::<Int64Type>(group, 3, rows).map_err(parquet)?;
        let (count, _) = column::<Int64Type>(group, 4, rows).map_err(parquet)?;
        let (anomalies, _) = column::<Int64Type>(group, 9, rows).map_err(parquet)?;
        for row in 0..minute.len() {
            if let Some(at) = inside(minute[row], from, to) {
                let total = totals.entry(at).or_default();
                total.readings += count[row] as u64;
                total.anomalies += anomalies[row] as u64;
            }
        }
        Ok(())
    })?;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;
    use crate::sensor::aggregate::{AggregateSource, MinuteAggregate};
    use crate::store::row::Origin;
    use crate::store::{ParquetStore, StoreSettings, StoreStats};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn aggregate(
        device: &str,
        minute: DateTime<Utc>,
        count: u64,
        anomalies: u64,
    ) -> MinuteAggregate {
        MinuteAggregate {
            device_id: device.to_string(),
            device_type: "temperature".to_string(),
            unit: "°C".to_string(),
            minute,
            count,
            min: 1.0,
            max: 3.0,
            mean: 2.0,
            last: 2.5,
            anomalies,
            source: AggregateSource {
                partition: 0,
                offset: 0,
                emission: 0,
                watermark_before_ms: 0,
                watermark_ms: 0,
            },
        }
    }

    #[test]
    fn a_devices_minutes_and_the_fleets_totals_come_back_from_the_window_only() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            data_dir: dir.path().to_path_buf(),
            roll_after: Duration::from_secs(3600),
            ..StoreSettings::default()
        };
        let mut store: ParquetStore<MinuteAggregate> =
            ParquetStore::open(&settings, "aggregates", Arc::new(StoreStats::default())).unwrap();
        let start = at("2026-12-02T20:58:00Z");
        let mut offset = 0;
        // Minutes 20:58 to 21:02, across two hour folders, for two devices.
        for step in 0..5 {
            let minute = start + TimeDelta::minutes(step);
            for (device, count) in [("a", 12), ("b", 6)] {
                let row = aggregate(device, minute, count, u64::from(device == "b"));
                store
                    .append(
                        &row,
                        Origin {
                            partition: 0,
                            offset,
                        },
                    )
                    .unwrap();
                offset += 1;
            }
        }
        store.roll(true).unwrap();

        let (from, to) = (at("2026-12-02T20:59:00Z"), at("2026-12-02T21:02:00Z"));
        let minutes = device_minutes(dir.path(), "a", from, to).unwrap();
        let starts: Vec<String> = minutes
            .iter()
            .map(|m| m.minute.format("%H:%M").to_string())
            .collect();
        assert_eq!(starts, ["20:59", "21:00", "21:01"]);
        assert_eq!(
            (minutes[0].count, minutes[0].mean, minutes[0].unit.as_str()),
            (12, 2.0, "°C")
        );

        let fleet = fleet_minutes(dir.path(), from, to).unwrap();
        assert_eq!(fleet.len(), 3);
        assert!(fleet.values().all(|m| *m
            == FleetMinute {
                readings: 18,
                anomalies: 1
            }));
        assert!(
            device_minutes(dir.path(), "c", from, to)
                .unwrap()
                .is_empty()
        );
    }
}
