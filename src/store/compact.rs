//! Compaction: the small files of an hour folder merged, per partition, into one.
//!
//! Every roll leaves one file per partition in each hour folder it touched:
//! with the default roll every 60 s, an hour of six partitions is 360 small
//! files, slow to list and to open for any reader. Compaction merges a
//! partition's files of one hour into a single file with full row groups,
//! named for the offsets it holds (`<topic>+<p>+<first>-<last>.parquet`).
//!
//! Why the exactly-once promise holds:
//! - Only files whose every record is committed are merged. A replay starts
//!   at the commit, after them, so it never writes their names again, and the
//!   merged name (with a `-`) is one no roll writes.
//! - The merged file is written under a hidden name, flushed, renamed into
//!   place and its folder flushed before any source file is removed. A stop
//!   in between leaves the sources beside the merged file, whose name says
//!   which offsets it holds: [`remove_covered`] removes them before anything
//!   else reads or merges the folder (the store does it when it opens).
//! - Rows keep their Kafka partition and offset, in offset order.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::column::writer::{ColumnWriter, ColumnWriterImpl};
use parquet::data_type::{
    BoolType, ByteArrayType, DataType, DoubleType, FixedLenByteArrayType, FloatType, Int32Type,
    Int64Type, Int96Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;

use super::StoreError;
use super::history::{column, open_reader};
use super::layout::{self, FileName};
use super::row::ROW_GROUP_ROWS;

/// What one compaction of a folder did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Files merged into others and removed.
    pub merged: u64,
    /// Merged files written.
    pub written: u64,
    /// Files removed because a merged file already held their records.
    pub covered: u64,
    /// Files left for later because some of their records are not committed yet.
    pub pending: u64,
}

/// A stored file of the topic in the folder.
#[derive(Debug, Clone)]
struct Stored {
    name: FileName,
    path: PathBuf,
}

/// `topic`'s stored files directly in `folder`, by partition, in offset order.
fn stored_by_partition(
    folder: &Path,
    topic: &str,
) -> Result<BTreeMap<i32, Vec<Stored>>, StoreError> {
    let mut found: BTreeMap<i32, Vec<Stored>> = BTreeMap::new();
    for path in layout::stored_files(folder).map_err(StoreError::io(folder))? {
        if path.parent() != Some(folder) {
            continue;
        }
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = file_name.and_then(|n| FileName::parse(&n, topic)) {
            found
                .entry(name.partition)
                .or_default()
                .push(Stored { name, path });
        }
    }
    for files in found.values_mut() {
        files.sort_by_key(|f| f.name);
    }
    Ok(found)
}

/// Removes `topic`'s files in `folder` whose records a merged file holds
/// (what a stopped compaction leaves); returns how many.
pub fn remove_covered(folder: &Path, topic: &str) -> Result<u64, StoreError> {
    drop_covered(folder, &mut stored_by_partition(folder, topic)?)
}

/// Removes the files of `listed` (a folder's listing, by partition) whose
/// records a merged file among them holds, from disk and from `listed`.
fn drop_covered(folder: &Path, listed: &mut BTreeMap<i32, Vec<Stored>>) -> Result<u64, StoreError> {
    let mut removed = 0;
    for files in listed.values_mut() {
        let merged: Vec<(i64, i64, PathBuf)> = files
            .iter()
            .filter_map(|f| f.name.last.map(|last| (f.name.first, last, f.path.clone())))
            .collect();
        let covered = |file: &Stored| {
            merged.iter().any(|(first, last, path)| {
                *path != file.path
                    && (first..=last).contains(&&file.name.first)
                    && file.name.last.is_none_or(|own| own <= *last)
            })
        };
        let mut kept = Vec::with_capacity(files.len());
        for file in files.drain(..) {
            if covered(&file) {
                fs::remove_file(&file.path).map_err(StoreError::io(&file.path))?;
                tracing::info!(
                    "removed {}: a merged file holds its records",
                    file.path.display()
                );
                removed += 1;
            } else {
                kept.push(file);
            }
        }
        *files = kept;
    }
    if removed > 0 {
        layout::sync_folder(folder).map_err(StoreError::io(folder))?;
    }
    Ok(removed)
}

/// The last Kafka offset a stored file holds, from its footer's statistics
/// (the offset is every schema's last column).
fn last_offset(file: &Stored) -> Result<Option<i64>, StoreError> {
    if let Some(last) = file.name.last {
        return Ok(Some(last));
    }
    let reader = open_reader(&file.path)?;
    let metadata = reader.metadata();
    let mut last = None;
    for group in metadata.row_groups() {
        let offsets = group.column(group.num_columns() - 1);
        match offsets.statistics() {
            Some(Statistics::Int64(stats)) => {
                last = last.max(stats.max_opt().copied());
            }
            // No statistics: not merged.
            _ => return Ok(None),
        }
    }
    Ok(last)
}

