//! The cluster-administration requests rskafka does not offer.
//!
//! rskafka covers producing and fetching; topic configs, the KRaft quorum and a
//! full view of replicas and in-sync replicas need requests it lacks. This
//! module sends them with the `kafka-protocol` crate over [`BrokerConnection`],
//! and turns the answers into small, plain types ([`ClusterMetadata`],
//! [`QuorumState`]) that the rest of MetroCloud reads.
//!
//! An [`AdminClient`] talks to any one of its bootstrap brokers: in KRaft mode
//! every broker answers metadata and forwards topic creation and quorum
//! questions to the active controller. When the broker it uses goes away, the
//! next request moves on to the next address.

mod acls;
mod connection;
mod error;
mod groups;
mod sasl;

pub use acls::{AclEntry, AclOperation, AclResource};
pub use connection::{BrokerConnection, Request, Timeouts};
pub use error::{AdminError, is_refusal};
pub use groups::{GroupDescription, GroupListing, GroupMember, OffsetAt};

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeQuorumRequest,
    MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;

use crate::kafka::security::{Brokers, Security};

/// A broker as the cluster's metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The broker's node id.
    pub id: i32,
    /// The host it advertises.
    pub host: String,
    /// The port it advertises.
    pub port: i32,
}

/// One partition's leader, replicas and in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: i32,
    /// Leading broker, or -1 when it has none.
    pub leader: i32,
    /// Brokers holding a replica.
    pub replicas: Vec<i32>,
    /// Replicas that are caught up.
    pub isr: Vec<i32>,
    /// Replicas on brokers that are offline.
    pub offline: Vec<i32>,
}

impl PartitionInfo {
    /// Fewer replicas in sync than assigned.
    pub fn is_under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }
}

/// A topic with its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (the consumer group protocol names topics by id).
    pub id: uuid::Uuid,
    /// Whether Kafka keeps it for itself (like `__consumer_offsets`).
    pub internal: bool,
    /// Partitions, by number.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// The replication factor, read from the first partition.
    pub fn replication_factor(&self) -> usize {
        self.partitions
            .iter()
            .map(|p| p.replicas.len())
            .min()
            .unwrap_or(0)
    }
}

/// The brokers and topics of a cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// Brokers that are registered and not fenced.
    pub brokers: Vec<BrokerInfo>,
    /// Topics asked for (or all of them).
    pub topics: Vec<TopicInfo>,
}

impl ClusterMetadata {
    /// The topic with this name, if it exists.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// Every partition, of every topic, with fewer in-sync replicas than replicas.
    pub fn under_replicated(&self) -> Vec<(String, PartitionInfo)> {
        self.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.is_under_replicated())
                    .map(|p| (t.name.clone(), p.clone()))
            })
            .collect()
    }
}

/// The KRaft controller quorum as its leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumState {
    /// The active controller, or `None` when an election is under way.
    pub leader: Option<i32>,
    /// The leader's epoch.
    pub epoch: i32,
    /// Controller node ids that vote.
    pub voters: Vec<i32>,
    /// Nodes that follow the metadata log without voting.
    pub observers: Vec<i32>,
}

/// Result of asking for a topic to be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// The topic is new.
    Created,
    /// A topic with that name already existed; nothing was changed.
    AlreadyExists,
}

/// A client for cluster-wide requests, sent to any one of the bootstrap brokers.
#[derive(Debug)]
pub struct AdminClient {
    bootstrap: Vec<String>,
    security: Arc<Security>,
    timeouts: Timeouts,
    connection: Mutex<Option<BrokerConnection>>,
    /// Connections to particular brokers (leaders, coordinators).
    peers: groups::Peers,
}

const CLIENT_ID: &str = "metrocloud-admin";

impl AdminClient {
    /// A client for `brokers` (plain `host:port` addresses are reached in
    /// plaintext); connects on first use.
    pub fn new(brokers: impl Into<Brokers>, timeouts: Timeouts) -> Self {
        let Brokers {
            addresses: bootstrap,
            security,
        } = brokers.into();
        AdminClient {
            bootstrap,
            security,
            timeouts,
            connection: Mutex::new(None),
            peers: groups::Peers::default(),
        }
    }

