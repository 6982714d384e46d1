//! Compaction merges committed files only, keeps every row once, and a stop at
//! any step is undone by the next store that opens the folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::*;
use crate::sensor::reading::SensorReading;
use crate::sensor::reading::tests::example;
use crate::store::history::stored_keys;
use crate::store::row::Origin;
use crate::store::tests::{TOPIC, open};
use crate::store::{ParquetStore, StoreSettings, StoreStats};

/// Rolls offsets `range` of partition 0, all in hour 21 of 2026-12-01, into one file.
fn roll(store: &mut ParquetStore<SensorReading>, range: std::ops::Range<i64>) {
    let start = DateTime::parse_from_rfc3339("2026-12-01T21:00:00Z")
        .unwrap()
        .to_utc();
    for offset in range {
        let mut reading = example();
        reading.sequence = offset as u64;
        reading.timestamp = start + TimeDelta::seconds(offset % 3_000);
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
}

fn folder(dir: &Path) -> PathBuf {
    dir.join("readings/date=2026-12-01/hour=21")
}

fn names(dir: &Path) -> Vec<String> {
    layout::stored_files(&folder(dir))
        .unwrap()
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every stored (partition, offset), sorted, duplicates kept.
fn offsets(dir: &Path) -> Vec<(i32, i64)> {
    let mut found: Vec<(i32, i64)> = stored_keys(dir)
        .unwrap()
        .into_iter()
        .map(|k| (k.partition, k.offset))
        .collect();
    found.sort();
    found
}

fn properties() -> Arc<WriterProperties> {
    Arc::new(WriterProperties::builder().build())
}

/// Two committed rolls (offsets 0..250) and one not committed (250..300).
fn three_rolls(dir: &Path) {
    let mut store = open(dir);
    roll(&mut store, 0..100);
    store.committed(0, 100);
    roll(&mut store, 100..250);
    store.committed(0, 250);
    roll(&mut store, 250..300);
}

#[test]
fn committed_files_of_an_hour_become_one_file_with_every_row_once_in_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    three_rolls(dir.path());
    assert_eq!(names(dir.path()).len(), 3);

    let commits = HashMap::from([(0, 250)]);
    let done = compact_folder(&folder(dir.path()), TOPIC, &commits, &properties()).unwrap();
    assert_eq!((done.merged, done.written, done.pending), (2, 1, 1));
    assert_eq!(
        names(dir.path()),
        [
            "iot-sensor-data+0+0000000000000000000-0000000000000000249.parquet",
            "iot-sensor-data+0+0000000000000000250.parquet",
        ]
    );
    assert_eq!(
        offsets(dir.path()),
        (0..300).map(|o| (0, o)).collect::<Vec<_>>()
    );
    let merged = folder(dir.path()).join(&names(dir.path())[0]);
    let reader = SerializedFileReader::new(File::open(merged).unwrap()).unwrap();
    assert_eq!(
        reader.num_row_groups(),
        1,
        "the small files' rows in one row group"
    );
    assert_eq!(reader.metadata().file_metadata().num_rows(), 250);
    let in_file: Vec<i64> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| parquet::record::RowAccessor::get_long(&row.unwrap(), 19).unwrap())
        .collect();
    assert_eq!(in_file, (0..250).collect::<Vec<_>>(), "in offset order");

    // Once the last roll is committed, the merged file and it merge again.
    let commits = HashMap::from([(0, 300)]);
    let done = compact_folder(&folder(dir.path()), TOPIC, &commits, &properties()).unwrap();
    assert_eq!((done.merged, done.written, done.pending), (2, 1, 0));
    assert_eq!(
        names(dir.path()),
        ["iot-sensor-data+0+0000000000000000000-0000000000000000299.parquet"]
    );
    assert_eq!(
        offsets(dir.path()),
        (0..300).map(|o| (0, o)).collect::<Vec<_>>()
    );
}

#[test]
fn nothing_is_merged_for_a_partition_without_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    three_rolls(dir.path());
    let done = compact_folder(&folder(dir.path()), TOPIC, &HashMap::new(), &properties()).unwrap();
    assert_eq!((done.merged, done.pending), (0, 3));
    assert_eq!(names(dir.path()).len(), 3);
}

#[test]
fn sources_left_beside_their_merged_file_by_a_stop_are_removed_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    three_rolls(dir.path());
    let first = folder(dir.path()).join(&names(dir.path())[0]);
    let kept = std::fs::read(&first).unwrap();
    let commits = HashMap::from([(0, 250)]);
    compact_folder(&folder(dir.path()), TOPIC, &commits, &properties()).unwrap();
    // As if stopped after the merged file was renamed into place, before its sources went.
    std::fs::write(&first, kept).unwrap();
    assert_eq!(offsets(dir.path()).len(), 400, "offsets 0..100 twice");

    drop(open(dir.path()));
    assert_eq!(
        offsets(dir.path()),
        (0..300).map(|o| (0, o)).collect::<Vec<_>>()
    );
    assert_eq!(names(dir.path()).len(), 2);
}

#[test]
fn a_replay_from_the_commit_after_compaction_replaces_its_file_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    three_rolls(dir.path());
    let commits = HashMap::from([(0, 250)]);
    compact_folder(&folder(dir.path()), TOPIC, &commits, &properties()).unwrap();
    // A crash before 250.. was committed: the next owner reads again from 250.
    let mut again = open(dir.path());
    roll(&mut again, 250..300);
    drop(again);
    assert_eq!(
        offsets(dir.path()),
        (0..300).map(|o| (0, o)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_store_merges_an_ended_hours_committed_files_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        data_dir: dir.path().to_path_buf(),
        roll_after: Duration::from_millis(50),
        ..StoreSettings::default()
    };
    let stats = Arc::new(StoreStats::default());
    let mut store: ParquetStore<SensorReading> =
        ParquetStore::open(&settings, TOPIC, Arc::clone(&stats)).unwrap();
    roll(&mut store, 0..100);
    store.committed(0, 100);
    roll(&mut store, 100..250);
    store.committed(0, 250);
    tokio::time::sleep(Duration::from_millis(60)).await;
    store.compact().await;
    store.finish_compaction().await;
    assert_eq!(
        stats.compacted.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(
        names(dir.path()),
        ["iot-sensor-data+0+0000000000000000000-0000000000000000249.parquet"]
    );
    assert_eq!(
        offsets(dir.path()),
        (0..250).map(|o| (0, o)).collect::<Vec<_>>()
    );
}
