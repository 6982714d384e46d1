//! What appends leave for the next sync: frames in memory, written to their
//! segment files by the sync alone, outside the queue's lock.
//!
//! An append that wrote into the file itself, even into the page cache,
//! could wait on the disk: a write blocks for milliseconds now and then
//! (the file system committing its journal, or the page still being
//! written out by the last fsync), and every other append, from every other
//! connection, waited behind the lock it held. `perf trace` of a gateway
//! taking 10,000 readings/s counted 48 waits of 2 to 7 ms for that lock in
//! 8 seconds on the threads serving devices, while the sync held it to
//! write. Now an append copies its frame into memory; the sync takes what
//! gathered (a swap under the lock), then writes it at its place in its
//! segment, starts new segments, and fsyncs, with the lock free.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::room::Spare;
use super::{SpoolError, io, segment_path, sync_dir};
use crate::lock::lock;

/// Room a new chunk starts with, at most: after a stall of the disk the
/// last sync may have taken megabytes, which the next need not reserve.
const ROOM_AHEAD: u64 = 1024 * 1024;

/// Frames appended to one segment since the last sync, and where they go.
#[derive(Debug)]
pub(super) struct Chunk {
    /// The segment's first record number (its name).
    first: u64,
    /// Where in the segment file the bytes start.
    offset: u64,
    bytes: Vec<u8>,
}

/// Everything appended since the last sync, in order.
#[derive(Debug, Default)]
pub(super) struct Unsynced {
    chunks: Vec<Chunk>,
    bytes: u64,
    /// Bytes the last sync took: a chunk starts with room for as many (up
    /// to [`ROOM_AHEAD`]), so that one allocation per sync holds what
    /// gathers, not a run of doublings.
    last_taken: u64,
}

impl Unsynced {
    /// Bytes waiting to be written.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A frame for byte `offset` of the segment whose first record is `first`.
    pub(super) fn add(&mut self, first: u64, offset: u64, parts: [&[u8]; 2]) {
        let follows = self
            .chunks
            .last()
            .is_some_and(|c| c.first == first && c.offset + c.bytes.len() as u64 == offset);
        if !follows {
            self.chunks.push(Chunk {
                first,
                offset,
                bytes: Vec::with_capacity(self.last_taken.min(ROOM_AHEAD) as usize),
            });
        }
        let chunk = self.chunks.last_mut().expect("a chunk was just made");
        for part in parts {
            chunk.bytes.extend_from_slice(part);
            self.bytes += part.len() as u64;
        }
    }

    fn take(&mut self) -> Vec<Chunk> {
        self.last_taken = std::mem::take(&mut self.bytes);
        std::mem::take(&mut self.chunks)
    }
}

/// The segment file being written, held by the sync's side.
#[derive(Debug)]
pub(super) struct Current {
    first: u64,
    path: PathBuf,
    file: File,
}

impl Current {
    /// The segment whose first record is `first`, opened for writing.
    pub(super) fn open(first: u64, path: &Path) -> Result<Current, SpoolError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        Ok(Current {
            first,
            path: path.to_path_buf(),
            file,
        })
    }
}

/// What the sync needs besides the queue, shared by the queue and each
/// sync under way: the folder, the file it writes, and the spare it turns
/// into the next segment.
#[derive(Debug)]
pub(super) struct Files {
    pub(super) dir: PathBuf,
    pub(super) current: Mutex<Current>,
    pub(super) spare: Mutex<Spare>,
}

impl Files {
    /// What was appended, to be written and fsynced by [`PendingSync::fsync`].
    pub(super) fn pending(self: &Arc<Self>, unsynced: &mut Unsynced, upto: u64) -> PendingSync {
        PendingSync {
            chunks: unsynced.take(),
            upto,
            files: Arc::clone(self),
        }
    }
}

/// What a sync started by [`super::Spool::begin_sync`] still has to do.
#[derive(Debug)]
pub struct PendingSync {
    chunks: Vec<Chunk>,
    upto: u64,
    files: Arc<Files>,
}

impl PendingSync {
    /// Writes the frames at their places and fsyncs; every record below the
    /// returned number is then durable. A segment is fsynced before the next
    /// one starts (the spare renamed into place, or a new file, and the
    /// folder fsynced), so records are durable in order.
    pub fn fsync(self) -> Result<u64, SpoolError> {
        let mut current = lock(&self.files.current);
        for chunk in &self.chunks {
            if chunk.first != current.first {
                current.file.sync_data().map_err(io(&current.path))?;
                let path = segment_path(&self.files.dir, chunk.first);
                let taken = lock(&self.files.spare).take(&path);
                let file = match taken {
                    Some(file) => file,
                    None => OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .write(true)
                        .open(&path)
                        .map_err(io(&path))?,
                };
                sync_dir(&self.files.dir)?;
                *current = Current {
                    first: chunk.first,
                    path,
                    file,
                };
            }
            current
                .file
                .write_all_at(&chunk.bytes, chunk.offset)
                .map_err(io(&current.path))?;
        }
        current.file.sync_data().map_err(io(&current.path))?;
        Ok(self.upto)
    }
}
