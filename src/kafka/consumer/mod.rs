//! A member of a Kafka consumer group: partitions shared with other members,
//! offsets committed to Kafka only after processing.
//!
//! Membership uses Kafka's broker-side consumer group protocol (KIP-848, the
//! default in Kafka 4): the member heartbeats to the group coordinator, which
//! assigns partitions and moves them incrementally when members come and go.
//! When a partition is taken away, this member stops fetching it, commits what
//! it processed, and only then says so in its next heartbeat; the coordinator
//! hands the partition to its new owner after that.
//!
//! Offsets live in Kafka (OffsetCommit), so Kafka's own `kafka-consumer-groups`
//! shows the members, committed offsets and lag. The offset committed for a
//! partition is the *next* one to read, and only records the processor has
//! finished with (its side effects flushed) are committed: periodically, when a
//! partition moves away, and on shutdown. A member that crashes loses at most
//! one commit interval of progress, which its successor reads again.
//!
//! One task runs the member: assignments, commits and processing happen in
//! order, so there is no lock around the positions. Heartbeats run on a task
//! of their own ([`membership`]), so a slow batch cannot delay them. Fetching
//! runs in one task per owned partition ([`fetcher`]), feeding a bounded queue.

mod coordinator;
pub mod fetcher;
mod membership;
mod partitions;
pub mod settings;

pub use coordinator::{CoordinatorError, GroupCoordinator, GroupError};
use membership::{GroupEvent, GroupSpec, Heartbeats, Identity};
pub use settings::{ConsumerSettings, OffsetReset};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::kafka::admin::Timeouts;
use crate::kafka::headers::Headers;
use crate::kafka::retry::{Backoff, Deadline};
use crate::kafka::security::Brokers;
use fetcher::FetchedBatch;

/// Batches waiting for processing, across all partitions. A batch holds up to
/// `KAFKA_CONSUMER_FETCH_MAX_BYTES` of records, and records are slices of the
/// fetch answer they came in, so this bounds a lagging consumer's memory
/// (each fetcher also holds the batch it waits to queue: six more on a
/// six-partition topic). With sixteen, `metrocloud run` with 100,000 devices
/// held 58 MB of fetched records at its heap's peak instead of 33 MB with six,
/// and the consumer benchmark was no faster; three, with the fetchers' own,
/// still keep more than a batch ready per partition.
const QUEUE_BATCHES: usize = 3;

/// One record handed to the processor.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key, if any (a slice of the fetch response: no copy).
    pub key: Option<Bytes>,
    /// Value, if any (a slice of the fetch response: no copy).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Headers,
    /// Record timestamp.
    pub timestamp: DateTime<Utc>,
}

/// What the consumer feeds records to.
pub trait RecordProcessor: Send {
    /// Handles one record. Records of a partition come in offset order.
    fn process(&mut self, record: ConsumedRecord) -> impl Future<Output = ()> + Send;

    /// Makes the effects of every record processed so far durable (for example,
    /// waits until the alerts they produced are acknowledged). Offsets are
    /// committed only after this succeeds. An error means an effect was lost:
    /// the member then stops without committing, so that the records are read
    /// again from the last commit.
    fn flush(&mut self) -> impl Future<Output = Result<(), String>> + Send;

    /// Called about once a second, for work driven by time rather than records.
    fn tick(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// How far `partition`'s records are durable, given that everything before
    /// `position` was processed: the offset the consumer may commit. A
    /// processor that keeps records before making them durable in batches (a
    /// file store) answers the first record it still holds.
    fn committable(&self, partition: i32, position: i64) -> i64 {
        let _ = partition;
        position
    }

    /// These offsets are committed now.
    fn committed(&mut self, offsets: &[(i32, i64)]) {
        let _ = offsets;
    }

    /// Whether the processor has durable records it wants committed before the
    /// commit interval is up (asked after each fetched batch).
    fn commit_wanted(&self) -> bool {
        false
    }

    /// The member is stopping: the flushes that follow should make durable
    /// everything they can.
    fn stopping(&mut self) {}

    /// These partitions moved to another member; forget what was kept about them.
    fn partitions_revoked(&mut self, partitions: &[i32]) {
        let _ = partitions;
    }

    /// These partitions are now this member's, read from these offsets: a chance
    /// to learn what a previous owner already did with the records about to be
    /// read again. Called before their first record.
    fn partitions_assigned(&mut self, starts: &[(i32, i64)]) -> impl Future<Output = ()> + Send {
        let _ = starts;
        async {}
    }
}

/// What the consumer is asked to do.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Bootstrap servers, and how to reach them.
    pub bootstrap: Brokers,
    /// The topic to consume.
    pub topic: String,
    /// The group to join.
    pub group_id: String,
    /// Where to start without a committed offset.
    pub auto_offset_reset: OffsetReset,
    /// Commit, fetch and timeout settings.
    pub settings: ConsumerSettings,
}

