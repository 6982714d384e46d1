//! The gateway's disk buffer: the spool, shared by every connection, with a
//! group commit that makes appends durable a few milliseconds at a time.
//!
//! Connections append under a short lock (a copy into memory, no file
//! touched) and then wait for the durable number to pass theirs. One thread
//! of its own (not a task: it must not wait for a busy runtime) writes out
//! and fsyncs everything appended so far, outside the lock, so appends go on
//! during the write and the fsync and share the next one: group commit with
//! no added delay.
//! A gathering interval can be added for disks where an fsync is dear. What each record holds is a
//! [`Spooled`]: a reading to forward, or a refused message's dead letter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::timings::Timings;
use crate::spool::{Spool, SpoolError, SpoolSettings};

/// Bytes appended and not yet written that the buffer holds in memory, at
/// most: a second of appends at full speed many times over. Past it the
/// disk is behind, and devices are pushed back as when the buffer is full.
const MAX_UNSYNCED: u64 = 32 * 1024 * 1024;

/// How a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An MQTT PUBLISH.
    Mqtt,
    /// An HTTP POST.
    Http,
}

/// What a spooled record becomes in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spooled {
    /// A valid reading, for the sensor topic.
    Reading {
        /// When the gateway took it, milliseconds since the epoch.
        accepted_at_ms: i64,
        /// The device id: the record key.
        key: Bytes,
        /// The reading as the device sent it.
        value: Bytes,
    },
    /// A refused message, for the dead-letter topic.
    DeadLetter {
        /// When the gateway refused it, milliseconds since the epoch.
        refused_at_ms: i64,
        /// The device id the message named (topic or field), if any.
        key: Bytes,
        /// The message as the device sent it.
        value: Bytes,
        /// The reason's code (`out_of_range`, `not_authorized`, ...).
        reason: String,
        /// What exactly was wrong.
        detail: String,
        /// Where it came from: protocol, topic or line, peer, identity.
        origin: String,
    },
}

const READING: u8 = 1;
const DEAD_LETTER: u8 = 2;

impl Spooled {
    /// The record's bytes in the spool.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.value().len());
        match self {
            Spooled::Reading {
                accepted_at_ms,
                key,
                value,
            } => {
                out.put_u8(READING);
                out.put_i64_le(*accepted_at_ms);
                put_field(&mut out, key);
                put_field(&mut out, value);
            }
            Spooled::DeadLetter {
                refused_at_ms,
                key,
                value,
                reason,
                detail,
                origin,
            } => {
                out.put_u8(DEAD_LETTER);
                out.put_i64_le(*refused_at_ms);
                put_field(&mut out, key);
                put_field(&mut out, value);
                for text in [reason, detail, origin] {
                    put_field(&mut out, text.as_bytes());
                }
            }
        }
        out
    }

    /// A record read back; `None` if the bytes are not one (a spool written
    /// by something else).
    pub fn decode(mut bytes: Bytes) -> Option<Spooled> {
        if bytes.remaining() < 9 {
            return None;
        }
        let kind = bytes.get_u8();
        let at = bytes.get_i64_le();
        let key = take_field(&mut bytes)?;
        let value = take_field(&mut bytes)?;
        match kind {
            READING => Some(Spooled::Reading {
                accepted_at_ms: at,
                key,
                value,
            }),
            DEAD_LETTER => {
                let mut text =
                    || take_field(&mut bytes).map(|b| String::from_utf8_lossy(&b).into_owned());
                Some(Spooled::DeadLetter {
                    refused_at_ms: at,
                    key,
                    value,
                    reason: text()?,
                    detail: text()?,
                    origin: text()?,
                })
            }
            _ => None,
        }
    }

    /// When the gateway took (or refused) it.
    pub fn at_ms(&self) -> i64 {
        match self {
            Spooled::Reading { accepted_at_ms, .. } => *accepted_at_ms,
            Spooled::DeadLetter { refused_at_ms, .. } => *refused_at_ms,
        }
    }

    fn value(&self) -> &Bytes {
        match self {
            Spooled::Reading { value, .. } | Spooled::DeadLetter { value, .. } => value,
        }
    }
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32_le(bytes.len() as u32);
    out.put_slice(bytes);
}

fn take_field(bytes: &mut Bytes) -> Option<Bytes> {
    if bytes.remaining() < 4 {
        return None;
    }
    let length = bytes.get_u32_le() as usize;
    (bytes.remaining() >= length).then(|| bytes.split_to(length))
}

