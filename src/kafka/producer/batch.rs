//! A partition's records between `send` and the batch that carries them.
//!
//! Records gather in arrival order; a batch takes them from the front until
//! it holds `batch_bytes`. A batch's records keep their share of the
//! producer's byte budget until the batch is done, acknowledged or failed,
//! so the budget bounds what is queued, gathered and in flight together.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::encode::QueuedRecord;
use super::inbox::Inbox;

/// A record from `send` until its delivery. It is moved from the caller to
/// the partition's inbox and from there to its batch; it is kept small
/// because each move is a copy ([`super::inbox`]).
pub(super) struct Pending<M> {
    pub(super) record: QueuedRecord,
    /// The record's [`super::OutgoingRecord::size`].
    pub(super) size: usize,
    pub(super) meta: M,
    /// When `send` queued it: the linger and the delivery deadline count from here.
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
    pub(super) held: Held,
}

impl<M> Batch<M> {
    /// Whether it was cut because it reached `batch_bytes`, rather than
    /// because its writer had no reason to wait for more.
    pub(super) fn is_full(&self, batch_bytes: usize) -> bool {
        self.held.bytes >= batch_bytes
    }

    /// The earliest delivery deadline of its records: the first one's, as
    /// records are batched in the order they were sent.
    pub(super) fn deadline(&self, delivery_timeout: Duration) -> Instant {
        self.records
            .first()
            .expect("a batch is never empty")
            .gathered_at
            + delivery_timeout
    }
}

/// Record lists kept for the next batches, at most.
const SPARE_LISTS: usize = 8;

/// Records the gathered records' queue keeps room for once a backlog has
/// drained, at most: a full batch of records of 128 bytes. Grown larger, it
/// held a backlog (the cluster away, or slower than the records come); kept,
/// it would hold that memory for good. A kept list has room for at most
/// twice the records of the last batch: a batch of 700 readings in a list
/// with room for 4,096 held 750 KB for nothing while it was on its way.
const ROOM_KEPT: usize = 4_096;

/// Records taken from the inbox and not yet in a batch, and the emptied
/// record lists of finished batches, used again: a batch of a few thousand
/// records needs a list of a few hundred kilobytes, which an allocator may
/// map and unmap every time. Lists change hands without copying their
/// records where they can: the inbox's list becomes the gathered records
/// when none are waiting, and a batch that takes every gathered record takes
/// their list. Otherwise records are copied once on the way in, and once more
/// into a batch that takes only some of them.
pub(super) struct Gathered<M> {
    records: VecDeque<Pending<M>>,
    bytes: usize,
    spare: Vec<Vec<Pending<M>>>,
    /// Records in the last batch taken.
    last_batch: usize,
}

impl<M> Default for Gathered<M> {
    fn default() -> Self {
        Gathered {
            records: VecDeque::new(),
            bytes: 0,
            spare: Vec::new(),
            last_batch: 0,
        }
    }
}

impl<M> Gathered<M> {
    #[cfg(test)]
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

    /// Takes every record waiting in `inbox`, handing it an empty list to
    /// fill next; `false` once it is closed and empty.
    pub(super) fn take_arrived(&mut self, inbox: &Inbox<Pending<M>>) -> bool {
        let mut list = self.spare.pop().unwrap_or_default();
        let open = inbox.take(&mut list);
        self.bytes += list.iter().map(|p| p.size).sum::<usize>();
        if self.records.is_empty() {
            let emptied = std::mem::replace(&mut self.records, VecDeque::from(list));
            self.give_back(Vec::from(emptied));
        } else {
            self.records.extend(list.drain(..));
            self.give_back(list);
        }
        open
    }