/// Why the consumer stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The topic does not exist.
    #[error("topic {0} does not exist (run `metrocloud topics ensure`)")]
    MissingTopic(String),
    /// The group coordinator refused the member in a way retrying cannot fix.
    #[error("the group coordinator refused this member: {0}")]
    Refused(GroupError),
    /// The cluster refused the client (credentials, rights, or security
    /// protocol); asking again cannot help.
    #[error("{0}")]
    Denied(String),
    /// The processor could not make its effects durable; nothing more was committed.
    #[error("processing failed, stopped without committing: {0}")]
    Processing(String),
}

/// Counters for status lines, shared with other tasks.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Records handed to the processor.
    pub processed: AtomicU64,
    /// Successful commits.
    pub commits: AtomicU64,
    /// Partitions owned now.
    pub owned_partitions: AtomicU64,
    /// Records behind the high watermark, over owned partitions.
    pub lag: AtomicI64,
    /// Times the member had to rejoin the group.
    pub rejoins: AtomicU64,
}

struct OwnedPartition {
    fetcher_id: u64,
    stop: CancellationToken,
    /// Next offset to process (and to commit).
    position: i64,
    committed: Option<i64>,
    high_watermark: Arc<AtomicI64>,
}

/// A running group member; see the module documentation.
pub struct GroupConsumer<P> {
    spec: ConsumerSpec,
    topic: Arc<str>,
    topic_id: uuid::Uuid,
    processor: P,
    coordinator: GroupCoordinator,
    /// Time limits of the fetchers' requests.
    timeouts: Timeouts,
    member_id: String,
    /// The heartbeat task, while the member runs.
    heartbeats: Option<Heartbeats>,
    /// An assignment not applied yet (its committed offsets could not be read).
    pending: Option<BTreeSet<i32>>,
    owned: BTreeMap<i32, OwnedPartition>,
    next_fetcher_id: u64,
    queue_tx: mpsc::Sender<FetchedBatch>,
    queue_rx: mpsc::Receiver<FetchedBatch>,
    fetchers: TaskTracker,
    stats: Arc<ConsumerStats>,
    /// Set when the processor lost an effect: no commit happens after it.
    failure: Option<String>,
    /// Set once the member is shutting down: commits then wait for every effect.
    draining: bool,
}

