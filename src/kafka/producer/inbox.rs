//! A partition's inbox: where [`super::Producer::send`] leaves records for
//! the partition's writer.
//!
//! A channel copies each record into a slot of its own and out again, and
//! wakes its receiver for every record. A record here is about 200 bytes (the
//! wire record with its header map, the caller's data, two instants), so
//! those copies, with the one into the writer's list and the one into the
//! batch, were most of the producer's CPU for small records: `perf` of the
//! glibc build sending 3 million 100-byte records put 24 % of its samples in
//! `memmove` (the channel, the writer's list and the batch: 16 points of
//! them) and 9 % in the channel's own bookkeeping; the static musl build, whose
//! `memcpy` is slower, spent 47 % in it.
//!
//! Here `send` pushes the record onto a list under a lock, and the writer
//! takes the whole list at once, swapping in an empty one: one copy on the
//! way in, none on the way out. The writer is woken by the first record
//! after it emptied the list, and again each time another batch's worth of
//! bytes has arrived, so a full batch does not wait for the linger; in
//! between, records only join the list.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::batch::Pending;
use crate::lock::lock;

struct Shared<M> {
    list: Mutex<List<M>>,
    arrived: Notify,
}

struct List<M> {
    records: Vec<Pending<M>>,
    /// Bytes arrived since the writer was last woken.
    unannounced: usize,
    /// The sending side is gone: no more records will come.
    closed: bool,
}

/// The sending side; dropping it closes the inbox.
pub(super) struct InboxSender<M> {
    shared: Arc<Shared<M>>,
    /// Bytes of records that wake the writer again while the list is not empty.
    wake_every: usize,
}

/// The writer's side.
pub(super) struct Inbox<M> {
    shared: Arc<Shared<M>>,
}

/// A new inbox; the writer is woken again after every `wake_every` bytes.
pub(super) fn inbox<M>(wake_every: usize) -> (InboxSender<M>, Inbox<M>) {
    let shared = Arc::new(Shared {
        list: Mutex::new(List {
            records: Vec::new(),
            unannounced: 0,
            closed: false,
        }),
        arrived: Notify::new(),
    });
    (
        InboxSender {
            shared: Arc::clone(&shared),
            wake_every: wake_every.max(1),
        },
        Inbox { shared },
    )
}

impl<M> InboxSender<M> {
    /// Leaves `pending` for the writer; `false` when the writer is gone
    /// (it ended with a panic) and nothing would ever take it.
    pub(super) fn push(&self, pending: Pending<M>) -> bool {
        if Arc::strong_count(&self.shared) == 1 {
            return false;
        }
        let wake = {
            let mut list = lock(&self.shared.list);
            let first = list.records.is_empty();
            list.unannounced += pending.size;
            list.records.push(pending);
            let wake = first || list.unannounced >= self.wake_every;
            if wake {
                list.unannounced = 0;
            }
            wake
        };
        if wake {
            self.shared.arrived.notify_one();
        }
        true
    }
}

impl<M> Drop for InboxSender<M> {
    fn drop(&mut self) {
        lock(&self.shared.list).closed = true;
        self.shared.arrived.notify_one();
    }
}

impl<M> Inbox<M> {
    /// Moves every record waiting onto the end of `into` (swapping lists
    /// when `into` is empty); `false` once the sender is gone and nothing is left.
    pub(super) fn take(&self, into: &mut Vec<Pending<M>>) -> bool {
        let mut list = lock(&self.shared.list);
        list.unannounced = 0;
        if into.is_empty() {
            std::mem::swap(into, &mut list.records);
        } else {
            into.append(&mut list.records);
        }
        !list.closed
    }

    /// Waits until records may have arrived, or the sender is gone. It may
    /// return with nothing new: [`take`](Self::take) says what there is.
    pub(super) async fn arrived(&self) {
        self.shared.arrived.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kafka::producer::batch::tests::pending;

    fn ids(list: &[Pending<u32>]) -> Vec<u32> {
        list.iter().map(|p| p.meta).collect()
    }

    #[tokio::test]
    async fn the_writer_takes_every_record_in_the_order_sent() {
        let (sender, inbox) = inbox(1_000_000);
        for id in 0..3 {
            assert!(sender.push(pending(10, id)));
        }
        let mut taken = Vec::new();
        assert!(inbox.take(&mut taken));
        sender.push(pending(10, 3));
        assert!(inbox.take(&mut taken), "still open");
        assert_eq!(ids(&taken), [0, 1, 2, 3]);
        assert!(inbox.take(&mut taken));
        assert_eq!(taken.len(), 4, "nothing taken twice");
    }

    #[tokio::test]
    async fn the_first_record_after_a_take_wakes_the_writer() {
        let (sender, inbox) = inbox(1_000_000);
        sender.push(pending(10, 0));
        tokio::time::timeout(Duration::from_secs(1), inbox.arrived())
            .await
            .expect("woken by the first record");
        let mut taken = Vec::new();
        inbox.take(&mut taken);
        sender.push(pending(10, 1));
        tokio::time::timeout(Duration::from_secs(1), inbox.arrived())
            .await
            .expect("woken by the first record after the take");
    }

    #[tokio::test]
    async fn records_joining_a_waiting_list_wake_the_writer_once_a_batch_worth_arrived() {
        let one = pending(10, 0).size;
        let (sender, inbox) = inbox(3 * one);
        sender.push(pending(10, 0));
        inbox.arrived().await;
        sender.push(pending(10, 1));
        sender.push(pending(10, 2));
        let asleep = tokio::time::timeout(Duration::from_millis(50), inbox.arrived()).await;
        assert!(asleep.is_err(), "two more records do not wake the writer");
        sender.push(pending(10, 3));
        tokio::time::timeout(Duration::from_secs(1), inbox.arrived())
            .await
            .expect("woken once three more records' bytes arrived");
    }

    #[tokio::test]
    async fn a_dropped_sender_closes_the_inbox_after_its_last_records() {
        let (sender, inbox) = inbox(1_000_000);
        sender.push(pending(10, 7));
        drop(sender);
        tokio::time::timeout(Duration::from_secs(1), inbox.arrived())
            .await
            .expect("woken by the close");
        let mut taken = Vec::new();
        assert!(!inbox.take(&mut taken), "closed");
        assert_eq!(ids(&taken), [7], "the last record is still taken");
    }
}
