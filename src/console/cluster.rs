//! The cluster as the console shows it: brokers, topics and consumer groups,
//! read from Kafka at the moment a page asks.
//!
//! Every view is taken from Kafka's own answers (metadata, the KRaft quorum,
//! ListOffsets, the group coordinators), so the console agrees with
//! `kafka-topics.sh --describe` and `kafka-consumer-groups.sh --describe`.
//! A snapshot is kept for [`SNAPSHOT_TTL`]: however many pages are open, the
//! cluster is asked at most once per interval.
//!
//! Metadata lists only live brokers. A broker that stopped is still shown,
//! as down: the console remembers every node it has seen, in metadata, as a
//! quorum voter or as a replica of some partition.

use super::lock;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::kafka::admin::{AdminClient, ClusterMetadata, GroupMember, OffsetAt};

/// How long a snapshot of the cluster is reused.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(2);
/// How long topic configurations are reused (they rarely change).
const CONFIGS_TTL: Duration = Duration::from_secs(30);
/// Rates are averaged over up to this long (commits come in steps, every
/// commit interval, so shorter windows swing).
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// The topic configurations shown.
pub const SHOWN_CONFIGS: [&str; 4] = [
    "min.insync.replicas",
    "retention.ms",
    "cleanup.policy",
    "max.message.bytes",
];

/// One broker: up when the cluster's metadata lists it (registered, not fenced).
#[derive(Debug, Clone, Serialize)]
pub struct BrokerView {
    /// Node id.
    pub id: i32,
    /// `host:port` it advertises (remembered when it is down; empty if never seen).
    pub address: String,
    /// Listed in the metadata now.
    pub up: bool,
    /// A voter of the KRaft controller quorum.
    pub voter: bool,
    /// The active controller.
    pub active_controller: bool,
    /// Partitions (of all topics) it leads.
    pub partitions_led: usize,
    /// Replicas (of all topics) assigned to it.
    pub replicas: usize,
}

/// One partition: where it lives and how far its log goes.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    /// Partition number.
    pub partition: i32,
    /// Leader, or -1 when offline.
    pub leader: i32,
    /// Replicas.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Fewer in-sync replicas than replicas.
    pub under_replicated: bool,
    /// No leader: nothing can be written or read.
    pub offline: bool,
    /// First offset kept.
    pub earliest: Option<i64>,
    /// Next offset to be written (the high watermark).
    pub latest: Option<i64>,
}

/// One topic.
#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    /// Name.
    pub name: String,
    /// Kept by Kafka for itself.
    pub internal: bool,
    /// Replication factor.
    pub replication_factor: usize,
    /// Records kept: the sum over partitions of latest minus earliest offset.
    pub messages: u64,
    /// Partitions under-replicated.
    pub under_replicated: usize,
    /// Partitions without a leader.
    pub offline: usize,
    /// The configurations of [`SHOWN_CONFIGS`] that are set.
    pub configs: BTreeMap<String, String>,
    /// Partitions.
    pub partitions: Vec<PartitionView>,
}

/// One partition a group reads.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset the group will read (its committed offset).
    pub committed: i64,
    /// The partition's high watermark.
    pub end: Option<i64>,
    /// Records written and not yet committed by the group.
    pub lag: Option<i64>,
    /// The member that owns it now, if any.
    pub owner: Option<String>,
    /// How long ago the first record not yet committed was written (ms):
    /// 0 without lag, absent until looked up.
    pub time_behind_ms: Option<i64>,
}

/// One consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// Group id.
    pub id: String,
    /// `classic` or `consumer` (KIP-848).
    pub kind: String,
    /// State, as the coordinator says.
    pub state: String,
    /// The coordinator's node id, when it answered.
    pub coordinator: Option<i32>,
    /// Members and their partitions.
    pub members: Vec<GroupMember>,
    /// Committed offsets and lag, by topic and partition.
    pub partitions: Vec<GroupPartition>,
    /// Sum of the partitions' lag.
    pub total_lag: i64,
    /// Why the description is incomplete, if it is.
    pub error: Option<String>,
}