/// Merges, per partition, `topic`'s files in `folder` whose records are all
/// committed (`committed`: partition -> committed offset). Files of partitions
/// not in `committed` are left alone.
pub fn compact_folder(
    folder: &Path,
    topic: &str,
    committed: &HashMap<i32, i64>,
    properties: &Arc<WriterProperties>,
) -> Result<Compacted, StoreError> {
    let mut listed = stored_by_partition(folder, topic)?;
    let mut done = Compacted {
        covered: drop_covered(folder, &mut listed)?,
        ..Compacted::default()
    };
    for (partition, files) in listed {
        let Some(&commit) = committed.get(&partition) else {
            done.pending += files.len() as u64;
            continue;
        };
        let mut ready = Vec::new();
        let mut last = i64::MIN;
        for file in files {
            match last_offset(&file)? {
                Some(end) if end < commit => {
                    last = last.max(end);
                    ready.push(file);
                }
                _ => done.pending += 1,
            }
        }
        if ready.len() < 2 {
            continue;
        }
        merge(folder, topic, partition, &ready, last, properties)?;
        done.merged += ready.len() as u64;
        done.written += 1;
    }
    Ok(done)
}

/// Writes `files` (in offset order, ending at offset `last`) as one file,
/// then removes them; see the module documentation for the order of steps.
fn merge(
    folder: &Path,
    topic: &str,
    partition: i32,
    files: &[Stored],
    last: i64,
    properties: &Arc<WriterProperties>,
) -> Result<(), StoreError> {
    let name = layout::compacted_name(topic, partition, files[0].name.first, last);
    let temporary = folder.join(layout::temporary_name(&name));
    let readers = files
        .iter()
        .map(|f| open_reader(&f.path))
        .collect::<Result<Vec<_>, _>>()?;
    let written = write_merged(&temporary, &readers, properties);
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    fs::rename(&temporary, folder.join(&name)).map_err(StoreError::io(&temporary))?;
    layout::sync_folder(folder).map_err(StoreError::io(folder))?;
    for file in files {
        fs::remove_file(&file.path).map_err(StoreError::io(&file.path))?;
    }
    layout::sync_folder(folder).map_err(StoreError::io(folder))
}

fn write_merged(
    path: &Path,
    readers: &[SerializedFileReader<File>],
    properties: &Arc<WriterProperties>,
) -> Result<(), StoreError> {
    let schema = readers[0]
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema_ptr();
    let file = File::create(path).map_err(StoreError::io(path))?;
    let mut writer = SerializedFileWriter::new(file, schema, Arc::clone(properties))
        .map_err(StoreError::parquet(path))?;
    // Source row groups gathered until they fill one row group of the merged file.
    let mut batches: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
    let mut rows_in_batch = 0;
    for (r, reader) in readers.iter().enumerate() {
        for g in 0..reader.num_row_groups() {
            if rows_in_batch >= ROW_GROUP_ROWS {
                batches.push(Vec::new());
                rows_in_batch = 0;
            }
            batches.last_mut().expect("one batch at least").push((r, g));
            rows_in_batch += reader.metadata().row_group(g).num_rows() as usize;
        }
    }
    let result = (|| {
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            let mut group = writer.next_row_group()?;
            let mut index = 0;
            while let Some(mut target) = group.next_column()? {
                copy_column(target.untyped(), readers, batch, index)?;
                target.close()?;
                index += 1;
            }
            group.close()?;
        }
        writer.into_inner()
    })();
    let file = result.map_err(StoreError::parquet(path))?;
    file.sync_all().map_err(StoreError::io(path))
}

/// Copies column `index` of the row groups `batch` into `target`, decoded and encoded again.
fn copy_column(
    target: &mut ColumnWriter<'_>,
    readers: &[SerializedFileReader<File>],
    batch: &[(usize, usize)],
    index: usize,
) -> parquet::errors::Result<()> {
    match target {
        ColumnWriter::BoolColumnWriter(w) => copy::<BoolType>(w, readers, batch, index),
        ColumnWriter::Int32ColumnWriter(w) => copy::<Int32Type>(w, readers, batch, index),
        ColumnWriter::Int64ColumnWriter(w) => copy::<Int64Type>(w, readers, batch, index),
        ColumnWriter::Int96ColumnWriter(w) => copy::<Int96Type>(w, readers, batch, index),
        ColumnWriter::FloatColumnWriter(w) => copy::<FloatType>(w, readers, batch, index),
        ColumnWriter::DoubleColumnWriter(w) => copy::<DoubleType>(w, readers, batch, index),
        ColumnWriter::ByteArrayColumnWriter(w) => copy::<ByteArrayType>(w, readers, batch, index),
        ColumnWriter::FixedLenByteArrayColumnWriter(w) => {
            copy::<FixedLenByteArrayType>(w, readers, batch, index)
        }
    }
}

fn copy<T: DataType>(
    target: &mut ColumnWriterImpl<'_, T>,
    readers: &[SerializedFileReader<File>],
    batch: &[(usize, usize)],
    index: usize,
) -> parquet::errors::Result<()> {
    for &(r, g) in batch {
        let reader = &readers[r];
        let optional = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .column(index)
            .max_def_level()
            > 0;
        let rows = reader.metadata().row_group(g).num_rows() as usize;
        let group = reader.get_row_group(g)?;
        let (values, defined) = column::<T>(&*group, index, rows)?;
        target.write_batch(&values, optional.then_some(defined.as_slice()), None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
