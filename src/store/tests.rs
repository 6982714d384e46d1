//! The store keeps every reading once, in the folder of its hour, across rolls,
//! commits, crashes and replays.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;

use super::layout;
use super::row::Origin;
use super::{ParquetStore, StoreError, StoreSettings, StoreStats};
use crate::sensor::reading::tests::example;
use crate::sensor::reading::{AnomalyKind, SensorReading};

pub(super) const TOPIC: &str = "iot-sensor-data";

fn settings(dir: &Path) -> StoreSettings {
    StoreSettings {
        data_dir: dir.to_path_buf(),
        roll_rows: 1_000_000,
        roll_after: Duration::from_secs(3600),
        ..StoreSettings::default()
    }
}

/// A readings store under `dir` that rolls only when told to.
pub(super) fn open(dir: &Path) -> ParquetStore<SensorReading> {
    ParquetStore::open(&settings(dir), TOPIC, Arc::new(StoreStats::default())).expect("opens")
}

/// Reading `sequence`, its event time `minutes` after 21:30 on 2026-12-01.
fn reading(sequence: u64, minutes: i64) -> SensorReading {
    let mut reading = example();
    reading.sequence = sequence;
    reading.timestamp = chrono::DateTime::parse_from_rfc3339("2026-12-01T21:30:00Z")
        .unwrap()
        .to_utc()
        + TimeDelta::minutes(minutes);
    if sequence % 10 == 3 {
        reading.is_anomaly = true;
        reading.anomaly_kind = Some(AnomalyKind::ExtremeTemperature);
    }
    reading
}

fn append(store: &mut ParquetStore<SensorReading>, partition: i32, offsets: std::ops::Range<i64>) {
    for offset in offsets {
        let minutes = offset % 60; // half in hour 21, half in hour 22
        let origin = Origin { partition, offset };
        store
            .append(&reading(offset as u64, minutes), origin)
            .expect("appended");
    }
}

/// A stored row: (partition, offset, seq, anomaly kind).
type Row = (i32, i64, i64, Option<String>);

/// Every stored row, sorted, and the files, relative to the readings folder.
fn stored(dir: &Path) -> (Vec<Row>, Vec<PathBuf>) {
    let root = dir.join(layout::READINGS);
    let files = layout::stored_files(&root).unwrap();
    let mut rows = Vec::new();
    for file in &files {
        let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let kind = row.get_string(16).ok().cloned();
            rows.push((
                row.get_int(18).unwrap(),
                row.get_long(19).unwrap(),
                row.get_long(3).unwrap(),
                kind,
            ));
        }
    }
    rows.sort();
    let relative = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    (rows, relative)
}

#[test]
fn a_roll_stores_every_reading_once_in_the_folder_of_its_hour_named_by_its_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    append(&mut store, 2, 100..160);
    assert_eq!(store.held_from(2), Some(100));
    store.roll(true).unwrap();
    assert_eq!(store.held_from(2), None);

    let (rows, files) = stored(dir.path());
    assert_eq!(rows.len(), 60);
    let offsets: BTreeSet<i64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(offsets, (100..160).collect());
    assert!(
        rows.iter().all(|r| r.0 == 2 && r.2 == r.1),
        "partition and seq kept"
    );
    let anomalies = rows
        .iter()
        .filter(|r| r.3.as_deref() == Some("extreme_temperature"));
    assert_eq!(
        anomalies.count(),
        6,
        "the optional column is kept where set"
    );
    // Offsets 100..120 fall at 22:10..22:29, 120..150 at 21:30..21:59, 150..160 at 22:00..22:09.
    assert_eq!(
        files,
        vec![
            PathBuf::from("date=2026-12-01/hour=21/iot-sensor-data+2+0000000000000000120.parquet"),
            PathBuf::from("date=2026-12-01/hour=22/iot-sensor-data+2+0000000000000000100.parquet"),
        ]
    );
}

#[test]
fn a_partition_rolls_again_only_once_its_last_roll_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    append(&mut store, 0, 0..10);
    store.roll(true).unwrap();
    append(&mut store, 0, 10..20);
    store.roll(true).unwrap();
    assert_eq!(stored(dir.path()).0.len(), 10, "the second roll waits");
    assert_eq!(
        store.held_from(0),
        Some(10),
        "so the commit stops before it"
    );

    store.committed(0, 9);
    store.roll(true).unwrap();
    assert_eq!(
        stored(dir.path()).0.len(),
        10,
        "a commit short of the roll's end frees nothing"
    );
    store.committed(0, 10);
    store.roll(true).unwrap();
    assert_eq!(stored(dir.path()).0.len(), 20);
}

