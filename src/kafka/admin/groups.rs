//! Requests that must reach one particular broker: a partition's leader for its
//! offsets, a group's coordinator for its members and commits, and every
//! broker for the list of groups (each broker lists only the groups it
//! coordinates).
//!
//! These feed the console's views of topics and consumer groups. They read
//! Kafka's own records, so any group shows, whether it speaks the classic
//! protocol (Kafka's Java consumer by default, the perf tools) or the
//! KIP-848 one (ours).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, DescribeGroupsRequest,
    FindCoordinatorRequest, GroupId, ListGroupsRequest, ListOffsetsRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::sync::Mutex;

use super::{AdminClient, AdminError, BrokerConnection, ClusterMetadata, Request, topic_name};

/// Which offset of a partition to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetAt {
    /// The first offset still kept.
    Earliest,
    /// The offset the next record will get (the high watermark).
    Latest,
    /// The first offset whose record's timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

impl OffsetAt {
    fn wire(self) -> i64 {
        match self {
            OffsetAt::Earliest => -2,
            OffsetAt::Latest => -1,
            OffsetAt::Timestamp(ms) => ms,
        }
    }
}

/// A group as ListGroups names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub id: String,
    /// `Stable`, `Empty`, `PreparingRebalance`, ... as the coordinator says.
    pub state: String,
    /// `classic` or `consumer` (KIP-848).
    pub kind: String,
}

/// One member of a group and what it was given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupMember {
    /// The member id the coordinator gave.
    pub member_id: String,
    /// The client id it connected with.
    pub client_id: String,
    /// The host it connected from.
    pub client_host: String,
    /// Its partitions, by topic.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// A group as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub id: String,
    /// State, as the coordinator says.
    pub state: String,
    /// `classic` or `consumer`.
    pub kind: String,
    /// The coordinator's node id.
    pub coordinator: i32,
    /// Members, by member id.
    pub members: Vec<GroupMember>,
}

/// Connections to single brokers, one per address, opened when first needed.
#[derive(Debug, Default)]
pub(super) struct Peers {
    by_address: Mutex<HashMap<String, Arc<Mutex<Option<BrokerConnection>>>>>,
}

impl AdminClient {
    /// Sends `request` to the broker at `address` (not to any bootstrap broker),
    /// over a connection kept for it. A connection that fails is dropped, and
    /// the next request to that address opens a new one.
    pub async fn send_to<R: Request>(
        &self,
        address: &str,
        request: &R,
    ) -> Result<R::Response, AdminError> {
        let slot = {
            let mut peers = self.peers.by_address.lock().await;
            Arc::clone(peers.entry(address.to_string()).or_default())
        };
        let mut slot = slot.lock().await;
        if slot.is_none() {
            *slot = Some(
                BrokerConnection::connect(address, &self.security, self.timeouts, super::CLIENT_ID)
                    .await?,
            );
        }
        let connection = slot.as_mut().expect("connected above");
        let outcome = connection.send(request).await;
        if matches!(&outcome, Err(e) if e.is_connection_failure()) {
            *slot = None;
        }
        outcome
    }