    /// How connections are opened.
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    /// Sends one request to the current broker, moving on to the next address
    /// when a broker cannot be reached. After the current broker failed, the
    /// addresses are tried from the one after it, so that a broker that
    /// accepts connections but never answers (a frozen one) costs one timeout,
    /// not two.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response, AdminError> {
        if self.bootstrap.is_empty() {
            return Err(AdminError::NoBootstrapServers);
        }
        let mut slot = self.connection.lock().await;
        let mut start = 0;
        if let Some(connection) = slot.as_mut() {
            match connection.send(request).await {
                Ok(response) => return Ok(response),
                Err(e) if e.is_connection_failure() => {
                    if let Some(failed) = self
                        .bootstrap
                        .iter()
                        .position(|a| a == connection.address())
                    {
                        start = failed + 1;
                    }
                    *slot = None;
                }
                Err(e) => return Err(e),
            }
        }
        let mut last = None;
        let count = self.bootstrap.len();
        for address in self
            .bootstrap
            .iter()
            .cycle()
            .skip(start % count)
            .take(count)
        {
            let attempt = async {
                let mut connection =
                    BrokerConnection::connect(address, &self.security, self.timeouts, CLIENT_ID)
                        .await?;
                let response = connection.send(request).await?;
                Ok::<_, AdminError>((connection, response))
            };
            match attempt.await {
                Ok((connection, response)) => {
                    *slot = Some(connection);
                    return Ok(response);
                }
                Err(e) if e.is_connection_failure() => {
                    tracing::debug!("broker {address} unavailable: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(
            "no bootstrap server answered ({})",
            self.bootstrap.join(",")
        );
        Err(AdminError::Unreachable {
            servers: self.bootstrap.join(","),
            last: Box::new(last.unwrap_or(AdminError::NoBootstrapServers)),
        })
    }

    async fn current_address(&self) -> String {
        self.connection
            .lock()
            .await
            .as_ref()
            .map(|c| c.address().to_string())
            .unwrap_or_default()
    }

    /// Brokers and the given topics (all topics when `topics` is `None`).
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata, AdminError> {
        let request = MetadataRequest::default().with_topics(topics.map(|names| {
            names
                .iter()
                .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
                .collect()
        }));
        let response = self.send(&request).await?;
        let address = self.current_address().await;
        if response.error_code != 0 {
            return Err(AdminError::broker(&address, response.error_code, None));
        }
        let mut brokers: Vec<BrokerInfo> = response
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        let mut found = Vec::new();
        for topic in &response.topics {
            let name = topic
                .name
                .as_ref()
                .map(|n| n.0.to_string())
                .unwrap_or_default();
            if topic.error_code == ResponseError::UnknownTopicOrPartition.code() {
                continue;
            }
            if topic.error_code != 0 {
                let mut error = AdminError::broker(&address, topic.error_code, None);
                if let AdminError::Broker { detail, .. } = &mut error {
                    *detail = Some(format!("topic {name}"));
                }
                return Err(error);
            }
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            found.push(TopicInfo {
                name,
                id: topic.topic_id,
                internal: topic.is_internal,
                partitions,
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterMetadata {
            cluster_id: response.cluster_id.map(|c| c.to_string()),
            brokers,
            topics: found,
        })
    }

    /// Creates a topic with its configs in one CreateTopics request.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, String)],
    ) -> Result<Creation, AdminError> {
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(key.to_string()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(self.timeouts.request.as_millis().min(i32::MAX as u128) as i32);
        let response = self.send(&request).await?;
        let address = self.current_address().await;
        let result = response
            .topics
            .iter()
            .find(|t| t.name.0.as_str() == name)
            .ok_or_else(|| AdminError::Protocol {
                address: address.clone(),
                message: format!("CreateTopics response does not mention topic {name}"),
            })?;
        match result.error_code {
            0 => Ok(Creation::Created),
            code if code == ResponseError::TopicAlreadyExists.code() => Ok(Creation::AlreadyExists),
            code => Err(AdminError::broker(
                &address,
                code,
                result.error_message.as_ref(),
            )),
        }
    }

    /// Deletes a topic; one that does not exist is not an error.
    pub async fn delete_topic(&self, name: &str) -> Result<(), AdminError> {
        let request = DeleteTopicsRequest::default()
            .with_topics(vec![
                DeleteTopicState::default().with_name(Some(topic_name(name))),
            ])
            .with_timeout_ms(self.timeouts.request.as_millis().min(i32::MAX as u128) as i32);
        let response = self.send(&request).await?;
        let address = self.current_address().await;
        match response
            .responses
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name))
        {
            None => Err(AdminError::Protocol {
                address,
                message: format!("DeleteTopics response does not mention topic {name}"),
            }),
            Some(result)
                if result.error_code == 0
                    || result.error_code == ResponseError::UnknownTopicOrPartition.code() =>
            {
                Ok(())
            }
            Some(result) => Err(AdminError::broker(
                &address,
                result.error_code,
                result.error_message.as_ref(),
            )),
        }
    }

    /// The effective configuration of a topic, every key with its value.
    pub async fn topic_configs(&self, name: &str) -> Result<BTreeMap<String, String>, AdminError> {
        const TOPIC_RESOURCE: i8 = 2;
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ]);
        let response = self.send(&request).await?;
        let address = self.current_address().await;
        let result = response
            .results
            .first()
            .ok_or_else(|| AdminError::Protocol {
                address: address.clone(),
                message: "DescribeConfigs response has no result".to_string(),
            })?;
        if result.error_code != 0 {
            return Err(AdminError::broker(
                &address,
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        Ok(result
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect())
    }

    /// The controller quorum: its leader, voters and observers.
    pub async fn quorum(&self) -> Result<QuorumState, AdminError> {
        let request = DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(topic_name("__cluster_metadata"))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        let response = self.send(&request).await?;
        let address = self.current_address().await;
        if response.error_code != 0 {
            return Err(AdminError::broker(
                &address,
                response.error_code,
                response.error_message.as_ref(),
            ));
        }
        let partition = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| AdminError::Protocol {
                address: address.clone(),
                message: "DescribeQuorum response has no partition".to_string(),
            })?;
        if partition.error_code != 0 {
            return Err(AdminError::broker(
                &address,
                partition.error_code,
                partition.error_message.as_ref(),
            ));
        }
        Ok(QuorumState {
            leader: (partition.leader_id.0 >= 0).then_some(partition.leader_id.0),
            epoch: partition.leader_epoch,
            voters: partition
                .current_voters
                .iter()
                .map(|r| r.replica_id.0)
                .collect(),
            observers: partition.observers.iter().map(|r| r.replica_id.0).collect(),
        })
    }
}

/// A random UUID written as Kafka writes them: URL-safe base64 without padding,
/// 22 characters, and (as Kafka's own `Uuid.randomUuid`) never starting with `-`,
/// which command-line parsers would take for an option.
pub fn random_kafka_uuid() -> String {
    use base64::Engine;
    loop {
        let bytes: [u8; 16] = rand::random();
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
