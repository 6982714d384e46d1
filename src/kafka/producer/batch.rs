//! A partition's records between `send` and the batch that carries them.
//!
//! Records gather in arrival order; a batch takes them from the front until
//! it holds `batch_bytes`. A batch's records keep their share of the
//! producer's byte budget until the batch is done, acknowledged or failed,
//! so the budget bounds what is queued, gathered and in flight together.

use std::collections::VecDeque;
use std::sync::Arc;

use kafka_protocol::records::Record;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

pub(super) struct Pending<M> {
    pub(super) record: Record,
    /// The record's [`super::OutgoingRecord::size`].
    pub(super) size: usize,
    pub(super) meta: M,
    pub(super) deadline: Instant,
    /// When `send` queued it: the linger counts from here.
    pub(super) gathered_at: Instant,
}

/// Buffer bytes held by a batch's records since `send` took them; given back
/// when the batch is done (acknowledged or failed) or dropped. Records give
/// their share back a batch at a time: the semaphore locks its waiters' list
/// on every release, and once per record was a measurable part of the
/// producer's CPU.
pub(super) struct Held {
    budget: Arc<Semaphore>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
    }
}

/// Records sent together, and the buffer bytes they hold.
pub(super) struct Batch<M> {
    pub(super) records: Vec<Pending<M>>,
    pub(super) _held: Held,
}

impl<M> Batch<M> {
    /// The earliest delivery deadline of its records.
    pub(super) fn deadline(&self) -> Instant {
        self.records
            .iter()
            .map(|p| p.deadline)
            .min()
            .expect("a batch is never empty")
    }
}

/// Record lists kept for the next batches, at most.
const SPARE_LISTS: usize = 8;

/// Records taken from the queue and not yet in a batch, and the emptied
/// record lists of finished batches, used again: a batch of a few thousand
/// records needs a list of a few hundred kilobytes, which an allocator may
/// map and unmap every time.
pub(super) struct Gathered<M> {
    records: VecDeque<Pending<M>>,
    bytes: usize,
    spare: Vec<Vec<Pending<M>>>,
}

impl<M> Default for Gathered<M> {
    fn default() -> Self {
        Gathered {
            records: VecDeque::new(),
            bytes: 0,
            spare: Vec::new(),
        }
    }
}

impl<M> Gathered<M> {
    pub(super) fn push(&mut self, pending: Pending<M>) {
        self.bytes += pending.size;
        self.records.push_back(pending);
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// When the oldest record arrived.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.records.front().map(|p| p.gathered_at)
    }