    /// The offset `at` of every led partition of `topic`, asking each leader once
    /// for all of its partitions. Partitions without a leader are left out.
    pub async fn list_offsets(
        &self,
        metadata: &ClusterMetadata,
        topic: &str,
        at: OffsetAt,
    ) -> Result<BTreeMap<i32, i64>, AdminError> {
        let Some(info) = metadata.topic(topic) else {
            return Ok(BTreeMap::new());
        };
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for partition in info.partitions.iter().filter(|p| p.leader >= 0) {
            by_leader
                .entry(partition.leader)
                .or_default()
                .push(partition.partition);
        }
        let mut offsets = BTreeMap::new();
        for (leader, partitions) in by_leader {
            let Some(address) = metadata.broker_address(leader) else {
                continue;
            };
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|&p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_current_leader_epoch(-1)
                                        .with_timestamp(at.wire())
                                })
                                .collect(),
                        ),
                ]);
            let response = self.send_to(&address, &request).await?;
            for partition in response.topics.iter().flat_map(|t| &t.partitions) {
                if partition.error_code != 0 {
                    return Err(AdminError::broker(&address, partition.error_code, None));
                }
                // A timestamp after the last record answers -1: the end of the log.
                if partition.offset >= 0 {
                    offsets.insert(partition.partition_index, partition.offset);
                } else if let OffsetAt::Timestamp(_) = at {
                    offsets.insert(partition.partition_index, -1);
                }
            }
        }
        Ok(offsets)
    }

    /// Every consumer group any live broker coordinates, by id.
    pub async fn list_groups(
        &self,
        metadata: &ClusterMetadata,
    ) -> Result<Vec<GroupListing>, AdminError> {
        let mut groups = BTreeMap::new();
        let mut last_error = None;
        let mut answered = 0;
        for broker in &metadata.brokers {
            let address = format!("{}:{}", broker.host, broker.port);
            match self.send_to(&address, &ListGroupsRequest::default()).await {
                Ok(response) if response.error_code == 0 => {
                    answered += 1;
                    for group in response.groups {
                        let id = group.group_id.0.to_string();
                        let kind = match group.group_type.as_str() {
                            "" => "classic".to_string(),
                            kind => kind.to_string(),
                        };
                        groups.insert(
                            id.clone(),
                            GroupListing {
                                id,
                                state: group.group_state.to_string(),
                                kind,
                            },
                        );
                    }
                }
                Ok(response) => {
                    last_error = Some(AdminError::broker(&address, response.error_code, None))
                }
                Err(e) => last_error = Some(e),
            }
        }
        match (answered, last_error) {
            (0, Some(e)) => Err(e),
            _ => Ok(groups.into_values().collect()),
        }
    }

    /// The address of `group`'s coordinator and its node id.
    async fn coordinator(&self, group: &str) -> Result<(String, i32), AdminError> {
        let request = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![StrBytes::from_string(group.to_string())]);
        let response = self.send(&request).await?;
        let address = self.current_address().await;
        let coordinator = response
            .coordinators
            .first()
            .ok_or_else(|| AdminError::Protocol {
                address: address.clone(),
                message: "FindCoordinator answered without the group".to_string(),
            })?;
        if coordinator.error_code != 0 {
            return Err(AdminError::broker(
                &address,
                coordinator.error_code,
                coordinator.error_message.as_ref(),
            ));
        }
        Ok((
            format!("{}:{}", coordinator.host, coordinator.port),
            coordinator.node_id.0,
        ))
    }

    /// `group`'s state and members, from its coordinator. `kind` is the group's
    /// type as listed (`consumer` groups are described with ConsumerGroupDescribe,
    /// others with DescribeGroups).
    pub async fn describe_group(
        &self,
        group: &str,
        kind: &str,
    ) -> Result<GroupDescription, AdminError> {
        let (address, coordinator) = self.coordinator(group).await?;
        let id = GroupId(StrBytes::from_string(group.to_string()));
        let (state, members) = if kind == "consumer" {
            let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![id]);
            let response = self.send_to(&address, &request).await?;
            let described = only_group(&address, "ConsumerGroupDescribe", &response.groups, |g| {
                (g.error_code, g.error_message.as_ref())
            })?;
            let members = described
                .members
                .iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: m
                        .assignment
                        .topic_partitions
                        .iter()
                        .map(|t| (t.topic_name.0.to_string(), sorted(t.partitions.clone())))
                        .collect(),
                })
                .collect();
            (described.group_state.to_string(), members)
        } else {
            let request = DescribeGroupsRequest::default().with_groups(vec![id]);
            let response = self.send_to(&address, &request).await?;
            let described = only_group(&address, "DescribeGroups", &response.groups, |g| {
                (g.error_code, g.error_message.as_ref())
            })?;
            let members = described
                .members
                .iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: classic_assignment(&m.member_assignment),
                })
                .collect();
            (described.group_state.to_string(), members)
        };
        Ok(GroupDescription {
            id: group.to_string(),
            state,
            kind: kind.to_string(),
            coordinator,
            members,
        })
    }

    /// Every offset `group` has committed: topic -> partition -> next offset to read.
    pub async fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, AdminError> {
        let (address, _) = self.coordinator(group).await?;
        let request = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_member_epoch(-1)
                .with_topics(None),
        ]);
        let response = self.send_to(&address, &request).await?;
        let fetched = response
            .groups
            .first()
            .ok_or_else(|| AdminError::Protocol {
                address: address.clone(),
                message: "OffsetFetch answered without the group".to_string(),
            })?;
        if fetched.error_code != 0 {
            return Err(AdminError::broker(&address, fetched.error_code, None));
        }
        let mut offsets: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for topic in &fetched.topics {
            for partition in &topic.partitions {
                if partition.error_code == 0 && partition.committed_offset >= 0 {
                    offsets
                        .entry(topic.name.0.to_string())
                        .or_default()
                        .insert(partition.partition_index, partition.committed_offset);
                }
            }
        }
        Ok(offsets)
    }
}

impl ClusterMetadata {
    /// `host:port` of a live broker.
    pub fn broker_address(&self, id: i32) -> Option<String> {
        self.brokers
            .iter()
            .find(|b| b.id == id)
            .map(|b| format!("{}:{}", b.host, b.port))
    }
}

/// The one group a describe request asked about, unless the broker answered
/// with an error for it or left it out.
fn only_group<'a, G>(
    address: &str,
    api: &str,
    groups: &'a [G],
    error: impl Fn(&G) -> (i16, Option<&StrBytes>),
) -> Result<&'a G, AdminError> {
    let group = groups.first().ok_or_else(|| AdminError::Protocol {
        address: address.to_string(),
        message: format!("{api} answered without the group"),
    })?;
    match error(group) {
        (0, _) => Ok(group),
        (code, message) => Err(AdminError::broker(address, code, message)),
    }
}

/// A classic consumer's assignment: a version, then ConsumerProtocolAssignment.
/// Groups of other protocols (Connect, say) carry other bytes: no partitions.
fn classic_assignment(bytes: &Bytes) -> BTreeMap<String, Vec<i32>> {
    let mut buf = bytes.clone();
    if buf.len() < 2 {
        return BTreeMap::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    match ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
        Ok(assignment) => assignment
            .assigned_partitions
            .into_iter()
            .map(|t| (t.topic.0.to_string(), sorted(t.partitions)))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn sorted(mut partitions: Vec<i32>) -> Vec<i32> {
    partitions.sort_unstable();
    partitions
}
