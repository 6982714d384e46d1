//! Reading the queue in order while it is being appended to.
//!
//! The gateway's forwarder reads what devices sent while they go on sending,
//! so it must not share the appender's lock for every read, nor read a
//! segment from its start each time. A [`Cursor`] keeps its own file handle
//! and position, and reads only records below the durable number it is
//! given: those are whole in their file (a sync writes them before it makes
//! them durable), even when bytes of later, unsynced records follow.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Reader, SpoolError, io, segment_path};

/// A position in the queue, reading forward.
pub struct Cursor {
    dir: PathBuf,
    reader: Option<Reader>,
    next: u64,
}

impl Cursor {
    /// A cursor whose first record read is number `from` (opened on first read).
    pub fn at(dir: &Path, from: u64) -> Cursor {
        Cursor {
            dir: dir.to_path_buf(),
            reader: None,
            next: from,
        }
    }

    /// The number of the next record it reads.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// Up to `limit` records from the cursor on, all below `durable`, in order.
    pub fn read(&mut self, durable: u64, limit: usize) -> Result<Vec<(u64, Bytes)>, SpoolError> {
        let mut found = Vec::new();
        let mut read_again = false;
        while found.len() < limit && self.next < durable {
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => self.reader.insert(self.open()?),
            };
            match reader.next_record()? {
                // A record before the cursor, in the segment it started in.
                Some((number, _)) if number < self.next => {}
                Some((number, payload)) => {
                    self.next = number + 1;
                    read_again = false;
                    found.push((number, payload));
                }
                None => {
                    // No whole record where a durable one must be: the segment
                    // ended (its room made ahead aside) and the next one, named
                    // by its first record, holds it, or the reader's buffer
                    // caught part of a record appended after the last sync
                    // (read again from the same place, once).
                    let next_segment = segment_path(&self.dir, self.next);
                    if next_segment.exists() {
                        self.reader = Some(Reader::open(&next_segment, self.next)?);
                    } else if read_again {
                        return Err(SpoolError::Damaged {
                            path: reader.path.clone(),
                            offset: reader.offset,
                        });
                    } else {
                        reader.read_again()?;
                        read_again = true;
                    }
                }
            }
        }
        Ok(found)
    }

    /// A reader at the segment holding record `next`: the one with the greatest
    /// first number at or below it.
    fn open(&self) -> Result<Reader, SpoolError> {
        let first = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .filter(|first| *first <= self.next)
            .max()
            .unwrap_or(self.next);
        Reader::open(&segment_path(&self.dir, first), first)
    }
}