    /// Keeps a finished batch's emptied record list for a later batch.
    pub(super) fn give_back(&mut self, mut records: Vec<Pending<M>>) {
        records.clear();
        let room = ROOM_KEPT.min(2 * self.last_batch.max(64));
        if self.spare.len() < SPARE_LISTS && (1..=room).contains(&records.capacity()) {
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
        self.last_batch = count;
        let records = if count == self.records.len() {
            Vec::from(std::mem::take(&mut self.records))
        } else {
            let mut records = self.spare.pop().unwrap_or_default();
            records.extend(self.records.drain(..count));
            if self.records.capacity() > ROOM_KEPT
                && self.records.len() < self.records.capacity() / 4
            {
                self.records
                    .shrink_to(ROOM_KEPT.max(self.records.len() * 2));
            }
            records
        };
        Some(Batch {
            records,
            held: Held {
                budget: Arc::clone(budget),
                bytes,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chrono::Utc;

    use super::*;
    use crate::kafka::producer::inbox::{InboxSender, inbox};
    use crate::kafka::producer::{OutgoingRecord, record_overhead};

    /// A record as `send` queues it, with `value_bytes` of value and `id` as its data.
    fn pending(value_bytes: usize, id: u32) -> Pending<u32> {
        let record = OutgoingRecord {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![b'x'; value_bytes]),
            headers: Default::default(),
            timestamp: Utc::now(),
            meta: id,
        };
        let size = record.size();
        let (record, meta) = record.into_queued();
        Pending {
            record,
            size,
            meta,
            gathered_at: Instant::now(),
        }
    }

    /// Leaves `pending` in the inbox as `send` does.
    fn push(sender: &InboxSender<Pending<u32>>, pending: Pending<u32>) {
        let size = pending.size;
        assert!(sender.push(pending, size));
    }

    /// [`pending`], its size taken from `budget` as `send` does.
    fn pending_in(budget: &Arc<Semaphore>, value_bytes: usize, id: u32) -> Pending<u32> {
        let pending = pending(value_bytes, id);
        budget
            .try_acquire_many(pending.size as u32)
            .expect("budget")
            .forget();
        pending
    }

    fn ids(batch: &Batch<u32>) -> Vec<u32> {
        batch.records.iter().map(|p| p.meta).collect()
    }

    #[test]
    fn a_batch_closes_once_it_holds_batch_bytes() {
        let budget = Arc::new(Semaphore::new(100_000));
        let mut gathered = Gathered::default();
        for id in 0..5 {
            gathered.push(pending_in(&budget, 1_000, id));
        }
        // Each record is over 1,000 bytes: the third one reaches 2,500.
        let first = gathered.take_batch(2_500, &budget).unwrap();
        let second = gathered.take_batch(2_500, &budget).unwrap();
        assert_eq!([ids(&first), ids(&second)], [vec![0, 1, 2], vec![3, 4]]);
        assert!(gathered.take_batch(2_500, &budget).is_none());
        assert_eq!(gathered.bytes(), 0);
    }

    #[test]
    fn every_record_in_the_inbox_is_gathered_after_those_gathered_before() {
        let budget = Arc::new(Semaphore::new(100_000));
        let (sender, inbox) = inbox(1_000_000);
        let mut gathered = Gathered::default();
        gathered.push(pending_in(&budget, 10, 0));
        for id in 1..10 {
            push(&sender, pending_in(&budget, 10, id));
        }
        assert!(gathered.take_arrived(&inbox));
        assert_eq!(gathered.bytes(), 10 * (1 + 10 + record_overhead::<u32>()));
        let first = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(ids(&first), (0..10).collect::<Vec<_>>());
        push(&sender, pending_in(&budget, 10, 10));
        drop(sender);
        assert!(!gathered.take_arrived(&inbox), "closed once empty");
        let rest = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(ids(&rest), [10]);
    }

    #[test]
    fn a_batch_that_takes_every_gathered_record_takes_their_list() {
        let budget = Arc::new(Semaphore::new(100_000));
        let (sender, inbox) = inbox(1_000_000);
        for id in 0..3 {
            push(&sender, pending_in(&budget, 10, id));
        }
        let mut gathered = Gathered::default();
        gathered.take_arrived(&inbox);
        let at = gathered.records.as_slices().0.as_ptr();
        let batch = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(batch.records.as_ptr(), at, "moved, not copied");
        assert!(gathered.is_empty());
    }

    #[test]
    fn a_drained_backlog_gives_its_room_back_and_no_backlogs_list_is_kept() {
        let budget = Arc::new(Semaphore::new(usize::MAX >> 4));
        let mut gathered = Gathered::default();
        let backlog = 8 * ROOM_KEPT as u32;
        for id in 0..backlog {
            gathered.push(pending_in(&budget, 1, id));
        }
        let grown = gathered.records.capacity();
        assert!(grown >= backlog as usize);
        let mut order = Vec::new();
        while gathered.records.len() > 1_500 {
            let batch = gathered
                .take_batch(1_000 * one_record_bytes(), &budget)
                .unwrap();
            order.extend(ids(&batch));
            gathered.give_back(batch.records);
        }
        assert!(
            gathered.records.capacity() <= grown / 4,
            "{} of {grown} kept for {} records",
            gathered.records.capacity(),
            gathered.records.len()
        );
        while let Some(batch) = gathered.take_batch(1_000 * one_record_bytes(), &budget) {
            order.extend(ids(&batch));
        }
        assert_eq!(
            order,
            (0..backlog).collect::<Vec<_>>(),
            "nothing lost, in order"
        );
        for id in 0..1_000 {
            gathered.push(pending_in(&budget, 1, id));
        }
        let batch = gathered.take_batch(usize::MAX, &budget).unwrap();
        assert_eq!(batch.records.len(), 1_000);
        let spares = gathered.spare.len();
        gathered.give_back(Vec::with_capacity(2 * ROOM_KEPT));
        assert_eq!(gathered.spare.len(), spares, "a backlog's list is let go");
        gathered.give_back(Vec::with_capacity(3_000));
        assert_eq!(
            gathered.spare.len(),
            spares,
            "a list with room for three batches of 1,000 is let go"
        );
        gathered.give_back(Vec::with_capacity(1_500));
        assert_eq!(
            gathered.spare.len(),
            spares + 1,
            "one that fits a batch is kept"
        );
    }

    fn one_record_bytes() -> usize {
        1 + 1 + record_overhead::<u32>()
    }

    #[test]
    fn records_keep_their_order_across_batches() {
        let budget = Arc::new(Semaphore::new(100_000));
        let mut gathered = Gathered::default();
        for id in 0..10 {
            gathered.push(pending_in(&budget, 10, id));
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
            gathered.push(pending_in(&budget, 10, id));
        }
        let mut first = gathered.take_batch(1_000_000, &budget).unwrap();
        let list = std::mem::take(&mut first.records);
        let at = list.as_ptr();
        gathered.give_back(list);
        // The emptied list goes to the inbox to gather the next records,
        // and comes back with them.
        let (sender, inbox) = inbox(1_000_000);
        gathered.take_arrived(&inbox);
        push(&sender, pending_in(&budget, 10, 7));
        gathered.take_arrived(&inbox);
        let second = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(second.records.as_ptr(), at, "the same list, used again");
        assert_eq!(ids(&second), [7], "none of the first batch's records");
    }

    #[test]
    fn a_record_holds_its_share_of_the_buffer_until_its_batch_is_done() {
        let one_record = 1 + 1 + record_overhead::<u32>();
        let budget = Arc::new(Semaphore::new(3 * one_record));
        let mut gathered = Gathered::default();
        for id in 0..3 {
            gathered.push(pending_in(&budget, 1, id));
        }
        assert_eq!(budget.available_permits(), 0, "a full buffer");
        let batch = gathered.take_batch(1_000_000, &budget).unwrap();
        assert_eq!(batch.records.len(), 3);
        assert_eq!(budget.available_permits(), 0, "still held while in flight");
        drop(batch);
        assert_eq!(budget.available_permits(), 3 * one_record);
    }
}
