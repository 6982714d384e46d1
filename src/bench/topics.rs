//! The benchmarks' topics: a run gets fresh ones, so that it neither reads
//! nor pays for what another left, and deletes them after.

use super::{Bench, BenchError};

impl Bench<'_> {
    /// A topic of its own for one run: `bench-<purpose>-<pid>-<n>`.
    pub(super) async fn fresh_topic(&mut self, purpose: &str) -> Result<String, BenchError> {
        self.topics += 1;
        let name = format!("bench-{purpose}-{}-{}", std::process::id(), self.topics);
        self.create_topic(&name).await?;
        Ok(name)
    }

    /// A topic as the benchmarks' are: 6 partitions, 3 replicas, 2 in sync.
    pub(super) async fn create_topic(&self, name: &str) -> Result<(), BenchError> {
        self.target()
            .admin
            .create_topic(name, 6, 3, &[("min.insync.replicas", "2".to_string())])
            .await
            .map_err(|e| BenchError::Cluster(format!("cannot create topic {name}: {e}")))?;
        Ok(())
    }

    /// Deletes a run's topic; failing to is only worth a warning.
    pub(super) async fn drop_topic(&self, name: &str) {
        if let Err(e) = self.target().admin.delete_topic(name).await {
            tracing::warn!("could not delete benchmark topic {name}: {e}");
        }
    }
}