impl<P: RecordProcessor> GroupConsumer<P> {
    /// Connects (retrying with backoff until `shutdown`) and prepares to join the group.
    pub async fn connect(
        spec: ConsumerSpec,
        processor: P,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, ConsumerError> {
        let timeouts = Timeouts {
            connect: spec.settings.request_timeout.min(Duration::from_secs(10)),
            request: spec.settings.request_timeout,
        };
        let coordinator = GroupCoordinator::new(spec.bootstrap.clone(), &spec.group_id, timeouts);
        let retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        // A topic just created reaches every broker's metadata a moment later.
        let missing_deadline = Deadline::after(spec.settings.request_timeout);
        let mut backoff = retry;
        let mut attempts = 0u32;
        let topic_id = loop {
            attempts += 1;
            match coordinator
                .admin()
                .metadata(Some(&[spec.topic.as_str()]))
                .await
            {
                Ok(metadata) => match metadata.topic(&spec.topic).map(|t| t.id) {
                    Some(id) => break id,
                    None if missing_deadline.has_passed() => {
                        return Err(ConsumerError::MissingTopic(spec.topic.clone()));
                    }
                    None => {}
                },
                Err(e) if e.is_permanent() => {
                    return Err(ConsumerError::Denied(format!("topic {}: {e}", spec.topic)));
                }
                Err(e) if attempts == 1 || attempts.is_power_of_two() => tracing::warn!(
                    "cannot read the metadata of {} yet (attempt {attempts}): {e}; retrying",
                    spec.topic
                ),
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        };
        let (queue_tx, queue_rx) = mpsc::channel(QUEUE_BATCHES);
        Ok(Some(GroupConsumer {
            topic: Arc::from(spec.topic.as_str()),
            topic_id,
            processor,
            coordinator,
            timeouts,
            member_id: random_member_id(),
            heartbeats: None,
            pending: None,
            owned: BTreeMap::new(),
            next_fetcher_id: 0,
            queue_tx,
            queue_rx,
            fetchers: TaskTracker::new(),
            stats: Arc::new(ConsumerStats::default()),
            failure: None,
            draining: false,
            spec,
        }))
    }

    /// The consumer's counters, shared.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.stats)
    }

    /// Runs the member until `shutdown`: then stops fetching, commits what was
    /// processed, leaves the group, and returns the processor.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<P, ConsumerError> {
        let timeouts = self.coordinator.timeouts();
        self.heartbeats = Some(Heartbeats::start(
            GroupSpec {
                coordinator: GroupCoordinator::new(
                    self.spec.bootstrap.clone(),
                    &self.spec.group_id,
                    timeouts,
                ),
                group_id: self.spec.group_id.clone(),
                topic: self.spec.topic.clone(),
                topic_id: self.topic_id,
                rebalance_timeout: self.spec.settings.rebalance_timeout,
            },
            self.member_id.clone(),
        ));
        let mut next_commit = Instant::now() + self.spec.settings.commit_interval;
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            if let Some(error) = self.failure.clone() {
                break Err(ConsumerError::Processing(error));
            }
            let heartbeats = self.heartbeats.as_mut().expect("started above");
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                event = heartbeats.next_event() => match event {
                    Some(GroupEvent::Assigned(target)) => self.assign(target).await,
                    Some(GroupEvent::Fenced) => self.rejoin().await,
                    Some(GroupEvent::Refused(error)) => break Err(ConsumerError::Refused(error)),
                    None => break Ok(()),
                },
                _ = ticks.tick() => {
                    if let Some(target) = self.pending.take() {
                        self.assign(target).await;
                    }
                    self.processor.tick().await;
                }
                _ = tokio::time::sleep_until(next_commit) => {
                    self.commit(None).await;
                    next_commit = Instant::now() + self.spec.settings.commit_interval;
                }
                Some(batch) = self.queue_rx.recv() => {
                    self.process(batch).await;
                    if self.processor.commit_wanted() {
                        self.commit(None).await;
                        next_commit = Instant::now() + self.spec.settings.commit_interval;
                    }
                }
            }
        };
        // After a processing failure `commit` commits nothing: the partitions go
        // back uncommitted and their next owner reads the records again.
        self.draining = true;
        self.processor.stopping();
        self.stop_fetchers(None).await;
        self.commit(None).await;
        self.leave().await;
        outcome.map(|()| self.processor)
    }

    /// The member's id and epoch, as the last heartbeat left them.
    fn identity(&self) -> Identity {
        match &self.heartbeats {
            Some(heartbeats) => heartbeats.identity(),
            None => Identity {
                member_id: self.member_id.clone(),
                epoch: 0,
                interval: Duration::from_secs(1),
            },
        }
    }

    /// Moves to the `target` partitions: revoked ones are stopped and committed
    /// first, added ones start at their committed offsets; then the heartbeat
    /// task reports the new set at once. When the committed offsets cannot be
    /// read, the target is kept and tried again at the next tick.
    async fn assign(&mut self, target: BTreeSet<i32>) {
        let current: BTreeSet<i32> = self.owned.keys().copied().collect();
        if target == current {
            return;
        }
        let revoked: Vec<i32> = current.difference(&target).copied().collect();
        let added: Vec<i32> = target.difference(&current).copied().collect();
        if !revoked.is_empty() {
            self.stop_fetchers(Some(&revoked)).await;
        }
        if !added.is_empty() && !self.start_fetchers(&added).await {
            self.pending = Some(target);
        } else {
            tracing::info!(
                "group {}: partitions of {} now {:?} (revoked {revoked:?}, added {added:?})",
                self.spec.group_id,
                self.topic,
                self.owned.keys().collect::<Vec<_>>()
            );
        }
        self.report_owned();
    }

    /// After a fence: gives up every partition (its commit is refused; the next
    /// owner reads from the last commit) and joins again.
    async fn rejoin(&mut self) {
        self.pending = None;
        self.stop_fetchers(None).await;
        self.stats.rejoins.fetch_add(1, Ordering::Relaxed);
        if let Some(heartbeats) = &self.heartbeats {
            heartbeats.rejoin().await;
        }
    }

    fn report_owned(&self) {
        self.stats
            .owned_partitions
            .store(self.owned.len() as u64, Ordering::Relaxed);
        if let Some(heartbeats) = &self.heartbeats {
            heartbeats.report_owned(self.owned.keys().copied().collect());
        }
    }

    async fn process(&mut self, batch: FetchedBatch) {
        let Some(owned) = self.owned.get_mut(&batch.partition) else {
            return;
        };
        if owned.fetcher_id != batch.fetcher_id {
            return;
        }
        for record in batch.records {
            if record.offset < owned.position {
                continue;
            }
            owned.position = record.offset + 1;
            self.processor.process(record).await;
            self.stats.processed.fetch_add(1, Ordering::Relaxed);
        }
        self.update_lag();
    }

    fn update_lag(&self) {
        let lag: i64 = self
            .owned
            .values()
            .map(|p| (p.high_watermark.load(Ordering::Relaxed) - p.position).max(0))
            .sum();
        self.stats.lag.store(lag, Ordering::Relaxed);
    }

    /// Commits the processed position of `partitions` (all owned when `None`)
    /// once the processor has made its effects durable, as far as it says
    /// they are. While stopping, a processor whose flush left records
    /// uncommitted gets a second round.
    async fn commit(&mut self, partitions: Option<&[i32]>) {
        let rounds = if self.draining { 2 } else { 1 };
        for _ in 0..rounds {
            if !self.commit_once(partitions).await {
                return;
            }
        }
    }

    /// One flush and commit; true when it committed and records remain uncommitted.
    async fn commit_once(&mut self, partitions: Option<&[i32]>) -> bool {
        let chosen: Vec<i32> = self
            .owned
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|list| list.contains(p)))
            .filter(|(_, owned)| owned.committed != Some(owned.position))
            .map(|(&p, _)| p)
            .collect();
        let identity = self.identity();
        if chosen.is_empty() || identity.epoch <= 0 {
            return false;
        }
        if self.failure.is_some() {
            return false;
        }
        // While running, waiting for the processor's effects (alerts, dead
        // letters) is bounded by one heartbeat interval: a cluster that is slow
        // to acknowledge them must not hold up assignments and processing for
        // long. The commit is then postponed, not lost.
        let flushed = if self.draining {
            Ok(self.processor.flush().await)
        } else {
            tokio::time::timeout(identity.interval, self.processor.flush()).await
        };
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!("{error}; committing nothing more");
                self.failure = Some(error);
                return false;
            }
            Err(_) => {
                tracing::info!(
                    "processing's effects not durable within {:?}; commit of partitions {chosen:?} postponed",
                    identity.interval
                );
                return false;
            }
        }
        let offsets: Vec<(i32, i64)> = chosen
            .iter()
            .filter_map(|p| {
                let owned = &self.owned[p];
                let offset = self.processor.committable(*p, owned.position);
                (owned.committed != Some(offset)).then_some((*p, offset))
            })
            .collect();
        if offsets.is_empty() {
            return false;
        }
        match self
            .coordinator
            .commit(
                &identity.member_id,
                identity.epoch,
                &self.spec.topic,
                &offsets,
            )
            .await
        {
            Ok(()) => {
                let mut remaining = false;
                for &(partition, offset) in &offsets {
                    if let Some(owned) = self.owned.get_mut(&partition) {
                        owned.committed = Some(offset);
                        remaining |= offset < owned.position;
                    }
                }
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.processor.committed(&offsets);
                remaining
            }
            Err(e) => {
                tracing::warn!("commit of {offsets:?} failed: {e}; the next commit retries");
                false
            }
        }
    }

    /// Stops heartbeating and leaves the group, so that its partitions move at once.
    async fn leave(&mut self) {
        let Some(heartbeats) = self.heartbeats.take() else {
            return;
        };
        let identity = heartbeats.stop().await;
        if identity.epoch > 0 {
            let request = ConsumerGroupHeartbeatRequest::default()
                .with_member_id(StrBytes::from_string(identity.member_id.clone()))
                .with_member_epoch(-1);
            match self.coordinator.heartbeat(request).await {
                Ok(_) => tracing::info!(
                    "member {} left group {}",
                    identity.member_id,
                    self.spec.group_id
                ),
                Err(e) => tracing::warn!(
                    "leaving the group failed ({e}); the coordinator will time the member out"
                ),
            }
        }
        self.fetchers.close();
        self.fetchers.wait().await;
    }
}

/// A member id as Kafka clients make them: a random UUID in URL-safe base64.
fn random_member_id() -> String {
    crate::kafka::admin::random_kafka_uuid()
}
