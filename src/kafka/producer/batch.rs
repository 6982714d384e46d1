//! Gathering a partition's queued records into batches.
//!
//! A batch closes when it holds `batch_bytes` or `linger` has passed since its
//! first record. Its records keep their share of the producer's byte budget
//! until the batch is done, acknowledged or failed, so the budget bounds what
//! is queued and in flight together.

use std::sync::Arc;
use std::time::Duration;

use rskafka::record::Record;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

pub(super) struct Pending<M> {
    pub(super) record: Record,
    /// The record's [`OutgoingRecord::size`].
    pub(super) size: usize,
    pub(super) meta: M,
    pub(super) deadline: Instant,
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

/// The next batch from `queue`: waits for a first record, then takes more until
/// the batch holds `batch_bytes` or `linger` has passed since the first. `None`
/// once the queue is closed and empty.
pub(super) async fn next_batch<M>(
    queue: &mut mpsc::UnboundedReceiver<Pending<M>>,
    budget: &Arc<Semaphore>,
    batch_bytes: usize,
    linger: Duration,
) -> Option<Batch<M>> {
    let first = queue.recv().await?;
    let mut bytes = first.size;
    let mut batch = vec![first];
    let linger_until = Instant::now() + linger;
    while bytes < batch_bytes {
        let next = match queue.try_recv() {
            Ok(next) => Some(next),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                tokio::select! {
                    next = queue.recv() => next,
                    _ = tokio::time::sleep_until(linger_until) => None,
                }
            }
        };
        let Some(next) = next else { break };
        bytes += next.size;
        batch.push(next);
    }
    Some(Batch {
        records: batch,
        _held: Held {
            budget: Arc::clone(budget),
            bytes,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;

    use super::*;
    use crate::kafka::producer::{OutgoingRecord, RECORD_OVERHEAD};

    /// A record as `send` queues it, its size taken from `budget`.
    fn pending(budget: &Arc<Semaphore>, value_bytes: usize, id: u32) -> Pending<u32> {
        let record = OutgoingRecord {
            key: b"k".to_vec(),
            value: vec![b'x'; value_bytes],
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
            meta: id,
        };
        let size = record.size();
        budget
            .try_acquire_many(size as u32)
            .expect("budget")
            .forget();
        let (record, meta) = record.into_kafka_record();
        Pending {
            record,
            size,
            meta,
            deadline: Instant::now() + Duration::from_secs(120),
        }
    }

    fn ids(batch: &Batch<u32>) -> Vec<u32> {
        batch.records.iter().map(|p| p.meta).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn records_within_the_linger_share_a_batch_and_later_ones_start_the_next() {
        let budget = Arc::new(Semaphore::new(100_000));
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(pending(&budget, 10, 1)).ok();
        let sender = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(3)).await;
                tx.send(pending(&budget, 10, 2)).ok();
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send(pending(&budget, 10, 3)).ok();
            })
        };
        let linger = Duration::from_millis(5);
        let first = next_batch(&mut rx, &budget, 1_000_000, linger)
            .await
            .unwrap();
        assert_eq!(ids(&first), [1, 2]);
        let second = next_batch(&mut rx, &budget, 1_000_000, linger)
            .await
            .unwrap();
        assert_eq!(ids(&second), [3]);
        sender.await.unwrap();
        assert!(
            next_batch(&mut rx, &budget, 1_000_000, linger)
                .await
                .is_none(),
            "closed and empty"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_once_it_holds_batch_bytes() {
        let budget = Arc::new(Semaphore::new(100_000));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for id in 0..5 {
            tx.send(pending(&budget, 1_000, id)).ok();
        }
        drop(tx);
        // Each record is about 1,065 bytes: the third one reaches 2,500.
        let sizes: Vec<Vec<u32>> = [
            next_batch(&mut rx, &budget, 2_500, Duration::from_secs(1))
                .await
                .unwrap(),
            next_batch(&mut rx, &budget, 2_500, Duration::from_secs(1))
                .await
                .unwrap(),
        ]
        .iter()
        .map(ids)
        .collect();
        assert_eq!(sizes, [vec![0, 1, 2], vec![3, 4]]);
        assert!(
            next_batch(&mut rx, &budget, 2_500, Duration::from_secs(1))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_record_holds_its_share_of_the_buffer_until_its_batch_is_done() {
        let one_record = 1 + 1 + RECORD_OVERHEAD;
        let budget = Arc::new(Semaphore::new(3 * one_record));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for id in 0..3 {
            tx.send(pending(&budget, 1, id)).ok();
        }
        assert_eq!(budget.available_permits(), 0, "a full buffer");
        let batch = next_batch(&mut rx, &budget, 1_000_000, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(batch.records.len(), 3);
        assert_eq!(budget.available_permits(), 0, "still held while in flight");
        drop(batch);
        assert_eq!(budget.available_permits(), 3 * one_record);
    }
}