    /// Takes up to `limit` records that are already queued; `false` once the
    /// queue is closed and empty.
    pub(super) fn take_queued(
        &mut self,
        queue: &mut mpsc::UnboundedReceiver<Pending<M>>,
        limit: usize,
    ) -> bool {
        for _ in 0..limit {
            match queue.try_recv() {
                Ok(pending) => self.push(pending),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// Keeps a finished batch's emptied record list for a later batch.
    pub(super) fn give_back(&mut self, mut records: Vec<Pending<M>>) {
        records.clear();
        if self.spare.len() < SPARE_LISTS && records.capacity() > 0 {
            self.spare.push(records);
        }
    }

    /// The next batch: records from the front until it holds `batch_bytes`
    /// (the record that reaches it included), or all of them.
    pub(super) fn take_batch(
        &mut self,
        batch_bytes: usize,
        budget: &Arc<Semaphore>,
    ) -> Option<Batch<M>> {
        let mut bytes = 0;
        let mut count = 0;
        for pending in &self.records {
            if bytes >= batch_bytes {
                break;
            }
            bytes += pending.size;
            count += 1;
        }
        if count == 0 {
            return None;
        }
        self.bytes -= bytes;
        let mut records = self.spare.pop().unwrap_or_default();
        records.extend(self.records.drain(..count));
        Some(Batch {
            records,
            _held: Held {
                budget: Arc::clone(budget),
                bytes,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use chrono::Utc;

    use super::*;
    use crate::kafka::producer::{OutgoingRecord, RECORD_OVERHEAD};

    /// A record as `send` queues it, its size taken from `budget`.
    fn pending(budget: &Arc<Semaphore>, value_bytes: usize, id: u32) -> Pending<u32> {
        let record = OutgoingRecord {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![b'x'; value_bytes]),
            headers: Default::default(),
            timestamp: Utc::now(),
            meta: id,
        };
        let size = record.size();
        budget
            .try_acquire_many(size as u32)
            .expect("budget")
            .forget();
        let (record, meta) = record.into_wire_record();
        Pending {
            record,
            size,
            meta,
            deadline: Instant::now() + Duration::from_secs(120),
            gathered_at: Instant::now(),
        }
    }

    fn ids(batch: &Batch<u32>) -> Vec<u32> {
        batch.records.iter().map(|p| p.meta).collect()
    }

    #[test]
    fn a_batch_closes_once_it_holds_batch_bytes() {
        let budget = Arc::new(Semaphore::new(100_000));
        let mut gathered = Gathered::default();
        for id in 0..5 {
            gathered.push(pending(&budget, 1_000, id));
        }
        // Each record is about 1,065 bytes: the third one reaches 2,500.
        let first = gathered.take_batch(2_500, &budget).unwrap();
        let second = gathered.take_batch(2_500, &budget).unwrap();
        assert_eq!([ids(&first), ids(&second)], [vec![0, 1, 2], vec![3, 4]]);
        assert!(gathered.take_batch(2_500, &budget).is_none());
        assert_eq!(gathered.bytes(), 0);
    }

    #[test]
    fn every_queued_record_taken_is_gathered_whatever_the_limit() {
        let budget = Arc::new(Semaphore::new(100_000));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for id in 0..10 {
            tx.send(pending(&budget, 10, id)).ok();
        }
        let mut gathered = Gathered::default();
        assert!(gathered.take_queued(&mut rx, 4));
        assert!(gathered.take_queued(&mut rx, 4));
        let first = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(
            ids(&first),
            (0..8).collect::<Vec<_>>(),
            "none dropped at the limit"
        );
        drop(tx);
        assert!(!gathered.take_queued(&mut rx, 4), "closed once empty");
        let rest = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(ids(&rest), [8, 9]);
    }

    #[test]
    fn records_keep_their_order_across_batches() {
        let budget = Arc::new(Semaphore::new(100_000));
        let mut gathered = Gathered::default();
        for id in 0..10 {
            gathered.push(pending(&budget, 10, id));
        }
        let mut order = Vec::new();
        while let Some(batch) = gathered.take_batch(200, &budget) {
            order.extend(ids(&batch));
        }
        assert_eq!(order, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_finished_batchs_list_carries_the_next_batch_and_none_of_its_records() {
        let budget = Arc::new(Semaphore::new(100_000));
        let mut gathered = Gathered::default();
        for id in 0..3 {
            gathered.push(pending(&budget, 10, id));
        }
        let mut first = gathered.take_batch(1_000_000, &budget).unwrap();
        let list = std::mem::take(&mut first.records);
        let at = list.as_ptr();
        gathered.give_back(list);
        gathered.push(pending(&budget, 10, 7));
        let second = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(second.records.as_ptr(), at, "the same list, used again");
        assert_eq!(ids(&second), [7]);
    }

    #[test]
    fn a_record_holds_its_share_of_the_buffer_until_its_batch_is_done() {
        let one_record = 1 + 1 + RECORD_OVERHEAD;
        let budget = Arc::new(Semaphore::new(3 * one_record));
        let mut gathered = Gathered::default();
        for id in 0..3 {
            gathered.push(pending(&budget, 1, id));
        }
        assert_eq!(budget.available_permits(), 0, "a full buffer");
        let batch = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(batch.records.len(), 3);
        assert_eq!(budget.available_permits(), 0, "still held while in flight");
        drop(batch);
        assert_eq!(budget.available_permits(), 3 * one_record);
    }
}
