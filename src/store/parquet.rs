//! The Parquet store: open files per Kafka partition, rolled together; see [`super`].
//! One store keeps one kind of row ([`Row`]) in a folder of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parquet::basic::Compression;
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;

use super::compact::{self, Compacted};
use super::layout::{self, Hour};
use super::row::{Origin, ROW_GROUP_ROWS, Row, RowColumns};
use super::{StoreError, StoreSettings};

/// Counters of the store, shared with status lines.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Readings in files renamed into place (a file rewritten after a restart counts again).
    pub stored: AtomicU64,
    /// Readings in open files, not yet renamed into place or committed.
    pub held: AtomicU64,
    /// Files renamed into place.
    pub files: AtomicU64,
    /// Bytes of those files.
    pub bytes: AtomicU64,
    /// Rolls: partitions whose open files were closed together.
    pub rolls: AtomicU64,
    /// Files merged into bigger ones by compaction, and removed.
    pub compacted: AtomicU64,
    /// Merged files compaction wrote.
    pub merged: AtomicU64,
}

/// A compaction on a blocking thread: what it did in each hour folder.
type CompactionJob = tokio::task::JoinHandle<Result<Vec<(Hour, Compacted)>, StoreError>>;

/// One file being written.
struct OpenFile<R: Row> {
    folder: PathBuf,
    name: String,
    temporary: PathBuf,
    writer: SerializedFileWriter<File>,
    columns: R::Columns,
}

impl<R: Row> OpenFile<R> {
    fn write_row_group(&mut self) -> Result<(), StoreError> {
        let parquet = |source| StoreError::parquet(&self.temporary)(source);
        let mut group = self.writer.next_row_group().map_err(parquet)?;
        self.columns.write(&mut group).map_err(parquet)?;
        group.close().map_err(parquet)?;
        Ok(())
    }
}

/// What a partition holds in open files.
struct Held<R: Row> {
    first: i64,
    last: i64,
    rows: u64,
    since: Instant,
    files: BTreeMap<Hour, OpenFile<R>>,
}

/// Rows of one topic kept in Parquet files under a data folder; see [`super`].
pub struct ParquetStore<R: Row> {
    root: PathBuf,
    topic: String,
    roll_rows: u64,
    roll_after: Duration,
    properties: Arc<WriterProperties>,
    held: HashMap<i32, Held<R>>,
    /// Per partition, the offset after its last roll, until a commit reaches it.
    uncommitted: HashMap<i32, i64>,
    /// Per partition, the offset committed last: files before it may be merged.
    commits: HashMap<i32, i64>,
    /// Hour folders rolled into and not compacted since.
    touched: BTreeSet<Hour>,
    /// The compaction running on a blocking thread, if any.
    compacting: Option<CompactionJob>,
    compacted_at: Instant,
    stats: Arc<StoreStats>,
    /// Held for the store's life: one writer per folder.
    _lock: File,
}

impl<R: Row> ParquetStore<R> {
    /// Opens the store of `topic` under `settings.data_dir`, taking its lock and
    /// removing files a stopped writer left half written.
    pub fn open(
        settings: &StoreSettings,
        topic: &str,
        stats: Arc<StoreStats>,
    ) -> Result<ParquetStore<R>, StoreError> {
        let root = settings.data_dir.join(R::FOLDER);
        let io = StoreError::io;
        fs::create_dir_all(&root).map_err(io(&root))?;
        let lock_path = root.join(".lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path: lock_path }),
            Err(TryLockError::Error(source)) => return Err(io(&lock_path)(source)),
        }
        let found = layout::found_at_open(&root, topic).map_err(io(&root))?;
        for leftover in found.leftovers {
            fs::remove_file(&leftover).map_err(io(&leftover))?;
            tracing::info!(
                "removed {} (never committed; read again)",
                leftover.display()
            );
        }
        for folder in found.merged_folders {
            compact::remove_covered(&folder, topic)?;
        }
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_created_by(format!("metrocloud {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ParquetStore {
            root,
            topic: topic.to_string(),
            roll_rows: settings.roll_rows.max(1),
            roll_after: settings.roll_after,
            properties: Arc::new(properties),
            held: HashMap::new(),
            uncommitted: HashMap::new(),
            commits: HashMap::new(),
            touched: BTreeSet::new(),
            compacting: None,
            compacted_at: Instant::now(),
            stats,
            _lock: lock,
        })
    }

