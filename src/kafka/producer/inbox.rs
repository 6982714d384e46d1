//! A partition's inbox: where [`super::Producer::send`] leaves records for
//! the partition's writer.
//!
//! A channel copies each record into a slot of its own and out again, and
//! wakes its receiver for every record. A record here is about 200 bytes (the
//! wire record with its header map, the caller's data, when it was sent), so
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

use crate::lock::lock;

struct Shared<T> {
    list: Mutex<List<T>>,
    arrived: Notify,
}

struct List<T> {
    records: Vec<T>,
    /// Bytes arrived since the writer was last woken.
    unannounced: usize,
    /// The sending side is gone: no more records will come.
    closed: bool,
}

/// The sending side; dropping it closes the inbox.
pub(super) struct InboxSender<T> {
    shared: Arc<Shared<T>>,
    /// Bytes of records that wake the writer again while the list is not empty.
    wake_every: usize,
}

/// The writer's side.
pub(super) struct Inbox<T> {
    shared: Arc<Shared<T>>,
}

/// A new inbox; the writer is woken again after every `wake_every` bytes.
pub(super) fn inbox<T>(wake_every: usize) -> (InboxSender<T>, Inbox<T>) {
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

impl<T> InboxSender<T> {
    /// Leaves `record`, of `size` bytes, for the writer; `false` when the
    /// writer is gone (it ended with a panic) and nothing would ever take it.
    pub(super) fn push(&self, record: T, size: usize) -> bool {
        if Arc::strong_count(&self.shared) == 1 {
            return false;
        }
        let wake = {
            let mut list = lock(&self.shared.list);
            let first = list.records.is_empty();
            list.unannounced += size;
            list.records.push(record);
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

impl<T> Drop for InboxSender<T> {
    fn drop(&mut self) {
        lock(&self.shared.list).closed = true;
        self.shared.arrived.notify_one();
    }
}

impl<T> Inbox<T> {
    /// Moves every record waiting onto the end of `into` (swapping lists
    /// when `into` is empty); `false` once the sender is gone and nothing is left.
    pub(super) fn take(&self, into: &mut Vec<T>) -> bool {
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

    const SIZE: usize = 100;

    #[tokio::test]
    async fn the_writer_takes_every_record_in_the_order_sent() {
        let (sender, inbox) = inbox(1_000_000);
        for id in 0..3 {
            assert!(sender.push(id, SIZE));
        }
        let mut taken = Vec::new();
        assert!(inbox.take(&mut taken));
        assert!(sender.push(3, SIZE));
        assert!(inbox.take(&mut taken), "still open");
        assert_eq!(taken, [0, 1, 2, 3]);
        assert!(inbox.take(&mut taken));
        assert_eq!(taken.len(), 4, "nothing taken twice");
    }

    #[tokio::test]
    async fn the_first_record_after_a_take_wakes_the_writer() {
        let (sender, inbox) = inbox(1_000_000);
        sender.push(0, SIZE);
        tokio::time::timeout(Duration::from_secs(1), inbox.arrived())
            .await
            .expect("woken by the first record");
        let mut taken = Vec::new();
        inbox.take(&mut taken);
        sender.push(1, SIZE);
        tokio::time::timeout(Duration::from_secs(1), inbox.arrived())
            .await
            .expect("woken by the first record after the take");
    }

    #[tokio::test]
    async fn records_joining_a_waiting_list_wake_the_writer_once_a_batch_worth_arrived() {
        let (sender, inbox) = inbox(3 * SIZE);
        sender.push(0, SIZE);
        inbox.arrived().await;
        sender.push(1, SIZE);
        sender.push(2, SIZE);
        let asleep = tokio::time::timeout(Duration::from_millis(50), inbox.arrived()).await;
        assert!(asleep.is_err(), "two more records do not wake the writer");
        sender.push(3, SIZE);
        tokio::time::timeout(Duration::from_secs(1), inbox.arrived())
            .await
            .expect("woken once three more records' bytes arrived");
    }

    #[tokio::test]
    async fn a_dropped_sender_closes_the_inbox_after_its_last_records() {
        let (sender, inbox) = inbox(1_000_000);
        sender.push(7, SIZE);
        drop(sender);
        tokio::time::timeout(Duration::from_secs(1), inbox.arrived())
            .await
            .expect("woken by the close");
        let mut taken = Vec::new();
        assert!(!inbox.take(&mut taken), "closed");
        assert_eq!(taken, [7], "the last record is still taken");
    }

    #[tokio::test]
    async fn a_record_for_a_writer_that_is_gone_is_refused() {
        let (sender, inbox) = inbox(1_000_000);
        drop(inbox);
        assert!(!sender.push(1, SIZE));
    }
}