/// What waiters on durability see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    /// Every record below this number is on disk.
    upto: u64,
    /// The disk failed: nothing more will become durable.
    failed: bool,
}

/// The buffer could not make a record durable: the disk failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the disk buffer failed; the reading was not acknowledged")]
pub struct NotDurable;

/// The spool shared by the connections, the group commit and the forwarder.
pub struct Buffer {
    dir: PathBuf,
    spool: Mutex<Spool>,
    durable: watch::Sender<Durable>,
    /// Whether there are appends to commit, and whether the commit sleeps.
    appends: Mutex<Appends>,
    wake: Condvar,
    released: Notify,
    commit_times: Timings,
}

impl Buffer {
    /// Opens the spool in `dir` (a torn tail is passed over; see [`crate::spool`]).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Buffer>, SpoolError> {
        let settings = SpoolSettings {
            segment_bytes: (64 * 1024 * 1024).min(max_bytes / 4).max(64 * 1024),
            max_bytes,
            max_unsynced: MAX_UNSYNCED,
        };
        let spool = Spool::open(dir, settings)?;
        let upto = spool.durable();
        Ok(Arc::new(Buffer {
            dir: dir.to_path_buf(),
            spool: Mutex::new(spool),
            durable: watch::Sender::new(Durable {
                upto,
                failed: false,
            }),
            appends: Mutex::new(Appends::default()),
            wake: Condvar::new(),
            released: Notify::new(),
            commit_times: Timings::default(),
        }))
    }

    /// The spool's folder, where the forwarder's cursor reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record; its number, durable once [`Buffer::until_durable`] says so.
    /// A full buffer refuses ([`SpoolError::Full`]).
    pub fn append(&self, record: &Spooled) -> Result<u64, SpoolError> {
        let bytes = record.encode();
        let number = self.spool().append(&bytes)?;
        let asleep = {
            let mut appends = self.appends();
            appends.since_commit = true;
            appends.commit_asleep
        };
        // A commit under way looks for more appends when it ends: only a
        // sleeping one needs waking (a system call, at every append otherwise).
        if asleep {
            self.wake.notify_one();
        }
        Ok(number)
    }

    fn appends(&self) -> MutexGuard<'_, Appends> {
        self.appends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until record `number` is on disk.
    pub async fn until_durable(&self, number: u64) -> Result<(), NotDurable> {
        let mut durable = self.durable.subscribe();
        let state = durable
            .wait_for(|d| d.upto > number || d.failed)
            .await
            .map_err(|_| NotDurable)?;
        if state.upto > number {
            Ok(())
        } else {
            Err(NotDurable)
        }
    }

    /// Waits until Kafka acknowledged something and the buffer gave its space back.
    pub async fn space_freed(&self) {
        self.released.notified().await
    }

    /// How long the group commits took.
    pub fn commit_times(&self) -> &Timings {
        &self.commit_times
    }

    /// Every record below this number is on disk.
    pub fn durable(&self) -> u64 {
        self.durable.borrow().upto
    }

    /// The first record Kafka has not acknowledged.
    pub fn released(&self) -> u64 {
        self.spool().released()
    }

    /// Records and bytes held until Kafka acknowledges them.
    pub fn depth(&self) -> (u64, u64) {
        let spool = self.spool();
        (spool.next() - spool.released(), spool.held_bytes())
    }

    /// Kafka acknowledged every record below `upto`: the spool forgets them.
    /// The file that records it is written and fsynced, and wholly released
    /// segments deleted, on a blocking thread and outside the spool's lock:
    /// appends never wait for those.
    pub async fn release(self: &Arc<Self>, upto: u64) -> Result<(), SpoolError> {
        let buffer = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let upto = upto.min(buffer.durable());
            if upto <= buffer.released() {
                return Ok(());
            }
            crate::spool::write_released(&buffer.dir, upto)?;
            let gone = buffer.spool().mark_released(upto);
            for path in gone {
                std::fs::remove_file(&path).map_err(|source| SpoolError::Io { path, source })?;
            }
            Ok(())
        })
        .await
        .expect("release does not panic")?;
        self.released.notify_waiters();
        Ok(())
    }

    /// The group commit, until `shutdown` (then one last sync), on a thread
    /// of its own: whenever something was appended, waits `interval` (if
    /// any) for more, writes it all out and fsyncs once. A failed fsync ends
    /// it, and every waiter hears [`NotDurable`].
    pub async fn commit(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> Result<(), SpoolError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (done, mut ended) = oneshot::channel();
        let (buffer, stopping) = (Arc::clone(&self), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("gateway-commit".to_string())
            .spawn(move || {
                let result = buffer.commit_loop(interval, &stopping);
                // Let go of the spool before saying so: whoever waits may reopen it.
                drop(buffer);
                let _ = done.send(result);
            })
            .map_err(|source| SpoolError::Io {
                path: self.dir.clone(),
                source,
            })?;
        tokio::select! {
            // Ended by itself: the disk failed.
            result = &mut ended => return result.unwrap_or(Ok(())),
            _ = shutdown.cancelled() => {}
        }
        stop.store(true, Ordering::Release);
        self.wake.notify_one();
        ended.await.unwrap_or(Ok(()))
    }

    fn commit_loop(&self, interval: Duration, stop: &AtomicBool) -> Result<(), SpoolError> {
        loop {
            {
                let mut appends = self.appends();
                while !appends.since_commit && !stop.load(Ordering::Acquire) {
                    appends.commit_asleep = true;
                    appends = self
                        .wake
                        .wait_timeout(appends, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    appends.commit_asleep = false;
                }
                appends.since_commit = false;
            }
            let stopping = stop.load(Ordering::Acquire);
            if !stopping && !interval.is_zero() {
                std::thread::sleep(interval);
            }
            if let Err(e) = self.sync_once() {
                self.durable.send_modify(|d| d.failed = true);
                return Err(e);
            }
            if stopping {
                return Ok(());
            }
        }
    }

    fn sync_once(&self) -> Result<(), SpoolError> {
        let started = Instant::now();
        let Some(pending) = self.spool().begin_sync()? else {
            return Ok(());
        };
        let upto = pending.fsync()?;
        self.commit_times.record(started.elapsed());
        self.spool().finish_sync(upto);
        self.durable.send_modify(|d| d.upto = d.upto.max(upto));
        Ok(())
    }
}

/// Between the appends and the group commit.
#[derive(Debug, Default)]
struct Appends {
    /// Something was appended since the commit last looked.
    since_commit: bool,
    /// The commit waits for an append, and must be woken.
    commit_asleep: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_and_dead_letters_read_back_as_they_were_written() {
        for record in [
            Spooled::Reading {
                accepted_at_ms: 1_764_000_000_123,
                key: Bytes::from_static(b"temperature-000001"),
                value: Bytes::from_static(b"{\"value\":21.5}"),
            },
            Spooled::DeadLetter {
                refused_at_ms: -1,
                key: Bytes::new(),
                value: Bytes::from_static(b"not json"),
                reason: "not_json".into(),
                detail: "expected value at line 1 column 1".into(),
                origin: "mqtt sensors/temperature/t1 from 127.0.0.1:50000 (anonymous)".into(),
            },
        ] {
            let bytes = Bytes::from(record.encode());
            assert_eq!(Spooled::decode(bytes), Some(record));
        }
    }

    #[test]
    fn bytes_that_are_not_a_record_decode_to_nothing() {
        assert_eq!(Spooled::decode(Bytes::from_static(b"")), None);
        assert_eq!(Spooled::decode(Bytes::from_static(&[9; 40])), None);
        let mut short = Spooled::Reading {
            accepted_at_ms: 0,
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        }
        .encode();
        short.pop();
        assert_eq!(Spooled::decode(Bytes::from(short)), None);
    }

    #[tokio::test]
    async fn an_append_is_durable_only_after_the_group_commit_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::open(dir.path(), 1 << 20).unwrap();
        let shutdown = CancellationToken::new();
        let commit =
            tokio::spawn(Arc::clone(&buffer).commit(Duration::from_millis(5), shutdown.clone()));
        let record = Spooled::Reading {
            accepted_at_ms: 7,
            key: Bytes::from_static(b"d"),
            value: Bytes::from_static(b"{}"),
        };
        let numbers: Vec<u64> = (0..10).map(|_| buffer.append(&record).unwrap()).collect();
        assert_eq!(numbers, (0..10).collect::<Vec<_>>());
        buffer.until_durable(9).await.unwrap();
        assert_eq!(buffer.durable(), 10);
        shutdown.cancel();
        commit.await.unwrap().unwrap();
        drop(buffer);
        let reopened = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(reopened.depth().0, 10);
        assert_eq!(reopened.released(), 0);
    }
}
