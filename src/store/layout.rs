//! Where the store's files live, what they are called, and making a name durable.
//!
//! ```text
//! data/readings/date=2026-12-01/hour=21/iot-sensor-data+3+0000000000000012345.parquet
//! ```
//!
//! Folders follow Hive's `key=value` convention, so query engines (pyarrow,
//! DuckDB, Spark, Trino) read the date and hour as columns and skip folders a
//! query does not need. A file's name is fixed by the topic, the Kafka
//! partition and the offset of its first record, never by a clock: read again
//! after a crash, the same records produce the same name, and the rewritten
//! file replaces the old one instead of doubling it.
//!
//! A file is written under a hidden temporary name (readers skip names that
//! start with a dot), flushed to disk, renamed into place, and its folder
//! flushed so the rename itself survives a power cut.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The folder under the data directory that holds readings.
pub const READINGS: &str = "readings";

/// The folder of the stored minute aggregates, under the data folder.
pub const AGGREGATES: &str = "aggregates";

/// The suffix of files still being written.
const TEMPORARY: &str = ".tmp";

/// An hour of event time, UTC: the folder a reading goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour {
    /// Days since 1970-01-01.
    day: i32,
    hour: u32,
}

impl Hour {
    /// The hour `time` falls in.
    pub fn of(time: DateTime<Utc>) -> Hour {
        Hour {
            day: time.date_naive().num_days_from_ce(),
            hour: time.hour(),
        }
    }

    /// `date=YYYY-MM-DD/hour=HH`.
    pub fn folder(self) -> PathBuf {
        let date = chrono::NaiveDate::from_num_days_from_ce_opt(self.day)
            .expect("a day taken from a valid date");
        PathBuf::from(format!("date={}", date.format("%Y-%m-%d")))
            .join(format!("hour={:02}", self.hour))
    }
}

/// The name of the file whose first record is `first_offset` of `topic`'s `partition`.
pub fn file_name(topic: &str, partition: i32, first_offset: i64) -> String {
    format!("{topic}+{partition}+{first_offset:019}.parquet")
}

/// The name of a file that compaction merged from `topic`'s `partition`,
/// holding its records from offset `first` to `last`.
pub fn compacted_name(topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("{topic}+{partition}+{first:019}-{last:019}.parquet")
}

/// What a stored file's name says: its partition, its first offset, and for a
/// compacted file its last. Kafka topic names hold no `+`, so the parts are plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileName {
    /// The Kafka partition.
    pub partition: i32,
    /// The first record's offset.
    pub first: i64,
    /// The last record's offset, in a compacted file's name.
    pub last: Option<i64>,
}

impl FileName {
    /// Reads `name` as a stored file of `topic`; `None` for anything else.
    pub fn parse(name: &str, topic: &str) -> Option<FileName> {
        let rest = name.strip_suffix(".parquet")?.strip_prefix(topic)?;
        let (partition, offsets) = rest.strip_prefix('+')?.split_once('+')?;
        let (first, last) = match offsets.split_once('-') {
            Some((first, last)) => (first, Some(last.parse().ok()?)),
            None => (offsets, None),
        };
        Some(FileName {
            partition: partition.parse().ok()?,
            first: first.parse().ok()?,
            last,
        })
    }
}

/// The hidden name a file is written under before it is renamed to `name`.
pub fn temporary_name(name: &str) -> String {
    format!(".{name}{TEMPORARY}")
}

