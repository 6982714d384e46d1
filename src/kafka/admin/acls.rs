//! Access control entries (Kafka's ACLs): who may do what to which
//! resource, as the brokers' `StandardAuthorizer` checks them.

use std::fmt;

use kafka_protocol::messages::CreateAclsRequest;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::protocol::StrBytes;

use super::{AdminClient, AdminError};

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclResource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster itself (describing it, its quorum).
    Cluster,
}

/// What an entry allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclOperation {
    /// Fetch from a topic; join and commit in a group.
    Read,
    /// Produce to a topic.
    Write,
    /// Metadata of a topic, a group's state, the cluster's brokers and quorum.
    Describe,
    /// A topic's configuration.
    DescribeConfigs,
}

/// One entry: `User:<user>` may `operation` on `resource` `name`, from any host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclEntry {
    /// The user (principal `User:<user>`).
    pub user: String,
    /// The kind of resource.
    pub resource: AclResource,
    /// Its name (`kafka-cluster` for the cluster).
    pub name: String,
    /// What is allowed.
    pub operation: AclOperation,
}

impl AclResource {
    /// Kafka's resource type code.
    fn code(self) -> i8 {
        match self {
            AclResource::Topic => 2,
            AclResource::Group => 3,
            AclResource::Cluster => 4,
        }
    }
}

impl AclOperation {
    /// Kafka's operation code.
    fn code(self) -> i8 {
        match self {
            AclOperation::Read => 3,
            AclOperation::Write => 4,
            AclOperation::Describe => 8,
            AclOperation::DescribeConfigs => 10,
        }
    }
}

impl fmt::Display for AclResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AclResource::Topic => "topic",
            AclResource::Group => "group",
            AclResource::Cluster => "cluster",
        })
    }
}

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AclOperation::Read => "READ",
            AclOperation::Write => "WRITE",
            AclOperation::Describe => "DESCRIBE",
            AclOperation::DescribeConfigs => "DESCRIBE_CONFIGS",
        })
    }
}

/// Kafka's code for a literal resource name (not a prefix).
const LITERAL: i8 = 3;
/// Kafka's code for ALLOW.
const ALLOW: i8 = 3;

impl AdminClient {
    /// Adds `entries` (an entry that exists already is left as it is); the
    /// client must be allowed to alter the cluster (a super user).
    pub async fn create_acls(&self, entries: &[AclEntry]) -> Result<(), AdminError> {
        let creations = entries
            .iter()
            .map(|entry| {
                AclCreation::default()
                    .with_resource_type(entry.resource.code())
                    .with_resource_name(StrBytes::from_string(entry.name.clone()))
                    .with_resource_pattern_type(LITERAL)
                    .with_principal(StrBytes::from_string(format!("User:{}", entry.user)))
                    .with_host(StrBytes::from_static_str("*"))
                    .with_operation(entry.operation.code())
                    .with_permission_type(ALLOW)
            })
            .collect();
        let response = self
            .send(&CreateAclsRequest::default().with_creations(creations))
            .await?;
        for result in response.results {
            if result.error_code != 0 {
                return Err(AdminError::broker(
                    "the controller",
                    result.error_code,
                    result.error_message.as_ref(),
                ));
            }
        }
        Ok(())
    }
}