    /// The folder the files go under (`<data dir>/readings`, `<data dir>/aggregates`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Adds a row read from `origin`, to the open file of its partition and hour.
    pub fn append(&mut self, row: &R, origin: Origin) -> Result<(), StoreError> {
        let held = self.held.entry(origin.partition).or_insert_with(|| Held {
            first: origin.offset,
            last: origin.offset,
            rows: 0,
            since: Instant::now(),
            files: BTreeMap::new(),
        });
        let hour = Hour::of(row.event_time());
        let file = match held.files.entry(hour) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let name = layout::file_name(&self.topic, origin.partition, origin.offset);
                entry.insert(open_file(&self.root, hour, name, &self.properties)?)
            }
        };
        file.columns.push(row, origin);
        if file.columns.len() >= ROW_GROUP_ROWS {
            file.write_row_group()?;
        }
        held.last = origin.offset;
        held.rows += 1;
        self.stats.held.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The offset of the first record `partition` holds in open files: the
    /// consumer commits no further. `None` when everything read is stored.
    pub fn held_from(&self, partition: i32) -> Option<i64> {
        self.held.get(&partition).map(|held| held.first)
    }

    /// Whether a partition is due to roll and free to.
    pub fn roll_due(&self) -> bool {
        self.held
            .iter()
            .any(|(partition, held)| self.may_roll(*partition) && self.is_due(held))
    }

    fn is_due(&self, held: &Held<R>) -> bool {
        held.rows >= self.roll_rows || held.since.elapsed() >= self.roll_after
    }

    fn may_roll(&self, partition: i32) -> bool {
        !self.uncommitted.contains_key(&partition)
    }

    /// Rolls every partition that is due (every one, with `everything`) and
    /// whose previous roll is committed.
    pub fn roll(&mut self, everything: bool) -> Result<(), StoreError> {
        let ready: Vec<i32> = self
            .held
            .iter()
            .filter(|(partition, held)| {
                self.may_roll(**partition) && (everything || self.is_due(held))
            })
            .map(|(partition, _)| *partition)
            .collect();
        for partition in ready {
            let held = self.held.remove(&partition).expect("listed above");
            self.stats.held.fetch_sub(held.rows, Ordering::Relaxed);
            self.uncommitted.insert(partition, held.last + 1);
            self.roll_partition(held)?;
        }
        Ok(())
    }

    fn roll_partition(&mut self, held: Held<R>) -> Result<(), StoreError> {
        self.touched.extend(held.files.keys().copied());
        let mut folders = BTreeSet::new();
        let mut files = held.files.into_values();
        while let Some(file) = files.next() {
            folders.insert(file.folder.clone());
            match close_file(file) {
                Ok(bytes) => {
                    self.stats.files.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                Err(error) => {
                    // Their records are read again; the half-written files can go.
                    for rest in files {
                        let _ = fs::remove_file(&rest.temporary);
                    }
                    return Err(error);
                }
            }
        }
        for folder in folders {
            layout::sync_folder(&folder).map_err(StoreError::io(&folder))?;
        }
        self.stats.stored.fetch_add(held.rows, Ordering::Relaxed);
        self.stats.rolls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `partition` is committed up to `offset`: a roll that ends there or before is safe.
    pub fn committed(&mut self, partition: i32, offset: i64) {
        self.commits.insert(partition, offset);
        if self
            .uncommitted
            .get(&partition)
            .is_some_and(|end| offset >= *end)
        {
            self.uncommitted.remove(&partition);
        }
    }

    /// `partitions` moved to another writer: what they hold is dropped (the
    /// next owner reads it again from the last commit).
    pub fn forget(&mut self, partitions: &[i32]) {
        for partition in partitions {
            self.uncommitted.remove(partition);
            self.commits.remove(partition);
            if let Some(held) = self.held.remove(partition) {
                self.stats.held.fetch_sub(held.rows, Ordering::Relaxed);
                for file in held.files.into_values() {
                    let _ = fs::remove_file(&file.temporary);
                }
            }
        }
    }
}

impl<R: Row> ParquetStore<R> {
    /// Reports a compaction that finished, and starts one over the hour
    /// folders that are due, at most once a roll interval. An hour is due once
    /// it ended a roll interval ago; a folder whose files are not all
    /// committed yet is looked at again later. A failed compaction leaves the
    /// files as they are, which is still a whole and correct store.
    pub async fn compact(&mut self) {
        if self
            .compacting
            .as_ref()
            .is_some_and(|job| job.is_finished())
        {
            self.finish_compaction().await;
        }
        if self.compacting.is_some() || self.compacted_at.elapsed() < self.roll_after {
            return;
        }
        self.compacted_at = Instant::now();
        let ended =
            chrono::Utc::now() - chrono::TimeDelta::from_std(self.roll_after).unwrap_or_default();
        let current = Hour::of(ended);
        let due: Vec<Hour> = self.touched.range(..current).copied().collect();
        if due.is_empty() || self.commits.is_empty() {
            return;
        }
        for hour in &due {
            self.touched.remove(hour);
        }
        let (root, topic) = (self.root.clone(), self.topic.clone());
        let (commits, properties) = (self.commits.clone(), Arc::clone(&self.properties));
        self.compacting = Some(tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|hour| {
                    let folder = root.join(hour.folder());
                    compact::compact_folder(&folder, &topic, &commits, &properties)
                        .map(|done| (hour, done))
                })
                .collect()
        }));
    }

    /// Waits for the compaction running, if any, and reports it.
    pub async fn finish_compaction(&mut self) {
        let Some(job) = self.compacting.take() else {
            return;
        };
        match job.await {
            Ok(Ok(folders)) => {
                for (hour, done) in folders {
                    if done.pending > 0 {
                        self.touched.insert(hour);
                    }
                    if done.merged > 0 {
                        self.stats
                            .compacted
                            .fetch_add(done.merged, Ordering::Relaxed);
                        self.stats.merged.fetch_add(done.written, Ordering::Relaxed);
                        tracing::info!(
                            "compacted {}: {} files merged into {}",
                            self.root.join(hour.folder()).display(),
                            done.merged,
                            done.written
                        );
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::warn!("compaction stopped, the files stay as they are: {error}")
            }
            Err(error) => tracing::warn!("compaction stopped: {error}"),
        }
    }
}

impl<R: Row> Drop for ParquetStore<R> {
    /// What open files held is read again by the next store; it is no longer held.
    fn drop(&mut self) {
        let held: u64 = self.held.values().map(|held| held.rows).sum();
        self.stats.held.fetch_sub(held, Ordering::Relaxed);
    }
}

fn open_file<R: Row>(
    root: &Path,
    hour: Hour,
    name: String,
    properties: &Arc<WriterProperties>,
) -> Result<OpenFile<R>, StoreError> {
    let folder = root.join(hour.folder());
    layout::create_folder(root, &hour.folder()).map_err(StoreError::io(&folder))?;
    let temporary = folder.join(layout::temporary_name(&name));
    let file = File::create(&temporary).map_err(StoreError::io(&temporary))?;
    let writer = SerializedFileWriter::new(file, R::Columns::schema(), Arc::clone(properties))
        .map_err(StoreError::parquet(&temporary))?;
    Ok(OpenFile {
        folder,
        name,
        temporary,
        writer,
        columns: R::Columns::default(),
    })
}

/// Writes the last row group and the footer, flushes the file to disk and
/// renames it into place; returns its size. On failure the half-written file is removed.
fn close_file<R: Row>(mut file: OpenFile<R>) -> Result<u64, StoreError> {
    let temporary = file.temporary.clone();
    let finished = (|| {
        if !file.columns.is_empty() {
            file.write_row_group()?;
        }
        let written = file
            .writer
            .into_inner()
            .map_err(StoreError::parquet(&temporary))?;
        let io = || StoreError::io(&temporary);
        written.sync_all().map_err(io())?;
        let bytes = written.metadata().map_err(io())?.len();
        fs::rename(&temporary, file.folder.join(&file.name)).map_err(io())?;
        Ok(bytes)
    })();
    if finished.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    finished
}