/// The cluster at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSnapshot {
    /// When it was taken (ms since the epoch).
    pub taken_at_ms: i64,
    /// Whether any broker answered.
    pub reachable: bool,
    /// Why not, or what part failed.
    pub error: Option<String>,
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// The active controller (KRaft quorum leader).
    pub active_controller: Option<i32>,
    /// Every broker seen so far, by id.
    pub brokers: Vec<BrokerView>,
    /// Topics, by name.
    pub topics: Vec<TopicView>,
    /// Consumer groups, by id.
    pub groups: Vec<GroupView>,
    /// Records written per second over all non-internal topics, over the last minute.
    pub produce_rate: Option<f64>,
    /// Offsets committed per second over all groups, over the last minute.
    pub consume_rate: Option<f64>,
}

impl ClusterSnapshot {
    /// Brokers up.
    pub fn brokers_up(&self) -> usize {
        self.brokers.iter().filter(|b| b.up).count()
    }

    /// Under-replicated partitions, over all topics.
    pub fn under_replicated(&self) -> usize {
        self.topics.iter().map(|t| t.under_replicated).sum()
    }

    /// Partitions without a leader, over all topics.
    pub fn offline(&self) -> usize {
        self.topics.iter().map(|t| t.offline).sum()
    }

    /// Lag over all groups.
    pub fn total_lag(&self) -> i64 {
        self.groups.iter().map(|g| g.total_lag).sum()
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&TopicView> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// A group by id.
    pub fn group(&self, id: &str) -> Option<&GroupView> {
        self.groups.iter().find(|g| g.id == id)
    }
}

#[derive(Debug, Default)]
struct Memory {
    /// Every node seen, with the last address it advertised.
    nodes: BTreeMap<i32, String>,
    /// Topic configs and when they were read.
    configs: BTreeMap<String, (Instant, BTreeMap<String, String>)>,
    /// Totals of recent snapshots, oldest first: (when, records written, offsets committed).
    totals: std::collections::VecDeque<(Instant, u64, i64)>,
}

/// Takes and caches snapshots; see the module documentation.
pub struct ClusterView {
    admin: AdminClient,
    latest: tokio::sync::Mutex<Option<(Instant, Arc<ClusterSnapshot>)>>,
    memory: Mutex<Memory>,
}

impl ClusterView {
    /// A view of the cluster `admin` talks to.
    pub fn new(admin: AdminClient) -> Self {
        ClusterView {
            admin,
            latest: tokio::sync::Mutex::new(None),
            memory: Mutex::new(Memory::default()),
        }
    }

    /// The admin client (for the other views' requests).
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    /// A snapshot at most [`SNAPSHOT_TTL`] old.
    pub async fn snapshot(&self) -> Arc<ClusterSnapshot> {
        let mut latest = self.latest.lock().await;
        if let Some((at, snapshot)) = latest.as_ref()
            && at.elapsed() < SNAPSHOT_TTL
        {
            return Arc::clone(snapshot);
        }
        let snapshot = Arc::new(self.take().await);
        *latest = Some((Instant::now(), Arc::clone(&snapshot)));
        snapshot
    }

