//! An append-only queue on disk: what a gateway holds between accepting a
//! device's reading and Kafka acknowledging it.
//!
//! Records are numbered in the order they are appended and written into
//! segment files (`<first number>.seg`), each record framed as its length,
//! a CRC-32C of its number and bytes, its number, and its bytes. Appending
//! only copies the frame into memory; [`Spool::sync`] writes and fsyncs
//! everything appended since the last sync (group commit: one fsync for
//! every record of an interval), and only then may the records up to
//! [`Spool::durable`] be acknowledged to their devices. A caller sharing the
//! queue between threads syncs in two halves, [`Spool::begin_sync`] under
//! its lock and [`PendingSync::fsync`] outside it, so that no append ever
//! waits for the disk (see `unsynced.rs`). Kafka's acknowledgements come back through
//! [`Spool::release`]: the first number not yet acknowledged is written over
//! `released` in place and synced, and segments wholly below it are deleted.
//!
//! The queue is bounded in bytes; an append beyond the bound is refused with
//! [`SpoolError::Full`], so the caller pushes back on its devices instead of
//! dropping anything.
//!
//! Opening checks every record: a bad checksum, a short record or one not
//! numbered next ends the log there. Only the tail of the last segment can
//! be torn (a crash during a write), and bytes after the last whole record
//! were never synced, so never acknowledged to a device: they are written
//! over. (They need not be cut off: a reader stops where they start, and so
//! it does at the older records of a reused segment file, see `room.rs`.)

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

mod cursor;
mod room;
#[cfg(test)]
mod tests;
mod unsynced;

use crate::lock::lock;
pub use cursor::Cursor;
pub use unsynced::PendingSync;
use unsynced::{Current, Files, Unsynced};

/// The file holding the first record number Kafka has not acknowledged.
const RELEASED: &str = "released";

/// Bytes of a record's frame besides its payload: length, CRC, number.
const FRAME: u64 = 4 + 4 + 8;

/// The largest record taken: a reading is a few hundred bytes, and a length
/// beyond this read from a file is damage, not a record.
pub const MAX_RECORD: usize = 1024 * 1024;

/// How big segments get, and how much the queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolSettings {
    /// A segment is closed, and a new one started, past this many bytes.
    pub segment_bytes: u64,
    /// Appends are refused while the records not yet released take this many bytes.
    pub max_bytes: u64,
    /// Appends are refused while this many bytes appended wait in memory for
    /// a sync to write them: the disk is behind ([`SpoolError::Behind`]),
    /// and what waits is bounded rather than held without limit.
    pub max_unsynced: u64,
}

/// Why the queue cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file of the queue cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A record larger than [`MAX_RECORD`].
    #[error("a record of {0} bytes is larger than the spool takes ({MAX_RECORD})")]
    TooLarge(usize),
    /// Another process has the queue open.
    #[error("{0}: in use by another process (one gateway per spool folder)")]
    InUse(PathBuf),
    /// A record that was durable cannot be read back whole.
    #[error("{path}: the record at byte {offset} cannot be read back whole")]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
    },
    /// The disk is behind: `max_unsynced` bytes wait to be written. Push
    /// back, drop nothing.
    #[error("the disk is behind: {0} bytes appended are not written yet")]
    Behind(u64),
    /// The queue holds `max_bytes` already: push back, drop nothing.
    #[error("the spool is full ({held} of {max} bytes held until Kafka acknowledges them)")]
    Full {
        /// Bytes held.
        held: u64,
        /// The bound.
        max: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One segment file: the number of its first record, its path and size.
#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    bytes: u64,
}

