//! Requests to a consumer group's coordinator: heartbeats and offsets.
//!
//! Every group has one coordinator broker, found with FindCoordinator. When it
//! moves (its broker stopped, leadership of `__consumer_offsets` changed) the
//! next request finds it again.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, FindCoordinatorRequest, GroupId,
    OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::admin::{AdminClient, AdminError, BrokerConnection, Request, Timeouts};
use crate::kafka::security::Brokers;

/// A broker error code from a group request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error:?}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct GroupError {
    /// The decoded error code.
    pub error: ResponseError,
    /// The broker's message, if any.
    pub message: Option<String>,
}

impl GroupError {
    fn from_code(code: i16, message: Option<&StrBytes>) -> Option<GroupError> {
        (code != 0).then(|| GroupError {
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError),
            message: message.map(|m| m.to_string()).filter(|m| !m.is_empty()),
        })
    }

    /// The coordinator moved or is loading: find it again and retry.
    pub fn is_coordinator_change(&self) -> bool {
        matches!(
            self.error,
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        )
    }

    /// The group no longer knows this member at this epoch: rejoin from scratch.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self.error,
            ResponseError::FencedMemberEpoch
                | ResponseError::UnknownMemberId
                | ResponseError::StaleMemberEpoch
        )
    }
}

/// What went wrong with a group request.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The network or a broker failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The coordinator answered with an error.
    #[error("group coordinator answered {0}")]
    Group(#[from] GroupError),
}

/// Talks to the coordinator of one group.
#[derive(Debug)]
pub struct GroupCoordinator {
    admin: AdminClient,
    group_id: String,
    timeouts: Timeouts,
    connection: Option<BrokerConnection>,
}

impl GroupCoordinator {
    /// A coordinator client for `group_id`, found through `brokers`.
    pub fn new(brokers: impl Into<Brokers>, group_id: &str, timeouts: Timeouts) -> Self {
        GroupCoordinator {
            admin: AdminClient::new(brokers, timeouts),
            group_id: group_id.to_string(),
            timeouts,
            connection: None,
        }
    }

    /// The timeouts its requests use.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The admin client used to find the coordinator (also good for metadata).
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, CoordinatorError> {
        if self.connection.is_none() {
            // Batched lookups (version 4+, every Kafka since 3.0) name the group in
            // `coordinator_keys`; Kafka 4 no longer answers the older forms.
            let find = FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![StrBytes::from_string(self.group_id.clone())]);
            let response = self.admin.send(&find).await?;
            let (code, message, host, port) = match response.coordinators.first() {
                Some(c) => (
                    c.error_code,
                    c.error_message.clone(),
                    c.host.to_string(),
                    c.port,
                ),
                None => (
                    response.error_code,
                    response.error_message.clone(),
                    response.host.to_string(),
                    response.port,
                ),
            };
            if let Some(error) = GroupError::from_code(code, message.as_ref()) {
                return Err(error.into());
            }
            let address = format!("{host}:{port}");
            self.connection = Some(
                BrokerConnection::connect(
                    &address,
                    self.admin.security(),
                    self.timeouts,
                    "metrocloud-consumer",
                )
                .await?,
            );
        }
        let connection = self.connection.as_mut().expect("connected above");
        match connection.send(request).await {
            Ok(response) => Ok(response),
            Err(e) => {
                self.connection = None;
                Err(e.into())
            }
        }
    }

    fn check(&mut self, code: i16, message: Option<&StrBytes>) -> Result<(), CoordinatorError> {
        match GroupError::from_code(code, message) {
            None => Ok(()),
            Some(error) => {
                if error.is_coordinator_change() {
                    self.connection = None;
                }
                Err(error.into())
            }
        }
    }

    /// One ConsumerGroupHeartbeat (KIP-848).
    pub async fn heartbeat(
        &mut self,
        request: ConsumerGroupHeartbeatRequest,
    ) -> Result<ConsumerGroupHeartbeatResponse, CoordinatorError> {
        let response = self
            .send(&request.with_group_id(group(&self.group_id)))
            .await?;
        self.check(response.error_code, response.error_message.as_ref())?;
        Ok(response)
    }

    /// Commits `offsets` (partition, next offset to read) of `topic` for this member.
    pub async fn commit(
        &mut self,
        member_id: &str,
        member_epoch: i32,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<(), CoordinatorError> {
        let request = OffsetCommitRequest::default()
            .with_group_id(group(&self.group_id))
            .with_generation_id_or_member_epoch(member_epoch)
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_retention_time_ms(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|&(partition, offset)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(partition)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(-1)
                            })
                            .collect(),
                    ),
            ]);
        let response = self.send(&request).await?;
        for partition in response.topics.iter().flat_map(|t| &t.partitions) {
            self.check(partition.error_code, None)?;
        }
        Ok(())
    }

    /// The committed offset of each of `partitions` of `topic` (`None`: nothing committed).
    pub async fn committed(
        &mut self,
        member_id: &str,
        member_epoch: i32,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Option<i64>)>, CoordinatorError> {
        // The per-group form (version 8+) carries the member's id and epoch.
        let request = OffsetFetchRequest::default()
            .with_require_stable(true)
            .with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(group(&self.group_id))
                    .with_member_id(Some(StrBytes::from_string(member_id.to_string())))
                    .with_member_epoch(member_epoch)
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopics::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partition_indexes(partitions.to_vec()),
                    ])),
            ]);
        let response = self.send(&request).await?;
        let Some(result) = response.groups.first() else {
            return Err(CoordinatorError::Group(GroupError {
                error: ResponseError::UnknownServerError,
                message: Some("OffsetFetch answered without the group".to_string()),
            }));
        };
        let (code, partitions) = (result.error_code, result.topics.clone());
        self.check(code, None)?;
        let mut offsets = Vec::new();
        for partition in partitions.iter().flat_map(|t| &t.partitions) {
            self.check(partition.error_code, None)?;
            let offset = partition.committed_offset;
            offsets.push((partition.partition_index, (offset >= 0).then_some(offset)));
        }
        Ok(offsets)
    }
}

fn group(id: &str) -> GroupId {
    GroupId(StrBytes::from_string(id.to_string()))
}

/// The owned-partitions field of a heartbeat.
pub fn owned_partitions(topic_id: uuid::Uuid, partitions: &[i32]) -> Vec<TopicPartitions> {
    if partitions.is_empty() {
        return Vec::new();
    }
    vec![
        TopicPartitions::default()
            .with_topic_id(topic_id)
            .with_partitions(partitions.to_vec()),
    ]
}