    async fn take(&self) -> ClusterSnapshot {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let metadata = match self.admin.metadata(None).await {
            Ok(metadata) => metadata,
            Err(e) => {
                let memory = lock(&self.memory);
                return ClusterSnapshot {
                    taken_at_ms: now_ms,
                    reachable: false,
                    error: Some(e.to_string()),
                    cluster_id: None,
                    active_controller: None,
                    brokers: memory
                        .nodes
                        .iter()
                        .map(|(&id, address)| BrokerView {
                            id,
                            address: address.clone(),
                            up: false,
                            voter: false,
                            active_controller: false,
                            partitions_led: 0,
                            replicas: 0,
                        })
                        .collect(),
                    topics: Vec::new(),
                    groups: Vec::new(),
                    produce_rate: None,
                    consume_rate: None,
                };
            }
        };
        let mut errors = Vec::new();
        let quorum = match self.admin.quorum().await {
            Ok(quorum) => Some(quorum),
            Err(e) => {
                errors.push(format!("controller quorum: {e}"));
                None
            }
        };
        let topics = self.topics(&metadata, &mut errors).await;
        let groups = self.groups(&metadata, &topics, &mut errors).await;
        let brokers = self.brokers(&metadata, quorum.as_ref(), &topics);

        let written: u64 = topics
            .iter()
            .filter(|t| !t.internal)
            .map(|t| t.partitions.iter().filter_map(|p| p.latest).sum::<i64>() as u64)
            .sum();
        let committed: i64 = groups
            .iter()
            .flat_map(|g| &g.partitions)
            .map(|p| p.committed)
            .sum();
        let (produce_rate, consume_rate) = {
            let mut memory = lock(&self.memory);
            while memory
                .totals
                .front()
                .is_some_and(|(at, _, _)| at.elapsed() > RATE_WINDOW)
            {
                memory.totals.pop_front();
            }
            let rates = memory.totals.front().and_then(|&(at, w, c)| {
                let seconds = at.elapsed().as_secs_f64();
                (seconds >= 1.0).then(|| {
                    (
                        written.saturating_sub(w) as f64 / seconds,
                        (committed - c).max(0) as f64 / seconds,
                    )
                })
            });
            memory
                .totals
                .push_back((Instant::now(), written, committed));
            (rates.map(|r| r.0), rates.map(|r| r.1))
        };
        ClusterSnapshot {
            taken_at_ms: now_ms,
            reachable: true,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            cluster_id: metadata.cluster_id.clone(),
            active_controller: quorum.as_ref().and_then(|q| q.leader),
            brokers,
            topics,
            groups,
            produce_rate,
            consume_rate,
        }
    }

    fn brokers(
        &self,
        metadata: &ClusterMetadata,
        quorum: Option<&crate::kafka::admin::QuorumState>,
        topics: &[TopicView],
    ) -> Vec<BrokerView> {
        let mut memory = lock(&self.memory);
        for broker in &metadata.brokers {
            memory
                .nodes
                .insert(broker.id, format!("{}:{}", broker.host, broker.port));
        }
        let assigned = topics
            .iter()
            .flat_map(|t| &t.partitions)
            .flat_map(|p| p.replicas.iter().copied());
        let voters = quorum.map(|q| q.voters.clone()).unwrap_or_default();
        for id in assigned.chain(voters.iter().copied()) {
            memory.nodes.entry(id).or_default();
        }
        let up: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.id).collect();
        memory
            .nodes
            .iter()
            .map(|(&id, address)| BrokerView {
                id,
                address: address.clone(),
                up: up.contains(&id),
                voter: voters.contains(&id),
                active_controller: quorum.and_then(|q| q.leader) == Some(id),
                partitions_led: topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .filter(|p| p.leader == id)
                    .count(),
                replicas: topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .filter(|p| p.replicas.contains(&id))
                    .count(),
            })
            .collect()
    }