/// The queue; see the module documentation.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    settings: SpoolSettings,
    /// Oldest first; the last is the one appended to.
    segments: Vec<Segment>,
    /// Frames appended since the last sync began, in memory.
    unsynced: Unsynced,
    /// A sync began and has not finished.
    syncing: bool,
    /// What syncs write to, the spare among them.
    files: Arc<Files>,
    /// The number the next append gets.
    next: u64,
    /// Every record below this number is synced.
    durable: u64,
    /// Every record below this number is acknowledged by Kafka.
    released: u64,
    /// Held while the queue is open: two writers would interleave records.
    _lock: nix::fcntl::Flock<File>,
}

impl Spool {
    /// Opens the queue in `dir` (made when missing), checking every record
    /// and cutting a torn tail off the last segment.
    pub fn open(dir: &Path, settings: SpoolSettings) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let file = open_to_write(&dir.join("lock"))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| SpoolError::InUse(dir.to_path_buf()))?;
        let released = read_released(dir)?;
        // Left by a version that wrote `released` through a renamed copy.
        let _ = std::fs::remove_file(dir.join("released.tmp"));
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = Vec::new();
        let mut next = released;
        for first in firsts {
            let path = segment_path(dir, first);
            let (count, valid) = scan(&path, first)?;
            let file_bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
            if valid < file_bytes && !room::is_room(&path, valid).map_err(io(&path))? {
                tracing::info!(
                    "{}: the records end at byte {valid}; what follows is a write a crash cut short (never synced, never acknowledged) or an earlier segment's records in a reused file, and is written over",
                    path.display()
                );
            }
            next = next.max(first + count);
            segments.push(Segment {
                first,
                path,
                bytes: valid,
            });
        }
        let mut spare = room::Spare::new(dir, settings.segment_bytes);
        if segments.is_empty() {
            let path = segment_path(dir, next);
            room::make_zeroed(&path, settings.segment_bytes, std::time::Duration::ZERO)
                .map_err(io(&path))?;
            spare.make_now().map_err(io(dir))?;
            sync_dir(dir)?;
            segments.push(Segment {
                first: next,
                path,
                bytes: 0,
            });
        }
        // Records below the first segment are gone: Kafka had them (a torn
        // `released` reads as 0, and the cursor starts at a record still held).
        let released = released.max(segments[0].first);
        let last = segments.last().expect("one segment at least");
        let files = Arc::new(Files {
            dir: dir.to_path_buf(),
            current: Mutex::new(Current::open(last.first, &last.path)?),
            spare: Mutex::new(spare),
        });
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            settings,
            segments,
            unsynced: Unsynced::default(),
            syncing: false,
            files,
            next,
            durable: next,
            released: released.min(next),
            _lock: lock,
        };
        for path in spool.mark_released(released) {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(spool)
    }

    /// Appends `payload`; its number. Not durable before the next [`Spool::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        if payload.len() > MAX_RECORD {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let held = self.held_bytes();
        let size = FRAME + payload.len() as u64;
        if held + size > self.settings.max_bytes {
            return Err(SpoolError::Full {
                held,
                max: self.settings.max_bytes,
            });
        }
        if self.unsynced.bytes() + size > self.settings.max_unsynced {
            return Err(SpoolError::Behind(self.unsynced.bytes()));
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.bytes >= self.settings.segment_bytes)
        {
            self.roll();
        }
        let number = self.next;
        let mut head = [0u8; FRAME as usize];
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[8..].copy_from_slice(&number.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[8..]), payload);
        head[4..8].copy_from_slice(&crc.to_le_bytes());
        let segment = self.segments.last_mut().expect("one segment at least");
        self.unsynced
            .add(segment.first, segment.bytes, [&head, payload]);
        let half = self.settings.segment_bytes / 2;
        let crossed_half = segment.bytes < half && segment.bytes + size >= half;
        segment.bytes += size;
        if crossed_half {
            lock(&self.files.spare).prepare();
        }
        self.next += 1;
        Ok(number)
    }

    /// Writes and fsyncs everything appended; every record below the
    /// returned number is durable.
    pub fn sync(&mut self) -> Result<u64, SpoolError> {
        if let Some(pending) = self.begin_sync()? {
            let upto = pending.fsync()?;
            self.finish_sync(upto);
        }
        Ok(self.durable)
    }

    /// The first half of [`Spool::sync`], for callers that share the queue:
    /// takes what was appended (no file touched), for [`PendingSync::fsync`]
    /// to write and fsync while appends go on. `None` when everything is
    /// durable already, or while an earlier sync has not finished (syncs
    /// write in the order they began, one at a time).
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>, SpoolError> {
        if self.durable == self.next || self.syncing {
            return Ok(None);
        }
        self.syncing = true;
        Ok(Some(self.files.pending(&mut self.unsynced, self.next)))
    }

    /// The second half: [`PendingSync::fsync`] made every record below `upto` durable.
    pub fn finish_sync(&mut self, upto: u64) {
        self.syncing = false;
        self.durable = self.durable.max(upto.min(self.next));
    }

    /// Every record below this number is durable.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The number the next append gets.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The first record not yet acknowledged by Kafka.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Bytes of the records not yet released (whole segments, so a little more).
    pub fn held_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Up to `limit` durable records from number `from` on, in order.
    pub fn read(&self, from: u64, limit: usize) -> Result<Vec<(u64, Bytes)>, SpoolError> {
        let mut found = Vec::new();
        let from = from.max(self.released);
        for (index, segment) in self.segments.iter().enumerate() {
            let next_first = self.segments.get(index + 1).map_or(u64::MAX, |s| s.first);
            if next_first <= from || segment.first >= self.durable {
                continue;
            }
            let mut records = Reader::open(&segment.path, segment.first)?;
            while found.len() < limit {
                let Some((number, payload)) = records.next_record()? else {
                    break;
                };
                if number >= self.durable {
                    return Ok(found);
                }
                if number >= from {
                    found.push((number, payload));
                }
            }
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }

    /// Kafka acknowledged every record below `upto`: it is recorded, and
    /// segments holding only such records are deleted.
    pub fn release(&mut self, upto: u64) -> Result<(), SpoolError> {
        let upto = upto.min(self.durable);
        if upto <= self.released {
            return Ok(());
        }
        write_released(&self.dir, upto)?;
        for path in self.mark_released(upto) {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The second half of a release whose first, [`write_released`], ran
    /// without the queue (its fsyncs need not hold up appends): records below
    /// `upto` are released; of the segments that held only such records, one
    /// becomes the spare when there is none (renamed: no zeros written), and
    /// the others are handed back for the caller to delete.
    pub fn mark_released(&mut self, upto: u64) -> Vec<PathBuf> {
        self.released = self.released.max(upto.min(self.durable));
        let mut gone = Vec::new();
        while self.segments.len() > 1 && self.segments[1].first <= self.released {
            let segment = self.segments.remove(0);
            if !lock(&self.files.spare).reuse(&segment.path) {
                gone.push(segment.path);
            }
        }
        gone
    }

    /// Starts a new segment for the next appends; its file is made by the
    /// sync that first writes to it (see [`PendingSync::fsync`]).
    fn roll(&mut self) {
        self.segments.push(Segment {
            first: self.next,
            path: segment_path(&self.dir, self.next),
            bytes: 0,
        });
    }
}

/// Records in `dir` that every record below `upto` is released. The number
/// is written over the file's one line in place (20 digits, zero-padded, and
/// their CRC-32C: always the same length) and only its data is synced: no
/// new file, no rename, so no journal commit to hold up the group commit's
/// fsyncs five times a second. Only a file just made also syncs the folder.
/// The caller deletes segments only after this returns, so after a crash
/// the number on disk is never below the oldest segment left; at worst it
/// is an older number than the last one written, and Kafka gets some
/// records again. It needs no [`Spool`]: a caller sharing one calls it
/// outside its lock, then [`Spool::mark_released`].
pub fn write_released(dir: &Path, upto: u64) -> Result<(), SpoolError> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(RELEASED);
    let file = open_to_write(&path)?;
    let new = file.metadata().map_err(io(&path))?.len() == 0;
    let digits = format!("{upto:020}");
    let line = format!("{digits} {:08x}\n", crc32c::crc32c(digits.as_bytes()));
    file.write_all_at(line.as_bytes(), 0).map_err(io(&path))?;
    file.sync_data().map_err(io(&path))?;
    if new {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The first record not yet released, as `released` says; 0 without one.
/// A line whose checksum does not match (a torn write) reads as 0:
/// everything still in a segment is sent again, nothing skipped. A line of
/// digits alone is the older format, written atomically by renaming.
fn read_released(dir: &Path) -> Result<u64, SpoolError> {
    let path = dir.join(RELEASED);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&path)(e)),
    };
    let sound = match text.trim().split_once(' ') {
        Some((digits, crc)) => u32::from_str_radix(crc, 16)
            .is_ok_and(|crc| crc == crc32c::crc32c(digits.as_bytes()))
            .then_some(digits),
        None => Some(text.trim()),
    };
    let released = sound.and_then(|digits| digits.parse().ok());
    if released.is_none() {
        tracing::warn!(
            "{}: not a whole record number ({text:?}); every record still held is sent again",
            path.display()
        );
    }
    Ok(released.unwrap_or(0))
}

