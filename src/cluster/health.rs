//! Waiting for a cluster to be ready, and what its status is.

use std::time::Duration;

use crate::kafka::admin::{AdminClient, ClusterMetadata, QuorumState};
use crate::kafka::retry::{Backoff, Deadline};

use super::*;

impl LocalCluster {
    /// Waits until every node runs as a registered broker and the quorum has a leader.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        let all: Vec<i32> = self.nodes().iter().map(|n| n.id).collect();
        self.wait_started(&all, timeout).await
    }

    /// Waits until the nodes just `started`, and every other running node, are
    /// registered brokers and the quorum has a leader. A started node that
    /// exits is an error; a node that was already down stays out of it (one
    /// node is restarted while another is down).
    pub(super) async fn wait_started(
        &self,
        started: &[i32],
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = Deadline::after(timeout);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let admin = self.admin();
        let mut last_progress = tokio::time::Instant::now();
        loop {
            let mut expected = Vec::new();
            for node in self.nodes() {
                match node::process_state(&self.dir, node.id).1 {
                    ProcessState::Down if !started.contains(&node.id) => {}
                    ProcessState::Down => {
                        let (log, tail) = node::log_tail(&self.dir, node.id, 25);
                        return Err(ClusterError::NodeDied {
                            id: node.id,
                            log,
                            tail,
                        });
                    }
                    ProcessState::Running => expected.push(node.id),
                    ProcessState::Paused => {}
                }
            }
            let missing = match self.readiness(&admin, &expected).await {
                Ok(()) => return Ok(()),
                Err(missing) => missing,
            };
            if last_progress.elapsed() >= Duration::from_secs(10) {
                tracing::info!("waiting for the cluster: {missing}");
                last_progress = tokio::time::Instant::now();
            }
            if !deadline.sleep(backoff.next_delay()).await {
                return Err(ClusterError::NotReady {
                    waited: timeout,
                    detail: missing,
                });
            }
        }
    }

    /// `Ok` when every node in `expected` is registered and the quorum has a leader,
    /// else what is missing.
    async fn readiness(&self, admin: &AdminClient, expected: &[i32]) -> Result<(), String> {
        let metadata = admin
            .metadata(Some(&[]))
            .await
            .map_err(|e| format!("no broker answers yet ({e})"))?;
        let registered: Vec<i32> = metadata.brokers.iter().map(|b| b.id).collect();
        let absent: Vec<i32> = expected
            .iter()
            .copied()
            .filter(|id| !registered.contains(id))
            .collect();
        if !absent.is_empty() {
            return Err(format!(
                "{}/{} brokers registered (waiting for {absent:?})",
                expected.len() - absent.len(),
                expected.len()
            ));
        }
        match admin.quorum().await {
            Ok(QuorumState {
                leader: Some(_), ..
            }) => Ok(()),
            Ok(_) => Err("the controller quorum has no leader yet".to_string()),
            Err(e) => Err(format!("the controller quorum does not answer yet ({e})")),
        }
    }

    /// Processes, registration, quorum and under-replicated partitions.
    pub async fn status(&self) -> ClusterStatus {
        let admin = self.admin();
        let (metadata, quorum, unreachable) = match admin.metadata(None).await {
            Ok(metadata) => {
                let quorum = admin.quorum().await.ok();
                (Some(metadata), quorum, None)
            }
            Err(e) => (None, None, Some(e.to_string())),
        };
        let registered = |id: i32| {
            metadata
                .as_ref()
                .is_some_and(|m: &ClusterMetadata| m.brokers.iter().any(|b| b.id == id))
        };
        let nodes = self
            .nodes()
            .into_iter()
            .map(|spec| {
                let (pid, process) = node::process_state(&self.dir, spec.id);
                NodeStatus {
                    registered: registered(spec.id),
                    spec,
                    pid,
                    process,
                }
            })
            .collect();
        ClusterStatus {
            nodes,
            quorum,
            under_replicated: metadata.map(|m| m.under_replicated()).unwrap_or_default(),
            unreachable,
        }
    }
}