    async fn topics(&self, metadata: &ClusterMetadata, errors: &mut Vec<String>) -> Vec<TopicView> {
        let mut views = Vec::new();
        for topic in &metadata.topics {
            let (mut earliest, mut latest) = (BTreeMap::new(), BTreeMap::new());
            if !topic.internal {
                match self
                    .admin
                    .list_offsets(metadata, &topic.name, OffsetAt::Earliest)
                    .await
                {
                    Ok(offsets) => earliest = offsets,
                    Err(e) => errors.push(format!("offsets of {}: {e}", topic.name)),
                }
                match self
                    .admin
                    .list_offsets(metadata, &topic.name, OffsetAt::Latest)
                    .await
                {
                    Ok(offsets) => latest = offsets,
                    Err(e) => errors.push(format!("offsets of {}: {e}", topic.name)),
                }
            }
            let configs = self.configs(&topic.name, errors).await;
            let partitions: Vec<PartitionView> = topic
                .partitions
                .iter()
                .map(|p| PartitionView {
                    partition: p.partition,
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    under_replicated: p.is_under_replicated(),
                    offline: p.leader < 0,
                    earliest: earliest.get(&p.partition).copied(),
                    latest: latest.get(&p.partition).copied(),
                })
                .collect();
            views.push(TopicView {
                name: topic.name.clone(),
                internal: topic.internal,
                replication_factor: topic.replication_factor(),
                messages: partitions
                    .iter()
                    .map(|p| match (p.earliest, p.latest) {
                        (Some(e), Some(l)) => (l - e).max(0) as u64,
                        _ => 0,
                    })
                    .sum(),
                under_replicated: partitions.iter().filter(|p| p.under_replicated).count(),
                offline: partitions.iter().filter(|p| p.offline).count(),
                configs,
                partitions,
            });
        }
        views
    }

    async fn configs(&self, topic: &str, errors: &mut Vec<String>) -> BTreeMap<String, String> {
        if let Some((at, configs)) = lock(&self.memory).configs.get(topic)
            && at.elapsed() < CONFIGS_TTL
        {
            return configs.clone();
        }
        match self.admin.topic_configs(topic).await {
            Ok(all) => {
                let shown: BTreeMap<String, String> = all
                    .into_iter()
                    .filter(|(k, _)| SHOWN_CONFIGS.contains(&k.as_str()))
                    .collect();
                lock(&self.memory)
                    .configs
                    .insert(topic.to_string(), (Instant::now(), shown.clone()));
                shown
            }
            Err(e) => {
                errors.push(format!("configs of {topic}: {e}"));
                BTreeMap::new()
            }
        }
    }

    async fn groups(
        &self,
        metadata: &ClusterMetadata,
        topics: &[TopicView],
        errors: &mut Vec<String>,
    ) -> Vec<GroupView> {
        let listings = match self.admin.list_groups(metadata).await {
            Ok(listings) => listings,
            Err(e) => {
                errors.push(format!("consumer groups: {e}"));
                return Vec::new();
            }
        };
        let mut views = Vec::new();
        for listing in listings {
            let mut view = GroupView {
                id: listing.id.clone(),
                kind: listing.kind.clone(),
                state: listing.state.clone(),
                coordinator: None,
                members: Vec::new(),
                partitions: Vec::new(),
                total_lag: 0,
                error: None,
            };
            match self.admin.describe_group(&listing.id, &listing.kind).await {
                Ok(description) => {
                    view.state = description.state;
                    view.coordinator = Some(description.coordinator);
                    view.members = description.members;
                }
                Err(e) => view.error = Some(e.to_string()),
            }
            match self.admin.committed_offsets(&listing.id).await {
                Ok(committed) => {
                    for (topic, partitions) in committed {
                        for (partition, offset) in partitions {
                            let end = topics
                                .iter()
                                .find(|t| t.name == topic)
                                .and_then(|t| {
                                    t.partitions.iter().find(|p| p.partition == partition)
                                })
                                .and_then(|p| p.latest);
                            let owner = view
                                .members
                                .iter()
                                .find(|m| {
                                    m.assignment
                                        .get(&topic)
                                        .is_some_and(|ps| ps.contains(&partition))
                                })
                                .map(|m| m.member_id.clone());
                            view.partitions.push(GroupPartition {
                                topic: topic.clone(),
                                partition,
                                committed: offset,
                                end,
                                lag: end.map(|end| (end - offset).max(0)),
                                owner,
                                time_behind_ms: (end == Some(offset)).then_some(0),
                            });
                        }
                    }
                }
                Err(e) => {
                    let message = format!("committed offsets: {e}");
                    view.error = Some(match view.error.take() {
                        Some(previous) => format!("{previous}; {message}"),
                        None => message,
                    });
                }
            }
            view.total_lag = view.partitions.iter().filter_map(|p| p.lag).sum();
            views.push(view);
        }
        views
    }
}
