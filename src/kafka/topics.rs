//! Making sure a topic exists, and is as durable as configured.
//!
//! [`ensure_topic`] is what `metrocloud topics ensure`, the producer and the
//! consumer all call before they start. It creates the topic with its
//! partitions, replication factor and `min.insync.replicas` in one request, and
//! is idempotent. It refuses settings that would let an acknowledged write be
//! lost or never be acknowledged, and reports an existing topic that is weaker
//! than configured instead of silently using it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::kafka::admin::{AdminClient, AdminError, Creation, TopicInfo};
use crate::kafka::retry::Deadline;

/// The least replication factor that survives one broker failure with
/// `acks=all` and still accepts writes.
pub const SAFE_REPLICATION_FACTOR: i16 = 3;
/// The least `min.insync.replicas` for which an acknowledged write exists on two brokers.
pub const SAFE_MIN_INSYNC_REPLICAS: i16 = 2;

/// The shape a topic must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Copies of each partition.
    pub replication_factor: i16,
    /// Replicas that must hold a write before it is acknowledged.
    pub min_insync_replicas: i16,
}

impl TopicSpec {
    /// Refuses settings under which `acks=all` does not protect a write.
    pub fn check_safety(&self) -> Result<(), TopicError> {
        let unsafe_because = |reason: String| TopicError::Unsafe {
            topic: self.name.clone(),
            reason,
        };
        if self.replication_factor < self.min_insync_replicas {
            return Err(unsafe_because(format!(
                "replication factor {} is below min.insync.replicas {}: no write could ever be \
                 acknowledged with acks=all",
                self.replication_factor, self.min_insync_replicas
            )));
        }
        if self.replication_factor < SAFE_REPLICATION_FACTOR {
            return Err(unsafe_because(format!(
                "replication factor {} is below {SAFE_REPLICATION_FACTOR}: with acks=all, one \
                 broker failure either stops all writes or leaves acknowledged records on a \
                 single broker; set KAFKA_REPLICATION_FACTOR to {SAFE_REPLICATION_FACTOR} or more",
                self.replication_factor
            )));
        }
        if self.min_insync_replicas < SAFE_MIN_INSYNC_REPLICAS {
            return Err(unsafe_because(format!(
                "min.insync.replicas {} lets acks=all acknowledge a write held by one broker \
                 only, which that broker's loss destroys; set KAFKA_MIN_INSYNC_REPLICAS to \
                 {SAFE_MIN_INSYNC_REPLICAS} or more",
                self.min_insync_replicas
            )));
        }
        Ok(())
    }
}

/// Why a topic cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The requested settings would not protect acknowledged writes.
    #[error("refusing unsafe settings for topic {topic}: {reason}")]
    Unsafe {
        /// Topic name.
        topic: String,
        /// What is unsafe and how to fix it.
        reason: String,
    },
    /// The topic exists but is weaker than configured.
    #[error("topic {topic} exists but does not match the configuration: {}", problems.join("; "))]
    Mismatch {
        /// Topic name.
        topic: String,
        /// One sentence per difference.
        problems: Vec<String>,
    },
    /// The cluster has fewer brokers than replicas asked for.
    #[error(
        "topic {topic} needs {replication_factor} replicas but the cluster has {brokers} broker(s) \
         available"
    )]
    NotEnoughBrokers {
        /// Topic name.
        topic: String,
        /// Replicas asked for.
        replication_factor: i16,
        /// Brokers registered.
        brokers: usize,
    },
    /// The topic does not exist.
    #[error("topic {0} does not exist (create it with `metrocloud topics ensure`)")]
    Missing(String),
    /// The topic was created but its partitions did not all get a leader in time.
    #[error("topic {topic} has partitions without a leader after {waited:?}")]
    NotReady {
        /// Topic name.
        topic: String,
        /// How long we waited.
        waited: Duration,
    },
    /// Talking to the cluster failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The cluster did not answer (or had too few brokers) for the whole start-up wait.
    #[error("Kafka was not ready within KAFKA_STARTUP_WAIT_SEC ({waited:?}): {last}")]
    StartupWait {
        /// How long we waited.
        waited: Duration,
        /// The last error seen.
        last: Box<TopicError>,
    },
    /// Shut down while waiting for the cluster.
    #[error("shut down while waiting for Kafka")]
    Cancelled,
}

/// What [`ensure_topic`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The topic was created as specified.
    Created,
    /// The topic was already there, at least as strong as specified.
    AlreadyExisted {
        /// Differences that do no harm (more partitions or replicas than asked).
        notes: Vec<String>,
    },
}

/// A topic's layout and the configs that matter for durability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Partitions with leaders, replicas and ISR.
    pub info: TopicInfo,
    /// Every effective config of the topic.
    pub configs: BTreeMap<String, String>,
}

impl TopicDescription {
    /// The effective `min.insync.replicas`, if the broker reported it.
    pub fn min_insync_replicas(&self) -> Option<i16> {
        self.configs.get("min.insync.replicas")?.parse().ok()
    }
}