#[test]
fn reading_again_after_a_crash_between_rename_and_commit_rewrites_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        append(&mut store, 1, 0..40);
        store.roll(true).unwrap();
        append(&mut store, 1, 40..55); // open, never renamed
        // A crash: the roll of 0..40 is in place, its commit never happened.
    }
    let (before, files_before) = stored(dir.path());
    assert_eq!(before.len(), 40);

    // The next owner reads from the last commit (0) and gets further before its roll.
    let mut store = open(dir.path());
    append(&mut store, 1, 0..90);
    store.roll(true).unwrap();
    let (after, files_after) = stored(dir.path());
    let offsets: Vec<i64> = after.iter().map(|r| r.1).collect();
    assert_eq!(
        offsets,
        (0..90).collect::<Vec<_>>(),
        "none missing, none twice"
    );
    assert!(
        files_before.iter().all(|f| files_after.contains(f)),
        "{files_before:?} replaced by name in {files_after:?}"
    );
    assert!(
        layout::leftovers(&dir.path().join(layout::READINGS))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn readings_of_partitions_that_moved_away_are_dropped_for_their_next_owner() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    append(&mut store, 0, 0..10);
    append(&mut store, 3, 0..10);
    store.forget(&[3]);
    assert_eq!(store.held_from(3), None);
    store.roll(true).unwrap();
    let (rows, _) = stored(dir.path());
    assert!(rows.iter().all(|r| r.0 == 0));
    assert_eq!(rows.len(), 10);
    assert!(
        layout::leftovers(&dir.path().join(layout::READINGS))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_partition_is_due_to_roll_by_its_count_of_readings() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        roll_rows: 25,
        ..settings(dir.path())
    };
    let mut store = ParquetStore::open(&settings, TOPIC, Arc::default()).unwrap();
    append(&mut store, 0, 0..24);
    assert!(!store.roll_due());
    append(&mut store, 0, 24..25);
    assert!(store.roll_due());
    store.roll(false).unwrap();
    assert_eq!(stored(dir.path()).0.len(), 25);
    append(&mut store, 0, 25..60);
    assert!(!store.roll_due(), "not before the last roll is committed");
}

#[test]
fn a_second_store_on_the_same_folder_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second = ParquetStore::<SensorReading>::open(&settings(dir.path()), TOPIC, Arc::default());
    match second {
        Err(StoreError::Locked { path }) => assert!(path.starts_with(dir.path())),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a second writer was let in"),
    }
}

#[test]
fn a_folder_that_cannot_be_written_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("data");
    std::fs::write(&blocker, b"a file where the folder should be").unwrap();
    let settings = StoreSettings {
        data_dir: blocker.clone(),
        ..settings(dir.path())
    };
    let error = ParquetStore::<SensorReading>::open(&settings, TOPIC, Arc::default())
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains(&blocker.display().to_string()),
        "{error}"
    );
}

#[test]
fn history_reads_back_one_devices_readings_inside_the_window_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    for offset in 0..120i64 {
        let mut reading = reading(offset as u64, offset); // one a minute from 21:30
        if offset % 2 == 1 {
            reading.device_id = "humidity-000007".to_string();
        }
        store
            .append(
                &reading,
                Origin {
                    partition: 0,
                    offset,
                },
            )
            .unwrap();
    }
    store.roll(true).unwrap();

    let at = |text| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
    let found = super::history::device_history(
        dir.path(),
        "temperature-000042",
        at("2026-12-01T21:50:00Z"),
        at("2026-12-01T22:10:00Z"),
    )
    .unwrap();
    let sequences: Vec<i64> = found.iter().map(|r| r.seq).collect();
    assert_eq!(sequences, (20..40).step_by(2).collect::<Vec<_>>());
    assert!(found.windows(2).all(|w| w[0].event_time < w[1].event_time));
    assert_eq!(found[0].origin, (0, 20));
    assert_eq!(found[0].unit, "°C");
    assert_eq!(found.iter().filter(|r| r.anomaly_kind.is_some()).count(), 0);

    // The other device's anomalies (sequence 23 and 33 in the window) keep their kind, in their rows.
    let other = super::history::device_history(
        dir.path(),
        "humidity-000007",
        at("2026-12-01T21:50:00Z"),
        at("2026-12-01T22:10:00Z"),
    )
    .unwrap();
    let kinds: Vec<(i64, Option<&str>)> = other
        .iter()
        .map(|r| (r.seq, r.anomaly_kind.as_deref()))
        .filter(|(_, kind)| kind.is_some())
        .collect();
    assert_eq!(
        kinds,
        [
            (23, Some("extreme_temperature")),
            (33, Some("extreme_temperature"))
        ]
    );
    assert_eq!(other.len(), 10);

    let none = super::history::device_history(
        dir.path(),
        "light-000001",
        at("2026-12-01T00:00:00Z"),
        at("2026-12-02T00:00:00Z"),
    )
    .unwrap();
    assert!(none.is_empty());
}
