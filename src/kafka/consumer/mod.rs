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
//! One task runs the member: heartbeats, commits and processing happen in
//! order, so there is no lock around the positions. Fetching runs in one task
//! per owned partition ([`fetcher`]), feeding a bounded queue.

mod coordinator;
pub mod fetcher;
pub mod settings;

pub use coordinator::{CoordinatorError, GroupCoordinator, GroupError};
pub use settings::{ConsumerSettings, OffsetReset};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rskafka::BackoffConfig;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::record::RecordAndOffset;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::kafka::admin::Timeouts;
use crate::kafka::client::SharedClient;
use crate::kafka::retry::Backoff;
use fetcher::{FetchedBatch, FetcherSpec};

/// Batches waiting for processing, across all partitions.
const QUEUE_BATCHES: usize = 16;

/// One record handed to the processor.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Value, if any.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: BTreeMap<String, Vec<u8>>,
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
    /// Bootstrap servers.
    pub bootstrap: Vec<String>,
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
    client: Arc<SharedClient>,
    member_id: String,
    member_epoch: i32,
    heartbeat_interval: Duration,
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
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut attempts = 0u32;
        // A topic just created reaches every broker's metadata a moment later.
        let missing_deadline = crate::kafka::retry::Deadline::after(spec.settings.request_timeout);
        let (client, topic_id) = loop {
            attempts += 1;
            let attempt = async {
                let metadata = coordinator
                    .admin()
                    .metadata(Some(&[spec.topic.as_str()]))
                    .await
                    .map_err(|e| e.to_string())?;
                let topic = metadata.topic(&spec.topic).map(|t| t.id);
                // rskafka's own retries stay short: retrying (with a fresh client) is decided here.
                let backoff = BackoffConfig {
                    deadline: Some(crate::kafka::client::internal_retry_deadline(
                        spec.settings.request_timeout,
                    )),
                    ..BackoffConfig::default()
                };
                let client = SharedClient::connect(
                    spec.bootstrap.clone(),
                    "metrocloud-consumer",
                    backoff,
                    spec.settings.request_timeout,
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok::<_, String>((client, topic))
            };
            match attempt.await {
                Ok((_, None)) if missing_deadline.has_passed() => {
                    return Err(ConsumerError::MissingTopic(spec.topic.clone()));
                }
                Ok((_, None)) => {}
                Ok((client, Some(id))) => break (client, id),
                Err(e) => {
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::warn!(
                            "Kafka at {} does not answer yet (attempt {attempts}): {e}; retrying",
                            spec.bootstrap.join(",")
                        );
                    }
                }
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
            client: Arc::new(client),
            member_id: random_member_id(),
            member_epoch: 0,
            heartbeat_interval: Duration::from_secs(1),
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

    /// This member's id in the group.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The consumer's counters, shared.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.stats)
    }

    /// Runs the member until `shutdown`: then stops fetching, commits what was
    /// processed, leaves the group, and returns the processor.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<P, ConsumerError> {
        let mut next_heartbeat = Instant::now();
        let mut next_commit = Instant::now() + self.spec.settings.commit_interval;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            if let Some(error) = self.failure.take() {
                break Err(ConsumerError::Processing(error));
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                _ = ticks.tick() => self.processor.tick().await,
                _ = tokio::time::sleep_until(next_heartbeat) => {
                    match self.heartbeat().await {
                        Ok(acknowledge_soon) => {
                            backoff.reset();
                            next_heartbeat = Instant::now() + if acknowledge_soon {
                                Duration::ZERO
                            } else {
                                self.heartbeat_interval
                            };
                        }
                        Err(HeartbeatFailure::Fatal(error)) => break Err(ConsumerError::Refused(error)),
                        Err(HeartbeatFailure::Retry) => {
                            next_heartbeat = Instant::now() + backoff.next_delay();
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_commit) => {
                    self.commit(None).await;
                    next_commit = Instant::now() + self.spec.settings.commit_interval;
                }
                Some(batch) = self.queue_rx.recv() => self.process(batch).await,
            }
        };
        // After a processing failure `commit` commits nothing: the partitions go
        // back uncommitted and their next owner reads the records again.
        self.draining = true;
        self.stop_fetchers(None).await;
        self.commit(None).await;
        self.leave().await;
        outcome.map(|()| self.processor)
    }

    async fn process(&mut self, batch: FetchedBatch) {
        let Some(owned) = self.owned.get_mut(&batch.partition) else {
            return;
        };
        if owned.fetcher_id != batch.fetcher_id {
            return;
        }
        for record in batch.records {
            let RecordAndOffset { record, offset } = record;
            if offset < owned.position {
                continue;
            }
            owned.position = offset + 1;
            self.processor
                .process(ConsumedRecord {
                    topic: Arc::clone(&self.topic),
                    partition: batch.partition,
                    offset,
                    key: record.key,
                    value: record.value,
                    headers: record.headers,
                    timestamp: record.timestamp,
                })
                .await;
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

    /// One heartbeat; `Ok(true)` when the next should follow at once (to
    /// acknowledge a changed assignment).
    async fn heartbeat(&mut self) -> Result<bool, HeartbeatFailure> {
        let owned: Vec<i32> = self.owned.keys().copied().collect();
        let joining = self.member_epoch == 0;
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(self.member_epoch)
            .with_rebalance_timeout_ms(if joining {
                i32::try_from(self.spec.settings.rebalance_timeout.as_millis()).unwrap_or(i32::MAX)
            } else {
                -1
            })
            .with_subscribed_topic_names(
                joining.then(|| vec![TopicName(StrBytes::from_string(self.spec.topic.clone()))]),
            )
            .with_topic_partitions(Some(coordinator::owned_partitions(self.topic_id, &owned)));
        let response = match self.coordinator.heartbeat(request).await {
            Ok(response) => response,
            Err(CoordinatorError::Group(error)) if error.is_fenced() => {
                tracing::warn!(
                    "member {} was fenced by the group ({error}); giving up its partitions and rejoining",
                    self.member_id
                );
                self.stop_fetchers(None).await;
                self.member_epoch = 0;
                self.stats.rejoins.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
            Err(CoordinatorError::Group(error))
                if !error.is_coordinator_change() && fatal(&error) =>
            {
                return Err(HeartbeatFailure::Fatal(error));
            }
            Err(error) => {
                tracing::warn!("heartbeat to the group coordinator failed: {error}; retrying");
                return Err(HeartbeatFailure::Retry);
            }
        };
        if let Some(id) = response.member_id {
            self.member_id = id.to_string();
        }
        let was_joining = joining;
        self.member_epoch = response.member_epoch;
        if response.heartbeat_interval_ms > 0 {
            self.heartbeat_interval = Duration::from_millis(response.heartbeat_interval_ms as u64);
        }
        if was_joining {
            tracing::info!(
                "joined group {} as member {} (epoch {})",
                self.spec.group_id,
                self.member_id,
                self.member_epoch
            );
        }
        let Some(assignment) = response.assignment else {
            return Ok(false);
        };
        let target: BTreeSet<i32> = assignment
            .topic_partitions
            .iter()
            .filter(|t| t.topic_id == self.topic_id)
            .flat_map(|t| t.partitions.iter().copied())
            .collect();
        let current: BTreeSet<i32> = self.owned.keys().copied().collect();
        if target == current {
            return Ok(false);
        }
        let revoked: Vec<i32> = current.difference(&target).copied().collect();
        let added: Vec<i32> = target.difference(&current).copied().collect();
        if !revoked.is_empty() {
            self.stop_fetchers(Some(&revoked)).await;
        }
        if !added.is_empty() && !self.start_fetchers(&added).await {
            // Could not read committed offsets: keep the old set and try again.
            return Err(HeartbeatFailure::Retry);
        }
        tracing::info!(
            "partitions of {} now {:?} (revoked {revoked:?}, added {added:?})",
            self.topic,
            self.owned.keys().collect::<Vec<_>>()
        );
        self.stats
            .owned_partitions
            .store(self.owned.len() as u64, Ordering::Relaxed);
        Ok(true)
    }

    async fn start_fetchers(&mut self, partitions: &[i32]) -> bool {
        let committed = match self
            .coordinator
            .committed(
                &self.member_id,
                self.member_epoch,
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
                client: Arc::clone(&self.client),
                topic: self.spec.topic.clone(),
                partition,
                fetcher_id: self.next_fetcher_id,
                start,
                reset: self.spec.auto_offset_reset,
                max_bytes: self.spec.settings.fetch_max_bytes,
                max_wait: self.spec.settings.fetch_max_wait,
                request_timeout: self.spec.settings.request_timeout,
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

    async fn reset_position(&self, partition: i32) -> Option<i64> {
        let (generation, client) = self.client.current();
        let lookup = client.partition_client(
            self.spec.topic.clone(),
            partition,
            UnknownTopicHandling::Retry,
        );
        let timeout = self.spec.settings.request_timeout;
        let client = match tokio::time::timeout(timeout, lookup).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::warn!("cannot reach partition {partition}: {e}");
                return None;
            }
            Err(_) => {
                self.client.replace(generation).await;
                return None;
            }
        };
        match fetcher::reset_offset(&client, self.spec.auto_offset_reset, timeout).await {
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
    async fn stop_fetchers(&mut self, partitions: Option<&[i32]>) {
        let chosen: Vec<i32> = match partitions {
            Some(list) => list.to_vec(),
            None => self.owned.keys().copied().collect(),
        };
        for partition in &chosen {
            if let Some(owned) = self.owned.get(partition) {
                owned.stop.cancel();
            }
        }
        if self.member_epoch > 0 {
            self.commit(Some(&chosen)).await;
        }
        for partition in &chosen {
            self.owned.remove(partition);
        }
        self.processor.partitions_revoked(&chosen);
        self.stats
            .owned_partitions
            .store(self.owned.len() as u64, Ordering::Relaxed);
    }

    /// Commits the processed position of `partitions` (all owned when `None`)
    /// once the processor has made its effects durable.
    async fn commit(&mut self, partitions: Option<&[i32]>) {
        let offsets: Vec<(i32, i64)> = self
            .owned
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|list| list.contains(p)))
            .filter(|(_, owned)| owned.committed != Some(owned.position))
            .map(|(&p, owned)| (p, owned.position))
            .collect();
        if offsets.is_empty() || self.member_epoch <= 0 {
            return;
        }
        if self.failure.is_some() {
            return;
        }
        // While running, waiting for the processor's effects (alerts, dead
        // letters) is bounded by one heartbeat interval: a cluster that is slow
        // to acknowledge them must not hold up the heartbeats, or the group
        // would fence this member. The commit is then postponed, not lost.
        let flushed = if self.draining {
            Ok(self.processor.flush().await)
        } else {
            tokio::time::timeout(self.heartbeat_interval, self.processor.flush()).await
        };
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!("{error}; committing nothing more");
                self.failure = Some(error);
                return;
            }
            Err(_) => {
                tracing::info!(
                    "alerts or dead letters not acknowledged within {:?}; commit of {offsets:?} postponed",
                    self.heartbeat_interval
                );
                return;
            }
        }
        match self
            .coordinator
            .commit(
                &self.member_id,
                self.member_epoch,
                &self.spec.topic,
                &offsets,
            )
            .await
        {
            Ok(()) => {
                for (partition, offset) in offsets {
                    if let Some(owned) = self.owned.get_mut(&partition) {
                        owned.committed = Some(offset);
                    }
                }
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("commit of {offsets:?} failed: {e}; the next commit retries"),
        }
    }

    async fn leave(&mut self) {
        if self.member_epoch <= 0 {
            return;
        }
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(-1);
        match self.coordinator.heartbeat(request).await {
            Ok(_) => tracing::info!(
                "member {} left group {}",
                self.member_id,
                self.spec.group_id
            ),
            Err(e) => tracing::warn!(
                "leaving the group failed ({e}); the coordinator will time the member out"
            ),
        }
        self.member_epoch = 0;
        self.fetchers.close();
        self.fetchers.wait().await;
    }
}

enum HeartbeatFailure {
    Retry,
    Fatal(GroupError),
}

/// Errors no retry fixes.
fn fatal(error: &GroupError) -> bool {
    use kafka_protocol::ResponseError as E;
    matches!(
        error.error,
        E::GroupAuthorizationFailed
            | E::TopicAuthorizationFailed
            | E::UnsupportedVersion
            | E::UnsupportedAssignor
            | E::InvalidRequest
            | E::GroupMaxSizeReached
            | E::GroupIdNotFound
    )
}

/// A member id as Kafka clients make them: a random UUID in URL-safe base64.
fn random_member_id() -> String {
    crate::kafka::admin::random_kafka_uuid()
}