/// How long [`ensure_topic`] waits for a new topic's partitions to have leaders.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the topic if needed and checks that it is as strong as `spec`.
pub async fn ensure_topic(admin: &AdminClient, spec: &TopicSpec) -> Result<Ensured, TopicError> {
    spec.check_safety()?;
    let metadata = admin.metadata(Some(&[spec.name.as_str()])).await?;
    if metadata.topic(&spec.name).is_none() {
        let brokers = metadata.brokers.len();
        if brokers < spec.replication_factor as usize {
            return Err(TopicError::NotEnoughBrokers {
                topic: spec.name.clone(),
                replication_factor: spec.replication_factor,
                brokers,
            });
        }
        let configs = [("min.insync.replicas", spec.min_insync_replicas.to_string())];
        let creation = admin
            .create_topic(
                &spec.name,
                spec.partitions,
                spec.replication_factor,
                &configs,
            )
            .await?;
        wait_until_led(admin, &spec.name).await?;
        if creation == Creation::Created {
            return Ok(Ensured::Created);
        }
    }
    let description = describe_topic(admin, &spec.name).await?;
    compare(spec, &description)
}

/// The topic's partitions and configs.
pub async fn describe_topic(
    admin: &AdminClient,
    name: &str,
) -> Result<TopicDescription, TopicError> {
    let metadata = admin.metadata(Some(&[name])).await?;
    let info = metadata
        .topic(name)
        .cloned()
        .ok_or_else(|| TopicError::Missing(name.to_string()))?;
    let configs = admin.topic_configs(name).await?;
    Ok(TopicDescription { info, configs })
}

fn compare(spec: &TopicSpec, found: &TopicDescription) -> Result<Ensured, TopicError> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let partitions = found.info.partitions.len() as i32;
    match partitions.cmp(&spec.partitions) {
        std::cmp::Ordering::Less => problems.push(format!(
            "it has {partitions} partitions, {} configured (KAFKA_PARTITIONS); add partitions \
             with `metrocloud cluster tool kafka-topics --alter --topic {} --partitions {}`",
            spec.partitions, spec.name, spec.partitions
        )),
        std::cmp::Ordering::Greater => notes.push(format!(
            "it has {partitions} partitions, more than the {} configured",
            spec.partitions
        )),
        std::cmp::Ordering::Equal => {}
    }
    let replicas = found.info.replication_factor() as i16;
    match replicas.cmp(&spec.replication_factor) {
        std::cmp::Ordering::Less => problems.push(format!(
            "its replication factor is {replicas}, {} configured (KAFKA_REPLICATION_FACTOR)",
            spec.replication_factor
        )),
        std::cmp::Ordering::Greater => notes.push(format!(
            "its replication factor is {replicas}, more than the {} configured",
            spec.replication_factor
        )),
        std::cmp::Ordering::Equal => {}
    }
    match found.min_insync_replicas() {
        Some(min_isr) if min_isr < spec.min_insync_replicas => problems.push(format!(
            "its min.insync.replicas is {min_isr}, {} configured (KAFKA_MIN_INSYNC_REPLICAS); \
             raise it with `metrocloud cluster tool kafka-configs --alter --entity-type topics \
             --entity-name {} --add-config min.insync.replicas={}`",
            spec.min_insync_replicas, spec.name, spec.min_insync_replicas
        )),
        Some(_) => {}
        None => problems.push("the broker did not report its min.insync.replicas".to_string()),
    }
    if problems.is_empty() {
        Ok(Ensured::AlreadyExisted { notes })
    } else {
        Err(TopicError::Mismatch {
            topic: spec.name.clone(),
            problems,
        })
    }
}

async fn wait_until_led(admin: &AdminClient, name: &str) -> Result<(), TopicError> {
    let deadline = Deadline::after(READY_TIMEOUT);
    let mut backoff =
        crate::kafka::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        match admin.metadata(Some(&[name])).await {
            Ok(metadata) => {
                let led = metadata.topic(name).is_some_and(|t| {
                    !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader >= 0)
                });
                if led {
                    return Ok(());
                }
            }
            Err(e) if e.is_connection_failure() => {}
            Err(e) => return Err(e.into()),
        }
        if !deadline.sleep(backoff.next_delay()).await {
            return Err(TopicError::NotReady {
                topic: name.to_string(),
                waited: READY_TIMEOUT,
            });
        }
    }
}

impl fmt::Display for TopicDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = |key: &str| self.configs.get(key).map(String::as_str).unwrap_or("?");
        writeln!(
            f,
            "Topic: {}\tPartitionCount: {}\tReplicationFactor: {}\tmin.insync.replicas: {}\tretention.ms: {}",
            self.info.name,
            self.info.partitions.len(),
            self.info.replication_factor(),
            config("min.insync.replicas"),
            config("retention.ms"),
        )?;
        for p in &self.info.partitions {
            writeln!(
                f,
                "\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}{}",
                p.partition,
                p.leader,
                join_ids(&p.replicas),
                join_ids(&p.isr),
                if p.is_under_replicated() {
                    "\t(under-replicated)"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

/// Node ids as Kafka's tools print them: `1,2,3`.
pub fn join_ids(ids: &[i32]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(replication_factor: i16, min_insync_replicas: i16) -> TopicSpec {
        TopicSpec {
            name: "t".to_string(),
            partitions: 6,
            replication_factor,
            min_insync_replicas,
        }
    }

    #[test]
    fn replication_below_three_or_below_min_isr_is_refused() {
        assert!(spec(3, 2).check_safety().is_ok());
        assert!(spec(5, 3).check_safety().is_ok());
        for (rf, min_isr) in [(1, 1), (2, 2), (2, 1), (3, 4), (3, 1)] {
            let error = spec(rf, min_isr).check_safety().unwrap_err();
            assert!(
                matches!(error, TopicError::Unsafe { .. }),
                "rf {rf} min isr {min_isr}: {error}"
            );
        }
    }
}