/// `path` opened for writing in place, made when missing, its bytes kept.
fn open_to_write(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(path))
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The records of a segment file, in order, stopping at the first that is
/// not whole and sound, or not numbered next: a reused segment file holds
/// an older segment's records after the new ones (see `room.rs`).
struct Reader {
    path: PathBuf,
    file: std::io::BufReader<File>,
    offset: u64,
    /// The number the next record must have.
    expected: u64,
}

impl Reader {
    /// A reader of the segment whose first record is number `first`.
    fn open(path: &Path, first: u64) -> Result<Reader, SpoolError> {
        let file = File::open(path).map_err(io(path))?;
        Ok(Reader {
            path: path.to_path_buf(),
            file: std::io::BufReader::with_capacity(256 * 1024, file),
            offset: 0,
            expected: first,
        })
    }

    /// Forgets what it read ahead, to read again from the start of the next
    /// record (appended since, perhaps); its buffer is kept.
    fn read_again(&mut self) -> Result<(), SpoolError> {
        self.file
            .seek(SeekFrom::Start(self.offset))
            .map_err(io(&self.path))?;
        Ok(())
    }

    /// The next whole, sound record; `None` at the end or at a torn or corrupt one.
    fn next_record(&mut self) -> Result<Option<(u64, Bytes)>, SpoolError> {
        let mut head = [0u8; FRAME as usize];
        if !read_exactly(&mut self.file, &mut head).map_err(io(&self.path))? {
            return Ok(None);
        }
        if head == [0u8; FRAME as usize] {
            // Room made ahead for records to come (see `room.rs`).
            return Ok(None);
        }
        let length = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let number = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
        if length > MAX_RECORD {
            return Ok(None);
        }
        let mut payload = vec![0u8; length];
        if !read_exactly(&mut self.file, &mut payload).map_err(io(&self.path))? {
            return Ok(None);
        }
        if crc32c::crc32c_append(crc32c::crc32c(&head[8..]), &payload) != crc
            || number != self.expected
        {
            return Ok(None);
        }
        self.expected += 1;
        self.offset += FRAME + length as u64;
        Ok(Some((number, Bytes::from(payload))))
    }
}

/// Fills `buf`; `false` when the file ends first.
fn read_exactly(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}

/// The count of whole, sound records at the start of `path`, and the bytes they take.
fn scan(path: &Path, first: u64) -> Result<(u64, u64), SpoolError> {
    let mut reader = Reader::open(path, first)?;
    let mut count = 0;
    while reader.next_record()?.is_some() {
        count += 1;
    }
    Ok((count, reader.offset))
}