/// Creates `folder` and the folders above it under `root`, flushing each
/// parent whose entries changed, so a new folder survives a power cut.
pub fn create_folder(root: &Path, folder: &Path) -> io::Result<()> {
    let mut path = root.to_path_buf();
    for part in folder.components() {
        let parent = path.clone();
        path.push(part);
        match fs::create_dir(&path) {
            Ok(()) => sync_folder(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Flushes a folder's entries (renames, new files) to disk.
pub fn sync_folder(folder: &Path) -> io::Result<()> {
    File::open(folder)?.sync_all()
}

/// Files still under a temporary name below `root`: what a stopped or
/// crashed writer left. Their records were never committed, so they are read
/// again; the files can go.
pub fn leftovers(root: &Path) -> io::Result<Vec<PathBuf>> {
    files_below(root, |name| {
        name.starts_with('.') && name.ends_with(TEMPORARY)
    })
}

/// What a store finds below its folder when it opens, in one walk.
#[derive(Debug, Default)]
pub struct Found {
    /// Files under a temporary name (see [`leftovers`]).
    pub leftovers: Vec<PathBuf>,
    /// Folders holding a file that compaction merged from `topic`'s files.
    pub merged_folders: std::collections::BTreeSet<PathBuf>,
}

/// Walks `root` once for what [`Found`] lists.
pub fn found_at_open(root: &Path, topic: &str) -> io::Result<Found> {
    let temporary = |name: &str| name.starts_with('.') && name.ends_with(TEMPORARY);
    let merged = |name: &str| FileName::parse(name, topic).is_some_and(|n| n.last.is_some());
    let mut found = Found::default();
    for path in files_below(root, |name| temporary(name) || merged(name))? {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.as_deref().is_some_and(temporary) {
            found.leftovers.push(path);
        } else if let Some(folder) = path.parent() {
            found.merged_folders.insert(folder.to_path_buf());
        }
    }
    Ok(found)
}

/// The stored files below `root`, sorted by path.
pub fn stored_files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = files_below(root, |name| {
        !name.starts_with('.') && name.ends_with(".parquet")
    })?;
    found.sort();
    Ok(found)
}

/// The files below `root` (none when it does not exist) whose names `wanted` takes.
fn files_below(root: &Path, wanted: impl Fn(&str) -> bool) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                folders.push(entry.path());
            } else if wanted(&entry.file_name().to_string_lossy()) {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_goes_to_the_folder_of_its_utc_date_and_hour() {
        let time = DateTime::parse_from_rfc3339("2026-12-01T21:59:59.999+00:00").unwrap();
        let folder = Hour::of(time.with_timezone(&Utc)).folder();
        assert_eq!(folder, Path::new("date=2026-12-01/hour=21"));
        let next = DateTime::parse_from_rfc3339("2026-12-01T22:00:00+00:00").unwrap();
        assert_eq!(
            Hour::of(next.with_timezone(&Utc)).folder(),
            Path::new("date=2026-12-01/hour=22")
        );
    }

    #[test]
    fn a_file_is_named_by_topic_partition_and_first_offset_so_names_sort_by_offset() {
        assert_eq!(
            file_name("iot-sensor-data", 3, 12_345),
            "iot-sensor-data+3+0000000000000012345.parquet"
        );
        assert!(file_name("t", 0, 99) < file_name("t", 0, 100));
        assert_eq!(
            temporary_name("t+0+1.parquet"),
            ".t+0+1.parquet.tmp",
            "hidden from readers while written"
        );
    }

    #[test]
    fn a_name_says_its_partition_and_offsets_and_only_for_its_topic() {
        let rolled = FileName::parse(&file_name("iot-sensor-data", 3, 12_345), "iot-sensor-data");
        assert_eq!(
            rolled,
            Some(FileName {
                partition: 3,
                first: 12_345,
                last: None
            })
        );
        let merged = compacted_name("iot-sensor-data", 3, 12_345, 99_999);
        assert_eq!(
            merged,
            "iot-sensor-data+3+0000000000000012345-0000000000000099999.parquet"
        );
        assert_eq!(
            FileName::parse(&merged, "iot-sensor-data").unwrap().last,
            Some(99_999)
        );
        assert_eq!(FileName::parse(&merged, "iot-sensor"), None);
        assert_eq!(FileName::parse("notes.txt", "iot-sensor-data"), None);
    }

    #[test]
    fn leftovers_are_the_temporary_files_and_only_they() {
        let root = tempfile::tempdir().unwrap();
        let folder = Path::new("date=2026-12-01/hour=21");
        create_folder(root.path(), folder).unwrap();
        let done = root.path().join(folder).join(file_name("t", 0, 0));
        let open = root
            .path()
            .join(folder)
            .join(temporary_name(&file_name("t", 0, 7)));
        fs::write(&done, b"x").unwrap();
        fs::write(&open, b"x").unwrap();
        assert_eq!(leftovers(root.path()).unwrap(), vec![open]);
        assert_eq!(stored_files(root.path()).unwrap(), vec![done]);
    }
}
