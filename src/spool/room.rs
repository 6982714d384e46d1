//! Segment files written full of zeros before records go into them.
//!
//! Appending to the end of a file changes its size, and on ext4 (and most
//! journalling file systems) an `fdatasync` of a file whose size changed
//! waits for a journal commit, which carries every other process's metadata
//! too: on a machine whose Kafka brokers append to their own logs, that put
//! tails of 30 to 150 ms on a 390-byte group commit. Writing over blocks a
//! file already has needs no journal, only the data: in the same conditions
//! the tail stayed under 10 to 16 ms. So a segment is made at its full size,
//! zeros written and synced, before any record goes into it; the end of its
//! records is the first frame of zeros (a frame never is all zeros: its CRC
//! covers the record's number).
//!
//! A spool keeps one such segment ahead (`spare`, renamed into place when
//! the current one is full), so an append never waits for one. Writing
//! zeros is dear: 64 MiB of them cost the disk and the CPU what 160,000
//! readings do, and the group commits' fsyncs queue behind them (at 10,000
//! readings/s the PUBACK p99 over half-second windows was 10 to 18 ms while
//! a spare was being made, 5 to 13 ms otherwise; single windows reached 74
//! to 162 ms). So zeros are written only where no segment can be reused:
//!
//! - a new spool makes its first segment and the spare before it takes
//!   anything;
//! - a segment whose records Kafka has all acknowledged becomes the spare
//!   when there is none (as PostgreSQL recycles its WAL files): its old
//!   records stay in it, after the new ones, and readers stop at them,
//!   because each record's number (covered by its CRC) must be the next;
//! - only when none was released in time (Kafka away, the spool growing) is
//!   a spare made in zeros, on a thread of its own, once the current
//!   segment is half full, a chunk at a time with pauses; if it is not ready
//!   when needed, the new segment is an empty file that grows.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// Zeros written at a time.
const CHUNK: usize = 1024 * 1024;

/// The pause after each chunk of a spare made while records are appended:
/// a 64 MiB spare takes about a second and a half to make, with the disk
/// free for group commits in between. At 10,000 readings/s a 64 MiB segment
/// lasts 16 s.
const SPARE_PAUSE: Duration = Duration::from_millis(20);

/// A segment file of `size` zero bytes at `path`, synced, made under a
/// temporary name first, so that `path` is either absent or whole (the
/// caller syncs the folder when the name must last: a spare need not). Each
/// chunk is synced on its own, with `pause` after it: one flush of 64 MiB
/// would hold the disk's queue, and the group commits waiting behind it.
pub(super) fn make_zeroed(path: &Path, size: u64, pause: Duration) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = File::create(&temporary)?;
        let zeros = vec![0u8; CHUNK];
        let mut left = size;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            file.write_all(&zeros[..n])?;
            file.sync_data()?;
            left -= n as u64;
            if !pause.is_zero() && left > 0 {
                std::thread::sleep(pause);
            }
        }
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
}

/// Whether the frame at byte `from` of `path` is zeros (or the file ends
/// first): room made ahead, rather than a torn write or a reused file's
/// older records. Only what opening logs depends on it, so one frame is
/// read, not the rest of a 64 MiB segment.
pub(super) fn is_room(path: &Path, from: u64) -> std::io::Result<bool> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut frame = Vec::with_capacity(super::FRAME as usize);
    file.take(super::FRAME).read_to_end(&mut frame)?;
    Ok(frame.iter().all(|&b| b == 0))
}

/// The next segment: none yet, being made, or made.
#[derive(Debug)]
pub(super) struct Spare {
    path: PathBuf,
    size: u64,
    making: Option<JoinHandle<std::io::Result<()>>>,
    /// Made and not yet taken (known without asking the file system at every append).
    made: bool,
}

impl Spare {
    /// The spare segment of `size` bytes in `dir`: one left by an earlier
    /// run, or none until [`Spare::prepare`].
    pub(super) fn new(dir: &Path, size: u64) -> Spare {
        let mut spare = Spare {
            path: dir.join("spare"),
            size,
            making: None,
            made: false,
        };
        spare.made = spare.is_made();
        spare
    }

    /// Makes the spare now, on this thread, unless it is made.
    pub(super) fn make_now(&mut self) -> std::io::Result<()> {
        if !self.made {
            make_zeroed(&self.path, self.size, Duration::ZERO)?;
            self.made = true;
        }
        Ok(())
    }

    /// Takes the segment file at `path`, whose records are all released, as
    /// the spare, if there is none and it is big enough; `false` when the
    /// caller is to delete it.
    pub(super) fn reuse(&mut self, path: &Path) -> bool {
        if self.made
            || self.making.is_some()
            || !std::fs::metadata(path).is_ok_and(|m| m.len() >= self.size)
        {
            return false;
        }
        match std::fs::rename(path, &self.path) {
            Ok(()) => self.made = true,
            Err(e) => tracing::warn!("{}: not reused as the spare: {e}", path.display()),
        }
        self.made
    }

    /// Starts making the spare in zeros, unless it is made or being made.
    pub(super) fn prepare(&mut self) {
        if self.made || self.making.is_some() {
            return;
        }
        let (path, size) = (self.path.clone(), self.size);
        let spawned = std::thread::Builder::new()
            .name("spool-spare".into())
            .spawn(move || make_zeroed(&path, size, SPARE_PAUSE));
        match spawned {
            Ok(handle) => self.making = Some(handle),
            Err(e) => tracing::warn!("cannot start making a spare segment: {e}"),
        }
    }

    /// A spare left by an earlier run counts only at the size wanted now, at least.
    fn is_made(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.size)
    }

    /// The spare, renamed to `path` and opened for writing, when it is ready.
    /// `None` while it is still being made (or could not be): the caller
    /// makes an empty file instead.
    pub(super) fn take(&mut self, path: &Path) -> Option<File> {
        if let Some(making) = self.making.take_if(|m| m.is_finished()) {
            match making.join() {
                Ok(Ok(())) => self.made = true,
                Ok(Err(e)) => tracing::warn!("{}: {e}", self.path.display()),
                Err(_) => tracing::warn!("making a spare segment panicked"),
            }
        }
        if !std::mem::take(&mut self.made) {
            return None;
        }
        std::fs::rename(&self.path, path)
            .and_then(|()| OpenOptions::new().write(true).open(path))
            .inspect_err(|e| tracing::warn!("{}: {e}", path.display()))
            .ok()
    }
}
