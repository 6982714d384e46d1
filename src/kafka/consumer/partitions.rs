//! Taking partitions on and giving them up: a fetcher each, started at the
//! committed offset (or the reset position), stopped after a last commit.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use tokio_util::sync::CancellationToken;

use super::fetcher::{self, FetcherSpec};

use super::*;

impl<P: RecordProcessor> GroupConsumer<P> {
    pub(super) async fn start_fetchers(&mut self, partitions: &[i32]) -> bool {
        let identity = self.identity();
        let committed = match self
            .coordinator
            .committed(
                &identity.member_id,
                identity.epoch,
                &self.spec.topic,
                partitions,
            )
            .await
        {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!("cannot read committed offsets: {e}; retrying");
                return false;
            }
        };
        let mut starts = Vec::new();
        for (partition, committed) in committed {
            if !partitions.contains(&partition) {
                continue;
            }
            let start = match committed {
                Some(offset) => offset,
                None => match self.reset_position(partition).await {
                    Some(offset) => offset,
                    None => return false,
                },
            };
            starts.push((partition, start, committed));
        }
        let positions: Vec<(i32, i64)> = starts.iter().map(|&(p, start, _)| (p, start)).collect();
        self.processor.partitions_assigned(&positions).await;
        for (partition, start, committed) in starts {
            self.next_fetcher_id += 1;
            let stop = CancellationToken::new();
            let high_watermark = Arc::new(AtomicI64::new(start));
            let spec = FetcherSpec {
                bootstrap: self.spec.bootstrap.clone(),
                timeouts: self.timeouts,
                topic: Arc::clone(&self.topic),
                partition,
                fetcher_id: self.next_fetcher_id,
                start,
                reset: self.spec.auto_offset_reset,
                max_bytes: self.spec.settings.fetch_max_bytes,
                max_wait: self.spec.settings.fetch_max_wait,
                queue: self.queue_tx.clone(),
                high_watermark: Arc::clone(&high_watermark),
                stop: stop.clone(),
            };
            self.fetchers.spawn(fetcher::run_fetcher(spec));
            self.owned.insert(
                partition,
                OwnedPartition {
                    fetcher_id: self.next_fetcher_id,
                    stop,
                    position: start,
                    committed,
                    high_watermark,
                },
            );
        }
        true
    }

    pub(super) async fn reset_position(&self, partition: i32) -> Option<i64> {
        let admin = self.coordinator.admin();
        match fetcher::reset_offset(
            admin,
            &self.spec.topic,
            partition,
            self.spec.auto_offset_reset,
        )
        .await
        {
            Ok(offset) => Some(offset),
            Err(e) => {
                tracing::warn!(
                    "cannot look up the {} offset of partition {partition}: {e}",
                    self.spec.auto_offset_reset
                );
                None
            }
        }
    }

    /// Stops fetching `partitions` (all when `None`), commits what was processed of
    /// them, and forgets them.
    pub(super) async fn stop_fetchers(&mut self, partitions: Option<&[i32]>) {
        let chosen: Vec<i32> = match partitions {
            Some(list) => list.to_vec(),
            None => self.owned.keys().copied().collect(),
        };
        for partition in &chosen {
            if let Some(owned) = self.owned.get(partition) {
                owned.stop.cancel();
            }
        }
        self.commit(Some(&chosen)).await;
        for partition in &chosen {
            self.owned.remove(partition);
        }
        self.processor.partitions_revoked(&chosen);
        self.report_owned();
    }
}
